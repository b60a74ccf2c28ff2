//! Alert label and annotation templates: Go template syntax ([`crate::gotmpl`])
//! with Prometheus' data — `$labels`, `$value`, `$externalLabels`.

use std::collections::{BTreeMap, HashMap};

use gtmpl::{Context, Value};

#[cfg(test)]
use crate::gotmpl::go_g;

/// What a template sees.
pub struct TemplateData<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub value: f64,
    pub external_labels: &'a BTreeMap<String, String>,
}

/// Prometheus binds these before every alert template.
const PREAMBLE: &str =
    "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}";

/// Expands `text`; the error names what went wrong (it becomes the rule's
/// health and the annotation, as in Prometheus).
pub fn expand(name: &str, text: &str, data: &TemplateData) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    let t = crate::gotmpl::parse(name, PREAMBLE, text)?;
    let map = |m: &BTreeMap<String, String>| -> Value {
        Value::Map(
            m.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<HashMap<_, _>>(),
        )
    };
    let mut ctx: HashMap<String, Value> = HashMap::new();
    ctx.insert("Labels".into(), map(data.labels));
    ctx.insert("ExternalLabels".into(), map(data.external_labels));
    ctx.insert("Value".into(), Value::from(data.value));
    t.render(&Context::from(Value::Object(ctx)))
        .map_err(|e| format!("error executing template {name}: {e}"))
}

/// Checks that `text` parses as a template (with Prometheus' functions),
/// as `promtool check rules` does.
pub fn check(name: &str, text: &str) -> Result<(), String> {
    crate::gotmpl::parse(name, PREAMBLE, text).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, value: f64) -> String {
        let labels: BTreeMap<String, String> =
            [("instance".to_string(), "host-1:9100".to_string())].into();
        let ext = BTreeMap::new();
        expand(
            "t",
            text,
            &TemplateData {
                labels: &labels,
                value,
                external_labels: &ext,
            },
        )
        .unwrap()
    }

    #[test]
    fn prometheus_template_data_and_functions() {
        assert_eq!(
            run("Model R² score is {{ $value }}, below 0.8", 0.65),
            "Model R² score is 0.65, below 0.8"
        );
        assert_eq!(run("on {{ $labels.instance }}", 0.0), "on host-1:9100");
        assert_eq!(run("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(run("{{ $value | humanizePercentage }}", 0.9234), "92.34%");
        assert_eq!(run("{{ humanizeDuration $value }}", 3725.0), "1h 2m 5s");
        assert_eq!(run("{{ humanize1024 $value }}", 2048.0), "2ki");
        assert_eq!(run("{{ printf \"%.2f\" $value }}", 0.6549), "0.65");
        assert_eq!(run("{{ $labels.instance | toUpper }}", 0.0), "HOST-1:9100");
        assert_eq!(
            run("{{ reReplaceAll \":.*\" \"\" $labels.instance }}", 0.0),
            "host-1"
        );
        assert_eq!(go_g(1e21, None), "1e+21");
        let bad = expand(
            "t",
            "{{ nosuch }}",
            &TemplateData {
                labels: &BTreeMap::new(),
                value: 0.0,
                external_labels: &BTreeMap::new(),
            },
        );
        assert!(bad.is_err());
    }
}
