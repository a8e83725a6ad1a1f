//! The alert lifecycle (SPEC §7) and the engine task.
//!
//! Per (route, check) an alert is *inactive*, *pending* (failing, for less than `for`) or
//! *firing*. Separately, each alert remembers what receivers were told: nothing, or
//! "firing" under a `dedupe_key`. Holds (flapping, a failing dependency, the connectivity
//! guard, silences) only stop notifications; the lifecycle keeps running, and when a hold
//! lifts the two are reconciled: a firing alert nobody was told about is notified, a
//! notified alert whose check is up again is resolved. Resolves are never held by a
//! dependency, the connectivity guard or a silence (only by flapping), so a "resolved"
//! always follows a delivered "firing".
//!
//! [`Core`] is the pure state machine: inputs are check snapshots and the clock
//! (`tokio::time::Instant`, so paused-time tests drive it), outputs are [`Action`]s.
//! [`AlertEngine`] is the observer plus the task that feeds it, persists its actions to
//! the outbox and wakes the delivery tasks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outbox::{Delivery, Outbox, SavedAlert};
use super::{
    AlertError, AlertItem, NoteStatus, Notification, NotifierConfig, NotifierKind, RouteConfig,
    Silence,
};
use crate::config::Config;
use crate::events::Observer;
use crate::health::{Change, CheckState, Status};
use crate::metrics::Metrics;
use crate::time::{rfc3339, unix_ms};

/// Route name of the `LifelineAgentOffline` alert.
pub const CONNECTIVITY_ROUTE: &str = "lifeline:connectivity";
/// How often a firing alert is re-posted to Alertmanager notifiers (keep-alive).
pub const AM_REFRESH: Duration = Duration::from_secs(60);
/// Capacity of the observer → engine channel.
const CHANNEL: usize = 8192;

/// What the engine knows about a check: the last state it was told.
#[derive(Debug, Clone)]
pub struct Snap {
    /// Check name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Status after the change.
    pub status: Status,
    /// Status before it.
    pub previous: Status,
    /// Last failure kind.
    pub error_kind: Option<String>,
    /// Last failure (or result) text.
    pub message: String,
    /// Score.
    pub score: Option<u8>,
    /// When the change happened.
    pub at: Instant,
    /// The same moment in wall time.
    pub at_wall: SystemTime,
}

impl Snap {
    /// A snapshot of `s` right after `change`.
    pub fn of(s: &CheckState, change: Change) -> Self {
        let message = if s.status.is_failing() {
            s.last_error.clone().unwrap_or_else(|| s.message.clone())
        } else {
            s.message.clone()
        };
        Self {
            name: s.name.clone(),
            kind: s.kind.to_string(),
            labels: s.labels.clone(),
            status: s.status,
            previous: change.from,
            error_kind: s.error_kind.map(|k| k.as_str().to_string()),
            message: crate::secret::redact(&message),
            score: s.score,
            at: Instant::now(),
            at_wall: SystemTime::now(),
        }
    }
}

/// The parts of the config the engine uses.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Routes.
    pub routes: Vec<RouteConfig>,
    /// Notifiers.
    pub notifiers: Vec<Arc<NotifierConfig>>,
    /// `depends_on` per check.
    pub depends_on: HashMap<String, Vec<String>>,
    /// `[agent.connectivity] checks`.
    pub connectivity: Vec<String>,
    /// `[[silences]]`.
    pub silences: Vec<Silence>,
    /// `http://<listen>`.
    pub agent_url: String,
    /// Every configured check name.
    pub checks: HashSet<String>,
}

impl Setup {
    /// Extracts the engine's view of `c`.
    pub fn from_config(c: &Config) -> Self {
        Self {
            routes: c.alerting.routes.clone(),
            notifiers: c.alerting.notifiers.clone(),
            depends_on: c
                .checks
                .iter()
                .filter(|k| !k.depends_on.is_empty())
                .map(|k| (k.name.clone(), k.depends_on.clone()))
                .collect(),
            connectivity: c.agent.connectivity.clone(),
            silences: c.alerting.silences.clone(),
            agent_url: format!("http://{}", c.agent.listen),
            checks: c.checks.iter().map(|k| k.name.clone()).collect(),
        }
    }

    fn is_am(&self, notifier: &str) -> bool {
        self.notifiers
            .iter()
            .any(|n| n.name == notifier && matches!(n.kind, NotifierKind::Alertmanager { .. }))
    }
}

/// An output of the state machine, executed in order by the engine task.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write to the outbox for these notifiers.
    Send {
        /// Notifier names.
        targets: Vec<String>,
        /// The notification.
        note: Notification,
    },
    /// Remember a notified firing alert.
    Save(SavedAlert),
    /// Forget one.
    Forget {
        /// Route.
        route: String,
        /// Check.
        check: String,
    },
}

#[derive(Debug, Clone)]
struct Notified {
    key: String,
    started: SystemTime,
}

#[derive(Debug)]
struct Alert {
    /// Failing since (set on the change into failing).
    failing_since: Option<(Instant, SystemTime)>,
    firing: bool,
    fired_wall: SystemTime,
    notified: Option<Notified>,
    flips: VecDeque<Instant>,
    flapping: bool,
    /// Held by a dependency or the connectivity guard at the last evaluation.
    held_reset: bool,
    /// A new `for` period counts from here (start, end of a dependency/connectivity hold).
    eligible_from: Instant,
    buffered: bool,
}

impl Alert {
    fn new(now: Instant) -> Self {
        Self {
            failing_since: None,
            firing: false,
            fired_wall: SystemTime::UNIX_EPOCH,
            notified: None,
            flips: VecDeque::new(),
            flapping: false,
            held_reset: false,
            eligible_from: now,
            buffered: false,
        }
    }
}

#[derive(Debug)]
struct Group {
    members: BTreeSet<String>,
    last_sent: Instant,
    last_refresh: Instant,
}

#[derive(Debug, Default)]
struct RouteState {
    /// Alerts that went firing, waiting for `group_wait`.
    buffer: Option<(Instant, Vec<String>)>,
    /// Resolves waiting for `group_wait`, per firing key.
    resolves: BTreeMap<String, (Instant, Vec<AlertItem>)>,
    /// Notified firing groups (repeat and keep-alive), by key.
    groups: BTreeMap<String, Group>,
}

#[derive(Debug, Default)]
struct Offline {
    since: Option<(Instant, SystemTime)>,
    notified: Option<Notified>,
}

/// The alert state machine.
pub struct Core {
    setup: Setup,
    checks: HashMap<String, Snap>,
    alerts: HashMap<(String, String), Alert>,
    routes: HashMap<String, RouteState>,
    offline: Offline,
    silences: Vec<Silence>,
    started: Instant,
    actions: Vec<Action>,
    deadline: Option<Instant>,
}

/// A stable key: the first 32 hex digits of SHA-256 over the parts.
pub fn dedupe_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

impl Core {
    /// A fresh state machine at `now`.
    pub fn new(setup: Setup, now: Instant) -> Self {
        let silences = setup.silences.clone();
        Self {
            setup,
            checks: HashMap::new(),
            alerts: HashMap::new(),
            routes: HashMap::new(),
            offline: Offline::default(),
            silences,
            started: now,
            actions: Vec::new(),
            deadline: None,
        }
    }

    /// Restores alerts receivers were told about before a restart: they are not re-sent,
    /// their repeat timer continues, and they resolve when their check is up again.
    pub fn restore(&mut self, saved: Vec<SavedAlert>, now: Instant, wall: SystemTime) {
        for s in saved {
            let last_sent = now
                .checked_sub(Duration::from_millis(
                    (unix_ms(wall) - s.last_sent_ms).max(0) as u64,
                ))
                .unwrap_or(now);
            let started =
                SystemTime::UNIX_EPOCH + Duration::from_millis(s.started_ms.max(0) as u64);
            if s.route == CONNECTIVITY_ROUTE {
                self.offline.notified = Some(Notified {
                    key: s.dedupe_key,
                    started,
                });
                continue;
            }
            let route_known = self.setup.routes.iter().any(|r| r.name == s.route);
            if !route_known || !self.setup.checks.contains(&s.check) {
                self.actions.push(Action::Forget {
                    route: s.route,
                    check: s.check,
                });
                continue;
            }
            let mut a = Alert::new(self.started);
            a.notified = Some(Notified {
                key: s.dedupe_key.clone(),
                started,
            });
            a.fired_wall = started;
            self.alerts.insert((s.route.clone(), s.check.clone()), a);
            let rs = self.routes.entry(s.route).or_default();
            rs.groups
                .entry(s.dedupe_key)
                .or_insert_with(|| Group {
                    members: BTreeSet::new(),
                    last_sent,
                    last_refresh: last_sent,
                })
                .members
                .insert(s.check);
        }
    }

    /// Replaces the config (reload). Alerts of removed routes or checks are forgotten.
    pub fn reload(&mut self, setup: Setup) {
        let routes: HashSet<String> = setup.routes.iter().map(|r| r.name.clone()).collect();
        let mut forget = Vec::new();
        self.alerts.retain(|(r, c), a| {
            let keep = routes.contains(r) && setup.checks.contains(c);
            if !keep && a.notified.is_some() {
                forget.push((r.clone(), c.clone()));
            }
            keep
        });
        for (route, check) in forget {
            self.actions.push(Action::Forget { route, check });
        }
        self.routes.retain(|r, _| routes.contains(r));
        for rs in self.routes.values_mut() {
            for g in rs.groups.values_mut() {
                g.members.retain(|c| setup.checks.contains(c));
            }
        }
        self.checks.retain(|c, _| setup.checks.contains(c));
        let api: Vec<Silence> = self
            .silences
            .iter()
            .filter(|s| !s.from_config)
            .cloned()
            .collect();
        self.silences = setup.silences.iter().cloned().chain(api).collect();
        self.setup = setup;
    }

    /// Replaces the API silences (config silences stay).
    pub fn set_api_silences(&mut self, api: Vec<Silence>) {
        self.silences = self.setup.silences.iter().cloned().chain(api).collect();
    }

    /// A status change of a check.
    pub fn change(&mut self, snap: Snap) {
        let was_failing = self
            .checks
            .get(&snap.name)
            .map(|s| s.status.is_failing())
            .unwrap_or(snap.previous.is_failing());
        let now_failing = snap.status.is_failing();
        if was_failing != now_failing {
            let routes: Vec<RouteConfig> = self
                .setup
                .routes
                .iter()
                .filter(|r| r.matches(&snap.name, &snap.kind, &snap.labels))
                .cloned()
                .collect();
            for r in routes {
                let started = self.started;
                let a = self
                    .alerts
                    .entry((r.name.clone(), snap.name.clone()))
                    .or_insert_with(|| Alert::new(started));
                a.failing_since = now_failing.then_some((snap.at, snap.at_wall));
                a.flips.push_back(snap.at);
                while a
                    .flips
                    .front()
                    .is_some_and(|t| snap.at.saturating_duration_since(*t) > r.flap_window)
                {
                    a.flips.pop_front();
                }
                if !a.flapping && a.flips.len() > r.flap_threshold as usize {
                    a.flapping = true;
                    let silenced = self.silences.iter().any(|s| {
                        s.active(snap.at_wall) && s.matches(&snap.name, &snap.kind, &snap.labels)
                    });
                    if !silenced {
                        let key = dedupe_key(&[
                            &r.name,
                            &snap.name,
                            "flapping",
                            &unix_ms(snap.at_wall).to_string(),
                        ]);
                        let item = item(
                            &snap,
                            a.failing_since.map(|f| f.1).unwrap_or(snap.at_wall),
                            None,
                        );
                        self.actions.push(Action::Send {
                            targets: r.notifiers.clone(),
                            note: Notification {
                                dedupe_key: key,
                                status: NoteStatus::Flapping,
                                route: r.name.clone(),
                                alerts: vec![item],
                                offline: false,
                                changed_at_ms: unix_ms(snap.at_wall),
                                agent_url: self.setup.agent_url.clone(),
                                refresh: false,
                            },
                        });
                    }
                    tracing::warn!(check = %snap.name, route = %r.name, changes = a.flips.len(), "check is flapping; holding its notifications until it is stable");
                }
            }
        }
        self.checks.insert(snap.name.clone(), snap);
    }

    /// The actions produced so far.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// When [`Core::evaluate`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn wake_at(&mut self, t: Instant) {
        self.deadline = Some(self.deadline.map_or(t, |d| d.min(t)));
    }

    fn silenced(&self, snap: &Snap, wall: SystemTime) -> bool {
        self.silences
            .iter()
            .any(|s| s.active(wall) && s.matches(&snap.name, &snap.kind, &snap.labels))
    }

    fn is_offline(&self) -> bool {
        !self.setup.connectivity.is_empty()
            && self
                .setup
                .connectivity
                .iter()
                .all(|c| self.checks.get(c).is_some_and(|s| s.status.is_failing()))
    }

    /// Runs every timer that is due and reconciles every alert with its holds.
    pub fn evaluate(&mut self, now: Instant, wall: SystemTime) {
        self.deadline = None;
        // Silence boundaries change holds: wake up at them.
        let since_epoch = |t: SystemTime| t.duration_since(wall).ok();
        let boundaries: Vec<Duration> = self
            .silences
            .iter()
            .flat_map(|s| [since_epoch(s.starts_at), since_epoch(s.ends_at)])
            .flatten()
            .collect();
        for d in boundaries {
            self.wake_at(now + d + Duration::from_millis(1));
        }
        let offline = self.is_offline();
        self.evaluate_offline(offline, now, wall);
        let routes = self.setup.routes.clone();
        for r in &routes {
            let names: Vec<String> = self
                .checks
                .values()
                .filter(|s| r.matches(&s.name, &s.kind, &s.labels))
                .map(|s| s.name.clone())
                .collect();
            for c in names {
                self.evaluate_alert(r, &c, offline, now, wall);
            }
            self.flush_route(r, now, wall);
        }
    }

    fn evaluate_offline(&mut self, offline: bool, now: Instant, wall: SystemTime) {
        if offline {
            let (since, since_wall) = *self.offline.since.get_or_insert((now, wall));
            if self.offline.notified.is_some() {
                return;
            }
            let wait = self
                .setup
                .routes
                .iter()
                .map(|r| r.for_)
                .min()
                .unwrap_or_default();
            if now < since + wait {
                self.wake_at(since + wait);
                return;
            }
            let targets = self.all_targets();
            if targets.is_empty() {
                return;
            }
            let key = dedupe_key(&[CONNECTIVITY_ROUTE, &unix_ms(since_wall).to_string()]);
            let note = self.offline_note(&key, NoteStatus::Firing, since_wall, None, wall);
            tracing::error!(checks = ?self.setup.connectivity, "every connectivity check is failing: the agent is offline; holding per-check alerts");
            self.actions.push(Action::Send { targets, note });
            self.actions.push(Action::Save(SavedAlert {
                route: CONNECTIVITY_ROUTE.into(),
                check: "*".into(),
                dedupe_key: key.clone(),
                started_ms: unix_ms(since_wall),
                last_sent_ms: unix_ms(wall),
            }));
            self.offline.notified = Some(Notified {
                key,
                started: since_wall,
            });
        } else {
            self.offline.since = None;
            let back = self
                .setup
                .connectivity
                .iter()
                .any(|c| self.checks.get(c).is_some_and(|s| s.status.is_up()));
            if back && let Some(n) = self.offline.notified.take() {
                tracing::info!("a connectivity check is up again: the agent is back online");
                let note =
                    self.offline_note(&n.key, NoteStatus::Resolved, n.started, Some(wall), wall);
                let targets = self.all_targets();
                self.actions.push(Action::Send { targets, note });
                self.actions.push(Action::Forget {
                    route: CONNECTIVITY_ROUTE.into(),
                    check: "*".into(),
                });
            }
        }
    }

    fn all_targets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.setup.routes {
            for n in &r.notifiers {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
        }
        out
    }

    fn offline_note(
        &self,
        key: &str,
        status: NoteStatus,
        started: SystemTime,
        ended: Option<SystemTime>,
        wall: SystemTime,
    ) -> Notification {
        let alerts = self
            .setup
            .connectivity
            .iter()
            .filter_map(|c| self.checks.get(c))
            .map(|s| item(s, started, ended))
            .collect();
        Notification {
            dedupe_key: key.to_string(),
            status,
            route: CONNECTIVITY_ROUTE.into(),
            alerts,
            offline: true,
            changed_at_ms: unix_ms(wall),
            agent_url: self.setup.agent_url.clone(),
            refresh: false,
        }
    }

    fn evaluate_alert(
        &mut self,
        r: &RouteConfig,
        check: &str,
        offline: bool,
        now: Instant,
        wall: SystemTime,
    ) {
        let Some(snap) = self.checks.get(check).cloned() else {
            return;
        };
        let key = (r.name.clone(), check.to_string());
        let dep_held = self.setup.depends_on.get(check).is_some_and(|deps| {
            deps.iter()
                .any(|d| self.checks.get(d).is_some_and(|s| s.status.is_failing()))
        });
        let silenced = self.silenced(&snap, wall);
        if snap.status.is_failing() && !self.alerts.contains_key(&key) {
            // A route added by a reload while the check was already failing.
            let mut a = Alert::new(self.started);
            a.failing_since = Some((snap.at, snap.at_wall));
            self.alerts.insert(key.clone(), a);
        }
        let Some(a) = self.alerts.get_mut(&key) else {
            return;
        };
        let mut wake = Vec::new();
        if a.flapping {
            match a.flips.back() {
                Some(last) if now < *last + r.flap_window => wake.push(*last + r.flap_window),
                _ => {
                    a.flapping = false;
                    a.flips.clear();
                    tracing::info!(check, route = %r.name, "check is stable again");
                }
            }
        }
        while a
            .flips
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > r.flap_window)
        {
            a.flips.pop_front();
        }
        let reset_hold = dep_held || offline;
        if reset_hold {
            a.held_reset = true;
        } else if a.held_reset {
            // The hold lifted: an alert nobody was told about needs a full `for` again, so
            // targets that recover along with their dependency never page.
            a.held_reset = false;
            a.eligible_from = now;
            if a.notified.is_none() {
                a.firing = false;
            }
        }
        let hold_fire = a.flapping || reset_hold || silenced;
        let mut buffer_add = false;
        let mut resolve: Option<(String, AlertItem)> = None;
        if snap.status.is_failing() {
            let since = a.failing_since.map(|f| f.0).unwrap_or(snap.at);
            let start = since.max(a.eligible_from);
            if !a.firing {
                if now >= start + r.for_ {
                    a.firing = true;
                    a.fired_wall = wall;
                } else if !reset_hold {
                    wake.push(start + r.for_);
                }
            }
            let eligible = a.firing && a.notified.is_none() && !hold_fire;
            if eligible && !a.buffered {
                a.buffered = true;
                buffer_add = true;
            } else if !eligible && a.buffered {
                a.buffered = false;
            }
        } else {
            a.firing = false;
            a.buffered = false;
            if snap.status.is_up()
                && !a.flapping
                && let Some(n) = a.notified.take()
            {
                resolve = Some((n.key, item(&snap, n.started, Some(snap.at_wall))));
            }
        }
        let removable = a.notified.is_none()
            && a.flips.is_empty()
            && !a.flapping
            && !a.buffered
            && !snap.status.is_failing();
        for t in wake {
            self.wake_at(t);
        }
        let rs = self.routes.entry(r.name.clone()).or_default();
        if buffer_add {
            let (_, members) = rs
                .buffer
                .get_or_insert_with(|| (now + r.group_wait, Vec::new()));
            members.push(check.to_string());
        }
        if let Some((k, it)) = resolve {
            if let Some(g) = rs.groups.get_mut(&k) {
                g.members.remove(check);
            }
            if r.send_resolved {
                rs.resolves
                    .entry(k)
                    .or_insert_with(|| (now + r.group_wait, Vec::new()))
                    .1
                    .push(it);
            }
            self.actions.push(Action::Forget {
                route: r.name.clone(),
                check: check.to_string(),
            });
        }
        if removable {
            self.alerts.remove(&key);
        }
    }

    fn flush_route(&mut self, r: &RouteConfig, now: Instant, wall: SystemTime) {
        let am_targets: Vec<String> = r
            .notifiers
            .iter()
            .filter(|n| self.setup.is_am(n))
            .cloned()
            .collect();
        let Some(mut rs) = self.routes.remove(&r.name) else {
            return;
        };
        // New firing group.
        if let Some((at, members)) = rs.buffer.take() {
            let members: Vec<String> = members
                .into_iter()
                .filter(|c| {
                    self.alerts
                        .get(&(r.name.clone(), c.clone()))
                        .is_some_and(|a| a.buffered)
                })
                .collect();
            if members.is_empty() {
            } else if now >= at {
                let mut sorted = members.clone();
                sorted.sort();
                let ms = unix_ms(wall).to_string();
                let mut parts: Vec<&str> = vec![&r.name];
                parts.extend(sorted.iter().map(String::as_str));
                parts.push(&ms);
                let key = dedupe_key(&parts);
                let mut items = Vec::new();
                let mut changed = wall;
                for c in &sorted {
                    let (Some(a), Some(snap)) = (
                        self.alerts.get_mut(&(r.name.clone(), c.clone())),
                        self.checks.get(c),
                    ) else {
                        continue;
                    };
                    let started = a.failing_since.map(|f| f.1).unwrap_or(snap.at_wall);
                    a.buffered = false;
                    a.notified = Some(Notified {
                        key: key.clone(),
                        started,
                    });
                    changed = changed.min(a.fired_wall);
                    items.push(item(snap, started, None));
                    self.actions.push(Action::Save(SavedAlert {
                        route: r.name.clone(),
                        check: c.clone(),
                        dedupe_key: key.clone(),
                        started_ms: unix_ms(started),
                        last_sent_ms: unix_ms(wall),
                    }));
                }
                self.actions.push(Action::Send {
                    targets: r.notifiers.clone(),
                    note: Notification {
                        dedupe_key: key.clone(),
                        status: NoteStatus::Firing,
                        route: r.name.clone(),
                        alerts: items,
                        offline: false,
                        changed_at_ms: unix_ms(changed),
                        agent_url: self.setup.agent_url.clone(),
                        refresh: false,
                    },
                });
                rs.groups.insert(
                    key,
                    Group {
                        members: sorted.into_iter().collect(),
                        last_sent: now,
                        last_refresh: now,
                    },
                );
            } else {
                self.wake_at(at);
                rs.buffer = Some((at, members));
            }
        }
        // Resolves.
        let due: Vec<String> = rs
            .resolves
            .iter()
            .filter(|(_, (at, _))| now >= *at)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some((_, items)) = rs.resolves.remove(&k) {
                let changed = items
                    .iter()
                    .filter_map(|i| i.ended_at.as_deref().and_then(crate::time::parse_rfc3339))
                    .min()
                    .unwrap_or(wall);
                self.actions.push(Action::Send {
                    targets: r.notifiers.clone(),
                    note: Notification {
                        dedupe_key: k,
                        status: NoteStatus::Resolved,
                        route: r.name.clone(),
                        alerts: items,
                        offline: false,
                        changed_at_ms: unix_ms(changed),
                        agent_url: self.setup.agent_url.clone(),
                        refresh: false,
                    },
                });
            }
        }
        if let Some(at) = rs.resolves.values().map(|(at, _)| *at).min() {
            self.wake_at(at);
        }
        // Repeats and Alertmanager keep-alives of notified groups.
        rs.groups.retain(|_, g| !g.members.is_empty());
        let keys: Vec<String> = rs.groups.keys().cloned().collect();
        for k in keys {
            let Some(g) = rs.groups.get_mut(&k) else {
                continue;
            };
            let members: Vec<String> = g.members.iter().cloned().collect();
            let repeat_due = now >= g.last_sent + r.repeat_interval;
            let refresh_due = !am_targets.is_empty() && now >= g.last_refresh + AM_REFRESH;
            if !repeat_due && !refresh_due {
                let mut next = g.last_sent + r.repeat_interval;
                if !am_targets.is_empty() {
                    next = next.min(g.last_refresh + AM_REFRESH);
                }
                self.wake_at(next);
                continue;
            }
            let mut items = Vec::new();
            for c in &members {
                let (Some(a), Some(snap)) = (
                    self.alerts.get(&(r.name.clone(), c.clone())),
                    self.checks.get(c),
                ) else {
                    continue;
                };
                let Some(n) = &a.notified else { continue };
                if a.flapping || self.silenced(snap, wall) || !snap.status.is_failing() {
                    continue;
                }
                items.push((c.clone(), item(snap, n.started, None), n.started));
            }
            let note = |items: Vec<AlertItem>, refresh: bool| Notification {
                dedupe_key: k.clone(),
                status: NoteStatus::Firing,
                route: r.name.clone(),
                alerts: items,
                offline: false,
                changed_at_ms: unix_ms(wall),
                agent_url: self.setup.agent_url.clone(),
                refresh,
            };
            if repeat_due {
                g.last_sent = now;
                g.last_refresh = now;
                if !items.is_empty() {
                    for (c, _, started) in &items {
                        self.actions.push(Action::Save(SavedAlert {
                            route: r.name.clone(),
                            check: c.clone(),
                            dedupe_key: k.clone(),
                            started_ms: unix_ms(*started),
                            last_sent_ms: unix_ms(wall),
                        }));
                    }
                    let n = note(items.into_iter().map(|i| i.1).collect(), false);
                    self.actions.push(Action::Send {
                        targets: r.notifiers.clone(),
                        note: n,
                    });
                }
            } else {
                g.last_refresh = now;
                if !items.is_empty() {
                    let n = note(items.into_iter().map(|i| i.1).collect(), true);
                    self.actions.push(Action::Send {
                        targets: am_targets.clone(),
                        note: n,
                    });
                }
            }
            let mut next = g.last_sent + r.repeat_interval;
            if !am_targets.is_empty() {
                next = next.min(g.last_refresh + AM_REFRESH);
            }
            self.wake_at(next);
        }
        self.routes.insert(r.name.clone(), rs);
    }

    /// Alerts currently firing (for diagnostics and tests): (route, check, notified).
    pub fn firing(&self) -> Vec<(String, String, bool)> {
        let mut v: Vec<_> = self
            .alerts
            .iter()
            .filter(|(_, a)| a.firing)
            .map(|((r, c), a)| (r.clone(), c.clone(), a.notified.is_some()))
            .collect();
        v.sort();
        v
    }
}

fn item(s: &Snap, started: SystemTime, ended: Option<SystemTime>) -> AlertItem {
    AlertItem {
        check: s.name.clone(),
        kind: s.kind.clone(),
        status: s.status.as_str().to_string(),
        previous_status: s.previous.as_str().to_string(),
        error_kind: s.error_kind.clone(),
        message: s.message.clone(),
        labels: s.labels.clone(),
        score: s.score,
        started_at: rfc3339(started),
        ended_at: ended.map(rfc3339),
    }
}

enum Msg {
    Change(Snap),
    Reload(Box<Setup>),
    Silences,
}

/// The alert engine: an [`Observer`] feeding the engine task, the outbox, the delivery
/// tasks, and the silences API.
pub struct AlertEngine {
    tx: mpsc::Sender<Msg>,
    /// Latest snapshots that did not fit in the channel (coalesced per check).
    overflow: Mutex<HashMap<String, Snap>>,
    overflow_wake: Notify,
    outbox: Arc<Outbox>,
    setup: ArcSwap<Setup>,
    api_silences: Mutex<Vec<Silence>>,
    deliveries: Mutex<HashMap<String, Arc<Delivery>>>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
}

impl AlertEngine {
    /// Opens the outbox in `config.agent.data_dir`, restores saved alerts and silences,
    /// and starts the engine and delivery tasks (needs a tokio runtime).
    pub fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Self>, AlertError> {
        let outbox = Arc::new(Outbox::open(&config.agent.data_dir)?);
        let setup = Setup::from_config(config);
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut core = Core::new(setup.clone(), now);
        let store_err = |source| AlertError::Store {
            path: outbox.path().to_path_buf(),
            source,
        };
        core.restore(outbox.load_alerts().map_err(store_err)?, now, wall);
        let mut api: Vec<Silence> = Vec::new();
        let mut expired = Vec::new();
        for s in outbox.load_silences().map_err(store_err)? {
            if s.ends_at > wall {
                api.push(s);
            } else {
                expired.push(s.id);
            }
        }
        let _ = outbox.prune_silences(&expired);
        core.set_api_silences(api.clone());
        let (tx, rx) = mpsc::channel(CHANNEL);
        let engine = Arc::new(Self {
            tx,
            overflow: Mutex::new(HashMap::new()),
            overflow_wake: Notify::new(),
            outbox: outbox.clone(),
            setup: ArcSwap::from_pointee(setup.clone()),
            api_silences: Mutex::new(api),
            deliveries: Mutex::new(HashMap::new()),
            http: crate::app::http_client(),
            metrics,
            cancel: CancellationToken::new(),
        });
        if let Ok(names) = outbox.queued_notifiers() {
            for n in names {
                if !setup.notifiers.iter().any(|x| x.name == n) {
                    let gone = outbox.purge_notifier(&n).unwrap_or(0);
                    tracing::warn!(notifier = %n, rows = gone, "dropping queued notifications of a notifier that is no longer configured");
                }
            }
        }
        engine.sync_deliveries(&setup);
        tokio::spawn(engine.clone().run(rx, core));
        Ok(engine)
    }

    /// Stops the engine and delivery tasks (undelivered rows stay in the outbox).
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// The outbox (for diagnostics and tests).
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    fn sync_deliveries(&self, setup: &Setup) {
        let mut ds = self.deliveries.lock();
        ds.retain(|name, d| {
            let keep = setup.notifiers.iter().any(|n| &n.name == name);
            if !keep {
                d.cancel.cancel();
                let gone = self.outbox.purge_notifier(name).unwrap_or(0);
                tracing::warn!(notifier = %name, rows = gone, "notifier removed; dropping its queued notifications");
            }
            keep
        });
        for cfg in &setup.notifiers {
            let sender = super::build_notifier(cfg, &self.http);
            match ds.get(&cfg.name) {
                Some(d) => d.target.store(Arc::new((cfg.clone(), sender))),
                None => {
                    let d = Arc::new(Delivery {
                        name: cfg.name.clone(),
                        target: ArcSwap::from_pointee((cfg.clone(), sender)),
                        wake: Notify::new(),
                        cancel: self.cancel.child_token(),
                    });
                    tokio::spawn(d.clone().run(self.outbox.clone(), self.metrics.clone()));
                    ds.insert(cfg.name.clone(), d);
                }
            }
        }
    }

    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Msg>, mut core: Core) {
        loop {
            let deadline = core.deadline();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { return };
                    self.handle(&mut core, m);
                    // Take a burst at once: one evaluation for a storm of changes.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(m) => self.handle(&mut core, m),
                            Err(_) => break,
                        }
                    }
                    if rx.is_empty() {
                        self.drain_overflow(&mut core);
                    }
                }
                _ = self.overflow_wake.notified() => {
                    while let Ok(m) = rx.try_recv() {
                        self.handle(&mut core, m);
                    }
                    self.drain_overflow(&mut core);
                }
                _ = sleep => {}
                _ = self.cancel.cancelled() => return,
            }
            core.evaluate(Instant::now(), SystemTime::now());
            self.execute(core.take_actions());
        }
    }

    fn drain_overflow(&self, core: &mut Core) {
        let snaps: Vec<Snap> = self.overflow.lock().drain().map(|(_, s)| s).collect();
        for s in snaps {
            core.change(s);
        }
    }

    fn handle(&self, core: &mut Core, m: Msg) {
        match m {
            Msg::Change(s) => core.change(s),
            Msg::Reload(setup) => {
                self.sync_deliveries(&setup);
                core.reload(*setup);
            }
            Msg::Silences => core.set_api_silences(self.api_silences.lock().clone()),
        }
    }

    fn execute(&self, actions: Vec<Action>) {
        let mut woken = HashSet::new();
        for a in actions {
            match a {
                Action::Send { targets, note } => {
                    match self.outbox.enqueue(&targets, &note) {
                        Ok(_) => {
                            tracing::info!(route = %note.route, status = note.status.as_str(), dedupe_key = %note.dedupe_key,
                                alerts = note.alerts.len(), notifiers = ?targets, "notification queued");
                        }
                        Err(e) => {
                            tracing::error!(route = %note.route, dedupe_key = %note.dedupe_key, error = %e,
                                "cannot write the notification to the outbox; it is lost");
                        }
                    }
                    woken.extend(targets);
                }
                Action::Save(s) => {
                    if let Err(e) = self.outbox.save_alert(&s) {
                        tracing::error!(error = %e, "cannot save alert state");
                    }
                }
                Action::Forget { route, check } => {
                    if let Err(e) = self.outbox.delete_alert(&route, &check) {
                        tracing::error!(error = %e, "cannot delete alert state");
                    }
                }
            }
        }
        let ds = self.deliveries.lock();
        for n in woken {
            if let Some(d) = ds.get(&n) {
                self.metrics.notification_queue(&n, self.outbox.depth(&n));
                d.wake.notify_one();
            }
        }
    }

    /// Every silence: config ones, then API ones (expired API silences included until the
    /// agent restarts).
    pub fn silences(&self) -> Vec<Silence> {
        let mut v = self.setup.load().silences.clone();
        v.extend(self.api_silences.lock().iter().cloned());
        v
    }

    /// Adds an API silence (persisted).
    pub fn add_silence(&self, s: Silence) -> Result<Silence, AlertError> {
        self.outbox
            .save_silence(&s)
            .map_err(|source| AlertError::Store {
                path: self.outbox.path().to_path_buf(),
                source,
            })?;
        self.api_silences.lock().push(s.clone());
        let _ = self.tx.try_send(Msg::Silences);
        Ok(s)
    }

    /// Expires an API silence now. `Ok(None)`: no such silence; `Err` for config ones.
    pub fn expire_silence(&self, id: &str) -> Result<Option<Silence>, &'static str> {
        if self.setup.load().silences.iter().any(|s| s.id == id) {
            return Err(
                "silences from the config file cannot be expired over the API; edit [[silences]] and reload",
            );
        }
        let mut list = self.api_silences.lock();
        let Some(s) = list.iter_mut().find(|s| s.id == id) else {
            return Ok(None);
        };
        let now = SystemTime::now();
        if s.ends_at > now {
            s.ends_at = now.max(s.starts_at);
        }
        let out = s.clone();
        drop(list);
        if let Err(e) = self.outbox.save_silence(&out) {
            tracing::error!(error = %e, "cannot save the expired silence");
        }
        let _ = self.tx.try_send(Msg::Silences);
        Ok(Some(out))
    }
}

impl Observer for AlertEngine {
    fn on_change(&self, state: &CheckState, change: Change) {
        let snap = Snap::of(state, change);
        let mut over = self.overflow.lock();
        if over.contains_key(&snap.name) {
            over.insert(snap.name.clone(), snap);
            return;
        }
        match self.tx.try_send(Msg::Change(snap)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Msg::Change(s))) => {
                tracing::warn!(check = %s.name, "alert engine is behind; coalescing state changes");
                over.insert(s.name.clone(), s);
                drop(over);
                self.overflow_wake.notify_one();
            }
            Err(_) => {}
        }
    }

    fn on_reload(&self, config: &Config) {
        let setup = Setup::from_config(config);
        self.setup.store(Arc::new(setup.clone()));
        if self.tx.try_send(Msg::Reload(Box::new(setup))).is_err() {
            tracing::error!(
                "alert engine is behind; the reloaded routes and notifiers were not applied"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, for_: u64, group_wait: u64) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            matchers: BTreeMap::new(),
            notifiers: vec!["hook".into()],
            for_: Duration::from_secs(for_),
            group_wait: Duration::from_secs(group_wait),
            repeat_interval: Duration::from_secs(4 * 3600),
            send_resolved: true,
            flap_threshold: 6,
            flap_window: Duration::from_secs(600),
        }
    }

    struct T {
        core: Core,
        t0: Instant,
        w0: SystemTime,
        now: Duration,
        status: HashMap<String, Status>,
        sent: Vec<Notification>,
    }

    impl T {
        fn new(routes: Vec<RouteConfig>, checks: &[&str]) -> Self {
            Self::with(Setup {
                routes,
                checks: checks.iter().map(|c| c.to_string()).collect(),
                agent_url: "http://127.0.0.1:9477".into(),
                ..Setup::default()
            })
        }
        fn with(setup: Setup) -> Self {
            let t0 = Instant::now();
            Self {
                core: Core::new(setup, t0),
                t0,
                w0: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                now: Duration::ZERO,
                status: HashMap::new(),
                sent: Vec::new(),
            }
        }
        fn set(&mut self, check: &str, status: Status) {
            let prev = self
                .status
                .insert(check.to_string(), status)
                .unwrap_or(Status::Connecting);
            self.core.change(Snap {
                name: check.into(),
                kind: "tcp".into(),
                labels: BTreeMap::new(),
                status,
                previous: prev,
                error_kind: status.is_failing().then(|| "refused".to_string()),
                message: String::new(),
                score: Some(0),
                at: self.t0 + self.now,
                at_wall: self.w0 + self.now,
            });
            self.eval();
        }
        fn eval(&mut self) {
            self.core.evaluate(self.t0 + self.now, self.w0 + self.now);
            for a in self.core.take_actions() {
                if let Action::Send { note, .. } = a {
                    self.sent.push(note);
                }
            }
        }
        /// Advances the clock, running every deadline on the way.
        fn advance(&mut self, secs: u64) {
            let end = self.now + Duration::from_secs(secs);
            while let Some(d) = self.core.deadline() {
                let at = d.duration_since(self.t0);
                if at > end {
                    break;
                }
                self.now = self.now.max(at);
                self.eval();
            }
            self.now = end;
            self.eval();
        }
        fn statuses(&self) -> Vec<(&'static str, usize)> {
            self.sent
                .iter()
                .map(|n| (n.status.as_str(), n.alerts.len()))
                .collect()
        }
    }

    #[test]
    fn a_failure_shorter_than_for_sends_nothing() {
        let mut t = T::new(vec![route("r", 30, 0)], &["db"]);
        t.set("db", Status::Healthy);
        t.set("db", Status::Unhealthy);
        t.advance(29);
        t.set("db", Status::Healthy);
        t.advance(3600);
        assert!(t.sent.is_empty(), "{:?}", t.statuses());
        t.set("db", Status::Unhealthy);
        t.advance(30);
        assert_eq!(t.statuses(), vec![("firing", 1)]);
    }

    #[test]
    fn storm_of_fifty_is_one_notification_and_one_resolve() {
        let names: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut t = T::new(vec![route("r", 0, 10)], &refs);
        for n in &names {
            t.set(n, Status::Healthy);
        }
        for (i, n) in names.iter().enumerate() {
            if i % 10 == 0 {
                t.advance(1);
            }
            t.set(n, Status::Disconnected);
        }
        t.advance(60);
        assert_eq!(t.statuses(), vec![("firing", 50)]);
        let key = t.sent[0].dedupe_key.clone();
        for n in &names {
            t.set(n, Status::Healthy);
        }
        t.advance(60);
        assert_eq!(t.statuses(), vec![("firing", 50), ("resolved", 50)]);
        assert_eq!(t.sent[1].dedupe_key, key);
    }

    #[test]
    fn flapping_sends_one_flapping_notification_then_holds() {
        let mut t = T::new(vec![route("r", 0, 0)], &["db"]);
        t.set("db", Status::Healthy);
        for _ in 0..20 {
            t.advance(5);
            t.set("db", Status::Unhealthy);
            t.advance(5);
            t.set("db", Status::Healthy);
        }
        let flapping = t
            .sent
            .iter()
            .filter(|n| n.status == NoteStatus::Flapping)
            .count();
        assert_eq!(flapping, 1, "{:?}", t.statuses());
        // Before detection: fire/resolve pairs for the first flips only (threshold 6).
        assert!(t.sent.len() <= 1 + 6, "{:?}", t.statuses());
        let before = t.sent.len();
        // Stable (failing) for the whole window: one firing, held no longer.
        t.set("db", Status::Unhealthy);
        t.advance(599);
        assert_eq!(t.sent.len(), before);
        t.advance(2);
        assert_eq!(t.sent.last().map(|n| n.status), Some(NoteStatus::Firing));
    }

    #[test]
    fn failing_dependency_holds_dependents_but_not_their_resolves() {
        let mut setup = Setup {
            routes: vec![route("r", 0, 0)],
            checks: ["gw", "app", "api"].iter().map(|s| s.to_string()).collect(),
            ..Setup::default()
        };
        setup.depends_on.insert("app".into(), vec!["gw".into()]);
        setup.depends_on.insert("api".into(), vec!["gw".into()]);
        let mut t = T::with(setup);
        for c in ["gw", "app", "api"] {
            t.set(c, Status::Healthy);
        }
        // api fails first: it fires.
        t.set("api", Status::Unhealthy);
        assert_eq!(t.statuses(), vec![("firing", 1)]);
        // The dependency fails, then app: only gw pages.
        t.set("gw", Status::Unhealthy);
        t.set("app", Status::Unhealthy);
        t.advance(60);
        let checks: Vec<&str> = t
            .sent
            .iter()
            .flat_map(|n| n.alerts.iter().map(|a| a.check.as_str()))
            .collect();
        assert_eq!(checks, vec!["api", "gw"]);
        // The already-firing dependent still gets its resolve while gw is down.
        t.set("api", Status::Healthy);
        assert_eq!(
            t.sent
                .last()
                .map(|n| (n.status, n.alerts[0].check.as_str())),
            Some((NoteStatus::Resolved, "api"))
        );
        // gw recovers, app recovers within `for` (0 here: at once) – app never pages.
        t.set("app", Status::Healthy);
        t.set("gw", Status::Healthy);
        t.advance(60);
        assert!(
            !t.sent
                .iter()
                .any(|n| n.alerts.iter().any(|a| a.check == "app")),
            "{:?}",
            t.sent
        );
    }

    #[test]
    fn connectivity_outage_pages_once() {
        let mut names: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        names.push("gateway".into());
        names.push("dns".into());
        let mut t = T::with(Setup {
            routes: vec![route("r", 10, 5)],
            checks: names.iter().cloned().collect(),
            connectivity: vec!["gateway".into(), "dns".into()],
            ..Setup::default()
        });
        for n in &names {
            t.set(n, Status::Healthy);
        }
        t.set("gateway", Status::Unhealthy);
        t.set("dns", Status::Unhealthy);
        for n in names.iter().take(20) {
            t.set(n, Status::Disconnected);
        }
        t.advance(3600);
        assert_eq!(t.sent.len(), 1, "{:?}", t.statuses());
        assert!(t.sent[0].offline);
        assert_eq!(t.sent[0].alertname(), "LifelineAgentOffline");
        // Network back, targets recover within `for`: one resolve, nothing else.
        t.set("dns", Status::Healthy);
        t.set("gateway", Status::Healthy);
        t.advance(5);
        for n in names.iter().take(20) {
            t.set(n, Status::Healthy);
        }
        t.advance(3600);
        assert_eq!(t.statuses(), vec![("firing", 2), ("resolved", 2)]);
        assert_eq!(t.sent[0].dedupe_key, t.sent[1].dedupe_key);
    }

    #[test]
    fn repeat_interval_resends_with_the_same_key() {
        let mut r = route("r", 0, 0);
        r.repeat_interval = Duration::from_secs(3600);
        let mut t = T::new(vec![r], &["db"]);
        t.set("db", Status::Unhealthy);
        t.advance(3600 * 3 + 10);
        assert_eq!(t.statuses(), vec![("firing", 1); 4]);
        assert!(t.sent.iter().all(|n| n.dedupe_key == t.sent[0].dedupe_key));
    }

    #[test]
    fn silence_holds_until_it_ends() {
        let mut t = T::new(vec![route("r", 0, 0)], &["db", "cache"]);
        let w0 = t.w0;
        t.core.set_api_silences(vec![Silence {
            id: "s".into(),
            matchers: [("check".to_string(), "db".to_string())].into(),
            starts_at: w0,
            ends_at: w0 + Duration::from_secs(100),
            comment: String::new(),
            from_config: false,
        }]);
        t.set("db", Status::Unhealthy);
        t.set("cache", Status::Unhealthy);
        assert_eq!(t.sent.len(), 1);
        assert_eq!(t.sent[0].alerts[0].check, "cache");
        t.advance(99);
        assert_eq!(t.sent.len(), 1);
        t.advance(2);
        assert_eq!(t.sent.len(), 2);
        assert_eq!(t.sent[1].alerts[0].check, "db");
    }

    #[test]
    fn restored_alert_is_not_resent_and_resolves() {
        let mut t = T::new(vec![route("r", 30, 0)], &["db"]);
        let wall = t.w0;
        t.core.restore(
            vec![SavedAlert {
                route: "r".into(),
                check: "db".into(),
                dedupe_key: "k1".into(),
                started_ms: unix_ms(wall) - 60_000,
                last_sent_ms: unix_ms(wall) - 60_000,
            }],
            t.t0,
            wall,
        );
        t.set("db", Status::Unhealthy);
        t.advance(600);
        assert!(t.sent.is_empty(), "{:?}", t.statuses());
        t.set("db", Status::Healthy);
        assert_eq!(t.statuses(), vec![("resolved", 1)]);
        assert_eq!(t.sent[0].dedupe_key, "k1");
    }

    #[test]
    fn reload_adds_routes_for_already_failing_checks_and_forgets_removed_ones() {
        let mut t = T::new(vec![route("a", 0, 0)], &["db"]);
        t.set("db", Status::Unhealthy);
        assert_eq!(t.statuses(), vec![("firing", 1)]);
        t.core.reload(Setup {
            routes: vec![route("b", 0, 0)],
            checks: ["db".to_string()].into(),
            ..Setup::default()
        });
        let forgot = t.core.take_actions();
        assert!(
            forgot.contains(&Action::Forget {
                route: "a".into(),
                check: "db".into()
            }),
            "{forgot:?}"
        );
        t.advance(1);
        assert_eq!(t.sent.last().map(|n| n.route.as_str()), Some("b"));
    }

    #[test]
    fn keys_are_stable() {
        assert_eq!(dedupe_key(&["r", "a", "1"]), dedupe_key(&["r", "a", "1"]));
        assert_ne!(dedupe_key(&["r", "a1"]), dedupe_key(&["r", "a", "1"]));
        assert_eq!(dedupe_key(&["x"]).len(), 32);
    }
}
