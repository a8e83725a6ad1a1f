//! The running agent: builds supervisors from a config, replaces them on reload (keeping
//! unchanged checks and their sessions), forces checks, and shuts down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::check::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, Outcome,
};
use crate::config::{CheckConfig, Config, ConfigErrors};
use crate::events::{Bus, CheckEvent, Event, Observers};
use crate::health::{CheckState, Entry, Restored, StateTable, Status};
use crate::metrics::Metrics;
use crate::schedule::{self, Handle, Member, Shared, group_key};

/// Which checks of the config run on this agent besides `shard` (a cluster's
/// assignment; see `crate::cluster`).
pub trait Placement: Send + Sync {
    /// Whether `check` runs here now.
    fn runs(&self, check: &str) -> bool;
}

/// What one [`Agent::apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// Supervisors started (for new and changed checks).
    pub started: usize,
    /// Supervisors stopped (of removed and changed checks).
    pub stopped: usize,
    /// Only the checks that changed were looked at: the reload took every other parsed
    /// check over and left its supervisor alone without reading it.
    pub only_changed: bool,
}

/// The agent.
pub struct Agent {
    /// What supervisors share (states, bus, metrics, observers).
    pub shared: Arc<Shared>,
    /// The running config.
    pub config: ArcSwap<Config>,
    /// The running supervisors by [`group_key`].
    handles: Mutex<HashMap<String, Handle>>,
    env: BuildEnv,
    /// Cancelled on shutdown.
    pub cancel: CancellationToken,
    /// When the agent started.
    pub started: SystemTime,
    seed: std::sync::atomic::AtomicU64,
    /// States read back from the store, applied to fresh entries by the next `apply`.
    restored: parking_lot::Mutex<HashMap<String, Restored>>,
    /// Number of the latest reload asked for: a reload that finished loading after a
    /// later one was asked for does not apply (the later one is what runs).
    reload_seq: std::sync::atomic::AtomicU64,
    /// Held while a reload applies: two reloads never interleave.
    reload_apply: Mutex<()>,
    /// A cluster's assignment, when the agent is in one.
    placement: parking_lot::RwLock<Option<Arc<dyn Placement>>>,
    /// The config the last [`Agent::apply`] applied (a reload compares against it).
    applied: parking_lot::Mutex<Option<Arc<Config>>>,
}

impl Agent {
    /// An agent for `config` (nothing runs until [`Agent::apply`]).
    pub fn new(config: Config, metrics: Arc<Metrics>, observers: Observers) -> Arc<Self> {
        let shared = Shared::new(
            Arc::new(StateTable::new()),
            Bus::new(4096),
            metrics,
            observers,
        );
        let cancel = CancellationToken::new();
        tokio::spawn(shared.clone().overall_task(cancel.clone()));
        tokio::spawn(
            shared
                .lag
                .clone()
                .run(shared.metrics.clone(), cancel.clone()),
        );
        Arc::new(Self {
            shared,
            config: ArcSwap::from_pointee(config),
            handles: Mutex::new(HashMap::new()),
            env: BuildEnv {
                http: crate::net::http_client::shared(),
                push: Default::default(),
            },
            cancel,
            started: SystemTime::now(),
            seed: std::sync::atomic::AtomicU64::new(fastrand::u64(..)),
            restored: parking_lot::Mutex::new(HashMap::new()),
            reload_seq: std::sync::atomic::AtomicU64::new(0),
            reload_apply: Mutex::new(()),
            placement: parking_lot::RwLock::new(None),
            applied: parking_lot::Mutex::new(None),
        })
    }

    /// Last known states (from the history store) to start checks from instead of
    /// `unknown`. Call before [`Agent::apply`]; each applies once, to the check's fresh
    /// entry, and emits `connection:restored`.
    pub fn restore(&self, states: Vec<Restored>) {
        let mut m = self.restored.lock();
        for r in states {
            if r.status != Status::Unknown {
                m.insert(r.name.clone(), r);
            }
        }
    }

    /// The live states.
    pub fn states(&self) -> &Arc<StateTable> {
        &self.shared.states
    }

    /// The pushes `push` checks have received (`/api/v1/push/{name}` writes here).
    pub fn push_board(&self) -> &Arc<crate::check::push::PushBoard> {
        &self.env.push
    }

    /// Runs only the checks `p` says run here (from the next [`Agent::apply`] on).
    pub fn set_placement(&self, p: Arc<dyn Placement>) {
        *self.placement.write() = Some(p);
    }

    /// The checks this agent runs (its shard of the config, and its cluster share).
    fn owned(&self, config: &Config) -> Vec<Arc<CheckConfig>> {
        let placement = self.placement.read().clone();
        config
            .checks
            .iter()
            .filter(|c| config.agent.shard.is_none_or(|s| s.owns(&c.name)))
            .filter(|c| placement.as_ref().is_none_or(|p| p.runs(&c.name)))
            .cloned()
            .collect()
    }

    /// Whether `check` runs on this agent now (it has a supervisor).
    pub async fn runs(&self, check: &str) -> bool {
        let handles = self.handles.lock().await;
        handles.contains_key(check) || handles.values().any(|h| h.members().any(|m| m == check))
    }

    /// Starts supervisors for the running config, replacing any that changed. Unchanged
    /// checks keep their state, supervisor and session.
    pub async fn apply(&self) -> Applied {
        let config = self.config.load_full();
        crate::net::dns::configure(&config.agent.dns_servers).await;
        for p in crate::plugin::loaded() {
            self.shared
                .metrics
                .plugin_loaded(p.name(), p.version(), &p.abi());
        }
        self.shared.metrics.set_settings(&config.metrics);
        let prev = self.applied.lock().replace(config.clone());
        if let Some(prev) = prev
            && let Some(done) = self.apply_changed(&prev, &config).await
        {
            return done;
        }
        let mut done = Applied::default();
        let checks = self.owned(&config);
        self.shared.set_probe_intervals(
            checks
                .iter()
                .filter(|c| c.mode == crate::check::Mode::Probe)
                .map(|c| c.timing.interval),
        );
        let pushed: Vec<String> = checks
            .iter()
            .filter(|c| c.kind == "push")
            .map(|c| c.name.clone())
            .collect();
        self.env.push.retain(&pushed);
        // Groups in order of first appearance, found by key (not by a scan of the groups
        // so far: that is quadratic at 100,000 checks).
        let mut groups: Vec<(std::borrow::Cow<'_, str>, Vec<Arc<CheckConfig>>)> = Vec::new();
        let mut group_of: HashMap<std::borrow::Cow<'_, str>, usize> =
            HashMap::with_capacity(checks.len());
        let order: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        for c in &checks {
            let k = group_key(c);
            match group_of.get(&k) {
                Some(&i) => groups[i].1.push(c.clone()),
                None => {
                    group_of.insert(k.clone(), groups.len());
                    groups.push((k, vec![c.clone()]));
                }
            }
        }
        // The supervisors stay in their map across reloads: only changed groups are
        // touched, so a reload of one check among 100,000 does not rebuild the map.
        let mut handles = self.handles.lock().await;
        let gone: Vec<String> = handles
            .keys()
            .filter(|k| !group_of.contains_key(k.as_str()))
            .cloned()
            .collect();
        drop(group_of);
        for k in gone {
            if let Some(h) = handles.remove(&k) {
                self.retire(h).await;
                done.stopped += 1;
            }
        }
        let mut to_start = Vec::new();
        for (key, members) in groups {
            let same = handles.get(key.as_ref()).map(|h| {
                h.members().eq(members.iter().map(|m| m.name.as_str()))
                    && h.fingerprints().eq(members.iter().map(|m| m.fingerprint))
            });
            match same {
                Some(true) => {}
                Some(false) => {
                    if let Some(h) = handles.remove(key.as_ref()) {
                        self.retire(h).await;
                        done.stopped += 1;
                    }
                    to_start.push(members);
                }
                None => to_start.push(members),
            }
        }
        let mut fresh = Vec::new();
        let mut started = Vec::new();
        let mut restored = Vec::new();
        for members in to_start {
            // Exactly as long as it must be: the supervisor keeps it for good.
            let mut ms = Vec::with_capacity(members.len());
            for c in &members {
                let mut state = CheckState::new(c);
                if let Some(r) = self.restored.lock().remove(&c.name) {
                    state.restore(&r);
                    restored.push(state.clone());
                }
                let metrics = self.shared.metrics.check(&state);
                let entry = Arc::new(Entry {
                    state: parking_lot::Mutex::new(state),
                });
                fresh.push((c.name.clone(), entry.clone()));
                ms.push(Member {
                    config: c.clone(),
                    entry,
                    metrics,
                });
            }
            started.push(ms);
        }
        self.shared.states.replace(&order, fresh);
        for s in &restored {
            tracing::info!(check = %s.name, status = s.status.as_str(), "state restored from history");
            self.shared
                .bus
                .send(Event::Restored(CheckEvent::new(s, Status::Unknown)));
        }
        for ms in started {
            let check = self.build(&ms[0].config);
            self.spawn_into(&mut handles, check, ms);
            done.started += 1;
        }
        // Restored states apply to the first apply only.
        self.restored.lock().clear();
        self.shared.overall_dirty.notify_one();
        done
    }

    /// Starts a supervisor for `ms` and files its handle.
    fn spawn_into(
        &self,
        handles: &mut HashMap<String, Handle>,
        check: Arc<dyn Check>,
        ms: Vec<Member>,
    ) {
        let seed = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed);
        let h = schedule::spawn(self.shared.clone(), check, ms, seed, &self.cancel);
        handles.insert(h.key().into_owned(), h);
    }

    /// The check `c` builds, or one that reports why it cannot be built.
    fn build(&self, c: &CheckConfig) -> Arc<dyn Check> {
        match c.spec.build(&self.env) {
            Ok(check) => check,
            Err(e) => {
                tracing::error!(check = %c.name, error = %e, "cannot build check");
                Arc::new(Broken(e)) as Arc<dyn Check>
            }
        }
    }

    /// Applies `new` over `prev` by touching only the checks that changed, when that is
    /// all a reload did: the same checks by name in the same places, each changed one a
    /// check of its own (not a shared session) and not a `push` check, no shard or cluster
    /// placement, and few changes. Returns `None` (nothing done) when the full `apply` is
    /// needed. At 100,000 checks this is what makes a one-check reload cheap: unchanged
    /// checks are recognised by pointer (the reload took their parsed configs over) and
    /// never read.
    async fn apply_changed(&self, prev: &Config, new: &Config) -> Option<Applied> {
        if prev.checks.len() != new.checks.len()
            || prev.agent.shard.is_some()
            || new.agent.shard.is_some()
            || self.placement.read().is_some()
            || !self.restored.lock().is_empty()
        {
            return None;
        }
        let changed: Vec<usize> = (0..new.checks.len())
            .filter(|&i| !Arc::ptr_eq(&prev.checks[i], &new.checks[i]))
            .collect();
        if changed.len() > 1000.max(new.checks.len() / 100) {
            return None;
        }
        let alone = |c: &CheckConfig| {
            c.kind != "push" && matches!(group_key(c), std::borrow::Cow::Borrowed(_))
        };
        let mut handles = self.handles.lock().await;
        for &i in &changed {
            let (old, now) = (&prev.checks[i], &new.checks[i]);
            if old.name != now.name
                || !alone(old)
                || !alone(now)
                || !handles.contains_key(&old.name)
                || !self.shared.states.is_at(i, &old.name)
            {
                return None;
            }
        }
        let mut done = Applied {
            only_changed: true,
            ..Applied::default()
        };
        let mut fresh = Vec::new();
        let mut started = Vec::new();
        for &i in &changed {
            let (old, now) = (&prev.checks[i], &new.checks[i]);
            if old.fingerprint == now.fingerprint {
                continue; // parsed again (e.g. a `${…}`), but the same: keep it running
            }
            if let Some(h) = handles.remove(&old.name) {
                self.retire(h).await;
                done.stopped += 1;
            }
            let state = CheckState::new(now);
            let metrics = self.shared.metrics.check(&state);
            let entry = Arc::new(Entry {
                state: parking_lot::Mutex::new(state),
            });
            fresh.push((i, entry.clone()));
            started.push(Member {
                config: now.clone(),
                entry,
                metrics,
            });
        }
        self.shared.states.renew_at(fresh);
        for m in started {
            let check = self.build(&m.config);
            self.spawn_into(&mut handles, check, vec![m]);
            done.started += 1;
        }
        self.shared.overall_dirty.notify_one();
        Some(done)
    }

    async fn retire(&self, h: Handle) {
        let names: Vec<String> = h.members().map(str::to_owned).collect();
        h.stop(Duration::from_secs(2)).await;
        for n in names {
            if let Some(s) = self.shared.states.state(&n) {
                self.shared.metrics.remove_check(&n, s.kind);
            }
        }
    }

    /// Loads the config file again and applies it; an invalid file changes nothing.
    ///
    /// The file is read and validated on a blocking thread (plugin `create` runs there,
    /// under [`crate::plugin::VALIDATE_TIMEOUT`]). Reloads may overlap: each is numbered
    /// when asked for, applying is serialised, and one whose load finished after a later
    /// reload was asked for is dropped (`Ok`, logged) — the later one, which read the file
    /// later, is what runs. Nothing applies once the agent is shutting down.
    pub async fn reload(&self) -> Result<Option<Applied>, ConfigErrors> {
        use std::sync::atomic::Ordering;
        let me = self.reload_seq.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::info!(reload = me, "reloading the configuration");
        let prev = self.config.load_full();
        let path = prev.path.clone();
        let options = prev.options.clone();
        let loaded = {
            let p = path.clone();
            // Unchanged checks are taken over from the running config, not parsed again.
            tokio::task::spawn_blocking(move || {
                let loaded = crate::config::load_reusing(&p, &options, &prev);
                crate::metrics::background::release_freed_memory();
                loaded
            })
            .await
            .unwrap_or_else(|e| {
                Err(ConfigErrors(vec![crate::config::ConfigError {
                    path: path.clone(),
                    line: 1,
                    col: 1,
                    message: format!("reload failed: {e}"),
                }]))
            })
        };
        let _applying = self.reload_apply.lock().await;
        if self.cancel.is_cancelled() {
            tracing::info!(
                reload = me,
                "shutting down; the reloaded configuration is not applied"
            );
            return Ok(None);
        }
        let latest = self.reload_seq.load(Ordering::Acquire);
        if latest != me {
            tracing::info!(
                reload = me,
                latest,
                "a later reload was asked for while this one loaded; it is the one that runs"
            );
            return Ok(None);
        }
        match loaded {
            Ok(c) => {
                self.config.store(Arc::new(c));
                let done = self.apply().await;
                let now = self.config.load_full();
                for obs in self.shared.observers.iter() {
                    obs.on_reload(&now);
                }
                self.shared.metrics.reload(true);
                tracing::info!(
                    path = %self.config.load().path.display(),
                    started = done.started,
                    stopped = done.stopped,
                    only_changed = done.only_changed,
                    "configuration reloaded"
                );
                Ok(Some(done))
            }
            Err(e) => {
                self.shared.metrics.reload(false);
                tracing::error!(errors = %e, "configuration reload failed; keeping the running configuration");
                Err(e)
            }
        }
    }

    /// Forces every check now (backoff reset) and waits for the results.
    pub async fn force_all(&self) {
        let handles = self.handles.lock().await;
        let futs: Vec<_> = handles.values().map(|h| h.force()).collect();
        let wait = self.max_timeout() + Duration::from_secs(1);
        let _ = tokio::time::timeout(wait, futures_util::future::join_all(futs)).await;
    }

    /// Forces one check; false if no such check runs here.
    pub async fn force_one(&self, name: &str) -> bool {
        let handles = self.handles.lock().await;
        let found = handles
            .get(name)
            .or_else(|| handles.values().find(|h| h.members().any(|m| m == name)));
        let Some(h) = found else {
            return false;
        };
        let wait = self.max_timeout() + Duration::from_secs(1);
        let _ = tokio::time::timeout(wait, h.force()).await;
        true
    }

    fn max_timeout(&self) -> Duration {
        self.config
            .load()
            .checks
            .iter()
            .map(|c| c.timing.timeout)
            .max()
            .unwrap_or(Duration::from_secs(3))
    }

    /// Stops every supervisor (in-flight checks cancelled) within `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.cancel.cancel();
        let handles = std::mem::take(&mut *self.handles.lock().await);
        let stops = handles.into_values().map(|h| h.stop(grace));
        let _ = tokio::time::timeout(grace, futures_util::future::join_all(stops)).await;
        let last = self.shared.states.all();
        for obs in self.shared.observers.iter() {
            obs.on_stop(&last);
        }
    }
}

/// A check whose build failed: every attempt reports the build error.
struct Broken(CheckError);

impl Check for Broken {
    fn probe<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move { Outcome::down(self.0.clone(), Duration::ZERO) })
    }
    fn connect<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move { Err(Outcome::down(self.0.clone(), Duration::ZERO)) })
    }
}

/// Runs checks once, without thresholds (for `lifeline check`). Kinds that read other
/// checks (rules) run after the others.
pub async fn check_once(config: &Config, names: &[String]) -> Vec<(Arc<CheckConfig>, Outcome)> {
    crate::net::dns::configure(&config.agent.dns_servers).await;
    let env = BuildEnv {
        http: crate::net::http_client::shared(),
        push: Default::default(),
    };
    let states = Arc::new(StateTable::new());
    let selected: Vec<Arc<CheckConfig>> = config
        .checks
        .iter()
        .filter(|c| names.is_empty() || names.contains(&c.name))
        .cloned()
        .collect();
    let fresh = config
        .checks
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                Arc::new(Entry {
                    state: parking_lot::Mutex::new(CheckState::new(c)),
                }),
            )
        })
        .collect();
    let order: Vec<&str> = config.checks.iter().map(|c| c.name.as_str()).collect();
    states.replace(&order, fresh);
    let (first, later): (Vec<_>, Vec<_>) = selected
        .into_iter()
        .partition(|c| c.spec.triggers().is_empty());
    let mut out = Vec::new();
    for batch in [first, later] {
        let futs = batch.into_iter().map(|c| {
            let env = env.clone();
            let states = states.clone();
            async move {
                let o = run_once(&c, &env, states).await;
                (c, o)
            }
        });
        let results = futures_util::future::join_all(futs).await;
        for (c, o) in &results {
            if let Some(e) = states.get(&c.name) {
                e.state.lock().apply(
                    o,
                    crate::health::Source::Probe,
                    &crate::config::Timing {
                        unhealthy_threshold: 1,
                        healthy_threshold: 1,
                        ..c.timing.clone()
                    },
                );
            }
        }
        out.extend(results);
    }
    out
}

async fn run_once(c: &CheckConfig, env: &BuildEnv, states: Arc<StateTable>) -> Outcome {
    if c.kind == "push" {
        // Nothing to connect to: the result is whatever the running agent was pushed.
        return Outcome {
            verdict: crate::check::Verdict::Unknown,
            message: format!(
                "a push check cannot be checked once: it is fed by POST /api/v1/push/{} to the running agent (see `curl .../health/service/{}`)",
                c.name, c.name
            ),
            ..Outcome::up(Duration::ZERO)
        };
    }
    let check = match c.spec.build(env) {
        Ok(c) => c,
        Err(e) => return Outcome::down(e, Duration::ZERO),
    };
    let cancel = CancellationToken::new();
    let at = Attempt {
        check: Arc::from(c.name.as_str()),
        timeout: c.timing.timeout,
        attempt: 0,
        states,
        cancel: cancel.clone(),
    };
    let start = tokio::time::Instant::now();
    let fut = async {
        match c.mode {
            crate::check::Mode::Probe => check.probe(&at).await,
            crate::check::Mode::Session => match check.connect(&at).await {
                Ok(conn) => {
                    // Drive one heartbeat on the fresh session, then close it.
                    one_heartbeat(conn, c.timing.timeout).await
                }
                Err(o) => o,
            },
        }
    };
    let fut = crate::net::deadline::scope(c.timing.timeout, fut);
    match tokio::time::timeout(c.timing.timeout, fut).await {
        Ok(o) => o,
        Err(_) => {
            cancel.cancel();
            Outcome::down(
                CheckError::timeout("check", c.timing.timeout),
                start.elapsed(),
            )
        }
    }
}

async fn one_heartbeat(conn: Connected, timeout: Duration) -> Outcome {
    let (beat_tx, beat_rx) = tokio::sync::mpsc::channel(1);
    let (rep_tx, mut rep_rx) = tokio::sync::mpsc::channel(4);
    let shutdown = CancellationToken::new();
    let io = crate::check::SessionIo {
        beats: beat_rx,
        report: rep_tx,
        shutdown: shutdown.clone(),
        timeout,
    };
    let connect = conn.outcome;
    let mut task = tokio::spawn(conn.session.run(io));
    let _ = beat_tx.send(()).await;
    let result = tokio::select! {
        r = rep_rx.recv() => match r {
            Some(o) if o.is_success() => {
                let mut c = connect.clone();
                c.latency += o.latency;
                c
            }
            Some(o) => o,
            None => Outcome::down(CheckError::new(ErrorKind::Closed, "session ended"), connect.latency),
        },
        r = &mut task => {
            let e = r.unwrap_or_else(|e| CheckError::new(ErrorKind::Internal, e.to_string()));
            return Outcome::down(e, connect.latency);
        }
    };
    shutdown.cancel();
    drop(beat_tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    result
}
