//! Supervisors: one task per check (or per shared session), owning every timer.
//!
//! A supervisor runs at most one attempt at a time, applies the per-attempt timeout from
//! outside the check, backs off per SPEC §4 after failures, answers force-checks, and in
//! session mode sends heartbeats every `interval`, degrades after `poor_after` and drops
//! the session after `stale_after`. Each result is applied to the members' states (the
//! health model decides statuses), published as metrics and events, and handed to the
//! observers (store, alerts).

pub mod backoff;
pub mod lag;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::check::{Attempt, Check, CheckError, Connected, ErrorKind, Mode, Outcome, SessionIo};
use crate::config::CheckConfig;
use crate::events::{Bus, CheckEvent, Event, Observers, Published};
use crate::health::{Entry, Overall, Source, StateTable, Status};
use crate::metrics::{CheckMetrics, Metrics};
use backoff::Backoff;

/// Shortest time between two computations of the overall status (10,000 checks take
/// about 0.3 ms; a storm of changes must not turn that into a pass per change).
pub const OVERALL_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// What every supervisor shares.
pub struct Shared {
    /// Live states.
    pub states: Arc<StateTable>,
    /// Event bus.
    pub bus: Bus,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Store, alerts.
    pub observers: Observers,
    /// Wakes the overall-status task.
    pub overall_dirty: Notify,
    /// Whether the agent keeps its cadence (see [`lag`]).
    pub lag: Arc<lag::LagWatch>,
    /// The origin of the grid that probe slots are put on ([`GRID`]).
    pub epoch: Instant,
    /// The grid's step in nanoseconds ([`grid_step`] of the configured probe rate).
    grid_ns: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// New shared context.
    pub fn new(
        states: Arc<StateTable>,
        bus: Bus,
        metrics: Arc<Metrics>,
        observers: Observers,
    ) -> Arc<Self> {
        Arc::new(Self {
            states,
            bus,
            metrics,
            observers,
            overall_dirty: Notify::new(),
            lag: Arc::default(),
            epoch: Instant::now(),
            grid_ns: std::sync::atomic::AtomicU64::new(GRID.as_nanos() as u64),
        })
    }

    /// Sizes the probe grid for checks probed every `intervals` (at a full apply of the
    /// config; supervisors started later take the new step, running ones keep theirs).
    pub fn set_probe_intervals(&self, intervals: impl Iterator<Item = Duration>) {
        let rate: f64 = intervals
            .filter(|i| !i.is_zero())
            .map(|i| 1.0 / i.as_secs_f64())
            .sum();
        let step = grid_step(rate).as_nanos() as u64;
        self.grid_ns
            .store(step, std::sync::atomic::Ordering::Relaxed);
    }

    /// The probe grid's step.
    pub fn grid(&self) -> Duration {
        Duration::from_nanos(self.grid_ns.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Recomputes the overall status whenever a check changes (at most once per
    /// [`OVERALL_EVERY`]); emits `agent:overall` when the status or the score band
    /// changes. Runs until `cancel`.
    pub async fn overall_task(self: Arc<Self>, cancel: CancellationToken) {
        let mut last = Overall {
            status: crate::health::OverallStatus::Unknown,
            score: None,
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.overall_dirty.notified() => {}
            }
            let now = self.states.overall();
            self.metrics.set_overall(now);
            if now.status != last.status || now.band() != last.band() {
                self.bus.send(Event::overall(now, last));
            }
            last = now;
            // A storm of changes costs one pass over every check per OVERALL_EVERY, not
            // one per change: changes meanwhile leave the notification set, and the next
            // pass sees them all.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(OVERALL_EVERY) => {}
            }
        }
    }
}

/// A request to a supervisor.
pub enum Command {
    /// Run now with backoff reset; answer when the result is applied.
    Force(oneshot::Sender<()>),
}

/// Force requests for one supervisor. Lighter than a channel (a tokio channel allocates
/// about 500 bytes up front, and there is one supervisor per check, 100,000 of them):
/// a queue of reply senders under a lock, and a [`Notify`].
#[derive(Default)]
struct Mailbox {
    inner: Mutex<Letters>,
    wake: Notify,
}

#[derive(Default)]
struct Letters {
    forced: Vec<oneshot::Sender<()>>,
    /// The [`Handle`] is gone: the supervisor stops, as it would on cancel.
    handle_gone: bool,
    /// The supervisor is gone: a request is answered at once (its sender dropped).
    supervisor_gone: bool,
}

impl Mailbox {
    /// The next request, or `None` once the handle is gone. Cancel safe: a request is
    /// taken only when it is returned.
    async fn recv(&self) -> Option<Command> {
        loop {
            {
                let mut l = self.inner.lock();
                if let Some(reply) = l.forced.pop() {
                    return Some(Command::Force(reply));
                }
                if l.handle_gone {
                    return None;
                }
            }
            // A wake-up while nobody waits is kept (a permit), so none is lost.
            self.wake.notified().await;
        }
    }
}

/// The handle's side of a [`Mailbox`]: closes it when dropped.
struct Mail(Arc<Mailbox>);

impl Mail {
    fn send(&self, c: Command) {
        let Command::Force(reply) = c;
        let mut l = self.0.inner.lock();
        if !l.supervisor_gone {
            l.forced.push(reply);
            drop(l);
            self.0.wake.notify_one();
        }
    }

    /// Closes the mailbox: the supervisor's wait ends with a stop.
    fn close(&self) {
        self.0.inner.lock().handle_gone = true;
        self.0.wake.notify_one();
    }
}

impl Drop for Mail {
    fn drop(&mut self) {
        self.close();
    }
}

/// The supervisor's side of a [`Mailbox`]: when the supervisor ends, waiting requests
/// are answered (their senders dropped) and later ones are not queued.
struct Inbox(Arc<Mailbox>);

impl std::ops::Deref for Inbox {
    type Target = Mailbox;
    fn deref(&self) -> &Mailbox {
        &self.0
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut l = self.0.inner.lock();
        l.supervisor_gone = true;
        l.forced.clear();
    }
}

/// One check of a supervisor (several when a session is shared).
pub struct Member {
    /// Its config.
    pub config: Arc<CheckConfig>,
    /// Its state.
    pub entry: Arc<Entry>,
    /// Its series.
    pub metrics: CheckMetrics,
}

/// A running supervisor.
pub struct Handle {
    /// The members' configs (shared with the supervisor): their names, and the
    /// fingerprints a reload compares. One allocation, not a key, a list of names and a
    /// list of fingerprints: there is a handle per check.
    configs: Box<[Arc<CheckConfig>]>,
    cmd: Mail,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Handle {
    /// The grouping key ([`group_key`]).
    pub fn key(&self) -> std::borrow::Cow<'_, str> {
        group_key(&self.configs[0])
    }

    /// Names of the member checks.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.configs.iter().map(|c| c.name.as_str())
    }

    /// Fingerprints of the members (reload compares them).
    pub fn fingerprints(&self) -> impl Iterator<Item = u64> {
        self.configs.iter().map(|c| c.fingerprint)
    }

    /// Forces an attempt now and waits until its result is applied.
    pub async fn force(&self) {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Force(tx));
        // An error: the supervisor stopped before it answered.
        let _ = rx.await;
    }

    /// Stops the supervisor; in-flight work is cancelled. Waits up to `grace`.
    pub async fn stop(self, grace: Duration) {
        self.cancel();
        let abort = self.task.abort_handle();
        if timeout(grace, self.task).await.is_err() {
            abort.abort();
        }
    }

    /// Cancels without waiting.
    pub fn cancel(&self) {
        self.cancel.cancel();
        self.cmd.close();
    }
}

/// The key under which checks share a supervisor: a session check with a session key
/// shares with every other session check of the same kind, key and timing; any other
/// check is alone under its own name (a name has no `|`, so it never equals a session
/// key).
pub fn group_key(c: &CheckConfig) -> std::borrow::Cow<'_, str> {
    match (c.mode, c.spec.session_key()) {
        (Mode::Session, Some(k)) => format!("session|{}|{}|{:?}", c.kind, k, c.timing).into(),
        _ => c.name.as_str().into(),
    }
}

/// Starts a supervisor for `members` (all with the same [`group_key`]).
pub fn spawn(
    shared: Arc<Shared>,
    check: Arc<dyn Check>,
    members: Vec<Member>,
    seed: u64,
    parent: &CancellationToken,
) -> Handle {
    let mailbox = Arc::new(Mailbox::default());
    let cancel = parent.child_token();
    let configs = members.iter().map(|m| m.config.clone()).collect();
    let lead = members[0].config.clone();
    let mode = members[0].config.mode;
    let triggers: Vec<String> = members
        .iter()
        .flat_map(|m| m.config.spec.triggers())
        .collect();
    let sup = Supervisor {
        backoff: Backoff::new(lead.timing.backoff.clone(), seed),
        rng: fastrand::Rng::with_seed(seed ^ 0x9e37_79b9),
        name: Arc::from(members[0].config.name.as_str()),
        shared,
        check,
        members,
        lead,
        cmd: Inbox(mailbox.clone()),
        cancel: cancel.clone(),
        failures: 0,
        forced: Vec::new(),
        triggers,
    };
    // Two spawns, not one future matching on the mode: a task is as large as its future,
    // and a session's (about 2.7 KB) would make every probe's task that large too.
    let task = match mode {
        Mode::Probe => {
            let f = sup.run_probe();
            #[cfg(test)]
            tests::FUTURE_BYTES.set(std::mem::size_of_val(&f));
            tokio::spawn(f)
        }
        Mode::Session => {
            let f = sup.run_session();
            #[cfg(test)]
            tests::FUTURE_BYTES.set(std::mem::size_of_val(&f));
            tokio::spawn(f)
        }
    };
    Handle {
        configs,
        cmd: Mail(mailbox),
        cancel,
        task,
    }
}

struct Supervisor {
    name: Arc<str>,
    shared: Arc<Shared>,
    check: Arc<dyn Check>,
    members: Vec<Member>,
    /// The first member's config: its timing is the group's (shared, not copied).
    lead: Arc<CheckConfig>,
    backoff: Backoff,
    rng: fastrand::Rng,
    cmd: Inbox,
    cancel: CancellationToken,
    /// Consecutive failures, for backoff (reset by success and force).
    failures: u32,
    /// Force-checks waiting for the next applied result.
    forced: Vec<oneshot::Sender<()>>,
    triggers: Vec<String>,
}

/// How a live session ended.
struct Lost {
    /// Why.
    error: CheckError,
    /// Whether any heartbeat was answered on this connection.
    answered: bool,
}

/// Why a wait ended.
enum Wake {
    Due,
    Forced,
    Stop,
}

/// Probe slots (and first attempts) fall on a grid that starts at [`Shared::epoch`], so
/// the checks due within one step are started by one timer wake-up instead of one each.
/// A wake-up (timer, futex, `epoll_wait`, and caches gone cold while the core idled)
/// costs as much CPU as a loopback probe: at 1,000 probes a second, a 10 ms step cost
/// 66–75 µs of CPU per probe and a 50 ms step 44–50 (`BENCHMARKS.md`). The step is sized
/// so that about [`GRID_BATCH`] probes share a wake-up at the configured rate, at most
/// this long: a check starts at most one step before its even share of the interval,
/// and its latency is the exchange with the peer alone (`net::tcp_info`), so starting
/// with others does not show in it.
pub const GRID: Duration = Duration::from_millis(50);

/// The finest grid step: the runtime's timers resolve no finer.
pub const GRID_MIN: Duration = Duration::from_millis(1);

/// Probes per timer wake-up the grid is sized for. More would batch a little better and
/// show as scheduler lag (a wake-up's probes run one after the other: 100 loopback probes
/// take about 2 ms on one core; 500 showed a lag p99 of 50 ms at 10,000 probes a second).
pub const GRID_BATCH: f64 = 100.0;

/// The grid step for `rate` probes a second: room for [`GRID_BATCH`] of them, between
/// [`GRID_MIN`] and [`GRID`] (10 ms at 10,000 a second, 50 ms at 2,000 and fewer).
pub fn grid_step(rate: f64) -> Duration {
    if rate.is_nan() || rate <= 0.0 {
        return GRID;
    }
    Duration::from_secs_f64((GRID_BATCH / rate).min(GRID.as_secs_f64())).max(GRID_MIN)
}

/// The grid step of a check probed every `interval` while the agent's step is `step`: a
/// twentieth of a short interval at most, so that a check probed every 200 ms still has
/// 20 slots to spread over, not four.
pub fn grid_for(step: Duration, interval: Duration) -> Duration {
    step.min(interval / 20)
}

/// `t` moved back onto the grid of step `step` that starts at `epoch` (not before
/// `epoch`); a zero step leaves `t` as it is.
pub fn on_grid(epoch: Instant, t: Instant, step: Duration) -> Instant {
    let since = t.saturating_duration_since(epoch).as_nanos();
    let step = step.as_nanos();
    if step == 0 {
        return t;
    }
    epoch + Duration::from_nanos(u64::try_from(since / step * step).unwrap_or(u64::MAX))
}

/// The first of the instants `slot + k × interval` (k ≥ 0) that is at least half an
/// interval after `start`: the next attempt of a probe whose last attempt began at
/// `start`. Between two attempts there is one interval when the check keeps its slot, and
/// between a half and one and a half intervals when it returns to it (after its first
/// attempt, a recovery or a late start), so a check is never probed twice in quick
/// succession and never skips more than half an interval.
fn next_slot(slot: Instant, interval: Duration, start: Instant) -> Instant {
    if interval.is_zero() {
        return start;
    }
    let earliest = start + interval / 2;
    let behind = earliest.saturating_duration_since(slot).as_nanos();
    let step = interval.as_nanos();
    let ahead = behind.div_ceil(step) * step;
    let ahead = Duration::from_nanos(u64::try_from(ahead).unwrap_or(u64::MAX));
    slot.checked_add(ahead).unwrap_or(start + interval)
}

impl Supervisor {
    fn attempt(&self, cancel: &CancellationToken) -> Attempt {
        Attempt {
            check: self.name.clone(),
            timeout: self.lead.timing.timeout,
            attempt: self.failures,
            states: self.shared.states.clone(),
            cancel: cancel.clone(),
        }
    }

    /// First run: spread start-up over a random part of the interval (at most 1 s, so
    /// every check has a status soon after start).
    fn initial_delay(&mut self) -> Duration {
        let cap = (self.lead.timing.interval / 2).min(Duration::from_secs(1));
        cap.mul_f64(self.rng.f64())
    }

    /// Waits until `due`, a force-check, a trigger, or the handle's stop.
    ///
    /// This is what a supervisor's task holds between two attempts, so it is kept small:
    /// a stop arrives through the mailbox ([`Handle::cancel`] closes it), not through a
    /// wait on the cancellation token, and only a check with triggers waits on the bus
    /// (boxed, so the others do not carry that future's room).
    async fn wait(
        &mut self,
        due: Instant,
        trigger: &mut Option<tokio::sync::broadcast::Receiver<Arc<Published>>>,
    ) -> Wake {
        let wake = if trigger.is_some() {
            Box::pin(self.wait_or_trigger(due, trigger)).await
        } else {
            tokio::select! {
                biased;
                c = self.cmd.recv() => self.woken(c),
                _ = sleep_until(due) => Wake::Due,
            }
        };
        // The token (or its parent's) cancelled without the mailbox closed: stop before
        // another attempt.
        if self.cancel.is_cancelled() {
            Wake::Stop
        } else {
            wake
        }
    }

    /// What a mailbox wake-up means.
    fn woken(&mut self, c: Option<Command>) -> Wake {
        match c {
            Some(Command::Force(reply)) => {
                self.forced.push(reply);
                Wake::Forced
            }
            None => Wake::Stop,
        }
    }

    /// [`Self::wait`] for a check with triggers.
    async fn wait_or_trigger(
        &mut self,
        due: Instant,
        trigger: &mut Option<tokio::sync::broadcast::Receiver<Arc<Published>>>,
    ) -> Wake {
        loop {
            tokio::select! {
                biased;
                c = self.cmd.recv() => return self.woken(c),
                ev = recv_trigger(trigger) => {
                    let about = ev.as_ref().and_then(|e| e.typed.check());
                    if about.is_some_and(|c| self.triggers.iter().any(|t| t == c)) {
                        return Wake::Due;
                    }
                }
                _ = sleep_until(due) => return Wake::Due,
            }
        }
    }

    fn begin(&self) {
        for m in &self.members {
            let mut s = m.entry.state.lock();
            if let Some(ch) = s.begin() {
                self.after_change(m, &s, ch);
            }
        }
    }

    /// Applies one outcome to every member and publishes it.
    fn publish(&mut self, o: &Outcome, src: Source) {
        let want_events = self.shared.bus.has_subscribers();
        for m in &self.members {
            let mut s = m.entry.state.lock();
            let prev = s.status;
            let prev_score = s.score;
            let change = s.apply(o, src, &m.config.timing);
            m.metrics.result(o);
            m.metrics.status(&s);
            for obs in self.shared.observers.iter() {
                obs.on_result(&s, o);
            }
            if want_events {
                let bus = &self.shared.bus;
                bus.send(Event::HealthCheck(CheckEvent::new(&s, prev)));
                if let Some(kind) = o.error_kind().filter(|_| !o.is_success()) {
                    bus.send(Event::failed(&s, prev, self.failures + 1, kind));
                    if kind == ErrorKind::AuthFailed {
                        bus.send(Event::AuthFailed(CheckEvent::new(&s, prev)));
                    }
                }
            }
            if let Some(ch) = change {
                self.after_change(m, &s, ch);
            } else if s.score != prev_score {
                self.shared.overall_dirty.notify_one();
            }
        }
        for f in self.forced.drain(..) {
            let _ = f.send(());
        }
    }

    fn after_change(&self, m: &Member, s: &crate::health::CheckState, ch: crate::health::Change) {
        m.metrics.changed();
        m.metrics.status(s);
        if ch.to.is_failing() {
            tracing::warn!(check = %s.name, kind = s.kind, from = ch.from.as_str(), to = ch.to.as_str(), error = s.last_error.as_deref().unwrap_or(""), "check is failing");
        } else if matches!(ch.from, Status::Unknown | Status::Connecting) {
            // Starting up (or a session's first answer): one line per check at every
            // start would bury what matters; the API and events have it.
            tracing::debug!(check = %s.name, kind = s.kind, from = ch.from.as_str(), to = ch.to.as_str(), "check status changed");
        } else {
            tracing::info!(check = %s.name, kind = s.kind, from = ch.from.as_str(), to = ch.to.as_str(), "check status changed");
        }
        for obs in self.shared.observers.iter() {
            obs.on_change(s, ch);
        }
        if let Some(e) = Event::change(s, ch) {
            self.shared.bus.send(e);
        }
        self.shared.overall_dirty.notify_one();
    }

    /// After a failure: computes the delay, emits `reconnecting` (and
    /// `max_attempts_reached` once), publishes the backoff.
    fn schedule_retry(&mut self) -> Duration {
        let delay = self.backoff.delay(self.failures);
        let reached = self.backoff.reached_max(self.failures);
        let at = SystemTime::now() + delay;
        for m in &self.members {
            m.metrics.backoff(delay);
            let mut s = m.entry.state.lock();
            s.attempt = self.failures;
            s.next_attempt_at = Some(at);
            let prev = s.status;
            self.shared
                .bus
                .send(Event::reconnecting(&s, prev, self.failures, delay));
            if reached {
                tracing::warn!(check = %s.name, attempts = self.failures, "max attempts reached; retrying every backoff.max");
                self.shared
                    .bus
                    .send(Event::max_attempts_reached(&s, prev, self.failures));
            }
        }
        delay
    }

    fn schedule_next(&self, delay: Duration) {
        let at = SystemTime::now() + delay;
        for m in &self.members {
            m.metrics.backoff(Duration::ZERO);
            let mut s = m.entry.state.lock();
            s.attempt = 0;
            s.next_attempt_at = Some(at);
        }
    }

    /// Runs `fut` under the attempt timeout; a timeout cancels the attempt's token.
    async fn timed<T>(
        &self,
        what: &str,
        token: &CancellationToken,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, Outcome> {
        let start = Instant::now();
        // The attempt first: one that finishes on its first poll (a loopback connect)
        // never registers a waiter on the cancellation token.
        tokio::select! {
            biased;
            r = timeout(self.lead.timing.timeout, crate::net::deadline::scope(self.lead.timing.timeout, fut)) => r.map_err(|_| {
                token.cancel();
                Outcome::down(CheckError::timeout(what, self.lead.timing.timeout), start.elapsed())
            }),
            _ = self.cancel.cancelled() => {
                token.cancel();
                Err(Outcome::down(CheckError::new(ErrorKind::Internal, "agent shutting down"), start.elapsed()))
            }
        }
    }

    async fn run_probe(mut self) {
        let mut trigger = (!self.triggers.is_empty()).then(|| self.shared.bus.subscribe());
        // This check's slot in the interval: after the first attempt, a working check is
        // probed at `slot + k × interval`. The slots of all checks are spread evenly over
        // the interval, so 10,000 checks at 5 s make 2,000 attempts every second rather
        // than 10,000 in the first second of every five; and a check that recovers, or
        // started late, goes back to its own slot instead of bunching with the others.
        let epoch = self.shared.epoch;
        let grid = grid_for(self.shared.grid(), self.lead.timing.interval);
        let slot = on_grid(
            epoch,
            Instant::now() + self.lead.timing.interval.mul_f64(self.rng.f64()),
            grid,
        );
        let mut due = on_grid(epoch, Instant::now() + self.initial_delay(), grid);
        loop {
            match self.wait(due, &mut trigger).await {
                Wake::Stop => return,
                Wake::Forced => self.failures = 0,
                Wake::Due => {}
            }
            let start = Instant::now();
            if start > due {
                self.shared
                    .metrics
                    .scheduler_lag
                    .observe((start - due).as_secs_f64());
            }
            // Boxed: the attempt's future (its timers, the check's own future) exists
            // only while a probe runs, so the task at rest, between probes, holds only
            // the wait (about 0.6 KB less per check).
            let o = Box::pin(self.probe_once()).await;
            if self.cancel.is_cancelled() {
                return;
            }
            if o.is_success() || o.verdict == crate::check::Verdict::Unknown {
                self.publish(&o, Source::Probe);
                self.failures = 0;
                due = next_slot(slot, self.lead.timing.interval, start).max(Instant::now());
                self.schedule_next(due - Instant::now());
            } else {
                self.publish(&o, Source::Probe);
                self.failures += 1;
                due = Instant::now() + self.schedule_retry();
            }
        }
    }

    /// One probe attempt under the timeout.
    async fn probe_once(&self) -> Outcome {
        self.begin();
        let token = self.cancel.child_token();
        let at = self.attempt(&token);
        match self.timed("probe", &token, self.check.probe(&at)).await {
            Ok(o) | Err(o) => o,
        }
    }

    async fn run_session(mut self) {
        let mut no_trigger = None;
        let mut due = Instant::now() + self.initial_delay();
        let mut was_connected = false;
        loop {
            match self.wait(due, &mut no_trigger).await {
                Wake::Stop => return,
                Wake::Forced => self.failures = 0,
                Wake::Due => {}
            }
            self.begin();
            let token = self.cancel.child_token();
            let at = self.attempt(&token);
            let check = self.check.clone();
            let res = match self.timed("connect", &token, check.connect(&at)).await {
                Ok(r) => r,
                Err(o) => Err(o),
            };
            if self.cancel.is_cancelled() {
                return;
            }
            match res {
                Err(o) => {
                    self.publish(&o, Source::Connect);
                    self.failures += 1;
                }
                Ok(Connected { session, outcome }) => {
                    // The handshake alone resets nothing: n (and the status) wait for
                    // the first answered heartbeat on this connection (see `drive`).
                    self.publish(&outcome, Source::Connect);
                    if was_connected {
                        for m in &self.members {
                            m.metrics.reconnected();
                        }
                    }
                    was_connected = true;
                    match self.drive(session).await {
                        None => return,
                        Some(Lost { error, answered }) => {
                            // A connection that answered starts a fresh count; one that
                            // never did is one more failure in a row.
                            self.failures = if answered { 1 } else { self.failures + 1 };
                            self.lost(&error);
                        }
                    }
                }
            }
            due = Instant::now() + self.schedule_retry();
        }
    }

    fn lost(&mut self, err: &CheckError) {
        tracing::warn!(check = %self.name, error = %err, "session lost");
        for m in &self.members {
            let mut s = m.entry.state.lock();
            let prev = s.status;
            let change = s.session_lost(err.kind, &err.message);
            m.metrics.status(&s);
            let o = Outcome::down(err.clone(), Duration::ZERO);
            m.metrics.result(&o);
            for obs in self.shared.observers.iter() {
                obs.on_result(&s, &o);
            }
            self.shared
                .bus
                .send(Event::failed(&s, prev, self.failures, err.kind));
            if let Some(ch) = change {
                self.after_change(m, &s, ch);
            }
        }
        for f in self.forced.drain(..) {
            let _ = f.send(());
        }
    }

    /// Runs a live session until it ends (`Some`) or the agent stops (`None`).
    ///
    /// The first heartbeat goes out at once, so a healthy peer is confirmed within one
    /// round trip; then one every `interval`. The first answered heartbeat resets the
    /// backoff count. An unanswered one is published as a `timeout` attempt (the health
    /// model counts it without moving the status); `poor_after` without an answer
    /// degrades, `stale_after` ends the session with `error_kind = "stale"`.
    async fn drive(&mut self, session: Box<dyn crate::check::Session>) -> Option<Lost> {
        let (beat_tx, beat_rx) = mpsc::channel(1);
        let (report_tx, mut report_rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let io = SessionIo {
            beats: beat_rx,
            report: report_tx,
            shutdown: shutdown.clone(),
            timeout: self.lead.timing.timeout,
        };
        let mut task = tokio::spawn(session.run(io));
        let t = self.lead.timing.clone();
        let mut last_ok = Instant::now();
        let mut pending: Option<Instant> = None;
        let mut next_beat = Instant::now();
        let mut poor_reported = false;
        let mut answered = false;
        let far = || Instant::now() + Duration::from_secs(86_400 * 365);
        loop {
            let pending_deadline = pending.map(|p| p + t.timeout).unwrap_or_else(far);
            let poor_at = if poor_reported {
                far()
            } else {
                last_ok + t.heartbeat.poor_after
            };
            let stale_at = last_ok + t.heartbeat.stale_after;
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    shutdown.cancel();
                    drop(beat_tx);
                    let abort = task.abort_handle();
                    if timeout(Duration::from_secs(2), &mut task).await.is_err() {
                        abort.abort();
                    }
                    return None;
                }
                r = &mut task => {
                    let error = r.unwrap_or_else(|e| CheckError::new(ErrorKind::Internal, format!("session task failed: {e}")));
                    return Some(Lost { error, answered });
                }
                Some(o) = report_rx.recv() => {
                    pending = None;
                    if o.is_success() {
                        last_ok = Instant::now();
                        poor_reported = false;
                    }
                    self.publish(&o, Source::Heartbeat);
                    if o.is_success() && !answered {
                        answered = true;
                        self.failures = 0;
                        self.schedule_next(next_beat.saturating_duration_since(Instant::now()));
                    }
                }
                c = self.cmd.recv() => {
                    if let Some(Command::Force(reply)) = c {
                        self.forced.push(reply);
                        if pending.is_none() && beat_tx.try_send(()).is_ok() {
                            pending = Some(Instant::now());
                        }
                    }
                }
                _ = sleep_until(next_beat) => {
                    next_beat += t.interval;
                    if next_beat < Instant::now() {
                        next_beat = Instant::now() + t.interval;
                    }
                    if pending.is_none() && beat_tx.try_send(()).is_ok() {
                        pending = Some(Instant::now());
                    }
                    let age = last_ok.elapsed();
                    for m in &self.members {
                        m.entry.state.lock().heartbeat_age_ms = Some(age.as_millis() as u64);
                    }
                    // Until an answer, the backoff step (and its metric) stays as it is.
                    if answered {
                        self.schedule_next(next_beat.saturating_duration_since(Instant::now()));
                    }
                }
                _ = sleep_until(pending_deadline) => {
                    pending = None;
                    let o = Outcome::down(CheckError::timeout("heartbeat", t.timeout), t.timeout);
                    self.publish(&o, Source::Heartbeat);
                }
                _ = sleep_until(poor_at) => {
                    poor_reported = true;
                    let age = last_ok.elapsed();
                    for m in &self.members {
                        let mut s = m.entry.state.lock();
                        if let Some(ch) = s.heartbeat_age(age, t.heartbeat.poor_after) {
                            self.after_change(m, &s, ch);
                        }
                    }
                }
                _ = sleep_until(stale_at) => {
                    shutdown.cancel();
                    task.abort();
                    let error = CheckError::new(
                        ErrorKind::Stale,
                        format!("no heartbeat answer for {}", crate::time::fmt_duration(t.heartbeat.stale_after)),
                    );
                    return Some(Lost { error, answered });
                }
            }
        }
    }
}

/// The next event for a check with triggers; `None` after missed events (which name no
/// check, so they wake nothing).
async fn recv_trigger(
    rx: &mut Option<tokio::sync::broadcast::Receiver<Arc<Published>>>,
) -> Option<Arc<Published>> {
    match rx {
        Some(r) => match r.recv().await {
            Ok(e) => Some(e),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                *rx = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Shared, lockable list of running supervisors.
pub type Handles = Arc<Mutex<Vec<Handle>>>;

#[cfg(test)]
mod tests;
