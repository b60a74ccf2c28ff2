//! Line numbers of the keys and list items of a block-style YAML text, by
//! path (`receivers[1].slack_configs[0].api_url`), so errors found after
//! serde (which keeps no positions) can name the line of the exact item.
//! Flow collections (`[a, b]`) count as values of their key; block
//! scalars (`|`, `>`) are skipped.

use std::collections::HashMap;

/// The deepest nesting of flow collections (`[`, `{`) a YAML text may
/// have. serde_yaml refuses more than 128 levels of any nesting when it
/// deserializes, but its scanner first does work quadratic in the flow
/// depth (100,000 levels: a minute), so deeper text is refused unread.
pub const MAX_YAML_DEPTH: usize = 128;

/// Why a YAML text could not be read: the line (1-based) where known, and
/// the reason without serde_yaml's trailing "at line L column C".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: Option<usize>,
    pub message: String,
}

impl From<serde_yaml::Error> for YamlError {
    fn from(e: serde_yaml::Error) -> Self {
        let mut message = e.to_string();
        if let Some(pos) = message.rfind(" at line ") {
            message.truncate(pos);
        }
        YamlError {
            line: e.location().map(|l| l.line()),
            message,
        }
    }
}

/// Deserializes a YAML text, refusing one nested deeper than
/// [`MAX_YAML_DEPTH`] before serde_yaml reads it.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    if let Some(line) = too_deep(text) {
        return Err(YamlError {
            line: Some(line),
            message: format!("YAML is nested too deeply: more than {MAX_YAML_DEPTH} levels"),
        });
    }
    Ok(serde_yaml::from_str(text)?)
}

/// The line at which flow collections nest deeper than [`MAX_YAML_DEPTH`],
/// if they do. Brackets count where a flow collection can start (at the
/// start of a value, or inside one); quoted strings, comments and block
/// scalars are skipped, so text such as templates does not count.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut block_scalar: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let content = line.trim_start();
        let indent = line.len() - content.len();
        if let Some(parent) = block_scalar {
            if content.is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        // The last significant character: where a value may start.
        let mut prev = b'\n';
        let mut quote: Option<u8> = None;
        let b = content.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if let Some(q) = quote {
                if c == q {
                    // '' inside a single-quoted string is a quote.
                    if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        quote = None;
                        prev = c;
                    }
                } else if c == b'\\' && q == b'"' {
                    i += 1;
                }
                i += 1;
                continue;
            }
            let value_start = depth > 0 || matches!(prev, b'\n' | b':' | b'-' | b'?' | b',');
            match c {
                b' ' | b'\t' => {
                    i += 1;
                    continue;
                }
                b'#' if i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t' => break,
                b'"' | b'\'' if value_start => quote = Some(c),
                b'[' | b'{' if value_start => {
                    depth += 1;
                    if depth > MAX_YAML_DEPTH {
                        return Some(n + 1);
                    }
                }
                b']' | b'}' if depth > 0 => depth -= 1,
                b'|' | b'>' if depth == 0 && matches!(prev, b':' | b'-' | b'\n') => {
                    block_scalar = Some(indent);
                    break;
                }
                _ => {}
            }
            prev = c;
            i += 1;
        }
    }
    None
}

pub struct YamlLines {
    lines: HashMap<String, usize>,
    /// Added to every line (for a section cut out of a larger file).
    offset: usize,
}

enum Entry {
    Key(String),
    Item(usize),
}

impl YamlLines {
    pub fn new(text: &str, offset: usize) -> YamlLines {
        let mut lines = HashMap::new();
        let mut stack: Vec<(usize, Entry)> = Vec::new();
        let mut block_scalar: Option<usize> = None;
        for (n, line) in text.lines().enumerate() {
            let content = line.trim_start();
            let mut col = line.len() - content.len();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if let Some(indent) = block_scalar {
                if col > indent {
                    continue;
                }
                block_scalar = None;
            }
            let mut rest = content;
            while let Some(after) = rest
                .strip_prefix('-')
                .filter(|a| a.is_empty() || a.starts_with(' '))
            {
                while stack.last().is_some_and(|(i, _)| *i > col) {
                    stack.pop();
                }
                let index = match stack.last() {
                    Some((i, Entry::Item(k))) if *i == col => {
                        let k = k + 1;
                        stack.pop();
                        k
                    }
                    _ => 0,
                };
                stack.push((col, Entry::Item(index)));
                lines.insert(path_of(&stack), n + 1);
                let trimmed = after.trim_start();
                col += 1 + after.len() - trimmed.len();
                rest = trimmed;
            }
            let Some(key) = key_of(rest) else { continue };
            while stack.last().is_some_and(|(i, _)| *i >= col) {
                stack.pop();
            }
            stack.push((col, Entry::Key(key.to_string())));
            lines.insert(path_of(&stack), n + 1);
            let value = rest[rest.find(':').map_or(rest.len(), |p| p + 1)..].trim_start();
            if value.starts_with('|') || value.starts_with('>') {
                block_scalar = Some(col);
            }
        }
        YamlLines { lines, offset }
    }

    /// The line of `path`, or of its nearest written ancestor.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(l + self.offset);
            }
            p = &p[..p.rfind(['.', '['])?];
        }
    }
}

fn key_of(s: &str) -> Option<&str> {
    let (key, rest) = if let Some(q @ ('"' | '\'')) = s.chars().next() {
        let end = s[1..].find(q)? + 1;
        (&s[1..end], &s[end + 1..])
    } else {
        let colon = s.find(':')?;
        (&s[..colon], &s[colon..])
    };
    let rest = rest.trim_start();
    let after = rest.strip_prefix(':')?;
    (after.is_empty() || after.starts_with([' ', '\t'])).then_some(key.trim())
}

fn path_of(stack: &[(usize, Entry)]) -> String {
    let mut p = String::new();
    for (_, e) in stack {
        match e {
            Entry::Key(k) => {
                if !p.is_empty() {
                    p.push('.');
                }
                p.push_str(k);
            }
            Entry::Item(i) => p.push_str(&format!("[{i}]")),
        }
    }
    p
}

/// Keys whose values are secrets in mlmon.yml, prometheus.yml and
/// alertmanager.yml.
const SECRET_KEYS: [&str; 12] = [
    "password",
    "auth_password",
    "smtp_auth_password",
    "auth_secret",
    "smtp_auth_secret",
    "credentials",
    "bearer_token",
    "bearer_tokens",
    "basic_auth_users",
    "api_url",
    "slack_api_url",
    "routing_key",
];

/// `text` with the values of secret keys (and everything nested under a
/// secret key written as a block) replaced by `<secret>`.
pub fn redact_secrets(text: &str) -> String {
    let mut out = String::new();
    let mut inside: Option<usize> = None;
    for line in text.lines() {
        let content = line.trim_start();
        let indent = line.len() - content.len();
        if let Some(i) = inside {
            if content.is_empty() || indent > i {
                match line.find([':', '-']) {
                    Some(p) if !content.starts_with('#') => {
                        out.push_str(&line[..=p]);
                        out.push_str(" <secret>");
                    }
                    _ => out.push_str(line),
                }
                out.push('\n');
                continue;
            }
            inside = None;
        }
        let body = content.trim_start_matches("- ");
        let key = body.split(':').next().unwrap_or("").trim();
        let colon = line.find(':');
        if SECRET_KEYS.contains(&key) && body.contains(':') {
            let colon = colon.expect("the line has a colon");
            let value = line[colon + 1..].trim();
            if value.is_empty() || value.starts_with('#') {
                inside = Some(indent);
                out.push_str(line);
            } else {
                out.push_str(&line[..colon + 1]);
                out.push_str(" <secret>");
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// One problem in a configuration file (mlmon.yml, a rule file,
/// alertmanager.yml, a web config): `file:line: path.to.key: why`, the
/// path being part of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &str, line: Option<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The file `name` could not be read.
    pub fn unreadable(name: &str, e: &std::io::Error) -> ConfigErrors {
        ConfigErrors(vec![ConfigError::new(
            name,
            None,
            format!("cannot read: {e}"),
        )])
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn secrets_are_redacted() {
        let text = "web:\n  basic_auth_users:\n    ops: $2y$10$abc\n  listen: x\nglobal:\n  smtp_auth_password: 'hunter2'\n  bearer_tokens: [abc]\nreceivers:\n  - slack_configs:\n      - api_url: 'https://hooks/x'\n";
        let r = super::redact_secrets(text);
        for secret in ["$2y$10$abc", "hunter2", "abc]", "hooks/x"] {
            assert!(!r.contains(secret), "{secret} in\n{r}");
        }
        assert!(r.contains("listen: x"));
        assert!(r.contains("ops: <secret>"));
    }

    use super::*;

    #[test]
    fn paths_of_keys_and_items() {
        let text = "\
route:
  receiver: a
  routes:
    - match:
        severity: critical
      receiver: b
    - receiver: c
receivers:
- name: a
  email_configs:
    - to: x
      body: |
        text: not a key
        more
      headers:
        Priority: high
- name: 'b'
  slack_configs:
  - api_url: u
";
        let y = YamlLines::new(text, 0);
        assert_eq!(y.line("route.routes[0].match.severity"), Some(5));
        assert_eq!(y.line("route.routes[1].receiver"), Some(7));
        assert_eq!(
            y.line("receivers[0].email_configs[0].headers.Priority"),
            Some(16)
        );
        assert_eq!(y.line("receivers[1].name"), Some(17));
        assert_eq!(y.line("receivers[1].slack_configs[0].api_url"), Some(19));
        assert_eq!(y.line("receivers[1].slack_configs[0].channel"), Some(19));
        assert_eq!(YamlLines::new(text, 10).line("route"), Some(11));
    }

    #[test]
    fn deep_flow_nesting_is_refused_unread() {
        let deep = |n: usize| format!("a:\n  b: {}1{}\n", "[".repeat(n), "]".repeat(n));
        let ok: Result<serde_yaml::Value, _> = parse_yaml(&deep(100));
        assert!(ok.is_ok());
        let err = parse_yaml::<serde_yaml::Value>(&deep(100_000)).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("nested too deeply"), "{}", err.message);
        // Brackets in strings, plain scalars, comments and block scalars
        // are text.
        let text = format!(
            "a: '{0}'\nb: \"{0}\"\nc: x{0}\nd: 1 # {0}\ne: |\n  {0}\n  {{{{ if }}}}\nf: [1, {{g: 2}}]\n",
            "[".repeat(200)
        );
        let v: serde_yaml::Value = parse_yaml(&text).unwrap();
        assert_eq!(v["f"][1]["g"], serde_yaml::Value::from(2));
    }
}
