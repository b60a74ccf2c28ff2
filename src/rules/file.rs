//! The rule file format, parsed with serde (unknown keys are errors) and
//! validated like `promtool check rules`: every error names the file, the
//! line, the group and the rule, and PromQL errors carry the parser's
//! position.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use crate::model::{
    is_valid_label_name, is_valid_metric_name, ConfigError, ConfigErrors, PromDuration, YamlLines,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub name: String,
    pub interval: Option<PromDuration>,
    /// At most this many series or alerts per rule; 0 or less: no limit.
    #[serde(default)]
    pub limit: i64,
    pub query_offset: Option<PromDuration>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub alert: Option<String>,
    pub record: Option<String>,
    pub expr: String,
    #[serde(rename = "for")]
    pub for_: Option<PromDuration>,
    pub keep_firing_for: Option<PromDuration>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// What `mlmon check` found in the rule files.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub files: usize,
    pub rules: usize,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

/// Reads and validates one file; errors are `file:line: message`.
pub fn load_file(path: &Path) -> Result<RuleFile, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors::unreadable(&name, &e))?;
    parse_file(&text, &name)
}

/// Parses and validates the text of a rule file called `name`.
pub fn parse_file(text: &str, name: &str) -> Result<RuleFile, ConfigErrors> {
    let file: RuleFile = crate::model::parse_yaml(text)
        .map_err(|e| ConfigErrors(vec![ConfigError::new(name, e.line, e.message)]))?;
    let errors = validate(&file, text, name);
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn validate(file: &RuleFile, text: &str, name: &str) -> Vec<ConfigError> {
    let lines = YamlLines::new(text, 0);
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for (gi, g) in file.groups.iter().enumerate() {
        let gline = lines.line(&format!("groups[{gi}].name"));
        let mut err = |line: Option<usize>, m: String| {
            errors.push(ConfigError::new(
                name,
                line,
                format!("group {:?}: {m}", g.name),
            ))
        };
        if g.name.is_empty() {
            err(gline, "group name must not be empty".into());
        }
        if !seen.insert(g.name.clone()) {
            err(gline, "repeated group name".into());
        }
        if g.interval.is_some_and(|d| d.millis() < 0) {
            err(gline, "interval must not be negative".into());
        }
        for (i, r) in g.rules.iter().enumerate() {
            let (kind, rname) = match (&r.alert, &r.record) {
                (Some(a), None) => ("alert", a.as_str()),
                (None, Some(rec)) => ("record", rec.as_str()),
                (Some(_), Some(_)) => {
                    err(
                        gline,
                        format!(
                            "rule {}: only one of 'record' and 'alert' may be set",
                            i + 1
                        ),
                    );
                    continue;
                }
                (None, None) => {
                    err(
                        gline,
                        format!("rule {}: one of 'record' or 'alert' must be set", i + 1),
                    );
                    continue;
                }
            };
            let line = lines.line(&format!("groups[{gi}].rules[{i}].{kind}"));
            let what = format!("rule {} ({kind} {rname:?})", i + 1);
            if r.expr.trim().is_empty() {
                err(line, format!("{what}: field 'expr' must be set"));
            } else if let Err(e) = crate::promql::parse(&r.expr) {
                err(line, format!("{what}: could not parse expression: {e}"));
            }
            if kind == "record" {
                if !is_valid_metric_name(rname) {
                    err(line, format!("{what}: invalid recording rule name"));
                }
                if !r.annotations.is_empty() {
                    err(
                        line,
                        format!("{what}: invalid field 'annotations' in recording rule"),
                    );
                }
                if r.for_.is_some() {
                    err(
                        line,
                        format!("{what}: invalid field 'for' in recording rule"),
                    );
                }
                if r.keep_firing_for.is_some() {
                    err(
                        line,
                        format!("{what}: invalid field 'keep_firing_for' in recording rule"),
                    );
                }
            } else if rname.is_empty() {
                err(line, format!("{what}: alert name must not be empty"));
            }
            for l in r.labels.keys().chain(r.annotations.keys()) {
                if !is_valid_label_name(l) || l == "__name__" {
                    err(line, format!("{what}: invalid label name {l:?}"));
                }
            }
            if kind == "alert" {
                let tname = format!("__alert_{rname}");
                for (kind, map) in [("label", &r.labels), ("annotation", &r.annotations)] {
                    for (k, text) in map {
                        if let Err(e) = super::template::check(&tname, text) {
                            err(line, format!("{what}: {kind} {k:?}: {e}"));
                        }
                    }
                }
            }
        }
    }
    errors
}

/// Expands globs and validates every file they name.
pub fn check_files(patterns: &[String]) -> CheckReport {
    let mut report = CheckReport::default();
    for pattern in patterns {
        let paths = match glob::glob(pattern) {
            Ok(p) => p,
            Err(e) => {
                report
                    .errors
                    .push(format!("rule_files: invalid pattern {pattern:?}: {e}"));
                continue;
            }
        };
        let mut matched = 0;
        for path in paths.flatten() {
            matched += 1;
            report.files += 1;
            match load_file(&path) {
                Ok(f) => report.rules += f.groups.iter().map(|g| g.rules.len()).sum::<usize>(),
                Err(errs) => report.errors.extend(errs.0.iter().map(ToString::to_string)),
            }
        }
        if matched == 0 {
            report.notes.push(format!(
                "note: rule_files pattern {pattern:?} matches no file"
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<RuleFile, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.yml");
        std::fs::write(&p, text).unwrap();
        load_file(&p).map_err(|e| {
            e.0.iter()
                .map(|s| s.to_string().replace(&p.display().to_string(), "r.yml"))
                .collect()
        })
    }

    #[test]
    fn valid_alert_file_loads() {
        let f = check("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 5m\n    labels: {severity: critical}\n").unwrap();
        assert_eq!(f.groups[0].rules[0].for_.unwrap().millis(), 300_000);
    }

    #[test]
    fn errors_name_file_line_group_and_rule() {
        let e = check("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up ==\n").unwrap_err();
        assert!(
            e[0].starts_with(
                "r.yml:4: group \"g\": rule 1 (alert \"A\"): could not parse expression: \
                 1:6: parse error: unexpected end of input"
            ),
            "{e:?}"
        );
        let e = check("groups:\n- name: g\n  rules: []\n- name: g\n  rules: []\n").unwrap_err();
        assert!(e[0].contains("repeated group name"), "{e:?}");
        let e = check(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    labels: {bad-name: x}\n",
        )
        .unwrap_err();
        assert!(e[0].contains("invalid label name"), "{e:?}");
        let e = check("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    fo: 5m\n")
            .unwrap_err();
        assert!(
            e[0].starts_with("r.yml:6:") && e[0].contains("unknown field `fo`"),
            "{e:?}"
        );
    }

    #[test]
    fn an_error_names_the_line_of_its_own_rule_not_a_namesake() {
        let e = check(
            "groups:\n- name: a\n  rules:\n  - alert: A\n    expr: up\n- name: b\n  rules:\n  - alert: A\n    expr: up ==\n",
        )
        .unwrap_err();
        assert!(e[0].starts_with("r.yml:8: group \"b\": rule 1"), "{e:?}");
    }
}
