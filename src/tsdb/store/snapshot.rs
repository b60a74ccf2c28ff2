//! Online backup: a consistent copy of the store in a new directory,
//! usable as a data directory as it is, taken while ingest goes on.
//!
//! Under the `writer` lock (no checkpoint, merge, retention or compaction
//! changes the files meanwhile; appends go on): every row of the `kv`
//! table is copied in one read transaction into a new redb file (so the
//! lists of parts and series files, the log positions and every
//! component's state are of one moment); the part and series files those
//! rows list are hard-linked (they are never changed once written; copied
//! when the destination is on another filesystem); the log's segments are
//! copied. Every sample acknowledged before the copy began is in the
//! log's copy or a part; samples appended during it may be too (a torn
//! last record is dropped on replay, as after a crash).

use std::path::Path;

use super::*;

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotStats {
    pub rows: u64,
    pub parts: u64,
    pub series_files: u64,
    pub log_segments: u64,
    pub bytes: u64,
}

impl Storage {
    /// Writes the copy into `dest`, which must not exist yet.
    pub fn write_snapshot(&self, dest: &Path) -> Result<SnapshotStats, StorageError> {
        self.check_usable()?;
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| StorageError::from_io(&what, &e)
        };
        if dest.exists() {
            return Err(StorageError::new(format!(
                "{} already exists; a snapshot goes into a new directory",
                dest.display()
            )));
        }
        let _writer = lock(&self.writer);
        let (parts_to, series_to, wal_to) =
            (dest.join("parts"), dest.join("series"), dest.join("wal"));
        for d in [&parts_to, &series_to, &wal_to] {
            std::fs::create_dir_all(d).map_err(io("cannot create the snapshot's directories"))?;
        }
        let mut stats = SnapshotStats::default();
        let (mut parts, mut series_files) = (Vec::new(), Vec::new());
        {
            let db = self.db()?;
            let from = db.begin_read()?;
            let from = from.open_table(KV)?;
            let copy = Database::create(dest.join("mlmon.redb"))?;
            let txn = copy.begin_write()?;
            {
                let mut to = txn.open_table(KV)?;
                for row in from.iter()? {
                    let (k, v) = row?;
                    let (ns, key) = k.value();
                    to.insert((ns, key), v.value())?;
                    stats.rows += 1;
                    let id = <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes);
                    match (ns, id) {
                        (NS_PARTS, Some(id)) => parts.push(id),
                        (NS_SERIES_FILES, Some(id)) => series_files.push(id),
                        _ => {}
                    }
                }
            }
            txn.commit()?;
        }
        for id in parts {
            let name = part::file_name(id);
            stats.bytes += link_or_copy(&self.parts_dir.join(&name), &parts_to.join(&name))
                .map_err(io("cannot copy a part file"))?;
            stats.parts += 1;
        }
        for id in series_files {
            let name = seriesfile::file_name(id);
            stats.bytes += link_or_copy(&self.series_dir.join(&name), &series_to.join(&name))
                .map_err(io("cannot copy a series file"))?;
            stats.series_files += 1;
        }
        let mut segments: Vec<_> = std::fs::read_dir(&self.wal_dir)
            .map_err(io("cannot list the log"))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name())
            .collect();
        segments.sort();
        for name in segments {
            // Segments are appended to and trimmed on replay: copied, never
            // linked.
            let to = wal_to.join(&name);
            stats.bytes +=
                std::fs::copy(self.wal_dir.join(&name), &to).map_err(io("cannot copy the log"))?;
            std::fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(io("cannot sync the log's copy"))?;
            stats.log_segments += 1;
        }
        stats.bytes += std::fs::metadata(dest.join("mlmon.redb"))
            .map(|m| m.len())
            .unwrap_or(0);
        for d in [&parts_to, &series_to, &wal_to, dest] {
            std::fs::File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(io("cannot sync the snapshot's directories"))?;
        }
        Ok(stats)
    }
}

/// Hard-links `from` at `to`, or copies it (another filesystem); its size.
fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<u64> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(std::fs::metadata(to)?.len()),
        Err(_) => {
            let n = std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            Ok(n)
        }
    }
}
