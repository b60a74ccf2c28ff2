//! The storage engine: a data directory of immutable part files (the
//! samples), compressed series files (label sets), a write-ahead log of
//! segment files, and one redb file with one table (the lists of parts and
//! series files, small durable state of other components).
//!
//! Writes go through [`Storage::appender`] ([`Appender`]): a batch is checked
//! against the limits and per-series order, applied to the in-memory head,
//! written as one log record and acknowledged once it is synced (the
//! committer thread groups concurrent batches into one sync). Reads go
//! through the [`Querier`] trait (`select(matchers, mint, maxt)`), which
//! merges the parts, the closed chunks not yet in a part and the head. A
//! head chunk is closed at [`StorageOptions::chunk_max_samples`] samples or
//! two hours; checkpoints ([`Storage::maintain`]) close every head and
//! write the closed chunks to parts, then drop the log segments they
//! cover. Layout: `docs/format.md`.

pub mod chunk;

mod bits;
mod committer;
mod index;
mod part;
mod schema;
mod seriesfile;
mod store;
mod tail;
mod wal;

use std::path::PathBuf;
use std::sync::Arc;

use crate::model::{Labels, Matcher, Sample, Timestamp};

pub use store::{Appender, LabelDecoder, Maintenance, SnapshotStats, Storage};
pub use tail::{Cursor, LogBatch, LogSeries};

/// Longest time span of one chunk; chunks are keyed by their first
/// timestamp, so a read for `[mint, maxt]` starts at `mint - CHUNK_SPAN`.
pub const CHUNK_SPAN_MS: i64 = 2 * 3_600_000;

/// Everything the store needs to know, resolved from the config file.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// The data directory (`mlmon.redb`, `parts/`, `series/`, `wal/`).
    pub dir: PathBuf,
    /// Chunks whose newest sample is older than this are deleted.
    pub retention_ms: i64,
    /// The most bytes the data directory's files may take; the oldest
    /// samples go first ([`Storage::apply_retention`]).
    pub retention_bytes: Option<u64>,
    pub limits: Limits,
    /// A head chunk is closed when it holds this many samples (default 240).
    pub chunk_max_samples: usize,
    /// An append checkpoints at once when this many samples arrived since
    /// the last checkpoint (they wait in memory; default 4,000,000, about
    /// 64 MB; maintenance usually checkpoints much earlier).
    pub checkpoint_samples: usize,
    /// redb page cache (default 16 MiB).
    pub cache_bytes: usize,
}

impl StorageOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StorageOptions {
            dir: dir.into(),
            retention_ms: 15 * 86_400_000,
            retention_bytes: None,
            limits: Limits::default(),
            chunk_max_samples: 240,
            checkpoint_samples: 4_000_000,
            cache_bytes: 16 << 20,
        }
    }
}

/// Limits on what a batch may create; a batch over any of them is refused
/// whole.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_series: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series: 1_000_000,
            max_labels_per_series: 64,
            max_label_name_length: 256,
            max_label_value_length: 4096,
        }
    }
}

/// A failure of the store itself (I/O, corruption); the caller answers 5xx.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage: {message}")]
pub struct StorageError {
    pub message: String,
    pub kind: StorageErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// The filesystem holding the data file is full (or over quota):
    /// writes are refused until space returns; reads go on.
    DiskFull,
    /// Another I/O error: redb refuses further work on the file until it
    /// is opened again.
    Io,
    Other,
}

impl StorageError {
    pub fn new(message: impl Into<String>) -> Self {
        StorageError {
            message: message.into(),
            kind: StorageErrorKind::Other,
        }
    }

    pub fn disk_full(message: impl Into<String>) -> Self {
        StorageError {
            message: message.into(),
            kind: StorageErrorKind::DiskFull,
        }
    }

    /// An I/O failure, with what was being done.
    pub fn from_io(what: &str, e: &std::io::Error) -> Self {
        StorageError {
            message: format!("{what}: {e}"),
            kind: io_kind(e),
        }
    }

    pub fn is_disk_full(&self) -> bool {
        self.kind == StorageErrorKind::DiskFull
    }
}

fn io_kind(e: &std::io::Error) -> StorageErrorKind {
    let full = e.kind() == std::io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
    if full {
        StorageErrorKind::DiskFull
    } else {
        StorageErrorKind::Io
    }
}

impl From<redb::Error> for StorageError {
    fn from(e: redb::Error) -> Self {
        let kind = match &e {
            redb::Error::Io(io) => io_kind(io),
            redb::Error::PreviousIo => StorageErrorKind::Io,
            _ => StorageErrorKind::Other,
        };
        StorageError {
            message: e.to_string(),
            kind,
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError {
            kind: io_kind(&e),
            message: e.to_string(),
        }
    }
}

macro_rules! storage_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}
storage_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError
);

/// Why a batch was refused. Everything but `Storage` is the client's fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("series {labels}: sample at {t} is out of order (the series already has a sample at {last})")]
    OutOfOrder {
        labels: String,
        t: Timestamp,
        last: Timestamp,
    },
    #[error("series #{0} is no longer stored")]
    UnknownSeries(u64),
    #[error("series {labels}: duplicate sample for timestamp {t} with a different value")]
    DuplicateTimestamp { labels: String, t: Timestamp },
    #[error("series limit reached: the batch would create {new} new series, {existing} of at most {limit} exist")]
    TooManySeries {
        new: usize,
        existing: usize,
        limit: usize,
    },
    #[error("series {labels}: {count} labels, more than the limit of {limit}")]
    TooManyLabels {
        labels: String,
        count: usize,
        limit: usize,
    },
    #[error("series {labels}: label {name:?} is {len} bytes long, more than the limit of {limit}")]
    LabelTooLong {
        labels: String,
        name: String,
        len: usize,
        limit: usize,
    },
    #[error("series {labels}: {reason}")]
    InvalidLabels { labels: String, reason: String },
    #[error("series {labels}: no metric name")]
    NoMetricName { labels: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One series and its samples in the selected time range, ascending.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Arc<Labels>,
    pub samples: Vec<Sample>,
}

/// A series reduced to a value per step and a bit per step that has one.
pub type Grid = (Vec<f64>, Vec<u64>);

/// What [`Querier::select_reduce`] gives.
pub struct Reduced {
    pub series: Vec<(Arc<Labels>, Grid)>,
    /// Samples read.
    pub samples: usize,
}

/// The write side of mlmon's own producers that need no more than a batch
/// (the rule engine): samples out of order are dropped one by one, the
/// rest kept (`Appender::commit_lenient`); the record is synced lazily.
pub trait SampleWriter: Send + Sync {
    /// Appends `samples`; how many were kept and how many dropped.
    fn write_samples(
        &self,
        samples: Vec<(Labels, Timestamp, f64)>,
    ) -> Result<(usize, usize), AppendError>;
}

impl SampleWriter for Storage {
    fn write_samples(
        &self,
        samples: Vec<(Labels, Timestamp, f64)>,
    ) -> Result<(usize, usize), AppendError> {
        let mut app = self.appender().lazy_sync();
        for (labels, t, v) in samples {
            app.append(labels, t, v);
        }
        app.commit_lenient()
    }
}

/// What the rule engine needs of the store: reads and a batch write.
pub trait RuleStore: Querier + SampleWriter {}

impl<T: Querier + SampleWriter> RuleStore for T {}

/// The read side every consumer uses.
pub trait Querier: Send + Sync {
    /// Series matching all `matchers` with at least one sample in
    /// `[mint, maxt]`, sorted by labels.
    fn select(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Series>, StorageError>;
    /// [`Querier::select`], giving up (`None`) as soon as more than
    /// `max_samples` samples were read, so a query over its sample limit
    /// is refused before it holds them all in memory.
    fn select_within(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        max_samples: usize,
    ) -> Result<Option<Vec<Series>>, StorageError> {
        let all = self.select(matchers, mint, maxt)?;
        let n: usize = all.iter().map(|s| s.samples.len()).sum();
        Ok((n <= max_samples).then_some(all))
    }
    /// Reduces every series [`Querier::select_within`] would return with
    /// `f` as soon as it is read (from several threads when there are
    /// many), so their samples are never all held at once. Returns the
    /// labels and what `f` gave, sorted by labels (series it gave `None`
    /// for are left out), and how many samples were read; `None` past
    /// `max_samples`.
    fn select_reduce(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        max_samples: usize,
        f: &(dyn Fn(&[Sample]) -> Option<Grid> + Sync),
    ) -> Result<Option<Reduced>, StorageError> {
        let Some(all) = self.select_within(matchers, mint, maxt, max_samples)? else {
            return Ok(None);
        };
        let samples = all.iter().map(|s| s.samples.len()).sum();
        let series = all
            .into_iter()
            .filter_map(|s| Some((s.labels, f(&s.samples)?)))
            .collect();
        Ok(Some(Reduced { series, samples }))
    }
    /// Label sets of series matching any selector that have data in
    /// `[mint, maxt]`.
    fn series(
        &self,
        selectors: &[Vec<Matcher>],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Arc<Labels>>, StorageError>;
    /// Label names, of all series or of those matching any selector.
    fn label_names(&self, selectors: &[Vec<Matcher>]) -> Vec<String>;
    /// Values of one label, of all series or of those matching any selector.
    fn label_values(&self, name: &str, selectors: &[Vec<Matcher>]) -> Vec<String>;
}

/// Figures for `/metrics` and the status page.
#[derive(Debug, Clone, Default)]
pub struct StorageStats {
    pub series: usize,
    pub head_samples: usize,
    /// Bytes of the series files.
    pub series_bytes: u64,
    pub wal_bytes: u64,
    /// Closed chunks in parts, and the parts' bytes on disk.
    pub chunks: u64,
    pub chunk_bytes: u64,
    pub parts: usize,
    pub file_bytes: u64,
    pub samples_appended_total: u64,
    pub batches_rejected_total: u64,
    pub checkpoints_total: u64,
    pub compactions_total: u64,
    pub retention_chunks_deleted_total: u64,
    pub retention_series_deleted_total: u64,
}

impl StorageStats {
    /// Every file of the data directory: the data file, parts, series
    /// files and the log (snapshots excluded).
    pub fn disk_bytes(&self) -> u64 {
        self.file_bytes + self.chunk_bytes + self.series_bytes + self.wal_bytes
    }
}
