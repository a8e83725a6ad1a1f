//! The history store (SPEC §5, §9): every status transition and latency samples, kept in
//! SQLite at `<data_dir>/lifeline.db` for `history.retention`, plus the last known state
//! of every check (restored at start) and the agent's own runs (so uptime can tell check
//! downtime from agent downtime).
//!
//! One writer thread owns the write connection. The hot path ([`Observer`] calls from the
//! supervisors) never blocks: rows go through a bounded channel (`try_send`; a full queue
//! drops the row and counts it in `lifeline_events_dropped_total{observer="store"}`), and
//! the latest state of each check goes into a map the writer takes from. The writer
//! commits in batches (every second or 50,000 rows), prunes old rows in small chunks
//! between batches, and survives every database failure: an unwritable `data_dir` or a
//! full disk is logged, counted in `lifeline_store_errors_total` and retried; a corrupt
//! file is moved aside and a new one started. Readers (API, CLI) use their own read-only
//! connections.

mod sqlite;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::check::{ErrorKind, Outcome};
use crate::config::HistoryConfig;
use crate::events::Observer;
use crate::health::{Change, CheckState, Restored, Status};
use crate::metrics::Metrics;
use crate::time::unix_ms;

pub use sqlite::Reader;
use sqlite::{Msg, SampleRow, StateRow, TransitionRow};

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "lifeline.db";

/// Capacity of the queue between the hot path and the writer thread.
const QUEUE: usize = 65_536;

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An SQLite error.
    #[error("history database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer lifeline.
    #[error(
        "history database has schema version {found}; this lifeline knows versions up to {known}"
    )]
    NewerSchema {
        /// `PRAGMA user_version` of the file.
        found: u32,
        /// The newest version this build knows.
        known: u32,
    },
    /// The store cannot serve the request right now.
    #[error("history store unavailable: {0}")]
    Unavailable(String),
}

/// A status transition as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// When (RFC 3339).
    #[serde(serialize_with = "crate::time::serde_rfc3339::serialize")]
    pub at: SystemTime,
    /// New status.
    pub status: Status,
    /// Status before.
    pub previous_status: Status,
    /// Failure kind at the time of the change.
    pub error_kind: Option<String>,
    /// Message of the result that caused the change.
    pub message: String,
}

/// A latency sample as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When (RFC 3339).
    #[serde(serialize_with = "crate::time::serde_rfc3339::serialize")]
    pub at: SystemTime,
    /// Status after the result.
    pub status: Status,
    /// Latency of a successful result; none for failures.
    pub latency_ms: Option<f64>,
}

/// `GET /api/v1/checks/{name}/history`.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    /// Check name.
    pub check: String,
    /// Newest first.
    pub transitions: Vec<Transition>,
    /// Newest first.
    pub samples: Vec<Sample>,
}

/// Uptime of a check over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uptime {
    /// Window start.
    #[serde(serialize_with = "crate::time::serde_rfc3339::serialize")]
    pub since: SystemTime,
    /// Window end.
    #[serde(serialize_with = "crate::time::serde_rfc3339::serialize")]
    pub until: SystemTime,
    /// Time `healthy`/`degraded` over time with a known status while the agent ran; none
    /// when there is no such time.
    pub uptime_ratio: Option<f64>,
    /// Samples recorded in the window.
    pub samples: u64,
    /// Time in the window the agent was not running.
    pub agent_down_seconds: f64,
    /// Time up (healthy or degraded) while the agent ran.
    pub up_seconds: f64,
    /// Time connecting, unhealthy or disconnected while the agent ran.
    pub down_seconds: f64,
    /// Time with unknown status (no result yet) while the agent ran.
    pub unknown_seconds: f64,
}

/// A time argument that is neither RFC 3339 nor a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadTime(pub String);

/// Parses a point in time given as RFC 3339 (`2026-05-01T12:00:00Z`), as a duration back
/// from `now` (`24h`, `90m`, `7d`), or as `now`.
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, BadTime> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(t) = crate::time::parse_rfc3339(s) {
        return Ok(t);
    }
    match crate::time::parse_duration(s) {
        Ok(d) => now
            .checked_sub(d)
            .ok_or_else(|| BadTime(format!("`{s}` reaches back too far"))),
        Err(_) => Err(BadTime(format!(
            "`{s}` is neither an RFC 3339 time nor a duration like `24h`"
        ))),
    }
}

/// Code of a status in `samples.status` (the order of [`Status::ALL`]).
pub(crate) fn status_code(s: Status) -> u8 {
    Status::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8
}

/// The status of a `samples.status` code.
pub(crate) fn status_of_code(c: i64) -> Status {
    usize::try_from(c)
        .ok()
        .and_then(|i| Status::ALL.get(i).copied())
        .unwrap_or(Status::Unknown)
}

/// What the hot path and the writer thread share.
pub(crate) struct Inner {
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
    pub(crate) retention: Duration,
}

/// The history store: an [`Observer`] that records, plus query helpers.
pub struct Store {
    inner: Arc<Inner>,
    tx: Mutex<Option<SyncSender<Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    restored: Mutex<Vec<Restored>>,
    sample_every: Duration,
    last_sample: Mutex<HashMap<String, Instant>>,
}

impl Store {
    /// Opens (creating it if needed) `<data_dir>/lifeline.db` and starts the writer
    /// thread. A database that cannot be opened now is not an error: it is logged and
    /// counted, and the writer keeps retrying while the agent runs. Errors only if the
    /// writer thread cannot start.
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
        let (conn, restored) = match sqlite::open_rw(data_dir) {
            Ok(conn) => match sqlite::load_states(&conn) {
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
                (None, Vec::new())
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = sqlite::Writer::new(inner.clone(), rx, conn);
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
        self.inner.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(m) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.inner.queued.fetch_sub(1, Ordering::Relaxed);
                self.inner
                    .metrics
                    .events_dropped
                    .with_label_values(&["store"])
                    .inc();
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
    /// returns how many went. The writer also prunes by itself, hourly.
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

impl Observer for Store {
    fn on_result(&self, s: &CheckState, o: &Outcome) {
        let now = SystemTime::now();
        self.note_state(s, now);
        if self.sample_due(&s.name) {
            let latency = o.is_success().then_some(o.latency);
            self.record_sample(&s.name, now, s.status, latency);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::from_unix_ms;

    #[test]
    fn times_parse_as_rfc3339_or_duration_back() {
        let now = from_unix_ms(1_700_000_000_000);
        assert_eq!(
            parse_time("24h", now),
            Ok(from_unix_ms(1_700_000_000_000 - 86_400_000))
        );
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Ok(from_unix_ms(1_700_000_000_000))
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20.5+01:00", now),
            Ok(from_unix_ms(1_700_000_000_500))
        );
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn ms_round_trip_and_status_codes() {
        for ms in [0, 1, 1_700_000_000_123, -5_000] {
            assert_eq!(unix_ms(from_unix_ms(ms)), ms);
        }
        for s in Status::ALL {
            assert_eq!(status_of_code(i64::from(status_code(s))), s);
        }
        assert_eq!(status_code(Status::Healthy), 2);
        assert_eq!(status_of_code(99), Status::Unknown);
    }
}
