//! The writer thread: the one connection that writes. It takes rows from the hot path
//! (through [`Msg`] and [`Inner::dirty`]), commits them in batches, keeps them in memory
//! and retries while the database is unwritable, and prunes rows older than
//! `history.retention` in small steps between batches.

// The writer is a dedicated OS thread with its own timed loop: std's clock and blocking
// waits are what it should use (clippy.toml bans them in async code).
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rusqlite::{Connection, Transaction, params};

use super::db::{
    self, HEARTBEAT_EVERY, SampleRow, StateRow, TransitionRow, find_check, is_corrupt,
    move_corrupt_aside,
};
use super::{DB_FILE, StoreError};
use crate::metrics::Metrics;
use crate::time::{from_unix_ms, unix_ms};

/// Commit at least this often while rows are pending.
const BATCH_EVERY: Duration = Duration::from_millis(1000);
/// Commit once this many rows are pending.
const BATCH_MAX: usize = 50_000;
/// How long the writer lets rows gather after taking some (see [`Writer::run`]).
const GATHER: Duration = Duration::from_millis(20);
/// Write the latest check states this often.
const STATE_EVERY: Duration = Duration::from_secs(1);
/// Prune this often.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// First prune this long after start.
const PRUNE_FIRST: Duration = Duration::from_secs(30);
/// Longest prune step between batches.
const PRUNE_STEP: Duration = Duration::from_millis(20);
/// Rows deleted per statement while pruning.
const PRUNE_CHUNK: usize = 2_000;
/// `store` label of the history store in `lifeline_storage_*`.
const STORE: &str = "history";
/// What the history store does while it can write.
const MODE_OK: &str = "writing";
/// What it does while it cannot.
const MODE_FAILING: &str = "rows kept in memory and retried";

/// Rows kept in memory while the database is unavailable; older ones are dropped.
const PENDING_MAX: usize = 200_000;

/// A message to the writer.
pub(crate) enum Msg {
    /// A row for `samples` (goes in the next batch).
    Sample(SampleRow),
    /// A row for `transitions` (goes in the next batch, with the latest states).
    Transition(TransitionRow),
    /// A past run of the agent for `agent_runs`, ms.
    Run { started: i64, ended: i64 },
    /// Commit now and answer.
    Flush(SyncSender<Result<(), StoreError>>),
    /// Commit, prune everything older than `now - retention` (ms) and answer how many
    /// rows went.
    Prune {
        now: i64,
        reply: SyncSender<Result<u64, StoreError>>,
    },
}

/// What the hot path and the writer thread share.
pub(crate) struct Inner {
    /// `data_dir`.
    pub(crate) dir: PathBuf,
    pub(crate) metrics: Arc<Metrics>,
    /// Latest state of each check since the writer last took them.
    pub(crate) dirty: Mutex<HashMap<String, StateRow>>,
    /// Messages in the channel.
    pub(crate) queued: AtomicI64,
    /// Whether the writer has an open database.
    pub(crate) available: AtomicBool,
    /// When the agent (this store) started, ms.
    pub(crate) started_ms: i64,
    /// `history.retention`.
    pub(crate) retention: Duration,
}

impl Inner {
    /// Counts a row the store had to drop (full queue or full memory).
    pub(crate) fn dropped(&self) {
        self.metrics
            .events_dropped
            .with_label_values(&["store"])
            .inc();
    }
}

/// Appends `row`, first dropping the oldest row if `q` holds [`PENDING_MAX`]; true if
/// one was dropped.
fn push_capped<T>(q: &mut VecDeque<T>, row: T) -> bool {
    let full = q.len() >= PENDING_MAX;
    if full {
        q.pop_front();
    }
    q.push_back(row);
    full
}

/// The error of a write while the database is not open.
fn not_open() -> StoreError {
    StoreError::Unavailable("database not open".into())
}

/// A prune in progress: checks are visited one at a time, in chunks.
struct PruneJob {
    cutoff: i64,
    ids: Vec<i64>,
    next: usize,
    removed: u64,
}

/// The writer thread.
pub(crate) struct Writer {
    inner: Arc<Inner>,
    rx: Receiver<Msg>,
    conn: Option<Connection>,
    ids: HashMap<Box<str>, i64>,
    samples: VecDeque<SampleRow>,
    transitions: VecDeque<TransitionRow>,
    runs: Vec<(i64, i64)>,
    states: HashMap<String, StateRow>,
    first_pending: Option<Instant>,
    run_id: Option<i64>,
    last_state: Instant,
    last_heartbeat: Instant,
    retry_at: Instant,
    retry_delay: Duration,
    failing_since: Option<Instant>,
    last_error_log: Option<Instant>,
    next_prune: Instant,
    prune: Option<PruneJob>,
}

impl Writer {
    pub(crate) fn new(inner: Arc<Inner>, rx: Receiver<Msg>, conn: Option<Connection>) -> Self {
        let now = Instant::now();
        let failing = conn.is_none();
        inner.available.store(!failing, Ordering::Relaxed);
        if !failing {
            inner.metrics.storage_ok(STORE, MODE_OK);
        }
        Self {
            inner,
            rx,
            conn,
            ids: HashMap::new(),
            samples: VecDeque::new(),
            transitions: VecDeque::new(),
            runs: Vec::new(),
            states: HashMap::new(),
            first_pending: None,
            run_id: None,
            last_state: now,
            last_heartbeat: now - HEARTBEAT_EVERY,
            retry_at: now + Duration::from_secs(1),
            retry_delay: Duration::from_secs(2),
            failing_since: failing.then_some(now),
            last_error_log: failing.then_some(now),
            next_prune: now + PRUNE_FIRST,
            prune: None,
        }
    }

    fn pending(&self) -> usize {
        self.samples.len() + self.transitions.len() + self.runs.len()
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut at = self.last_heartbeat + HEARTBEAT_EVERY;
        at = at.min(self.last_state + STATE_EVERY);
        if let Some(first) = self.first_pending {
            at = at.min(first + BATCH_EVERY);
        }
        if self.conn.is_none() {
            at = at.min(self.retry_at);
        } else if self.prune.is_some() {
            at = now;
        } else {
            at = at.min(self.next_prune);
        }
        at.max(now)
    }

    /// Runs until every sender is gone, then commits and marks the run stopped.
    pub(crate) fn run(mut self) {
        loop {
            let wait = self.next_wake().saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(m) => {
                    let mut asked = matches!(m, Msg::Flush(_) | Msg::Prune { .. });
                    self.take(m);
                    while self.pending() < BATCH_MAX {
                        match self.rx.try_recv() {
                            Ok(m) => {
                                asked |= matches!(m, Msg::Flush(_) | Msg::Prune { .. });
                                self.take(m);
                            }
                            Err(_) => break,
                        }
                    }
                    if !asked {
                        // Let rows gather instead of waking for each one: while this
                        // thread is not parked on the channel, a sender's `try_send`
                        // costs no wake-up (at 10,000 samples/s the wake-ups were
                        // most of the store's CPU). Rows are committed once a second
                        // anyway (`BATCH_EVERY`); a flush asked for is never delayed.
                        std::thread::sleep(GATHER);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.tick();
        }
        let _ = self.flush(true);
        self.stop_run();
    }

    fn take(&mut self, m: Msg) {
        self.inner.queued.fetch_sub(1, Ordering::Relaxed);
        if !matches!(m, Msg::Flush(_) | Msg::Prune { .. }) && self.first_pending.is_none() {
            self.first_pending = Some(Instant::now());
        }
        match m {
            Msg::Sample(s) => {
                if push_capped(&mut self.samples, s) {
                    self.inner.dropped();
                }
            }
            Msg::Transition(t) => {
                if push_capped(&mut self.transitions, t) {
                    self.inner.dropped();
                }
            }
            Msg::Run { started, ended } => self.runs.push((started, ended)),
            Msg::Flush(reply) => {
                let _ = reply.send(self.flush(true));
            }
            Msg::Prune { now, reply } => {
                let r = self.flush(true).and_then(|()| self.prune_all(now));
                let _ = reply.send(r);
            }
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let due = self.pending() >= BATCH_MAX
            || self.first_pending.is_some_and(|f| now >= f + BATCH_EVERY)
            || now >= self.last_state + STATE_EVERY
            || now >= self.last_heartbeat + HEARTBEAT_EVERY;
        if due {
            let _ = self.flush(false);
        }
        self.inner
            .metrics
            .store_queue_depth
            .set(self.inner.queued.load(Ordering::Relaxed).max(0) + self.pending() as i64);
        if self.conn.is_some() {
            if self.prune.is_none() && now >= self.next_prune {
                self.next_prune = now + PRUNE_EVERY;
                let cutoff = unix_ms(SystemTime::now()) - self.retention_ms();
                match self.start_prune(cutoff) {
                    Ok(job) => self.prune = Some(job),
                    Err(e) => self.fail(e),
                }
            }
            if let Some(mut job) = self.prune.take() {
                match self.prune_step(&mut job, Some(PRUNE_STEP)) {
                    Ok(true) => self.finish_prune(&job),
                    Ok(false) => self.prune = Some(job),
                    Err(e) => self.fail(e),
                }
            }
        }
    }

    fn retention_ms(&self) -> i64 {
        i64::try_from(self.inner.retention.as_millis()).unwrap_or(i64::MAX)
    }

    /// Opens the database if it is closed and a retry is due (or `force`).
    fn ensure_open(&mut self, force: bool) -> Result<(), StoreError> {
        if self.conn.is_some() {
            return Ok(());
        }
        if !force && Instant::now() < self.retry_at {
            return Err(not_open());
        }
        match db::open_rw(&self.inner.dir, &self.inner.metrics) {
            Ok(c) => {
                self.conn = Some(c);
                self.ids.clear();
                Ok(())
            }
            Err(e) => {
                self.fail_open(&e);
                Err(e)
            }
        }
    }

    fn fail_open(&mut self, e: &StoreError) {
        self.inner.metrics.store_errors.inc();
        self.inner
            .metrics
            .storage_failed(STORE, &e.to_string(), MODE_FAILING);
        self.inner.available.store(false, Ordering::Relaxed);
        self.schedule_retry();
        self.log_error(e);
    }

    fn schedule_retry(&mut self) {
        self.retry_at = Instant::now() + self.retry_delay;
        self.retry_delay = (self.retry_delay * 2).min(Duration::from_secs(60));
        self.failing_since.get_or_insert_with(Instant::now);
    }

    /// Logs at error level on the first failure and then at most once a minute.
    fn log_error(&mut self, e: &StoreError) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_error_log = Some(now);
            tracing::error!(
                data_dir = %self.inner.dir.display(),
                error = %e,
                pending_rows = self.pending(),
                "history store error; rows are kept in memory (up to {PENDING_MAX}) and the write is retried"
            );
        } else {
            tracing::debug!(error = %e, "history store error");
        }
    }

    /// A write failed: count it, close the connection, move a corrupt file aside.
    fn fail(&mut self, e: StoreError) {
        self.inner.metrics.store_errors.inc();
        self.inner
            .metrics
            .storage_failed(STORE, &e.to_string(), MODE_FAILING);
        self.inner.available.store(false, Ordering::Relaxed);
        self.ids.clear();
        self.prune = None;
        let corrupt = is_corrupt(&e);
        self.conn = None;
        if corrupt {
            let path = self.inner.dir.join(DB_FILE);
            match move_corrupt_aside(&path, &e) {
                Ok(()) => {
                    self.run_id = None;
                    self.retry_at = Instant::now();
                    return;
                }
                Err(me) => self.log_error(&me),
            }
        }
        self.schedule_retry();
        self.log_error(&e);
    }

    /// [`Self::fail`], and the error to answer a [`Msg::Flush`] or [`Msg::Prune`] with.
    fn fail_unavailable(&mut self, e: StoreError) -> StoreError {
        let msg = e.to_string();
        self.fail(e);
        StoreError::Unavailable(msg)
    }

    /// Commits pending rows, the latest states (when due or `force`), and the heartbeat.
    fn flush(&mut self, force: bool) -> Result<(), StoreError> {
        let now = Instant::now();
        // States go with every transition, so a restart restores the status of the last
        // committed change.
        let states_due =
            force || now >= self.last_state + STATE_EVERY || !self.transitions.is_empty();
        if states_due {
            let taken = std::mem::take(&mut *self.inner.dirty.lock());
            if self.states.is_empty() {
                self.states = taken;
            } else {
                self.states.extend(taken);
            }
            self.last_state = now;
        }
        self.ensure_open(force)?;
        let started = Instant::now();
        let rows = self.pending() + self.states.len();
        let result = self.write_batch();
        match result {
            Ok(()) => {
                let m = &self.inner.metrics;
                m.store_write_seconds
                    .observe(started.elapsed().as_secs_f64());
                if rows > 0 {
                    m.store_batch_size.observe(rows as f64);
                }
                self.samples.clear();
                self.transitions.clear();
                self.runs.clear();
                // Dropped, not cleared: the map of a start (every check at once) would
                // otherwise keep its room for good.
                self.states = HashMap::new();
                self.first_pending = None;
                self.last_heartbeat = now;
                self.inner.available.store(true, Ordering::Relaxed);
                self.inner.metrics.storage_ok(STORE, MODE_OK);
                self.retry_delay = Duration::from_secs(2);
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        after_s = since.elapsed().as_secs(),
                        "history store is writable again"
                    );
                    self.last_error_log = None;
                }
                Ok(())
            }
            Err(e) => Err(self.fail_unavailable(e)),
        }
    }

    fn write_batch(&mut self) -> Result<(), StoreError> {
        let now_ms = unix_ms(SystemTime::now());
        let started_ms = self.inner.started_ms;
        let Some(conn) = self.conn.as_mut() else {
            return Err(not_open());
        };
        let tx = conn.transaction()?;
        let run_id = match self.run_id {
            Some(id) => {
                tx.prepare_cached("UPDATE agent_runs SET last_seen = ?1 WHERE id = ?2")?
                    .execute(params![now_ms, id])?;
                id
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO agent_runs (started_at, last_seen) VALUES (?1, ?2)",
                )?
                .execute(params![started_ms, now_ms])?;
                tx.last_insert_rowid()
            }
        };
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO samples (check_id, at, status, latency_us) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for s in &self.samples {
                let id = check_id(&tx, &mut self.ids, &s.check)?;
                st.execute(params![id, s.at, s.status, s.latency_us])?;
            }
        }
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO transitions (check_id, at, status, previous_status, error_kind, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for t in &self.transitions {
                let id = check_id(&tx, &mut self.ids, &t.check)?;
                st.execute(params![
                    id,
                    t.at,
                    t.status.as_str(),
                    t.previous.as_str(),
                    t.error_kind,
                    t.message
                ])?;
            }
        }
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO check_state (check_id, status, score, consecutive_failures,
                     last_success_at, since, error_kind, message, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (check_id) DO UPDATE SET status = excluded.status,
                     score = excluded.score, consecutive_failures = excluded.consecutive_failures,
                     last_success_at = excluded.last_success_at, since = excluded.since,
                     error_kind = excluded.error_kind, message = excluded.message,
                     updated_at = excluded.updated_at",
            )?;
            for (name, s) in &self.states {
                let id = check_id(&tx, &mut self.ids, name)?;
                st.execute(params![
                    id,
                    s.status.as_str(),
                    s.score,
                    s.consecutive_failures,
                    s.last_success_at,
                    s.since,
                    s.error_kind,
                    s.message,
                    s.updated_at
                ])?;
            }
        }
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO agent_runs (started_at, last_seen, stopped_at) VALUES (?1, ?2, ?2)",
            )?;
            for (a, b) in &self.runs {
                st.execute(params![a, b])?;
            }
        }
        tx.commit()?;
        self.run_id = Some(run_id);
        Ok(())
    }

    fn stop_run(&mut self) {
        let (Some(conn), Some(id)) = (self.conn.as_ref(), self.run_id) else {
            return;
        };
        let now = unix_ms(SystemTime::now());
        if let Err(e) = conn.execute(
            "UPDATE agent_runs SET last_seen = ?1, stopped_at = ?1 WHERE id = ?2",
            params![now, id],
        ) {
            self.inner.metrics.store_errors.inc();
            tracing::error!(error = %e, "cannot record the agent stop in the history store");
        }
    }

    fn start_prune(&mut self, cutoff: i64) -> Result<PruneJob, StoreError> {
        let conn = self.conn.as_ref().ok_or_else(not_open)?;
        let mut st = conn.prepare("SELECT id FROM checks ORDER BY id")?;
        let ids = st
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PruneJob {
            cutoff,
            ids,
            next: 0,
            removed: 0,
        })
    }

    /// Prunes for at most `budget` (all of it with `None`); true when the job is done.
    fn prune_step(
        &mut self,
        job: &mut PruneJob,
        budget: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let started = Instant::now();
        let run_id = self.run_id.unwrap_or(-1);
        let Some(conn) = self.conn.as_mut() else {
            return Err(not_open());
        };
        let tx = conn.transaction()?;
        let mut removed = 0u64;
        while job.next < job.ids.len() {
            if budget.is_some_and(|b| started.elapsed() >= b) {
                break;
            }
            let id = job.ids[job.next];
            let s = tx
                .prepare_cached(
                    "DELETE FROM samples WHERE rowid IN
                       (SELECT rowid FROM samples WHERE check_id = ?1 AND at < ?2 LIMIT ?3)",
                )?
                .execute(params![id, job.cutoff, PRUNE_CHUNK as i64])?;
            // The newest transition of a check stays: it is the status at the start of
            // any later window.
            let t = tx
                .prepare_cached(
                    "DELETE FROM transitions WHERE rowid IN
                       (SELECT rowid FROM transitions WHERE check_id = ?1 AND at < ?2
                          AND rowid <> (SELECT rowid FROM transitions WHERE check_id = ?1
                                        ORDER BY at DESC, rowid DESC LIMIT 1)
                        LIMIT ?3)",
                )?
                .execute(params![id, job.cutoff, PRUNE_CHUNK as i64])?;
            removed += (s + t) as u64;
            if s < PRUNE_CHUNK && t < PRUNE_CHUNK {
                job.next += 1;
            }
        }
        let done = job.next >= job.ids.len();
        if done {
            removed += tx
                .prepare_cached(
                    "DELETE FROM agent_runs WHERE COALESCE(stopped_at, last_seen) < ?1 AND id <> ?2",
                )?
                .execute(params![job.cutoff, run_id])? as u64;
        }
        tx.commit()?;
        job.removed += removed;
        self.inner.metrics.store_rows_pruned.inc_by(removed);
        Ok(done)
    }

    fn finish_prune(&mut self, job: &PruneJob) {
        if job.removed > 0 {
            tracing::info!(
                rows = job.removed,
                before = %crate::time::rfc3339(from_unix_ms(job.cutoff)),
                "history pruned"
            );
        }
    }

    fn prune_all(&mut self, now: i64) -> Result<u64, StoreError> {
        self.prune = None;
        let mut job = self.start_prune(now - self.retention_ms())?;
        loop {
            match self.prune_step(&mut job, None) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(self.fail_unavailable(e)),
            }
        }
        self.finish_prune(&job);
        Ok(job.removed)
    }
}

fn check_id(
    tx: &Transaction<'_>,
    ids: &mut HashMap<Box<str>, i64>,
    name: &str,
) -> Result<i64, StoreError> {
    if let Some(id) = ids.get(name) {
        return Ok(*id);
    }
    tx.prepare_cached("INSERT INTO checks (name) VALUES (?1) ON CONFLICT (name) DO NOTHING")?
        .execute([name])?;
    let id = find_check(tx, name)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    ids.insert(name.into(), id);
    Ok(id)
}
