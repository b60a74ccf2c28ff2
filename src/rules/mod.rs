//! Prometheus rule files: loaded and validated the way `promtool check
//! rules` does ([`check_files`], used by `mlmon check`), evaluated by
//! [`engine`] with alert templates from [`template`].

pub mod alertmanager;
pub mod engine;
mod file;
pub mod template;
pub mod unittest;

pub use file::{check_files, load_file, parse_file, CheckReport, Rule, RuleFile, RuleGroup};
