//! `kind = "pagerduty"`: the PagerDuty Events API v2 (`POST /v2/enqueue`). A firing or
//! flapping notification is an `event_action = "trigger"` event, a resolved one a
//! `resolve` with the same `dedup_key` (the notification's `dedupe_key`, shared by a
//! firing and its resolve, so PagerDuty closes the alert the firing opened). `severity`
//! comes from the worst check status through the `severity` map.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::http::{level_key, optional_url, read_level_map, truncate, truncate_bytes};
use super::template::{self, default_text, default_title};
use super::{NoteStatus, Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use crate::config::raw::Table;
use crate::secret::Secret;
use futures_util::future::BoxFuture;

/// The real endpoint (`url` overrides it).
pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty's severities.
pub const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

/// The default `severity` map.
pub const DEFAULT_SEVERITY: [(&str, &str); 5] = [
    ("unhealthy", "critical"),
    ("disconnected", "critical"),
    ("degraded", "warning"),
    ("flapping", "warning"),
    ("offline", "critical"),
];

/// Longest `payload.summary` PagerDuty accepts.
pub const SUMMARY_MAX: usize = 1024;

/// Alerts listed in `custom_details`, and bytes of its text (the event must stay under
/// 512 KB).
const DETAILS_MAX_ALERTS: usize = 100;
const DETAILS_TEXT_MAX_BYTES: usize = 64 * 1024;

/// `kind = "pagerduty"` keys.
#[derive(Debug)]
pub struct PagerDutyConfig {
    /// Events API endpoint (default [`DEFAULT_URL`]).
    pub url: url::Url,
    /// The integration's routing key (32 characters; a secret).
    pub routing_key: Secret<String>,
    /// Notification level ([`super::http::LEVEL_KEYS`]) → PagerDuty severity.
    pub severity: BTreeMap<String, String>,
    /// `payload.source` (default: the agent's address).
    pub source: Option<String>,
}

/// Reads the keys of a `kind = "pagerduty"` notifier.
pub(super) fn read(t: &Table<'_, '_>) -> Option<PagerDutyConfig> {
    let url = optional_url(t, "url", DEFAULT_URL);
    let routing_key = t.req_str("routing_key").and_then(|s| {
        let key = Secret::registered(s.value);
        if key.expose().len() == 32 && key.expose().chars().all(|c| c.is_ascii_alphanumeric()) {
            Some(key)
        } else {
            // Never echo the value: it is the credential.
            t.error(
                s.span,
                "`routing_key` must be the 32-character integration key of an Events API v2 integration",
            );
            None
        }
    });
    let severity = read_level_map(t, "severity", &SEVERITIES, &DEFAULT_SEVERITY);
    let source = t.str("source").map(|s| s.value);
    Some(PagerDutyConfig {
        url: url?,
        routing_key: routing_key?,
        severity: severity?,
        source,
    })
}

/// The PagerDuty notifier.
pub struct PagerDuty {
    cfg: Arc<NotifierConfig>,
    http: reqwest::Client,
}

impl PagerDuty {
    /// A notifier for `cfg` (must be `kind = "pagerduty"`).
    pub fn new(cfg: Arc<NotifierConfig>, http: reqwest::Client) -> Self {
        Self { cfg, http }
    }

    /// The event for `n`.
    pub fn body(&self, pd: &PagerDutyConfig, n: &Notification) -> serde_json::Value {
        if n.status == NoteStatus::Resolved {
            return serde_json::json!({
                "routing_key": pd.routing_key.expose(),
                "event_action": "resolve",
                "dedup_key": n.dedupe_key,
            });
        }
        let summary = template::render_or(self.cfg.title.as_ref(), n, &self.cfg.name, || {
            default_title(n)
        });
        let text = template::render_or(self.cfg.text.as_ref(), n, &self.cfg.name, || {
            default_text(n)
        });
        let severity = pd
            .severity
            .get(level_key(n))
            .map(String::as_str)
            .unwrap_or("critical");
        let source = pd.source.clone().unwrap_or_else(|| {
            n.agent_url
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .to_string()
        });
        let started = n.alerts.iter().map(|a| a.started_at.as_str()).min();
        let mut payload = serde_json::json!({
            "summary": truncate(summary.trim(), SUMMARY_MAX),
            "source": source,
            "severity": severity,
            "group": n.route,
            "custom_details": {
                "status": n.status.as_str(),
                "route": n.route,
                "text": truncate_bytes(&text, DETAILS_TEXT_MAX_BYTES),
                "alerts": n.alerts.iter().take(DETAILS_MAX_ALERTS).collect::<Vec<_>>(),
                "alert_count": n.alerts.len(),
            },
        });
        if let Some(t) = started {
            payload["timestamp"] = t.into();
        }
        if let [one] = n.alerts.as_slice() {
            payload["component"] = one.check.clone().into();
            if let Some(k) = &one.error_kind {
                payload["class"] = k.clone().into();
            }
        }
        let links: Vec<serde_json::Value> = n
            .alerts
            .iter()
            .take(5)
            .map(|a| {
                serde_json::json!({
                    "href": format!("{}/health/service/{}", n.agent_url, a.check),
                    "text": format!("{} in lifeline", a.check),
                })
            })
            .collect();
        serde_json::json!({
            "routing_key": pd.routing_key.expose(),
            "event_action": "trigger",
            "dedup_key": n.dedupe_key,
            "payload": payload,
            "client": "lifeline",
            "client_url": format!("{}/health/detailed", n.agent_url),
            "links": links,
        })
    }
}

impl Notifier for PagerDuty {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let NotifierKind::PagerDuty(pd) = &self.cfg.kind else {
                return Err(NotifyError::Permanent("not a pagerduty notifier".into()));
            };
            let body = serde_json::to_vec(&self.body(pd, n))
                .map_err(|e| NotifyError::Permanent(e.to_string()))?;
            super::webhook::post(&self.http, pd.url.as_str(), body, &[]).await
        })
    }
}
