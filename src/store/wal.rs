//! The embedded store's write-ahead log.
//!
//! A group commit's changes are appended to `<database>.wal` as one frame
//! and synced (`fdatasync` of a sequential append: a page or two), then
//! committed to redb without a sync of its own (`Durability::None`: redb
//! keeps those pages in memory). Every [`CHECKPOINT_BYTES`] of log or
//! [`CHECKPOINT_AFTER`] a durable redb commit writes the pages once and the
//! log starts over. Opening the store replays whatever the log holds onto
//! the last durable state. So an acknowledged write is on disk as before,
//! while a burst of small writes (logins) costs one sequential sync per
//! group instead of redb's sync of every page each commit touches.
//!
//! The log records effects, not operations: each insert is the key and the
//! final value, each remove the key, in order. Every durable redb commit
//! records the last frame it includes ([`APPLIED`]), and a replay applies
//! only the frames after it: a crash between a durable commit and the log's
//! clearing replays nothing over newer values.
//!
//! File: a 16-byte header (magic, the sequence number of the first frame),
//! then frames, over space allocated once. Frame: 4-byte little-endian
//! payload length, 8-byte sequence number, the first 8 bytes of the
//! SHA-256 of both, the payload. Payload: records of table (1 byte, an index in
//! [`TABLES`]), kind (1 = insert, 0 = remove), key length (4 bytes LE), key,
//! and for an insert value length (4 bytes LE) and value. A torn, corrupt
//! or out-of-sequence frame ends the replay: it was never acknowledged, or
//! it is left from before the last clearing.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redb::{AccessGuard, Key, TableDefinition, TableHandle, Value, WriteTransaction};

use super::StoreError;

/// A checkpoint once the log holds this much. A checkpoint writes every
/// page changed since the last one and syncs the database: it holds up the
/// writes behind it for milliseconds, so under load it should come about
/// once a second (a login logs about 1.3 KiB), not ten times (at 1 MiB:
/// 3.5 % fewer logins per core, `bench/logins.sh`).
pub const CHECKPOINT_BYTES: u64 = 8 * 1024 * 1024;
/// A checkpoint at least this often while writes come in.
pub const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);
/// A group's changes larger than this (an import's batches) are committed
/// to redb durably at once instead of through the log: written twice they
/// would cost more than they save.
pub const DIRECT_BYTES: usize = 64 * 1024;

/// The key in the `meta` table naming the last frame a durable redb commit
/// includes: every durable commit sets it, so a replay skips the frames the
/// database already holds (a crash between a durable commit and the log's
/// clearing must not replay older values over newer ones).
pub const APPLIED: &str = "wal_applied";

/// The tables whose changes the log records, by index.
pub const TABLES: [&str; 10] = [
    "users",
    "vanity",
    "ephemeral",
    "accounts",
    "account_hosts",
    "account_log",
    "meta",
    "account_users",
    "tokens",
    "docs",
];

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store log: {e}"))
}

/// A write transaction that records what it changes.
pub struct Tx<'t> {
    txn: &'t WriteTransaction,
    redo: RefCell<Vec<u8>>,
    /// False: the changes are not recorded (writes that skip the log).
    record: bool,
}

impl<'t> Tx<'t> {
    /// Records the changes made through it to `txn`, into `buffer`
    /// (emptied first; the writer hands the same one back each time, so
    /// recording allocates nothing once it has grown).
    pub fn new(txn: &'t WriteTransaction, mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        Self {
            txn,
            redo: RefCell::new(buffer),
            record: true,
        }
    }

    /// A transaction whose changes are not recorded (they skip the log:
    /// durable at the next durable commit of the database).
    pub fn unrecorded(txn: &'t WriteTransaction) -> Self {
        Self {
            txn,
            redo: RefCell::new(Vec::new()),
            record: false,
        }
    }

    /// Opens `def` for reading and recorded writing.
    pub fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<RecTable<'_, K, V>, redb::TableError> {
        let id = TABLES
            .iter()
            .position(|t| *t == def.name())
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(u8::MAX);
        Ok(RecTable {
            inner: self.txn.open_table(def)?,
            id,
            redo: &self.redo,
            record: self.record,
        })
    }

    /// The recorded changes.
    pub fn into_redo(self) -> Vec<u8> {
        self.redo.into_inner()
    }
}

/// A table of a [`Tx`]: reads as a redb table, records inserts and removes.
pub struct RecTable<'s, K: Key + 'static, V: Value + 'static> {
    inner: redb::Table<'s, K, V>,
    id: u8,
    redo: &'s RefCell<Vec<u8>>,
    record: bool,
}

impl<'s, K: Key + 'static, V: Value + 'static> std::ops::Deref for RecTable<'s, K, V> {
    type Target = redb::Table<'s, K, V>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

fn push_len(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(bytes);
}

impl<K: Key + 'static, V: Value + 'static> RecTable<'_, K, V> {
    /// `redb::Table::insert`, recorded.
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        if self.record {
            let mut r = self.redo.borrow_mut();
            r.push(self.id);
            r.push(1);
            push_len(&mut r, K::as_bytes(key.borrow()).as_ref());
            push_len(&mut r, V::as_bytes(value.borrow()).as_ref());
        }
        self.inner.insert(key, value)
    }

    /// `redb::Table::remove`, recorded.
    pub fn remove<'a>(
        &mut self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::StorageError> {
        if self.record {
            let mut r = self.redo.borrow_mut();
            r.push(self.id);
            r.push(0);
            push_len(&mut r, K::as_bytes(key.borrow()).as_ref());
        }
        self.inner.remove(key)
    }
}

/// The log file: written in place over space allocated once, so a sync
/// flushes the appended data only (an append that grew the file also made
/// every sync write the inode).
pub struct Wal {
    file: File,
    path: PathBuf,
    /// Where the next frame goes.
    end: u64,
    /// The sequence number of the next frame.
    next_seq: u64,
    /// Frames were written since the last sync.
    unsynced: bool,
    /// Syncs of the log so far.
    syncs: Arc<AtomicU64>,
    /// The frame being written (reused).
    frame: Vec<u8>,
}

/// The log's header: magic, then the sequence number of its first frame.
const MAGIC: &[u8; 8] = b"SGWAL001";
const HEADER: u64 = 16;
/// Frame head: payload length (4), sequence number (8), checksum (8).
const FRAME_HEAD: usize = 20;
/// The file's allocated size: a checkpoint's worth and the largest group
/// that goes through the log. A frame that would not fit waits for a
/// checkpoint (the caller's `Log` makes one).
pub const CAPACITY: u64 = CHECKPOINT_BYTES + DIRECT_BYTES as u64 + 64 * 1024;

/// A frame read back: its sequence number and payload.
pub type Frame = (u64, Vec<u8>);

/// The log of the database at `db`.
pub fn path_of(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

impl Wal {
    /// Opens (or creates) the log of the database at `db`; returns it and
    /// the frames it holds (to replay, then [`Wal::clear`], before anything
    /// else is written).
    pub fn open(db: &Path) -> Result<(Self, Vec<Frame>), StoreError> {
        let path = path_of(db);
        let open = |e: std::io::Error| StoreError::Open(format!("{}: {e}", path.display()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(open)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(open)?;
        let (frames, next_seq) = frames(&bytes);
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if len < CAPACITY {
            // Real blocks (zeros), not a hole: writing into a hole would
            // allocate, and every sync would write the inode again.
            file.seek(std::io::SeekFrom::End(0)).map_err(open)?;
            let zeros = vec![0u8; usize::try_from(CAPACITY - len).unwrap_or(0)];
            file.write_all(&zeros)
                .and_then(|()| file.sync_all())
                .map_err(open)?;
        }
        let mut wal = Self {
            file,
            path,
            end: CAPACITY,
            next_seq,
            unsynced: false,
            syncs: Arc::default(),
            frame: Vec::new(),
        };
        if frames.is_empty() {
            // A new file gets its header; an old one's stale frames are
            // sealed off the same way.
            wal.clear()?;
        }
        Ok((wal, frames))
    }

    /// Whether a frame of `payload` bytes fits before the next checkpoint.
    pub fn fits(&self, payload: usize) -> bool {
        self.end + u64::try_from(payload + FRAME_HEAD).unwrap_or(u64::MAX) <= CAPACITY
    }

    /// Writes `payload` as the next frame, and syncs the log when `sync`
    /// (else it is durable with the next sync).
    pub fn append(&mut self, payload: &[u8], sync: bool) -> Result<(), StoreError> {
        if !self.fits(payload.len()) {
            return Err(err("the log is full until the next checkpoint"));
        }
        let mut head = [0u8; FRAME_HEAD];
        let (len, rest) = head.split_at_mut(4);
        let (seq, sum) = rest.split_at_mut(8);
        len.copy_from_slice(
            &u32::try_from(payload.len())
                .map_err(|_| err("a group's changes exceed 4 GiB"))?
                .to_le_bytes(),
        );
        seq.copy_from_slice(&self.next_seq.to_le_bytes());
        sum.copy_from_slice(&checksum(self.next_seq, payload));
        let at = self.end + FRAME_HEAD as u64;
        // One write for the frame (a copy is cheaper than a second call).
        self.frame.clear();
        self.frame.extend_from_slice(&head);
        self.frame.extend_from_slice(payload);
        self.file
            .write_all_at(&self.frame, self.end)
            .map_err(|e| err(format!("{}: {e}", self.path.display())))?;
        self.unsynced = true;
        if sync {
            // A failed sync: this frame is not logged (the next one goes
            // over it).
            self.sync()?;
        }
        self.end = at + u64::try_from(payload.len()).unwrap_or(u64::MAX);
        self.next_seq += 1;
        Ok(())
    }

    /// Syncs the frames written since the last sync, if any.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(|e| err(format!("{}: {e}", self.path.display())))?;
            self.unsynced = false;
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Counts the syncs of frames (for benchmarks and tests).
    pub fn sync_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.syncs)
    }

    /// The sequence number the next frame gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes of frames in the log.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(HEADER)
    }

    /// Whether the log holds no frame.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the log (after a durable commit holds all it recorded): the
    /// header now names the next sequence number, so the older frames still
    /// in the file end any replay.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&self.next_seq.to_le_bytes());
        self.file
            .write_all_at(&header, 0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| err(format!("{}: {e}", self.path.display())))?;
        self.end = HEADER;
        self.unsynced = false;
        Ok(())
    }
}

/// The first 8 bytes of SHA-256 over a frame's sequence number and payload.
fn checksum(seq: u64, payload: &[u8]) -> [u8; 8] {
    let mut h = openssl::sha::Sha256::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    let d = h.finish();
    let mut out = [0u8; 8];
    out.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    out
}

/// The intact frames after the header, in sequence from the header's
/// number, and the number that follows them. A torn, corrupt or stale
/// (earlier sequence) frame ends them.
fn frames(bytes: &[u8]) -> (Vec<Frame>, u64) {
    let Some((header, mut rest)) = bytes.split_at_checked(16) else {
        return (Vec::new(), 1);
    };
    let (magic, seq) = header.split_at(8);
    let start = seq.try_into().ok().map_or(1, u64::from_le_bytes);
    if magic != MAGIC {
        return (Vec::new(), 1);
    }
    let mut out = Vec::new();
    let mut want = start;
    while let Some((head, after)) = rest.split_at_checked(FRAME_HEAD) {
        let (len, tail) = head.split_at(4);
        let (seq, sum) = tail.split_at(8);
        let len = len.try_into().ok().map(u32::from_le_bytes);
        let seq = seq.try_into().ok().map(u64::from_le_bytes);
        let (Some(len), Some(seq)) = (len, seq) else {
            break;
        };
        let Some((payload, next)) = usize::try_from(len)
            .ok()
            .and_then(|l| after.split_at_checked(l))
        else {
            break;
        };
        if seq != want || checksum(seq, payload).as_slice() != sum {
            break;
        }
        out.push((seq, payload.to_vec()));
        want += 1;
        rest = next;
    }
    (out, want)
}

/// Applies a frame's records to `txn` (without recording them again).
pub fn replay(txn: &WriteTransaction, mut payload: &[u8]) -> Result<(), StoreError> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoreError> {
        let (a, b) = p
            .split_at_checked(n)
            .ok_or_else(|| err("a record is cut short"))?;
        *p = b;
        Ok(a)
    }
    fn take_len<'a>(p: &mut &'a [u8]) -> Result<&'a [u8], StoreError> {
        let n = take(p, 4)?;
        let n = u32::from_le_bytes(n.try_into().map_err(err)?);
        take(p, usize::try_from(n).map_err(err)?)
    }
    while !payload.is_empty() {
        let head = take(&mut payload, 2)?;
        let (table, kind) = (head.first().copied(), head.get(1).copied());
        let key = std::str::from_utf8(take_len(&mut payload)?).map_err(err)?;
        let value = if kind == Some(1) {
            Some(take_len(&mut payload)?)
        } else {
            None
        };
        let name = table
            .and_then(|t| TABLES.get(usize::from(t)))
            .ok_or_else(|| err("a record names no table"))?;
        match *name {
            "vanity" | "account_hosts" => {
                apply::<&str>(txn, TableDefinition::new(name), key, value)?
            }
            "account_log" | "meta" => apply::<u64>(txn, TableDefinition::new(name), key, value)?,
            _ => apply::<&[u8]>(txn, TableDefinition::new(name), key, value)?,
        }
    }
    Ok(())
}

fn apply<V: Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<&str, V>,
    key: &str,
    value: Option<&[u8]>,
) -> Result<(), StoreError> {
    let mut t = txn.open_table(def).map_err(err)?;
    match value {
        Some(v) => {
            t.insert(key, V::from_bytes(v)).map_err(err)?;
        }
        None => {
            t.remove(key).map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(frames: &[Frame]) -> Vec<Vec<u8>> {
        frames.iter().map(|(_, p)| p.clone()).collect()
    }

    #[test]
    fn frames_replay_in_sequence_and_a_torn_corrupt_or_stale_one_ends_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let (mut wal, frames0) = Wal::open(&db).unwrap();
        assert!(frames0.is_empty());
        assert_eq!(std::fs::metadata(path_of(&db)).unwrap().len(), CAPACITY);
        wal.append(b"first", true).unwrap();
        // A write-behind frame: written, synced by the next sync.
        wal.append(b"second", false).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, frames) = Wal::open(&db).unwrap();
        assert_eq!(
            payloads(&frames),
            vec![b"first".to_vec(), b"second".to_vec()]
        );
        let pristine = std::fs::read(path_of(&db)).unwrap();
        let second_at = HEADER as usize + FRAME_HEAD + 5;

        // A flipped byte in the second frame ends the replay before it.
        let mut bytes = pristine.clone();
        bytes[second_at + FRAME_HEAD] ^= 1;
        std::fs::write(path_of(&db), &bytes).unwrap();
        assert_eq!(
            payloads(&Wal::open(&db).unwrap().1),
            vec![b"first".to_vec()]
        );

        // A torn second frame: its head written, its payload not.
        let mut bytes = pristine.clone();
        for b in &mut bytes[second_at + FRAME_HEAD..second_at + FRAME_HEAD + 6] {
            *b = 0;
        }
        std::fs::write(path_of(&db), &bytes).unwrap();
        assert_eq!(
            payloads(&Wal::open(&db).unwrap().1),
            vec![b"first".to_vec()]
        );

        // After a clear, the frames still in the file are stale: a new
        // frame over the first is replayed, the old second is not.
        std::fs::write(path_of(&db), &pristine).unwrap();
        let (mut wal, frames) = Wal::open(&db).unwrap();
        assert_eq!(frames.len(), 2);
        wal.clear().unwrap();
        drop(wal);
        assert!(Wal::open(&db).unwrap().1.is_empty(), "cleared");
        let (mut wal, _) = Wal::open(&db).unwrap();
        wal.append(b"third", true).unwrap();
        drop(wal);
        assert_eq!(
            payloads(&Wal::open(&db).unwrap().1),
            vec![b"third".to_vec()]
        );
    }
}
