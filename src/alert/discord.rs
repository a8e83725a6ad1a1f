//! `kind = "discord"`: a Discord webhook execution (`POST /api/webhooks/{id}/{token}`)
//! with one embed: title, description (the text), status colour, timestamp and the route
//! in the footer. `allowed_mentions = {"parse": []}` so nothing in a message pings
//! anyone, and values (peer text) are Markdown-escaped so they cannot forge masked links.

use std::sync::Arc;

use super::http::{secret_url, truncate};
use super::template::{self, Escape, default_text, default_title, emoji};
use super::{NoteStatus, Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use crate::config::raw::Table;
use crate::secret::Secret;
use futures_util::future::BoxFuture;

/// Embed limits (characters): title, description; the whole embed stays under 6,000.
pub const TITLE_MAX: usize = 256;
/// See [`TITLE_MAX`].
pub const DESCRIPTION_MAX: usize = 4096;
/// Longest webhook `username` override.
const USERNAME_MAX: usize = 80;

/// `kind = "discord"` keys.
#[derive(Debug)]
pub struct DiscordConfig {
    /// The webhook URL (it carries the webhook token: a secret).
    pub webhook_url: Secret<String>,
    /// Overrides the webhook's default user name.
    pub username: Option<String>,
}

/// Reads the keys of a `kind = "discord"` notifier.
pub(super) fn read(t: &Table<'_, '_>) -> Option<DiscordConfig> {
    let webhook_url = secret_url(t, "webhook_url");
    let username = match t.str("username") {
        Some(u) => {
            let lower = u.value.to_lowercase();
            let n = u.value.chars().count();
            if n == 0 || n > USERNAME_MAX || lower.contains("discord") || lower.contains("clyde") {
                t.error(
                    u.span,
                    format!("`username` must have 1 to {USERNAME_MAX} characters and not contain \"discord\" or \"clyde\""),
                );
                return None;
            }
            Some(u.value)
        }
        None => None,
    };
    Some(DiscordConfig {
        webhook_url: webhook_url?,
        username,
    })
}

/// The Discord notifier.
pub struct Discord {
    cfg: Arc<NotifierConfig>,
    http: reqwest::Client,
}

impl Discord {
    /// A notifier for `cfg` (must be `kind = "discord"`).
    pub fn new(cfg: Arc<NotifierConfig>, http: reqwest::Client) -> Self {
        Self { cfg, http }
    }

    /// The execute-webhook body for `n`.
    pub fn body(&self, c: &DiscordConfig, n: &Notification) -> serde_json::Value {
        let md = Escape::Markdown;
        let title = template::render_or(self.cfg.title.as_ref(), n, &self.cfg.name, || {
            md.apply(&default_title(n))
        });
        let text = template::render_or(self.cfg.text.as_ref(), n, &self.cfg.name, || {
            md.apply(&default_text(n))
        });
        let color = match n.status {
            NoteStatus::Firing => 0xE0_1E_5A,
            NoteStatus::Resolved => 0x2E_B6_7D,
            NoteStatus::Flapping => 0xEC_B2_2E,
        };
        let mut body = serde_json::json!({
            "allowed_mentions": {"parse": []},
            "embeds": [{
                "title": truncate(&format!("{} {}", emoji(n), title.trim()), TITLE_MAX),
                "description": truncate(text.trim_end(), DESCRIPTION_MAX - 200),
                "color": color,
                "timestamp": crate::time::rfc3339(crate::time::from_unix_ms(n.changed_at_ms)),
                "footer": {"text": truncate(&format!("lifeline · route {}", n.route), 200)},
            }],
        });
        if let Some(u) = &c.username {
            body["username"] = u.clone().into();
        }
        body
    }
}

impl Notifier for Discord {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let NotifierKind::Discord(c) = &self.cfg.kind else {
                return Err(NotifyError::Permanent("not a discord notifier".into()));
            };
            let body = serde_json::to_vec(&self.body(c, n))
                .map_err(|e| NotifyError::Permanent(e.to_string()))?;
            super::webhook::post(&self.http, c.webhook_url.expose(), body, &[]).await
        })
    }
}
