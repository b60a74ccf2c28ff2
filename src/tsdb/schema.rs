//! Every redb table of the store, and the store's own rows in the `kv`
//! table, in one place. The byte layout of keys and values is documented in
//! `docs/format.md`; bump [`FORMAT_VERSION`] when it changes.
//!
//! One table: redb spends a 4 KiB page on each table it keeps, and the
//! store's lists are a handful of rows, so they live in `kv` under
//! namespaces no component uses (`tsdb.*`).

use redb::{ReadableTable, TableDefinition};

use super::StorageError;

/// Written to `kv[tsdb.meta, format_version]` when a file is created.
pub const FORMAT_VERSION: u64 = 3;

/// (namespace, key) → value: the store's lists (namespaces below) and the
/// small durable state of other components (push groups, alert state,
/// silences, notification log, runs).
pub const KV: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("kv");

/// Small counters by name (`format_version`, `checkpoint_seq`): u64 LE.
pub const NS_META: &str = "tsdb.meta";
/// Part id (u64 BE) → the day (days since the epoch, i64 LE) its chunks
/// start in: the part files (`part.rs`) that hold the samples.
pub const NS_PARTS: &str = "tsdb.parts";
/// Series file id (u64 BE) → its size (u64 LE): the files
/// (`seriesfile.rs`) that hold the series' labels, applied in id order.
pub const NS_SERIES_FILES: &str = "tsdb.series_files";

/// Versions 1 to 3 (before the lists moved into `kv`): counters by name.
/// Opening such a file moves these three tables' rows into `kv` and
/// deletes them, in one transaction.
pub const LEGACY_META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const LEGACY_SERIES_FILES: TableDefinition<u64, u64> = TableDefinition::new("series_files");
pub const LEGACY_PARTS: TableDefinition<u64, i64> = TableDefinition::new("parts");
/// Format version 1 only: series id → canonical label bytes. Opening a
/// version 1 file moves them into a series file and deletes the table.
pub const LEGACY_SERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("series");
/// Format version 1 only: (series id, first timestamp) → closed chunk.
/// Opening a version 1 file moves them into parts and deletes the table.
pub const LEGACY_CHUNKS: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("chunks");
/// Format versions 1 and 2 only: series id → the open head chunk as of
/// the last checkpoint. Version 3 writes every head into a part at each
/// checkpoint; opening an older file takes its heads as the log's samples
/// and deletes the table.
pub const LEGACY_HEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("head");
/// Format version 1 only: sequence number → one acknowledged append batch.
/// Version 2 keeps the log in segment files (`wal.rs`); opening a version
/// 1 file replays this table, checkpoints and deletes it.
pub const LEGACY_WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("wal");

/// The `kv` table, open for writing.
pub type KvTable<'t> = redb::Table<'t, (&'static str, &'static [u8]), &'static [u8]>;

/// A u64 row: `key` in namespace `ns` → `v` LE.
pub fn put_u64(t: &mut KvTable, ns: &str, key: &[u8], v: u64) -> Result<(), StorageError> {
    t.insert((ns, key), &v.to_le_bytes()[..])?;
    Ok(())
}

pub fn get_u64(
    t: &impl ReadableTable<(&'static str, &'static [u8]), &'static [u8]>,
    ns: &str,
    key: &[u8],
) -> Result<Option<u64>, StorageError> {
    match t.get((ns, key))? {
        None => Ok(None),
        Some(v) => u64_of(v.value())
            .map(Some)
            .ok_or_else(|| StorageError::new(format!("{ns}: a value is not 8 bytes"))),
    }
}

/// `(key, value)` rows of one namespace.
pub type KvRows = Vec<(Vec<u8>, Vec<u8>)>;

/// Every (key, value) of a namespace, in key order.
pub fn scan_namespace(
    t: &impl ReadableTable<(&'static str, &'static [u8]), &'static [u8]>,
    ns: &str,
) -> Result<KvRows, StorageError> {
    let mut out = Vec::new();
    for row in t.range((ns, &[][..])..)? {
        let (k, v) = row?;
        let (row_ns, key) = k.value();
        if row_ns != ns {
            break;
        }
        out.push((key.to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

/// Every (id, value) of a namespace keyed by ids, ascending.
pub fn scan_ids(
    t: &impl ReadableTable<(&'static str, &'static [u8]), &'static [u8]>,
    ns: &str,
) -> Result<Vec<(u64, u64)>, StorageError> {
    scan_namespace(t, ns)?
        .into_iter()
        .map(
            |(key, v)| match (<[u8; 8]>::try_from(key.as_slice()), u64_of(&v)) {
                (Ok(id), Some(v)) => Ok((u64::from_be_bytes(id), v)),
                _ => Err(StorageError::new(format!("{ns}: a row is not 8 + 8 bytes"))),
            },
        )
        .collect()
}

/// The key of an id row: big-endian, so rows scan in id order.
pub fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Eight bytes read little-endian.
fn u64_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}
