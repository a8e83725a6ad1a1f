//! Alerting (SPEC §7).
//!
//! ```text
//!  supervisors ──on_change──► AlertEngine (Observer: try_send, never blocks)
//!                                 │ engine task: routes, for, group_wait, repeat_interval,
//!                                 │ flapping, depends_on, connectivity, silences
//!                                 ▼
//!                          outbox (SQLite in data_dir, written BEFORE sending)
//!                                 │ one delivery task per notifier, in order,
//!                                 ▼ retry with backoff until delivered or max_age
//!     slack · webhook · email · alertmanager · pagerduty · opsgenie · teams · discord
//!     telegram · ntfy · template
//! ```
//!
//! - [`config`]: `[[notifiers]]`, `[[routes]]`, `[[silences]]`.
//! - [`engine`]: the engine task and the state machine that calls into the parts:
//!   [`lifecycle`] (pending/firing/resolved, `for`), [`grouping`] (group_wait, repeat,
//!   dedupe keys), [`holds`] (flapping, depends_on, connectivity guard, silences).
//! - [`outbox`]: the SQLite outbox (one writer thread), persisted alert state and API
//!   silences; [`backlog`]: notifications the outbox could not take yet, retried;
//!   [`delivery`]: one delivery task per notifier.
//! - [`slack`], [`webhook`], [`email`], [`alertmanager`], [`pagerduty`], [`opsgenie`],
//!   [`teams`], [`discord`], [`telegram`], [`ntfy`], [`templated`] (`kind = "template"`):
//!   the notifiers, each with its own config keys; [`http`]: what the HTTP ones share
//!   (one request, answer classification, `Retry-After`).
//! - [`template`]: `title`/`text` templates.

pub mod alertmanager;
pub mod backlog;
pub mod config;
pub mod delivery;
pub mod discord;
pub mod email;
pub mod engine;
pub mod gate;
pub mod grouping;
pub mod holds;
pub mod http;
pub mod lifecycle;
pub mod ntfy;
pub mod opsgenie;
pub mod outbox;
pub mod pagerduty;
pub mod slack;
pub mod teams;
pub mod telegram;
pub mod template;
pub mod templated;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use config::{AlertConfig, NotifierConfig, NotifierKind, RouteConfig};
pub use engine::AlertEngine;

use futures_util::future::BoxFuture;

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteStatus {
    /// Alerts started (or still) firing.
    Firing,
    /// Alerts ended.
    Resolved,
    /// A check changes state too often; further notifications are held.
    Flapping,
}

impl NoteStatus {
    /// `firing`, `resolved`, `flapping`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
            Self::Flapping => "flapping",
        }
    }
}

/// One alert inside a notification (SPEC §7 JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertItem {
    /// Check name.
    pub check: String,
    /// Check kind.
    pub kind: String,
    /// The check's status when the notification was made.
    pub status: String,
    /// Its status before that.
    pub previous_status: String,
    /// Last failure kind.
    pub error_kind: Option<String>,
    /// Last failure text.
    pub message: String,
    /// The check's labels.
    pub labels: BTreeMap<String, String>,
    /// Score 0–100.
    pub score: Option<u8>,
    /// When the check started failing (RFC 3339).
    pub started_at: String,
    /// When it recovered (RFC 3339), for resolved alerts.
    pub ended_at: Option<String>,
}

/// A notification: what goes into the outbox and, rendered per notifier, to a receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable across retries and restarts; a resolved shares its firing's key.
    pub dedupe_key: String,
    /// Firing, resolved or flapping.
    pub status: NoteStatus,
    /// Route name (`lifeline:connectivity` for the offline alert).
    pub route: String,
    /// The alerts.
    pub alerts: Vec<AlertItem>,
    /// True for `LifelineAgentOffline`.
    #[serde(default)]
    pub offline: bool,
    /// Unix milliseconds of the alert state change this notification reports (latency
    /// metric origin).
    pub changed_at_ms: i64,
    /// `http://<listen>`: where links (`generatorURL`) point.
    pub agent_url: String,
    /// Alertmanager keep-alive of a still-firing alert: dropped when stale, not retried
    /// past its freshness.
    #[serde(default)]
    pub refresh: bool,
}

impl Notification {
    /// The one way to make a notification: a check alert (not offline, not a keep-alive;
    /// see [`Notification::with_offline`] and [`Notification::with_refresh`]) reporting a
    /// state change at `changed_at`.
    pub fn new(
        dedupe_key: impl Into<String>,
        status: NoteStatus,
        route: impl Into<String>,
        alerts: Vec<AlertItem>,
        changed_at: SystemTime,
        agent_url: impl Into<String>,
    ) -> Self {
        Self {
            dedupe_key: dedupe_key.into(),
            status,
            route: route.into(),
            alerts,
            offline: false,
            changed_at_ms: crate::time::unix_ms(changed_at),
            agent_url: agent_url.into(),
            refresh: false,
        }
    }

    /// Marks it as the `LifelineAgentOffline` alert.
    pub fn with_offline(mut self) -> Self {
        self.offline = true;
        self
    }

    /// Marks it as an Alertmanager keep-alive (dropped when stale).
    pub fn with_refresh(mut self) -> Self {
        self.refresh = true;
        self
    }

    /// `LifelineAgentOffline` or `LifelineCheckFailing`.
    pub fn alertname(&self) -> &'static str {
        if self.offline {
            "LifelineAgentOffline"
        } else {
            "LifelineCheckFailing"
        }
    }

    /// The SPEC §7 webhook JSON.
    pub fn to_spec_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": "1",
            "dedupe_key": self.dedupe_key,
            "status": self.status.as_str(),
            "route": self.route,
            "alerts": self.alerts,
        })
    }

    /// A small notification for unit tests.
    #[doc(hidden)]
    pub fn test_sample() -> Self {
        let item = AlertItem {
            check: "db".into(),
            kind: "tcp".into(),
            status: "unhealthy".into(),
            previous_status: "healthy".into(),
            error_kind: Some("refused".into()),
            message: "connection refused".into(),
            labels: BTreeMap::new(),
            score: Some(0),
            started_at: "2025-01-01T00:00:00Z".into(),
            ended_at: None,
        };
        Self::new(
            "k",
            NoteStatus::Firing,
            "r",
            vec![item],
            SystemTime::UNIX_EPOCH,
            "http://127.0.0.1:9477",
        )
    }
}

/// A maintenance silence: holds notifications for checks whose facts match every matcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// `config-<n>` for config silences, random hex for API ones.
    pub id: String,
    /// Label equality; `check` and `kind` match the check's name and kind.
    pub matchers: BTreeMap<String, String>,
    /// Start.
    #[serde(with = "crate::time::serde_unix_ms")]
    pub starts_at: SystemTime,
    /// End.
    #[serde(with = "crate::time::serde_unix_ms")]
    pub ends_at: SystemTime,
    /// Free text.
    pub comment: String,
    /// From `[[silences]]` (cannot be deleted over the API).
    #[serde(default)]
    pub from_config: bool,
}

impl Silence {
    /// Active at `now`.
    pub fn active(&self, now: SystemTime) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// Holds alerts of this check.
    pub fn matches(&self, check: &str, kind: &str, labels: &BTreeMap<String, String>) -> bool {
        labels_match(&self.matchers, check, kind, labels)
    }

    /// The API view.
    pub fn to_json(&self, now: SystemTime) -> serde_json::Value {
        let state = if now < self.starts_at {
            "pending"
        } else if now < self.ends_at {
            "active"
        } else {
            "expired"
        };
        serde_json::json!({
            "id": self.id,
            "matchers": self.matchers,
            "starts_at": crate::time::rfc3339(self.starts_at),
            "ends_at": crate::time::rfc3339(self.ends_at),
            "comment": self.comment,
            "status": state,
            "source": if self.from_config { "config" } else { "api" },
        })
    }
}

/// Label equality with the pseudo-labels `check` and `kind`. An empty set matches all.
pub fn labels_match(
    matchers: &BTreeMap<String, String>,
    check: &str,
    kind: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    matchers.iter().all(|(k, v)| match k.as_str() {
        "check" => v == check,
        "kind" => v == kind,
        _ => labels.get(k) == Some(v),
    })
}

/// Why a delivery failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotifyError {
    /// Worth retrying: 5xx, 408, 429, timeouts, connection errors, SMTP 4xx.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// Retrying will not help: other 4xx, SMTP 5xx, a message that cannot be built.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The receiver said when to come back (429, or 503 with `Retry-After`): retried no
    /// sooner than `after` (capped at [`http::RETRY_AFTER_MAX`]).
    #[error("rate limited, retry after {}ms: {message}", after.as_millis())]
    RetryAfter {
        /// What the receiver answered.
        message: String,
        /// How long it asked to wait.
        after: std::time::Duration,
    },
}

impl NotifyError {
    /// Classifies an HTTP status (for answers that are not 2xx).
    pub fn from_status(status: reqwest::StatusCode, body: &str) -> Self {
        let body: String = crate::secret::redact(body).chars().take(200).collect();
        let msg = format!("HTTP {status}: {body}");
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Self::Transient(msg)
        } else {
            Self::Permanent(msg)
        }
    }

    /// Classifies a reqwest transport error (always transient: timeouts, refused, reset).
    pub fn from_reqwest(e: &reqwest::Error) -> Self {
        Self::Transient(crate::secret::redact(&crate::net::http_client::describe(e)))
    }
}

/// A delivery channel.
pub trait Notifier: Send + Sync {
    /// Delivers one notification (one attempt, bounded by a timeout).
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// Builds the notifier for a config entry.
pub fn build_notifier(cfg: &Arc<NotifierConfig>, http: &reqwest::Client) -> Arc<dyn Notifier> {
    match &cfg.kind {
        NotifierKind::Slack { .. } => Arc::new(slack::Slack::new(cfg.clone(), http.clone())),
        NotifierKind::Webhook { .. } => Arc::new(webhook::Webhook::new(cfg.clone(), http.clone())),
        NotifierKind::Email(_) => Arc::new(email::Email::new(cfg.clone())),
        NotifierKind::Alertmanager { .. } => {
            Arc::new(alertmanager::Alertmanager::new(cfg.clone(), http.clone()))
        }
        NotifierKind::PagerDuty(_) => {
            Arc::new(pagerduty::PagerDuty::new(cfg.clone(), http.clone()))
        }
        NotifierKind::Opsgenie(_) => Arc::new(opsgenie::Opsgenie::new(cfg.clone(), http.clone())),
        NotifierKind::Teams(_) => Arc::new(teams::Teams::new(cfg.clone(), http.clone())),
        NotifierKind::Discord(_) => Arc::new(discord::Discord::new(cfg.clone(), http.clone())),
        NotifierKind::Telegram(_) => Arc::new(telegram::Telegram::new(cfg.clone(), http.clone())),
        NotifierKind::Ntfy(_) => Arc::new(ntfy::Ntfy::new(cfg.clone(), http.clone())),
        NotifierKind::Template(_) => Arc::new(templated::Templated::new(cfg.clone(), http.clone())),
    }
}

/// A failure of alerting: opening or writing the outbox.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The outbox could not be opened, read or written.
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
}
