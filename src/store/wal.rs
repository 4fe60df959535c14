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
//! final value, each remove the key, in order. Replaying a frame twice (a
//! crash between a checkpoint and the log's truncation) ends in the same
//! state.
//!
//! Frame: 4-byte little-endian length of the payload, the first 8 bytes of
//! its SHA-256, the payload. Payload: records of table (1 byte, an index in
//! [`TABLES`]), kind (1 = insert, 0 = remove), key length (4 bytes LE), key,
//! and for an insert value length (4 bytes LE) and value. A torn or corrupt
//! frame ends the replay: it was never acknowledged.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::{AccessGuard, Key, TableDefinition, TableHandle, Value, WriteTransaction};

use super::StoreError;

/// A checkpoint once the log holds this much.
pub const CHECKPOINT_BYTES: u64 = 1024 * 1024;
/// A checkpoint at least this often while writes come in.
pub const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);
/// A group's changes larger than this (an import's batches) are committed
/// to redb durably at once instead of through the log: written twice they
/// would cost more than they save.
pub const DIRECT_BYTES: usize = 256 * 1024;

/// The tables whose changes the log records, by index.
pub const TABLES: [&str; 9] = [
    "users",
    "vanity",
    "ephemeral",
    "accounts",
    "account_hosts",
    "account_log",
    "meta",
    "account_users",
    "tokens",
];

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store log: {e}"))
}

/// A write transaction that records what it changes.
pub struct Tx<'t> {
    txn: &'t WriteTransaction,
    redo: RefCell<Vec<u8>>,
}

impl<'t> Tx<'t> {
    /// Records the changes made through it to `txn`.
    pub fn new(txn: &'t WriteTransaction) -> Self {
        Self {
            txn,
            redo: RefCell::new(Vec::new()),
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
        {
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
        {
            let mut r = self.redo.borrow_mut();
            r.push(self.id);
            r.push(0);
            push_len(&mut r, K::as_bytes(key.borrow()).as_ref());
        }
        self.inner.remove(key)
    }
}

/// The log file.
pub struct Wal {
    file: File,
    path: PathBuf,
    len: u64,
}

/// The log of the database at `db`.
pub fn path_of(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

impl Wal {
    /// Opens (or creates) the log of the database at `db`; returns it and
    /// the frames it holds (to replay before anything else is written).
    pub fn open(db: &Path) -> Result<(Self, Vec<Vec<u8>>), StoreError> {
        let path = path_of(db);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
        let frames = frames(&bytes);
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        Ok((Self { file, path, len }, frames))
    }

    /// Appends `payload` as a frame and syncs it.
    pub fn append(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        let mut frame = Vec::with_capacity(payload.len() + 12);
        frame.extend_from_slice(
            &u32::try_from(payload.len())
                .map_err(|_| err("a group's changes exceed 4 GiB"))?
                .to_le_bytes(),
        );
        frame.extend_from_slice(openssl::sha::sha256(payload).get(..8).unwrap_or(&[0; 8]));
        frame.extend_from_slice(payload);
        self.file
            .write_all(&frame)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| err(format!("{}: {e}", self.path.display())))?;
        self.len += u64::try_from(frame.len()).unwrap_or(u64::MAX);
        Ok(())
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the log (after a durable commit holds all it recorded).
    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| err(format!("{}: {e}", self.path.display())))?;
        self.len = 0;
        Ok(())
    }
}

/// The whole, intact frames at the start of `bytes`.
fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((head, rest)) = bytes.split_at_checked(12) {
        let (len, sum) = head.split_at(4);
        let Some(len) = len
            .try_into()
            .ok()
            .map(u32::from_le_bytes)
            .and_then(|l| usize::try_from(l).ok())
        else {
            break;
        };
        let Some((payload, next)) = rest.split_at_checked(len) else {
            break;
        };
        if openssl::sha::sha256(payload).get(..8) != Some(sum) {
            break;
        }
        out.push(payload.to_vec());
        bytes = next;
    }
    out
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

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_frames() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let (mut wal, frames0) = Wal::open(&db).unwrap();
        assert!(frames0.is_empty());
        wal.append(b"first").unwrap();
        wal.append(b"second").unwrap();
        drop(wal);
        let (_, frames) = Wal::open(&db).unwrap();
        assert_eq!(frames, vec![b"first".to_vec(), b"second".to_vec()]);
        // A torn third frame (half written by a crash) is ignored.
        let mut bytes = std::fs::read(path_of(&db)).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&100u32.to_le_bytes());
        bytes.extend_from_slice(b"12345678partial");
        std::fs::write(path_of(&db), &bytes).unwrap();
        let (_, frames) = Wal::open(&db).unwrap();
        assert_eq!(frames.len(), 2);
        // A flipped byte in the second frame ends the replay before it.
        bytes.truncate(whole);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(path_of(&db), &bytes).unwrap();
        let (_, frames) = Wal::open(&db).unwrap();
        assert_eq!(frames, vec![b"first".to_vec()]);
    }
}
