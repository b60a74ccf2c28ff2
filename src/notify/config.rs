//! `alertmanager.yml`, read as Alertmanager 0.25 reads it: the same keys
//! (unknown ones are errors), the same defaults and inheritance, and the
//! same accept/reject decisions as `amtool check-config`, with errors that
//! name the file, line and field. One documented extension: `subject` and
//! `body` under `email_configs` (which Alertmanager refuses) set the Subject
//! header and the text body, with a note.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_yaml::Value;

use super::integrations::{email, slack, telegram, webhook, Integration};
use crate::model::{
    is_valid_label_name, parse_matchers, ConfigError, ConfigErrors, MatchOp, Matcher, PromDuration,
    YamlLines,
};

/// A validated Alertmanager configuration.
#[derive(Debug, Clone)]
pub struct AmConfig {
    pub resolve_timeout_ms: i64,
    pub route: Route,
    pub inhibit_rules: Vec<InhibitRule>,
    pub receivers: Vec<Receiver>,
    /// Template files (globs expanded), read in this order.
    pub templates: Vec<PathBuf>,
    /// Named time intervals (`time_intervals` and `mute_time_intervals`).
    pub time_intervals: BTreeMap<String, Vec<super::timeinterval::TimeInterval>>,
    /// What `mlmon check` should tell the user besides errors
    /// (`file:line: note`).
    pub notes: Vec<String>,
    /// The text it was read from.
    pub original: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GroupBy {
    /// `group_by: ['...']`: every label.
    All,
    Labels(Vec<String>),
}

/// A node of the routing tree, with its parent's settings inherited.
#[derive(Debug, Clone)]
pub struct Route {
    /// `{}` for the root, `{}/0/1` for the second child of the first child:
    /// stable across restarts as long as the tree does not change.
    pub id: String,
    /// Alertmanager's route key (`{}/{severity="critical"}`), which starts
    /// group keys in webhooks and the API.
    pub key: String,
    pub receiver: String,
    pub group_by: GroupBy,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    pub matchers: Vec<Matcher>,
    pub continue_matching: bool,
    pub routes: Vec<Route>,
    /// No notifications while one of these intervals holds.
    pub mute_time_intervals: Vec<String>,
    /// If any: notifications only while one of these holds.
    pub active_time_intervals: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    /// In the order of the receiver's keys (email, Slack, webhook,
    /// Telegram), each kind in the order written.
    pub integrations: Vec<Arc<dyn Integration>>,
}

impl Receiver {
    /// Each integration with its index among those of its kind: `email[0]`.
    pub fn indexed(&self) -> Vec<(Arc<dyn Integration>, usize)> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        self.integrations
            .iter()
            .map(|i| {
                let n = seen.entry(i.kind()).or_default();
                *n += 1;
                (i.clone(), *n - 1)
            })
            .collect()
    }
}

pub use super::integrations::email::EmailConfig;
pub use super::integrations::slack::{SlackConfig, SlackField};
pub use super::integrations::telegram::TelegramConfig;
pub use super::integrations::webhook::WebhookConfig;
use crate::http::config::{RawHttpConfig as RawHttp, RawTls};
pub use crate::http::{ClientConfig as HttpConfig, Secret, TlsConfig as Tls};

// ---- the file, key for key ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    global: Option<RawGlobal>,
    route: Option<RawRoute>,
    inhibit_rules: Vec<RawInhibit>,
    receivers: Vec<RawReceiver>,
    templates: Vec<String>,
    mute_time_intervals: Vec<RawTimeInterval>,
    time_intervals: Vec<RawTimeInterval>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawGlobal {
    pub(super) resolve_timeout: Option<PromDuration>,
    pub(super) http_config: Option<RawHttp>,
    pub(super) smtp_from: String,
    pub(super) smtp_hello: Option<String>,
    pub(super) smtp_smarthost: String,
    pub(super) smtp_auth_username: String,
    pub(super) smtp_auth_password: String,
    pub(super) smtp_auth_password_file: String,
    pub(super) smtp_auth_secret: String,
    pub(super) smtp_auth_identity: String,
    pub(super) smtp_require_tls: Option<bool>,
    pub(super) slack_api_url: Option<String>,
    pub(super) slack_api_url_file: Option<String>,
    // Integrations mlmon does not deliver to; accepted so files load.
    pub(super) pagerduty_url: Option<String>,
    pub(super) opsgenie_api_url: Option<String>,
    pub(super) opsgenie_api_key: Option<String>,
    pub(super) opsgenie_api_key_file: Option<String>,
    pub(super) wechat_api_url: Option<String>,
    pub(super) wechat_api_secret: Option<String>,
    pub(super) wechat_api_corp_id: Option<String>,
    pub(super) victorops_api_url: Option<String>,
    pub(super) victorops_api_key: Option<String>,
    pub(super) victorops_api_key_file: Option<String>,
    pub(super) telegram_api_url: Option<String>,
    pub(super) webex_api_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRoute {
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    #[serde(rename = "continue")]
    continue_matching: bool,
    #[serde(rename = "match")]
    match_eq: BTreeMap<String, String>,
    match_re: BTreeMap<String, String>,
    matchers: Vec<String>,
    mute_time_intervals: Vec<String>,
    active_time_intervals: Vec<String>,
    group_wait: Option<PromDuration>,
    group_interval: Option<PromDuration>,
    repeat_interval: Option<PromDuration>,
    routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawInhibit {
    source_match: BTreeMap<String, String>,
    source_match_re: BTreeMap<String, String>,
    source_matchers: Vec<String>,
    target_match: BTreeMap<String, String>,
    target_match_re: BTreeMap<String, String>,
    target_matchers: Vec<String>,
    equal: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeInterval {
    name: String,
    time_intervals: Vec<super::timeinterval::RawInterval>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReceiver {
    name: String,
    // The integrations mlmon delivers to (see `integrations`).
    email_configs: Vec<email::RawEmail>,
    slack_configs: Vec<slack::RawSlack>,
    webhook_configs: Vec<webhook::RawWebhook>,
    telegram_configs: Vec<telegram::RawTelegram>,
    // Accepted so files load; mlmon does not deliver to these.
    discord_configs: Vec<Value>,
    opsgenie_configs: Vec<Value>,
    pagerduty_configs: Vec<Value>,
    pushover_configs: Vec<Value>,
    sns_configs: Vec<Value>,
    victorops_configs: Vec<Value>,
    webex_configs: Vec<Value>,
    wechat_configs: Vec<Value>,
}

// ---- validation ----

/// Where problems go while a file is checked, each with its line.
pub(super) struct Check<'a> {
    file: &'a str,
    lines: YamlLines,
    pub(super) base: &'a Path,
    errors: Vec<ConfigError>,
    notes: Vec<String>,
}

impl Check<'_> {
    pub(super) fn error(&mut self, path: &str, message: impl std::fmt::Display) {
        let message = if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        let e = ConfigError::new(self.file, self.lines.line(path), message);
        self.errors.push(e);
    }

    pub(super) fn note(&mut self, path: &str, message: impl std::fmt::Display) {
        let note = format!("note: {path}: {message}");
        let n = ConfigError::new(self.file, self.lines.line(path), note);
        self.notes.push(n.to_string());
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub(super) fn secret(&self, inline: &str, file: &str) -> Option<Secret> {
        if !file.is_empty() {
            Some(Secret::File(self.path(file)))
        } else if !inline.is_empty() {
            Some(Secret::Inline(inline.to_string()))
        } else {
            None
        }
    }
}

/// Why `s` is not an http(s) URL, in Alertmanager's words, plus a hint
/// when it is a placeholder someone forgot to fill in.
pub(super) fn url_problem(s: &str) -> Option<String> {
    let scheme = s.split_once("://").map_or_else(
        || {
            // Go's url.Parse: a scheme is letters before a ':'.
            s.split_once(':')
                .filter(|(p, _)| {
                    !p.is_empty()
                        && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                })
                .map_or("", |(p, _)| p)
        },
        |(p, _)| p,
    );
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        let placeholder = looks_like_placeholder(s);
        let mut m = format!("unsupported scheme {scheme:?} for URL");
        if placeholder {
            m = format!(
                "{s:?} looks like a placeholder, not a URL: replace it with the real http(s) URL \
                 (amtool: {m})"
            );
        }
        return Some(m);
    }
    let rest = s.split_once("://").map_or("", |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    if host.is_empty() {
        return Some("missing host for URL".into());
    }
    None
}

/// `YOUR_SLACK_WEBHOOK_URL`, `<url>`, `CHANGE_ME`, `TODO`, `xxx`.
pub fn looks_like_placeholder(s: &str) -> bool {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    (t.starts_with('<') && t.ends_with('>'))
        || upper.starts_with("YOUR")
        || upper.contains("CHANGE_ME")
        || upper.contains("CHANGEME")
        || upper == "TODO"
        || upper.chars().all(|c| c == 'X')
        || (!t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
            && t.contains('_'))
}

pub(super) fn canonical_header(h: &str) -> String {
    h.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn duration_ms(d: Option<PromDuration>, default_ms: i64) -> i64 {
    d.map_or(default_ms, |d| d.millis())
}

/// The configuration without an `alertmanager:` section: alerts grouped by
/// name and component (with the original stack's timers) into the `log`
/// receiver, which has no integration, so notifications go to the log and
/// the recent-notifications list.
pub const DEFAULT_CONFIG: &str = "route:
  receiver: log
  group_by: ['alertname', 'component']
  group_wait: 10s
  group_interval: 10s
  repeat_interval: 1h
receivers:
  - name: log
";

impl AmConfig {
    pub fn default_config() -> AmConfig {
        AmConfig::parse(DEFAULT_CONFIG, "<default notifier>", 0, Path::new(""))
            .expect("the default notifier configuration is valid")
    }

    /// Reads and validates an Alertmanager config file.
    pub fn load(path: &Path) -> Result<AmConfig, ConfigErrors> {
        let name = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigErrors::unreadable(&name, &e))?;
        let base = path.parent().unwrap_or(Path::new(""));
        AmConfig::parse(&text, &name, 0, base)
    }

    /// Validates `text`; `file` names it in messages, `line_offset` is added
    /// to line numbers (for a section of a larger file) and `base` anchors
    /// relative paths.
    pub fn parse(
        text: &str,
        file: &str,
        line_offset: usize,
        base: &Path,
    ) -> Result<AmConfig, ConfigErrors> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            crate::model::parse_yaml(text).map_err(|e| {
                let line = e.line.map(|l| l + line_offset);
                ConfigErrors(vec![ConfigError::new(file, line, e.message)])
            })?
        };
        let mut c = Check {
            file,
            lines: YamlLines::new(text, line_offset),
            base,
            errors: Vec::new(),
            notes: Vec::new(),
        };
        let config = resolve(raw, &mut c);
        match config {
            Some(mut cfg) if c.errors.is_empty() => {
                cfg.notes = c.notes;
                cfg.original = text.to_string();
                Ok(cfg)
            }
            _ => Err(ConfigErrors(c.errors)),
        }
    }

    /// The original text with secret values replaced by `<secret>`, as
    /// Alertmanager's status API shows its configuration.
    pub fn redacted(&self) -> String {
        crate::model::redact_secrets(&self.original)
    }

    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }
}

fn resolve(raw: RawConfig, c: &mut Check) -> Option<AmConfig> {
    let g = raw.global.unwrap_or_default();
    if g.slack_api_url.is_some() && g.slack_api_url_file.is_some() {
        c.error(
            "global.slack_api_url",
            "at most one of slack_api_url & slack_api_url_file must be configured",
        );
    }
    if !g.smtp_auth_password.is_empty() && !g.smtp_auth_password_file.is_empty() {
        c.error(
            "global.smtp_auth_password",
            "at most one of smtp_auth_password & smtp_auth_password_file must be configured",
        );
    }
    if let Some(u) = &g.slack_api_url {
        if let Some(p) = url_problem(u) {
            c.error("global.slack_api_url", p);
        }
    }
    if !g.smtp_smarthost.is_empty() && host_port(&g.smtp_smarthost).is_err() {
        let e = host_port(&g.smtp_smarthost).unwrap_err();
        c.error("global.smtp_smarthost", e);
    }
    let global_http = g
        .http_config
        .clone()
        .map(|h| http_config(h, "global.http_config", c))
        .unwrap_or_default();

    let mut receivers = Vec::new();
    let mut names = BTreeSet::new();
    for (ri, r) in raw.receivers.into_iter().enumerate() {
        let rp = format!("receivers[{ri}]");
        if r.name.is_empty() {
            c.error(&rp, "missing name in receiver");
        } else if !names.insert(r.name.clone()) {
            c.error(
                &format!("{rp}.name"),
                format!("notification config name {:?} is not unique", r.name),
            );
        }
        for (kind, n) in [
            ("discord_configs", r.discord_configs.len()),
            ("opsgenie_configs", r.opsgenie_configs.len()),
            ("pagerduty_configs", r.pagerduty_configs.len()),
            ("pushover_configs", r.pushover_configs.len()),
            ("sns_configs", r.sns_configs.len()),
            ("victorops_configs", r.victorops_configs.len()),
            ("webex_configs", r.webex_configs.len()),
            ("wechat_configs", r.wechat_configs.len()),
        ] {
            if n > 0 {
                c.note(
                    &format!("{rp}.{kind}"),
                    "accepted, but mlmon delivers only email, Slack, webhook and Telegram \
                     notifications; these are not sent",
                );
            }
        }
        // The registration of each integration: its key and its parser.
        let mut list: Vec<Arc<dyn Integration>> = Vec::new();
        let h = &global_http;
        add(
            &mut list,
            r.email_configs,
            "email_configs",
            &rp,
            c,
            |e, p, c| email::parse(e, &g, p, c),
        );
        add(
            &mut list,
            r.slack_configs,
            "slack_configs",
            &rp,
            c,
            |s, p, c| slack::parse(s, &g, h, p, c),
        );
        add(
            &mut list,
            r.webhook_configs,
            "webhook_configs",
            &rp,
            c,
            |w, p, c| webhook::parse(w, h, p, c),
        );
        add(
            &mut list,
            r.telegram_configs,
            "telegram_configs",
            &rp,
            c,
            |t, p, c| telegram::parse(t, &g, h, p, c),
        );
        receivers.push(Receiver {
            name: r.name,
            integrations: list,
        });
    }

    let Some(raw_route) = raw.route else {
        c.error("", "no route provided in config");
        return None;
    };
    if raw_route.continue_matching {
        c.error("route.continue", "cannot have continue in root route");
    }
    match &raw_route.receiver {
        None => c.error("route", "root route must specify a default receiver"),
        Some(r) if r.is_empty() => c.error("route", "root route must specify a default receiver"),
        _ => {}
    }
    if !raw_route.match_eq.is_empty()
        || !raw_route.match_re.is_empty()
        || !raw_route.matchers.is_empty()
    {
        c.error("route", "root route must not have any matchers");
    }
    if !raw_route.mute_time_intervals.is_empty() {
        c.error("route", "root route must not have any mute time intervals");
    }
    if !raw_route.active_time_intervals.is_empty() {
        c.error(
            "route",
            "root route must not have any active time intervals",
        );
    }
    let mut intervals = BTreeSet::new();
    let mut time_intervals = BTreeMap::new();
    for (key, list) in [
        ("mute_time_intervals", &raw.mute_time_intervals),
        ("time_intervals", &raw.time_intervals),
    ] {
        for (i, t) in list.iter().enumerate() {
            let p = format!("{key}[{i}]");
            let mut parsed = Vec::new();
            for (j, ti) in t.time_intervals.iter().enumerate() {
                let tp = format!("{p}.time_intervals[{j}]");
                match super::timeinterval::TimeInterval::parse(ti) {
                    Ok((ti, note)) => {
                        if let Some(n) = note {
                            c.note(&tp, n);
                        }
                        parsed.push(ti);
                    }
                    Err(e) => c.error(&tp, e),
                }
            }
            time_intervals.insert(t.name.clone(), parsed);
            if t.name.is_empty() {
                let what = if key == "time_intervals" {
                    "missing name in time interval"
                } else {
                    "missing name in mute time interval"
                };
                c.error(&p, what);
            } else if !intervals.insert(t.name.clone()) {
                let what = if key == "time_intervals" {
                    "time interval"
                } else {
                    "mute time interval"
                };
                c.error(
                    &format!("{p}.name"),
                    format!("{what} {:?} is not unique", t.name),
                );
            }
        }
    }
    let root_defaults = Route {
        id: String::new(),
        key: String::new(),
        receiver: String::new(),
        group_by: GroupBy::Labels(Vec::new()),
        group_wait_ms: 30_000,
        group_interval_ms: 300_000,
        repeat_interval_ms: 4 * 3_600_000,
        matchers: Vec::new(),
        continue_matching: false,
        routes: Vec::new(),
        mute_time_intervals: Vec::new(),
        active_time_intervals: Vec::new(),
    };
    let route = route(
        raw_route,
        &root_defaults,
        "route",
        "{}",
        &names,
        &intervals,
        c,
    );

    let mut inhibit_rules = Vec::new();
    for (i, r) in raw.inhibit_rules.into_iter().enumerate() {
        let p = format!("inhibit_rules[{i}]");
        let source = matchers(
            &r.source_match,
            &r.source_match_re,
            &r.source_matchers,
            &p,
            "source",
            c,
        );
        let target = matchers(
            &r.target_match,
            &r.target_match_re,
            &r.target_matchers,
            &p,
            "target",
            c,
        );
        for l in &r.equal {
            if !is_valid_label_name(l) {
                c.error(&format!("{p}.equal"), format!("invalid label name {l:?}"));
            }
        }
        inhibit_rules.push(InhibitRule {
            source,
            target,
            equal: r.equal,
        });
    }

    let mut templates = Vec::new();
    for (i, t) in raw.templates.iter().enumerate() {
        let pattern = c.path(t).display().to_string();
        match glob::glob(&pattern) {
            Ok(paths) => {
                let mut found: Vec<PathBuf> = paths.flatten().collect();
                found.sort();
                for f in &found {
                    match std::fs::read_to_string(f) {
                        Ok(text) => {
                            if let Err(e) = super::template::check_file(&text) {
                                c.error(
                                    &format!("templates[{i}]"),
                                    format!("{}: {e}", f.display()),
                                );
                            }
                        }
                        Err(e) => c.error(
                            &format!("templates[{i}]"),
                            format!("cannot read {}: {e}", f.display()),
                        ),
                    }
                }
                templates.extend(found);
            }
            Err(e) => c.error(&format!("templates[{i}]"), format!("invalid pattern: {e}")),
        }
    }
    let route = route?;
    Some(AmConfig {
        resolve_timeout_ms: duration_ms(g.resolve_timeout, 300_000),
        route,
        inhibit_rules,
        receivers,
        templates,
        time_intervals,
        notes: Vec::new(),
        original: String::new(),
    })
}

/// Go's `net.SplitHostPort` as Alertmanager checks `smarthost`: the port
/// must be present, and may be a service name.
/// Parses each entry of a receiver's `key` list with `parse`, keeping the
/// valid ones.
fn add<R, I: Integration + 'static>(
    list: &mut Vec<Arc<dyn Integration>>,
    raw: Vec<R>,
    key: &str,
    receiver_path: &str,
    c: &mut Check,
    mut parse: impl FnMut(R, &str, &mut Check) -> Option<I>,
) {
    for (i, r) in raw.into_iter().enumerate() {
        if let Some(x) = parse(r, &format!("{receiver_path}.{key}[{i}]"), c) {
            list.push(Arc::new(x));
        }
    }
}

pub(super) fn host_port(s: &str) -> Result<(String, String), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| format!("address {s}: missing ']' in address"))?;
        let p = p
            .strip_prefix(':')
            .ok_or_else(|| format!("address {s}: missing port in address"))?;
        (h, p)
    } else {
        let (h, p) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("address {s}: missing port in address"))?;
        if h.contains(':') {
            return Err(format!("address {s}: too many colons in address"));
        }
        (h, p)
    };
    if port.is_empty() {
        return Err(format!("address {s:?}: port cannot be empty"));
    }
    Ok((host.to_string(), port.to_string()))
}

/// A smarthost port as a number (service names resolved as Go does for
/// the mail ones).
pub fn port_number(port: &str) -> Result<u16, String> {
    match port {
        "smtp" => Ok(25),
        "submission" => Ok(587),
        "smtps" | "submissions" | "urd" => Ok(465),
        p => p.parse().map_err(|_| format!("unknown port {p:?}")),
    }
}

fn matchers(
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
    list: &[String],
    path: &str,
    prefix: &str,
    c: &mut Check,
) -> Vec<Matcher> {
    let key = |k: &str| {
        if prefix.is_empty() {
            format!("{path}.{k}")
        } else {
            format!("{path}.{prefix}_{k}")
        }
    };
    let mut out = Vec::new();
    for (n, v) in eq {
        if !is_valid_label_name(n) {
            c.error(&key("match"), format!("invalid label name {n:?}"));
            continue;
        }
        out.push(Matcher::equal(n, v));
    }
    for (n, v) in re {
        if !is_valid_label_name(n) {
            c.error(&key("match_re"), format!("invalid label name {n:?}"));
            continue;
        }
        match Matcher::new(MatchOp::Re, n, v) {
            Ok(m) => out.push(m),
            Err(_) => c.error(&key("match_re"), format!("invalid regexp value for {n:?}")),
        }
    }
    for (i, m) in list.iter().enumerate() {
        match parse_matchers(m) {
            Ok(ms) => out.extend(ms),
            Err(e) => c.error(&format!("{}[{i}]", key("matchers")), e),
        }
    }
    out
}

fn route(
    r: RawRoute,
    parent: &Route,
    path: &str,
    id: &str,
    receivers: &BTreeSet<String>,
    intervals: &BTreeSet<String>,
    c: &mut Check,
) -> Option<Route> {
    let receiver = r
        .receiver
        .clone()
        .unwrap_or_else(|| parent.receiver.clone());
    if let Some(name) = &r.receiver {
        if !name.is_empty() && !receivers.contains(name) {
            c.error(
                &format!("{path}.receiver"),
                format!("undefined receiver {name:?} used in route"),
            );
        }
    }
    for ti in r.mute_time_intervals.iter().chain(&r.active_time_intervals) {
        if !intervals.contains(ti) {
            c.error(
                path,
                format!("undefined time interval {ti:?} used in route"),
            );
        }
    }
    let group_by = match &r.group_by {
        None => parent.group_by.clone(),
        Some(list) => {
            let mut seen = BTreeSet::new();
            let mut ok = true;
            for l in list {
                if l == "..." {
                    continue;
                }
                if !is_valid_label_name(l) {
                    c.error(
                        &format!("{path}.group_by"),
                        format!("invalid label name {l:?} in group_by list"),
                    );
                    ok = false;
                } else if !seen.insert(l.clone()) {
                    c.error(
                        &format!("{path}.group_by"),
                        format!("duplicated label {l:?} in group_by"),
                    );
                    ok = false;
                }
            }
            if list.iter().any(|l| l == "...") {
                if list.len() > 1 {
                    c.error(
                        &format!("{path}.group_by"),
                        "cannot have wildcard group_by (`...`) and other other labels at the same time",
                    );
                }
                GroupBy::All
            } else {
                let _ = ok;
                GroupBy::Labels(list.clone())
            }
        }
    };
    let group_interval_ms = duration_ms(r.group_interval, parent.group_interval_ms);
    if r.group_interval.is_some() && group_interval_ms == 0 {
        c.error(
            &format!("{path}.group_interval"),
            "group_interval cannot be zero",
        );
    }
    let repeat_interval_ms = duration_ms(r.repeat_interval, parent.repeat_interval_ms);
    if r.repeat_interval.is_some() && repeat_interval_ms == 0 {
        c.error(
            &format!("{path}.repeat_interval"),
            "repeat_interval cannot be zero",
        );
    }
    let matchers = matchers(&r.match_eq, &r.match_re, &r.matchers, path, "", c);
    let mut sorted: Vec<String> = matchers.iter().map(|m| m.to_string()).collect();
    sorted.sort();
    let key = if parent.key.is_empty() {
        "{}".to_string()
    } else {
        format!("{}/{{{}}}", parent.key, sorted.join(","))
    };
    let mut node = Route {
        id: id.to_string(),
        key,
        receiver,
        group_by,
        group_wait_ms: duration_ms(r.group_wait, parent.group_wait_ms),
        group_interval_ms,
        repeat_interval_ms,
        matchers,
        continue_matching: r.continue_matching,
        routes: Vec::new(),
        mute_time_intervals: r.mute_time_intervals.clone(),
        active_time_intervals: r.active_time_intervals.clone(),
    };
    let mut ok = true;
    for (i, child) in r.routes.into_iter().enumerate() {
        match route(
            child,
            &node,
            &format!("{path}.routes[{i}]"),
            &format!("{id}/{i}"),
            receivers,
            intervals,
            c,
        ) {
            Some(ch) => node.routes.push(ch),
            None => ok = false,
        }
    }
    ok.then_some(node)
}

/// Reports `problems` of the HTTP settings or `tls_config` at `path`.
fn report(path: &str, problems: Vec<crate::http::config::Problem>, c: &mut Check) {
    for p in problems {
        match p.key.as_str() {
            "" => c.error(path, p.message),
            key => c.error(&format!("{path}.{key}"), p.message),
        }
    }
}

pub(super) fn tls(t: RawTls, path: &str, c: &mut Check) -> Tls {
    let (tls, problems) = t.resolve(c.base);
    report(&format!("{path}.tls_config"), problems, c);
    tls
}

pub(super) fn http_config(h: RawHttp, path: &str, c: &mut Check) -> HttpConfig {
    let (http, problems) = h.resolve(c.base);
    report(path, problems, c);
    http
}
