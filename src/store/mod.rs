//! The store: users, the vanity-name index, and short-lived keys (sessions,
//! outstanding request ids, the replay cache, verification tokens).
//!
//! One [`Store`] trait, two implementations: [`embedded::EmbeddedStore`]
//! (redb on disk, the default: durable, a restart loses nothing) and
//! [`redis::RedisStore`] (standalone or Redis Cluster, shared by replicas).
//! `tests/it/store_conformance.rs` runs one suite against both, on a real
//! `redis-server` and a real 3-master cluster.
//!
//! Every method fails with [`StoreError::Unavailable`] when the backend
//! cannot be reached in time; callers fail closed on it (`store_unavailable`).

pub mod embedded;
pub mod redis;
mod wal;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::mapping::License;

/// A boxed future returned by store methods (keeps [`Store`] object-safe).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back.
    #[error("store holds an unreadable value at {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What went wrong.
        reason: String,
    },
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Open(String),
}

impl StoreError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "store_unavailable",
            Self::Corrupt { .. } => "store_corrupt",
            Self::Open(_) => "store_unavailable",
        }
    }
}

/// Account status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// May sign in.
    Active,
    /// Email domain not associated: waits for the verification link.
    PendingVerification,
    /// Turned off by an administrator.
    Deactivated,
}

/// How the user entered the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserSource {
    /// Just in time, at first login.
    Jit,
    /// REST ssoCreate.
    Api,
    /// CSV import.
    Csv,
    /// SCIM.
    Scim,
}

impl UserSource {
    /// As stored and shown (`jit`, `api`, `csv`, `scim`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jit => "jit",
            Self::Api => "api",
            Self::Csv => "csv",
            Self::Scim => "scim",
        }
    }
}

/// A platform user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Lowercased email: the key, unique across the gateway.
    pub email: String,
    /// The account the user belongs to (records written before accounts
    /// existed are the config file's account, `default`).
    #[serde(default = "default_account")]
    pub account: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Department.
    #[serde(default)]
    pub department: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// License type.
    pub license: License,
    /// Features.
    #[serde(default)]
    pub features: Vec<String>,
    /// May sign in only through SSO (no password exists).
    pub sso_only: bool,
    /// Status.
    pub status: UserStatus,
    /// Vanity name (licensed users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vanity: Option<String>,
    /// Source.
    pub source: UserSource,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last update time, RFC 3339.
    pub updated_at: String,
    /// What SCIM keeps of the user (its id and the attributes the platform
    /// has no field for); `None` until SCIM first shows the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim: Option<ScimFields>,
}

/// The SCIM side of a user record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScimFields {
    /// The SCIM `id`: fixed for the user's life, renames included.
    pub id: String,
    /// `externalId`, as the client set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// `displayName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `emails`, as the client set them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<ScimEmail>,
    /// The user waited for email verification when deactivated (so a
    /// reactivation restores `pending_verification`, not `active`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub was_pending: bool,
    /// Names of the SCIM groups the user is a member of (the mapping rules
    /// see them at every login).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The ids of those groups, in the same order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_ids: Vec<String>,
    /// The license was granted by a rule over `groups` (and falls back to
    /// the default when no group grants one any more).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub license_from_groups: bool,
}

/// One of a SCIM user's `emails`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScimEmail {
    /// The address.
    pub value: String,
    /// `work`, `home`, `other` or what the client sent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The primary address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub primary: bool,
}

fn default_account() -> String {
    crate::account::DEFAULT_ID.to_owned()
}

/// Short-lived keys to write with a user (kind, key, value, time to
/// live), made from the user as written; see
/// [`Store::insert_user_claiming_then`]. Pure: it may run more than once.
pub type KeysOf =
    Arc<dyn Fn(&UserRecord) -> Vec<(Ephemeral, String, Vec<u8>, Duration)> + Send + Sync>;

/// Kinds of short-lived keys; each has its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ephemeral {
    /// Session id → session data.
    Session,
    /// Outstanding AuthnRequest id → RelayState target.
    RequestId,
    /// Assertion id seen (replay cache).
    Replay,
    /// Hashed email-verification token → email.
    VerificationToken,
    /// (account, NameID) → the sessions opened with it (a set, for Single
    /// Logout).
    SloIndex,
    /// Hashed console cookie → who signed in to the console.
    Console,
    /// `{account}:{job}` → a console CSV import's progress and report.
    ImportJob,
    /// Account id → its last refused login's POST body (briefly).
    FailedResponse,
}

impl Ephemeral {
    /// Key-space name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::RequestId => "request",
            Self::Replay => "replay",
            Self::VerificationToken => "verify",
            Self::SloIndex => "slo",
            Self::Console => "console",
            Self::ImportJob => "import-job",
            Self::FailedResponse => "failed-response",
        }
    }
}

/// Key spaces of small keyed documents ([`Store::put_doc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocSpace {
    /// SCIM user id → email.
    ScimUser,
    /// `{account}/{group id}` → a SCIM group.
    Group,
    /// Entries of the capped logs ([`Store::log_push`]; embedded store).
    Log,
    /// `{account}/{email}` → the user's last login's attributes.
    LastLogin,
}

impl DocSpace {
    /// Key-space name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScimUser => "scim-user",
            Self::Group => "group",
            Self::Log => "log",
            Self::LastLogin => "last-login",
        }
    }
}

/// What [`Store::revocations_since`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Revocations {
    /// The revocation sequence now (pass it as `since` next time).
    pub seq: u64,
    /// The emails whose sessions were revoked after `since`; `None` when
    /// the log no longer reaches back that far (or the store lost it):
    /// forget every cached session.
    pub emails: Option<Vec<String>>,
}

/// Most members of a short-lived set ([`Store::add_to_set`]).
pub const SET_MAX: usize = 1000;

/// Most entries the revocation log keeps (a replica further behind forgets
/// its whole session cache).
pub const REVOCATION_LOG: usize = 10_000;

/// An account document as stored, with its revision (the accounts version
/// at its last write: revisions only grow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    /// The stored record (JSON: the document and what the gateway keeps
    /// with it).
    pub record: Vec<u8>,
    /// Its revision.
    pub revision: u64,
}

/// The condition a write of an account document is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is stored (create or replace).
    Any,
    /// Only if no account has this id (create).
    Absent,
    /// Only if the stored revision is this one (read-modify-write).
    Revision(u64),
}

/// What a write of an account document did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutAccount {
    /// Written at `revision`; `created` when the id was new.
    Written {
        /// The new revision.
        revision: u64,
        /// No account had this id before.
        created: bool,
    },
    /// A host is another account's: nothing was written.
    HostTaken {
        /// The host.
        host: String,
        /// The account listing it.
        owner: String,
    },
    /// The condition failed: nothing was written.
    Conflict {
        /// The revision stored (None: no such account).
        revision: Option<u64>,
    },
}

/// Which accounts changed since a version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountChanges {
    /// The accounts version now (pass it as `since` next time).
    pub version: u64,
    /// Ids written or deleted after `since` (read them again).
    pub changed: Vec<String>,
}

/// An account token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (listed, used to revoke).
    pub id: String,
    /// The account it belongs to.
    pub account: String,
    /// `users` or `scim`.
    pub scope: String,
    /// A name for people.
    #[serde(default)]
    pub name: String,
    /// SHA-256 (hex) of the secret.
    pub hash: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// The store interface (object-safe: held as `Arc<dyn Store>`).
pub trait Store: Send + Sync {
    /// Checks the backend answers (readiness).
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// The user with this (lowercased) email.
    fn get_user<'a>(&'a self, email: &'a str) -> StoreFuture<'a, Option<UserRecord>>;

    /// Several users at once (import), in order; `None` where absent.
    fn get_users<'a>(&'a self, emails: &'a [String]) -> StoreFuture<'a, Vec<Option<UserRecord>>>;

    /// Inserts each user unless one with its email exists (atomic per user:
    /// two concurrent inserts of one email never both win). `true` where
    /// inserted.
    fn insert_users<'a>(&'a self, users: &'a [UserRecord]) -> StoreFuture<'a, Vec<bool>>;

    /// Overwrites (or creates) each user.
    fn put_users<'a>(&'a self, users: &'a [UserRecord]) -> StoreFuture<'a, ()>;

    /// Deletes a user (and releases its vanity name). `true` if it existed.
    fn delete_user<'a>(&'a self, email: &'a str) -> StoreFuture<'a, bool>;

    /// Users ordered by email, strictly after `after`, at most `limit`.
    fn list_users<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<UserRecord>>;

    /// Account `account`'s users ordered by email, after `after`, at most
    /// `limit`, and the cursor to continue from (`None`: no more). The
    /// default account's users are found by a bounded scan of every user
    /// (records from before accounts existed have no index entry); every
    /// other account's through its own index.
    fn list_account_users<'a>(
        &'a self,
        account: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, (Vec<UserRecord>, Option<String>)>;

    /// Claims each vanity name for its email, atomically: `true` where the
    /// name is now (or already was) owned by that email.
    fn claim_vanities<'a>(&'a self, claims: &'a [(String, String)]) -> StoreFuture<'a, Vec<bool>>;

    /// Releases a vanity name if `email` owns it.
    fn release_vanity<'a>(&'a self, name: &'a str, email: &'a str) -> StoreFuture<'a, ()>;

    /// Stores a short-lived value, replacing any.
    fn put_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;

    /// Stores a short-lived value unless the key exists; `true` if stored.
    fn insert_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, bool>;

    /// Reads a short-lived value (None when absent or expired).
    fn get_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
    ) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Reads and deletes atomically: two concurrent takes never both get it.
    fn take_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
    ) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Deletes a short-lived value.
    fn delete_ephemeral<'a>(&'a self, kind: Ephemeral, key: &'a str) -> StoreFuture<'a, ()>;

    /// Adds `member` to the short-lived set at `key`, which then lives at
    /// least `ttl` more. A set keeps at most [`SET_MAX`] members (adding
    /// to a full one drops an arbitrary other).
    fn add_to_set<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        member: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;

    /// The members of the set at `key` (none when absent or expired).
    fn set_members<'a>(&'a self, kind: Ephemeral, key: &'a str) -> StoreFuture<'a, Vec<String>>;

    /// Removes `member` from the set at `key`.
    fn remove_from_set<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        member: &'a str,
    ) -> StoreFuture<'a, ()>;

    /// Writes account `id`'s record, claiming `hosts` for it (and releasing
    /// the hosts its previous record listed and this one does not), all at
    /// once and only under `expect`; a host of another account refuses the
    /// whole write.
    fn put_account<'a>(
        &'a self,
        id: &'a str,
        record: &'a [u8],
        hosts: &'a [String],
        expect: Expect,
    ) -> StoreFuture<'a, PutAccount>;

    /// Account `id`'s record.
    fn get_account<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<StoredAccount>>;

    /// Several accounts' records, in order (one round trip where the
    /// backend allows).
    fn get_accounts<'a>(
        &'a self,
        ids: &'a [String],
    ) -> StoreFuture<'a, Vec<Option<StoredAccount>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(self.get_account(id).await?);
            }
            Ok(out)
        })
    }

    /// Deletes account `id` (its record, its hosts and its tokens); `true`
    /// when it existed. Its users are the caller's to delete first.
    fn delete_account<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;

    /// Accounts ordered by id, after `after`, at most `limit`.
    fn list_accounts<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(String, StoredAccount)>>;

    /// The accounts version now and the ids changed after `since` (every
    /// id ever written when `since` is 0).
    fn account_changes(&self, since: u64) -> StoreFuture<'_, AccountChanges>;

    /// Stores an account token (its hash; ids are unique).
    fn put_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()>;

    /// The token whose secret hashes to `hash`.
    fn token_by_hash<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, Option<TokenRecord>>;

    /// Account `account`'s tokens.
    fn list_tokens<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Vec<TokenRecord>>;

    /// Revokes token `id` of `account`; `true` when it existed.
    fn delete_token<'a>(&'a self, account: &'a str, id: &'a str) -> StoreFuture<'a, bool>;

    /// The document at `key` of `space`.
    fn get_doc<'a>(&'a self, space: DocSpace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Writes the document at `key` (only when none is there, if
    /// `only_if_absent`: atomic, two concurrent writers never both win);
    /// `true` when written.
    fn put_doc<'a>(
        &'a self,
        space: DocSpace,
        key: &'a str,
        value: &'a [u8],
        only_if_absent: bool,
    ) -> StoreFuture<'a, bool>;

    /// Writes several documents (replacing them), in one round trip or
    /// transaction where the backend allows.
    fn put_docs<'a>(
        &'a self,
        space: DocSpace,
        docs: &'a [(String, Vec<u8>)],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            for (k, v) in docs {
                self.put_doc(space, k, v, false).await?;
            }
            Ok(())
        })
    }

    /// Deletes the document at `key`; `true` when it existed.
    fn delete_doc<'a>(&'a self, space: DocSpace, key: &'a str) -> StoreFuture<'a, bool>;

    /// Documents of `space` whose keys start with `prefix`, ordered by key,
    /// after `after`, at most `limit`.
    fn list_docs<'a>(
        &'a self,
        space: DocSpace,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(String, Vec<u8>)>>;

    /// Appends `entries` (oldest first) to the capped log `log`, which
    /// keeps its newest `keep` entries (the sign-in activity of the
    /// console).
    fn log_push<'a>(
        &'a self,
        log: &'a str,
        entries: &'a [Vec<u8>],
        keep: usize,
    ) -> StoreFuture<'a, ()>;

    /// The newest `limit` entries of log `log`, newest first.
    fn log_recent<'a>(&'a self, log: &'a str, limit: usize) -> StoreFuture<'a, Vec<Vec<u8>>>;

    /// Deletes log `log`.
    fn log_delete<'a>(&'a self, log: &'a str) -> StoreFuture<'a, ()>;

    /// Deletes up to `limit` short-lived values whose time is up, resuming
    /// where the last call stopped; how many went. Stores whose keys expire
    /// by themselves (Redis) have nothing to do.
    fn purge_expired(&self, limit: usize) -> StoreFuture<'_, usize> {
        let _ = limit;
        Box::pin(async { Ok(0) })
    }

    /// [`Store::insert_ephemeral`], then, when it inserted, the user with
    /// email `email` as it is after it: one write where the store can
    /// (embedded), two steps elsewhere. The ACS records the assertion's id
    /// and reads the user it names.
    fn insert_ephemeral_get_user<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        email: &'a str,
    ) -> StoreFuture<'a, (bool, Option<UserRecord>)> {
        Box::pin(async move {
            if !self.insert_ephemeral(kind, key, value, ttl).await? {
                return Ok((false, None));
            }
            Ok((true, self.get_user(email).await?))
        })
    }

    /// Inserts `user` unless its email exists, in one atomic write with the
    /// claim of its vanity name: the first of `names` that is free (or
    /// already claimed for this email) becomes `user.vanity` (no claim when
    /// `names` is empty). Answers the user as inserted, or None when the
    /// email existed (then nothing is claimed); an error when every name is
    /// taken. None where the store has no such write: the caller claims,
    /// inserts and gives back in turn (`provisioning::decide`).
    fn insert_user_claiming<'a>(
        &'a self,
        user: &'a UserRecord,
        names: &'a [String],
    ) -> Option<StoreFuture<'a, Option<UserRecord>>> {
        let _ = (user, names);
        None
    }

    /// [`Store::insert_user_claiming`], and in the same write, when the
    /// user is inserted, the short-lived keys `then` makes of the user as
    /// inserted (a new user's first session): one durable write for both,
    /// whatever this handle's durability. None where the store has no such
    /// write.
    fn insert_user_claiming_then<'a>(
        &'a self,
        user: &'a UserRecord,
        names: &'a [String],
        then: KeysOf,
    ) -> Option<StoreFuture<'a, Option<UserRecord>>> {
        let _ = (user, names, then);
        None
    }

    /// A handle to this store whose writes are answered once applied
    /// (every reader sees them) and made durable by the next durable write
    /// or [`Store::flush`] through any handle of the same store: for a chain
    /// of writes that ends in a durable one before anything is answered (a
    /// login's replay entry, vanity name and user, then its session), which
    /// then costs one sync instead of one each. None where a durable write
    /// costs no more (Redis answers once applied either way).
    fn write_behind(&self) -> Option<Arc<dyn Store>> {
        None
    }

    /// A handle to this store whose writes are answered once applied (every
    /// reader sees them), skip the store's log, and are durable at its next
    /// checkpoint (within about a second); a crash before it loses them,
    /// and [`Store::flush`] does not cover them. For records worth keeping
    /// but not worth a sync (the console's sign-in activity). None where
    /// writes cost no more that way.
    fn lazy(&self) -> Option<Arc<dyn Store>> {
        None
    }

    /// Makes every write answered so far durable (see
    /// [`Store::write_behind`]; not lazy ones, see [`Store::lazy`]).
    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Appends `emails` to the revocation log: every replica forgets its
    /// cached sessions of them at its next poll of
    /// [`Store::revocations_since`]. Returns the sequence now.
    fn revoke_sessions<'a>(&'a self, emails: &'a [String]) -> StoreFuture<'a, u64>;

    /// The revocation sequence and, when `since` is given, the emails
    /// revoked after it (see [`Revocations`]).
    fn revocations_since(&self, since: Option<u64>) -> StoreFuture<'_, Revocations>;
}

/// Opens the store the config names.
pub async fn open(
    config: &StoreConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, StoreError> {
    open_with_cache(config, clock, embedded::CACHE_BYTES).await
}

/// [`open`], an embedded store with a page cache of `cache_bytes`.
pub async fn open_with_cache(
    config: &StoreConfig,
    clock: Arc<dyn Clock>,
    cache_bytes: usize,
) -> Result<Arc<dyn Store>, StoreError> {
    match config {
        StoreConfig::Embedded { path } => Ok(Arc::new(embedded::EmbeddedStore::open_with_cache(
            path,
            clock,
            cache_bytes,
        )?)),
        StoreConfig::Redis { url, nodes } => {
            let s = if nodes.is_empty() {
                redis::RedisStore::standalone(
                    url.as_deref().unwrap_or("redis://127.0.0.1:6379"),
                    "samlgate",
                )
                .await?
            } else {
                redis::RedisStore::cluster(nodes, "samlgate").await?
            };
            Ok(Arc::new(s))
        }
    }
}

/// The hosts an account record lists (`doc.hosts`): what a store releases
/// when the record is replaced or deleted.
fn record_hosts(record: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        hosts: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Record {
        doc: Doc,
    }
    // As claimed: normalised the way `account::doc` lists them.
    serde_json::from_slice::<Record>(record)
        .map(|r| {
            r.doc
                .hosts
                .iter()
                .filter_map(|h| crate::account::doc::host(h).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The revocations after `since` of a log whose last sequence is `seq`
/// and whose newest entries are `entries` (sequence, email).
fn revocations_after<'a>(
    seq: u64,
    entries: impl IntoIterator<Item = &'a (u64, String)>,
    since: Option<u64>,
) -> Revocations {
    let Some(since) = since else {
        return Revocations {
            seq,
            emails: Some(Vec::new()),
        };
    };
    if since > seq {
        // The log restarted (a store that lost its data): nothing is known.
        return Revocations { seq, emails: None };
    }
    let emails: Vec<String> = entries
        .into_iter()
        .filter(|(s, _)| *s > since && *s <= seq)
        .map(|(_, e)| e.clone())
        .collect();
    let complete = u64::try_from(emails.len()).is_ok_and(|n| n == seq - since);
    Revocations {
        seq,
        emails: complete.then_some(emails),
    }
}

/// Whether `account` has a user index (every account but the default).
fn indexed(account: &str) -> bool {
    account != crate::account::DEFAULT_ID
}

/// How many users a listing of the default account examines per call, per
/// user asked for: the scan is bounded, the cursor continues it.
const DEFAULT_SCAN_FACTOR: usize = 20;

fn decode_user(key: &str, bytes: &[u8]) -> Result<UserRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn encode_user(user: &UserRecord) -> Vec<u8> {
    // Serialising a struct of strings and enums cannot fail.
    serde_json::to_vec(user).unwrap_or_default()
}

/// An empty, read-only directory: what `check-response` consults when the
/// configured embedded store does not exist yet. Writes are refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyStore;

impl EmptyStore {
    fn refuse<'a, T: Send + 'a>() -> StoreFuture<'a, T> {
        Box::pin(async { Err(StoreError::Unavailable("read-only empty store".into())) })
    }
}

impl Store for EmptyStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn get_user<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<UserRecord>> {
        Box::pin(async { Ok(None) })
    }
    fn get_users<'a>(&'a self, emails: &'a [String]) -> StoreFuture<'a, Vec<Option<UserRecord>>> {
        Box::pin(async move { Ok(vec![None; emails.len()]) })
    }
    fn insert_users<'a>(&'a self, _: &'a [UserRecord]) -> StoreFuture<'a, Vec<bool>> {
        Self::refuse()
    }
    fn put_users<'a>(&'a self, _: &'a [UserRecord]) -> StoreFuture<'a, ()> {
        Self::refuse()
    }
    fn delete_user<'a>(&'a self, _: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async { Ok(false) })
    }
    fn list_users<'a>(&'a self, _: Option<&'a str>, _: usize) -> StoreFuture<'a, Vec<UserRecord>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn list_account_users<'a>(
        &'a self,
        _: &'a str,
        _: Option<&'a str>,
        _: usize,
    ) -> StoreFuture<'a, (Vec<UserRecord>, Option<String>)> {
        Box::pin(async { Ok((Vec::new(), None)) })
    }
    fn claim_vanities<'a>(&'a self, _: &'a [(String, String)]) -> StoreFuture<'a, Vec<bool>> {
        Self::refuse()
    }
    fn release_vanity<'a>(&'a self, _: &'a str, _: &'a str) -> StoreFuture<'a, ()> {
        Self::refuse()
    }
    fn put_ephemeral<'a>(
        &'a self,
        _: Ephemeral,
        _: &'a str,
        _: &'a [u8],
        _: Duration,
    ) -> StoreFuture<'a, ()> {
        Self::refuse()
    }
    fn insert_ephemeral<'a>(
        &'a self,
        _: Ephemeral,
        _: &'a str,
        _: &'a [u8],
        _: Duration,
    ) -> StoreFuture<'a, bool> {
        Self::refuse()
    }
    fn get_ephemeral<'a>(&'a self, _: Ephemeral, _: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async { Ok(None) })
    }
    fn take_ephemeral<'a>(&'a self, _: Ephemeral, _: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async { Ok(None) })
    }
    fn delete_ephemeral<'a>(&'a self, _: Ephemeral, _: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn log_push<'a>(&'a self, _: &'a str, _: &'a [Vec<u8>], _: usize) -> StoreFuture<'a, ()> {
        Self::refuse()
    }
    fn log_recent<'a>(&'a self, _: &'a str, _: usize) -> StoreFuture<'a, Vec<Vec<u8>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn log_delete<'a>(&'a self, _: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn put_account<'a>(
        &'a self,
        _: &'a str,
        _: &'a [u8],
        _: &'a [String],
        _: Expect,
    ) -> StoreFuture<'a, PutAccount> {
        Self::refuse()
    }
    fn get_account<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<StoredAccount>> {
        Box::pin(async { Ok(None) })
    }
    fn delete_account<'a>(&'a self, _: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async { Ok(false) })
    }
    fn list_accounts<'a>(
        &'a self,
        _: Option<&'a str>,
        _: usize,
    ) -> StoreFuture<'a, Vec<(String, StoredAccount)>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn account_changes(&self, _: u64) -> StoreFuture<'_, AccountChanges> {
        Box::pin(async { Ok(AccountChanges::default()) })
    }
    fn put_token<'a>(&'a self, _: &'a TokenRecord) -> StoreFuture<'a, ()> {
        Self::refuse()
    }
    fn token_by_hash<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
        Box::pin(async { Ok(None) })
    }
    fn list_tokens<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Vec<TokenRecord>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn delete_token<'a>(&'a self, _: &'a str, _: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async { Ok(false) })
    }
    fn get_doc<'a>(&'a self, _: DocSpace, _: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async { Ok(None) })
    }
    fn add_to_set<'a>(
        &'a self,
        _: Ephemeral,
        _: &'a str,
        _: &'a str,
        _: Duration,
    ) -> StoreFuture<'a, ()> {
        Self::refuse()
    }
    fn set_members<'a>(&'a self, _: Ephemeral, _: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn remove_from_set<'a>(&'a self, _: Ephemeral, _: &'a str, _: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn put_doc<'a>(
        &'a self,
        _: DocSpace,
        _: &'a str,
        _: &'a [u8],
        _: bool,
    ) -> StoreFuture<'a, bool> {
        Self::refuse()
    }
    fn delete_doc<'a>(&'a self, _: DocSpace, _: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async { Ok(false) })
    }
    fn list_docs<'a>(
        &'a self,
        _: DocSpace,
        _: &'a str,
        _: Option<&'a str>,
        _: usize,
    ) -> StoreFuture<'a, Vec<(String, Vec<u8>)>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn revoke_sessions<'a>(&'a self, _: &'a [String]) -> StoreFuture<'a, u64> {
        Self::refuse()
    }
    fn revocations_since(&self, _: Option<u64>) -> StoreFuture<'_, Revocations> {
        Box::pin(async { Ok(Revocations::default()) })
    }
}
