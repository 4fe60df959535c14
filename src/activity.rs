//! Sign-in activity: every login decision (the audit event's fields: code,
//! reason, tracking id, email, NameID, client address) mirrored into a
//! capped log per account in the store, the newest [`KEEP`], for the
//! console's Sign-in activity page and a user's recent decisions: "why
//! can't Bob sign in?" answered in one place, on every replica.
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

use crate::store::{Store, StoreError};

/// Decisions kept per account.
pub const KEEP: usize = 10_000;
/// Decisions queued at most (beyond: dropped and counted).
pub const QUEUE: usize = 16_384;
/// Decisions written per batch at most.
const BATCH: usize = 2_000;
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

/// The store log of account `account`'s decisions.
pub fn log_of(account: &str) -> String {
    format!("activity:{account}")
}

/// The recorder's queue (one per process).
pub struct Activity {
    tx: mpsc::Sender<Decision>,
    dropped: AtomicU64,
}

impl Activity {
    /// A recorder and the receiving end for [`run`].
    pub fn new() -> (Arc<Self>, mpsc::Receiver<Decision>) {
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
        if self.tx.try_send(d).is_err() {
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
    mut rx: mpsc::Receiver<Decision>,
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
        for d in buf.drain(..) {
            if let Ok(json) = serde_json::to_vec(&d) {
                by_account.entry(d.account).or_default().push(json);
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
