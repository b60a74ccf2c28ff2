//! Alert label and annotation templates: Go template syntax (gtmpl) with
//! Prometheus' data — `$labels`, `$value`, `$externalLabels` — and its
//! formatting functions.

use std::collections::{BTreeMap, HashMap};

use gtmpl::{Context, FuncError, Template, Value};

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
    let t = parse(name, text)?;
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
    parse(name, text).map(|_| ())
}

fn parse(name: &str, text: &str) -> Result<Template, String> {
    // gtmpl 0.7 loops forever on an action that is never closed; Go's
    // parser reports it, and so do we, before gtmpl sees it.
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        match rest[open + 2..].find("}}") {
            Some(close) => rest = &rest[open + 2 + close + 2..],
            None => return Err(format!("template: {name}: unclosed action")),
        }
    }
    let mut t = Template::default();
    t.add_funcs(&FUNCS);
    t.parse(format!("{PREAMBLE}{text}"))
        .map_err(|e| format!("template: {name}: {e}"))?;
    Ok(t)
}

const FUNCS: [(&str, gtmpl::Func); 9] = [
    ("toUpper", to_upper),
    ("toLower", to_lower),
    ("title", title),
    ("humanize", humanize),
    ("humanize1024", humanize1024),
    ("humanizePercentage", humanize_percentage),
    ("humanizeDuration", humanize_duration),
    ("reReplaceAll", re_replace_all),
    ("printf", printf),
];

fn arg_str(args: &[Value], i: usize) -> Result<String, FuncError> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Ok(v.to_string()),
        None => Err(FuncError::AtLeastXArgs("function".into(), i + 1)),
    }
}

fn arg_f64(args: &[Value], i: usize) -> Result<f64, FuncError> {
    match args.get(i) {
        Some(Value::Number(n)) => n
            .as_f64()
            .or_else(|| n.as_i64().map(|i| i as f64))
            .or_else(|| n.as_u64().map(|u| u as f64))
            .ok_or_else(|| FuncError::Generic("not a number".into())),
        Some(Value::String(s)) => crate::model::parse_float(s)
            .map_err(|_| FuncError::Generic(format!("{s:?} is not a number"))),
        _ => Err(FuncError::Generic("expected a number".into())),
    }
}

fn to_upper(a: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(arg_str(a, 0)?.to_uppercase()))
}

fn to_lower(a: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(arg_str(a, 0)?.to_lowercase()))
}

fn title(a: &[Value]) -> Result<Value, FuncError> {
    let s = arg_str(a, 0)?;
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    Ok(Value::String(out))
}

fn re_replace_all(a: &[Value]) -> Result<Value, FuncError> {
    let (pattern, repl, text) = (arg_str(a, 0)?, arg_str(a, 1)?, arg_str(a, 2)?);
    let re = regex::Regex::new(&pattern).map_err(|e| FuncError::Generic(e.to_string()))?;
    Ok(Value::String(
        re.replace_all(&text, repl.as_str()).into_owned(),
    ))
}

/// `printf` with Go's common verbs (%s, %d, %f and precisions, %v, %g, %%).
fn printf(a: &[Value]) -> Result<Value, FuncError> {
    let format = arg_str(a, 0)?;
    let mut out = String::new();
    let mut args = a[1..].iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_digit() || n == '.' || n == '-' || n == '+' {
                spec.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let Some(verb) = chars.next() else { break };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let v = args.next().cloned().unwrap_or(Value::NoValue);
        let prec = spec
            .split_once('.')
            .and_then(|(_, p)| p.parse::<usize>().ok());
        let num = || arg_f64(std::slice::from_ref(&v), 0);
        match verb {
            'f' | 'F' => out.push_str(&format!("{:.*}", prec.unwrap_or(6), num()?)),
            'd' => out.push_str(&format!("{}", num()? as i64)),
            'g' => out.push_str(&go_g(num()?, prec)),
            'e' => out.push_str(&format!("{:.*e}", prec.unwrap_or(6), num()?)),
            _ => match &v {
                Value::String(s) => out.push_str(s),
                Value::Number(_) => out.push_str(&go_g(num()?, None)),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Ok(Value::String(out))
}

/// Go's `%g` (`%.Ng` with `prec`): the shortest of %e and %f, trailing
/// zeros removed.
pub fn go_g(v: f64, prec: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let Some(p) = prec else {
        // Shortest representation, in Go's exponent style when large.
        let exp = if v == 0.0 {
            0
        } else {
            v.abs().log10().floor() as i32
        };
        if !(-4..21).contains(&exp) {
            return go_exp(&format!("{v:e}"));
        }
        let mut s = String::new();
        crate::model::write_float(&mut s, v);
        return s;
    };
    let p = p.max(1);
    if v == 0.0 {
        return "0".into();
    }
    let e = format!("{:.*e}", p - 1, v);
    let exp: i32 = e
        .split('e')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let (m, _) = e.split_once('e').unwrap_or((&e, ""));
        let m = if m.contains('.') {
            m.trim_end_matches('0').trim_end_matches('.')
        } else {
            m
        };
        go_exp(&format!("{m}e{exp}"))
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        let f = format!("{v:.decimals$}");
        if f.contains('.') {
            f.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            f
        }
    }
}

/// Rust's `1.5e7` as Go writes it, `1.5e+07`.
pub(super) fn go_exp(s: &str) -> String {
    let Some((m, e)) = s.split_once('e') else {
        return s.to_string();
    };
    let (sign, digits) = match e.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', e),
    };
    format!("{m}e{sign}{digits:0>2}")
}

fn scaled(mut v: f64, base: f64, big: &[&str], small: &[&str]) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g(v, Some(4));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in big {
            if v.abs() < base {
                break;
            }
            prefix = p;
            v /= base;
        }
    } else {
        for p in small {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= base;
        }
    }
    format!("{}{prefix}", go_g(v, Some(4)))
}

fn humanize(a: &[Value]) -> Result<Value, FuncError> {
    let v = arg_f64(a, 0)?;
    Ok(Value::String(scaled(
        v,
        1000.0,
        &["k", "M", "G", "T", "P", "E", "Z", "Y"],
        &["m", "u", "n", "p", "f", "a", "z", "y"],
    )))
}

fn humanize1024(a: &[Value]) -> Result<Value, FuncError> {
    let v = arg_f64(a, 0)?;
    if v.abs() <= 1.0 || !v.is_finite() {
        return Ok(Value::String(go_g(v, Some(4))));
    }
    Ok(Value::String(scaled(
        v,
        1024.0,
        &["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"],
        &[],
    )))
}

fn humanize_percentage(a: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(format!(
        "{}%",
        go_g(arg_f64(a, 0)? * 100.0, Some(4))
    )))
}

fn humanize_duration(a: &[Value]) -> Result<Value, FuncError> {
    let v = arg_f64(a, 0)?;
    if !v.is_finite() {
        return Ok(Value::String(go_g(v, Some(4))));
    }
    if v == 0.0 {
        return Ok(Value::String(format!("{}s", go_g(v, Some(4)))));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let d = v.abs() as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        return Ok(Value::String(if days != 0 {
            format!("{sign}{days}d {h}h {m}m {s}s")
        } else if h != 0 {
            format!("{sign}{h}h {m}m {s}s")
        } else if m != 0 {
            format!("{sign}{m}m {s}s")
        } else {
            format!("{sign}{}s", go_g(v.abs(), Some(4)))
        }));
    }
    Ok(Value::String(format!(
        "{}s",
        scaled(v, 1000.0, &[], &["m", "u", "n", "p", "f", "a", "z", "y"])
    )))
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
