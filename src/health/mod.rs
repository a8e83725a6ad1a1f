//! The health model (SPEC §4): the only place that turns [`Outcome`]s into statuses and
//! scores, and checks into the overall status.
//!
//! | status | score |
//! |---|---|
//! | healthy | 100, minus 10 per consecutive failure (at most 30) |
//! | degraded | 60, minus 10 per consecutive failure (at most 30) |
//! | connecting | 40 |
//! | unhealthy, disconnected | 0 |
//! | unknown | none |
//!
//! Sessions: the handshake alone leaves the status as it is (`unknown` becomes
//! `connecting`); the first answered heartbeat makes the session `healthy`. An unanswered
//! heartbeat (a `timeout` from [`Source::Heartbeat`]) is counted but moves no status: the
//! supervisor degrades the session at `poor_after` ([`CheckState::heartbeat_age`]) and
//! drops it at `stale_after` ([`CheckState::session_lost`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::check::{ErrorKind, Mode, Outcome, Verdict};
use crate::config::{CheckConfig, Timing};

/// A check's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No result yet.
    Unknown,
    /// First attempt under way, no success yet.
    Connecting,
    /// Working.
    Healthy,
    /// Working, but slow, stale-ish, or warned.
    Degraded,
    /// Probe failures reached the threshold, or credentials were rejected.
    Unhealthy,
    /// Session lost or cannot be established.
    Disconnected,
}

impl Status {
    /// All six, in exposition order.
    pub const ALL: [Status; 6] = [
        Self::Unknown,
        Self::Connecting,
        Self::Healthy,
        Self::Degraded,
        Self::Unhealthy,
        Self::Disconnected,
    ];

    /// SPEC name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Connecting => "connecting",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
            Self::Disconnected => "disconnected",
        }
    }

    /// Parses a SPEC name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// `unhealthy` or `disconnected` (what alerts fire on).
    pub fn is_failing(self) -> bool {
        matches!(self, Self::Unhealthy | Self::Disconnected)
    }

    /// `healthy` or `degraded` (`lifeline_check_up` = 1).
    pub fn is_up(self) -> bool {
        matches!(self, Self::Healthy | Self::Degraded)
    }
}

/// Where an outcome came from; decides how a failure moves the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A probe attempt.
    Probe,
    /// Opening a session.
    Connect,
    /// A heartbeat on a live session.
    Heartbeat,
}

/// A status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Before.
    pub from: Status,
    /// After.
    pub to: Status,
}

/// The SPEC §5 event a status change emits ([`crate::events::Event::change`] builds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeEvent {
    /// `connection:connected`.
    Connected,
    /// `connection:reconnected`.
    Reconnected,
    /// `connection:disconnected`.
    Disconnected,
    /// `connection:health_degraded`.
    HealthDegraded,
}

impl Change {
    /// The SPEC §5 event this change emits, if any.
    pub fn event(&self) -> Option<ChangeEvent> {
        use Status::*;
        match (self.from, self.to) {
            (Unknown | Connecting, Healthy) => Some(ChangeEvent::Connected),
            (Unhealthy | Disconnected, Healthy) => Some(ChangeEvent::Reconnected),
            (_, Unhealthy | Disconnected) => Some(ChangeEvent::Disconnected),
            (_, Degraded) => Some(ChangeEvent::HealthDegraded),
            _ => None,
        }
    }
}

/// The live state of one check, as `/health/detailed` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckState {
    /// Check name.
    pub name: String,
    /// Kind.
    pub kind: &'static str,
    /// Probe or session.
    pub mode: Mode,
    /// The check's labels.
    pub labels: BTreeMap<String, String>,
    /// Current status.
    pub status: Status,
    /// 0–100, none while unknown.
    pub score: Option<u8>,
    /// Latency of the last success (ms).
    pub latency_ms: Option<f64>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Successes in a row.
    #[serde(skip)]
    pub consecutive_successes: u32,
    /// Backoff step (failures counted by the scheduler, reset by force-check).
    pub attempt: u32,
    /// When the next attempt is due (RFC 3339).
    #[serde(with = "crate::time::serde_rfc3339_opt")]
    pub next_attempt_at: Option<SystemTime>,
    /// Last success (RFC 3339).
    #[serde(with = "crate::time::serde_rfc3339_opt")]
    pub last_success_at: Option<SystemTime>,
    /// The success before the last one (the history store writes a healthy check's
    /// state when its last success enters a new minute, not after every probe).
    #[serde(skip)]
    pub previous_success_at: Option<SystemTime>,
    /// Last status change (RFC 3339).
    #[serde(with = "crate::time::serde_rfc3339_opt")]
    pub since: Option<SystemTime>,
    /// Last failure text.
    pub last_error: Option<String>,
    /// Last failure kind (or warning kind, e.g. `rejected` for SIP 503).
    pub error_kind: Option<ErrorKind>,
    /// Session mode: age of the last answered heartbeat (ms).
    pub heartbeat_age_ms: Option<u64>,
    /// Message of the last result.
    pub message: String,
    /// Facts learned from the peer.
    pub details: BTreeMap<String, serde_json::Value>,
    /// Share in the overall score.
    #[serde(skip)]
    pub weight: f64,
    /// Whether failing makes the overall status `partial`.
    pub critical: bool,
}

impl CheckState {
    /// The initial (unknown) state of a configured check.
    pub fn new(c: &CheckConfig) -> Self {
        let mut s = Self::unknown(&c.name, c.kind, c.mode);
        s.labels = c.labels.clone();
        s.weight = c.weight;
        s.critical = c.critical;
        s
    }

    /// An unknown state with no labels, weight 1 and critical: what a check is before
    /// its first result (tests and benchmarks start from it too).
    pub fn unknown(name: &str, kind: &'static str, mode: Mode) -> Self {
        Self {
            name: name.to_string(),
            kind,
            mode,
            labels: BTreeMap::new(),
            status: Status::Unknown,
            score: None,
            latency_ms: None,
            consecutive_failures: 0,
            consecutive_successes: 0,
            attempt: 0,
            next_attempt_at: None,
            last_success_at: None,
            previous_success_at: None,
            since: None,
            last_error: None,
            error_kind: None,
            heartbeat_age_ms: None,
            message: String::new(),
            details: BTreeMap::new(),
            weight: 1.0,
            critical: true,
        }
    }

    fn set(&mut self, to: Status) -> Option<Change> {
        let from = self.status;
        self.status = to;
        self.score = score(to, self.consecutive_failures);
        if from == to {
            return None;
        }
        self.since = Some(SystemTime::now());
        Some(Change { from, to })
    }

    /// An attempt is starting: `unknown` becomes `connecting`.
    pub fn begin(&mut self) -> Option<Change> {
        if self.status == Status::Unknown {
            self.set(Status::Connecting)
        } else {
            None
        }
    }

    /// Applies one outcome.
    pub fn apply(&mut self, o: &Outcome, src: Source, t: &Timing) -> Option<Change> {
        for (k, v) in &o.details {
            self.details.insert(k.clone(), v.clone());
        }
        self.message = o.message.clone();
        match &o.verdict {
            // A session's handshake alone proves nothing about the peer answering: the
            // status waits for the first answered heartbeat (`connecting` on the first
            // connection, still `disconnected`/`unhealthy` after a loss).
            Verdict::Up | Verdict::Warn(_) if src == Source::Connect => {
                self.latency_ms = Some(o.latency.as_secs_f64() * 1000.0);
                let to = match self.status {
                    Status::Unknown => Status::Connecting,
                    s => s,
                };
                self.set(to)
            }
            Verdict::Up | Verdict::Warn(_) => {
                self.consecutive_failures = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                self.previous_success_at = self.last_success_at;
                self.last_success_at = Some(SystemTime::now());
                self.latency_ms = Some(o.latency.as_secs_f64() * 1000.0);
                self.heartbeat_age_ms = (self.mode == Mode::Session).then_some(0);
                let warned = matches!(o.verdict, Verdict::Warn(_));
                self.error_kind = o.error_kind();
                if warned {
                    self.last_error = Some(o.message.clone());
                }
                let target = if warned || o.latency > t.degraded_latency {
                    Status::Degraded
                } else {
                    Status::Healthy
                };
                let held = self.status.is_failing()
                    && src == Source::Probe
                    && self.consecutive_successes < t.healthy_threshold
                    && self.error_kind != Some(ErrorKind::AuthFailed);
                if held {
                    self.score = score(self.status, 0);
                    None
                } else {
                    self.set(target)
                }
            }
            Verdict::Down(kind) => {
                self.consecutive_successes = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.error_kind = Some(*kind);
                self.last_error = Some(o.message.clone());
                // An unanswered heartbeat is counted but does not by itself move the
                // status: `poor_after` degrades, `stale_after` drops the session.
                let unanswered = src == Source::Heartbeat && *kind == ErrorKind::Timeout;
                let to = if *kind == ErrorKind::AuthFailed {
                    Status::Unhealthy
                } else if src == Source::Connect {
                    Status::Disconnected
                } else if !unanswered && self.consecutive_failures >= t.unhealthy_threshold {
                    Status::Unhealthy
                } else {
                    match self.status {
                        Status::Unknown => Status::Connecting,
                        s => s,
                    }
                };
                self.set(to)
            }
            Verdict::Unknown => {
                self.error_kind = None;
                self.last_error = Some(o.message.clone());
                self.set(Status::Unknown)
            }
        }
    }

    /// A live session ended (peer closed, stale heartbeat, …).
    pub fn session_lost(&mut self, kind: ErrorKind, message: &str) -> Option<Change> {
        self.consecutive_successes = 0;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.error_kind = Some(kind);
        self.last_error = Some(message.to_string());
        self.message = message.to_string();
        self.heartbeat_age_ms = None;
        self.set(Status::Disconnected)
    }

    /// Session mode: the last heartbeat answer is `age` old. From `poor_after` on, a
    /// healthy session is degraded.
    pub fn heartbeat_age(&mut self, age: Duration, poor_after: Duration) -> Option<Change> {
        self.heartbeat_age_ms = Some(age.as_millis() as u64);
        if self.status == Status::Healthy && age >= poor_after {
            self.message = format!("no heartbeat answer for {}", crate::time::fmt_duration(age));
            self.set(Status::Degraded)
        } else {
            None
        }
    }
}

/// A check's last known state, read back from the history store when the agent starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// Check name.
    pub name: String,
    /// Last known status.
    pub status: Status,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Last success.
    pub last_success_at: Option<SystemTime>,
    /// Last status change.
    pub since: Option<SystemTime>,
    /// Last failure kind.
    pub error_kind: Option<ErrorKind>,
    /// Message of the last result.
    pub message: String,
}

impl CheckState {
    /// Takes over a restored state (no status change is reported: the check continues
    /// where it was before the restart).
    pub fn restore(&mut self, r: &Restored) {
        self.status = r.status;
        self.consecutive_failures = r.consecutive_failures;
        self.score = score(r.status, r.consecutive_failures);
        self.last_success_at = r.last_success_at;
        self.since = r.since;
        self.error_kind = r.error_kind;
        if r.status.is_failing() && !r.message.is_empty() {
            self.last_error = Some(r.message.clone());
        }
        self.message = r.message.clone();
    }
}

/// The score of a status after `failures` consecutive failures.
pub fn score(status: Status, failures: u32) -> Option<u8> {
    let penalty = (failures.min(3) * 10) as u8;
    match status {
        Status::Unknown => None,
        Status::Healthy => Some(100 - penalty),
        Status::Degraded => Some(60 - penalty),
        Status::Connecting => Some(40),
        Status::Unhealthy | Status::Disconnected => Some(0),
    }
}

/// The agent's overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverallStatus {
    /// No check has a result.
    Unknown,
    /// Every check with a result is healthy.
    Healthy,
    /// None failing but some degraded/connecting, or only non-critical checks failing.
    Degraded,
    /// A critical check failing while at least one other is not.
    Partial,
    /// Every check with a result is failing.
    Down,
}

impl OverallStatus {
    /// All five.
    pub const ALL: [OverallStatus; 5] = [
        Self::Unknown,
        Self::Healthy,
        Self::Degraded,
        Self::Partial,
        Self::Down,
    ];

    /// SPEC name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Partial => "partial",
            Self::Down => "down",
        }
    }
}

/// Overall status and score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Overall {
    /// Status.
    pub status: OverallStatus,
    /// Weight-averaged score of checks that have one.
    pub score: Option<f64>,
}

impl Overall {
    /// Colour band of the score: `green` ≥ 80, `orange` 50–79, `red` < 50.
    pub fn band(&self) -> &'static str {
        match self.score {
            None => "none",
            Some(s) if s >= 80.0 => "green",
            Some(s) if s >= 50.0 => "orange",
            Some(_) => "red",
        }
    }
}

/// Computes the overall status from the checks' states.
pub fn overall<'a>(states: impl IntoIterator<Item = &'a CheckState>) -> Overall {
    overall_of(states.into_iter().map(Part::of))
}

/// What of one check's state the overall status reads.
#[derive(Debug, Clone, Copy)]
struct Part {
    status: Status,
    score: Option<u8>,
    weight: f64,
    critical: bool,
}

impl Part {
    fn of(s: &CheckState) -> Self {
        Self {
            status: s.status,
            score: s.score,
            weight: s.weight,
            critical: s.critical,
        }
    }
}

fn overall_of(parts: impl Iterator<Item = Part>) -> Overall {
    let (mut n, mut healthy, mut failing, mut critical_failing) = (0, 0, 0, 0);
    let (mut wsum, mut ssum) = (0.0, 0.0);
    for s in parts {
        if s.status == Status::Unknown {
            continue;
        }
        n += 1;
        match s.status {
            Status::Healthy => healthy += 1,
            st if st.is_failing() => {
                failing += 1;
                if s.critical {
                    critical_failing += 1;
                }
            }
            _ => {}
        }
        if let Some(sc) = s.score {
            wsum += s.weight;
            ssum += s.weight * f64::from(sc);
        }
    }
    let status = if n == 0 {
        OverallStatus::Unknown
    } else if failing == n {
        OverallStatus::Down
    } else if critical_failing > 0 {
        OverallStatus::Partial
    } else if healthy == n {
        OverallStatus::Healthy
    } else {
        OverallStatus::Degraded
    };
    let score = if wsum > 0.0 {
        Some(ssum / wsum)
    } else if n > 0 {
        Some(0.0)
    } else {
        None
    };
    Overall { status, score }
}

/// One check's entry in the table.
pub struct Entry {
    /// Its state.
    pub state: Mutex<CheckState>,
}

/// Every check's live state, in config order. Readers take short locks and copy.
#[derive(Default)]
pub struct StateTable {
    inner: RwLock<TableInner>,
}

#[derive(Default)]
struct TableInner {
    order: Vec<String>,
    by_name: HashMap<String, Arc<Entry>>,
    /// The entries of `order`, in that order (no lookup needed to walk them).
    entries: Vec<Arc<Entry>>,
}

impl StateTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the set of checks: `order` is every name in config order. Entries whose
    /// name is in `order` survive with their state unless `fresh` brings a new one;
    /// everything else is removed. When the order is unchanged (a reload that edited
    /// checks but added, removed and moved none), only the fresh entries are touched.
    pub fn replace(&self, order: &[&str], fresh: Vec<(String, Arc<Entry>)>) {
        let mut g = self.inner.write();
        let g = &mut *g;
        if g.order.len() == order.len() && g.order.iter().zip(order).all(|(a, b)| a == b) {
            let mut fresh: HashMap<String, Arc<Entry>> = fresh.into_iter().collect();
            for (i, n) in g.order.iter().enumerate() {
                if fresh.is_empty() {
                    break;
                }
                if let Some(e) = fresh.remove(n) {
                    g.entries[i] = e.clone();
                    g.by_name.insert(n.clone(), e);
                }
            }
            return;
        }
        let mut by_name: HashMap<String, Arc<Entry>> = HashMap::with_capacity(order.len());
        for (n, e) in fresh {
            by_name.insert(n, e);
        }
        for n in order {
            if !by_name.contains_key(*n)
                && let Some(e) = g.by_name.get(*n)
            {
                by_name.insert(n.to_string(), e.clone());
            }
        }
        g.entries = order
            .iter()
            .filter_map(|n| by_name.get(*n).cloned())
            .collect();
        g.order = order.iter().map(|n| n.to_string()).collect();
        g.by_name = by_name;
    }

    /// Whether the check at position `i` of the config order is `name`.
    pub fn is_at(&self, i: usize, name: &str) -> bool {
        let g = self.inner.read();
        g.entries.len() == g.order.len() && g.order.get(i).is_some_and(|n| n == name)
    }

    /// Gives the checks at the positions of `fresh` their new entries (the order is
    /// unchanged; see [`StateTable::is_at`]).
    pub fn renew_at(&self, fresh: Vec<(usize, Arc<Entry>)>) {
        let mut g = self.inner.write();
        let g = &mut *g;
        for (i, e) in fresh {
            if let Some(n) = g.order.get(i) {
                g.entries[i] = e.clone();
                g.by_name.insert(n.clone(), e);
            }
        }
    }

    /// The entry of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.inner.read().by_name.get(name).cloned()
    }

    /// A copy of one check's state.
    pub fn state(&self, name: &str) -> Option<CheckState> {
        self.get(name).map(|e| e.state.lock().clone())
    }

    /// Copies of every state, in config order.
    pub fn all(&self) -> Vec<CheckState> {
        let g = self.inner.read();
        g.entries.iter().map(|e| e.state.lock().clone()).collect()
    }

    /// Names in config order.
    pub fn names(&self) -> Vec<String> {
        self.inner.read().order.clone()
    }

    /// The overall status now: one short lock per check, nothing copied but the four
    /// fields it reads (this runs after every burst of changes).
    pub fn overall(&self) -> Overall {
        let g = self.inner.read();
        overall_of(g.entries.iter().map(|e| Part::of(&e.state.lock())))
    }

    /// `{name: {status, up, score, latency_ms, labels, error_kind, consecutive_failures}}`:
    /// the snapshot rules and plugins read.
    pub fn snapshot_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for s in self.all() {
            m.insert(
                s.name.clone(),
                serde_json::json!({
                    "status": s.status.as_str(),
                    "up": s.status.is_up(),
                    "score": s.score,
                    "latency_ms": s.latency_ms,
                    "labels": s.labels,
                    "error_kind": s.error_kind,
                    "consecutive_failures": s.consecutive_failures,
                }),
            );
        }
        serde_json::Value::Object(m)
    }
}

impl crate::check::StateView for StateTable {
    fn snapshot_json(&self) -> serde_json::Value {
        StateTable::snapshot_json(self)
    }
}

#[cfg(test)]
mod tests;
