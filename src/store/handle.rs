//! The [`Store`] handle the agent holds: it starts the writer thread, hands it rows from
//! the hot path without ever blocking, and asks it to flush, prune or stop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{Sender, SyncSender};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::time::Instant;

use super::db::{self, SampleRow, StateRow, TransitionRow, status_code};
use super::reader::{Reader, load_states};
use super::writer::{Inner, Msg, Writer};
use super::{DB_FILE, StoreError};
use crate::check::{ErrorKind, Outcome};
use crate::config::HistoryConfig;
use crate::events::Observer;
use crate::health::{Change, CheckState, Restored, Status};
use crate::metrics::Metrics;
use crate::time::unix_ms;

/// Capacity of the queue between the hot path and the writer thread: 2.6 s of rows at
/// 100,000 samples/s, so a slow commit (up to 1 s seen on this VM's disk) is absorbed.
/// The queue is a linked list of small blocks, bounded by the `queued` count: memory is
/// used while rows wait, not reserved up front (a 65,536-slot bounded channel held
/// 5 MiB for good).
const QUEUE: i64 = 262_144;

/// The history store: an [`Observer`] that records, plus query helpers.
pub struct Store {
    inner: Arc<Inner>,
    tx: Mutex<Option<Sender<Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    restored: Mutex<Vec<Restored>>,
    sample_every: Duration,
    last_sample: Mutex<HashMap<String, Instant>>,
}

impl Store {
    /// Opens (creating it if needed) `<data_dir>/lifeline.db` and starts the writer
    /// thread. A database that cannot be opened now is not an error: it is logged and
    /// counted, and the writer keeps retrying while the agent runs. Errors only if the
    /// writer thread cannot start. Blocks on SQLite (migrations, reading the last
    /// states): async code calls it through `tokio::task::spawn_blocking`.
    pub fn open(
        data_dir: &Path,
        history: &HistoryConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Store>, StoreError> {
        let inner = Arc::new(Inner {
            dir: data_dir.to_path_buf(),
            metrics,
            dirty: Mutex::new(HashMap::new()),
            queued: AtomicI64::new(0),
            available: AtomicBool::new(false),
            started_ms: unix_ms(SystemTime::now()),
            retention: history.retention,
        });
        let (conn, restored) = match db::open_rw(data_dir, &inner.metrics) {
            Ok(conn) => match load_states(&conn) {
                Ok(states) => (Some(conn), states),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the last known states from the history store");
                    inner.metrics.store_errors.inc();
                    (Some(conn), Vec::new())
                }
            },
            Err(e) => {
                tracing::error!(
                    data_dir = %data_dir.display(),
                    error = %e,
                    "cannot open the history store; checks keep running and the store is retried"
                );
                inner.metrics.store_errors.inc();
                inner.metrics.storage_failed(
                    "history",
                    &e.to_string(),
                    "rows kept in memory and retried",
                );
                (None, Vec::new())
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = Writer::new(inner.clone(), rx, conn);
        let thread = std::thread::Builder::new()
            .name("lifeline-store".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Io {
                path: data_dir.to_path_buf(),
                source: e,
            })?;
        Ok(Arc::new(Store {
            inner,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            restored: Mutex::new(restored),
            sample_every: history.sample_every,
            last_sample: Mutex::new(HashMap::new()),
        }))
    }

    /// The database file.
    pub fn path(&self) -> PathBuf {
        self.inner.dir.join(DB_FILE)
    }

    /// Whether the writer has the database open right now.
    pub fn available(&self) -> bool {
        self.inner.available.load(Ordering::Relaxed)
    }

    /// The last known states read at open (once; later calls return nothing). Pass them
    /// to [`crate::app::Agent::restore`] before the first `apply`.
    pub fn take_restored(&self) -> Vec<Restored> {
        std::mem::take(&mut *self.restored.lock())
    }

    fn send(&self, m: Msg) -> bool {
        let g = self.tx.lock();
        let Some(tx) = g.as_ref() else {
            return false;
        };
        if self.inner.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE {
            self.inner.queued.fetch_sub(1, Ordering::Relaxed);
            self.inner.dropped();
            return false;
        }
        match tx.send(m) {
            Ok(()) => true,
            Err(_) => {
                self.inner.queued.fetch_sub(1, Ordering::Relaxed);
                self.inner.dropped();
                false
            }
        }
    }

    /// Queues a latency sample (never blocks; false if the queue was full).
    pub fn record_sample(
        &self,
        check: &str,
        at: SystemTime,
        status: Status,
        latency: Option<Duration>,
    ) -> bool {
        self.send(Msg::Sample(SampleRow {
            check: check.into(),
            at: unix_ms(at),
            status: status_code(status),
            latency_us: latency.map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        }))
    }

    /// Queues a status transition (never blocks; false if the queue was full).
    pub fn record_transition(
        &self,
        check: &str,
        at: SystemTime,
        from: Status,
        to: Status,
        error_kind: Option<ErrorKind>,
        message: &str,
    ) -> bool {
        self.send(Msg::Transition(TransitionRow {
            check: check.into(),
            at: unix_ms(at),
            status: to,
            previous: from,
            error_kind: error_kind.map(ErrorKind::as_str),
            message: message.into(),
        }))
    }

    /// Records a past run of the agent (imports and tests; the running agent's own run is
    /// recorded by the store itself).
    pub fn record_run(&self, started: SystemTime, ended: SystemTime) -> bool {
        self.send(Msg::Run {
            started: unix_ms(started),
            ended: unix_ms(ended),
        })
    }

    fn ask<T>(
        &self,
        make: impl FnOnce(SyncSender<Result<T, StoreError>>) -> Msg,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let sender = self.tx.lock().clone();
        let Some(sender) = sender else {
            return Err(StoreError::Unavailable("store is shut down".into()));
        };
        self.inner.queued.fetch_add(1, Ordering::Relaxed);
        if sender.send(make(tx)).is_err() {
            self.inner.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Unavailable("writer thread stopped".into()));
        }
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable("writer did not answer".into())),
        }
    }

    /// Commits everything queued so far (and the latest states); blocks until done.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.ask(Msg::Flush)
    }

    /// Removes every row older than `now - history.retention` (all chunks, now) and
    /// returns how many went; blocks until done. The writer also prunes by itself, hourly.
    pub fn prune(&self, now: SystemTime) -> Result<u64, StoreError> {
        let now = unix_ms(now);
        self.ask(|reply| Msg::Prune { now, reply })
    }

    /// A new read-only connection.
    pub fn reader(&self) -> Result<Reader, StoreError> {
        Reader::open(&self.inner.dir)
    }

    /// Commits what is queued, marks this run as cleanly stopped and ends the writer
    /// thread (waits for it). Recording after this does nothing.
    pub fn shutdown(&self) {
        drop(self.tx.lock().take());
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }

    fn sample_due(&self, check: &str) -> bool {
        if self.sample_every.is_zero() {
            return true;
        }
        let now = Instant::now();
        let mut m = self.last_sample.lock();
        match m.get_mut(check) {
            Some(last) if now.duration_since(*last) < self.sample_every => false,
            Some(last) => {
                *last = now;
                true
            }
            None => {
                m.insert(check.to_string(), now);
                true
            }
        }
    }

    fn note_state(&self, s: &CheckState, now: SystemTime) {
        let row = StateRow {
            status: s.status,
            score: s.score,
            consecutive_failures: s.consecutive_failures,
            last_success_at: s.last_success_at.map(unix_ms),
            since: s.since.map(unix_ms),
            error_kind: s.error_kind.map(ErrorKind::as_str),
            message: s.message.clone(),
            updated_at: unix_ms(now),
        };
        let mut d = self.inner.dirty.lock();
        match d.get_mut(&s.name) {
            Some(slot) => *slot = row,
            None => {
                d.insert(s.name.clone(), row);
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The writer sees the channel close, commits, marks the run stopped and exits.
        drop(self.tx.lock().take());
    }
}

/// Whether a result is worth writing the check's `check_state` row for (a transition
/// always is; see [`Observer::on_change`]).
///
/// Everything but a repeated success changes what a restart would restore (failure
/// counts, error kind), so it is written. A check that keeps succeeding changes only
/// its `last_success_at`: its row is written when that enters a new minute, at an
/// offset of its own within the minute (from its name), so 10,000 healthy checks
/// write about 170 rows a second, spread out, instead of all 10,000 every second, and
/// the latest-state map holds those few instead of every check. A restart restores a
/// `last_success_at` at most a minute old after a crash; a clean stop writes every
/// check's final state ([`Observer::on_stop`]).
pub(crate) fn state_worth_writing(s: &CheckState, o: &Outcome) -> bool {
    if !o.is_success() || s.consecutive_successes <= 1 || s.consecutive_failures != 0 {
        return true;
    }
    let (Some(last), Some(previous)) = (s.last_success_at, s.previous_success_at) else {
        return true;
    };
    let offset = xxhash_rust::xxh3::xxh3_64(s.name.as_bytes()) % 60_000;
    let minute = |t: SystemTime| (unix_ms(t) as u64).wrapping_add(offset) / 60_000;
    minute(last) != minute(previous)
}

impl Observer for Store {
    fn on_result(&self, s: &CheckState, o: &Outcome) {
        let now = SystemTime::now();
        if state_worth_writing(s, o) {
            self.note_state(s, now);
        }
        if self.sample_due(&s.name) {
            let latency = o.is_success().then_some(o.latency);
            self.record_sample(&s.name, now, s.status, latency);
        }
    }

    fn on_stop(&self, states: &[CheckState]) {
        let now = SystemTime::now();
        for s in states {
            self.note_state(s, now);
        }
    }

    fn on_change(&self, s: &CheckState, ch: Change) {
        let now = SystemTime::now();
        self.note_state(s, now);
        self.record_transition(
            &s.name,
            s.since.unwrap_or(now),
            ch.from,
            ch.to,
            s.error_kind,
            &s.message,
        );
    }
}
