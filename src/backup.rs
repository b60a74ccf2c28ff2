//! `mlmon backup` and `mlmon restore`: a consistent copy of a running
//! mlmon's data directory, made by its admin API
//! (`POST /api/v1/admin/tsdb/snapshot`, which writes it under the data
//! directory's `snapshots/`) and moved to where it is wanted; and a copy
//! put back as a data directory, checked by opening it.

use std::path::Path;
use std::time::Duration;

use crate::http::ClientConfig;

/// Asks the mlmon at `url` for a snapshot and moves it to `dest` (a new
/// path on the same machine as that mlmon). What it holds, for the user.
pub fn backup(url: &str, http: &ClientConfig, dest: &Path) -> Result<String, String> {
    if dest.exists() {
        return Err(format!(
            "{} already exists; give a new path",
            dest.display()
        ));
    }
    let endpoint = format!("{}/api/v1/admin/tsdb/snapshot", url.trim_end_matches('/'));
    let answer = crate::http::post_blocking(http, &endpoint, "", Duration::from_secs(600))
        .map_err(|e| format!("{endpoint}: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| format!("{endpoint}: not JSON: {e}"))?;
    let data = &v["data"];
    let path = data["path"]
        .as_str()
        .ok_or_else(|| format!("{endpoint}: the answer names no snapshot"))?;
    let from = Path::new(path);
    if !from.exists() {
        return Err(format!(
            "the snapshot was written at {path} on the machine mlmon runs on; run `mlmon backup` there (or copy that directory)"
        ));
    }
    if std::fs::rename(from, dest).is_err() {
        // Another filesystem: copy, then remove the snapshot.
        copy_tree(from, dest)
            .map_err(|e| format!("cannot copy {path} to {}: {e}", dest.display()))?;
        std::fs::remove_dir_all(from).map_err(|e| format!("cannot remove {path}: {e}"))?;
    }
    Ok(format!(
        "{}: {} rows of state, {} parts, {} series files, {} log segments, {} bytes",
        dest.display(),
        data["rows"],
        data["parts"],
        data["series_files"],
        data["log_segments"],
        data["bytes"]
    ))
}

/// Copies the backup `src` into `data_dir` (new or empty) and opens it
/// there once (the log is replayed and checked). Must not run while an
/// mlmon uses `data_dir`.
pub fn restore(src: &Path, data_dir: &Path) -> Result<String, String> {
    if !src.join("mlmon.redb").is_file() {
        return Err(format!(
            "{} is not an mlmon backup (no mlmon.redb in it)",
            src.display()
        ));
    }
    let empty = std::fs::read_dir(data_dir).map_or(true, |mut d| d.next().is_none());
    if !empty {
        return Err(format!(
            "{} is not empty; restore into a new or empty directory",
            data_dir.display()
        ));
    }
    copy_tree(src, data_dir).map_err(|e| {
        format!(
            "cannot copy {} to {}: {e}",
            src.display(),
            data_dir.display()
        )
    })?;
    let storage = crate::tsdb::Storage::open(crate::tsdb::StorageOptions::new(data_dir))
        .map_err(|e| format!("the restored copy does not open: {e}"))?;
    let series = storage.stats().series;
    storage
        .close()
        .map_err(|e| format!("the restored copy does not close: {e}"))?;
    Ok(format!("{}: {series} series", data_dir.display()))
}

/// Copies the directory tree `from` into `to` (created), syncing files.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            std::fs::File::open(&target)?.sync_all()?;
        }
    }
    std::fs::File::open(to)?.sync_all()
}
