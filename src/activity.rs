//! Sign-in activity: every login decision (the audit event's fields: code,
//! reason, tracking id, email, NameID, client address) mirrored into a
//! capped log per account in the store, the newest [`KEEP`], for the
//! console's Sign-in activity page and a user's recent decisions: "why
//! can't Bob sign in?" answered in one place, on every replica.
//!
//! Each admitted login also keeps the user's attributes as received
//! ([`LastLogin`], bounded, one document per user, deleted with the user):
//! the console runs an edited mapping over them to preview its impact.
//!
//! Off the request path: a login hands its decision to a bounded queue
//! (never waits); one task per process writes what has queued up, one
//! store write per account per batch. A full queue or a failed write drops
//! entries (counted in `samlgate_activity_dropped_total`): the audit log
//! stays the record; this is its recent, searchable view.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::mapping::SamlAttribute;
use crate::store::{DocSpace, Store, StoreError};

/// Decisions kept per account.
pub const KEEP: usize = 10_000;
/// Decisions queued at most (beyond: dropped and counted).
pub const QUEUE: usize = 16_384;
/// Items written per batch at most.
const BATCH: usize = 4_096;
/// The writer's pause between batches: a login's hand-off then rarely
/// wakes it (at thousands of logins a second, a wake-up per login cost
/// more than the rest of the recording), and what queued meanwhile goes in
/// one store write per account.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// Longest reason kept (characters).
const MAX_REASON: usize = 300;

/// One login decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Unix seconds.
    pub at: i64,
    /// The account whose host the login came to.
    pub account: String,
    /// The user's email, when known (admitted, or refused after mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The refusal code (none: admitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why, as the audit event says it (at most 300 characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The tracking id the refusal page showed (also in the log).
    pub tracking_id: String,
    /// The client's address.
    pub remote: String,
}

impl Decision {
    /// A decision with `reason` cut to [`MAX_REASON`] characters.
    pub fn new(
        at: i64,
        account: &str,
        email: Option<&str>,
        code: Option<&str>,
        reason: &str,
        tracking_id: &str,
        remote: &str,
    ) -> Self {
        Self {
            at,
            account: account.to_owned(),
            email: email.map(str::to_owned),
            code: code.map(str::to_owned),
            reason: reason.chars().take(MAX_REASON).collect(),
            tracking_id: tracking_id.to_owned(),
            remote: remote.to_owned(),
        }
    }
}

/// Most attributes kept of a login.
pub const MAX_ATTRIBUTES: usize = 100;
/// Most values kept per attribute.
pub const MAX_VALUES: usize = 50;
/// Longest value kept (characters; longer ones are cut).
pub const MAX_VALUE: usize = 1024;

/// A user's last admitted login, as the mapping saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastLogin {
    /// The account.
    pub account: String,
    /// The user's email (the key, with the account).
    pub email: String,
    /// NameID.
    pub name_id: Option<String>,
    /// The attributes received (bounded: [`MAX_ATTRIBUTES`],
    /// [`MAX_VALUES`], [`MAX_VALUE`]).
    pub attributes: Vec<SamlAttribute>,
    /// Unix seconds.
    pub at: i64,
}

impl LastLogin {
    /// The login's attributes (taken, not copied), cut to the bounds.
    pub fn new(
        account: &str,
        email: &str,
        name_id: Option<&str>,
        mut attributes: Vec<SamlAttribute>,
        at: i64,
    ) -> Self {
        fn cut(v: &mut String) {
            if let Some((i, _)) = v.char_indices().nth(MAX_VALUE) {
                v.truncate(i);
            }
        }
        attributes.truncate(MAX_ATTRIBUTES);
        for a in &mut attributes {
            cut(&mut a.name);
            a.friendly_name.iter_mut().for_each(cut);
            a.name_format.iter_mut().for_each(cut);
            a.values.truncate(MAX_VALUES);
            a.values.iter_mut().for_each(cut);
        }
        let mut name_id = name_id.map(str::to_owned);
        name_id.iter_mut().for_each(cut);
        Self {
            account: account.to_owned(),
            email: email.to_owned(),
            name_id,
            attributes,
            at,
        }
    }
}

/// The document key of `email`'s last login in `account`.
pub fn last_login_key(account: &str, email: &str) -> String {
    format!("{account}/{email}")
}

/// Deletes what is kept of user `email` of `account` (before the user
/// is deleted: a failure leaves both, and the deletion can be retried).
pub async fn forget_user(store: &dyn Store, account: &str, email: &str) -> Result<(), StoreError> {
    store
        .delete_doc(DocSpace::LastLogin, &last_login_key(account, email))
        .await
        .map(|_| ())
}

/// Account `account`'s users' last logins, by email, after `after`, at
/// most `limit`.
pub async fn last_logins(
    store: &dyn Store,
    account: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<LastLogin>, StoreError> {
    let prefix = format!("{account}/");
    let after = after.map(|a| last_login_key(account, a));
    Ok(store
        .list_docs(DocSpace::LastLogin, &prefix, after.as_deref(), limit)
        .await?
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect())
}

/// What the recorder's queue carries.
pub enum Item {
    /// A login decision.
    Decision(Decision),
    /// An admitted login: its decision and the user's attributes.
    Admitted(Decision, Box<LastLogin>),
    /// A refused login's POST body (the newest per account is kept
    /// [`FAILED_KEPT`], for the console's Test a SAMLResponse).
    Failed(String, bytes::Bytes),
}

/// How long an account's last refused response is kept.
pub const FAILED_KEPT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Account `account`'s last refused SAMLResponse (the base64 value), if
/// one was refused in the last [`FAILED_KEPT`].
pub async fn last_failed(store: &dyn Store, account: &str) -> Result<Option<String>, StoreError> {
    let Some(body) = store
        .get_ephemeral(crate::store::Ephemeral::FailedResponse, account)
        .await?
    else {
        return Ok(None);
    };
    Ok(crate::console::form::urlencoded(&body)
        .ok()
        .and_then(|f| f.get("SAMLResponse").map(str::to_owned)))
}

/// The store log of account `account`'s decisions.
pub fn log_of(account: &str) -> String {
    format!("activity:{account}")
}

/// The recorder's queue (one per process).
pub struct Activity {
    tx: mpsc::Sender<Item>,
    dropped: AtomicU64,
}

impl Activity {
    /// A recorder and the receiving end for [`run`].
    pub fn new() -> (Arc<Self>, mpsc::Receiver<Item>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            Arc::new(Self {
                tx,
                dropped: AtomicU64::new(0),
            }),
            rx,
        )
    }

    /// Queues `d` (never waits; a full queue drops it).
    pub fn record(&self, d: Decision) {
        self.send(Item::Decision(d));
    }

    /// Queues a refused login's POST body (never waits).
    pub fn failed_response(&self, account: &str, body: bytes::Bytes) {
        self.send(Item::Failed(account.to_owned(), body));
    }

    /// Queues an admitted login's decision and attributes (one hand-off).
    pub fn admitted(&self, d: Decision, l: LastLogin) {
        self.send(Item::Admitted(d, Box::new(l)));
    }

    fn send(&self, item: Item) {
        if self.tx.try_send(item).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Decisions dropped so far (queue full, or a failed write).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes queued decisions until shutdown (what is queued then is
/// written first) or until every sender is gone.
pub async fn run(
    activity: Arc<Activity>,
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Item>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => n,
            _ = shutdown.changed() => {
                rx.close();
                rx.recv_many(&mut buf, QUEUE).await
            }
        };
        if n == 0 {
            return;
        }
        let mut by_account: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        // The newest of each user's last logins in the batch.
        let mut logins: HashMap<String, Vec<u8>> = HashMap::new();
        let mut failed: HashMap<String, bytes::Bytes> = HashMap::new();
        for item in buf.drain(..) {
            let (decision, last) = match item {
                Item::Decision(d) => (Some(d), None),
                Item::Admitted(d, l) => (Some(d), Some(l)),
                Item::Failed(account, body) => {
                    failed.insert(account, body);
                    (None, None)
                }
            };
            if let Some(d) = decision
                && let Ok(json) = serde_json::to_vec(&d)
            {
                by_account.entry(d.account).or_default().push(json);
            }
            if let Some(l) = last
                && let Ok(json) = serde_json::to_vec(&l)
            {
                logins.insert(last_login_key(&l.account, &l.email), json);
            }
        }
        for (account, body) in failed {
            if let Err(e) = store
                .put_ephemeral(
                    crate::store::Ephemeral::FailedResponse,
                    &account,
                    &body,
                    FAILED_KEPT,
                )
                .await
            {
                activity.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, account = %account, "refused response not kept");
            }
        }
        if !logins.is_empty() {
            let docs: Vec<(String, Vec<u8>)> = logins.into_iter().collect();
            if let Err(e) = store.put_docs(DocSpace::LastLogin, &docs).await {
                activity
                    .dropped
                    .fetch_add(docs.len() as u64, Ordering::Relaxed);
                tracing::warn!(error = %e, dropped = docs.len(), "last-login attributes not written");
            }
        }
        for (account, entries) in by_account {
            if let Err(e) = store.log_push(&log_of(&account), &entries, KEEP).await {
                activity
                    .dropped
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                tracing::warn!(error = %e, account = %account, dropped = entries.len(), "sign-in activity not written");
            }
        }
        if rx.is_closed() && rx.is_empty() {
            return;
        }
        if !*shutdown.borrow() {
            tokio::select! {
                () = tokio::time::sleep(PAUSE) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Account `account`'s newest `limit` decisions, newest first.
pub async fn recent(
    store: &dyn Store,
    account: &str,
    limit: usize,
) -> Result<Vec<Decision>, StoreError> {
    Ok(store
        .log_recent(&log_of(account), limit)
        .await?
        .iter()
        .filter_map(|e| serde_json::from_slice(e).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (a, _rx) = Activity::new();
        for i in 0..QUEUE + 5 {
            a.record(Decision::new(
                0,
                "acme",
                None,
                None,
                "",
                &i.to_string(),
                "::1",
            ));
        }
        assert_eq!(a.dropped(), 5);
        let d = Decision::new(0, "a", None, Some("x"), &"r".repeat(1000), "t", "::1");
        assert_eq!(d.reason.chars().count(), MAX_REASON);
    }
}
