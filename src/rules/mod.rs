//! Prometheus rule files: loaded and validated the way `promtool check
//! rules` does ([`check_files`], used by `mlmon check`), evaluated by
//! [`engine`] with alert templates from [`template`].

pub mod engine;
mod file;
pub mod template;
pub mod unittest;

use std::future::Future;
use std::pin::Pin;

use crate::model::{PostableAlert, Timestamp};

/// Where the alerts a group sends leave the rule engine (`app` connects
/// it to the notifier and to `alerting.alertmanagers`); the engine knows
/// neither.
pub trait AlertSink: Send + Sync {
    /// Takes the alerts due at `now`; the error says which destination
    /// failed and why.
    fn send<'a>(
        &'a self,
        alerts: Vec<PostableAlert>,
        now: Timestamp,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

pub use file::{check_files, load_file, parse_file, CheckReport, Rule, RuleFile, RuleGroup};
