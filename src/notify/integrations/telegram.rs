//! Telegram through the Bot API (`telegram_configs`, Alertmanager 0.25):
//! `sendMessage` to `chat_id` with the rendered `message` (at most 4096
//! characters), `parse_mode` (HTML by default: alert data is escaped, as
//! Alertmanager's HTML templates escape it) and `disable_notifications`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{post_json, Integration, Rendered, Sending};
use crate::http::config::RawHttpConfig as RawHttp;
use crate::http::{ClientConfig as HttpConfig, Secret};
use crate::notify::config::{http_config, url_problem, Check, RawGlobal};
use crate::notify::template::Library;
use crate::notify::Job;

/// Telegram's limit on a message's length, in characters.
const MAX_MESSAGE: usize = 4096;

#[derive(Debug, Clone)]
pub struct TelegramConfig {
    pub send_resolved: bool,
    /// `https://api.telegram.org` unless set (here or globally).
    pub api_url: String,
    pub bot_token: Secret,
    pub chat_id: i64,
    pub message_thread_id: Option<i64>,
    pub message: String,
    pub disable_notifications: bool,
    /// `HTML`, `Markdown`, `MarkdownV2` or empty (plain text).
    pub parse_mode: String,
    pub http: HttpConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(in crate::notify) struct RawTelegram {
    send_resolved: Option<bool>,
    http_config: Option<RawHttp>,
    api_url: Option<String>,
    bot_token: Option<String>,
    bot_token_file: Option<String>,
    chat_id: i64,
    message_thread_id: Option<i64>,
    message: Option<String>,
    disable_notifications: bool,
    parse_mode: Option<String>,
}

/// A `telegram_configs` entry, with Alertmanager's defaults and checks.
pub(in crate::notify) fn parse(
    t: RawTelegram,
    g: &RawGlobal,
    global_http: &HttpConfig,
    path: &str,
    c: &mut Check,
) -> Option<TelegramConfig> {
    let bot_token = match (t.bot_token, t.bot_token_file) {
        (Some(_), Some(_)) => {
            c.error(
                path,
                "at most one of bot_token & bot_token_file must be configured",
            );
            return None;
        }
        (Some(token), None) if !token.is_empty() => Secret::Inline(token),
        (None, Some(f)) if !f.is_empty() => Secret::File(c.path(&f)),
        _ => {
            c.error(
                path,
                "missing bot_token or bot_token_file on telegram_config",
            );
            return None;
        }
    };
    if t.chat_id == 0 {
        c.error(path, "missing chat_id on telegram_config");
        return None;
    }
    let parse_mode = t.parse_mode.unwrap_or_else(|| "HTML".into());
    if !["", "Markdown", "MarkdownV2", "HTML"].contains(&parse_mode.as_str()) {
        c.error(
            &format!("{path}.parse_mode"),
            "unknown parse_mode on telegram_config, must be Markdown, MarkdownV2, HTML or empty string",
        );
        return None;
    }
    let api_url = t
        .api_url
        .or_else(|| g.telegram_api_url.clone())
        .unwrap_or_else(|| "https://api.telegram.org".into());
    if let Some(p) = url_problem(&api_url) {
        c.error(&format!("{path}.api_url"), p);
        return None;
    }
    let http = t
        .http_config
        .map(|h| http_config(h, &format!("{path}.http_config"), c))
        .unwrap_or_else(|| global_http.clone());
    Some(TelegramConfig {
        send_resolved: t.send_resolved.unwrap_or(true),
        api_url: api_url.trim_end_matches('/').to_string(),
        bot_token,
        chat_id: t.chat_id,
        message_thread_id: t.message_thread_id,
        message: t
            .message
            .unwrap_or_else(|| r#"{{ template "telegram.default.message" . }}"#.into()),
        disable_notifications: t.disable_notifications,
        parse_mode,
        http,
    })
}

impl Integration for TelegramConfig {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    fn send_resolved(&self) -> bool {
        self.send_resolved
    }

    fn render(&self, job: &Job, lib: &Library) -> Result<Rendered, String> {
        let data = if self.parse_mode == "HTML" {
            job.data.html_escaped()
        } else {
            job.data.clone()
        };
        let text: String = lib
            .render("message", &self.message, &data)?
            .chars()
            .take(MAX_MESSAGE)
            .collect();
        let subject = lib.render("subject", r#"{{ template "__subject" . }}"#, &job.data)?;
        let mut body = json!({
            "chat_id": self.chat_id,
            "text": text,
            "disable_notification": self.disable_notifications,
        });
        if !self.parse_mode.is_empty() {
            body["parse_mode"] = Value::String(self.parse_mode.clone());
        }
        if let Some(thread) = self.message_thread_id {
            body["message_thread_id"] = json!(thread);
        }
        Ok(Rendered::json((subject, text), body))
    }

    fn send<'a>(&'a self, rendered: &'a Rendered, timeout: Duration) -> Sending<'a> {
        Box::pin(async move {
            let url = self
                .bot_token
                .read()
                .map(|token| format!("{}/bot{token}/sendMessage", self.api_url));
            post_json(&url, &self.http, rendered, timeout).await
        })
    }
}
