//! Sessions: 256-bit random ids in the store (keyed by their SHA-256, so a
//! store dump holds no usable id), an absolute lifetime capped by the
//! assertion's SessionNotOnOrAfter, a sliding idle timeout, and a periodic
//! re-check of the user: a deactivated or deleted user loses every session
//! within `session.recheck_secs` (default 5 s) on every replica.
//!
//! Each replica keeps a small in-memory cache of recently seen sessions for
//! at most `recheck_secs`, so a session check costs no store round trip on
//! most requests; a logout on one replica therefore reaches the others
//! within `recheck_secs` too.
//!
//! Deprovisioning (SCIM `active=false` or DELETE, the admin API's
//! deactivation or deletion) must not wait that long: it appends the user to
//! the store's revocation log ([`Sessions::revoke`]). Every replica polls
//! the log every [`POLL_EVERY`] ([`Sessions::watch`]) and forgets the
//! user's cached sessions, and a replica uses its cache only while its last
//! successful poll started less than [`FRESH`] ago (fail closed: a replica
//! that cannot poll goes to the store, which re-reads the user, on every
//! request). The revoker answers only after [`FRESH`] has passed since its
//! write, so by then no replica serves the user from its cache.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account::Account;
use crate::config::Config;
use crate::provisioning::token_hash;
use crate::store::{Ephemeral, Store, StoreError, UserRecord, UserStatus};

/// Most sessions cached per replica.
const CACHE_MAX: usize = 100_000;

/// A revocation log entry naming one session (by its store key) rather than
/// a user: `session:` + key (a key has no `@`, an email always one).
const SESSION_ENTRY: &str = "session:";

/// How often a replica reads the revocation log.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// How long after its last successful revocation poll started a replica may
/// still answer from its session cache; also how long a revocation waits
/// before it is reported done.
pub const FRESH: Duration = Duration::from_millis(400);

/// What a session holds (as JSON in the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    /// The account the session was opened on: it is a session on that
    /// account's hosts only (sessions from before accounts: `default`).
    #[serde(default = "default_account")]
    pub account: String,
    /// The user's email.
    pub email: String,
    /// The user as of the last check (identity headers come from here).
    pub user: UserRecord,
    /// NameID of the login.
    pub name_id: Option<String>,
    /// Its Format, NameQualifier and SPNameQualifier, as received (a
    /// LogoutRequest names the user with them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_id_format: Option<String>,
    /// NameQualifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_qualifier: Option<String>,
    /// SPNameQualifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_name_qualifier: Option<String>,
    /// AuthnStatement SessionIndex.
    pub session_index: Option<String>,
    /// Unix seconds: created.
    pub created: i64,
    /// Unix seconds: absolute end.
    pub expires: i64,
    /// Unix seconds: last refresh of the idle timeout.
    pub touched: i64,
    /// The login's mapping gave `role = "admin"`: the account's console
    /// admits this session's user.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// What the login contributes to a session.
#[derive(Debug, Clone, Default)]
pub struct LoginFacts {
    /// NameID.
    pub name_id: Option<String>,
    /// NameID Format.
    pub name_id_format: Option<String>,
    /// NameID NameQualifier.
    pub name_qualifier: Option<String>,
    /// NameID SPNameQualifier.
    pub sp_name_qualifier: Option<String>,
    /// AuthnStatement SessionIndex.
    pub session_index: Option<String>,
    /// AuthnStatement SessionNotOnOrAfter: caps the session.
    pub session_not_on_or_after: Option<DateTime<Utc>>,
    /// The mapping made the user an admin of the account's console.
    pub admin: bool,
}

fn default_account() -> String {
    crate::account::DEFAULT_ID.to_owned()
}

/// One worker's cached sessions: cookie value → (session, when read).
struct Cache {
    map: HashMap<String, (Arc<SessionData>, Instant)>,
    /// At this many entries, entries older than `recheck_secs` (which would
    /// be read from the store again anyway) are dropped: then twice the
    /// entries kept, so the sweeps cost O(1) per insert and the cache stays
    /// within about twice the sessions used in the last `recheck_secs`.
    sweep_at: usize,
}

/// The smallest `Cache::sweep_at`.
const SWEEP_MIN: usize = 1024;

impl Default for Cache {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            sweep_at: SWEEP_MIN,
        }
    }
}

impl Cache {
    /// Caches `data` for cookie value `id` (read now).
    fn insert(&mut self, id: &str, data: Arc<SessionData>, recheck: Duration) {
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, (_, at)| at.elapsed() < recheck);
            if self.map.len() >= CACHE_MAX {
                self.map.clear();
            }
            // Give back what a burst grew (a cleared map keeps its table).
            self.map.shrink_to(self.map.len().saturating_mul(2));
            self.sweep_at = self.map.len().saturating_mul(2).clamp(SWEEP_MIN, CACHE_MAX);
        }
        self.map.insert(id.to_owned(), (data, Instant::now()));
    }
}

/// Session management for one gateway process.
///
/// The cache has one shard per worker thread: a worker reads and fills only
/// its own (no lock or reference count shared between cores on the request
/// path), and ending a session removes it from every shard.
pub struct Sessions {
    shards: Vec<Mutex<Cache>>,
    /// When this cache was made: the origin of `fresh_until_us`.
    epoch: Instant,
    /// Microseconds after `epoch` until which the cache may answer (set by
    /// the revocation watcher).
    fresh_until_us: AtomicU64,
    /// A revocation watcher runs for this cache: the cache answers only
    /// while fresh. Without one (a gateway built for a test) it answers for
    /// `recheck_secs`, as before.
    watched: AtomicBool,
    /// Bumped by every forgetting of revoked users: a session read from
    /// the store before one is not cached after it (it may be one of them,
    /// read before the user's change).
    generation: AtomicU64,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::sharded(1)
    }
}

/// A new random session id (32 bytes, base64url).
pub fn new_session_id() -> String {
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The key of the set of sessions account `account` opened for NameID
/// `name_id` (its value: the IdP names the user by it in a LogoutRequest).
pub fn slo_key(account: &str, name_id: &str) -> String {
    format!("{account}:{}", token_hash(name_id))
}

fn ttl(data: &SessionData, account: &Account, now: i64) -> Duration {
    idle_ttl(data, account.session.idle_timeout_secs, now)
}

fn idle_ttl(data: &SessionData, idle_timeout_secs: u64, now: i64) -> Duration {
    let idle = i64::try_from(idle_timeout_secs).unwrap_or(i64::MAX);
    let left = (data.expires - now).min(idle).max(1);
    Duration::from_secs(u64::try_from(left).unwrap_or(1))
}

/// A session of `user` on account `account` (sessions of
/// `lifetime_secs`) opened at `now` (Unix seconds).
fn build_session(
    account: &str,
    lifetime_secs: u64,
    user: UserRecord,
    login: LoginFacts,
    now: i64,
) -> SessionData {
    let LoginFacts {
        name_id,
        name_id_format,
        name_qualifier,
        sp_name_qualifier,
        session_index,
        session_not_on_or_after,
        admin,
    } = login;
    let mut expires = now + i64::try_from(lifetime_secs).unwrap_or(i64::MAX / 2);
    if let Some(cap) = session_not_on_or_after {
        expires = expires.min(cap.timestamp());
    }
    SessionData {
        account: account.to_owned(),
        email: user.email.clone(),
        user,
        name_id,
        name_id_format,
        name_qualifier,
        sp_name_qualifier,
        session_index,
        created: now,
        expires,
        touched: now,
        admin,
    }
}

impl Sessions {
    /// A cache with `n` shards (one per worker thread; at least one).
    pub fn sharded(n: usize) -> Self {
        Self {
            shards: (0..n.max(1))
                .map(|_| Mutex::new(Cache::default()))
                .collect(),
            epoch: Instant::now(),
            fresh_until_us: AtomicU64::new(0),
            watched: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }

    fn micros_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// The cache may answer now.
    fn cache_fresh(&self) -> bool {
        !self.watched.load(Ordering::Relaxed)
            || self.micros_since_epoch(Instant::now()) < self.fresh_until_us.load(Ordering::Acquire)
    }

    /// Polls the store's revocation log until `stop`, forgetting the cached
    /// sessions of every revoked user (all of them when the log no longer
    /// reaches back to the last poll), and keeps the cache fresh while the
    /// polls succeed.
    pub async fn watch(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        self.watched.store(true, Ordering::Release);
        let mut since: Option<u64> = None;
        let mut failing = false;
        loop {
            let started = Instant::now();
            match store.revocations_since(since).await {
                Ok(r) => {
                    match (since, r.emails) {
                        (None, _) => self.forget_all(),
                        (Some(_), None) => {
                            tracing::info!(
                                "the revocation log does not reach back to the last poll: forgetting every cached session"
                            );
                            self.forget_all();
                        }
                        (Some(_), Some(entries)) if !entries.is_empty() => {
                            self.forget_entries(&entries);
                        }
                        _ => {}
                    }
                    since = Some(r.seq);
                    let until = self.micros_since_epoch(started + FRESH);
                    self.fresh_until_us.fetch_max(until, Ordering::AcqRel);
                    if failing {
                        tracing::info!("the session revocation log is readable again");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the session revocation log: sessions are checked in the store until it can");
                        failing = true;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Ends every live session of `emails` on every replica: forgets them
    /// here, appends them to the store's revocation log, and returns once
    /// no replica can still answer from its cache ([`FRESH`] after the
    /// write). Sessions read from the store afterwards meet the user as
    /// now stored (deactivated or gone), so the caller changes the user
    /// first.
    pub async fn revoke(&self, store: &dyn Store, emails: &[String]) -> Result<(), StoreError> {
        if emails.is_empty() {
            return Ok(());
        }
        self.announce(store, emails).await
    }

    /// Ends the sessions stored at `keys` (their SHA-256 keys) on every
    /// replica: deleted from the store, forgotten here, and logged for the
    /// others' caches; returns once no replica can still answer from its
    /// cache (as [`Sessions::revoke`]).
    pub async fn end_stored(&self, store: &dyn Store, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        for k in keys {
            store.delete_ephemeral(Ephemeral::Session, k).await?;
        }
        let entries: Vec<String> = keys.iter().map(|k| format!("{SESSION_ENTRY}{k}")).collect();
        self.announce(store, &entries).await
    }

    /// Forgets the revocation log `entries` here, appends them to the log,
    /// and returns once no replica can still answer from its cache for
    /// them ([`FRESH`] after the write).
    async fn announce(&self, store: &dyn Store, entries: &[String]) -> Result<(), StoreError> {
        self.forget_entries(entries);
        store.revoke_sessions(entries).await?;
        tokio::time::sleep(FRESH + Duration::from_millis(20)).await;
        // A request that read the cache just before the write may have
        // put its session back here: forget once more.
        self.forget_entries(entries);
        Ok(())
    }

    /// Forgets what revocation log entries name: users (emails) and single
    /// sessions (`session:KEY`, Single Logout).
    fn forget_entries(&self, entries: &[String]) {
        let (keys, emails): (Vec<&str>, Vec<&str>) = entries
            .iter()
            .map(String::as_str)
            .partition(|e| e.starts_with(SESSION_ENTRY) && !e.contains('@'));
        if !emails.is_empty() {
            self.forget_users(&emails.into_iter().collect());
        }
        if !keys.is_empty() {
            self.forget_keys(
                &keys
                    .into_iter()
                    .filter_map(|k| k.strip_prefix(SESSION_ENTRY))
                    .collect(),
            );
        }
    }

    /// Forgets the cached sessions whose store keys are `keys`.
    fn forget_keys(&self, keys: &HashSet<&str>) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for s in &self.shards {
            if let Ok(mut cache) = s.lock() {
                cache
                    .map
                    .retain(|id, _| !keys.contains(token_hash(id).as_str()));
            }
        }
    }

    /// Forgets every cached session of these users.
    fn forget_users(&self, emails: &HashSet<&str>) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for s in &self.shards {
            if let Ok(mut cache) = s.lock() {
                cache
                    .map
                    .retain(|_, (data, _)| !emails.contains(data.email.as_str()));
            }
        }
    }

    /// Forgets every cached session.
    fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for s in &self.shards {
            if let Ok(mut cache) = s.lock() {
                cache.map.clear();
            }
        }
    }

    /// How many shards (worker threads) share this cache.
    pub fn shards(&self) -> usize {
        self.shards.len().max(1)
    }

    fn shard(&self, i: usize) -> Option<&Mutex<Cache>> {
        self.shards.get(i % self.shards.len().max(1))
    }

    /// Creates a session on `account`; returns its id (the cookie value).
    pub async fn create(
        &self,
        store: &dyn Store,
        account: &Account,
        user: UserRecord,
        login: LoginFacts,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let id = new_session_id();
        let n = now.timestamp();
        let data = build_session(&account.id, account.session.lifetime_secs, user, login, n);
        let json = serde_json::to_vec(&data).unwrap_or_default();
        let key = token_hash(&id);
        let lifetime = Duration::from_secs(u64::try_from((data.expires - n).max(1)).unwrap_or(1));
        // Findable by its NameID for Single Logout, only when the account
        // can take part in it (an SP signing key): no write otherwise.
        if account.sp.key.is_some()
            && let Some(nid) = &data.name_id
        {
            store
                .add_to_set(
                    Ephemeral::SloIndex,
                    &slo_key(&account.id, nid),
                    &key,
                    lifetime,
                )
                .await?;
        }
        store
            .put_ephemeral(Ephemeral::Session, &key, &json, ttl(&data, account, n))
            .await?;
        Ok(id)
    }

    /// A new user's first session, to write with the user in one store
    /// write ([`Store::insert_user_claiming_then`]): its id, and the keys
    /// to write made of the user as inserted (none unless it is active).
    /// None when the session also needs a Single Logout index entry (a set
    /// member: written by [`Sessions::create`]).
    pub fn first_session(
        account: &Account,
        login: LoginFacts,
        now: DateTime<Utc>,
    ) -> Option<(String, crate::store::KeysOf)> {
        if account.sp.key.is_some() && login.name_id.is_some() {
            return None;
        }
        let id = new_session_id();
        let key = token_hash(&id);
        let n = now.timestamp();
        let (account_id, lifetime, idle) = (
            account.id.clone(),
            account.session.lifetime_secs,
            account.session.idle_timeout_secs,
        );
        let keys: crate::store::KeysOf = Arc::new(move |user: &UserRecord| {
            if user.status != crate::store::UserStatus::Active {
                return Vec::new();
            }
            let data = build_session(&account_id, lifetime, user.clone(), login.clone(), n);
            let ttl = idle_ttl(&data, idle, n);
            let json = serde_json::to_vec(&data).unwrap_or_default();
            vec![(Ephemeral::Session, key.clone(), json, ttl)]
        });
        Some((id, keys))
    }

    /// The live session for `id` on `account`, re-checking the user and
    /// refreshing the idle timeout when due. `None` when absent, expired,
    /// revoked, another account's, or the account is suspended. `shard` is
    /// the calling worker's cache shard.
    pub async fn load(
        &self,
        store: &dyn Store,
        cfg: &Config,
        account: &Account,
        id: &str,
        now: DateTime<Utc>,
        shard: usize,
    ) -> Result<Option<Arc<SessionData>>, StoreError> {
        let n = now.timestamp();
        if !account.is_active() {
            return Ok(None);
        }
        let recheck = Duration::from_secs(cfg.session.recheck_secs);
        // The in-memory cache is keyed by the cookie value itself (it never
        // leaves the process); the store is keyed by its SHA-256.
        if let Some(Ok(cache)) = self.shard(shard).map(Mutex::lock)
            && let Some((data, at)) = cache.map.get(id)
            && at.elapsed() < recheck
            && data.expires > n
            && self.cache_fresh()
        {
            // Another account's session is not a session here (and stays
            // one on its own account's hosts).
            return Ok((data.account == account.id).then(|| Arc::clone(data)));
        }
        let key = token_hash(id);
        let generation = self.generation.load(Ordering::Acquire);
        let Some(raw) = store.get_ephemeral(Ephemeral::Session, &key).await? else {
            self.forget(id);
            return Ok(None);
        };
        let Ok(mut data) = serde_json::from_slice::<SessionData>(&raw) else {
            store.delete_ephemeral(Ephemeral::Session, &key).await?;
            return Ok(None);
        };
        if data.expires <= n {
            store.delete_ephemeral(Ephemeral::Session, &key).await?;
            self.forget(id);
            return Ok(None);
        }
        if data.account != account.id {
            return Ok(None);
        }
        // Re-check the user: deleted, not active or moved to another
        // account ends the session.
        match store.get_user(&data.email).await? {
            Some(u) if u.status == UserStatus::Active && u.account == data.account => data.user = u,
            _ => {
                store.delete_ephemeral(Ephemeral::Session, &key).await?;
                self.forget(id);
                return Ok(None);
            }
        }
        // Refresh the idle timeout at most every minute (and at least twice
        // per idle period).
        let touch_every =
            i64::try_from((account.session.idle_timeout_secs / 2).min(60)).unwrap_or(60);
        if n - data.touched >= touch_every {
            data.touched = n;
            let json = serde_json::to_vec(&data).unwrap_or_default();
            store
                .put_ephemeral(Ephemeral::Session, &key, &json, ttl(&data, account, n))
                .await?;
        }
        let data = Arc::new(data);
        if let Some(Ok(mut cache)) = self.shard(shard).map(Mutex::lock)
            && self.generation.load(Ordering::Acquire) == generation
        {
            cache.insert(id, Arc::clone(&data), recheck);
        }
        Ok(Some(data))
    }

    /// Ends session `id` if it is `account`'s (another account's session is
    /// not one here, so not this host's to end); `true` when it was.
    pub async fn destroy_on(
        &self,
        store: &dyn Store,
        account: &Account,
        id: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.end_on(store, account, id).await?.is_some())
    }

    /// [`Sessions::destroy_on`], returning what the session held (what a
    /// LogoutRequest to the IdP names) when it was `account`'s and
    /// readable.
    pub async fn end_on(
        &self,
        store: &dyn Store,
        account: &Account,
        id: &str,
    ) -> Result<Option<SessionData>, StoreError> {
        let key = token_hash(id);
        let Some(raw) = store.get_ephemeral(Ephemeral::Session, &key).await? else {
            self.forget(id);
            return Ok(None);
        };
        match serde_json::from_slice::<SessionData>(&raw) {
            Ok(d) if d.account != account.id => Ok(None),
            Ok(d) => {
                self.destroy(store, id).await?;
                if let Some(nid) = &d.name_id {
                    store
                        .remove_from_set(Ephemeral::SloIndex, &slo_key(&account.id, nid), &key)
                        .await?;
                }
                Ok(Some(d))
            }
            Err(_) => {
                self.destroy(store, id).await?;
                Ok(None)
            }
        }
    }

    /// The sessions `account` opened for NameID `name_id` (only those of
    /// `session_indexes`, when any), by store key, as the Single Logout
    /// index has them; entries whose session is gone are dropped.
    pub async fn of_name_id(
        &self,
        store: &dyn Store,
        account: &Account,
        name_id: &str,
        session_indexes: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let set = slo_key(&account.id, name_id);
        let mut out = Vec::new();
        for key in store.set_members(Ephemeral::SloIndex, &set).await? {
            let data = store
                .get_ephemeral(Ephemeral::Session, &key)
                .await?
                .and_then(|raw| serde_json::from_slice::<SessionData>(&raw).ok());
            match data {
                None => {
                    store
                        .remove_from_set(Ephemeral::SloIndex, &set, &key)
                        .await?
                }
                Some(d) => {
                    let mine = d.account == account.id && d.name_id.as_deref() == Some(name_id);
                    let indexed = session_indexes.is_empty()
                        || d.session_index
                            .as_ref()
                            .is_some_and(|i| session_indexes.contains(i));
                    if mine && indexed {
                        out.push(key);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Ends a session.
    pub async fn destroy(&self, store: &dyn Store, id: &str) -> Result<(), StoreError> {
        let key = token_hash(id);
        self.forget(id);
        store.delete_ephemeral(Ephemeral::Session, &key).await
    }

    /// Removes `id` from every shard.
    fn forget(&self, id: &str) {
        for s in &self.shards {
            if let Ok(mut cache) = s.lock() {
                cache.map.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Arc<SessionData> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "email": "a@example.com",
                "user": {
                    "email": "a@example.com", "account": "default", "first_name": "",
                    "last_name": "", "department": "", "groups": [], "license": "basic",
                    "features": [], "sso_only": true, "status": "active", "vanity": null,
                    "source": "jit", "created_at": "", "updated_at": ""
                },
                "name_id": null, "session_index": null,
                "created": 0, "expires": 1, "touched": 0
            }))
            .unwrap(),
        )
    }

    #[test]
    fn cache_drops_entries_past_recheck_as_it_grows() {
        let d = data();
        let mut c = Cache::default();
        // Entries that are stale at once: never more than a sweep's worth.
        for i in 0..50_000 {
            c.insert(&format!("s{i}"), Arc::clone(&d), Duration::ZERO);
            assert!(c.map.len() <= SWEEP_MIN, "{}", c.map.len());
        }
        // Fresh entries are all kept, the sweep point moving past them.
        let mut c = Cache::default();
        for i in 0..5_000 {
            c.insert(&format!("s{i}"), Arc::clone(&d), Duration::from_secs(3600));
        }
        assert_eq!(c.map.len(), 5_000);
        assert!(
            c.sweep_at > 5_000 / 2 && c.sweep_at <= 2 * 5_000,
            "{}",
            c.sweep_at
        );
    }
}
