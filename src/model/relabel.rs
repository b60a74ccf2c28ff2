//! Prometheus relabeling (`relabel_configs`, `metric_relabel_configs`):
//! each rule rewrites, keeps or drops a label set, in order.

use regex::Regex;

use super::labels::{is_valid_label_name, Labels, LabelsBuilder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelabelAction {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl RelabelAction {
    /// Prometheus' action names (case-insensitive, as Prometheus reads them).
    pub fn parse(s: &str) -> Result<RelabelAction, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "replace" => RelabelAction::Replace,
            "keep" => RelabelAction::Keep,
            "drop" => RelabelAction::Drop,
            "keepequal" => RelabelAction::KeepEqual,
            "dropequal" => RelabelAction::DropEqual,
            "labelmap" => RelabelAction::LabelMap,
            "labeldrop" => RelabelAction::LabelDrop,
            "labelkeep" => RelabelAction::LabelKeep,
            "lowercase" => RelabelAction::Lowercase,
            "uppercase" => RelabelAction::Uppercase,
            "hashmod" => return Err("action \"hashmod\" is not supported by mlmon".into()),
            other => return Err(format!("unknown relabel action {other:?}")),
        })
    }
}

/// One rule, with Prometheus' defaults already applied.
#[derive(Debug, Clone)]
pub struct RelabelRule {
    pub source_labels: Vec<String>,
    pub separator: String,
    /// Anchored at both ends, as Prometheus anchors it.
    pub regex: Regex,
    pub target_label: String,
    pub replacement: String,
    pub action: RelabelAction,
}

impl RelabelRule {
    /// Builds a rule and checks it as Prometheus does when loading a config.
    pub fn new(
        source_labels: Vec<String>,
        separator: Option<String>,
        regex: Option<&str>,
        target_label: Option<String>,
        replacement: Option<String>,
        action: RelabelAction,
    ) -> Result<RelabelRule, String> {
        let pattern = regex.unwrap_or("(.*)");
        let regex = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
        let target_label = target_label.unwrap_or_default();
        use RelabelAction::*;
        let needs_target = matches!(
            action,
            Replace | KeepEqual | DropEqual | Lowercase | Uppercase
        );
        if needs_target && target_label.is_empty() {
            return Err(format!(
                "relabel configuration for {action:?} action requires 'target_label' value"
            )
            .to_lowercase());
        }
        if matches!(action, LabelDrop | LabelKeep)
            && (!source_labels.is_empty() || !target_label.is_empty())
        {
            return Err("labeldrop and labelkeep take only a regex".into());
        }
        if matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual)
            && !is_valid_label_name(&target_label)
        {
            return Err(format!("{target_label:?} is not a valid label name"));
        }
        Ok(RelabelRule {
            source_labels,
            separator: separator.unwrap_or_else(|| ";".into()),
            regex,
            target_label,
            replacement: replacement.unwrap_or_else(|| "$1".into()),
            action,
        })
    }
}

/// Applies `rules` in order; `None` when a rule drops the label set.
/// Labels with empty values are removed, as Prometheus removes them.
pub fn relabel(labels: &Labels, rules: &[RelabelRule]) -> Option<Labels> {
    if rules.is_empty() {
        return Some(labels.clone());
    }
    let mut pairs: Vec<(String, String)> = labels
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let get = |pairs: &[(String, String)], name: &str| -> String {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let set = |pairs: &mut Vec<(String, String)>, name: &str, value: String| {
        pairs.retain(|(n, _)| n != name);
        if !value.is_empty() {
            pairs.push((name.to_string(), value));
        }
    };
    for r in rules {
        let value = r
            .source_labels
            .iter()
            .map(|n| get(&pairs, n))
            .collect::<Vec<_>>()
            .join(&r.separator);
        use RelabelAction::*;
        match r.action {
            Keep if !r.regex.is_match(&value) => return None,
            Drop if r.regex.is_match(&value) => return None,
            Keep | Drop => {}
            KeepEqual if get(&pairs, &r.target_label) != value => return None,
            DropEqual if get(&pairs, &r.target_label) == value => return None,
            KeepEqual | DropEqual => {}
            Replace => {
                let Some(caps) = r.regex.captures(&value) else {
                    continue;
                };
                let mut target = String::new();
                caps.expand(&r.target_label, &mut target);
                if !is_valid_label_name(&target) {
                    continue;
                }
                let mut out = String::new();
                caps.expand(&r.replacement, &mut out);
                set(&mut pairs, &target, out);
            }
            Lowercase => set(&mut pairs, &r.target_label, value.to_lowercase()),
            Uppercase => set(&mut pairs, &r.target_label, value.to_uppercase()),
            LabelMap => {
                let mapped: Vec<(String, String)> = pairs
                    .iter()
                    .filter(|(n, _)| r.regex.is_match(n))
                    .map(|(n, v)| {
                        (
                            r.regex.replace(n, r.replacement.as_str()).into_owned(),
                            v.clone(),
                        )
                    })
                    .collect();
                for (n, v) in mapped {
                    if is_valid_label_name(&n) {
                        set(&mut pairs, &n, v);
                    }
                }
            }
            LabelDrop => pairs.retain(|(n, _)| !r.regex.is_match(n)),
            LabelKeep => pairs.retain(|(n, _)| r.regex.is_match(n)),
        }
    }
    let mut b = LabelsBuilder::new();
    for (n, v) in pairs {
        b.push(n, v);
    }
    b.build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        action: &str,
        src: &[&str],
        regex: Option<&str>,
        target: Option<&str>,
        repl: Option<&str>,
    ) -> RelabelRule {
        RelabelRule::new(
            src.iter().map(|s| s.to_string()).collect(),
            None,
            regex,
            target.map(str::to_string),
            repl.map(str::to_string),
            RelabelAction::parse(action).unwrap(),
        )
        .unwrap()
    }

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn the_common_actions_behave_as_in_prometheus() {
        let x = l(&[
            ("__name__", "http_requests_total"),
            ("code", "500"),
            ("path", "/api/predict"),
        ]);
        // keep / drop on a joined value.
        assert!(relabel(&x, &[rule("keep", &["code"], Some("5.."), None, None)]).is_some());
        assert!(relabel(
            &x,
            &[rule("drop", &["__name__"], Some("http_.*"), None, None)]
        )
        .is_none());
        // replace with capture groups; an empty result removes the label.
        let r = relabel(
            &x,
            &[rule(
                "replace",
                &["path"],
                Some("/api/(.*)"),
                Some("route"),
                Some("${1}_route"),
            )],
        )
        .unwrap();
        assert_eq!(r.get("route"), Some("predict_route"));
        let r = relabel(&x, &[rule("replace", &[], None, Some("path"), Some(""))]).unwrap();
        assert_eq!(r.get("path"), None);
        // labeldrop / labelkeep / labelmap.
        let r = relabel(&x, &[rule("labeldrop", &[], Some("pa.*"), None, None)]).unwrap();
        assert_eq!(r.get("path"), None);
        let r = relabel(
            &x,
            &[rule("labelkeep", &[], Some("__name__|code"), None, None)],
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        let r = relabel(
            &x,
            &[rule(
                "labelmap",
                &[],
                Some("(c.*)"),
                None,
                Some("status_$1"),
            )],
        )
        .unwrap();
        assert_eq!(r.get("status_code"), Some("500"));
        assert_eq!(r.get("code"), Some("500"));
        let r = relabel(
            &x,
            &[rule("uppercase", &["path"], None, Some("upper"), None)],
        )
        .unwrap();
        assert_eq!(r.get("upper"), Some("/API/PREDICT"));
        assert!(RelabelAction::parse("hashmod").is_err());
        assert!(
            RelabelRule::new(vec![], None, Some("("), None, None, RelabelAction::Drop).is_err()
        );
    }
}
