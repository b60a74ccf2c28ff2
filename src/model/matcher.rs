//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus semantics: regexes
//! are fully anchored and a missing label matches as the empty string.

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Re,
    NotRe,
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid regular expression {pattern:?} for label {name:?}: {reason}")]
pub struct MatcherError {
    pub name: String,
    pub pattern: String,
    pub reason: String,
}

impl Matcher {
    pub fn new(op: MatchOp, name: &str, value: &str) -> Result<Matcher, MatcherError> {
        let re = match op {
            MatchOp::Re | MatchOp::NotRe => Some(Regex::new(&format!("^(?s:{value})$")).map_err(
                |e| MatcherError {
                    name: name.to_string(),
                    pattern: value.to_string(),
                    reason: e.to_string(),
                },
            )?),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    /// `name="value"`
    pub fn equal(name: &str, value: &str) -> Matcher {
        Matcher {
            name: name.to_string(),
            op: MatchOp::Equal,
            value: value.to_string(),
            re: None,
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// True when a series without this label would match.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

impl std::fmt::Display for Matcher {
    /// `name="value"`, with the value quoted as Go's `%q` does.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// Parses Alertmanager's matcher list: `{a="b", c=~"d.*"}` or `a=b`, values
/// quoted (with backslash escapes) or bare; the error says which matcher
/// is wrong and why.
pub fn parse_matchers(input: &str) -> Result<Vec<Matcher>, String> {
    let mut s = input.trim();
    if let Some(inner) = s.strip_prefix('{') {
        s = inner
            .strip_suffix('}')
            .ok_or_else(|| format!("{input:?}: missing closing '}}'"))?;
    }
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if !super::is_valid_label_name(name) {
            return Err(format!("{rest:?}: expected a label name"));
        }
        let after = rest[name_end..].trim_start();
        let (op, after) = [
            ("=~", MatchOp::Re),
            ("!~", MatchOp::NotRe),
            ("!=", MatchOp::NotEqual),
            ("=", MatchOp::Equal),
        ]
        .iter()
        .find_map(|(t, op)| after.strip_prefix(t).map(|a| (*op, a.trim_start())))
        .ok_or_else(|| format!("{rest:?}: expected one of =, !=, =~, !~ after {name:?}"))?;
        let (value, after) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, 't')) => value.push('\t'),
                        Some((_, c)) => value.push(c),
                        None => break,
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("{rest:?}: unterminated quoted value"))?;
            (value, &q[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push(Matcher::new(op, name, &value).map_err(|e| e.to_string())?);
        rest = after.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("{rest:?}: expected ',' between matchers"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertmanager_matcher_lists() {
        let m = parse_matchers(r#"{severity="critical", job=~"ml.*",x!=y}"#).unwrap();
        let shown: Vec<String> = m.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            shown,
            [r#"severity="critical""#, r#"job=~"ml.*""#, r#"x!="y""#]
        );
        assert!(m[1].matches("ml-pipeline") && !m[1].matches("node"));
        assert_eq!(parse_matchers(r#"a="q\"x""#).unwrap()[0].value, "q\"x");
        assert!(parse_matchers("a=\"x").is_err());
        assert!(parse_matchers("1a=x").is_err());
        assert!(parse_matchers("a=~(").is_err());
        assert!(parse_matchers("a x").is_err());
    }

    #[test]
    fn regex_is_anchored() {
        let m = Matcher::new(MatchOp::Re, "job", "api|web").unwrap();
        assert!(m.matches("api"));
        assert!(!m.matches("apis"));
        let n = Matcher::new(MatchOp::NotRe, "job", "a.*").unwrap();
        assert!(n.matches(""));
        assert!(!n.matches("abc"));
        assert!(Matcher::new(MatchOp::Re, "job", "(").is_err());
    }
}
