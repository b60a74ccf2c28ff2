//! Every redb table of the store, in one place. The byte layout of keys and
//! values is documented in `docs/format.md`; bump [`FORMAT_VERSION`] when it
//! changes.

use redb::TableDefinition;

/// Written to `META["format_version"]` when a file is created.
pub const FORMAT_VERSION: u64 = 3;

/// Small counters: `format_version`, `checkpoint_seq`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// series file id → its size: the files (`seriesfile.rs`) that hold the
/// series' labels, applied in id order.
pub const SERIES_FILES: TableDefinition<u64, u64> = TableDefinition::new("series_files");
/// Format version 1 only: series id → canonical label bytes. Opening a
/// version 1 file moves them into a series file and deletes the table.
pub const LEGACY_SERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("series");
/// part id → the day (days since the epoch) its chunks start in: the part
/// files (`part.rs`) that hold the closed chunks.
pub const PARTS: TableDefinition<u64, i64> = TableDefinition::new("parts");
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
/// (namespace, key) → value: small durable state of other components
/// (push groups, later alert state, silences, notification log, runs).
pub const KV: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("kv");
