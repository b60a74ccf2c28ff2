//! Prometheus rule files. This version loads and validates them the way
//! `promtool check rules` does ([`check_files`], used by `mlmon check`);
//! evaluation arrives with the rule engine.

mod file;
pub mod template;

pub use file::{check_files, load_file, CheckReport, Rule, RuleFile, RuleGroup};
