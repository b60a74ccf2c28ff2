//! The committer thread: turns queued [`Job`]s into durable redb commits.
//!
//! Jobs are enqueued under the store's state lock, so their order is the
//! order in which the head changed. The thread takes every job waiting, writes
//! them in one write transaction with `Durability::Immediate` (group commit)
//! and then answers each job's caller. `committed_seq` tells readers which
//! jobs are in the file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, RwLock};

use redb::{Database, Durability};

use super::schema::{CHUNKS, HEAD, META, SERIES, WAL};
use super::StorageError;

/// Changes to the file that must become durable together.
#[derive(Default)]
pub(super) struct Job {
    pub seq: u64,
    pub wal: Option<Vec<u8>>,
    pub new_series: Vec<(u64, Vec<u8>)>,
    pub chunks: Vec<(u64, i64, Vec<u8>)>,
    pub head_rows: Vec<(u64, Vec<u8>)>,
    pub head_deletes: Vec<u64>,
    /// Delete WAL records up to and including this sequence number.
    pub wal_truncate: Option<u64>,
    pub chunk_deletes: Vec<(u64, i64)>,
    pub series_deletes: Vec<u64>,
}

/// A chunk key is a (u64, i64) pair.
const CHUNK_KEY_BYTES: usize = 16;

pub(super) type Reply = SyncSender<Result<(), StorageError>>;

pub(super) struct Shared {
    pub db: RwLock<Database>,
    pub committed_seq: AtomicU64,
    pub chunk_bytes: AtomicU64,
    pub chunks: AtomicU64,
}

pub(super) fn run(shared: Arc<Shared>, rx: Receiver<(Job, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < 1024 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let result = write(&shared, jobs.iter().map(|(j, _)| j));
        if result.is_ok() {
            let max = jobs.iter().map(|(j, _)| j.seq).max().unwrap_or(0);
            shared.committed_seq.fetch_max(max, Ordering::SeqCst);
        } else if let Err(e) = &result {
            tracing::error!(message = "Commit to the database failed", error = %e);
        }
        for (_, reply) in jobs {
            let _ = reply.send(result.clone());
        }
    }
}

/// Writes jobs in one durable transaction.
pub(super) fn write<'a>(
    shared: &Shared,
    jobs: impl Iterator<Item = &'a Job>,
) -> Result<(), StorageError> {
    let db = shared
        .db
        .read()
        .map_err(|_| StorageError::new("database lock poisoned"))?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StorageError::new(e.to_string()))?;
    let (mut added_bytes, mut added_chunks, mut removed_bytes, mut removed_chunks) =
        (0u64, 0u64, 0u64, 0u64);
    {
        let mut wal = txn.open_table(WAL)?;
        let mut series = txn.open_table(SERIES)?;
        let mut chunks = txn.open_table(CHUNKS)?;
        let mut head = txn.open_table(HEAD)?;
        let mut meta = txn.open_table(META)?;
        for job in jobs {
            for (id, bytes) in &job.new_series {
                series.insert(*id, bytes.as_slice())?;
            }
            if let Some(rec) = &job.wal {
                wal.insert(job.seq, rec.as_slice())?;
            }
            for (id, start, bytes) in &job.chunks {
                if let Some(old) = chunks.insert((*id, *start), bytes.as_slice())? {
                    removed_bytes += (CHUNK_KEY_BYTES + old.value().len()) as u64;
                    removed_chunks += 1;
                }
                added_bytes += (CHUNK_KEY_BYTES + bytes.len()) as u64;
                added_chunks += 1;
            }
            for id in &job.head_deletes {
                head.remove(*id)?;
            }
            for (id, bytes) in &job.head_rows {
                head.insert(*id, bytes.as_slice())?;
            }
            if let Some(upto) = job.wal_truncate {
                wal.retain_in(..=upto, |_, _| false)?;
                meta.insert("checkpoint_seq", upto)?;
            }
            for key in &job.chunk_deletes {
                if let Some(old) = chunks.remove(*key)? {
                    removed_bytes += (CHUNK_KEY_BYTES + old.value().len()) as u64;
                    removed_chunks += 1;
                }
            }
            for id in &job.series_deletes {
                series.remove(*id)?;
                head.remove(*id)?;
            }
        }
    }
    txn.commit()?;
    shared.chunk_bytes.fetch_add(added_bytes, Ordering::Relaxed);
    shared.chunk_bytes.fetch_sub(
        removed_bytes.min(shared.chunk_bytes.load(Ordering::Relaxed)),
        Ordering::Relaxed,
    );
    shared.chunks.fetch_add(added_chunks, Ordering::Relaxed);
    shared.chunks.fetch_sub(
        removed_chunks.min(shared.chunks.load(Ordering::Relaxed)),
        Ordering::Relaxed,
    );
    Ok(())
}
