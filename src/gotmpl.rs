//! Go's text/template, as Prometheus and Alertmanager use it: gtmpl (with
//! the local patches in `vendor/gtmpl`) plus the functions both tools
//! register, Go's number formatting, and a guard for an input gtmpl cannot
//! handle. `rules::template` adds Prometheus' alert data, `notify::template`
//! Alertmanager's.

use gtmpl::{FuncError, Template, Value};

/// A template with the shared functions, parsed from `text` (prefixed with
/// `preamble`); the error reads as Go's parser's does.
pub fn parse(name: &str, preamble: &str, text: &str) -> Result<Template, String> {
    parse_with(Template::default(), name, &format!("{preamble}{text}"))
}

/// Parses `text` into `t`, which already holds the caller's functions.
pub fn parse_with(mut t: Template, name: &str, text: &str) -> Result<Template, String> {
    // gtmpl 0.7 loops forever on an action that is never closed; Go's
    // parser reports it, and so do we, before gtmpl sees it.
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        match rest[open + 2..].find("}}") {
            Some(close) => rest = &rest[open + 2 + close + 2..],
            None => return Err(format!("template: {name}: unclosed action")),
        }
    }
    t.add_funcs(&FUNCS);
    t.parse(text)
        .map_err(|e| format!("template: {name}: {e}"))?;
    Ok(t)
}

/// The functions Prometheus and Alertmanager templates share.
pub const FUNCS: [(&str, gtmpl::Func); 9] = [
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

pub fn arg_str(args: &[Value], i: usize) -> Result<String, FuncError> {
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
pub fn go_exp(s: &str) -> String {
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
