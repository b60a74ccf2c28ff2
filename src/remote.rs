//! Remote write out: everything the store takes (remote write in, pushes,
//! scrapes, collectors, recording rules, `ALERTS`) is forwarded to each
//! `remote_write` endpoint with Prometheus remote write 1.0.
//!
//! Each endpoint reads the store's write-ahead log behind the committer
//! (`Storage::read_log`) from its own position, which the store keeps in
//! the data file and moves only once the receiver acknowledged what came
//! before it; the log's segments stay until every endpoint is past them,
//! up to the endpoint's disk budget (`queue_config.max_disk_bytes`), past
//! which the oldest unsent data is dropped and counted. So a restart, a
//! kill -9 or an outage shorter than the budget loses nothing: the
//! endpoint goes on from its position (a batch sent but not yet recorded
//! as sent is sent again; receivers take a repeated sample).
//!
//! A batch read from the log goes out on several shards at once, each
//! series on one shard, and the next batch only once every shard is done:
//! every series' samples stay in order (receivers refuse out-of-order
//! samples). Network errors and 5xx are retried with
//! backoff (`min_backoff` doubling to `max_backoff`), 429 too when
//! `retry_on_http_429` is set (honouring `Retry-After`); other answers
//! drop the batch and count it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::RemoteWriteConfig;
use crate::model::{relabel, Labels, RelabelRule, Sample, Timestamp};
use crate::tsdb::{Cursor, Storage, StorageError};

/// How often an endpoint's position is written when it moves.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// How long an endpoint waits for new records when it has read them all.
const POLL: Duration = Duration::from_millis(250);

/// One endpoint and its counters.
pub struct Endpoint {
    pub config: RemoteWriteConfig,
    pub sent: AtomicU64,
    /// Dropped by the receiver's refusal (4xx, or 429 without retries).
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    /// Dropped for `sample_age_limit`, or because their series was gone.
    pub dropped: AtomicU64,
    /// The newest sample timestamp acknowledged (ms).
    pub highest_sent_ms: AtomicU64,
    pub last_error: Mutex<String>,
}

impl Endpoint {
    /// Takes over the counters of `old`, the same endpoint before a reload
    /// changed its settings (its position in the log is durable anyway).
    pub fn adopt(&self, old: &Endpoint) {
        for (to, from) in [
            (&self.sent, &old.sent),
            (&self.failed, &old.failed),
            (&self.retried, &old.retried),
            (&self.dropped, &old.dropped),
            (&self.highest_sent_ms, &old.highest_sent_ms),
        ] {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    pub fn new(config: RemoteWriteConfig) -> Endpoint {
        Endpoint {
            config,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            highest_sent_ms: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
        }
    }

    fn error(&self, e: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
    }
}

/// How one send ended.
enum Sent {
    Ok,
    /// Worth trying again (after this long, if the receiver said).
    Retry(String, Option<Duration>),
    /// Refused: the batch is dropped.
    Refused(String),
}

/// Forwards the log to `ep` until `stop`.
pub async fn run(
    storage: Arc<Storage>,
    ep: Arc<Endpoint>,
    external_labels: Labels,
    mut stop: watch::Receiver<bool>,
) {
    let name = ep.config.name.clone();
    let budget = ep.config.queue.max_disk_bytes;
    let registered = {
        let (s, n) = (storage.clone(), name.clone());
        tokio::task::spawn_blocking(move || s.hold_log(&n, budget)).await
    };
    let mut acked = match registered {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::error!(message = "Remote write cannot start", remote_name = %name, error = %e);
            return;
        }
        Err(_) => return,
    };
    let mut reader = Reader::default();
    let mut written = acked;
    let mut last_write = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        let read = {
            let (s, e, x) = (storage.clone(), ep.clone(), external_labels.clone());
            let q = &ep.config.queue;
            let max = q.capacity.max(q.max_samples_per_send) * SHARDS;
            let mut r = std::mem::take(&mut reader);
            tokio::task::spawn_blocking(move || {
                let b = r.read(&s, &e, &x, acked, max);
                (r, b)
            })
            .await
        };
        let batch = match read {
            Ok((r, Ok(b))) => {
                reader = r;
                b
            }
            Ok((r, Err(e))) => {
                reader = r;
                ep.error(&e.to_string());
                tracing::warn!(message = "Remote write cannot read the log", remote_name = %name, error = %e);
                if sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        if batch.last_seq == 0 {
            if written != acked && last_write.elapsed() >= PERSIST_EVERY {
                written = persist(&storage, &name, acked).await.unwrap_or(written);
                last_write = Instant::now();
            }
            if sleep_or_stop(POLL, &mut stop).await {
                break;
            }
            continue;
        }
        ep.dropped.fetch_add(batch.dropped, Ordering::Relaxed);
        if !send_sharded(&ep, batch.series, &stop).await {
            break;
        }
        acked = batch.last_seq;
        if last_write.elapsed() >= PERSIST_EVERY {
            written = persist(&storage, &name, acked).await.unwrap_or(written);
            last_write = Instant::now();
        }
    }
    if written != acked {
        let _ = persist(&storage, &name, acked).await;
    }
}

/// Writes the endpoint's position; the position written, if it was.
async fn persist(storage: &Arc<Storage>, name: &str, acked: u64) -> Option<u64> {
    let (s, n) = (storage.clone(), name.to_string());
    match tokio::task::spawn_blocking(move || s.log_acked(&n, acked)).await {
        Ok(Ok(())) => Some(acked),
        Ok(Err(e)) => {
            tracing::warn!(message = "Remote write position not stored", remote_name = %name, error = %e);
            None
        }
        Err(_) => None,
    }
}

/// `true` if `stop` came first.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// One series' labels as the receiver gets them, encoded for the request.
type Encoded = Arc<[u8]>;

/// Series remembered before their encoded labels are forgotten and worked
/// out again (series churn would grow the memory without a bound).
const MAX_REMEMBERED: usize = 1 << 20;

/// An endpoint's reading side: its place in the log and, per series (by
/// the store's id, stable while the process runs), the labels the
/// receiver gets, worked out once (`None`: relabelling drops the series).
#[derive(Default)]
struct Reader {
    cursor: Cursor,
    labels: HashMap<u64, Option<Encoded>, foldhash::fast::RandomState>,
}

/// A batch ready to send.
struct Batch {
    /// Per series: its id, outgoing labels and samples.
    series: Vec<(u64, Encoded, Vec<Sample>)>,
    /// The last log record in the batch (0: none).
    last_seq: u64,
    /// Samples left out: older than `sample_age_limit`, or of a series
    /// deleted before it was read.
    dropped: u64,
}

impl Reader {
    /// The records after `after`, about `max` samples, as `ep` sends them.
    fn read(
        &mut self,
        storage: &Storage,
        ep: &Endpoint,
        external: &Labels,
        after: u64,
        max: usize,
    ) -> Result<Batch, StorageError> {
        let log = storage.read_log(&ep.config.name, &mut self.cursor, after, max)?;
        if self.labels.len() > MAX_REMEMBERED {
            self.labels = HashMap::default();
        }
        let unknown: Vec<u64> = log
            .series
            .iter()
            .filter(|s| s.labels.is_none() && !self.labels.contains_key(&s.id))
            .map(|s| s.id)
            .collect();
        let mut found: HashMap<u64, Arc<Labels>> = unknown
            .iter()
            .zip(storage.series_labels(&unknown))
            .filter_map(|(id, l)| Some((*id, l?)))
            .collect();
        let limit = ep.config.queue.sample_age_limit.millis();
        let oldest = (limit > 0).then(|| crate::model::now_ms() - limit);
        let mut out = Batch {
            series: Vec::with_capacity(log.series.len()),
            last_seq: log.last_seq,
            dropped: 0,
        };
        for s in log.series {
            let mut samples = s.samples;
            if let Some(o) = oldest {
                let before = samples.len();
                samples.retain(|s| s.t >= o);
                out.dropped += (before - samples.len()) as u64;
                if samples.is_empty() {
                    continue;
                }
            }
            let encoded = match self.labels.get(&s.id) {
                Some(e) => e.clone(),
                None => {
                    let Some(labels) = s.labels.or_else(|| found.remove(&s.id)) else {
                        out.dropped += samples.len() as u64;
                        continue;
                    };
                    let e = outgoing(&labels, external, &ep.config.relabel)
                        .map(|l| Encoded::from(crate::ingest::remote_write::encode_labels(&l)));
                    self.labels.insert(s.id, e.clone());
                    e
                }
            };
            if let Some(e) = encoded {
                out.series.push((s.id, e, samples));
            }
        }
        Ok(out)
    }
}

/// A series' labels as the receiver gets them: external labels added
/// where it has no label of that name, then `write_relabel_configs`.
fn outgoing(labels: &Labels, external: &Labels, rules: &[RelabelRule]) -> Option<Labels> {
    let mut l = labels.clone();
    for (n, v) in external.iter() {
        if l.get(n).is_none() {
            l = l.with(n, v);
        }
    }
    relabel(&l, rules)
}

/// How many requests an endpoint has in flight at once: `min_shards` to
/// `max_shards`, at most this many.
const SHARDS: usize = 4;

/// Sends a batch on several shards at once, each series on one shard (so
/// its samples stay in order); the batch is done when every shard is.
async fn send_sharded(
    ep: &Arc<Endpoint>,
    series: Vec<(u64, Encoded, Vec<Sample>)>,
    stop: &watch::Receiver<bool>,
) -> bool {
    let q = &ep.config.queue;
    let shards = SHARDS.clamp(q.min_shards.max(1), q.max_shards.max(1));
    let mut parts: Vec<Vec<(Encoded, Vec<Sample>)>> = vec![Vec::new(); shards];
    for (id, labels, samples) in series {
        parts[(id % shards as u64) as usize].push((labels, samples));
    }
    let mut set = tokio::task::JoinSet::new();
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        let (ep, mut stop) = (ep.clone(), stop.clone());
        set.spawn(async move { send_all(&ep, part, &mut stop).await });
    }
    let mut all = true;
    while let Some(done) = set.join_next().await {
        all &= done.unwrap_or(false);
    }
    all
}

/// One request being built: the protobuf written so far, its samples and
/// newest timestamp.
#[derive(Default)]
struct Request {
    raw: Vec<u8>,
    samples: u64,
    newest: Timestamp,
}

/// Sends `series` in requests of at most `max_samples_per_send` samples,
/// each retried until it is acknowledged or refused; `false` if `stop`
/// came first.
async fn send_all(
    ep: &Endpoint,
    series: Vec<(Encoded, Vec<Sample>)>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let max = ep.config.queue.max_samples_per_send;
    // Each request starts with room for one as large as the last.
    let mut room = 0;
    let mut request = Request::default();
    for (labels, samples) in &series {
        for part in samples.chunks(max) {
            if request.samples as usize + part.len() > max && request.samples > 0 {
                room = room.max(request.raw.len());
                let full = std::mem::replace(
                    &mut request,
                    Request {
                        raw: Vec::with_capacity(room),
                        ..Request::default()
                    },
                );
                if !send(ep, full, stop).await {
                    return false;
                }
            }
            crate::ingest::remote_write::put_series(&mut request.raw, labels, part);
            request.samples += part.len() as u64;
            request.newest = request.newest.max(part.last().map_or(0, |s| s.t));
        }
    }
    request.samples == 0 || send(ep, request, stop).await
}

/// Sends one request until it is acknowledged or refused; `false` if
/// `stop` came first.
async fn send(ep: &Endpoint, request: Request, stop: &mut watch::Receiver<bool>) -> bool {
    let q = &ep.config.queue;
    let body = bytes::Bytes::from(crate::ingest::remote_write::compress(&request.raw));
    drop(request.raw);
    let count = request.samples;
    let mut backoff = q.min_backoff.std();
    loop {
        if *stop.borrow() {
            return false;
        }
        match post(ep, body.clone()).await {
            Sent::Ok => {
                ep.sent.fetch_add(count, Ordering::Relaxed);
                ep.highest_sent_ms
                    .fetch_max(request.newest.max(0) as u64, Ordering::Relaxed);
                return true;
            }
            Sent::Refused(e) => {
                ep.failed.fetch_add(count, Ordering::Relaxed);
                ep.error(&e);
                tracing::warn!(message = "Remote write batch refused, dropped", remote_name = %ep.config.name, samples = count, error = %e);
                return true;
            }
            Sent::Retry(e, after) => {
                ep.retried.fetch_add(count, Ordering::Relaxed);
                ep.error(&e);
                tracing::debug!(message = "Remote write failed, retrying", remote_name = %ep.config.name, error = %e);
                let wait = after.unwrap_or(backoff);
                if sleep_or_stop(wait, stop).await {
                    return false;
                }
                backoff = (backoff * 2).min(q.max_backoff.std());
            }
        }
    }
}

async fn post(ep: &Endpoint, body: bytes::Bytes) -> Sent {
    let c = &ep.config;
    let timeout = c.timeout.std();
    let client = match crate::http::client(&c.http) {
        Ok(cl) => cl,
        Err(e) => return Sent::Retry(e, None),
    };
    let mut req = client
        .post(&c.url)
        .timeout(timeout)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    for (k, v) in &c.headers {
        req = req.header(k, v);
    }
    let req = match c.http.authorize(req.body(body)) {
        Ok(r) => r,
        Err(e) => return Sent::Retry(e, None),
    };
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Sent::Retry(crate::http::describe(&e, timeout), None),
    };
    let status = resp.status();
    if status.is_success() {
        return Sent::Ok;
    }
    let after = crate::http::retry_after(&resp);
    let text = resp.text().await.unwrap_or_default();
    let e = format!(
        "{} answered HTTP {}: {}",
        c.url,
        status.as_u16(),
        text.trim().chars().take(200).collect::<String>()
    );
    if status.is_server_error() || (status.as_u16() == 429 && c.queue.retry_on_http_429) {
        Sent::Retry(e, after)
    } else {
        Sent::Refused(e)
    }
}

/// One metric family of the endpoints: name, help, whether a counter, and
/// per endpoint `(remote_name, url, value)`.
pub type Family = (&'static str, &'static str, bool, Vec<(String, String, f64)>);

/// The endpoints' metrics for `/metrics`, labelled `remote_name` and `url`.
pub fn metrics(endpoints: &[Arc<Endpoint>], storage: &Storage) -> Vec<Family> {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let per = |f: &dyn Fn(&Endpoint) -> f64| -> Vec<(String, String, f64)> {
        endpoints
            .iter()
            .map(|e| (e.config.name.clone(), e.config.url.clone(), f(e)))
            .collect()
    };
    vec![
        (
            "mlmon_remote_write_samples_sent_total",
            "Samples the receiver acknowledged.",
            true,
            per(&|e| load(&e.sent)),
        ),
        (
            "mlmon_remote_write_samples_failed_total",
            "Samples in batches the receiver refused (4xx), dropped.",
            true,
            per(&|e| load(&e.failed)),
        ),
        (
            "mlmon_remote_write_samples_retried_total",
            "Samples in sends that failed and were tried again.",
            true,
            per(&|e| load(&e.retried)),
        ),
        (
            "mlmon_remote_write_samples_dropped_total",
            "Samples not sent: older than sample_age_limit, series gone, or past the disk budget.",
            true,
            per(&|e| load(&e.dropped) + storage.log_dropped(&e.config.name) as f64),
        ),
        (
            "mlmon_remote_write_backlog_bytes",
            "Log bytes kept for the endpoint (its backlog).",
            false,
            per(&|e| storage.log_backlog_bytes(&e.config.name) as f64),
        ),
        (
            "mlmon_remote_write_highest_sent_timestamp_seconds",
            "The newest sample timestamp the receiver acknowledged.",
            false,
            per(&|e| load(&e.highest_sent_ms) / 1000.0),
        ),
    ]
}

/// The newest timestamp acknowledged, for tests and the status page.
pub fn highest_sent(ep: &Endpoint) -> Timestamp {
    ep.highest_sent_ms.load(Ordering::Relaxed) as Timestamp
}
