//! SQLite side of the store: opening (with migrations and corrupt-file handling), the
//! writer thread, and read-only queries.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, params};

use super::{DB_FILE, History, Inner, Sample, StoreError, Transition, Uptime, status_of_code};
use crate::check::ErrorKind;
use crate::health::{Restored, Status};
use crate::time::{from_unix_ms, unix_ms};

/// Migrations, in order; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[include_str!("schema.sql")];

/// Commit at least this often while rows are pending.
const BATCH_EVERY: Duration = Duration::from_millis(1000);
/// Commit once this many rows are pending.
const BATCH_MAX: usize = 50_000;
/// Write the latest check states this often.
const STATE_EVERY: Duration = Duration::from_secs(1);
/// Update this run's `last_seen` at least this often.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// Prune this often.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// First prune this long after start.
const PRUNE_FIRST: Duration = Duration::from_secs(30);
/// Longest prune step between batches.
const PRUNE_STEP: Duration = Duration::from_millis(20);
/// Rows deleted per statement while pruning.
const PRUNE_CHUNK: usize = 2_000;
/// Rows kept in memory while the database is unavailable; older ones are dropped.
const PENDING_MAX: usize = 200_000;
/// How long connections wait for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A message to the writer.
pub(crate) enum Msg {
    Sample(SampleRow),
    Transition(TransitionRow),
    Run {
        started: i64,
        ended: i64,
    },
    Flush(SyncSender<Result<(), StoreError>>),
    Prune {
        now: i64,
        reply: SyncSender<Result<u64, StoreError>>,
    },
}

pub(crate) struct SampleRow {
    pub(crate) check: Box<str>,
    pub(crate) at: i64,
    pub(crate) status: u8,
    pub(crate) latency_us: Option<i64>,
}

pub(crate) struct TransitionRow {
    pub(crate) check: Box<str>,
    pub(crate) at: i64,
    pub(crate) status: Status,
    pub(crate) previous: Status,
    pub(crate) error_kind: Option<&'static str>,
    pub(crate) message: String,
}

/// The latest state of one check.
pub(crate) struct StateRow {
    pub(crate) status: Status,
    pub(crate) score: Option<u8>,
    pub(crate) consecutive_failures: u32,
    pub(crate) last_success_at: Option<i64>,
    pub(crate) since: Option<i64>,
    pub(crate) error_kind: Option<&'static str>,
    pub(crate) message: String,
    pub(crate) updated_at: i64,
}

fn is_corrupt(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens the database for writing: creates `dir`, moves a corrupt file aside, sets WAL
/// and runs migrations.
pub(crate) fn open_rw(dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(DB_FILE);
    match try_open_rw(&path) {
        Err(e) if is_corrupt(&e) => {
            let moved = move_aside(&path)?;
            tracing::error!(
                path = %path.display(),
                moved_to = %moved.display(),
                error = %e,
                "history database is corrupt: moved it aside and started a new one"
            );
            try_open_rw(&path)
        }
        r => r,
    }
}

fn try_open_rw(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Small pages: with thousands of checks every commit dirties one index page per
    // check, so the page size is the write amplification (applies to new files).
    conn.pragma_update(None, "page_size", 1024)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "history database is not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -16_384)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // Checkpoint every ~20 MB of WAL instead of ~1 MB: one checkpoint then writes back a
    // page changed by several commits once.
    conn.pragma_update(None, "wal_autocheckpoint", 20_000)?;
    migrate(&mut conn)?;
    // Reading a table proves the file is a database all the way through its schema.
    conn.query_row("SELECT count(*) FROM agent_runs", [], |r| {
        r.get::<_, i64>(0)
    })?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as u32;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as u32 + 1)?;
        tracing::info!(version = i + 1, "history database schema migrated");
    }
    tx.commit()?;
    Ok(())
}

/// Renames `path` (and its `-wal`/`-shm`) to `<path>.corrupt-<unix seconds>`.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let ts = unix_ms(SystemTime::now()) / 1000;
    let mut to = PathBuf::from(format!("{}.corrupt-{ts}", path.display()));
    let mut n = 1;
    while to.exists() {
        to = PathBuf::from(format!("{}.corrupt-{ts}-{n}", path.display()));
        n += 1;
    }
    std::fs::rename(path, &to).map_err(io(path))?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", path.display()));
        if side.exists() {
            let side_to = PathBuf::from(format!("{}{suffix}", to.display()));
            if let Err(e) = std::fs::rename(&side, &side_to) {
                tracing::warn!(path = %side.display(), error = %e, "cannot move aside");
            }
        }
    }
    Ok(to)
}

/// Every check's last known state.
pub(crate) fn load_states(conn: &Connection) -> Result<Vec<Restored>, StoreError> {
    let mut st = conn.prepare(
        "SELECT c.name, s.status, s.consecutive_failures, s.last_success_at, s.since,
                s.error_kind, s.message
         FROM check_state s JOIN checks c ON c.id = s.check_id",
    )?;
    let rows = st.query_map([], |r| {
        Ok(Restored {
            name: r.get(0)?,
            status: Status::parse(&r.get::<_, String>(1)?).unwrap_or(Status::Unknown),
            consecutive_failures: r.get(2)?,
            last_success_at: r.get::<_, Option<i64>>(3)?.map(from_unix_ms),
            since: r.get::<_, Option<i64>>(4)?.map(from_unix_ms),
            error_kind: r
                .get::<_, Option<String>>(5)?
                .as_deref()
                .and_then(ErrorKind::parse),
            message: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
                    self.take(m);
                    while self.pending() < BATCH_MAX {
                        match self.rx.try_recv() {
                            Ok(m) => self.take(m),
                            Err(_) => break,
                        }
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
                if self.samples.len() >= PENDING_MAX {
                    self.samples.pop_front();
                    self.dropped();
                }
                self.samples.push_back(s);
            }
            Msg::Transition(t) => {
                if self.transitions.len() >= PENDING_MAX {
                    self.transitions.pop_front();
                    self.dropped();
                }
                self.transitions.push_back(t);
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

    fn dropped(&self) {
        self.inner
            .metrics
            .events_dropped
            .with_label_values(&["store"])
            .inc();
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
            return Err(StoreError::Unavailable("database not open".into()));
        }
        match open_rw(&self.inner.dir) {
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
        self.inner.available.store(false, Ordering::Relaxed);
        self.ids.clear();
        self.prune = None;
        let corrupt = is_corrupt(&e);
        self.conn = None;
        if corrupt {
            let path = self.inner.dir.join(DB_FILE);
            match move_aside(&path) {
                Ok(moved) => {
                    tracing::error!(
                        path = %path.display(),
                        moved_to = %moved.display(),
                        error = %e,
                        "history database is corrupt: moved it aside and started a new one"
                    );
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

    /// Commits pending rows, the latest states (when due or `force`), and the heartbeat.
    fn flush(&mut self, force: bool) -> Result<(), StoreError> {
        let now = Instant::now();
        // States go with every transition, so a restart restores the status of the last
        // committed change.
        let states_due =
            force || now >= self.last_state + STATE_EVERY || !self.transitions.is_empty();
        if states_due {
            let taken = std::mem::take(&mut *self.inner.dirty.lock());
            self.states.extend(taken);
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
                self.states.clear();
                self.first_pending = None;
                self.last_heartbeat = now;
                self.inner.available.store(true, Ordering::Relaxed);
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
            Err(e) => {
                let msg = e.to_string();
                self.fail(e);
                Err(StoreError::Unavailable(msg))
            }
        }
    }

    fn write_batch(&mut self) -> Result<(), StoreError> {
        let now_ms = unix_ms(SystemTime::now());
        let started_ms = self.inner.started_ms;
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Unavailable("database not open".into()));
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
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("database not open".into()))?;
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
            return Err(StoreError::Unavailable("database not open".into()));
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
                Err(e) => {
                    let msg = e.to_string();
                    self.fail(e);
                    return Err(StoreError::Unavailable(msg));
                }
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
    let id: i64 = tx
        .prepare_cached("SELECT id FROM checks WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?;
    ids.insert(name.into(), id);
    Ok(id)
}

/// A read-only connection for the API and the CLI (works while the agent writes).
pub struct Reader {
    conn: Connection,
}

impl Reader {
    /// Opens `<data_dir>/lifeline.db` read-only.
    pub fn open(data_dir: &Path) -> Result<Reader, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::Unavailable(format!(
                "no history database at {}",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let v: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if v == 0 {
            return Err(StoreError::Unavailable(format!(
                "{} has no history tables yet",
                path.display()
            )));
        }
        if v > MIGRATIONS.len() as u32 {
            return Err(StoreError::NewerSchema {
                found: v,
                known: MIGRATIONS.len() as u32,
            });
        }
        Ok(Reader { conn })
    }

    fn id(&self, check: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM checks WHERE name = ?1")?
            .query_row([check], |r| r.get(0))
            .optional()?)
    }

    /// Whether anything was ever recorded for `check`.
    pub fn knows(&self, check: &str) -> Result<bool, StoreError> {
        Ok(self.id(check)?.is_some())
    }

    /// Names of every check with history.
    pub fn checks(&self) -> Result<Vec<String>, StoreError> {
        let mut st = self.conn.prepare("SELECT name FROM checks ORDER BY name")?;
        let v = st
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(v)
    }

    /// Transitions and samples of `check` with `since <= at < until`, newest first, at
    /// most `limit` of each. `None` if nothing was ever recorded for `check`.
    pub fn history(
        &self,
        check: &str,
        since: SystemTime,
        until: SystemTime,
        limit: usize,
    ) -> Result<Option<History>, StoreError> {
        let Some(id) = self.id(check)? else {
            return Ok(None);
        };
        let (a, b, n) = (unix_ms(since), unix_ms(until), limit as i64);
        let mut st = self.conn.prepare_cached(
            "SELECT at, status, previous_status, error_kind, message FROM transitions
             WHERE check_id = ?1 AND at >= ?2 AND at < ?3
             ORDER BY at DESC, rowid DESC LIMIT ?4",
        )?;
        let transitions = st
            .query_map(params![id, a, b, n], |r| {
                Ok(Transition {
                    at: from_unix_ms(r.get(0)?),
                    status: Status::parse(&r.get::<_, String>(1)?).unwrap_or(Status::Unknown),
                    previous_status: Status::parse(&r.get::<_, String>(2)?)
                        .unwrap_or(Status::Unknown),
                    error_kind: r.get(3)?,
                    message: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = self.conn.prepare_cached(
            "SELECT at, status, latency_us FROM samples
             WHERE check_id = ?1 AND at >= ?2 AND at < ?3
             ORDER BY at DESC, rowid DESC LIMIT ?4",
        )?;
        let samples = st
            .query_map(params![id, a, b, n], |r| {
                Ok(Sample {
                    at: from_unix_ms(r.get(0)?),
                    status: status_of_code(r.get(1)?),
                    latency_ms: r.get::<_, Option<i64>>(2)?.map(|us| us as f64 / 1000.0),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(History {
            check: check.to_string(),
            transitions,
            samples,
        }))
    }

    /// Intervals (ms) the agent ran within `[a, b)`, merged. A run without a clean stop
    /// ends at its last heartbeat, unless that heartbeat is recent (the run is live).
    fn runs(&self, a: i64, b: i64, now: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        let live_after = now - 3 * HEARTBEAT_EVERY.as_millis() as i64;
        let mut st = self.conn.prepare_cached(
            "SELECT started_at, last_seen, stopped_at FROM agent_runs
             WHERE started_at < ?2 AND COALESCE(stopped_at, ?3) >= ?1
             ORDER BY started_at",
        )?;
        let rows = st
            .query_map(params![a, b, i64::MAX], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out: Vec<(i64, i64)> = Vec::new();
        for (start, seen, stopped) in rows {
            let end = match stopped {
                Some(s) => s,
                None if seen >= live_after => now.max(seen),
                None => seen,
            };
            let (s, e) = (start.max(a), end.min(b));
            if e <= s {
                continue;
            }
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        Ok(out)
    }

    /// Uptime of `check` over `[since, until)`, as of `now` (which decides whether a run
    /// without a clean stop is still live). `None` if nothing was recorded for `check`.
    pub fn uptime(
        &self,
        check: &str,
        since: SystemTime,
        until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Uptime>, StoreError> {
        let Some(id) = self.id(check)? else {
            return Ok(None);
        };
        let (a, b) = (unix_ms(since), unix_ms(until).max(unix_ms(since)));
        let runs = self.runs(a, b, unix_ms(now))?;
        let running: i64 = runs.iter().map(|(s, e)| e - s).sum();
        let before: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT status FROM transitions WHERE check_id = ?1 AND at <= ?2
                 ORDER BY at DESC, rowid DESC LIMIT 1",
            )?
            .query_row(params![id, a], |r| r.get(0))
            .optional()?;
        let mut st = self.conn.prepare_cached(
            "SELECT at, status FROM transitions WHERE check_id = ?1 AND at > ?2 AND at < ?3
             ORDER BY at, rowid",
        )?;
        let changes = st
            .query_map(params![id, a, b], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut status = before
            .as_deref()
            .and_then(Status::parse)
            .unwrap_or(Status::Unknown);
        let mut from = a;
        let (mut up, mut down, mut unknown) = (0i64, 0i64, 0i64);
        let mut account = |s: Status, x: i64, y: i64| {
            let t: i64 = runs
                .iter()
                .map(|(rs, re)| (y.min(*re) - x.max(*rs)).max(0))
                .sum();
            match s {
                Status::Healthy | Status::Degraded => up += t,
                Status::Unknown => unknown += t,
                _ => down += t,
            }
        };
        for (at, s) in changes {
            account(status, from, at);
            status = Status::parse(&s).unwrap_or(Status::Unknown);
            from = at;
        }
        account(status, from, b);
        let samples: u64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM samples WHERE check_id = ?1 AND at >= ?2 AND at < ?3",
            )?
            .query_row(params![id, a, b], |r| r.get::<_, i64>(0))?
            .max(0) as u64;
        let known = up + down;
        Ok(Some(Uptime {
            since: from_unix_ms(a),
            until: from_unix_ms(b),
            uptime_ratio: (known > 0).then(|| up as f64 / known as f64),
            samples,
            agent_down_seconds: (b - a - running) as f64 / 1000.0,
            up_seconds: up as f64 / 1000.0,
            down_seconds: down as f64 / 1000.0,
            unknown_seconds: unknown as f64 / 1000.0,
        }))
    }
}
