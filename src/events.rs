//! The event bus (SPEC §5): one broadcast channel feeding SSE, `/ws` and anyone else
//! who wants live events; plus [`Observer`]s, the lossless hooks the history store and the
//! alert engine use.
//!
//! [`Event`] is the one list of every event and its fields. The bus carries
//! `Arc<`[`Published`]`>`: the typed event plus its JSON, serialised once when it is sent,
//! so every SSE and WebSocket subscriber writes the same text.
//!
//! Wire format: SSE sends `event: NAME` and `data: DATA`; `/ws` sends
//! `{"event":NAME,"data":DATA}`. `DATA` is the payload struct as JSON; consumers read it by
//! field name (the key order is not part of the contract).

use std::fmt;
use std::ops::Index;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use tokio::sync::broadcast;

use crate::check::{ErrorKind, Outcome};
use crate::health::{Change, ChangeEvent, CheckState, Overall, OverallStatus, Status};

/// Every SPEC §5 event. [`Event::name`] is the name on the wire, the payload is the data.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `connection:connected`: to `healthy` from `unknown`/`connecting`.
    Connected(CheckEvent),
    /// `connection:disconnected`: to `unhealthy` or `disconnected`.
    Disconnected(CheckEvent),
    /// `connection:reconnected`: to `healthy` from `unhealthy`/`disconnected`.
    Reconnected(CheckEvent),
    /// `connection:health_degraded`: to `degraded`.
    HealthDegraded(CheckEvent),
    /// `connection:health_check`: every result (attempt or heartbeat).
    HealthCheck(CheckEvent),
    /// `connection:failed`: every failed attempt (and a lost session).
    Failed(Failed),
    /// `connection:auth_failed`: an attempt whose credentials were rejected (after
    /// its `connection:failed`).
    AuthFailed(CheckEvent),
    /// `connection:reconnecting`: every scheduled retry.
    Reconnecting(Reconnecting),
    /// `connection:max_attempts_reached`: once, when the backoff reaches `max_attempts`.
    MaxAttemptsReached(MaxAttemptsReached),
    /// `connection:restored`: a check's state restored from history at start
    /// (`previous_status` is `unknown`).
    Restored(CheckEvent),
    /// `agent:overall`: the overall status or its score band changed.
    Overall(OverallChanged),
    /// `agent:lagged`: sent by the SSE/`/ws` layer to one subscriber that fell behind
    /// (never on the bus).
    Lagged(Lagged),
}

/// The fields of every `connection:*` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckEvent {
    /// Check name.
    pub check: String,
    /// Check kind (`tcp`, `websocket`, …).
    pub kind: &'static str,
    /// Status after the fact.
    pub status: Status,
    /// Status before it.
    pub previous_status: Status,
    /// When the event was built (RFC 3339).
    #[serde(with = "crate::time::serde_rfc3339")]
    pub at: SystemTime,
    /// 0–100; `null` while unknown.
    pub score: Option<u8>,
    /// Latency of the last success (ms); `null` before one.
    pub latency_ms: Option<f64>,
    /// The check's last failure (or warning) kind; in `connection:failed`, this attempt's.
    pub error_kind: Option<ErrorKind>,
    /// Message of the last result.
    pub message: String,
}

/// `connection:failed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failed {
    /// The common fields; `error_kind` is this attempt's.
    #[serde(flatten)]
    pub check: CheckEvent,
    /// Which attempt in the current run of failures (1 for the first, and for a lost
    /// session).
    pub attempt: u32,
}

/// `connection:reconnecting`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconnecting {
    /// The common fields.
    #[serde(flatten)]
    pub check: CheckEvent,
    /// Failures so far (the backoff step).
    pub attempt: u32,
    /// Delay before the next attempt (ms).
    pub delay_ms: u64,
}

/// `connection:max_attempts_reached`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaxAttemptsReached {
    /// The common fields.
    #[serde(flatten)]
    pub check: CheckEvent,
    /// Failures so far (= `backoff.max_attempts`).
    pub attempt: u32,
}

/// `agent:overall`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverallChanged {
    /// Overall status now.
    pub status: OverallStatus,
    /// Overall status before.
    pub previous_status: OverallStatus,
    /// Weight-averaged score now; `null` when no check has one.
    pub score: Option<f64>,
    /// Colour band of the score now (`green`, `orange`, `red`, `none`).
    pub band: &'static str,
    /// Colour band before.
    pub previous_band: &'static str,
    /// When the change was seen (RFC 3339).
    #[serde(with = "crate::time::serde_rfc3339")]
    pub at: SystemTime,
}

/// `agent:lagged`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lagged {
    /// Events this subscriber missed; it should re-read `/health/detailed`.
    pub missed: u64,
}

impl CheckEvent {
    /// The common fields from a check's state after the fact, stamped now.
    pub fn new(s: &CheckState, previous: Status) -> Self {
        Self {
            check: s.name.clone(),
            kind: s.kind,
            status: s.status,
            previous_status: previous,
            at: SystemTime::now(),
            score: s.score,
            latency_ms: s.latency_ms,
            error_kind: s.error_kind,
            message: s.message.clone(),
        }
    }
}

impl Event {
    /// The event a status change emits (SPEC §5; [`Change::event`] decides which), if any.
    pub fn change(s: &CheckState, ch: Change) -> Option<Self> {
        let base = CheckEvent::new(s, ch.from);
        Some(match ch.event()? {
            ChangeEvent::Connected => Self::Connected(base),
            ChangeEvent::Reconnected => Self::Reconnected(base),
            ChangeEvent::Disconnected => Self::Disconnected(base),
            ChangeEvent::HealthDegraded => Self::HealthDegraded(base),
        })
    }

    /// `connection:failed` for attempt number `attempt`, which failed with `kind`.
    pub fn failed(s: &CheckState, previous: Status, attempt: u32, kind: ErrorKind) -> Self {
        let mut check = CheckEvent::new(s, previous);
        check.error_kind = Some(kind);
        Self::Failed(Failed { check, attempt })
    }

    /// `connection:reconnecting` after `attempt` failures, retrying in `delay`.
    pub fn reconnecting(s: &CheckState, previous: Status, attempt: u32, delay: Duration) -> Self {
        Self::Reconnecting(Reconnecting {
            check: CheckEvent::new(s, previous),
            attempt,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// `connection:max_attempts_reached` after `attempt` failures.
    pub fn max_attempts_reached(s: &CheckState, previous: Status, attempt: u32) -> Self {
        Self::MaxAttemptsReached(MaxAttemptsReached {
            check: CheckEvent::new(s, previous),
            attempt,
        })
    }

    /// `agent:overall`.
    pub fn overall(now: Overall, before: Overall) -> Self {
        Self::Overall(OverallChanged {
            status: now.status,
            previous_status: before.status,
            score: now.score,
            band: now.band(),
            previous_band: before.band(),
            at: SystemTime::now(),
        })
    }

    /// The SPEC name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connected(_) => "connection:connected",
            Self::Disconnected(_) => "connection:disconnected",
            Self::Reconnected(_) => "connection:reconnected",
            Self::HealthDegraded(_) => "connection:health_degraded",
            Self::HealthCheck(_) => "connection:health_check",
            Self::Failed(_) => "connection:failed",
            Self::AuthFailed(_) => "connection:auth_failed",
            Self::Reconnecting(_) => "connection:reconnecting",
            Self::MaxAttemptsReached(_) => "connection:max_attempts_reached",
            Self::Restored(_) => "connection:restored",
            Self::Overall(_) => "agent:overall",
            Self::Lagged(_) => "agent:lagged",
        }
    }

    /// The common fields of a `connection:*` event.
    pub fn check_event(&self) -> Option<&CheckEvent> {
        match self {
            Self::Connected(c)
            | Self::Disconnected(c)
            | Self::Reconnected(c)
            | Self::HealthDegraded(c)
            | Self::HealthCheck(c)
            | Self::AuthFailed(c)
            | Self::Restored(c) => Some(c),
            Self::Failed(f) => Some(&f.check),
            Self::Reconnecting(r) => Some(&r.check),
            Self::MaxAttemptsReached(m) => Some(&m.check),
            Self::Overall(_) | Self::Lagged(_) => None,
        }
    }

    /// The check this event is about (`None` for `agent:*`).
    pub fn check(&self) -> Option<&str> {
        self.check_event().map(|c| c.check.as_str())
    }

    /// The data as JSON text (what SSE sends after `data: `).
    pub fn data_json(&self) -> String {
        serde_json::to_string(&Data(self)).unwrap_or_else(|e| {
            tracing::error!(event = self.name(), error = %e, "cannot serialise event");
            "null".into()
        })
    }
}

/// Serialises an event's payload alone.
struct Data<'a>(&'a Event);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Event::Failed(p) => p.serialize(s),
            Event::Reconnecting(p) => p.serialize(s),
            Event::MaxAttemptsReached(p) => p.serialize(s),
            Event::Overall(p) => p.serialize(s),
            Event::Lagged(p) => p.serialize(s),
            // The other variants carry a bare `CheckEvent`.
            e => e.check_event().serialize(s),
        }
    }
}

/// `{"event": NAME, "data": {...}}`, the `/ws` message.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Event", 2)?;
        st.serialize_field("event", self.name())?;
        st.serialize_field("data", &Data(self))?;
        st.end()
    }
}

/// An event as the bus carries it: typed, with its JSON computed once for every
/// subscriber.
#[derive(Debug, Clone)]
pub struct Published {
    /// The SPEC name (`typed.name()`).
    pub event: &'static str,
    /// The event's data, serialised.
    pub data: Json,
    /// The typed event.
    pub typed: Event,
    ws: OnceLock<Arc<str>>,
}

impl Published {
    /// Serialises `e`'s data (once; every subscriber shares the text).
    pub fn new(e: Event) -> Self {
        Self {
            event: e.name(),
            data: Json::new(e.data_json().into()),
            typed: e,
            ws: OnceLock::new(),
        }
    }

    /// The `/ws` message `{"event":NAME,"data":DATA}`, built on first use from the data
    /// text and shared by every WebSocket subscriber.
    pub fn ws_text(&self) -> &Arc<str> {
        self.ws.get_or_init(|| {
            // SPEC names are plain ASCII (`connection:failed`): nothing to escape.
            format!(
                r#"{{"event":"{}","data":{}}}"#,
                self.event,
                self.data.text()
            )
            .into()
        })
    }
}

/// JSON text serialised once and shared; [`Json::value`] (and indexing, `data["check"]`)
/// parses it on first use, for code and tests that inspect fields by name.
#[derive(Clone)]
pub struct Json {
    text: Arc<str>,
    value: OnceLock<serde_json::Value>,
}

impl Json {
    fn new(text: Arc<str>) -> Self {
        Self {
            text,
            value: OnceLock::new(),
        }
    }

    /// The JSON text.
    pub fn text(&self) -> &Arc<str> {
        &self.text
    }

    /// The parsed value (parsed once, on first use).
    pub fn value(&self) -> &serde_json::Value {
        self.value
            .get_or_init(|| serde_json::from_str(&self.text).unwrap_or(serde_json::Value::Null))
    }
}

impl Index<&str> for Json {
    type Output = serde_json::Value;
    /// A field of the data; `null` when absent.
    fn index(&self, key: &str) -> &serde_json::Value {
        &self.value()[key]
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The broadcast bus. Slow subscribers lose the oldest events (they are told how many).
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Published>>,
}

impl Bus {
    /// A bus holding up to `capacity` undelivered events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx }
    }

    /// Publishes an event: serialised once, only if anyone listens (dropped otherwise).
    pub fn send(&self, e: Event) {
        if self.has_subscribers() {
            let _ = self.tx.send(Arc::new(Published::new(e)));
        }
    }

    /// True if anyone is listening (events are only built then).
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
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
    /// The agent is stopping: every supervisor has stopped and `states` are the final
    /// states of its checks (the history store writes them all, so a clean restart
    /// restores each exactly).
    fn on_stop(&self, states: &[CheckState]) {
        let _ = states;
    }
}

/// The set of observers, shared by every supervisor.
pub type Observers = Arc<Vec<Arc<dyn Observer>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Mode;

    fn at() -> SystemTime {
        crate::time::from_unix_ms(1_777_636_800_000) // 2026-05-01T12:00:00.000Z
    }

    fn base() -> CheckEvent {
        CheckEvent {
            check: "db".into(),
            kind: "tcp",
            status: Status::Unhealthy,
            previous_status: Status::Healthy,
            at: at(),
            score: Some(0),
            latency_ms: Some(1.5),
            error_kind: Some(ErrorKind::Refused),
            message: "connection refused".into(),
        }
    }

    fn keys(v: &serde_json::Value) -> Vec<&str> {
        let mut k: Vec<&str> = v
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        k.sort_unstable();
        k
    }

    const COMMON: [&str; 9] = [
        "at",
        "check",
        "error_kind",
        "kind",
        "latency_ms",
        "message",
        "previous_status",
        "score",
        "status",
    ];

    fn with(extra: &[&'static str]) -> Vec<&'static str> {
        let mut k: Vec<&str> = COMMON.iter().chain(extra).copied().collect();
        k.sort_unstable();
        k
    }

    /// Pins every event's name and data field names: the wire format consumers read.
    #[test]
    fn every_event_has_its_spec_name_and_fields() {
        let b = base;
        let overall = Event::Overall(OverallChanged {
            status: OverallStatus::Partial,
            previous_status: OverallStatus::Healthy,
            score: Some(55.0),
            band: "orange",
            previous_band: "green",
            at: at(),
        });
        let cases: Vec<(Event, &str, Vec<&str>)> = vec![
            (Event::Connected(b()), "connection:connected", with(&[])),
            (
                Event::Disconnected(b()),
                "connection:disconnected",
                with(&[]),
            ),
            (Event::Reconnected(b()), "connection:reconnected", with(&[])),
            (
                Event::HealthDegraded(b()),
                "connection:health_degraded",
                with(&[]),
            ),
            (
                Event::HealthCheck(b()),
                "connection:health_check",
                with(&[]),
            ),
            (Event::AuthFailed(b()), "connection:auth_failed", with(&[])),
            (Event::Restored(b()), "connection:restored", with(&[])),
            (
                Event::Failed(Failed {
                    check: b(),
                    attempt: 2,
                }),
                "connection:failed",
                with(&["attempt"]),
            ),
            (
                Event::Reconnecting(Reconnecting {
                    check: b(),
                    attempt: 2,
                    delay_ms: 4000,
                }),
                "connection:reconnecting",
                with(&["attempt", "delay_ms"]),
            ),
            (
                Event::MaxAttemptsReached(MaxAttemptsReached {
                    check: b(),
                    attempt: 5,
                }),
                "connection:max_attempts_reached",
                with(&["attempt"]),
            ),
            (
                overall,
                "agent:overall",
                vec![
                    "at",
                    "band",
                    "previous_band",
                    "previous_status",
                    "score",
                    "status",
                ],
            ),
            (
                Event::Lagged(Lagged { missed: 7 }),
                "agent:lagged",
                vec!["missed"],
            ),
        ];
        for (e, name, fields) in cases {
            assert_eq!(e.name(), name);
            let p = Published::new(e.clone());
            assert_eq!(p.event, name);
            assert_eq!(keys(p.data.value()), fields, "{name}");
            // The /ws message is the serde form of the enum, built from the same text.
            let ws: serde_json::Value = serde_json::from_str(p.ws_text()).expect("ws json");
            assert_eq!(ws, serde_json::to_value(&e).expect("event json"), "{name}");
            assert_eq!(ws["event"], name);
            assert_eq!(&ws["data"], p.data.value());
        }
    }

    /// The value types of the common fields are those consumers have always read.
    #[test]
    fn field_values_keep_their_json_types() {
        let p = Published::new(Event::Failed(Failed {
            check: base(),
            attempt: 2,
        }));
        assert_eq!(
            p.data.value(),
            &serde_json::json!({
                "check": "db",
                "kind": "tcp",
                "status": "unhealthy",
                "previous_status": "healthy",
                "at": "2026-05-01T12:00:00.000Z",
                "score": 0,
                "latency_ms": 1.5,
                "error_kind": "refused",
                "message": "connection refused",
                "attempt": 2,
            })
        );
        let fresh = CheckEvent {
            score: None,
            latency_ms: None,
            error_kind: None,
            ..base()
        };
        let p = Published::new(Event::HealthCheck(fresh));
        for k in ["score", "latency_ms", "error_kind"] {
            assert!(p.data[k].is_null(), "{k}");
        }
        let o = Published::new(Event::overall(
            Overall {
                status: OverallStatus::Healthy,
                score: Some(100.0),
            },
            Overall {
                status: OverallStatus::Unknown,
                score: None,
            },
        ));
        assert_eq!(o.data["status"], "healthy");
        assert_eq!(o.data["previous_status"], "unknown");
        assert_eq!(o.data["score"], 100.0);
        assert_eq!(o.data["band"], "green");
        assert_eq!(o.data["previous_band"], "none");
        assert_eq!(
            Published::new(Event::Lagged(Lagged { missed: 3 }))
                .data
                .text()
                .as_ref(),
            r#"{"missed":3}"#
        );
    }

    #[test]
    fn constructors_take_the_state_after_the_fact() {
        let mut s = CheckState::unknown("db", "tcp", Mode::Probe);
        s.status = Status::Unhealthy;
        s.error_kind = Some(ErrorKind::Timeout);
        let f = Event::failed(&s, Status::Healthy, 3, ErrorKind::Refused);
        let c = f.check_event().expect("per-check");
        assert_eq!(
            (c.status, c.previous_status),
            (Status::Unhealthy, Status::Healthy)
        );
        assert_eq!(
            c.error_kind,
            Some(ErrorKind::Refused),
            "the attempt's kind wins"
        );
        assert_eq!(f.check(), Some("db"));
        let r = Event::reconnecting(&s, Status::Unhealthy, 3, Duration::from_millis(2500));
        assert!(matches!(
            r,
            Event::Reconnecting(Reconnecting {
                attempt: 3,
                delay_ms: 2500,
                ..
            })
        ));
        let ch = Change {
            from: Status::Unknown,
            to: Status::Healthy,
        };
        assert_eq!(
            Event::change(&s, ch).map(|e| e.name()),
            Some("connection:connected")
        );
        let ch = Change {
            from: Status::Degraded,
            to: Status::Healthy,
        };
        assert_eq!(Event::change(&s, ch), None);
        let down = Overall {
            status: OverallStatus::Down,
            score: Some(0.0),
        };
        assert_eq!(Event::overall(down, down).check(), None);
    }

    /// Every subscriber gets the same text: serialised once per event, not per client.
    #[tokio::test]
    async fn the_bus_serialises_each_event_once() {
        let bus = Bus::new(8);
        bus.send(Event::HealthCheck(base())); // nobody listens: dropped, nothing built
        let (mut a, mut b) = (bus.subscribe(), bus.subscribe());
        bus.send(Event::HealthCheck(base()));
        let (x, y) = (a.recv().await.expect("a"), b.recv().await.expect("b"));
        assert!(Arc::ptr_eq(&x, &y));
        assert!(Arc::ptr_eq(x.data.text(), y.data.text()));
        assert!(Arc::ptr_eq(x.ws_text(), y.ws_text()));
        assert!(
            a.try_recv().is_err(),
            "the event sent before subscribing is gone"
        );
    }
}
