//! `kind = "teams"`: a Microsoft Teams Workflows webhook ("Post to a channel when a
//! webhook request is received"): a `message` activity with one Adaptive Card attachment
//! (headline, the text, one fact per check, a link to the agent). Card text is Markdown:
//! values (peer text) are backslash-escaped, so they cannot forge links or emphasis.

use std::sync::Arc;

use super::http::{secret_url, truncate, truncate_bytes};
use super::template::{self, Escape, default_text, default_title, emoji};
use super::{NoteStatus, Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use crate::config::raw::Table;
use crate::secret::Secret;
use futures_util::future::BoxFuture;

/// Checks listed as facts (the rest are counted); Teams caps a message at about 28 KB,
/// so the text and each fact are cut by bytes (JSON escaping can at most double them).
const FACTS_MAX: usize = 15;
const TEXT_MAX_BYTES: usize = 8_000;
const FACT_MAX_BYTES: usize = 200;

/// `kind = "teams"` keys.
#[derive(Debug)]
pub struct TeamsConfig {
    /// The workflow's HTTP trigger URL (it carries a signature: a secret).
    pub webhook_url: Secret<String>,
}

/// Reads the keys of a `kind = "teams"` notifier.
pub(super) fn read(t: &Table<'_, '_>) -> Option<TeamsConfig> {
    secret_url(t, "webhook_url").map(|webhook_url| TeamsConfig { webhook_url })
}

/// The Teams notifier.
pub struct Teams {
    cfg: Arc<NotifierConfig>,
    http: reqwest::Client,
}

impl Teams {
    /// A notifier for `cfg` (must be `kind = "teams"`).
    pub fn new(cfg: Arc<NotifierConfig>, http: reqwest::Client) -> Self {
        Self { cfg, http }
    }

    /// The message activity for `n`.
    pub fn body(&self, n: &Notification) -> serde_json::Value {
        let md = Escape::Markdown;
        let title = template::render_or(self.cfg.title.as_ref(), n, &self.cfg.name, || {
            md.apply(&default_title(n))
        });
        let text = template::render_or(self.cfg.text.as_ref(), n, &self.cfg.name, || {
            md.apply(&default_text(n))
        });
        let color = match n.status {
            NoteStatus::Firing => "attention",
            NoteStatus::Resolved => "good",
            NoteStatus::Flapping => "warning",
        };
        let mut facts: Vec<serde_json::Value> = n
            .alerts
            .iter()
            .take(FACTS_MAX)
            .map(|a| {
                let mut value = a.status.clone();
                if let Some(k) = &a.error_kind {
                    value.push_str(&format!(" [{k}]"));
                }
                if !a.message.is_empty() && n.status != NoteStatus::Resolved {
                    value.push_str(&format!(": {}", truncate(&a.message, 300)));
                }
                serde_json::json!({
                    "title": truncate_bytes(&md.apply(&a.check), FACT_MAX_BYTES),
                    "value": truncate_bytes(&md.apply(&value), FACT_MAX_BYTES),
                })
            })
            .collect();
        if n.alerts.len() > FACTS_MAX {
            facts.push(serde_json::json!({
                "title": "…",
                "value": format!("{} more", n.alerts.len() - FACTS_MAX),
            }));
        }
        // Markdown needs a blank line for a line break.
        let text = truncate_bytes(&text.trim_end().replace('\n', "\n\n"), TEXT_MAX_BYTES);
        let card = serde_json::json!({
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "msteams": {"width": "Full"},
            "body": [
                {"type": "TextBlock", "text": format!("{} {}", emoji(n), truncate(title.trim(), 300)),
                 "weight": "Bolder", "size": "Medium", "color": color, "wrap": true},
                {"type": "TextBlock", "text": text, "wrap": true},
                {"type": "FactSet", "facts": facts},
            ],
            "actions": [
                {"type": "Action.OpenUrl", "title": "Open in lifeline",
                 "url": format!("{}/health/detailed", n.agent_url)},
            ],
        });
        serde_json::json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": card,
            }],
        })
    }
}

impl Notifier for Teams {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let NotifierKind::Teams(c) = &self.cfg.kind else {
                return Err(NotifyError::Permanent("not a teams notifier".into()));
            };
            let body = serde_json::to_vec(&self.body(n))
                .map_err(|e| NotifyError::Permanent(e.to_string()))?;
            super::webhook::post(&self.http, c.webhook_url.expose(), body, &[]).await
        })
    }
}
