//! `kind = "opsgenie"`: the Opsgenie Alert API. A firing or flapping notification creates
//! an alert (`POST /v2/alerts`) whose `alias` is the notification's `dedupe_key`; the
//! resolved notification closes it by that alias
//! (`POST /v2/alerts/{alias}/close?identifierType=alias`). Requests carry
//! `Authorization: GenieKey <api_key>`; `priority` (P1–P5) comes from the worst check
//! status through the `priority` map.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::http::{join, level_key, optional_url, read_level_map, truncate};
use super::template::{self, default_text, default_title};
use super::{NoteStatus, Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use crate::config::raw::Table;
use crate::secret::Secret;
use futures_util::future::BoxFuture;

/// The real API (`api_url` overrides it; EU accounts use `https://api.eu.opsgenie.com`).
pub const DEFAULT_API_URL: &str = "https://api.opsgenie.com";

/// Opsgenie's priorities.
pub const PRIORITIES: [&str; 5] = ["P1", "P2", "P3", "P4", "P5"];

/// The default `priority` map.
pub const DEFAULT_PRIORITY: [(&str, &str); 5] = [
    ("unhealthy", "P1"),
    ("disconnected", "P1"),
    ("degraded", "P3"),
    ("flapping", "P3"),
    ("offline", "P1"),
];

/// Field limits of the create request (characters).
pub const MESSAGE_MAX: usize = 130;
const DESCRIPTION_MAX: usize = 15_000;
const ENTITY_MAX: usize = 512;
const NOTE_MAX: usize = 25_000;
const TAGS_MAX: usize = 20;
const TAG_MAX: usize = 50;

/// `kind = "opsgenie"` keys.
#[derive(Debug)]
pub struct OpsgenieConfig {
    /// API base URL (default [`DEFAULT_API_URL`]).
    pub api_url: url::Url,
    /// The API integration's key (a secret).
    pub api_key: Secret<String>,
    /// Notification level → priority.
    pub priority: BTreeMap<String, String>,
    /// Extra alert tags.
    pub tags: Vec<String>,
}

/// Reads the keys of a `kind = "opsgenie"` notifier.
pub(super) fn read(t: &Table<'_, '_>) -> Option<OpsgenieConfig> {
    let api_url = optional_url(t, "api_url", DEFAULT_API_URL);
    let api_key = match t.req_str("api_key") {
        Some(s) if s.value.trim().is_empty() => {
            t.error(s.span, "`api_key` must not be empty");
            None
        }
        Some(s) => Some(Secret::registered(s.value)),
        None => None,
    };
    let priority = read_level_map(t, "priority", &PRIORITIES, &DEFAULT_PRIORITY);
    let tags = match t.str_list("tags") {
        None if t.has("tags") => None,
        None => Some(Vec::new()),
        Some(list) => {
            let mut ok = true;
            for s in &list {
                if s.value.is_empty() || s.value.chars().count() > TAG_MAX {
                    t.error(
                        s.span.clone(),
                        format!("`tags`: a tag has 1 to {TAG_MAX} characters"),
                    );
                    ok = false;
                }
            }
            if list.len() > TAGS_MAX - 2 {
                t.error(t.span(), format!("`tags`: at most {} tags", TAGS_MAX - 2));
                ok = false;
            }
            ok.then(|| list.into_iter().map(|s| s.value).collect())
        }
    };
    Some(OpsgenieConfig {
        api_url: api_url?,
        api_key: api_key?,
        priority: priority?,
        tags: tags?,
    })
}

/// The Opsgenie notifier.
pub struct Opsgenie {
    cfg: Arc<NotifierConfig>,
    http: reqwest::Client,
}

impl Opsgenie {
    /// A notifier for `cfg` (must be `kind = "opsgenie"`).
    pub fn new(cfg: Arc<NotifierConfig>, http: reqwest::Client) -> Self {
        Self { cfg, http }
    }

    /// The create-alert request body for a firing/flapping `n`.
    pub fn create_body(&self, og: &OpsgenieConfig, n: &Notification) -> serde_json::Value {
        let message = template::render_or(self.cfg.title.as_ref(), n, &self.cfg.name, || {
            default_title(n)
        });
        let description = template::render_or(self.cfg.text.as_ref(), n, &self.cfg.name, || {
            default_text(n)
        });
        let checks: Vec<&str> = n.alerts.iter().map(|a| a.check.as_str()).collect();
        let mut tags = vec!["lifeline".to_string(), n.status.as_str().to_string()];
        tags.extend(og.tags.iter().cloned());
        let mut details = serde_json::Map::new();
        details.insert("route".into(), n.route.clone().into());
        details.insert("status".into(), n.status.as_str().into());
        details.insert("dedupe_key".into(), n.dedupe_key.clone().into());
        details.insert("agent".into(), n.agent_url.clone().into());
        details.insert("checks".into(), truncate(&checks.join(", "), 4000).into());
        serde_json::json!({
            "message": truncate(message.trim(), MESSAGE_MAX),
            "alias": n.dedupe_key,
            "description": truncate(&description, DESCRIPTION_MAX),
            "tags": tags,
            "details": details,
            "entity": truncate(&checks.join(", "), ENTITY_MAX),
            "source": "lifeline",
            "priority": og.priority.get(level_key(n)).map(String::as_str).unwrap_or("P3"),
        })
    }

    /// The close-alert request body for a resolved `n`.
    pub fn close_body(&self, n: &Notification) -> serde_json::Value {
        let note = template::render_or(self.cfg.text.as_ref(), n, &self.cfg.name, || {
            default_text(n)
        });
        serde_json::json!({"source": "lifeline", "note": truncate(&note, NOTE_MAX)})
    }
}

impl Notifier for Opsgenie {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let NotifierKind::Opsgenie(og) = &self.cfg.kind else {
                return Err(NotifyError::Permanent("not an opsgenie notifier".into()));
            };
            let (url, body) = if n.status == NoteStatus::Resolved {
                let alias = percent_encoding::utf8_percent_encode(
                    &n.dedupe_key,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                (
                    join(
                        &og.api_url,
                        &format!("v2/alerts/{alias}/close?identifierType=alias"),
                    ),
                    self.close_body(n),
                )
            } else {
                (join(&og.api_url, "v2/alerts"), self.create_body(og, n))
            };
            let body =
                serde_json::to_vec(&body).map_err(|e| NotifyError::Permanent(e.to_string()))?;
            let auth = vec![(
                "Authorization".to_string(),
                format!("GenieKey {}", og.api_key.expose()),
            )];
            super::webhook::post(&self.http, &url, body, &auth).await
        })
    }
}
