//! `kind = "alertmanager"`: `POST {url}/api/v2/alerts` with one Alertmanager alert per
//! check: labels `{alertname="LifelineCheckFailing", check, kind, <check labels>}`,
//! annotations (summary, description, error_kind, dedupe_key), `startsAt`, `endsAt`
//! and a `generatorURL` pointing at the agent's `/health/service/<name>`.
//!
//! A firing alert is sent with `endsAt` [`KEEPALIVE`] ahead and refreshed by the engine
//! every minute, so Alertmanager resolves it by itself if the agent goes away.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::template::{self, default_text, default_title};
use super::{NoteStatus, Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use crate::time::rfc3339;
use futures_util::future::BoxFuture;

/// How far ahead `endsAt` of a firing alert is set.
pub const KEEPALIVE: Duration = Duration::from_secs(5 * 60);

/// The Alertmanager notifier.
pub struct Alertmanager {
    cfg: Arc<NotifierConfig>,
    http: reqwest::Client,
}

impl Alertmanager {
    /// A notifier for `cfg` (must be `kind = "alertmanager"`).
    pub fn new(cfg: Arc<NotifierConfig>, http: reqwest::Client) -> Self {
        Self { cfg, http }
    }

    /// The `postableAlerts` array for `n`, with `now` as the send time.
    pub fn body(&self, n: &Notification, now: SystemTime) -> serde_json::Value {
        let summary = template::render_or(self.cfg.title.as_ref(), n, &self.cfg.name, || {
            default_title(n)
        });
        let description = template::render_or(self.cfg.text.as_ref(), n, &self.cfg.name, || {
            default_text(n)
        });
        let ends = match n.status {
            NoteStatus::Resolved => None,
            _ => Some(rfc3339(now + KEEPALIVE)),
        };
        let alerts: Vec<serde_json::Value> = if n.offline {
            vec![serde_json::json!({
                "labels": {"alertname": "LifelineAgentOffline", "agent": n.agent_url},
                "annotations": {"summary": summary, "description": description, "dedupe_key": n.dedupe_key},
                "startsAt": n.alerts.iter().map(|a| a.started_at.clone()).min().unwrap_or_else(|| rfc3339(now)),
                "endsAt": ends.clone().unwrap_or_else(|| rfc3339(now)),
                "generatorURL": format!("{}/health/detailed", n.agent_url),
            })]
        } else {
            n.alerts
                .iter()
                .map(|a| {
                    let mut labels = serde_json::Map::new();
                    for (k, v) in &a.labels {
                        labels.insert(k.clone(), v.clone().into());
                    }
                    labels.insert("alertname".into(), "LifelineCheckFailing".into());
                    labels.insert("check".into(), a.check.clone().into());
                    labels.insert("kind".into(), a.kind.clone().into());
                    let end = match &ends {
                        Some(e) => e.clone(),
                        None => a.ended_at.clone().unwrap_or_else(|| rfc3339(now)),
                    };
                    serde_json::json!({
                        "labels": labels,
                        "annotations": {
                            "summary": summary,
                            "description": description,
                            "status": a.status,
                            "error_kind": a.error_kind.clone().unwrap_or_default(),
                            "message": a.message,
                            "route": n.route,
                            "dedupe_key": n.dedupe_key,
                        },
                        "startsAt": a.started_at,
                        "endsAt": end,
                        "generatorURL": format!("{}/health/service/{}", n.agent_url, a.check),
                    })
                })
                .collect()
        };
        serde_json::Value::Array(alerts)
    }
}

impl Notifier for Alertmanager {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let NotifierKind::Alertmanager { url } = &self.cfg.kind else {
                return Err(NotifyError::Permanent(
                    "not an alertmanager notifier".into(),
                ));
            };
            let base = url.as_str().trim_end_matches('/');
            let body = serde_json::to_vec(&self.body(n, SystemTime::now()))
                .map_err(|e| NotifyError::Permanent(e.to_string()))?;
            super::webhook::post(&self.http, &format!("{base}/api/v2/alerts"), body, &[]).await
        })
    }
}
