//! The event bus (SPEC §5): one broadcast channel feeding SSE, `/ws` and anyone else
//! who wants live events; plus [`Observer`]s, the lossless hooks the history store and the
//! alert engine use.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::check::Outcome;
use crate::health::{Change, CheckState, Overall, Status};
use crate::time::rfc3339;

/// One event: a SPEC name and its JSON data.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `connection:connected`, `agent:overall`, …
    pub event: &'static str,
    /// `check`, `status`, `previous_status`, `at`, and event-specific fields.
    pub data: serde_json::Value,
}

impl Event {
    /// A per-check event built from the check's state after the fact.
    pub fn check(
        name: &'static str,
        s: &CheckState,
        previous: Status,
        extra: serde_json::Value,
    ) -> Self {
        let mut data = serde_json::json!({
            "check": s.name,
            "kind": s.kind,
            "status": s.status.as_str(),
            "previous_status": previous.as_str(),
            "at": rfc3339(SystemTime::now()),
            "score": s.score,
            "latency_ms": s.latency_ms,
            "error_kind": s.error_kind,
            "message": s.message,
        });
        if let (Some(obj), serde_json::Value::Object(more)) = (data.as_object_mut(), extra) {
            obj.extend(more);
        }
        Self { event: name, data }
    }

    /// `agent:overall`.
    pub fn overall(now: Overall, before: Overall) -> Self {
        Self {
            event: "agent:overall",
            data: serde_json::json!({
                "status": now.status.as_str(),
                "previous_status": before.status.as_str(),
                "score": now.score,
                "band": now.band(),
                "previous_band": before.band(),
                "at": rfc3339(SystemTime::now()),
            }),
        }
    }
}

/// The broadcast bus. Slow subscribers lose the oldest events (they are told how many).
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Bus {
    /// A bus holding up to `capacity` undelivered events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx }
    }

    /// Publishes an event (dropped if nobody listens).
    pub fn send(&self, e: Event) {
        let _ = self.tx.send(Arc::new(e));
    }

    /// True if anyone is listening (events are only built then).
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// Lossless hooks called by the supervisors (store, alerts). Implementations must not
/// block: queue the work and return.
pub trait Observer: Send + Sync {
    /// Every result (attempt or heartbeat), after the state was updated.
    fn on_result(&self, state: &CheckState, outcome: &Outcome) {
        let _ = (state, outcome);
    }
    /// Every status change.
    fn on_change(&self, state: &CheckState, change: Change) {
        let _ = (state, change);
    }
    /// The configuration was reloaded; `config` is now in force.
    fn on_reload(&self, config: &crate::config::Config) {
        let _ = config;
    }
}

/// The set of observers, shared by every supervisor.
pub type Observers = Arc<Vec<Arc<dyn Observer>>>;
