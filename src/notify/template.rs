//! Notification templates: Go template syntax ([`crate::gotmpl`]) over
//! Alertmanager's data (`.Receiver`, `.Status`, `.Alerts` with `.Firing`
//! and `.Resolved`, `.GroupLabels`, `.CommonLabels`, `.CommonAnnotations`,
//! `.ExternalURL`; per alert `.Labels`, `.Annotations`, `.StartsAt`,
//! `.EndsAt`, `.GeneratorURL`, `.Fingerprint`), its functions and methods
//! (`.SortedPairs`, `.Names`, `.Values`, `.Remove`), the default templates
//! every integration falls back to, and the user's template files.

use std::collections::{BTreeMap, HashMap};

use gtmpl::{Context, FuncError, Template, Value};

use crate::gotmpl::arg_str;
use crate::model::Timestamp;

/// One alert as templates see it.
#[derive(Debug, Clone)]
pub struct AlertData {
    pub status: &'static str,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at_ms: Timestamp,
    /// `None`: not resolved and no end known (Go's zero time).
    pub ends_at_ms: Option<Timestamp>,
    pub generator_url: String,
    pub fingerprint: String,
}

/// What a notification's templates see.
#[derive(Debug, Clone)]
pub struct Data {
    pub receiver: String,
    pub status: &'static str,
    pub alerts: Vec<AlertData>,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    pub external_url: String,
}

impl Data {
    /// Alertmanager's data for `alerts` of one group.
    pub fn new(
        receiver: &str,
        group_labels: BTreeMap<String, String>,
        alerts: Vec<AlertData>,
        external_url: &str,
    ) -> Data {
        let common = |f: fn(&AlertData) -> &BTreeMap<String, String>| {
            let mut it = alerts.iter();
            let mut c = it.next().map(|a| f(a).clone()).unwrap_or_default();
            for a in it {
                c.retain(|k, v| f(a).get(k) == Some(v));
            }
            c
        };
        let common_labels = common(|a| &a.labels);
        let common_annotations = common(|a| &a.annotations);
        let status = if alerts.iter().any(|a| a.status == "firing") {
            "firing"
        } else {
            "resolved"
        };
        Data {
            receiver: receiver.to_string(),
            status,
            alerts,
            group_labels,
            common_labels,
            common_annotations,
            external_url: external_url.to_string(),
        }
    }

    /// The same data with `&`, `<` and `>` escaped in every label,
    /// annotation and URL, for templates whose output is HTML (Telegram's
    /// HTML mode, as Alertmanager's `html/template` escapes them).
    pub fn html_escaped(&self) -> Data {
        fn esc(s: &str) -> String {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        }
        let map = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter().map(|(k, v)| (esc(k), esc(v))).collect()
        };
        Data {
            receiver: esc(&self.receiver),
            status: self.status,
            alerts: self
                .alerts
                .iter()
                .map(|a| AlertData {
                    labels: map(&a.labels),
                    annotations: map(&a.annotations),
                    generator_url: esc(&a.generator_url),
                    ..a.clone()
                })
                .collect(),
            group_labels: map(&self.group_labels),
            common_labels: map(&self.common_labels),
            common_annotations: map(&self.common_annotations),
            external_url: esc(&self.external_url),
        }
    }

    fn to_value(&self) -> Value {
        let mut o = HashMap::new();
        o.insert("Receiver".into(), Value::from(self.receiver.clone()));
        o.insert("Status".into(), Value::from(self.status));
        o.insert(
            "Alerts".into(),
            Value::Array(self.alerts.iter().map(alert_value).collect()),
        );
        o.insert("GroupLabels".into(), kv(&self.group_labels));
        o.insert("CommonLabels".into(), kv(&self.common_labels));
        o.insert("CommonAnnotations".into(), kv(&self.common_annotations));
        o.insert("ExternalURL".into(), Value::from(self.external_url.clone()));
        Value::Object(o)
    }
}

fn kv(m: &BTreeMap<String, String>) -> Value {
    Value::Map(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect(),
    )
}

fn alert_value(a: &AlertData) -> Value {
    let mut o = HashMap::new();
    o.insert("Status".into(), Value::from(a.status));
    o.insert("Labels".into(), kv(&a.labels));
    o.insert("Annotations".into(), kv(&a.annotations));
    o.insert(
        "StartsAt".into(),
        Value::from(go_time(Some(a.starts_at_ms))),
    );
    o.insert("EndsAt".into(), Value::from(go_time(a.ends_at_ms)));
    o.insert("GeneratorURL".into(), Value::from(a.generator_url.clone()));
    o.insert("Fingerprint".into(), Value::from(a.fingerprint.clone()));
    Value::Object(o)
}

/// A time as Go prints a `time.Time` (`2026-11-27 04:46:18.123 +0000 UTC`).
fn go_time(ms: Option<Timestamp>) -> String {
    let Some(ms) = ms else {
        return "0001-01-01 00:00:00 +0000 UTC".into();
    };
    let s = crate::model::rfc3339(ms);
    // rfc3339 gives 2026-11-27T04:46:18.123Z
    let s = s.trim_end_matches('Z').replacen('T', " ", 1);
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s} +0000 UTC")
}

/// The templates every integration falls back to (Alertmanager's names, so
/// user templates that call them keep working).
pub const DEFAULT_TEMPLATES: &str = r#"
{{ define "__alertmanager" }}mlmon{{ end }}
{{ define "__alertmanagerURL" }}{{ .ExternalURL }}/alerts?receiver={{ .Receiver | urlquery }}{{ end }}
{{ define "__subject" }}[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] {{ .GroupLabels.SortedPairs.Values | join " " }} {{ if gt (len .CommonLabels) (len .GroupLabels) }}({{ with .CommonLabels.Remove .GroupLabels.Names }}{{ .Values | join " " }}{{ end }}){{ end }}{{ end }}
{{ define "__description" }}{{ end }}
{{ define "__text_alert_list" }}{{ range . }}Labels:
{{ range .Labels.SortedPairs }} - {{ .Name }} = {{ .Value }}
{{ end }}Annotations:
{{ range .Annotations.SortedPairs }} - {{ .Name }} = {{ .Value }}
{{ end }}Source: {{ .GeneratorURL }}
{{ end }}{{ end }}
{{ define "__text_summary_list" }}{{ range . }}• {{ if .Annotations.summary }}{{ .Annotations.summary }}{{ else }}{{ .Labels.alertname }}{{ end }}{{ if .Annotations.description }}
  {{ .Annotations.description }}{{ end }}
{{ end }}{{ end }}
{{ define "slack.default.title" }}{{ template "__subject" . }}{{ end }}
{{ define "slack.default.username" }}{{ template "__alertmanager" . }}{{ end }}
{{ define "slack.default.fallback" }}{{ template "slack.default.title" . }} | {{ template "slack.default.titlelink" . }}{{ end }}
{{ define "slack.default.callbackid" }}{{ end }}
{{ define "slack.default.pretext" }}{{ end }}
{{ define "slack.default.titlelink" }}{{ template "__alertmanagerURL" . }}{{ end }}
{{ define "slack.default.iconemoji" }}{{ end }}
{{ define "slack.default.iconurl" }}{{ end }}
{{ define "slack.default.footer" }}{{ end }}
{{ define "slack.default.text" }}{{ if gt (len .Alerts.Firing) 0 }}*Firing*
{{ template "__text_summary_list" .Alerts.Firing }}{{ end }}{{ if gt (len .Alerts.Resolved) 0 }}*Resolved*
{{ template "__text_summary_list" .Alerts.Resolved }}{{ end }}{{ end }}
{{ define "telegram.default.message" }}
{{ if gt (len .Alerts.Firing) 0 }}
Alerts Firing:
{{ template "__text_alert_list" .Alerts.Firing }}
{{ end }}
{{ if gt (len .Alerts.Resolved) 0 }}
Alerts Resolved:
{{ template "__text_alert_list" .Alerts.Resolved }}
{{ end }}
{{ end }}
{{ define "email.default.subject" }}{{ template "__subject" . }}{{ end }}
{{ define "email.default.text" }}{{ if gt (len .Alerts.Firing) 0 }}Firing:
{{ template "__text_alert_list" .Alerts.Firing }}{{ end }}{{ if gt (len .Alerts.Resolved) 0 }}Resolved:
{{ template "__text_alert_list" .Alerts.Resolved }}{{ end }}{{ end }}
{{ define "__html_alert_list" }}{{ range . }}<tr><td style="padding:8px 0;border-top:1px solid #ddd">
<strong>{{ if .Annotations.summary }}{{ .Annotations.summary }}{{ else }}{{ .Labels.alertname }}{{ end }}</strong><br>
{{ if .Annotations.description }}{{ .Annotations.description }}<br>{{ end }}
{{ range .Labels.SortedPairs }}<code>{{ .Name }}={{ .Value }}</code> {{ end }}<br>
{{ if .GeneratorURL }}<a href="{{ .GeneratorURL }}">Source</a>{{ end }}
</td></tr>
{{ end }}{{ end }}
{{ define "email.default.html" }}<!DOCTYPE html>
<html><head><meta charset="UTF-8"><title>{{ template "__subject" . }}</title></head>
<body style="font-family:sans-serif;font-size:14px;color:#222">
<table style="max-width:640px;width:100%;border-collapse:collapse">
<tr><td style="padding:12px;color:#fff;background:{{ if eq .Status "firing" }}#c0392b{{ else }}#27ae60{{ end }}">
{{ .Alerts | len }} alert{{ if gt (len .Alerts) 1 }}s{{ end }} for {{ range .GroupLabels.SortedPairs }}{{ .Name }}={{ .Value }} {{ end }}</td></tr>
<tr><td style="padding:12px 0"><a href="{{ template "__alertmanagerURL" . }}">View in mlmon</a></td></tr>
{{ if gt (len .Alerts.Firing) 0 }}<tr><td><strong>[{{ .Alerts.Firing | len }}] Firing</strong></td></tr>
{{ template "__html_alert_list" .Alerts.Firing }}{{ end }}
{{ if gt (len .Alerts.Resolved) 0 }}<tr><td><strong>[{{ .Alerts.Resolved | len }}] Resolved</strong></td></tr>
{{ template "__html_alert_list" .Alerts.Resolved }}{{ end }}
<tr><td style="padding:12px 0;color:#888">Sent by mlmon</td></tr>
</table></body></html>{{ end }}
"#;

/// The parsed template files of a configuration, added to every template.
#[derive(Debug, Clone, Default)]
pub struct Library {
    /// `(name, text)` of each file, in load order.
    files: Vec<(String, String)>,
}

impl Library {
    pub fn load(paths: &[std::path::PathBuf]) -> Result<Library, String> {
        let mut files = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            files.push((p.display().to_string(), text));
        }
        Ok(Library { files })
    }

    fn template(&self, name: &str, text: &str) -> Result<Template, String> {
        let mut t = Template::with_name(name);
        t.add_funcs(&crate::gotmpl::FUNCS);
        add_functions(&mut t);
        t.add_template("default.tmpl", DEFAULT_TEMPLATES)
            .map_err(|e| format!("default templates: {e}"))?;
        for (file, body) in &self.files {
            t.add_template(file.clone(), body.clone())
                .map_err(|e| format!("template {file}: {e}"))?;
        }
        crate::gotmpl::parse_with(t, name, text)
    }

    /// Expands `text` (a config field such as `title`) against `data`.
    pub fn render(&self, name: &str, text: &str, data: &Data) -> Result<String, String> {
        if !text.contains("{{") {
            return Ok(text.to_string());
        }
        let t = self.template(name, text)?;
        t.render(&Context::from(data.to_value()))
            .map_err(|e| format!("template {name}: {e}"))
    }
}

/// Checks a template file as Alertmanager does when it loads it.
pub fn check_file(text: &str) -> Result<(), String> {
    Library::default().template("file", text).map(|_| ())
}

fn add_functions(t: &mut Template) {
    t.add_funcs(&[
        ("join", join as gtmpl::Func),
        ("safeHtml", identity),
        ("stringSlice", string_slice),
        ("match", re_match),
        ("trimSpace", trim_space),
    ]);
    t.add_method("Firing", |a| by_status(a, "firing"));
    t.add_method("Resolved", |a| by_status(a, "resolved"));
    t.add_method("SortedPairs", sorted_pairs);
    t.add_method("Names", |a| pair_field(a, "Name"));
    t.add_method("Values", |a| pair_field(a, "Value"));
    t.add_method("Remove", remove);
}

fn identity(a: &[Value]) -> Result<Value, FuncError> {
    Ok(a.first().cloned().unwrap_or(Value::NoValue))
}

fn trim_space(a: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(arg_str(a, 0)?.trim().to_string()))
}

fn string_slice(a: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Array(a.to_vec()))
}

fn re_match(a: &[Value]) -> Result<Value, FuncError> {
    let (pattern, text) = (arg_str(a, 0)?, arg_str(a, 1)?);
    let re = regex::Regex::new(&pattern).map_err(|e| FuncError::Generic(e.to_string()))?;
    Ok(Value::Bool(re.is_match(&text)))
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// `join sep list` (Alertmanager's argument order, so `list | join " "`).
fn join(a: &[Value]) -> Result<Value, FuncError> {
    let sep = arg_str(a, 0)?;
    let list = a
        .get(1)
        .ok_or_else(|| FuncError::AtLeastXArgs("join".into(), 2))?;
    Ok(Value::from(strings(list).join(&sep)))
}

fn by_status(a: &[Value], status: &str) -> Result<Value, FuncError> {
    let Some(Value::Array(alerts)) = a.first() else {
        return Err(FuncError::Generic(format!(
            "{} is defined on a list of alerts",
            if status == "firing" {
                "Firing"
            } else {
                "Resolved"
            }
        )));
    };
    Ok(Value::Array(
        alerts
            .iter()
            .filter(|x| match x {
                Value::Object(o) => o.get("Status") == Some(&Value::from(status)),
                _ => false,
            })
            .cloned()
            .collect(),
    ))
}

fn map_arg(a: &[Value]) -> Result<&HashMap<String, Value>, FuncError> {
    match a.first() {
        Some(Value::Map(m)) | Some(Value::Object(m)) => Ok(m),
        _ => Err(FuncError::Generic("defined on a label set".into())),
    }
}

fn sorted_pairs(a: &[Value]) -> Result<Value, FuncError> {
    let m = map_arg(a)?;
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    Ok(Value::Array(
        keys.into_iter()
            .map(|k| {
                let mut p = HashMap::new();
                p.insert("Name".to_string(), Value::from(k.clone()));
                p.insert("Value".to_string(), m[k].clone());
                Value::Object(p)
            })
            .collect(),
    ))
}

/// `.Names` / `.Values` of a label set (sorted by name) or of its pairs.
fn pair_field(a: &[Value], field: &str) -> Result<Value, FuncError> {
    let pairs = match a.first() {
        Some(Value::Array(_)) => a[0].clone(),
        _ => sorted_pairs(a)?,
    };
    let Value::Array(pairs) = pairs else {
        unreachable!("sorted_pairs returns a list")
    };
    Ok(Value::Array(
        pairs
            .iter()
            .filter_map(|p| match p {
                Value::Object(o) => o.get(field).cloned(),
                _ => None,
            })
            .collect(),
    ))
}

/// `.Remove names`: the label set without `names`.
fn remove(a: &[Value]) -> Result<Value, FuncError> {
    let m = map_arg(a)?;
    let drop = a.get(1).map(strings).unwrap_or_default();
    Ok(Value::Map(
        m.iter()
            .filter(|(k, _)| !drop.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, status: &'static str, severity: &str) -> AlertData {
        AlertData {
            status,
            labels: [
                ("alertname", name),
                ("component", "model"),
                ("severity", severity),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            annotations: [("summary".to_string(), format!("{name} summary"))].into(),
            starts_at_ms: 1_700_000_000_000,
            ends_at_ms: None,
            generator_url: "http://x/graph".into(),
            fingerprint: "abc".into(),
        }
    }

    #[test]
    fn alertmanager_data_methods_and_defaults() {
        let group: BTreeMap<String, String> = [
            ("alertname".to_string(), "ModelAccuracyCritical".to_string()),
            ("component".to_string(), "model".to_string()),
        ]
        .into();
        let data = Data::new(
            "critical-alerts",
            group,
            vec![
                alert("ModelAccuracyCritical", "firing", "critical"),
                alert("ModelAccuracyCritical", "resolved", "critical"),
            ],
            "http://mlmon:8001",
        );
        let lib = Library::default();
        let r = |t: &str| lib.render("t", t, &data).unwrap();
        assert_eq!(
            r(r#"{{ template "email.default.subject" . }}"#),
            "[FIRING:1] ModelAccuracyCritical model (critical)"
        );
        assert_eq!(
            r("{{ .Alerts.Firing | len }}/{{ len .Alerts.Resolved }}"),
            "1/1"
        );
        assert_eq!(
            r("{{ .CommonLabels.SortedPairs.Names | join \",\" }}"),
            "alertname,component,severity"
        );
        assert_eq!(
            r("{{ range .CommonLabels }}{{ . }};{{ end }}"),
            "ModelAccuracyCritical;model;critical;"
        );
        assert_eq!(
            r("{{ .GroupLabels.alertname | toUpper }}"),
            "MODELACCURACYCRITICAL"
        );
        assert_eq!(
            r("{{ range .Alerts }}{{ .Annotations.summary }} {{ .StartsAt }}|{{ end }}"),
            "ModelAccuracyCritical summary 2023-11-14 22:13:20 +0000 UTC|ModelAccuracyCritical summary 2023-11-14 22:13:20 +0000 UTC|"
        );
        assert!(r(r#"{{ template "slack.default.text" . }}"#).contains("*Resolved*"));
        assert!(r(r#"{{ template "email.default.html" . }}"#).contains("[1] Firing"));
        assert!(lib.render("t", "{{ .Nope.x }}", &data).is_err());
        assert!(check_file("{{ define \"x\" }}{{ end }}").is_ok());
        // A template that calls itself fails instead of exhausting the stack.
        let looping = Library {
            files: vec![(
                "loop.tmpl".into(),
                "{{ define \"again\" }}{{ template \"again\" . }}{{ end }}".into(),
            )],
        };
        let e = looping
            .render("t", "{{ template \"again\" . }}", &data)
            .unwrap_err();
        assert!(e.contains("depth"), "{e}");
        assert!(check_file("{{ define \"x\" }}").is_err());
    }
}
