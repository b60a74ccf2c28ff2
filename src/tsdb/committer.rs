//! The committer thread and the data file's write transactions.
//!
//! Append batches are enqueued under the store's state lock, so their order
//! is the order in which the head changed. The thread takes every batch
//! waiting, appends them to the write-ahead log with one `fdatasync` (group
//! commit) and then answers each caller. Batches nobody waits on (samples
//! mlmon makes itself) are written at once but synced with the next synced
//! batch or within [`SYNC_EVERY`]. A checkpoint enqueues a rotation,
//! so that every record before it is in the older segments.
//!
//! Checkpoints, part merges and retention change the data file through
//! [`write`], one durable redb transaction each, from the caller's thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability};

use super::schema::{
    id_key, put_u64, FORMAT_VERSION, KV, LEGACY_CHUNKS, LEGACY_HEAD, LEGACY_SERIES, LEGACY_WAL,
    NS_META, NS_PARTS, NS_SERIES_FILES,
};
use super::wal::Wal;
use super::StorageError;

/// What the committer thread does.
pub(super) enum Op {
    /// Append one record to the log; with `sync`, answer only once it is
    /// on disk, else once it is written (synced within [`SYNC_EVERY`]).
    Append {
        seq: u64,
        payload: Vec<u8>,
        sync: bool,
    },
    /// Start a new segment for records from `first_seq` on.
    Rotate { first_seq: u64 },
}

/// Changes to the data file that must become durable together.
#[derive(Default)]
pub(super) struct Job {
    /// Every log record up to this sequence number is in the file.
    pub checkpoint_seq: Option<u64>,
    /// Part files written (id, day) and parts replaced or dropped.
    pub parts_add: Vec<(u64, i64)>,
    pub parts_remove: Vec<u64>,
    /// Series files written (id, bytes) and files replaced.
    pub series_files_add: Vec<(u64, u64)>,
    pub series_files_remove: Vec<u64>,
    /// Finishes opening a file of an older format version: its head,
    /// chunk, series and log tables go and the version becomes the
    /// current one.
    pub drop_legacy: bool,
}

pub(super) type Reply = SyncSender<Result<(), StorageError>>;

pub(super) struct Shared {
    pub db: RwLock<Database>,
    /// Bytes of the write-ahead log's segments.
    pub wal_bytes: AtomicU64,
}

/// Records appended without a sync reach the disk at most this late.
pub(super) const SYNC_EVERY: Duration = Duration::from_secs(60);

pub(super) fn run(shared: Arc<Shared>, mut wal: Wal, rx: Receiver<(Op, Reply)>) {
    // Since when records are written but not synced.
    let mut unsynced: Option<Instant> = None;
    // A failed append: later records may refer to its values (and the
    // store refuses writes until a restart), so none is written after it.
    let mut broken = false;
    loop {
        let first = match unsynced {
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => break,
            },
            Some(since) => {
                let wait = SYNC_EVERY.saturating_sub(since.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        sync(&mut wal, &mut unsynced);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let mut ops = vec![first];
        while ops.len() < 1024 {
            match rx.try_recv() {
                Ok(j) => ops.push(j),
                Err(_) => break,
            }
        }
        // Appends up to each rotation go out in one write and one sync.
        let mut start = 0;
        while start < ops.len() {
            let end = ops[start..]
                .iter()
                .position(|(op, _)| matches!(op, Op::Rotate { .. }))
                .map_or(ops.len(), |i| start + i);
            if end > start {
                let records = ops[start..end].iter().filter_map(|(op, _)| match op {
                    Op::Append { seq, payload, .. } => Some((*seq, payload.as_slice())),
                    Op::Rotate { .. } => None,
                });
                let must_sync = ops[start..end]
                    .iter()
                    .any(|(op, _)| matches!(op, Op::Append { sync: true, .. }))
                    || unsynced.is_some_and(|t| t.elapsed() >= SYNC_EVERY);
                let appended = if broken {
                    Err(std::io::Error::other("an earlier append failed"))
                } else {
                    wal.append(records, must_sync)
                };
                let result = match appended {
                    Ok(n) => {
                        shared.wal_bytes.fetch_add(n, Ordering::Relaxed);
                        if must_sync {
                            unsynced = None;
                        } else {
                            unsynced.get_or_insert_with(Instant::now);
                        }
                        Ok(())
                    }
                    Err(e) => Err(StorageError::from_io(
                        "cannot append to the write-ahead log",
                        &e,
                    )),
                };
                if let Err(e) = &result {
                    broken = true;
                    tracing::error!(message = "Write-ahead log append failed", error = %e);
                }
                for (_, reply) in &ops[start..end] {
                    let _ = reply.send(result.clone());
                }
            }
            if let Some((Op::Rotate { first_seq }, reply)) = ops.get(end) {
                // A synced record in the new segment must never outlive
                // an unsynced one before it (it may use a series defined
                // there).
                sync(&mut wal, &mut unsynced);
                let result = wal.rotate(*first_seq).map_err(|e| {
                    StorageError::from_io("cannot start a write-ahead log segment", &e)
                });
                let _ = reply.send(result);
            }
            start = end + 1;
        }
    }
    sync(&mut wal, &mut unsynced);
}

/// Syncs what was written without a sync. A failure is logged: the
/// records stay written and the next sync tries again.
fn sync(wal: &mut Wal, unsynced: &mut Option<Instant>) {
    if unsynced.is_none() {
        return;
    }
    match wal.sync() {
        Ok(()) => *unsynced = None,
        Err(e) => tracing::error!(message = "Write-ahead log sync failed", error = %e),
    }
}

/// Writes a job in one durable transaction.
pub(super) fn write(shared: &Shared, job: &Job) -> Result<(), StorageError> {
    let db = shared
        .db
        .read()
        .map_err(|_| StorageError::new("database lock poisoned"))?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StorageError::new(e.to_string()))?;
    {
        let mut kv = txn.open_table(KV)?;
        for (id, bytes) in &job.series_files_add {
            put_u64(&mut kv, NS_SERIES_FILES, &id_key(*id), *bytes)?;
        }
        for id in &job.series_files_remove {
            kv.remove((NS_SERIES_FILES, &id_key(*id)[..]))?;
        }
        if let Some(seq) = job.checkpoint_seq {
            put_u64(&mut kv, NS_META, b"checkpoint_seq", seq)?;
        }
        for (id, day) in &job.parts_add {
            put_u64(&mut kv, NS_PARTS, &id_key(*id), *day as u64)?;
        }
        for id in &job.parts_remove {
            kv.remove((NS_PARTS, &id_key(*id)[..]))?;
        }
        if job.drop_legacy {
            put_u64(&mut kv, NS_META, b"format_version", FORMAT_VERSION)?;
        }
    }
    if job.drop_legacy {
        txn.delete_table(LEGACY_CHUNKS)?;
        txn.delete_table(LEGACY_WAL)?;
        txn.delete_table(LEGACY_SERIES)?;
        txn.delete_table(LEGACY_HEAD)?;
    }
    txn.commit()?;
    Ok(())
}
