//! The engine: the state machine that owns the alert state and calls into the parts, and
//! the task that feeds it and persists what it decides.
//!
//! Per (route, check) an alert runs its [`lifecycle`](super::lifecycle); [`holds`] (flapping,
//! a failing dependency, the connectivity guard, silences) only stop notifications, and when
//! a hold lifts the two are reconciled: a firing alert nobody was told about is notified, a
//! notified alert whose check is up again is resolved. Resolves are never held by a
//! dependency, the connectivity guard or a silence (only by flapping), so a "resolved"
//! always follows a delivered "firing". [`grouping`](super::grouping) turns alerts into
//! notifications per route.
//!
//! [`Core`] is the pure state machine: inputs are check snapshots and the clock
//! (`tokio::time::Instant`, so paused-time tests drive it), outputs are [`Action`]s.
//! [`AlertEngine`] is the observer plus the task that feeds it, writes its actions to the
//! outbox (through a [`Backlog`] that retries what the outbox could not take; a
//! notification and the alert states it changes are one request, all or nothing) and
//! wakes the delivery tasks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backlog::{Backlog, max_age_of};
use super::delivery::Deliveries;
use super::gate::Gate;
use super::grouping::{FlushCx, RouteState};
use super::holds::{self, Connectivity, GuardCx, Silences};
use super::lifecycle::{Alert, Alerts, Effects, Held, Notified};
use super::outbox::{Outbox, SavedAlert, Write};
use super::{AlertError, NotifierConfig, NotifierKind, RouteConfig, Silence};
use crate::config::Config;
use crate::events::Observer;
use crate::health::{Change, CheckState};
use crate::metrics::Metrics;
use crate::time::unix_ms;

pub use super::grouping::{AM_REFRESH, dedupe_key};
pub use super::holds::CONNECTIVITY_ROUTE;
pub use super::lifecycle::{Action, Snap};

/// Capacity of the observer → engine channel.
const CHANNEL: usize = 8192;

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
    /// `[alerting]` limits of API silences.
    pub silence_limits: super::config::SilenceLimits,
    /// `http://<listen>`.
    pub agent_url: String,
    /// Every configured check name (shared: a reload that keeps the names keeps the set).
    pub checks: Arc<HashSet<String>>,
    /// `Config::names_hash` of the config `checks` came from.
    pub names_hash: Option<u64>,
}

impl Setup {
    /// Extracts the engine's view of `c`.
    pub fn from_config(c: &Config) -> Self {
        Self::from_config_after(c, None)
    }

    /// As [`Setup::from_config`], keeping `prev`'s set of check names when the names are
    /// the same (at 100,000 checks, building it again is most of the engine's reload).
    pub fn from_config_after(c: &Config, prev: Option<&Setup>) -> Self {
        let names_hash = c.names_hash();
        let checks = match prev {
            // The same set by its hash: no name is read.
            Some(p) if names_hash.is_some() && p.names_hash == names_hash => p.checks.clone(),
            Some(p)
                if p.checks.len() == c.checks.len()
                    && c.checks.iter().all(|k| p.checks.contains(&k.name)) =>
            {
                p.checks.clone()
            }
            _ => Arc::new(c.checks.iter().map(|k| k.name.clone()).collect()),
        };
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
            silence_limits: c.alerting.silence_limits,
            agent_url: format!("http://{}", c.agent.listen),
            checks,
            names_hash,
        }
    }

    /// Every route's notifiers, each once.
    fn all_targets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in self.routes.iter().flat_map(|r| &r.notifiers) {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        out
    }

    fn is_am(&self, notifier: &str) -> bool {
        self.notifiers
            .iter()
            .any(|n| n.name == notifier && matches!(n.kind, NotifierKind::Alertmanager { .. }))
    }
}

/// The alert state machine.
pub struct Core {
    setup: Setup,
    checks: HashMap<String, Snap>,
    alerts: Alerts,
    routes: HashMap<String, RouteState>,
    offline: Connectivity,
    silences: Silences,
    started: Instant,
    fx: Effects,
    gate: Option<Arc<dyn Gate>>,
}

impl Core {
    /// A fresh state machine at `now`.
    pub fn new(setup: Setup, now: Instant) -> Self {
        let silences = Silences::new(&setup.silences);
        Self {
            setup,
            checks: HashMap::new(),
            alerts: HashMap::new(),
            routes: HashMap::new(),
            offline: Connectivity::default(),
            silences,
            started: now,
            fx: Effects::default(),
            gate: None,
        }
    }

    /// Puts the state machine under a cluster's gate: a check's failure alerts only when
    /// [`Gate::confirmed`] (its quorum agrees).
    pub fn set_gate(&mut self, gate: Option<Arc<dyn Gate>>) {
        self.gate = gate;
    }

    /// A cluster handed this agent `check` (it runs it now, or became its notifier of
    /// record): receivers were told exactly `told` about it (the cluster's delivery
    /// record), so alerts of other routes were never notified, and these were.
    pub fn adopt(&mut self, check: &str, told: Vec<SavedAlert>, now: Instant, wall: SystemTime) {
        for ((route, c), a) in self.alerts.iter_mut() {
            if c == check && !told.iter().any(|t| &t.route == route) {
                a.notified = None;
                if let Some(rs) = self.routes.get_mut(route) {
                    rs.retain_members(|m| m != check);
                }
            }
        }
        let (adopted, fresh): (Vec<SavedAlert>, Vec<SavedAlert>) =
            told.into_iter().partition(|t| {
                self.alerts
                    .contains_key(&(t.route.clone(), t.check.clone()))
            });
        for t in adopted {
            let started =
                SystemTime::UNIX_EPOCH + Duration::from_millis(t.started_ms.max(0) as u64);
            if let Some(a) = self.alerts.get_mut(&(t.route.clone(), t.check.clone())) {
                a.notified = Some(Notified {
                    key: t.dedupe_key.clone(),
                    started,
                });
                a.buffered = false;
            }
            let last_sent = now
                .checked_sub(Duration::from_millis(
                    (unix_ms(wall) - t.last_sent_ms).max(0) as u64,
                ))
                .unwrap_or(now);
            self.routes
                .entry(t.route)
                .or_default()
                .restore(t.dedupe_key, t.check, last_sent);
        }
        self.restore(fresh, now, wall);
    }

    /// A cluster moved `check` to other members: its alerts are forgotten here (no
    /// resolved is sent; the new runners carry on from the cluster's record).
    pub fn release(&mut self, check: &str) {
        self.alerts.retain(|(_, c), _| c != check);
        for rs in self.routes.values_mut() {
            rs.retain_members(|m| m != check);
        }
        self.checks.remove(check);
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
                self.offline.restore(s.dedupe_key, started);
                continue;
            }
            let route_known = self.setup.routes.iter().any(|r| r.name == s.route);
            if !route_known || !self.setup.checks.contains(&s.check) {
                self.fx.push(Action::Forget {
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
            self.routes
                .entry(s.route)
                .or_default()
                .restore(s.dedupe_key, s.check, last_sent);
        }
    }

    /// Replaces the config (reload). Alerts of removed routes or checks are forgotten.
    pub fn reload(&mut self, setup: Setup) {
        // The same set of names (shared): nothing needs dropping for a check that went.
        let same_checks = Arc::ptr_eq(&setup.checks, &self.setup.checks);
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
            self.fx.push(Action::Forget { route, check });
        }
        self.routes.retain(|r, _| routes.contains(r));
        if !same_checks {
            for rs in self.routes.values_mut() {
                rs.retain_members(|c| setup.checks.contains(c));
            }
            self.checks.retain(|c, _| setup.checks.contains(c));
        }
        self.silences.reload(&setup.silences);
        self.setup = setup;
    }

    /// Replaces the API silences (config silences stay).
    pub fn set_api_silences(&mut self, api: Vec<Silence>) {
        self.silences.set_api(&self.setup.silences, api);
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
            let silenced = self.silences.holds(&snap, snap.at_wall);
            for r in self
                .setup
                .routes
                .iter()
                .filter(|r| r.matches(&snap.name, snap.kind, &snap.labels))
            {
                let started = self.started;
                let a = self
                    .alerts
                    .entry((r.name.clone(), snap.name.clone()))
                    .or_insert_with(|| Alert::new(started));
                a.failing_since = now_failing.then_some((snap.at, snap.at_wall));
                holds::note_flip(a, r, &snap, silenced, &self.setup.agent_url, &mut self.fx);
            }
        }
        self.checks.insert(snap.name.clone(), snap);
    }

    /// The actions produced so far.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.fx.actions)
    }

    /// When [`Core::evaluate`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.fx.deadline
    }

    /// Runs every timer that is due and reconciles every alert with its holds.
    pub fn evaluate(&mut self, now: Instant, wall: SystemTime) {
        self.fx.deadline = None;
        self.silences.wake_at_boundaries(now, wall, &mut self.fx);
        let offline = Connectivity::is_offline(&self.setup.connectivity, &self.checks);
        let guard = GuardCx {
            connectivity: &self.setup.connectivity,
            checks: &self.checks,
            wait: self
                .setup
                .routes
                .iter()
                .map(|r| r.for_)
                .min()
                .unwrap_or_default(),
            targets: self.setup.all_targets(),
            agent_url: &self.setup.agent_url,
        };
        self.offline
            .evaluate(offline, guard, now, wall, &mut self.fx);
        let routes = self.setup.routes.clone();
        for r in &routes {
            let names: Vec<String> = self
                .checks
                .values()
                .filter(|s| r.matches(&s.name, s.kind, &s.labels))
                .map(|s| s.name.clone())
                .collect();
            for c in names {
                self.evaluate_alert(r, &c, offline, now, wall);
            }
            self.flush_route(r, now, wall);
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
        let dep_held = holds::dependency_failing(&self.setup.depends_on, &self.checks, check);
        let silenced = self.silences.holds(&snap, wall);
        if snap.status.is_failing() && !self.alerts.contains_key(&key) {
            // A route added by a reload while the check was already failing.
            let mut a = Alert::new(self.started);
            a.failing_since = Some((snap.at, snap.at_wall));
            self.alerts.insert(key.clone(), a);
        }
        let Some(a) = self.alerts.get_mut(&key) else {
            return;
        };
        holds::settle_flapping(a, r, check, now, &mut self.fx);
        let unconfirmed =
            snap.status.is_failing() && self.gate.as_ref().is_some_and(|g| !g.confirmed(check));
        let held = Held {
            reset: dep_held || offline || unconfirmed,
            silenced,
        };
        a.note_reset_hold(held.reset, now);
        let step = a.step(&snap, r.for_, held, now, wall, &mut self.fx);
        let rs = self.routes.entry(r.name.clone()).or_default();
        if step.buffer {
            rs.buffer(check, r.group_wait, now);
        }
        if let Some((k, it)) = step.resolve {
            // With a resolved to send, the saved alert is forgotten in the same outbox
            // request that queues that resolved (grouping pushes `ForgetKey` after its
            // `Send`), never on its own.
            if !r.send_resolved {
                self.fx.push(Action::Forget {
                    route: r.name.clone(),
                    check: check.to_string(),
                });
            }
            rs.resolve(r, check, k, it, now);
        }
        if step.removable {
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
        let silences = &self.silences;
        let held = |a: &Alert, s: &Snap| a.flapping || silences.holds(s, wall);
        let cx = FlushCx {
            alerts: &mut self.alerts,
            checks: &self.checks,
            am_targets,
            agent_url: &self.setup.agent_url,
            held: &held,
        };
        rs.flush(r, cx, now, wall, &mut self.fx);
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

enum Msg {
    Change(Snap),
    Reload(Box<Setup>),
    Silences,
    Adopt(String, Vec<SavedAlert>),
    Release(String),
    Wake,
}

/// Why a silence was not added.
#[derive(Debug, thiserror::Error)]
pub enum AddSilenceError {
    /// Past `max_silences` or `max_silence_duration` (the API answers 400).
    #[error("{0}")]
    Limit(String),
    /// It could not be saved.
    #[error(transparent)]
    Store(#[from] AlertError),
}

/// The alert engine: an [`Observer`] feeding the engine task, the outbox, the delivery
/// tasks, and the silences API.
pub struct AlertEngine {
    tx: mpsc::Sender<Msg>,
    /// Latest snapshots that did not fit in the channel (coalesced per check).
    overflow: Mutex<HashMap<String, Snap>>,
    overflow_wake: Notify,
    /// Changes coalesced so far, and the limit on the warning that says so.
    coalesced: AtomicU64,
    behind_log: crate::time::Throttle,
    /// Checks with an alert restored from the outbox whose first result since the start
    /// has not been seen yet. A check whose restored state equals its first result makes
    /// no change event, so without its first result a restored firing alert of a check
    /// that recovered while the agent was down would never resolve.
    awaiting: Mutex<HashSet<String>>,
    awaiting_any: std::sync::atomic::AtomicBool,
    outbox: Arc<Outbox>,
    setup: ArcSwap<Setup>,
    api_silences: Mutex<Vec<Silence>>,
    deliveries: Deliveries,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    gate: Option<Arc<dyn Gate>>,
}

impl AlertEngine {
    /// Opens the outbox in `config.agent.data_dir`, restores saved alerts and silences,
    /// and starts the engine and delivery tasks; notifiers send with `http`.
    pub async fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        http: reqwest::Client,
    ) -> Result<Arc<Self>, AlertError> {
        Self::start_with(config, metrics, http, None).await
    }

    /// As [`AlertEngine::start`], under a cluster's `gate` (every delivery asks it first,
    /// and alerts wait for its quorum).
    pub async fn start_with(
        config: &Config,
        metrics: Arc<Metrics>,
        http: reqwest::Client,
        gate: Option<Arc<dyn Gate>>,
    ) -> Result<Arc<Self>, AlertError> {
        let outbox =
            Arc::new(Outbox::open_with(&config.agent.data_dir, Some(metrics.clone())).await?);
        let setup = Setup::from_config(config);
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut core = Core::new(setup.clone(), now);
        core.set_gate(gate.clone());
        let saved = outbox.recover(&setup.notifiers, wall).await?;
        let restored: HashSet<String> = saved.alerts.iter().map(|a| a.check.clone()).collect();
        core.restore(saved.alerts, now, wall);
        core.set_api_silences(saved.silences.clone());
        let (tx, rx) = mpsc::channel(CHANNEL);
        let engine = Arc::new(Self {
            tx,
            overflow: Mutex::new(HashMap::new()),
            overflow_wake: Notify::new(),
            coalesced: AtomicU64::new(0),
            behind_log: crate::time::Throttle::new(Duration::from_secs(10)),
            awaiting_any: std::sync::atomic::AtomicBool::new(!restored.is_empty()),
            awaiting: Mutex::new(restored),
            outbox: outbox.clone(),
            setup: ArcSwap::from_pointee(setup.clone()),
            api_silences: Mutex::new(saved.silences),
            deliveries: Deliveries::new(gate.clone()),
            http,
            metrics,
            cancel: CancellationToken::new(),
            gate,
        });
        engine.sync_deliveries(&setup).await;
        tokio::spawn(engine.clone().run(rx, core));
        Ok(engine)
    }

    /// Stops the engine and delivery tasks (undelivered rows stay in the outbox).
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// A cluster handed this agent `check`: receivers know exactly `told` about it. Its
    /// first result is evaluated even if it changes nothing (see `awaiting`).
    pub fn adopt(&self, check: &str, told: Vec<SavedAlert>) {
        self.awaiting.lock().insert(check.to_string());
        self.awaiting_any.store(true, Ordering::Relaxed);
        self.send_control(Msg::Adopt(check.to_string(), told));
    }

    /// A cluster moved `check` away: its alerts are forgotten here, without a resolved.
    pub fn release(&self, check: &str) {
        self.send_control(Msg::Release(check.to_string()));
    }

    /// Evaluates every alert again (the cluster's runner statuses changed).
    pub fn wake(&self) {
        self.send_control(Msg::Wake);
    }

    /// Control messages are few and must not be lost: when the channel is full they
    /// wait on a task instead of being dropped.
    fn send_control(&self, m: Msg) {
        if let Err(mpsc::error::TrySendError::Full(m)) = self.tx.try_send(m) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(m).await;
            });
        }
    }

    /// The outbox (for diagnostics and tests).
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Starts, updates or stops the delivery tasks to match `setup`'s notifiers.
    async fn sync_deliveries(&self, setup: &Setup) {
        let (outbox, metrics) = (&self.outbox, &self.metrics);
        self.deliveries
            .sync(&setup.notifiers, &self.http, outbox, metrics, &self.cancel)
            .await;
    }

    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Msg>, mut core: Core) {
        let mut backlog = Backlog::new();
        loop {
            let deadline = [core.deadline(), backlog.next_try()]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { return };
                    self.handle(&mut core, m).await;
                    // Take a burst at once: one evaluation for a storm of changes.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(m) => self.handle(&mut core, m).await,
                            Err(_) => break,
                        }
                    }
                    if rx.is_empty() {
                        self.drain_overflow(&mut core);
                    }
                }
                _ = self.overflow_wake.notified() => {
                    while let Ok(m) = rx.try_recv() {
                        self.handle(&mut core, m).await;
                    }
                    self.drain_overflow(&mut core);
                }
                _ = sleep => {}
                _ = self.cancel.cancelled() => return,
            }
            core.evaluate(Instant::now(), SystemTime::now());
            self.execute(core.take_actions(), &mut backlog).await;
        }
    }

    fn drain_overflow(&self, core: &mut Core) {
        let snaps: Vec<Snap> = self.overflow.lock().drain().map(|(_, s)| s).collect();
        for s in snaps {
            core.change(s);
        }
    }

    async fn handle(&self, core: &mut Core, m: Msg) {
        match m {
            Msg::Change(s) => core.change(s),
            Msg::Reload(setup) => {
                self.sync_deliveries(&setup).await;
                core.reload(*setup);
            }
            Msg::Silences => core.set_api_silences(self.api_silences.lock().clone()),
            Msg::Adopt(check, told) => core.adopt(&check, told, Instant::now(), SystemTime::now()),
            Msg::Release(check) => {
                core.release(&check);
                self.awaiting.lock().remove(&check);
            }
            Msg::Wake => {}
        }
    }

    /// Runs the actions in order: they go to the outbox through the backlog (which keeps
    /// and retries what the outbox cannot take), each notification in one request with
    /// the alert states that belong to it ([`requests`]); then the delivery tasks of the
    /// notifiers that got rows are woken.
    async fn execute(&self, actions: Vec<Action>, backlog: &mut Backlog) {
        let setup = self.setup.load_full();
        let max_age = max_age_of(&setup.notifiers);
        // In a cluster, a notification may become two rows (pages, Alertmanager) or none.
        let actions: Vec<Action> = actions
            .into_iter()
            .flat_map(|a| match a {
                Action::Send { targets, note } => self
                    .paged_here(&setup, targets, note)
                    .into_iter()
                    .map(|(targets, note)| Action::Send { targets, note })
                    .collect::<Vec<_>>(),
                other => vec![other],
            })
            .collect();
        for r in requests(actions) {
            backlog.push(r, &self.metrics, Instant::now());
        }
        // These, and retries of earlier failures that are due now, oldest first.
        let written = backlog.flush(&self.outbox, &self.metrics, &max_age, Instant::now());
        let woken: HashSet<String> = written.await.into_iter().collect();
        self.deliveries.wake(woken, &self.outbox, &self.metrics);
    }
}

impl AlertEngine {
    /// In a cluster, pages (every notifier but Alertmanager) carry only the alerts of
    /// checks this agent is the notifier of record of; Alertmanager gets every alert
    /// from every runner (it dedupes). What is left to queue, as (targets, note) rows.
    fn paged_here(
        &self,
        setup: &Setup,
        targets: Vec<String>,
        note: super::Notification,
    ) -> Vec<(Vec<String>, super::Notification)> {
        let Some(gate) = &self.gate else {
            return vec![(targets, note)];
        };
        if note.offline || note.alerts.iter().all(|a| gate.pages(&a.check)) {
            return vec![(targets, note)];
        }
        let (am, paging): (Vec<String>, Vec<String>) =
            targets.into_iter().partition(|t| setup.is_am(t));
        let mine: Vec<super::AlertItem> = note
            .alerts
            .iter()
            .filter(|a| gate.pages(&a.check))
            .cloned()
            .collect();
        let mut rows = Vec::new();
        if !paging.is_empty() && !mine.is_empty() {
            let mut paged = note.clone();
            paged.alerts = mine;
            rows.push((paging, paged));
        }
        if !am.is_empty() {
            rows.push((am, note));
        }
        rows
    }
}

/// Splits the actions of an evaluation into outbox requests, in order: a `Send` with the
/// `Save`s just before it (the alerts it notifies as firing) and the `Forget`s and
/// `ForgetKey`s just after it (the alerts its resolved ends) is one request, so the
/// notification and the saved states are written together or not at all. State changes
/// with no `Send` after or before them form requests of their own.
pub(crate) fn requests(actions: Vec<Action>) -> Vec<Vec<Write>> {
    let mut out = Vec::new();
    let mut cur: Vec<Write> = Vec::new();
    let has_send = |c: &[Write]| c.iter().any(|w| matches!(w, Write::Enqueue { .. }));
    for a in actions {
        match a {
            Action::Send { targets, note } => {
                if has_send(&cur) {
                    out.push(std::mem::take(&mut cur));
                }
                cur.push(Write::Enqueue {
                    notifiers: targets,
                    note,
                });
            }
            Action::Save(s) => {
                if has_send(&cur) {
                    out.push(std::mem::take(&mut cur));
                }
                cur.push(Write::SaveAlert(s));
            }
            Action::Forget { route, check } => cur.push(Write::DeleteAlert {
                route,
                check,
                key: None,
            }),
            Action::ForgetKey { route, check, key } => cur.push(Write::DeleteAlert {
                route,
                check,
                key: Some(key),
            }),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Observer for AlertEngine {
    fn on_result(&self, state: &CheckState, _outcome: &crate::check::Outcome) {
        if !self.awaiting_any.load(Ordering::Relaxed) {
            return;
        }
        let first = {
            let mut w = self.awaiting.lock();
            let first = w.remove(&state.name);
            if w.is_empty() {
                self.awaiting_any.store(false, Ordering::Relaxed);
            }
            first
        };
        if first {
            let same = Change {
                from: state.status,
                to: state.status,
            };
            self.on_change(state, same);
        }
    }

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
                let n = self.coalesced.fetch_add(1, Ordering::Relaxed) + 1;
                if self.behind_log.allow() {
                    tracing::warn!(
                        coalesced_total = n,
                        "alert engine is behind; coalescing state changes (only each check's latest state is kept)"
                    );
                }
                over.insert(s.name.clone(), s);
                drop(over);
                self.overflow_wake.notify_one();
            }
            Err(_) => {}
        }
    }

    fn on_reload(&self, config: &Config) {
        let setup = Setup::from_config_after(config, Some(&self.setup.load()));
        self.setup.store(Arc::new(setup.clone()));
        if self.tx.try_send(Msg::Reload(Box::new(setup))).is_err() {
            tracing::error!(
                "alert engine is behind; the reloaded routes and notifiers were not applied"
            );
        }
    }
}

mod silences;

#[cfg(test)]
mod tests;
