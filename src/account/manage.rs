//! Managing the accounts in the store, for the admin API and the command
//! line alike: create or replace, patch (JSON merge patch), get, list,
//! delete, and keeping a replica's [`Registry`] in step with the store.
//!
//! Every write is checked whole first ([`doc::build`]) and then made as one
//! store operation (the record, its hosts, the version bump): a document
//! with a problem, a host another account lists, or a concurrent change
//! leaves the stored accounts exactly as they were.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Account;
use super::doc::{self, Fetched, Record};
use super::parse::ConfigProblem;
use super::registry::{Change, Registry};
use crate::config::Config;
use crate::store::{Expect, PutAccount, Store, StoreError, StoredAccount};

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The document has problems (every one, by key).
    #[error("the account document has {} problem(s): {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigProblem>),
    /// A host is another account's.
    #[error("host {host} is account {owner}'s")]
    HostTaken {
        /// The host.
        host: String,
        /// Its account.
        owner: String,
    },
    /// No such account.
    #[error("no account {0}")]
    NotFound(String),
    /// The account changed while this change was being made; retry.
    #[error("account {0} changed concurrently; read it again and retry")]
    Conflict(String),
    /// The account still has users (delete them, or `purge`).
    #[error("account {0} has users: delete them first, or delete with purge=true")]
    NotEmpty(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AccountError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_account",
            Self::HostTaken { .. } => "host_taken",
            Self::NotFound(_) => "account_not_found",
            Self::Conflict(_) => "account_conflict",
            Self::NotEmpty(_) => "account_not_empty",
            Self::Store(e) => e.code(),
        }
    }

    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_) => 400,
            Self::NotFound(_) => 404,
            Self::HostTaken { .. } | Self::Conflict(_) | Self::NotEmpty(_) => 409,
            Self::Store(_) => 503,
        }
    }
}

/// What a write did.
#[derive(Debug, Clone)]
pub struct Written {
    /// The account as it is now served.
    pub account: Arc<Account>,
    /// The document as stored.
    pub doc: Value,
    /// It did not exist before.
    pub created: bool,
    /// Its revision (0 for a dry run).
    pub revision: u64,
}

/// Fetches `url`'s metadata (10 s, 10 MiB at most).
async fn fetch(url: &str) -> Result<String, String> {
    crate::fetch::get_text(url, 10 * 1024 * 1024, Duration::from_secs(10)).await
}

fn metadata_url(doc: &Value) -> Option<&str> {
    doc.get("idp")?.get("metadata_url")?.as_str()
}

/// Reads a stored record.
fn decode(id: &str, stored: &StoredAccount) -> Result<Record, StoreError> {
    serde_json::from_slice(&stored.record).map_err(|e| StoreError::Corrupt {
        key: format!("account {id}"),
        reason: e.to_string(),
    })
}

/// Builds account `id` from a stored record (metadata from its cache).
pub fn from_record(cfg: &Config, id: &str, record: &Record) -> Result<Account, AccountError> {
    doc::build(
        id,
        &record.doc,
        &cfg.security,
        &cfg.path_prefix,
        Fetched::Cached(record.metadata_cache.clone()),
    )
    .map_err(AccountError::Invalid)
}

/// Creates or replaces account `id` with `doc` (`dry_run`: checks only).
/// A `metadata_url` is fetched now: a document whose metadata cannot be
/// fetched or used is refused.
pub async fn put(
    store: &dyn Store,
    cfg: &Config,
    registry: Option<&Registry>,
    id: &str,
    doc: Value,
    dry_run: bool,
) -> Result<Written, AccountError> {
    let fetched = match metadata_url(&doc) {
        Some(url) => Some(fetch(url).await),
        None => None,
    };
    let account = doc::build(
        id,
        &doc,
        &cfg.security,
        &cfg.path_prefix,
        Fetched::Now(fetched.clone().unwrap_or(Err(String::new()))),
    )
    .map_err(AccountError::Invalid)?;
    let record = Record {
        doc,
        metadata_cache: fetched.and_then(Result::ok),
    };
    write(store, registry, account, record, Expect::Any, dry_run).await
}

/// Applies JSON merge patch `patch` to account `id` (`dry_run`: checks
/// only). The patched document is checked whole, as a PUT of it would be.
pub async fn patch(
    store: &dyn Store,
    cfg: &Config,
    registry: Option<&Registry>,
    id: &str,
    patch: &Value,
    dry_run: bool,
) -> Result<Written, AccountError> {
    update(store, cfg, registry, id, dry_run, |doc| {
        doc::merge_patch(doc, patch);
    })
    .await
}

/// Changes account `id`'s document with `change` (`dry_run`: checks only,
/// and the account it would be is in the answer). The changed document is
/// checked whole, as a PUT of it would be; a new `metadata_url` is fetched.
pub async fn update(
    store: &dyn Store,
    cfg: &Config,
    registry: Option<&Registry>,
    id: &str,
    dry_run: bool,
    change: impl Fn(&mut Value),
) -> Result<Written, AccountError> {
    // A concurrent change makes the conditional write fail: read again and
    // re-apply the change, a few times.
    for _ in 0..4 {
        let stored = store
            .get_account(id)
            .await?
            .ok_or_else(|| AccountError::NotFound(id.to_owned()))?;
        let mut record = decode(id, &stored)?;
        let before_url = metadata_url(&record.doc).map(str::to_owned);
        change(&mut record.doc);
        let fetched = match metadata_url(&record.doc) {
            Some(url) if Some(url) != before_url.as_deref() => {
                let f = fetch(url).await;
                record.metadata_cache = f.clone().ok();
                Fetched::Now(f)
            }
            Some(_) => Fetched::Cached(record.metadata_cache.clone()),
            None => {
                record.metadata_cache = None;
                Fetched::Cached(None)
            }
        };
        let account = doc::build(id, &record.doc, &cfg.security, &cfg.path_prefix, fetched)
            .map_err(AccountError::Invalid)?;
        match write(
            store,
            registry,
            account,
            record,
            Expect::Revision(stored.revision),
            dry_run,
        )
        .await
        {
            Err(AccountError::Conflict(_)) => continue,
            other => return other,
        }
    }
    Err(AccountError::Conflict(id.to_owned()))
}

/// Problems with `account`'s SP identity given the others: two accounts
/// with one SP entity id or ACS URL would accept each other's assertions
/// (and each keeps its own replay cache).
fn sp_identity_problems(registry: &Registry, account: &Account) -> Vec<ConfigProblem> {
    let snap = registry.snapshot();
    let others = snap
        .stored()
        .chain(snap.default_account())
        .filter(|o| o.id != account.id);
    let mut problems = Vec::new();
    for o in others {
        if o.sp.entity_id == account.sp.entity_id {
            problems.push(ConfigProblem {
                key: "sp.entity_id".into(),
                message: format!(
                    "is account {}'s SP entity id: each account is its own relying party",
                    o.id
                ),
            });
        }
        if o.sp.acs_url == account.sp.acs_url {
            problems.push(ConfigProblem {
                key: "sp.acs_url".into(),
                message: format!("is account {}'s ACS URL", o.id),
            });
        }
    }
    problems
}

async fn write(
    store: &dyn Store,
    registry: Option<&Registry>,
    account: Account,
    record: Record,
    expect: Expect,
    dry_run: bool,
) -> Result<Written, AccountError> {
    let id = account.id.clone();
    if let Some(r) = registry {
        let problems = sp_identity_problems(r, &account);
        if !problems.is_empty() {
            return Err(AccountError::Invalid(problems));
        }
    }
    if dry_run {
        // Still say whether the hosts are free.
        for h in &account.hosts {
            if let Some(owner) = registry.and_then(|r| r.snapshot().owner_of(h).cloned())
                && owner.id != id
            {
                return Err(AccountError::HostTaken {
                    host: h.clone(),
                    owner: owner.id.clone(),
                });
            }
        }
        let created = store.get_account(&id).await?.is_none();
        return Ok(Written {
            account: Arc::new(account),
            doc: record.doc,
            created,
            revision: 0,
        });
    }
    let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt {
        key: format!("account {id}"),
        reason: e.to_string(),
    })?;
    match store
        .put_account(&id, &bytes, &account.hosts, expect)
        .await?
    {
        PutAccount::Written { revision, created } => {
            let account = Arc::new(account);
            // The replica that took the change serves it at once.
            if let Some(r) = registry {
                r.apply([Change::Put(Arc::clone(&account))]);
            }
            tracing::info!(target: "audit", event = if created { "account_created" } else { "account_updated" },
                account = %id, revision, hosts = ?account.hosts, status = ?account.status, mode = ?account.provisioning.mode);
            Ok(Written {
                account,
                doc: record.doc,
                created,
                revision,
            })
        }
        PutAccount::HostTaken { host, owner } => Err(AccountError::HostTaken { host, owner }),
        PutAccount::Conflict { .. } => Err(AccountError::Conflict(id)),
    }
}

/// Stores `text`, freshly fetched from `url`, as account `id`'s last good
/// metadata when the account still names `url`, the text differs from the
/// copy kept, and it is usable; every replica then serves it (the write
/// bumps the accounts version). `Ok(false)`: nothing to do. A change to the
/// account meanwhile wins (the write is conditional on its revision).
pub async fn store_fetched_metadata(
    store: &dyn Store,
    cfg: &Config,
    registry: Option<&Registry>,
    id: &str,
    url: &str,
    text: String,
) -> Result<bool, AccountError> {
    let Some(stored) = store.get_account(id).await? else {
        return Ok(false);
    };
    let mut record = decode(id, &stored)?;
    if metadata_url(&record.doc) != Some(url) || record.metadata_cache.as_deref() == Some(&text) {
        return Ok(false);
    }
    record.metadata_cache = Some(text);
    let account = from_record(cfg, id, &record)?;
    match write(
        store,
        registry,
        account,
        record,
        Expect::Revision(stored.revision),
        false,
    )
    .await
    {
        Ok(_) => Ok(true),
        Err(AccountError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Account `id`'s document and revision.
pub async fn get(store: &dyn Store, id: &str) -> Result<(Value, u64), AccountError> {
    let stored = store
        .get_account(id)
        .await?
        .ok_or_else(|| AccountError::NotFound(id.to_owned()))?;
    Ok((decode(id, &stored)?.doc, stored.revision))
}

/// Accounts' documents ordered by id, after `after`, at most `limit`.
pub async fn list(
    store: &dyn Store,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Value, u64)>, AccountError> {
    let mut out = Vec::new();
    for (id, stored) in store.list_accounts(after, limit).await? {
        out.push((id.clone(), decode(&id, &stored)?.doc, stored.revision));
    }
    Ok(out)
}

/// Every account's associated domains (`cfg`'s account and the stored
/// ones), for a command that runs without a registry: read from the
/// documents, without building the accounts.
pub async fn domain_owners(
    store: &dyn Store,
    cfg: &Config,
) -> Result<std::collections::HashMap<String, Vec<String>>, AccountError> {
    let mut owners: std::collections::HashMap<String, Vec<String>> = Default::default();
    if let Some(a) = &cfg.account {
        for d in &a.provisioning.associated_domains {
            owners.entry(d.clone()).or_default().push(a.id.clone());
        }
    }
    let mut after: Option<String> = None;
    loop {
        let page = store.list_accounts(after.as_deref(), PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (id, stored) in &page {
            let record = decode(id, stored)?;
            let domains = record
                .doc
                .pointer("/provisioning/associated_domains")
                .and_then(Value::as_array);
            for d in domains.into_iter().flatten().filter_map(Value::as_str) {
                owners
                    .entry(d.trim().trim_start_matches('@').to_ascii_lowercase())
                    .or_default()
                    .push(id.clone());
            }
        }
        if page.len() < PAGE {
            break;
        }
    }
    Ok(owners)
}

/// Deletes account `id`. While it has users this is refused unless
/// `purge`, which deletes them first (and ends their sessions within
/// `session.recheck_secs`).
pub async fn delete(
    store: &dyn Store,
    registry: Option<&Registry>,
    id: &str,
    purge: bool,
) -> Result<u64, AccountError> {
    if store.get_account(id).await?.is_none() {
        return Err(AccountError::NotFound(id.to_owned()));
    }
    let mut purged = 0;
    loop {
        // Always from the start: the users of the last page are gone.
        let (page, _) = store.list_account_users(id, None, 1000).await?;
        if page.is_empty() {
            break;
        }
        if !purge {
            return Err(AccountError::NotEmpty(id.to_owned()));
        }
        let before = purged;
        for u in &page {
            crate::activity::forget_user(store, id, &u.email).await?;
            if store.delete_user(&u.email).await? {
                purged += 1;
                crate::scim::forget_id(store, u).await;
            }
        }
        if purged == before {
            // Nothing listed could be deleted: never loop on it.
            return Err(AccountError::Store(StoreError::Unavailable(format!(
                "the users of account {id} could not be deleted"
            ))));
        }
    }
    // Its SCIM groups: an account made again with this id starts empty.
    let prefix = format!("{id}/");
    loop {
        let page = store
            .list_docs(crate::store::DocSpace::Group, &prefix, None, 500)
            .await?;
        if page.is_empty() {
            break;
        }
        for (k, _) in &page {
            store.delete_doc(crate::store::DocSpace::Group, k).await?;
        }
    }
    if !store.delete_account(id).await? {
        return Err(AccountError::NotFound(id.to_owned()));
    }
    store.log_delete(&crate::activity::log_of(id)).await?;
    if let Some(r) = registry {
        r.apply([Change::Remove(id.to_owned())]);
    }
    tracing::info!(target: "audit", event = "account_deleted", account = %id, users_deleted = purged);
    Ok(purged)
}

/// Keeps a replica's registry in step with the store: reads what changed
/// since the version it last saw and applies it (a document this replica
/// cannot build is taken out of service here, and logged: fail closed).
#[derive(Debug, Default)]
pub struct Sync {
    since: u64,
}

impl Sync {
    /// Nothing read yet: the first [`Sync::poll`] loads every stored account.
    pub fn new() -> Self {
        Self::default()
    }

    /// The accounts version applied so far.
    pub fn version(&self) -> u64 {
        self.since
    }

    /// Applies the changes since the last poll; returns how many accounts
    /// changed. Many changes (the first poll of a replica joining a large
    /// fleet) are read in pages and built on every core, each page applied
    /// as soon as it is ready.
    pub async fn poll(
        &mut self,
        store: &dyn Store,
        cfg: &Config,
        registry: &Registry,
    ) -> Result<usize, StoreError> {
        let changes = store.account_changes(self.since).await?;
        if changes.version <= self.since {
            registry.set_loaded();
            return Ok(0);
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        for page in changes.changed.chunks(PAGE) {
            let stored = store.get_accounts(page).await?;
            let work: Vec<(String, Option<StoredAccount>)> =
                page.iter().cloned().zip(stored).collect();
            // Building an account parses its metadata's certificates (about
            // 0.3 ms each with OpenSSL 3.0): off the async workers, spread
            // over the cores.
            let per = work.len().div_ceil(cores).max(1);
            let mut jobs = tokio::task::JoinSet::new();
            for part in work.chunks(per) {
                let (part, cfg) = (part.to_vec(), cfg.clone());
                jobs.spawn_blocking(move || {
                    part.into_iter()
                        .map(|(id, stored)| build_change(&cfg, id, stored))
                        .collect::<Vec<Change>>()
                });
            }
            let mut applied = Vec::with_capacity(page.len());
            while let Some(done) = jobs.join_next().await {
                applied.extend(
                    done.map_err(|e| StoreError::Unavailable(format!("account build: {e}")))?,
                );
            }
            registry.apply(applied);
        }
        self.since = changes.version;
        registry.set_loaded();
        Ok(changes.changed.len())
    }
}

/// Accounts read and built per step of [`Sync::poll`].
const PAGE: usize = 500;

/// The change to apply for a stored record (or its absence).
fn build_change(cfg: &Config, id: String, stored: Option<StoredAccount>) -> Change {
    let Some(stored) = stored else {
        return Change::Remove(id);
    };
    match decode(&id, &stored)
        .map_err(AccountError::from)
        .and_then(|r| from_record(cfg, &id, &r))
    {
        Ok(a) => Change::Put(Arc::new(a)),
        Err(e) => {
            tracing::error!(account = %id, code = e.code(), error = %e, "a stored account cannot be served by this replica; it is out of service here");
            Change::Remove(id)
        }
    }
}
