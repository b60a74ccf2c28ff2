//! The Prometheus text exposition format (0.0.4) and OpenMetrics 1.0 text
//! (the name of Prometheus' Go package for it): parsed into
//! [`MetricFamily`]s with every sample's line number, and written. Used by
//! the push API, scraping and the artifacts' textfiles (`ingest`) and by
//! `/metrics` and `/federate` (`web`). Errors name the line and the
//! reason; the input is either accepted whole or refused.

pub mod protobuf;

use std::collections::HashMap;

use crate::model::{is_valid_label_name, is_valid_metric_name, parse_float};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: timestamps in milliseconds.
    Text,
    /// `application/openmetrics-text`: timestamps in seconds, `# EOF` required.
    OpenMetrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Untyped,
}

impl MetricType {
    /// The name used in `# TYPE` lines of the text format (0.0.4).
    pub fn text_name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::GaugeHistogram
            | MetricType::Info
            | MetricType::StateSet
            | MetricType::Untyped => "untyped",
        }
    }

    fn parse(s: &str, format: Format) -> Option<MetricType> {
        Some(match (s, format) {
            ("counter", _) => MetricType::Counter,
            ("gauge", _) => MetricType::Gauge,
            ("histogram", _) => MetricType::Histogram,
            ("summary", _) => MetricType::Summary,
            ("untyped", Format::Text) | ("unknown", Format::OpenMetrics) => MetricType::Untyped,
            ("gaugehistogram", Format::OpenMetrics) => MetricType::GaugeHistogram,
            ("info", Format::OpenMetrics) => MetricType::Info,
            ("stateset", Format::OpenMetrics) => MetricType::StateSet,
            _ => return None,
        })
    }

    /// Sample-name suffixes a family of this type may use.
    fn suffixes(self, format: Format) -> &'static [&'static str] {
        match (self, format) {
            (MetricType::Counter, Format::OpenMetrics) => &["_total", "_created"],
            (MetricType::Histogram, Format::OpenMetrics) => {
                &["_bucket", "_sum", "_count", "_created"]
            }
            (MetricType::Histogram, Format::Text) => &["_bucket", "_sum", "_count"],
            (MetricType::GaugeHistogram, _) => &["_bucket", "_gsum", "_gcount"],
            (MetricType::Summary, Format::OpenMetrics) => &["_sum", "_count", "_created"],
            (MetricType::Summary, Format::Text) => &["_sum", "_count"],
            (MetricType::Info, _) => &["_info"],
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    pub name: String,
    pub help: Option<String>,
    pub typ: MetricType,
    pub unit: Option<String>,
    pub samples: Vec<ParsedSample>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSample {
    /// The full sample name (`foo_bucket`, `foo_total`, ...).
    pub name: String,
    /// Label pairs in the order written (without `__name__`).
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Picks the format from a `Content-Type` header (text 0.0.4 when absent).
pub fn format_of(content_type: Option<&str>) -> Format {
    match content_type {
        Some(ct) if ct.trim_start().starts_with("application/openmetrics-text") => {
            Format::OpenMetrics
        }
        _ => Format::Text,
    }
}

/// Parses a whole exposition.
pub fn parse(input: &str, format: Format) -> Result<Vec<MetricFamily>, ParseError> {
    let mut p = Parser {
        format,
        families: Vec::new(),
        by_name: HashMap::new(),
        current: None,
    };
    let mut saw_eof = false;
    for (i, raw) in input.split('\n').enumerate() {
        let line_no = i + 1;
        let err = |reason: String| ParseError {
            line: line_no,
            reason,
        };
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if saw_eof {
            if line.is_empty() && i + 1 == input.split('\n').count() {
                continue;
            }
            return Err(err("content after # EOF".into()));
        }
        if format == Format::Text {
            let t = line.trim_start_matches([' ', '\t']);
            if t.is_empty() {
                continue;
            }
            if let Some(rest) = t.strip_prefix('#') {
                p.comment(rest.trim_start_matches([' ', '\t']), true)
                    .map_err(err)?;
                continue;
            }
            p.sample(t, line_no).map_err(err)?;
        } else {
            if line == "# EOF" {
                saw_eof = true;
                continue;
            }
            if line.is_empty() {
                if i + 1 == input.split('\n').count() {
                    continue;
                }
                return Err(err("empty lines are not allowed in OpenMetrics".into()));
            }
            if let Some(rest) = line.strip_prefix("# ") {
                p.comment(rest, false).map_err(err)?;
                continue;
            }
            p.sample(line, line_no).map_err(err)?;
        }
    }
    if format == Format::OpenMetrics && !saw_eof {
        let last = input.split('\n').count();
        return Err(ParseError {
            line: last,
            reason: "missing # EOF at the end of OpenMetrics input".into(),
        });
    }
    p.check()?;
    Ok(p.families)
}

struct Parser {
    format: Format,
    families: Vec<MetricFamily>,
    by_name: HashMap<String, usize>,
    current: Option<usize>,
}

impl Parser {
    fn family(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        self.families.push(MetricFamily {
            name: name.to_string(),
            help: None,
            typ: MetricType::Untyped,
            unit: None,
            samples: Vec::new(),
        });
        let i = self.families.len() - 1;
        self.by_name.insert(name.to_string(), i);
        i
    }

    fn comment(&mut self, rest: &str, lenient: bool) -> Result<(), String> {
        let (keyword, tail) = split_word(rest);
        if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
            return if lenient {
                Ok(())
            } else {
                Err(format!("unknown comment keyword {keyword:?}"))
            };
        }
        if keyword == "UNIT" && self.format == Format::Text {
            return Ok(());
        }
        let tail = if lenient {
            tail.trim_start_matches([' ', '\t'])
        } else {
            tail
        };
        let (name, arg) = split_word(tail);
        if !is_valid_metric_name(name) {
            return Err(format!("invalid metric name {name:?} in {keyword} line"));
        }
        let arg = if lenient {
            arg.trim_start_matches([' ', '\t'])
        } else {
            arg
        };
        let exists = self.by_name.contains_key(name);
        let i = self.family(name);
        let fam = &mut self.families[i];
        match keyword {
            "HELP" => {
                if fam.help.is_some() {
                    return Err(format!("second HELP line for metric name {name:?}"));
                }
                fam.help = Some(unescape_help(arg, self.format)?);
            }
            "TYPE" => {
                if exists && (fam.typ != MetricType::Untyped || !fam.samples.is_empty()) {
                    return Err(if fam.samples.is_empty() {
                        format!("second TYPE line for metric name {name:?}")
                    } else {
                        format!("TYPE line for {name:?} after its samples")
                    });
                }
                fam.typ = MetricType::parse(arg.trim_end(), self.format)
                    .ok_or_else(|| format!("unknown metric type {:?}", arg.trim_end()))?;
            }
            _ => {
                if !arg.is_empty() && !name.ends_with(&format!("_{arg}")) {
                    return Err(format!(
                        "unit {arg:?} is not a suffix of metric name {name:?}"
                    ));
                }
                fam.unit = Some(arg.to_string());
            }
        }
        self.current = Some(i);
        Ok(())
    }

    /// The family a sample name belongs to.
    fn family_of(&mut self, name: &str) -> usize {
        let fits = |fam: &MetricFamily, format| {
            fam.name == name
                && !(format == Format::OpenMetrics
                    && matches!(
                        fam.typ,
                        MetricType::Counter
                            | MetricType::Histogram
                            | MetricType::Info
                            | MetricType::GaugeHistogram
                    ))
                || fam
                    .typ
                    .suffixes(format)
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(fam.name.as_str()))
        };
        if let Some(i) = self.current {
            if fits(&self.families[i], self.format) {
                return i;
            }
        }
        for (pos, _) in name.match_indices('_') {
            if let Some(&i) = self.by_name.get(&name[..pos]) {
                if fits(&self.families[i], self.format) {
                    return i;
                }
            }
        }
        let i = self.family(name);
        self.current = Some(i);
        i
    }

    fn sample(&mut self, line: &str, line_no: usize) -> Result<(), String> {
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if !is_valid_metric_name(name) {
            return Err(format!("invalid metric name {:?}", first_token(line)));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = parse_labels(r, &mut labels)?;
        }
        if !rest.starts_with([' ', '\t']) {
            return Err(format!(
                "expected a space and a value after {name:?}, found {:?}",
                first_token(rest)
            ));
        }
        let (value, timestamp_ms) = value_and_timestamp(rest, self.format)?;
        let i = self.family_of(name);
        let fam = &mut self.families[i];
        check_sample_labels(fam, name, &labels)?;
        fam.samples.push(ParsedSample {
            name: name.to_string(),
            labels,
            value,
            timestamp_ms,
            line: line_no,
        });
        Ok(())
    }

    /// Whole-input checks: histogram and summary shape.
    fn check(&self) -> Result<(), ParseError> {
        for fam in &self.families {
            if fam.typ == MetricType::Histogram {
                for s in &fam.samples {
                    if s.name == format!("{}_bucket", fam.name)
                        && !s.labels.iter().any(|(n, _)| n == "le")
                    {
                        return Err(ParseError {
                            line: s.line,
                            reason: format!("histogram bucket {:?} has no \"le\" label", s.name),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_sample_labels(
    fam: &MetricFamily,
    name: &str,
    labels: &[(String, String)],
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (n, v) in labels {
        if !seen.insert(n.as_str()) {
            return Err(format!("label {n:?} appears more than once"));
        }
        if n == "le"
            && name.ends_with("_bucket")
            && matches!(fam.typ, MetricType::Histogram | MetricType::GaugeHistogram)
        {
            parse_float(v).map_err(|_| format!("invalid \"le\" value {v:?}"))?;
        }
        if n == "quantile" && fam.typ == MetricType::Summary && name == fam.name {
            parse_float(v).map_err(|_| format!("invalid \"quantile\" value {v:?}"))?;
        }
    }
    if fam.typ == MetricType::Summary
        && name == fam.name
        && !labels.iter().any(|(n, _)| n == "quantile")
    {
        return Err(format!("summary sample {name:?} has no \"quantile\" label"));
    }
    Ok(())
}

/// Parses `a="1",b="2"}`; returns the text after the closing brace.
/// The value, optional timestamp and (OpenMetrics) exemplar after a
/// sample's series.
fn value_and_timestamp(rest: &str, format: Format) -> Result<(f64, Option<i64>), String> {
    let rest = rest.trim_start_matches([' ', '\t']);
    let (value_text, rest) = split_ws(rest);
    let value = parse_float(value_text)?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let (ts_text, rest) = if rest.starts_with('#') {
        ("", rest)
    } else {
        split_ws(rest)
    };
    let timestamp_ms =
        match (ts_text, format) {
            ("", _) => None,
            (t, Format::Text) => Some(t.parse::<i64>().map_err(|_| {
                format!("invalid timestamp {t:?}: must be an integer in milliseconds")
            })?),
            (t, Format::OpenMetrics) => {
                let secs: f64 = t.parse().map_err(|_| format!("invalid timestamp {t:?}"))?;
                if !secs.is_finite() {
                    return Err(format!("invalid timestamp {t:?}"));
                }
                Some((secs * 1000.0).round() as i64)
            }
        };
    let rest = rest.trim_start_matches([' ', '\t']);
    let exemplar = format == Format::OpenMetrics && rest.starts_with("# {");
    if !rest.is_empty() && !exemplar {
        return Err(format!(
            "unexpected text after the sample: {:?}",
            first_token(rest)
        ));
    }
    Ok((value, timestamp_ms))
}

/// A sample line's series text, value and timestamp.
pub type SplitSample<'a> = (&'a str, f64, Option<i64>);

/// A sample line split without building its labels: the series text
/// (`name` or `name{...}` as written), the value and the timestamp. For a
/// scraper that knows series by their text; it parses a page in full the
/// first time and whenever a series text is new. `None` for lines that
/// hold no sample (blank, comments, `# EOF`).
pub fn split_sample(line: &str, format: Format) -> Option<Result<SplitSample<'_>, String>> {
    let line = line.trim_end_matches('\r');
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let b = line.as_bytes();
    let mut end = b
        .iter()
        .position(|c| matches!(c, b'{' | b' ' | b'\t'))
        .unwrap_or(b.len());
    if b.get(end) == Some(&b'{') {
        let mut quoted = false;
        let mut i = end + 1;
        loop {
            match b.get(i) {
                None => return Some(Err("unterminated label set".into())),
                Some(b'\\') if quoted => i += 1,
                Some(b'"') => quoted = !quoted,
                Some(b'}') if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        end = i + 1;
    }
    let rest = &line[end..];
    if !rest.starts_with([' ', '\t']) {
        return Some(Err("expected a space and a value".into()));
    }
    Some(value_and_timestamp(rest, format).map(|(v, t)| (&line[..end], v, t)))
}

fn parse_labels<'a>(mut r: &'a str, out: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        r = r.trim_start_matches([' ', '\t']);
        if let Some(rest) = r.strip_prefix('}') {
            return Ok(rest);
        }
        let end = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(r.len());
        let name = &r[..end];
        if !is_valid_label_name(name) {
            return Err(format!("invalid label name {:?}", first_token(r)));
        }
        if name == "__name__" {
            return Err("label name \"__name__\" is reserved".into());
        }
        r = r[end..].trim_start_matches([' ', '\t']);
        r = r
            .strip_prefix('=')
            .ok_or_else(|| format!("expected '=' after label name {name:?}"))?;
        r = r.trim_start_matches([' ', '\t']);
        r = r
            .strip_prefix('"')
            .ok_or_else(|| format!("expected '\"' to start the value of label {name:?}"))?;
        let mut value = String::new();
        let mut chars = r.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label {name:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => {
                        return Err(format!(
                            "invalid escape sequence '\\{c}' in value of label {name:?}"
                        ))
                    }
                    None => return Err(format!("unterminated value of label {name:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        out.push((name.to_string(), value));
        r = r[close + 1..].trim_start_matches([' ', '\t']);
        if let Some(rest) = r.strip_prefix(',') {
            r = rest;
        } else if !r.starts_with('}') {
            return Err(format!(
                "expected ',' or '}}' after the value of label {name:?}"
            ));
        }
    }
}

fn unescape_help(s: &str, format: Format) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if format == Format::OpenMetrics => out.push('"'),
            // The text format keeps other backslashes as they are.
            Some(other) if format == Format::Text => {
                out.push('\\');
                out.push(other);
            }
            None if format == Format::Text => out.push('\\'),
            _ => return Err("invalid escape sequence in HELP".into()),
        }
    }
    Ok(out)
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

fn split_ws(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// The first word of `s`, at most 64 bytes (cut on a character boundary),
/// for error messages.
fn first_token(s: &str) -> &str {
    let t = s.split([' ', '\t']).next().unwrap_or("");
    let mut end = t.len().min(64);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    &t[..end]
}

// === writing ==================================================================

/// Formats a value the way Prometheus' text writers do: `+Inf`, `-Inf`,
/// `NaN`, integers without a fraction, everything else in the shortest
/// form that parses back to the same float.
pub fn format_value(v: f64) -> String {
    if let Some(special) = crate::model::special_float(v) {
        special.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        if v == 0.0 && v.is_sign_negative() {
            "-0".into()
        } else {
            format!("{}", v as i64)
        }
    } else {
        format!("{v:?}")
    }
}

fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, format: Format, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Writes one sample line: `name{a="1"} value[ timestamp]`.
pub fn write_sample<'a>(
    out: &mut String,
    name: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    value: f64,
    timestamp_ms: Option<i64>,
    format: Format,
) {
    out.push_str(name);
    let mut first = true;
    for (n, v) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(n);
        out.push_str("=\"");
        escape_label_value(v, out);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(value));
    if let Some(t) = timestamp_ms {
        out.push(' ');
        match format {
            Format::Text => out.push_str(&t.to_string()),
            Format::OpenMetrics => out.push_str(&format_value(t as f64 / 1000.0)),
        }
    }
    out.push('\n');
}

/// Writes the `# HELP` and `# TYPE` lines of a family. In OpenMetrics a
/// counter's family name drops `_total`; counters without that suffix are
/// written as `unknown` so their sample names stay as they are.
/// Returns the family name used.
pub fn write_header(
    out: &mut String,
    name: &str,
    help: Option<&str>,
    typ: MetricType,
    format: Format,
) {
    let (fam_name, type_name) = match format {
        Format::Text => (name, typ.text_name()),
        Format::OpenMetrics => match typ {
            MetricType::Counter => match name.strip_suffix("_total") {
                Some(base) => (base, "counter"),
                None => (name, "unknown"),
            },
            MetricType::Untyped => (name, "unknown"),
            MetricType::GaugeHistogram => (name, "gaugehistogram"),
            MetricType::Info => (name, "info"),
            MetricType::StateSet => (name, "stateset"),
            other => (name, other.text_name()),
        },
    };
    if let Some(h) = help {
        out.push_str("# HELP ");
        out.push_str(fam_name);
        out.push(' ');
        escape_help(h, format, out);
        out.push('\n');
    }
    out.push_str("# TYPE ");
    out.push_str(fam_name);
    out.push(' ');
    out.push_str(type_name);
    out.push('\n');
}

/// Writes whole families (labels as parsed, plus nothing else).
pub fn write_families(out: &mut String, families: &[MetricFamily], format: Format) {
    for fam in families {
        write_header(out, &fam.name, fam.help.as_deref(), fam.typ, format);
        for s in &fam.samples {
            let labels = s.labels.iter().map(|(n, v)| (n.as_str(), v.as_str()));
            write_sample(out, &s.name, labels, s.value, s.timestamp_ms, format);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Result<Vec<MetricFamily>, ParseError> {
        parse(s, Format::Text)
    }

    #[test]
    fn parses_families_with_help_type_and_escapes() {
        let fams = text(concat!(
            "# HELP http_requests_total The total number of HTTP requests.\n",
            "# TYPE http_requests_total counter\n",
            "http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n",
            "http_requests_total{method=\"post\",code=\"400\",} 3 1395066363000\n",
            "\n",
            "# A comment\n",
            "msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n",
            "metric_without_timestamp_and_labels 12.47\n",
            "something_weird{problem=\"division by zero\"} +Inf -3982045\n",
            "# TYPE rpc_duration_seconds summary\n",
            "rpc_duration_seconds{quantile=\"0.5\"} 4773\n",
            "rpc_duration_seconds_sum 1.7560473e+07\n",
            "rpc_duration_seconds_count 2693\n",
            "# TYPE h histogram\n",
            "h_bucket{le=\"0.1\"} 1\n",
            "h_bucket{le=\"+Inf\"} 2\n",
            "h_sum 0.3\n",
            "h_count 2\n",
        ))
        .unwrap();
        let names: Vec<_> = fams.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "http_requests_total",
                "msdos_file_access_time_seconds",
                "metric_without_timestamp_and_labels",
                "something_weird",
                "rpc_duration_seconds",
                "h"
            ]
        );
        assert_eq!(fams[0].typ, MetricType::Counter);
        assert_eq!(fams[0].samples[1].labels[1], ("code".into(), "400".into()));
        assert_eq!(fams[0].samples[0].timestamp_ms, Some(1395066363000));
        assert_eq!(fams[1].samples[0].labels[0].1, "C:\\DIR\\FILE.TXT");
        assert_eq!(
            fams[1].samples[0].labels[1].1,
            "Cannot find file:\n\"FILE.TXT\""
        );
        assert_eq!(fams[3].samples[0].value, f64::INFINITY);
        assert_eq!(fams[4].samples.len(), 3);
        assert_eq!(fams[5].samples.len(), 4);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("ok 1\nbad{ 1\n", 2, "label name"),
            ("a 1\nb{x=\"1} 2\n", 2, "unterminated"),
            ("a one\n", 1, "invalid value"),
            ("a 1 12.5\n", 1, "timestamp"),
            ("# TYPE a counter\n# TYPE a gauge\n", 2, "second TYPE"),
            ("# TYPE a histogram\na_bucket 1\n", 2, "le"),
            ("# TYPE s summary\ns 1\n", 2, "quantile"),
            ("a{x=\"1\",x=\"2\"} 1\n", 1, "more than once"),
            ("a{x=\"\\t\"} 1\n", 1, "escape"),
            ("# TYPE a nonsense\n", 1, "unknown metric type"),
            ("1a 1\n", 1, "metric name"),
            ("a 1 2 3\n", 1, "unexpected text"),
        ];
        for (input, line, needle) in cases {
            let e = text(input).unwrap_err();
            assert_eq!(e.line, line, "{input:?}: {e}");
            assert!(e.reason.contains(needle), "{input:?}: {e}");
        }
    }

    #[test]
    fn openmetrics_needs_eof_and_uses_seconds() {
        let om = "# TYPE c counter\n# UNIT c_seconds seconds\nc_total 1 1.5 # {id=\"x\"} 1\nc_created 3\n# EOF\n";
        let fams = parse(om, Format::OpenMetrics).unwrap();
        assert_eq!(fams[0].samples.len(), 2);
        assert_eq!(fams[0].samples[0].timestamp_ms, Some(1500));
        assert!(parse("a 1\n", Format::OpenMetrics)
            .unwrap_err()
            .reason
            .contains("EOF"));
        assert!(parse("a 1\n# EOF\nb 2\n", Format::OpenMetrics).is_err());
    }

    // Found by review: an error message cut a long non-ASCII token inside a
    // character and panicked.
    #[test]
    fn long_non_ascii_tokens_in_errors_do_not_panic() {
        let line = format!("a-{} 1\n", "é".repeat(100));
        let e = text(&line).unwrap_err();
        assert!(e.reason.contains("expected a space"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(input in "\\PC{0,200}") {
            let _ = parse(&input, Format::Text);
            let _ = parse(&input, Format::OpenMetrics);
        }

        #[test]
        fn exposition_shaped_input_never_panics(input in "(# (HELP|TYPE|UNIT|EOF) ?)?[a-z_:]{0,5}(\\{[a-z_]{0,3}=?\"[^\"]{0,4}\"?,?\\}?)? ?[-+0-9.eE]{0,6} ?[0-9.]{0,4}\n?") {
            let _ = parse(&input, Format::Text);
            let _ = parse(&input, Format::OpenMetrics);
        }
    }

    #[test]
    fn written_text_parses_back() {
        let input = r#"# HELP a_total Help with \\ and \n.
# TYPE a_total counter
a_total{x="q\"\n"} 1.5e-7
b 100000000000000000000
c NaN
"#;
        let fams = text(input).unwrap();
        let mut out = String::new();
        write_families(&mut out, &fams, Format::Text);
        let back = text(&out).unwrap();
        assert_eq!(back[0].help.as_deref(), Some("Help with \\ and \n."));
        assert_eq!(back[0].samples[0].labels[0].1, "q\"\n");
        assert_eq!(back[0].samples[0].value, 1.5e-7);
        assert_eq!(back[1].samples[0].value, 1e20);
        assert!(back[2].samples[0].value.is_nan());
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(-3.0), "-3");
    }
}
