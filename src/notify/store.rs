//! The notifier's durable state: the `Store` trait it writes through
//! (`app` implements it on the data file's KV table) and its namespaces.

use super::*;

/// `(key, value)` rows of one namespace.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Durable rows by namespace: what the notifier needs from storage.
pub trait Store: Send + Sync {
    fn load(&self, namespace: &str) -> Result<Rows, String>;
    /// Puts (`Some`) and deletes (`None`), in one durable write.
    fn apply(&self, namespace: &str, changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), String>;
}

/// A [`Store`] that keeps nothing across restarts (tests, `mlmon check`).
#[derive(Default)]
#[allow(clippy::type_complexity)]
pub struct MemoryStore(std::sync::Mutex<BTreeMap<(String, Vec<u8>), Vec<u8>>>);

impl Store for MemoryStore {
    fn load(&self, namespace: &str) -> Result<Rows, String> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, namespace: &str, changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), String> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in changes {
            let key = (namespace.to_string(), k.clone());
            match v {
                Some(v) => m.insert(key, v.clone()),
                None => m.remove(&key),
            };
        }
        Ok(())
    }
}

pub(super) const NS_ALERTS: &str = "notify_alerts";

pub(super) const NS_SILENCES: &str = "notify_silences";

pub(super) const NS_NFLOG: &str = "notify_log";

pub(super) const NS_HISTORY: &str = "notify_history";

impl Notifier {
    pub(super) fn write(&mut self, namespace: &str, changes: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.store.apply(namespace, &changes) {
            self.store_errors
                .push(format!("cannot store {namespace}: {e}"));
        }
    }

    pub(super) fn save_alerts(&mut self, fps: &[u64]) {
        let changes = fps
            .iter()
            .map(|fp| {
                let v = self
                    .alerts
                    .get(fp)
                    .map(|a| serde_json::to_vec(a).unwrap_or_default());
                (fp.to_be_bytes().to_vec(), v)
            })
            .collect();
        self.write(NS_ALERTS, changes);
    }
}
