//! Silences: matchers over alert labels, active between `starts_at` and
//! `ends_at`, with who made them and why, kept by the notifier and changed
//! as Alertmanager changes them. Expired silences are kept for five days
//! (Alertmanager's default retention), then dropped.

use serde::{Deserialize, Serialize};

use super::store::NS_SILENCES;
use super::Notifier;
use crate::model::{MatchOp, Matcher, Timestamp};

pub const RETENTION_MS: i64 = 5 * 86_400_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    #[serde(rename = "isRegex")]
    pub is_regex: bool,
    #[serde(rename = "isEqual", default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl SilenceMatcher {
    pub fn op(&self) -> MatchOp {
        match (self.is_regex, self.is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::Re,
            (true, false) => MatchOp::NotRe,
        }
    }

    pub fn to_matcher(&self) -> Result<Matcher, String> {
        Matcher::new(self.op(), &self.name, &self.value).map_err(|e| e.to_string())
    }
}

/// Why a silence was not created, updated or expired.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SilenceError {
    /// It breaks one of Alertmanager's rules (the reason).
    #[error("{0}")]
    Invalid(String),
    #[error("silence {0} not found")]
    NotFound(String),
    #[error("silence {0} already expired")]
    Expired(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at_ms: Timestamp,
    pub ends_at_ms: Timestamp,
    pub updated_at_ms: Timestamp,
    pub created_by: String,
    pub comment: String,
}

impl Silence {
    /// "pending", "active" or "expired" at `now`.
    pub fn state(&self, now: Timestamp) -> &'static str {
        if now < self.starts_at_ms {
            "pending"
        } else if now < self.ends_at_ms {
            "active"
        } else {
            "expired"
        }
    }

    /// Checks a silence as Alertmanager does before storing it.
    pub fn validate(&self) -> Result<Vec<Matcher>, String> {
        if self.matchers.is_empty() {
            return Err("at least one matcher required".into());
        }
        let mut out = Vec::new();
        for m in &self.matchers {
            if !crate::model::is_valid_label_name(&m.name) {
                return Err(format!("invalid label name {:?}", m.name));
            }
            out.push(m.to_matcher()?);
        }
        if out.iter().all(|m| m.matches_empty()) {
            return Err("at least one matcher must not match the empty string".into());
        }
        if self.ends_at_ms < self.starts_at_ms {
            return Err("end time must not be before start time".into());
        }
        if self.created_by.is_empty() {
            return Err("creator information missing".into());
        }
        if self.comment.is_empty() {
            return Err("comment missing".into());
        }
        Ok(out)
    }
}

/// A silence with its matchers compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub silence: Silence,
    pub matchers: Vec<Matcher>,
}

impl Compiled {
    pub fn mutes(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
        now: Timestamp,
    ) -> bool {
        self.silence.state(now) == "active"
            && self
                .matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).map(String::as_str).unwrap_or("")))
    }
}

/// Silences as the notifier keeps them: created, updated and expired as
/// Alertmanager does.
impl Notifier {
    pub fn silences(&self) -> impl Iterator<Item = &Silence> {
        self.silences.values().map(|c| &c.silence)
    }

    pub fn silence(&self, id: &str) -> Option<&Silence> {
        self.silences.get(id).map(|c| &c.silence)
    }

    /// Creates a silence (empty `id`) or updates one, as Alertmanager does:
    /// a change to an active silence's matchers or start expires it and
    /// creates a new one. Returns the id.
    pub fn set_silence(&mut self, mut s: Silence, now: Timestamp) -> Result<String, SilenceError> {
        let matchers = s.validate().map_err(SilenceError::Invalid)?;
        if s.ends_at_ms <= now {
            return Err(SilenceError::Invalid(
                "end time can't be in the past".into(),
            ));
        }
        if !s.id.is_empty() {
            let Some(old) = self.silences.get(&s.id).map(|c| c.silence.clone()) else {
                return Err(SilenceError::NotFound(s.id));
            };
            let same_scope = old.matchers == s.matchers && old.starts_at_ms == s.starts_at_ms;
            match old.state(now) {
                "expired" => s.id = String::new(),
                "active" if !same_scope => {
                    self.expire_silence(&old.id, now)?;
                    s.id = String::new();
                }
                _ => {}
            }
        }
        if s.id.is_empty() {
            s.id = crate::token::uuid_v4();
            if s.starts_at_ms < now {
                s.starts_at_ms = now;
            }
        }
        s.updated_at_ms = now;
        let id = s.id.clone();
        self.write(
            NS_SILENCES,
            vec![(
                id.clone().into_bytes(),
                Some(serde_json::to_vec(&s).unwrap_or_default()),
            )],
        );
        self.silences.insert(
            id.clone(),
            Compiled {
                silence: s,
                matchers,
            },
        );
        Ok(id)
    }

    /// Expires a silence now; an error if it does not exist or has
    /// expired already.
    pub fn expire_silence(&mut self, id: &str, now: Timestamp) -> Result<(), SilenceError> {
        let Some(c) = self.silences.get_mut(id) else {
            return Err(SilenceError::NotFound(id.to_string()));
        };
        match c.silence.state(now) {
            "expired" => return Err(SilenceError::Expired(id.to_string())),
            "pending" => {
                c.silence.starts_at_ms = now;
                c.silence.ends_at_ms = now;
            }
            _ => c.silence.ends_at_ms = now,
        }
        c.silence.updated_at_ms = now;
        let v = serde_json::to_vec(&c.silence).unwrap_or_default();
        self.write(NS_SILENCES, vec![(id.as_bytes().to_vec(), Some(v))]);
        Ok(())
    }
}
