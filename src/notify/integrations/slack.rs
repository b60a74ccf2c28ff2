//! Slack incoming webhooks: one attachment (title, text, colour by
//! status, fields, actions), channel, username and icons.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use serde_yaml::Value as Yaml;

use super::{post_json, Integration, Rendered, Sending};
use crate::http::config::RawHttpConfig as RawHttp;
use crate::http::{ClientConfig as HttpConfig, Secret};
use crate::notify::config::{http_config, url_problem, Check, RawGlobal};
use crate::notify::template::{Data, Library};
use crate::notify::Job;

#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub send_resolved: bool,
    pub api_url: Secret,
    pub http: HttpConfig,
    pub channel: String,
    pub username: String,
    pub color: String,
    pub title: String,
    pub title_link: String,
    pub pretext: String,
    pub text: String,
    pub fields: Vec<SlackField>,
    pub short_fields: bool,
    pub footer: String,
    pub fallback: String,
    pub callback_id: String,
    pub icon_emoji: String,
    pub icon_url: String,
    pub image_url: String,
    pub thumb_url: String,
    pub link_names: bool,
    pub mrkdwn_in: Vec<String>,
    pub actions: Vec<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackField {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub short: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(in crate::notify) struct RawSlack {
    send_resolved: Option<bool>,
    http_config: Option<RawHttp>,
    api_url: Option<String>,
    api_url_file: Option<String>,
    channel: String,
    username: Option<String>,
    color: Option<String>,
    title: Option<String>,
    title_link: Option<String>,
    pretext: Option<String>,
    text: Option<String>,
    fields: Vec<SlackField>,
    short_fields: bool,
    footer: Option<String>,
    fallback: Option<String>,
    callback_id: Option<String>,
    icon_emoji: Option<String>,
    icon_url: Option<String>,
    image_url: String,
    thumb_url: String,
    link_names: bool,
    mrkdwn_in: Vec<String>,
    actions: Vec<BTreeMap<String, Yaml>>,
}

impl Integration for SlackConfig {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn send_resolved(&self) -> bool {
        self.send_resolved
    }

    fn render(&self, job: &Job, lib: &Library) -> Result<Rendered, String> {
        let body = payload(self, &job.data, lib)?;
        let a = &body["attachments"][0];
        let summary = (
            a["title"].as_str().unwrap_or("").to_string(),
            a["text"].as_str().unwrap_or("").to_string(),
        );
        Ok(Rendered::json(summary, body))
    }

    fn send<'a>(&'a self, rendered: &'a Rendered, timeout: Duration) -> Sending<'a> {
        Box::pin(
            async move { post_json(&self.api_url.read(), &self.http, rendered, timeout).await },
        )
    }
}

/// A `slack_configs` entry; `api_url` and `http_config` default to the
/// global ones.
pub(in crate::notify) fn parse(
    s: RawSlack,
    g: &RawGlobal,
    global_http: &HttpConfig,
    path: &str,
    c: &mut Check,
) -> Option<SlackConfig> {
    if s.api_url.is_some() && s.api_url_file.is_some() {
        c.error(
            path,
            "at most one of api_url & api_url_file must be configured",
        );
    }
    for (i, f) in s.fields.iter().enumerate() {
        if f.title.is_empty() {
            c.error(
                &format!("{path}.fields[{i}]"),
                "missing title in Slack field configuration",
            );
        } else if f.value.is_empty() {
            c.error(
                &format!("{path}.fields[{i}]"),
                "missing value in Slack field configuration",
            );
        }
    }
    let mut actions = Vec::new();
    for (i, a) in s.actions.iter().enumerate() {
        let ap = format!("{path}.actions[{i}]");
        let text = |k: &str| a.get(k).and_then(Yaml::as_str).unwrap_or("").to_string();
        if text("type").is_empty() {
            c.error(&ap, "missing type in Slack action configuration");
        } else if text("text").is_empty() {
            c.error(&ap, "missing text in Slack action configuration");
        } else if text("url").is_empty() && text("name").is_empty() {
            c.error(&ap, "missing name or url in Slack action configuration");
        }
        actions.push(
            a.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect(),
        );
    }
    let api_url = match (&s.api_url, &s.api_url_file) {
        (Some(u), _) => {
            if let Some(p) = url_problem(u) {
                c.error(&format!("{path}.api_url"), p);
                return None;
            }
            Secret::Inline(u.clone())
        }
        (None, Some(f)) => Secret::File(c.path(f)),
        (None, None) => match (&g.slack_api_url, &g.slack_api_url_file) {
            (Some(u), _) => Secret::Inline(u.clone()),
            (None, Some(f)) => Secret::File(c.path(f)),
            (None, None) => {
                c.error(
                    path,
                    "no global Slack API URL set either inline or in a file",
                );
                return None;
            }
        },
    };
    let http = s
        .http_config
        .map(|h| http_config(h, &format!("{path}.http_config"), c))
        .unwrap_or_else(|| global_http.clone());
    let t = |v: Option<String>, name: &str| {
        v.unwrap_or_else(|| format!(r#"{{{{ template "slack.default.{name}" . }}}}"#))
    };
    Some(SlackConfig {
        send_resolved: s.send_resolved.unwrap_or(false),
        api_url,
        http,
        channel: s.channel,
        username: t(s.username, "username"),
        color: s.color.unwrap_or_else(|| {
            r#"{{ if eq .Status "firing" }}danger{{ else }}good{{ end }}"#.into()
        }),
        title: t(s.title, "title"),
        title_link: t(s.title_link, "titlelink"),
        pretext: t(s.pretext, "pretext"),
        text: t(s.text, "text"),
        fields: s.fields,
        short_fields: s.short_fields,
        footer: t(s.footer, "footer"),
        fallback: t(s.fallback, "fallback"),
        callback_id: t(s.callback_id, "callbackid"),
        icon_emoji: t(s.icon_emoji, "iconemoji"),
        icon_url: t(s.icon_url, "iconurl"),
        image_url: s.image_url,
        thumb_url: s.thumb_url,
        link_names: s.link_names,
        mrkdwn_in: s.mrkdwn_in,
        actions,
    })
}

/// Slack's incoming-webhook message with one attachment, empty fields left
/// out as Alertmanager does.
pub fn payload(c: &SlackConfig, d: &Data, lib: &Library) -> Result<Value, String> {
    let r = |name: &str, t: &str| lib.render(name, t, d);
    let mut att = Map::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            att.insert(k.into(), Value::String(v));
        }
    };
    put("title", r("title", &c.title)?);
    put("title_link", r("title_link", &c.title_link)?);
    put("pretext", r("pretext", &c.pretext)?);
    put("text", r("text", &c.text)?);
    put("fallback", r("fallback", &c.fallback)?);
    put("callback_id", r("callback_id", &c.callback_id)?);
    put("color", r("color", &c.color)?);
    put("footer", r("footer", &c.footer)?);
    put("image_url", r("image_url", &c.image_url)?);
    put("thumb_url", r("thumb_url", &c.thumb_url)?);
    let mrkdwn: Vec<String> = if c.mrkdwn_in.is_empty() {
        vec!["fallback".into(), "pretext".into(), "text".into()]
    } else {
        c.mrkdwn_in.clone()
    };
    att.insert("mrkdwn_in".into(), json!(mrkdwn));
    if !c.fields.is_empty() {
        let mut fields = Vec::new();
        for f in &c.fields {
            fields.push(json!({
                "title": r("fields.title", &f.title)?,
                "value": r("fields.value", &f.value)?,
                "short": f.short.unwrap_or(c.short_fields),
            }));
        }
        att.insert("fields".into(), Value::Array(fields));
    }
    if !c.actions.is_empty() {
        let mut actions = Vec::new();
        for a in &c.actions {
            let mut o = Map::new();
            for (k, v) in a {
                o.insert(k.clone(), Value::String(r("actions", v)?));
            }
            actions.push(Value::Object(o));
        }
        att.insert("actions".into(), Value::Array(actions));
    }
    let mut msg = Map::new();
    let mut top = |k: &str, v: String| {
        if !v.is_empty() {
            msg.insert(k.into(), Value::String(v));
        }
    };
    top("channel", r("channel", &c.channel)?);
    top("username", r("username", &c.username)?);
    top("icon_emoji", r("icon_emoji", &c.icon_emoji)?);
    top("icon_url", r("icon_url", &c.icon_url)?);
    if c.link_names {
        msg.insert("link_names".into(), Value::Bool(true));
    }
    msg.insert("attachments".into(), json!([Value::Object(att)]));
    Ok(Value::Object(msg))
}
