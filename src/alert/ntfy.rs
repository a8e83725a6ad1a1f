//! `kind = "ntfy"`: publishes to an ntfy server as JSON (`POST {url}` with
//! `{"topic", "title", "message", "priority", "tags"}`), so titles and messages travel
//! as UTF-8 JSON rather than in headers. `priority` (1–5) comes from the notification
//! level through the `priority` map; the tags are a status emoji short code plus `tags`.
//! An access `token` is sent as `Authorization: Bearer`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::http::{level_key, optional_url, read_level_map, truncate, truncate_bytes};
use super::template::{self, default_text, default_title};
use super::{NoteStatus, Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use crate::config::raw::Table;
use crate::secret::Secret;
use futures_util::future::BoxFuture;

/// The public server (`url` overrides it with a self-hosted one).
pub const DEFAULT_URL: &str = "https://ntfy.sh";

/// ntfy's priority names, 1 (`min`) to 5 (`max`, also `urgent`).
pub const PRIORITIES: [&str; 6] = ["min", "low", "default", "high", "max", "urgent"];

/// The default `priority` map.
pub const DEFAULT_PRIORITY: [(&str, &str); 6] = [
    ("unhealthy", "high"),
    ("disconnected", "high"),
    ("degraded", "default"),
    ("flapping", "default"),
    ("offline", "max"),
    ("resolved", "default"),
];

/// Message bytes ntfy keeps as a message (larger ones become attachments or are refused).
pub const MESSAGE_MAX_BYTES: usize = 4096;

/// `kind = "ntfy"` keys.
#[derive(Debug)]
pub struct NtfyConfig {
    /// Server base URL (default [`DEFAULT_URL`]).
    pub url: url::Url,
    /// Topic (`^[-_A-Za-z0-9]{1,64}$`; on a public server it is the password: a secret).
    pub topic: Secret<String>,
    /// Access token for protected topics.
    pub token: Option<Secret<String>>,
    /// Notification level → priority name.
    pub priority: BTreeMap<String, String>,
    /// Extra tags.
    pub tags: Vec<String>,
}

fn valid_topic(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads the keys of a `kind = "ntfy"` notifier.
pub(super) fn read(t: &Table<'_, '_>) -> Option<NtfyConfig> {
    let url = optional_url(t, "url", DEFAULT_URL);
    let topic = t.req_str("topic").and_then(|s| {
        let topic = Secret::registered(s.value);
        if valid_topic(topic.expose()) {
            Some(topic)
        } else {
            t.error(s.span, "`topic` must match ^[-_A-Za-z0-9]{1,64}$");
            None
        }
    });
    let token = t.secret("token");
    let priority = read_level_map(t, "priority", &PRIORITIES, &DEFAULT_PRIORITY);
    let tags = match t.str_list("tags") {
        None if t.has("tags") => None,
        None => Some(Vec::new()),
        Some(list) => Some(list.into_iter().map(|s| s.value).collect()),
    };
    Some(NtfyConfig {
        url: url?,
        topic: topic?,
        token,
        priority: priority?,
        tags: tags?,
    })
}

/// A priority name as ntfy's number.
pub fn priority_number(name: &str) -> u8 {
    match name {
        "min" => 1,
        "low" => 2,
        "high" => 4,
        "max" | "urgent" => 5,
        _ => 3,
    }
}

/// The ntfy notifier.
pub struct Ntfy {
    cfg: Arc<NotifierConfig>,
    http: reqwest::Client,
}

impl Ntfy {
    /// A notifier for `cfg` (must be `kind = "ntfy"`).
    pub fn new(cfg: Arc<NotifierConfig>, http: reqwest::Client) -> Self {
        Self { cfg, http }
    }

    /// The JSON publish body for `n`.
    pub fn body(&self, c: &NtfyConfig, n: &Notification) -> serde_json::Value {
        let title = template::render_or(self.cfg.title.as_ref(), n, &self.cfg.name, || {
            default_title(n)
        });
        let text = template::render_or(self.cfg.text.as_ref(), n, &self.cfg.name, || {
            default_text(n)
        });
        let status_tag = match n.status {
            NoteStatus::Firing => "rotating_light",
            NoteStatus::Resolved => "white_check_mark",
            NoteStatus::Flapping => "warning",
        };
        let mut tags = vec![status_tag.to_string()];
        tags.extend(c.tags.iter().cloned());
        let priority = c
            .priority
            .get(level_key(n))
            .map(|p| priority_number(p))
            .unwrap_or(3);
        serde_json::json!({
            "topic": c.topic.expose(),
            "title": truncate(title.trim(), 250),
            "message": truncate_bytes(text.trim_end(), MESSAGE_MAX_BYTES),
            "priority": priority,
            "tags": tags,
        })
    }
}

impl Notifier for Ntfy {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let NotifierKind::Ntfy(c) = &self.cfg.kind else {
                return Err(NotifyError::Permanent("not an ntfy notifier".into()));
            };
            let body = serde_json::to_vec(&self.body(c, n))
                .map_err(|e| NotifyError::Permanent(e.to_string()))?;
            let auth: Vec<(String, String)> = c
                .token
                .iter()
                .map(|t| {
                    (
                        "Authorization".to_string(),
                        format!("Bearer {}", t.expose()),
                    )
                })
                .collect();
            super::webhook::post(&self.http, c.url.as_str(), body, &auth).await
        })
    }
}
