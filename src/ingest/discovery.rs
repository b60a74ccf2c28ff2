//! File-based service discovery (`file_sd_configs`), as Prometheus reads
//! it: JSON or YAML files (by extension) holding a list of target groups
//! `{targets: [host:port…], labels: {…}}`, found by paths or globs, each
//! target labelled `__meta_filepath`. [`FileSd::poll`] looks at the files'
//! sizes and modification times every second and reads them again when
//! one changed (or `refresh_interval` passed), so a pipeline that writes a
//! file is scraped without a reload. A file that cannot be read or parsed
//! keeps the targets it had, and says why.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use serde::Deserialize;

use crate::config::{FileSdConfig, StaticTarget};
use crate::model::is_valid_label_name;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A file's size and modification time.
type Stamp = (u64, SystemTime);

/// The files of one job's `file_sd_configs` and what they held.
pub struct FileSd {
    configs: Vec<FileSdConfig>,
    /// Per file: what it looked like when read, and its targets.
    files: BTreeMap<PathBuf, (Option<Stamp>, Vec<StaticTarget>)>,
    last_read: Option<Instant>,
    /// Why files could not be used, by file.
    pub errors: BTreeMap<PathBuf, String>,
}

impl FileSd {
    pub fn new(configs: Vec<FileSdConfig>) -> FileSd {
        FileSd {
            configs,
            files: BTreeMap::new(),
            last_read: None,
            errors: BTreeMap::new(),
        }
    }

    /// The files the globs match now.
    fn matched(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .configs
            .iter()
            .flat_map(|c| c.files.iter())
            .flat_map(|pattern| glob::glob(pattern).into_iter().flatten().flatten())
            .filter(|p| p.is_file())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Reads the files again if one appeared, went or changed, or the
    /// shortest `refresh_interval` passed; true when the targets changed.
    /// Blocking (reads files).
    pub fn poll(&mut self) -> bool {
        let refresh = self
            .configs
            .iter()
            .map(|c| c.refresh_interval.std())
            .min()
            .unwrap_or_default();
        let matched = self.matched();
        let stamp = |p: &PathBuf| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
        };
        let due = self.last_read.is_none_or(|t| t.elapsed() >= refresh);
        let changed = matched.len() != self.files.len()
            || matched
                .iter()
                .any(|p| self.files.get(p).is_none_or(|(s, _)| *s != stamp(p)));
        if !due && !changed {
            return false;
        }
        self.last_read = Some(Instant::now());
        let before = self.targets();
        let mut files = BTreeMap::new();
        for p in matched {
            let s = stamp(&p);
            match read(&p) {
                Ok(targets) => {
                    self.errors.remove(&p);
                    files.insert(p, (s, targets));
                }
                Err(e) => {
                    // Keep what the file held before.
                    let kept = self
                        .files
                        .get(&p)
                        .map(|(_, t)| t.clone())
                        .unwrap_or_default();
                    self.errors.insert(p.clone(), e);
                    files.insert(p, (s, kept));
                }
            }
        }
        self.errors.retain(|p, _| files.contains_key(p));
        self.files = files;
        self.targets() != before
    }

    /// Every target the files hold, in file order.
    pub fn targets(&self) -> Vec<StaticTarget> {
        self.files.values().flat_map(|(_, t)| t.clone()).collect()
    }
}

/// One file's targets, each labelled `__meta_filepath`.
fn read(path: &std::path::Path) -> Result<Vec<StaticTarget>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let groups: Vec<RawGroup> = if json {
        serde_json::from_str(&text).map_err(|e| e.to_string())?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        crate::model::parse_yaml(&text)
            .map_err(|e| format!("line {}: {}", e.line.unwrap_or(0), e.message))?
    };
    let file = path.display().to_string();
    let mut out = Vec::new();
    for (i, g) in groups.into_iter().enumerate() {
        if let Some(bad) = g.labels.keys().find(|n| !is_valid_label_name(n)) {
            return Err(format!(
                "group {}: {bad:?} is not a valid label name",
                i + 1
            ));
        }
        for t in g.targets {
            if t.is_empty() || t.contains('/') || t.contains(' ') {
                return Err(format!(
                    "group {}: target {t:?} is not a valid host:port",
                    i + 1
                ));
            }
            let mut labels = g.labels.clone();
            labels.insert("__meta_filepath".into(), file.clone());
            out.push(StaticTarget { address: t, labels });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PromDuration;

    #[test]
    fn reads_json_and_yaml_and_keeps_a_broken_files_targets() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("a.json"),
            r#"[{"targets": ["h1:9100", "h2:9100"], "labels": {"env": "prod"}}]"#,
        )
        .unwrap();
        std::fs::write(d.join("b.yml"), "- targets: ['h3:80']\n").unwrap();
        let mut sd = FileSd::new(vec![FileSdConfig {
            files: vec![
                format!("{}/*.json", d.display()),
                format!("{}/b.yml", d.display()),
            ],
            refresh_interval: PromDuration(300_000),
        }]);
        assert!(sd.poll());
        let t = sd.targets();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].labels["env"], "prod");
        assert!(t[0].labels["__meta_filepath"].ends_with("a.json"));
        assert!(!sd.poll(), "nothing changed");
        std::fs::write(d.join("a.json"), "[{").unwrap();
        assert!(!sd.poll(), "a broken file keeps its targets");
        assert_eq!(sd.targets().len(), 3);
        assert_eq!(sd.errors.len(), 1);
        std::fs::remove_file(d.join("a.json")).unwrap();
        assert!(sd.poll());
        assert_eq!(sd.targets().len(), 1);
        assert!(sd.errors.is_empty());
    }
}
