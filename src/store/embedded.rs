//! The embedded store: one redb file. Every write is durable (fsync on
//! commit) before it is acknowledged: it survives a crash, `kill -9` or a
//! power cut.
//!
//! **Group commit.** Writes do not each open and commit their own
//! transaction: they are queued to one writer thread, which takes every
//! write waiting (up to [`MAX_BATCH`]), applies them in order in one redb
//! transaction and makes it durable once; each write is answered after
//! that. Nobody waits for a timer: the batch is whatever queued up while
//! the previous one was on the disk. A write that fails (a corrupt record)
//! is taken out and the rest of its batch applied again without it, so one
//! bad write never fails or half-applies another.
//!
//! **Log.** A batch is made durable by appending its changes to the
//! write-ahead log (`<file>.wal`, one sequential sync) and committing to
//! redb without a sync; a checkpoint (a durable redb commit) writes the
//! pages every 8 MiB of log or second, and opening the store replays
//! the log (see `wal`). A large batch (an import's) is committed durably
//! to redb directly. Back up the database file and its `.wal` together, or
//! stop the gateway first (a clean stop leaves the log empty).
//!
//! **Write-behind.** [`Store::write_behind`] gives a handle whose writes
//! are answered once applied and logged, without waiting for the sync: a
//! login's replay entry, vanity name and user, which its session's durable
//! write (or [`Store::flush`]) then makes durable with one sync, since the
//! log is one file written in order. A batch holding only such writes is
//! not synced at all.
//!
//! **Lazy.** [`Store::lazy`] gives a handle whose writes skip the log: they
//! are applied in a transaction of their own, answered at once, and durable
//! at the next checkpoint (within [`wal::CHECKPOINT_AFTER`]); a crash
//! before it loses them. For the console's sign-in activity, whose batches
//! (hundreds of kilobytes a second under load) would otherwise each be a
//! durable redb commit that holds up every login behind it.
//!
//! Reads run on a reader thread per core, each in its own read transaction
//! (redb's MVCC: they never wait for the writer). Neither path stalls the
//! request threads.
//!
//! Tables: `users` (email → JSON), `vanity` (name → email), `ephemeral`
//! (`kind:key` → 8-byte big-endian expiry in Unix milliseconds + value).
//! Expired short-lived keys read as absent and are purged lazily.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::wal::{self, Tx, Wal};

use super::{
    AccountChanges, Ephemeral, Expect, KeysOf, PutAccount, Store, StoreError, StoreFuture,
    StoredAccount, TokenRecord, UserRecord, decode_user, encode_user,
};
use super::{DEFAULT_SCAN_FACTOR, DocSpace, Revocations, indexed, revocations_after};
use crate::clock::Clock;

/// redb page cache size of a gateway.
pub const CACHE_BYTES: usize = 64 * 1024 * 1024;

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const VANITY: TableDefinition<&str, &str> = TableDefinition::new("vanity");
const EPHEMERAL: TableDefinition<&str, &[u8]> = TableDefinition::new("ephemeral");
/// Account id → 8-byte big-endian revision + record.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// Host → the account id listing it.
const ACCOUNT_HOSTS: TableDefinition<&str, &str> = TableDefinition::new("account_hosts");
/// Account id (written or deleted) → the version of that change.
const ACCOUNT_LOG: TableDefinition<&str, u64> = TableDefinition::new("account_log");
/// `accounts_version` → the accounts version.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `account \u{1} email` → nothing: the users of every account but the
/// default one, by account.
const ACCOUNT_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("account_users");
/// SHA-256 of a token's secret → the token as JSON.
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// Small keyed documents: `{space}:{key}` → value.
const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("docs");

/// Most writes applied in one transaction.
pub const MAX_BATCH: usize = 512;

/// The embedded redb store.
#[derive(Clone)]
pub struct EmbeddedStore {
    threads: Arc<Threads>,
    /// When writes through this handle are answered.
    mode: Mode,
    /// Syncs of the log so far.
    log_syncs: Arc<std::sync::atomic::AtomicU64>,
    clock: Arc<dyn Clock>,
    /// The session revocation log. Only this process holds the file, so
    /// every replica that can see a revocation is in this process: the log
    /// lives in memory (a restart empties the session caches anyway).
    revocations: Arc<std::sync::Mutex<RevocationLog>>,
    /// Where the next [`Store::purge_expired`] resumes (a key of the
    /// ephemeral table; None: from the start).
    purge_from: Arc<std::sync::Mutex<Option<String>>>,
}

/// The newest revocations and the sequence of the last one.
#[derive(Default)]
struct RevocationLog {
    seq: u64,
    entries: std::collections::VecDeque<(u64, String)>,
}

/// The writer and reader threads, which alone hold the database. Dropping
/// the last store handle closes their queues and waits for them: the writer
/// checkpoints, and the file is closed when the drop returns (a restart in
/// the same process can open it at once).
struct Threads {
    writes: Option<std::sync::mpsc::Sender<Box<dyn Job>>>,
    /// Reads for the reader threads (one per core). On tokio's blocking
    /// pool a burst of reads (eight import batches, many logins) grew the
    /// pool to a thread each, and every thread's allocator heap kept its
    /// memory.
    reads: Option<std::sync::mpsc::Sender<Read>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.writes.take();
        self.reads.take();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A read waiting for a reader thread.
type Read = Box<dyn FnOnce(&Database) + Send>;

/// A reader thread: runs reads until every store handle is gone.
fn reader(db: Arc<Database>, reads: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<Read>>>) {
    loop {
        let next = match reads.lock() {
            Ok(r) => r.recv(),
            Err(p) => p.into_inner().recv(),
        };
        let Ok(read) = next else { return };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&db)));
    }
}

/// When a write is answered, and how it is made durable.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Once durable: logged and synced (or committed durably).
    Durable,
    /// Once applied and logged; durable with the next sync
    /// ([`Store::write_behind`]).
    Behind,
    /// Once applied, not logged; durable at the next checkpoint
    /// ([`Store::lazy`]).
    Lazy,
}

/// A write waiting for the writer thread.
trait Job: Send {
    /// Applies the write to `txn` (keeping its result). May run again in a
    /// fresh transaction when another write of its batch failed.
    fn run(&mut self, tx: &Tx<'_>) -> Result<(), StoreError>;
    /// Answers the caller: the kept result when the transaction committed.
    fn finish(self: Box<Self>, outcome: Result<(), StoreError>);
    /// When its caller is answered.
    fn mode(&self) -> Mode;
}

struct Pending<T, F> {
    f: F,
    out: Option<T>,
    mode: Mode,
    done: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnMut(&Tx<'_>) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, tx: &Tx<'_>) -> Result<(), StoreError> {
        self.out = Some((self.f)(tx)?);
        Ok(())
    }

    fn finish(self: Box<Self>, outcome: Result<(), StoreError>) {
        let Self { out, done, .. } = *self;
        let result = outcome.and_then(|()| out.ok_or_else(|| err("write not applied")));
        // The caller may have gone (a dropped request): nothing to answer.
        let _ = done.send(result);
    }

    fn mode(&self) -> Mode {
        self.mode
    }
}

/// The writer's log and when it last checkpointed.
struct Log {
    wal: Wal,
    checkpointed: std::time::Instant,
    /// Lazy writes were applied since the last durable commit.
    lazy: bool,
    /// The recording buffer, reused by every group.
    redo: Vec<u8>,
}

impl Log {
    /// Logs `txn`'s changes (`redo`) and commits it; durable when `sync`
    /// (and with it everything logged before), else once a later group
    /// syncs or a checkpoint runs.
    fn commit(
        &mut self,
        db: &Database,
        txn: redb::WriteTransaction,
        redo: &[u8],
        sync: bool,
    ) -> Result<(), StoreError> {
        if redo.len() > wal::DIRECT_BYTES || !self.wal.fits(redo.len()) {
            // Large (an import's batches), or the log is full: redb's own
            // durable commit, which also makes every earlier logged change
            // durable, and says so (a crash before the log is cleared
            // replays none of them over this group).
            set_applied(&txn, self.wal.next_seq().saturating_sub(1))?;
            txn.commit().map_err(err)?;
            return self.cleared();
        }
        self.append(txn, redo, sync)?;
        self.checkpoint_due(db);
        Ok(())
    }

    /// Commits `txn` (its changes `redo`) through the log.
    fn append(
        &mut self,
        mut txn: redb::WriteTransaction,
        redo: &[u8],
        sync: bool,
    ) -> Result<(), StoreError> {
        // The frame's number is recorded in the database by the next
        // durable commit (a checkpoint), which includes this group.
        if !redo.is_empty() {
            if let Err(e) = self.wal.append(redo, sync) {
                let _ = txn.abort();
                return Err(e);
            }
        } else if sync && let Err(e) = self.wal.sync() {
            // Nothing new, but earlier write-behind frames to make durable.
            let _ = txn.abort();
            return Err(e);
        }
        txn.set_durability(redb::Durability::None).map_err(err)?;
        txn.commit().map_err(err)
    }

    /// Commits lazy writes' `txn`: not logged, durable at the next
    /// checkpoint.
    fn commit_lazy(
        &mut self,
        db: &Database,
        mut txn: redb::WriteTransaction,
    ) -> Result<(), StoreError> {
        txn.set_durability(redb::Durability::None).map_err(err)?;
        txn.commit().map_err(err)?;
        self.lazy = true;
        self.checkpoint_due(db);
        Ok(())
    }

    /// A checkpoint when the log has grown enough or the last one is long
    /// enough ago.
    fn checkpoint_due(&mut self, db: &Database) {
        if self.wal.len() >= wal::CHECKPOINT_BYTES
            || self.checkpointed.elapsed() >= wal::CHECKPOINT_AFTER
        {
            self.checkpoint(db);
        }
    }

    /// A durable commit of everything logged so far, then an empty log. A
    /// failure leaves the log as it is (still replayed at the next open).
    fn checkpoint(&mut self, db: &Database) {
        if self.wal.is_empty() && !self.lazy {
            self.checkpointed = std::time::Instant::now();
            return;
        }
        let done = db
            .begin_write()
            .map_err(err)
            .and_then(|t| {
                // Every frame logged so far is applied.
                set_applied(&t, self.wal.next_seq().saturating_sub(1))?;
                t.commit().map_err(err)
            })
            .and_then(|()| self.cleared());
        if let Err(e) = done {
            tracing::warn!(error = %e, "embedded store checkpoint failed; the log keeps the changes");
        }
    }

    fn cleared(&mut self) -> Result<(), StoreError> {
        self.checkpointed = std::time::Instant::now();
        self.lazy = false;
        if self.wal.is_empty() {
            return Ok(());
        }
        self.wal.clear()
    }
}

/// Records in `txn` (not in the log) that it includes frame `seq`.
fn set_applied(txn: &redb::WriteTransaction, seq: u64) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(err)?;
    meta.insert(wal::APPLIED, seq).map_err(err)?;
    Ok(())
}

/// The writer thread: group commits until every store handle is gone.
fn writer(db: Arc<Database>, mut log: Log, jobs: std::sync::mpsc::Receiver<Box<dyn Job>>) {
    loop {
        let first = match jobs.recv_timeout(wal::CHECKPOINT_AFTER) {
            Ok(j) => j,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                log.checkpoint(&db);
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                log.checkpoint(&db);
                return;
            }
        };
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        // A write that panicked drops its batch's answers (its callers see
        // the store unavailable) but not the thread: later writes are still
        // served.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // In order, each run of lazy writes (or of the others) in a
            // transaction of its own: lazy ones are not logged.
            let mut jobs = batch.into_iter().peekable();
            while let Some(first) = jobs.next() {
                let lazy = first.mode() == Mode::Lazy;
                let mut run = vec![first];
                while let Some(j) = jobs.next_if(|j| (j.mode() == Mode::Lazy) == lazy) {
                    run.push(j);
                }
                commit_batch(&db, &mut log, run, lazy);
            }
        }));
    }
}

/// Applies `batch` in one transaction and commits it (through the log
/// unless `lazy`); a write that fails is answered with its error and the
/// others are applied again without it.
fn commit_batch(db: &Database, log: &mut Log, mut batch: Vec<Box<dyn Job>>, lazy: bool) {
    while !batch.is_empty() {
        let txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                let e = err(e);
                for j in batch {
                    j.finish(Err(e.clone()));
                }
                return;
            }
        };
        let tx = if lazy {
            Tx::unrecorded(&txn)
        } else {
            Tx::new(&txn, std::mem::take(&mut log.redo))
        };
        let failed = batch
            .iter_mut()
            .enumerate()
            .find_map(|(i, j)| j.run(&tx).err().map(|e| (i, e)));
        let redo = tx.into_redo();
        if !lazy {
            log.redo = redo;
        }
        match failed {
            Some((i, e)) => {
                // Whatever the failed write changed goes with the abort.
                let _ = txn.abort();
                if i < batch.len() {
                    batch.remove(i).finish(Err(e));
                }
            }
            None => {
                let outcome = if lazy {
                    log.commit_lazy(db, txn)
                } else {
                    let sync = batch.iter().any(|j| j.mode() == Mode::Durable);
                    let redo = std::mem::take(&mut log.redo);
                    let outcome = log.commit(db, txn, &redo, sync);
                    log.redo = redo;
                    outcome
                };
                for j in batch {
                    j.finish(outcome.clone());
                }
                return;
            }
        }
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

fn member_key(account: &str, email: &str) -> String {
    format!("{account}\u{1}{email}")
}

fn doc_key(space: DocSpace, key: &str) -> String {
    format!("{}:{key}", space.as_str())
}

/// Entry `seq` of capped log `log`: sequence numbers inverted, so a range
/// from the log's prefix reads newest first (U+0001 ends the log's name).
fn log_key(log: &str, seq: u64) -> String {
    doc_key(DocSpace::Log, &format!("{log}\u{1}{:016x}", u64::MAX - seq))
}

/// Where the members of a short-lived set live: one entry each, keyed
/// `{kind}:{key}` + U+0001 + member.
fn set_prefix(kind: Ephemeral, key: &str) -> String {
    format!("{}:{key}\u{1}", kind.as_str())
}

fn eph_key(kind: Ephemeral, key: &str) -> String {
    format!("{}:{key}", kind.as_str())
}

impl EmbeddedStore {
    /// Opens (or creates) the database file, creating its folder, with the
    /// gateway's page cache ([`CACHE_BYTES`]).
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::open_with_cache(path, clock, CACHE_BYTES)
    }

    /// [`EmbeddedStore::open`] with a page cache of `cache_bytes` (a
    /// one-shot command such as an import keeps its memory small; the OS's
    /// page cache still holds the file).
    pub fn open_with_cache(
        path: &Path,
        clock: Arc<dyn Clock>,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
        }
        // A bounded page cache: redb's default would grow to 1 GiB during a
        // large import.
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
        // Create the tables once so readers never meet a missing table.
        let txn = db
            .begin_write()
            .map_err(|e| StoreError::Open(e.to_string()))?;
        {
            txn.open_table(USERS)
                .map_err(|e| StoreError::Open(e.to_string()))?;
            txn.open_table(VANITY)
                .map_err(|e| StoreError::Open(e.to_string()))?;
            txn.open_table(EPHEMERAL)
                .map_err(|e| StoreError::Open(e.to_string()))?;
            txn.open_table(ACCOUNTS)
                .map_err(|e| StoreError::Open(e.to_string()))?;
            txn.open_table(ACCOUNT_HOSTS)
                .map_err(|e| StoreError::Open(e.to_string()))?;
            txn.open_table(ACCOUNT_LOG)
                .map_err(|e| StoreError::Open(e.to_string()))?;
            txn.open_table(META)
                .map_err(|e| StoreError::Open(e.to_string()))?;
            txn.open_table(TOKENS)
                .map_err(|e| StoreError::Open(e.to_string()))?;
            txn.open_table(ACCOUNT_USERS)
                .map_err(|e| StoreError::Open(e.to_string()))?;
            txn.open_table(DOCS)
                .map_err(|e| StoreError::Open(e.to_string()))?;
        }
        txn.commit().map_err(|e| StoreError::Open(e.to_string()))?;
        let db = Arc::new(db);
        // The writer holds the database weakly: dropping the last handle
        // closes the file at once (a restart in the same process reopens
        // it), and ends the thread.
        // Changes logged but not yet checkpointed: replayed in order onto
        // the last durable state, made durable, and the log emptied.
        let (mut wal, frames) = Wal::open(path)?;
        if !frames.is_empty() {
            let txn = db
                .begin_write()
                .map_err(|e| StoreError::Open(e.to_string()))?;
            let applied = {
                let meta = txn
                    .open_table(META)
                    .map_err(|e| StoreError::Open(e.to_string()))?;
                meta.get(wal::APPLIED)
                    .map_err(|e| StoreError::Open(e.to_string()))?
                    .map_or(0, |g| g.value())
            };
            for (seq, f) in frames.iter().filter(|(seq, _)| *seq > applied) {
                wal::replay(&txn, f).map_err(|e| {
                    StoreError::Open(format!("{} frame {seq}: {e}", wal::path_of(path).display()))
                })?;
            }
            if let Some((last, _)) = frames.last() {
                set_applied(&txn, *last).map_err(|e| StoreError::Open(e.to_string()))?;
            }
            txn.commit().map_err(|e| StoreError::Open(e.to_string()))?;
        }
        if !wal.is_empty() {
            wal.clear()?;
        }
        let log_syncs = wal.sync_counter();
        let log = Log {
            wal,
            checkpointed: std::time::Instant::now(),
            lazy: false,
            redo: Vec::new(),
        };
        let (writes, jobs) = std::sync::mpsc::channel();
        let (reads, queue) = std::sync::mpsc::channel();
        // Built before any thread starts: a failed spawn drops it, which
        // closes the queues and joins the threads already started.
        let mut threads = Threads {
            writes: Some(writes),
            reads: Some(reads),
            handles: Vec::new(),
        };
        let d = Arc::clone(&db);
        threads.handles.push(
            std::thread::Builder::new()
                .name("samlgate-store-writer".into())
                .spawn(move || writer(d, log, jobs))
                .map_err(|e| StoreError::Open(format!("writer thread: {e}")))?,
        );
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        for i in 0..cores {
            let (d, queue) = (Arc::clone(&db), Arc::clone(&queue));
            threads.handles.push(
                std::thread::Builder::new()
                    .name(format!("samlgate-store-reader-{i}"))
                    .spawn(move || reader(d, queue))
                    .map_err(|e| StoreError::Open(format!("reader thread: {e}")))?,
            );
        }
        Ok(Self {
            threads: Arc::new(threads),
            mode: Mode::Durable,
            log_syncs,
            clock,
            revocations: Arc::default(),
            purge_from: Arc::default(),
        })
    }

    /// Queues `f` for the next group commit (at once, not when the future
    /// is first polled); resolves when it is durable.
    fn write<'a, T: Send + 'static>(
        &'a self,
        f: impl FnMut(&Tx<'_>, u64) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        self.queue(self.mode, f)
    }

    /// [`EmbeddedStore::write`], answered as `mode` says.
    fn queue<'a, T: Send + 'static>(
        &'a self,
        mode: Mode,
        mut f: impl FnMut(&Tx<'_>, u64) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        let now = self.now_ms();
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Box::new(Pending {
            f: move |tx: &Tx<'_>| f(tx, now),
            out: None,
            mode,
            done,
        });
        let queued = match &self.threads.writes {
            Some(w) => w.send(job).map_err(|_| ()),
            None => Err(()),
        };
        Box::pin(async move {
            queued.map_err(|_| err("the writer thread has stopped"))?;
            answer
                .await
                .map_err(|_| err("the writer thread has stopped"))?
        })
    }

    /// The one-write user insert with its vanity claim (see
    /// [`Store::insert_user_claiming`]), and `then`'s keys with it.
    fn claiming<'a>(
        &'a self,
        mode: Mode,
        user: &UserRecord,
        names: &[String],
        then: Option<KeysOf>,
    ) -> StoreFuture<'a, Option<UserRecord>> {
        let (user, names) = (user.clone(), names.to_vec());
        self.queue(mode, move |txn, now| {
            let mut tables = user_tables(txn)?;
            if tables.0.get(user.email.as_str()).map_err(err)?.is_some() {
                return Ok(None);
            }
            let mut u = user.clone();
            if !names.is_empty() {
                let mut vanity = txn.open_table(VANITY).map_err(err)?;
                let mut claimed = None;
                for name in &names {
                    let owner = vanity
                        .get(name.as_str())
                        .map_err(err)?
                        .map(|o| o.value() == u.email);
                    match owner {
                        Some(true) => {}
                        Some(false) => continue,
                        None => {
                            vanity
                                .insert(name.as_str(), u.email.as_str())
                                .map_err(err)?;
                        }
                    }
                    claimed = Some(name.clone());
                    break;
                }
                let Some(name) = claimed else {
                    return Err(StoreError::Unavailable(
                        "could not claim a free vanity name".into(),
                    ));
                };
                u.vanity = Some(name);
            }
            insert_user_row(&mut tables, &u)?;
            if let Some(then) = &then {
                let mut t = txn.open_table(EPHEMERAL).map_err(err)?;
                for (kind, key, value, ttl) in then(&u) {
                    t.insert(
                        eph_key(kind, &key).as_str(),
                        expiry_value(now, ttl, &value).as_slice(),
                    )
                    .map_err(err)?;
                }
            }
            Ok(Some(u))
        })
    }

    /// How many times the log was synced since the store opened (a
    /// group's frame, or write-behind frames made durable); for benchmarks
    /// and tests.
    pub fn log_syncs(&self) -> u64 {
        self.log_syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0)
    }

    /// Runs `f` on a reader thread.
    fn blocking<'a, T: Send + 'static>(
        &'a self,
        f: impl FnOnce(&Database, u64) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        let now = self.now_ms();
        let (done, answer) = tokio::sync::oneshot::channel();
        let read: Read = Box::new(move |db: &Database| {
            // The caller may have gone: nothing to answer.
            let _ = done.send(f(db, now));
        });
        let queued = match &self.threads.reads {
            Some(r) => r.send(read).map_err(|_| ()),
            None => Err(()),
        };
        Box::pin(async move {
            queued.map_err(|_| err("the reader threads have stopped"))?;
            answer.await.map_err(|_| err("the store is closed"))?
        })
    }
}

fn expiry_value(now: u64, ttl: Duration, value: &[u8]) -> Vec<u8> {
    let exp = now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let mut v = exp.to_be_bytes().to_vec();
    v.extend_from_slice(value);
    v
}

/// Splits a stored account value into revision and record.
fn split_account(stored: &[u8]) -> Option<StoredAccount> {
    let (rev, record) = stored.split_at_checked(8)?;
    Some(StoredAccount {
        revision: u64::from_be_bytes(rev.try_into().ok()?),
        record: record.to_vec(),
    })
}

/// The hosts a stored record lists (its `doc.hosts`, as written).
fn record_hosts(record: &[u8]) -> Vec<String> {
    super::record_hosts(record)
}

/// Inserts ephemeral key `k` unless a live value holds it; whether it did.
fn insert_live(
    txn: &Tx<'_>,
    k: &str,
    value: &[u8],
    ttl: Duration,
    now: u64,
) -> Result<bool, StoreError> {
    let mut t = txn.open_table(EPHEMERAL).map_err(err)?;
    let live = t
        .get(k)
        .map_err(err)?
        .and_then(|v| live_value(v.value(), now))
        .is_some();
    if !live {
        t.insert(k, expiry_value(now, ttl, value).as_slice())
            .map_err(err)?;
    }
    Ok(!live)
}

/// The users table and the account index, open in one transaction.
type UserTables<'s> = (
    wal::RecTable<'s, &'static str, &'static [u8]>,
    wal::RecTable<'s, &'static str, &'static [u8]>,
);

/// Inserts `u` unless its email exists, and outside the default account
/// its entry in its account's index; whether it did.
fn insert_user_row(tables: &mut UserTables<'_>, u: &UserRecord) -> Result<bool, StoreError> {
    let (users, members) = tables;
    if users.get(u.email.as_str()).map_err(err)?.is_some() {
        return Ok(false);
    }
    users
        .insert(u.email.as_str(), encode_user(u).as_slice())
        .map_err(err)?;
    if indexed(&u.account) {
        members
            .insert(member_key(&u.account, &u.email).as_str(), &b""[..])
            .map_err(err)?;
    }
    Ok(true)
}

fn user_tables<'s>(txn: &'s Tx<'_>) -> Result<UserTables<'s>, StoreError> {
    Ok((
        txn.open_table(USERS).map_err(err)?,
        txn.open_table(ACCOUNT_USERS).map_err(err)?,
    ))
}

/// Bumps the accounts version and logs `id` at it; returns it.
fn bump(txn: &Tx<'_>, id: &str) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META).map_err(err)?;
    let v = meta
        .get("accounts_version")
        .map_err(err)?
        .map_or(0, |g| g.value())
        + 1;
    meta.insert("accounts_version", v).map_err(err)?;
    let mut log = txn.open_table(ACCOUNT_LOG).map_err(err)?;
    log.insert(id, v).map_err(err)?;
    Ok(v)
}

/// Splits a stored ephemeral value; None when expired or malformed.
fn live_value(stored: &[u8], now: u64) -> Option<Vec<u8>> {
    let (exp, value) = stored.split_at_checked(8)?;
    let exp = u64::from_be_bytes(exp.try_into().ok()?);
    (exp > now).then(|| value.to_vec())
}

impl Store for EmbeddedStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        self.blocking(|db, _| {
            db.begin_read().map_err(err)?;
            Ok(())
        })
    }

    fn get_user<'a>(&'a self, email: &'a str) -> StoreFuture<'a, Option<UserRecord>> {
        let email = email.to_owned();
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(USERS).map_err(err)?;
            match t.get(email.as_str()).map_err(err)? {
                Some(v) => Ok(Some(decode_user(&email, v.value())?)),
                None => Ok(None),
            }
        })
    }

    fn get_users<'a>(&'a self, emails: &'a [String]) -> StoreFuture<'a, Vec<Option<UserRecord>>> {
        // Decoded here, where the records are used and freed: a reader
        // thread's allocations freed by another thread are memory that
        // neither reuses at once (a rerun of a million-row import held
        // 10 MiB more).
        let keys = emails.to_vec();
        let raw = self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(USERS).map_err(err)?;
            keys.iter()
                .map(|e| Ok(t.get(e.as_str()).map_err(err)?.map(|v| v.value().to_vec())))
                .collect::<Result<Vec<_>, StoreError>>()
        });
        Box::pin(async move {
            raw.await?
                .into_iter()
                .zip(emails)
                .map(|(v, e)| v.map(|b| decode_user(e, &b)).transpose())
                .collect()
        })
    }

    fn insert_users<'a>(&'a self, users: &'a [UserRecord]) -> StoreFuture<'a, Vec<bool>> {
        let users = users.to_vec();
        self.write(move |txn, _| {
            let mut tables = user_tables(txn)?;
            users
                .iter()
                .map(|u| insert_user_row(&mut tables, u))
                .collect()
        })
    }

    fn insert_user_claiming<'a>(
        &'a self,
        user: &'a UserRecord,
        names: &'a [String],
    ) -> Option<StoreFuture<'a, Option<UserRecord>>> {
        Some(self.claiming(self.mode, user, names, None))
    }

    fn insert_user_claiming_then<'a>(
        &'a self,
        user: &'a UserRecord,
        names: &'a [String],
        then: KeysOf,
    ) -> Option<StoreFuture<'a, Option<UserRecord>>> {
        Some(self.claiming(Mode::Durable, user, names, Some(then)))
    }

    fn put_users<'a>(&'a self, users: &'a [UserRecord]) -> StoreFuture<'a, ()> {
        let users = users.to_vec();
        self.write(move |txn, _| {
            {
                let mut t = txn.open_table(USERS).map_err(err)?;
                let mut members = txn.open_table(ACCOUNT_USERS).map_err(err)?;
                for u in &users {
                    t.insert(u.email.as_str(), encode_user(u).as_slice())
                        .map_err(err)?;
                    if indexed(&u.account) {
                        members
                            .insert(member_key(&u.account, &u.email).as_str(), &b""[..])
                            .map_err(err)?;
                    }
                }
            }
            Ok(())
        })
    }

    fn delete_user<'a>(&'a self, email: &'a str) -> StoreFuture<'a, bool> {
        let email = email.to_owned();
        self.write(move |txn, _| {
            let existed;
            {
                let mut t = txn.open_table(USERS).map_err(err)?;
                let old = t
                    .remove(email.as_str())
                    .map_err(err)?
                    .map(|v| decode_user(&email, v.value()));
                existed = old.is_some();
                if let Some(Ok(u)) = &old
                    && indexed(&u.account)
                {
                    let mut members = txn.open_table(ACCOUNT_USERS).map_err(err)?;
                    members
                        .remove(member_key(&u.account, &email).as_str())
                        .map_err(err)?;
                }
                if let Some(Ok(UserRecord {
                    vanity: Some(name), ..
                })) = old
                {
                    let mut v = txn.open_table(VANITY).map_err(err)?;
                    let owned = v
                        .get(name.as_str())
                        .map_err(err)?
                        .is_some_and(|o| o.value() == email);
                    if owned {
                        v.remove(name.as_str()).map_err(err)?;
                    }
                }
            }
            Ok(existed)
        })
    }

    fn list_users<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<UserRecord>> {
        let after = after.map(str::to_owned);
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(USERS).map_err(err)?;
            let mut out = Vec::new();
            let iter = match &after {
                Some(a) => t.range::<&str>(a.as_str()..).map_err(err)?,
                None => t.iter().map_err(err)?,
            };
            for item in iter {
                let (k, v) = item.map_err(err)?;
                if after.as_deref() == Some(k.value()) {
                    continue;
                }
                out.push(decode_user(k.value(), v.value())?);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn list_account_users<'a>(
        &'a self,
        account: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, (Vec<UserRecord>, Option<String>)> {
        let (account, after) = (account.to_owned(), after.map(str::to_owned));
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let users = txn.open_table(USERS).map_err(err)?;
            let mut out = Vec::new();
            if !indexed(&account) {
                // A bounded scan of every user.
                let iter = match &after {
                    Some(a) => users.range::<&str>(a.as_str()..).map_err(err)?,
                    None => users.iter().map_err(err)?,
                };
                let mut seen = 0usize;
                let mut last: Option<String>;
                for item in iter {
                    let (k, v) = item.map_err(err)?;
                    if after.as_deref() == Some(k.value()) {
                        continue;
                    }
                    let u = decode_user(k.value(), v.value())?;
                    last = Some(u.email.clone());
                    if u.account == account {
                        out.push(u);
                    }
                    seen += 1;
                    if out.len() >= limit || seen >= limit.saturating_mul(DEFAULT_SCAN_FACTOR) {
                        return Ok((out, last));
                    }
                }
                return Ok((out, None));
            }
            let members = txn.open_table(ACCOUNT_USERS).map_err(err)?;
            let prefix = member_key(&account, "");
            let start = match &after {
                Some(a) => member_key(&account, a),
                None => prefix.clone(),
            };
            let mut last = None;
            for item in members.range::<&str>(start.as_str()..).map_err(err)? {
                let (k, _) = item.map_err(err)?;
                let Some(email) = k.value().strip_prefix(prefix.as_str()) else {
                    break;
                };
                if after.as_deref() == Some(email) {
                    continue;
                }
                if let Some(v) = users.get(email).map_err(err)? {
                    let u = decode_user(email, v.value())?;
                    if u.account == account {
                        out.push(u);
                    }
                }
                if out.len() >= limit {
                    last = Some(email.to_owned());
                    break;
                }
            }
            Ok((out, last))
        })
    }

    fn claim_vanities<'a>(&'a self, claims: &'a [(String, String)]) -> StoreFuture<'a, Vec<bool>> {
        let claims = claims.to_vec();
        self.write(move |txn, _| {
            let mut out = Vec::with_capacity(claims.len());
            {
                let mut t = txn.open_table(VANITY).map_err(err)?;
                for (name, email) in &claims {
                    let owner = t
                        .get(name.as_str())
                        .map_err(err)?
                        .map(|o| o.value().to_owned());
                    match owner {
                        Some(o) => out.push(o == *email),
                        None => {
                            t.insert(name.as_str(), email.as_str()).map_err(err)?;
                            out.push(true);
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    fn release_vanity<'a>(&'a self, name: &'a str, email: &'a str) -> StoreFuture<'a, ()> {
        let (name, email) = (name.to_owned(), email.to_owned());
        self.write(move |txn, _| {
            {
                let mut t = txn.open_table(VANITY).map_err(err)?;
                let owned = t
                    .get(name.as_str())
                    .map_err(err)?
                    .is_some_and(|o| o.value() == email);
                if owned {
                    t.remove(name.as_str()).map_err(err)?;
                }
            }
            Ok(())
        })
    }

    fn put_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        let (k, value) = (eph_key(kind, key), value.to_vec());
        self.write(move |txn, now| {
            {
                let mut t = txn.open_table(EPHEMERAL).map_err(err)?;
                t.insert(k.as_str(), expiry_value(now, ttl, &value).as_slice())
                    .map_err(err)?;
            }
            Ok(())
        })
    }

    fn insert_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let (k, value) = (eph_key(kind, key), value.to_vec());
        self.write(move |txn, now| insert_live(txn, &k, &value, ttl, now))
    }

    fn insert_ephemeral_get_user<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        email: &'a str,
    ) -> StoreFuture<'a, (bool, Option<UserRecord>)> {
        let (k, value, email) = (eph_key(kind, key), value.to_vec(), email.to_owned());
        self.write(move |txn, now| {
            if !insert_live(txn, &k, &value, ttl, now)? {
                return Ok((false, None));
            }
            let users = txn.open_table(USERS).map_err(err)?;
            let user = match users.get(email.as_str()).map_err(err)? {
                Some(v) => Some(decode_user(&email, v.value())?),
                None => None,
            };
            Ok((true, user))
        })
    }

    fn get_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        let k = eph_key(kind, key);
        self.blocking(move |db, now| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(EPHEMERAL).map_err(err)?;
            Ok(t.get(k.as_str())
                .map_err(err)?
                .and_then(|v| live_value(v.value(), now)))
        })
    }

    fn take_ephemeral<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        let k = eph_key(kind, key);
        self.write(move |txn, now| {
            let value;
            {
                let mut t = txn.open_table(EPHEMERAL).map_err(err)?;
                value = t
                    .remove(k.as_str())
                    .map_err(err)?
                    .and_then(|v| live_value(v.value(), now));
            }
            Ok(value)
        })
    }

    fn delete_ephemeral<'a>(&'a self, kind: Ephemeral, key: &'a str) -> StoreFuture<'a, ()> {
        let k = eph_key(kind, key);
        self.write(move |txn, _| {
            {
                let mut t = txn.open_table(EPHEMERAL).map_err(err)?;
                t.remove(k.as_str()).map_err(err)?;
            }
            Ok(())
        })
    }

    fn put_account<'a>(
        &'a self,
        id: &'a str,
        record: &'a [u8],
        hosts: &'a [String],
        expect: Expect,
    ) -> StoreFuture<'a, PutAccount> {
        let (id, record, hosts) = (id.to_owned(), record.to_vec(), hosts.to_vec());
        self.write(move |txn, _| {
            let outcome = {
                let accounts = txn.open_table(ACCOUNTS).map_err(err)?;
                let old = accounts
                    .get(id.as_str())
                    .map_err(err)?
                    .and_then(|g| split_account(g.value()));
                let current = old.as_ref().map(|o| o.revision);
                let ok = match expect {
                    Expect::Any => true,
                    Expect::Absent => current.is_none(),
                    Expect::Revision(r) => current == Some(r),
                };
                if !ok {
                    return Ok(PutAccount::Conflict { revision: current });
                }
                let mut host_t = txn.open_table(ACCOUNT_HOSTS).map_err(err)?;
                for h in &hosts {
                    if let Some(owner) = host_t.get(h.as_str()).map_err(err)?
                        && owner.value() != id
                    {
                        return Ok(PutAccount::HostTaken {
                            host: h.clone(),
                            owner: owner.value().to_owned(),
                        });
                    }
                }
                if let Some(o) = &old {
                    for h in record_hosts(&o.record) {
                        if !hosts.contains(&h) {
                            host_t.remove(h.as_str()).map_err(err)?;
                        }
                    }
                }
                for h in &hosts {
                    host_t.insert(h.as_str(), id.as_str()).map_err(err)?;
                }
                drop(host_t);
                drop(accounts);
                let v = bump(txn, &id)?;
                let mut accounts = txn.open_table(ACCOUNTS).map_err(err)?;
                let mut value = v.to_be_bytes().to_vec();
                value.extend_from_slice(&record);
                accounts
                    .insert(id.as_str(), value.as_slice())
                    .map_err(err)?;
                PutAccount::Written {
                    revision: v,
                    created: old.is_none(),
                }
            };
            Ok(outcome)
        })
    }

    fn get_account<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<StoredAccount>> {
        let id = id.to_owned();
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(ACCOUNTS).map_err(err)?;
            Ok(t.get(id.as_str())
                .map_err(err)?
                .and_then(|g| split_account(g.value())))
        })
    }

    fn delete_account<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        let id = id.to_owned();
        self.write(move |txn, _| {
            let existed = {
                let mut accounts = txn.open_table(ACCOUNTS).map_err(err)?;
                let old = accounts
                    .remove(id.as_str())
                    .map_err(err)?
                    .and_then(|g| split_account(g.value()));
                drop(accounts);
                match old {
                    None => false,
                    Some(o) => {
                        let mut host_t = txn.open_table(ACCOUNT_HOSTS).map_err(err)?;
                        for h in record_hosts(&o.record) {
                            if host_t
                                .get(h.as_str())
                                .map_err(err)?
                                .map(|g| g.value() == id)
                                == Some(true)
                            {
                                host_t.remove(h.as_str()).map_err(err)?;
                            }
                        }
                        drop(host_t);
                        let mut tokens = txn.open_table(TOKENS).map_err(err)?;
                        let mine: Vec<String> = tokens
                            .iter()
                            .map_err(err)?
                            .filter_map(Result::ok)
                            .filter(|(_, v)| {
                                serde_json::from_slice::<TokenRecord>(v.value())
                                    .is_ok_and(|t| t.account == id)
                            })
                            .map(|(k, _)| k.value().to_owned())
                            .collect();
                        for k in mine {
                            tokens.remove(k.as_str()).map_err(err)?;
                        }
                        drop(tokens);
                        bump(txn, &id)?;
                        true
                    }
                }
            };
            Ok(existed)
        })
    }

    fn list_accounts<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(String, StoredAccount)>> {
        let after = after.map(str::to_owned);
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(ACCOUNTS).map_err(err)?;
            let range = match &after {
                Some(a) => t.range::<&str>((
                    std::ops::Bound::Excluded(a.as_str()),
                    std::ops::Bound::Unbounded,
                )),
                None => t.range::<&str>(..),
            }
            .map_err(err)?;
            let mut out = Vec::new();
            for item in range.take(limit) {
                let (k, v) = item.map_err(err)?;
                if let Some(a) = split_account(v.value()) {
                    out.push((k.value().to_owned(), a));
                }
            }
            Ok(out)
        })
    }

    fn account_changes(&self, since: u64) -> StoreFuture<'_, AccountChanges> {
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let meta = txn.open_table(META).map_err(err)?;
            let version = meta
                .get("accounts_version")
                .map_err(err)?
                .map_or(0, |g| g.value());
            if version <= since {
                return Ok(AccountChanges {
                    version,
                    changed: Vec::new(),
                });
            }
            let log = txn.open_table(ACCOUNT_LOG).map_err(err)?;
            let mut changed = Vec::new();
            for item in log.iter().map_err(err)? {
                let (k, v) = item.map_err(err)?;
                if v.value() > since {
                    changed.push(k.value().to_owned());
                }
            }
            Ok(AccountChanges { version, changed })
        })
    }

    fn put_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()> {
        let (hash, json) = (
            token.hash.clone(),
            serde_json::to_vec(token).unwrap_or_default(),
        );
        self.write(move |txn, _| {
            {
                let mut t = txn.open_table(TOKENS).map_err(err)?;
                t.insert(hash.as_str(), json.as_slice()).map_err(err)?;
            }
            Ok(())
        })
    }

    fn token_by_hash<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
        let hash = hash.to_owned();
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(TOKENS).map_err(err)?;
            Ok(t.get(hash.as_str())
                .map_err(err)?
                .and_then(|g| serde_json::from_slice(g.value()).ok()))
        })
    }

    fn list_tokens<'a>(&'a self, account: &'a str) -> StoreFuture<'a, Vec<TokenRecord>> {
        let account = account.to_owned();
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(TOKENS).map_err(err)?;
            let mut out: Vec<TokenRecord> = t
                .iter()
                .map_err(err)?
                .filter_map(Result::ok)
                .filter_map(|(_, v)| serde_json::from_slice::<TokenRecord>(v.value()).ok())
                .filter(|t| t.account == account)
                .collect();
            out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
            Ok(out)
        })
    }

    fn delete_token<'a>(&'a self, account: &'a str, id: &'a str) -> StoreFuture<'a, bool> {
        let (account, id) = (account.to_owned(), id.to_owned());
        self.write(move |txn, _| {
            let found = {
                let mut t = txn.open_table(TOKENS).map_err(err)?;
                let key = t
                    .iter()
                    .map_err(err)?
                    .filter_map(Result::ok)
                    .find(|(_, v)| {
                        serde_json::from_slice::<TokenRecord>(v.value())
                            .is_ok_and(|r| r.account == account && r.id == id)
                    })
                    .map(|(k, _)| k.value().to_owned());
                match key {
                    Some(k) => {
                        t.remove(k.as_str()).map_err(err)?;
                        true
                    }
                    None => false,
                }
            };
            Ok(found)
        })
    }

    fn purge_expired(&self, limit: usize) -> StoreFuture<'_, usize> {
        let cursor = Arc::clone(&self.purge_from);
        self.write(move |txn, now| {
            let from = cursor
                .lock()
                .map_err(|_| err("purge cursor poisoned"))?
                .clone();
            let mut t = txn.open_table(EPHEMERAL).map_err(err)?;
            // At most `limit` entries looked at per call: the work is bounded
            // whatever the table holds; the cursor continues the sweep.
            let mut expired = Vec::new();
            let mut last = None;
            let mut seen = 0usize;
            {
                let iter = match &from {
                    Some(k) => t.range::<&str>(k.as_str()..).map_err(err)?,
                    None => t.iter().map_err(err)?,
                };
                for item in iter {
                    let (k, v) = item.map_err(err)?;
                    seen += 1;
                    if live_value(v.value(), now).is_none() {
                        expired.push(k.value().to_owned());
                    }
                    last = Some(k.value().to_owned());
                    if seen >= limit.max(1) {
                        break;
                    }
                }
            }
            for k in &expired {
                t.remove(k.as_str()).map_err(err)?;
            }
            // A full page: continue after it next time; else start over.
            let next = if seen >= limit.max(1) {
                last.map(|mut k| {
                    k.push('\u{0}');
                    k
                })
            } else {
                None
            };
            *cursor.lock().map_err(|_| err("purge cursor poisoned"))? = next;
            Ok(expired.len())
        })
    }

    fn add_to_set<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        member: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        let (prefix, member) = (set_prefix(kind, key), member.to_owned());
        self.write(move |txn, now| {
            let mut t = txn.open_table(EPHEMERAL).map_err(err)?;
            // Full: the member that expires first goes.
            let mut live = Vec::new();
            for item in t.range::<&str>(prefix.as_str()..).map_err(err)? {
                let (k, v) = item.map_err(err)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                if let Some(exp) = v.value().get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                    live.push((u64::from_be_bytes(exp), k.value().to_owned()));
                }
            }
            let mine = format!("{prefix}{member}");
            if live.len() >= super::SET_MAX && !live.iter().any(|(_, k)| *k == mine) {
                live.sort();
                if let Some((_, k)) = live.first() {
                    t.remove(k.as_str()).map_err(err)?;
                }
            }
            t.insert(mine.as_str(), expiry_value(now, ttl, b"").as_slice())
                .map_err(err)?;
            Ok(())
        })
    }

    fn set_members<'a>(&'a self, kind: Ephemeral, key: &'a str) -> StoreFuture<'a, Vec<String>> {
        let prefix = set_prefix(kind, key);
        self.blocking(move |db, now| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(EPHEMERAL).map_err(err)?;
            let mut out = Vec::new();
            for item in t.range::<&str>(prefix.as_str()..).map_err(err)? {
                let (k, v) = item.map_err(err)?;
                let Some(member) = k.value().strip_prefix(prefix.as_str()) else {
                    break;
                };
                if live_value(v.value(), now).is_some() {
                    out.push(member.to_owned());
                }
                if out.len() >= super::SET_MAX {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn remove_from_set<'a>(
        &'a self,
        kind: Ephemeral,
        key: &'a str,
        member: &'a str,
    ) -> StoreFuture<'a, ()> {
        let k = format!("{}{member}", set_prefix(kind, key));
        self.write(move |txn, _| {
            let mut t = txn.open_table(EPHEMERAL).map_err(err)?;
            t.remove(k.as_str()).map_err(err)?;
            Ok(())
        })
    }

    fn get_doc<'a>(&'a self, space: DocSpace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let key = doc_key(space, key);
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(DOCS).map_err(err)?;
            Ok(t.get(key.as_str())
                .map_err(err)?
                .map(|g| g.value().to_vec()))
        })
    }

    fn put_doc<'a>(
        &'a self,
        space: DocSpace,
        key: &'a str,
        value: &'a [u8],
        only_if_absent: bool,
    ) -> StoreFuture<'a, bool> {
        let (key, value) = (doc_key(space, key), value.to_vec());
        self.write(move |txn, _| {
            let mut t = txn.open_table(DOCS).map_err(err)?;
            if only_if_absent && t.get(key.as_str()).map_err(err)?.is_some() {
                return Ok(false);
            }
            t.insert(key.as_str(), value.as_slice()).map_err(err)?;
            Ok(true)
        })
    }

    fn put_docs<'a>(
        &'a self,
        space: DocSpace,
        docs: &'a [(String, Vec<u8>)],
    ) -> StoreFuture<'a, ()> {
        let docs: Vec<(String, Vec<u8>)> = docs
            .iter()
            .map(|(k, v)| (doc_key(space, k), v.clone()))
            .collect();
        self.write(move |txn, _| {
            let mut t = txn.open_table(DOCS).map_err(err)?;
            for (k, v) in &docs {
                t.insert(k.as_str(), v.as_slice()).map_err(err)?;
            }
            Ok(())
        })
    }

    fn delete_doc<'a>(&'a self, space: DocSpace, key: &'a str) -> StoreFuture<'a, bool> {
        let key = doc_key(space, key);
        self.write(move |txn, _| {
            let mut t = txn.open_table(DOCS).map_err(err)?;
            let existed = t.remove(key.as_str()).map_err(err)?.is_some();
            Ok(existed)
        })
    }

    fn list_docs<'a>(
        &'a self,
        space: DocSpace,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(String, Vec<u8>)>> {
        let full = doc_key(space, prefix);
        let head = doc_key(space, "").len();
        let (start, skip_start) = match after {
            Some(a) if a >= prefix => (doc_key(space, a), true),
            _ => (full.clone(), false),
        };
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(DOCS).map_err(err)?;
            let mut out = Vec::new();
            for item in t.range::<&str>(start.as_str()..).map_err(err)? {
                let (k, v) = item.map_err(err)?;
                let k = k.value();
                if skip_start && k == start.as_str() {
                    continue;
                }
                if !k.starts_with(full.as_str()) || out.len() >= limit {
                    break;
                }
                out.push((k.get(head..).unwrap_or("").to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    fn log_push<'a>(
        &'a self,
        log: &'a str,
        entries: &'a [Vec<u8>],
        keep: usize,
    ) -> StoreFuture<'a, ()> {
        let log = log.to_owned();
        let keep = u64::try_from(keep).unwrap_or(u64::MAX);
        let from = entries
            .len()
            .saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
        let entries: Vec<Vec<u8>> = entries.get(from..).unwrap_or_default().to_vec();
        self.write(move |txn, _| {
            let counter = format!("log:{log}");
            let mut meta = txn.open_table(META).map_err(err)?;
            let old = meta
                .get(counter.as_str())
                .map_err(err)?
                .map_or(0, |g| g.value());
            let mut docs = txn.open_table(DOCS).map_err(err)?;
            let mut seq = old;
            for e in &entries {
                seq += 1;
                docs.insert(log_key(&log, seq).as_str(), e.as_slice())
                    .map_err(err)?;
            }
            // What fell off the end: from the oldest kept before to the
            // newest now beyond `keep` (each removed once, so linear).
            for s in (old.saturating_sub(keep) + 1)..=seq.saturating_sub(keep) {
                docs.remove(log_key(&log, s).as_str()).map_err(err)?;
            }
            meta.insert(counter.as_str(), seq).map_err(err)?;
            Ok(())
        })
    }

    fn log_recent<'a>(&'a self, log: &'a str, limit: usize) -> StoreFuture<'a, Vec<Vec<u8>>> {
        let prefix = doc_key(DocSpace::Log, &format!("{log}\u{1}"));
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(DOCS).map_err(err)?;
            let mut out = Vec::new();
            for item in t.range::<&str>(prefix.as_str()..).map_err(err)? {
                let (k, v) = item.map_err(err)?;
                if !k.value().starts_with(prefix.as_str()) || out.len() >= limit {
                    break;
                }
                out.push(v.value().to_vec());
            }
            Ok(out)
        })
    }

    fn log_delete<'a>(&'a self, log: &'a str) -> StoreFuture<'a, ()> {
        let log = log.to_owned();
        self.write(move |txn, _| {
            let prefix = doc_key(DocSpace::Log, &format!("{log}\u{1}"));
            let mut docs = txn.open_table(DOCS).map_err(err)?;
            let keys: Vec<String> = docs
                .range::<&str>(prefix.as_str()..)
                .map_err(err)?
                .filter_map(Result::ok)
                .map(|(k, _)| k.value().to_owned())
                .take_while(|k| k.starts_with(prefix.as_str()))
                .collect();
            for k in keys {
                docs.remove(k.as_str()).map_err(err)?;
            }
            let mut meta = txn.open_table(META).map_err(err)?;
            meta.remove(format!("log:{log}").as_str()).map_err(err)?;
            Ok(())
        })
    }

    fn revoke_sessions<'a>(&'a self, emails: &'a [String]) -> StoreFuture<'a, u64> {
        let log = Arc::clone(&self.revocations);
        let emails = emails.to_vec();
        Box::pin(async move {
            let mut log = log.lock().map_err(|_| err("revocation log poisoned"))?;
            for e in emails {
                log.seq += 1;
                let seq = log.seq;
                log.entries.push_back((seq, e));
                if log.entries.len() > super::REVOCATION_LOG {
                    log.entries.pop_front();
                }
            }
            Ok(log.seq)
        })
    }

    fn write_behind(&self) -> Option<Arc<dyn Store>> {
        Some(Arc::new(Self {
            mode: Mode::Behind,
            ..self.clone()
        }))
    }

    fn lazy(&self) -> Option<Arc<dyn Store>> {
        Some(Arc::new(Self {
            mode: Mode::Lazy,
            ..self.clone()
        }))
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        // A durable write of nothing: its group syncs the log.
        self.queue(Mode::Durable, |_, _| Ok(()))
    }

    fn revocations_since(&self, since: Option<u64>) -> StoreFuture<'_, Revocations> {
        let log = Arc::clone(&self.revocations);
        Box::pin(async move {
            let log = log.lock().map_err(|_| err("revocation log poisoned"))?;
            Ok(revocations_after(log.seq, &log.entries, since))
        })
    }
}
