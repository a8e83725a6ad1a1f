//! The outbox: every notification is a row in `<data_dir>/lifeline.db` before anything is
//! sent; [`super::delivery`] sends the rows and deletes them once delivered or dropped.
//! The same file keeps the alerts receivers were told about (`alert_state`, so a restart
//! does not re-send them) and the silences created over the API (`alert_silences`).
//!
//! One thread owns the connection. Callers hand it requests through a bounded channel
//! (`std::sync::mpsc::sync_channel`) and await the answer on a `tokio::sync::oneshot`, so
//! no SQLite call runs on a tokio worker. The thread takes what is queued in one go and
//! runs it as one transaction, each request inside its own savepoint (a failing request
//! does not undo the others); answers go out once the batch is committed. The depth of
//! each notifier's queue is kept in memory by the thread, so [`Outbox::depth`] never waits.
//!
//! The history store owns the file's `PRAGMA user_version` and its own tables; this module
//! only creates its own tables (`IF NOT EXISTS`) on its own connection (WAL, busy timeout).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{Notification, NotifierConfig, Silence};
use crate::metrics::Metrics;
use crate::store::DB_FILE;
use crate::time::unix_ms;

/// Capacity of the channel to the writer thread.
const QUEUE: usize = 1024;
/// Most requests run in one transaction.
const BATCH_MAX: usize = 256;
/// How often a database that cannot be written is tried again.
pub const HEAL_EVERY: Duration = Duration::from_secs(1);
/// `store` label of the outbox in `lifeline_storage_*`.
const STORE: &str = "outbox";
/// What the outbox does while the file works.
const MODE_DISK: &str = "on disk";
/// What it does while the file does not.
const MODE_MEMORY: &str = "in memory until data_dir can be written; notifications still delivered";

/// Why the outbox could not do something.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// `data_dir` could not be created.
    #[error("cannot create data_dir {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database could not be opened or prepared.
    #[error("alert outbox {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// A request failed.
    #[error("alert outbox: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The request succeeded, but the batch it ran in could not be committed.
    #[error("alert outbox: the transaction could not be committed")]
    Commit,
    /// The writer thread could not be started.
    #[error("cannot start the alert outbox thread: {0}")]
    Thread(std::io::Error),
    /// The writer thread is gone.
    #[error("the alert outbox thread is not running")]
    Stopped,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notifier TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_notifier ON outbox(notifier, id);
CREATE TABLE IF NOT EXISTS alert_state (
    route TEXT NOT NULL,
    check_name TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    last_sent_ms INTEGER NOT NULL,
    PRIMARY KEY (route, check_name)
);
CREATE TABLE IF NOT EXISTS alert_silences (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
";

/// One undelivered notification.
#[derive(Debug, Clone)]
pub struct Row {
    /// Row id (delivery order).
    pub id: i64,
    /// The notification.
    pub note: Notification,
    /// When it was written (unix ms).
    pub created_ms: i64,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// A persisted "receivers were told this alert is firing".
#[derive(Debug, Clone, PartialEq)]
pub struct SavedAlert {
    /// Route name.
    pub route: String,
    /// Check name.
    pub check: String,
    /// Its firing notification's key.
    pub dedupe_key: String,
    /// When the check started failing (unix ms).
    pub started_ms: i64,
    /// When a firing notification for it was last made (unix ms).
    pub last_sent_ms: i64,
}

/// One write of an [`Outbox::commit`] request.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Queue a notification: one row per notifier.
    Enqueue {
        /// Notifier names.
        notifiers: Vec<String>,
        /// The notification.
        note: Notification,
    },
    /// Save (or update) a firing alert receivers are told about.
    SaveAlert(SavedAlert),
    /// Forget an alert; with `key`, only while the saved alert still has that dedupe key.
    DeleteAlert {
        /// Route name.
        route: String,
        /// Check name.
        check: String,
        /// Its dedupe key, if the delete is conditional on it.
        key: Option<String>,
    },
}

/// A notification serialised for the writer thread.
struct Queued {
    names: Vec<String>,
    key: String,
    status: &'static str,
    payload: String,
    now: i64,
}

impl Queued {
    fn of(notifiers: &[String], n: &Notification) -> Self {
        Self {
            names: notifiers.to_vec(),
            key: n.dedupe_key.clone(),
            status: n.status.as_str(),
            payload: serde_json::to_string(n).unwrap_or_default(),
            now: unix_ms(SystemTime::now()),
        }
    }

    /// Inserts one row per notifier; returns their ids.
    fn insert(self, conn: &Connection, touched: &mut Touched) -> rusqlite::Result<Vec<i64>> {
        let mut st = conn.prepare_cached(
            "INSERT INTO outbox (notifier, dedupe_key, status, payload, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut ids = Vec::with_capacity(self.names.len());
        for name in self.names {
            st.execute(params![name, self.key, self.status, self.payload, self.now])?;
            ids.push(conn.last_insert_rowid());
            touched.insert(name);
        }
        Ok(ids)
    }
}

/// A [`Write`] ready for the writer thread.
enum Prepared {
    Enqueue(Queued),
    Save(SavedAlert),
    Delete(String, String, Option<String>),
}

fn save_alert_row(conn: &Connection, a: &SavedAlert) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO alert_state (route, check_name, dedupe_key, started_ms, last_sent_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (route, check_name) DO UPDATE SET dedupe_key = excluded.dedupe_key,
           started_ms = excluded.started_ms, last_sent_ms = excluded.last_sent_ms",
    )?
    .execute(params![a.route, a.check, a.dedupe_key, a.started_ms, a.last_sent_ms])?;
    Ok(())
}

fn delete_alert_row(
    conn: &Connection,
    route: &str,
    check: &str,
    key: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM alert_state WHERE route = ?1 AND check_name = ?2
         AND (?3 IS NULL OR dedupe_key = ?3)",
    )?
    .execute(params![route, check, key])?;
    Ok(())
}

/// Notifiers whose queue a request changed (their depth is counted again).
type Touched = HashSet<String>;
/// Answers a request once its batch is over (`true`: committed).
type Done = Box<dyn FnOnce(bool) + Send>;
/// How a request ended on the writer thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// It worked.
    Ok,
    /// It failed for a reason of its own (a constraint, a trigger, bad data).
    Failed,
    /// The database file could not be written (read-only, full, I/O error, corrupt).
    Storage,
}

/// A request: runs on the writer thread; says how it ended.
type Job = Box<dyn FnOnce(&Connection, &mut Touched) -> (Ran, Done) + Send>;

/// True for SQLite errors that say the file or its disk is broken, not the request.
fn is_storage_error(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e.sqlite_error_code(),
        Some(
            C::DiskFull
                | C::ReadOnly
                | C::SystemIoFailure
                | C::DatabaseCorrupt
                | C::NotADatabase
                | C::CannotOpen
                | C::DatabaseBusy
                | C::DatabaseLocked
                | C::PermissionDenied
        )
    )
}

impl OutboxError {
    fn is_storage(&self) -> bool {
        match self {
            Self::Sqlite(e) | Self::Open { source: e, .. } => is_storage_error(e),
            Self::DataDir { .. } | Self::Commit => true,
            Self::Thread(_) | Self::Stopped => false,
        }
    }
}

/// What a previous run left behind, read at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Alerts receivers were told about.
    pub alerts: Vec<SavedAlert>,
    /// API silences not yet ended.
    pub silences: Vec<Silence>,
}

/// The SQLite outbox: a handle on its writer thread.
pub struct Outbox {
    tx: SyncSender<Job>,
    path: PathBuf,
    depths: Arc<Mutex<HashMap<String, i64>>>,
    metrics: Option<Arc<Metrics>>,
}

impl Outbox {
    /// Opens (creating if needed) `<data_dir>/lifeline.db` on a new writer thread.
    pub async fn open(data_dir: &Path) -> Result<Self, OutboxError> {
        Self::open_with(data_dir, None).await
    }

    /// As [`Outbox::open`], reporting the database's health in `metrics`
    /// (`lifeline_storage_up{store="outbox"}`, `/health/detailed`). A database that cannot
    /// be opened or written (read-only or full disk, corrupt file) is not an error: the
    /// outbox runs in memory, notifications are still delivered from there, and the file
    /// is tried again every [`HEAL_EVERY`]; once it can be written, what memory holds is
    /// written to it and the outbox runs on disk again.
    pub async fn open_with(
        data_dir: &Path,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, OutboxError> {
        let path = data_dir.join(DB_FILE);
        let depths = Arc::new(Mutex::new(HashMap::new()));
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (ready, started) = oneshot::channel();
        let (dir, file, counts) = (data_dir.to_path_buf(), path.clone(), depths.clone());
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("lifeline-outbox".into())
            .spawn(move || {
                let w = Writer::start(dir, file, rx, counts, m);
                match w {
                    Ok(w) => {
                        let _ = ready.send(Ok(()));
                        w.run();
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })
            .map_err(OutboxError::Thread)?;
        started.await.map_err(|_| OutboxError::Stopped)??;
        Ok(Self {
            tx,
            path,
            depths,
            metrics,
        })
    }

    /// Whether the outbox runs on its database file right now (false: in memory).
    pub async fn on_disk(&self) -> bool {
        self.call(|conn, _| Ok(conn.path().is_some_and(|p| !p.is_empty())))
            .await
            .unwrap_or(false)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what a previous run left: the alerts receivers were told about and the API
    /// silences not ended at `now` (ended ones are deleted). Queued rows of notifiers no
    /// longer `configured` are dropped.
    pub async fn recover(
        &self,
        configured: &[Arc<NotifierConfig>],
        now: SystemTime,
    ) -> Result<Recovered, OutboxError> {
        let alerts = self.load_alerts().await?;
        let (silences, ended): (Vec<Silence>, Vec<Silence>) = self
            .load_silences()
            .await?
            .into_iter()
            .partition(|s| s.ends_at > now);
        let ended: Vec<String> = ended.into_iter().map(|s| s.id).collect();
        let _ = self.prune_silences(&ended).await;
        for n in self.queued_notifiers().await.unwrap_or_default() {
            if !configured.iter().any(|x| x.name == n) {
                let gone = self.purge_notifier(&n).await.unwrap_or(0);
                tracing::warn!(notifier = %n, rows = gone, "dropping queued notifications of a notifier that is no longer configured");
                if let Some(m) = &self.metrics {
                    m.notifications_dropped(&n, gone as u64);
                }
            }
        }
        Ok(Recovered { alerts, silences })
    }

    /// Runs `f` on the writer thread and waits (asynchronously) for its answer.
    async fn call<T, F>(&self, f: F) -> Result<T, OutboxError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Touched) -> Result<T, OutboxError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn, touched| {
            let r = f(conn, touched);
            let ok = match &r {
                Ok(_) => Ran::Ok,
                Err(e) if e.is_storage() => Ran::Storage,
                Err(_) => Ran::Failed,
            };
            let done: Done = Box::new(move |committed| {
                let _ = reply.send(if committed {
                    r
                } else {
                    r.and(Err(OutboxError::Commit))
                });
            });
            (ok, done)
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Disconnected(_)) => return Err(OutboxError::Stopped),
            Err(TrySendError::Full(job)) => {
                // The writer is behind: wait for room on a blocking thread, not a worker.
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(job))
                    .await
                    .map_err(|_| OutboxError::Stopped)?
                    .map_err(|_| OutboxError::Stopped)?;
            }
        }
        answer.await.map_err(|_| OutboxError::Stopped)?
    }

    /// Writes one row per notifier; returns their ids.
    pub async fn enqueue(
        &self,
        notifiers: &[String],
        n: &Notification,
    ) -> Result<Vec<i64>, OutboxError> {
        let row = Queued::of(notifiers, n);
        self.call(move |conn, touched| Ok(row.insert(conn, touched)?))
            .await
    }

    /// Runs `writes` in order as one request: all of them are written, or (on any error)
    /// none. The engine hands a notification and the alert states it changes together, so
    /// a kill between the two cannot leave a saved firing whose notification was never
    /// queued, nor a queued resolved whose alert is still saved (or the reverse).
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), OutboxError> {
        let writes: Vec<Prepared> = writes
            .into_iter()
            .map(|w| match w {
                Write::Enqueue { notifiers, note } => {
                    Prepared::Enqueue(Queued::of(&notifiers, &note))
                }
                Write::SaveAlert(a) => Prepared::Save(a),
                Write::DeleteAlert { route, check, key } => Prepared::Delete(route, check, key),
            })
            .collect();
        self.call(move |conn, touched| {
            for w in writes {
                match w {
                    Prepared::Enqueue(q) => {
                        q.insert(conn, touched)?;
                    }
                    Prepared::Save(a) => save_alert_row(conn, &a)?,
                    Prepared::Delete(route, check, key) => {
                        delete_alert_row(conn, &route, &check, key.as_deref())?
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Up to `limit` undelivered rows of `notifier` with id > `after`, oldest first.
    pub async fn next(
        &self,
        notifier: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Row>, OutboxError> {
        let notifier = notifier.to_string();
        let metrics = self.metrics.clone();
        self.call(move |conn, touched| {
            let mut st = conn.prepare_cached(
                "SELECT id, payload, created_ms, attempts FROM outbox WHERE notifier = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = st.query_map(params![notifier, after, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for r in rows {
                let (id, payload, created_ms, attempts) = r?;
                match serde_json::from_str::<Notification>(&payload) {
                    Ok(note) => out.push(Row {
                        id,
                        note,
                        created_ms,
                        attempts: attempts.max(0) as u32,
                    }),
                    Err(e) => {
                        tracing::error!(id, error = %e, "unreadable outbox row; deleting it");
                        conn.execute("DELETE FROM outbox WHERE id = ?1", params![id])?;
                        touched.insert(notifier.clone());
                        if let Some(m) = &metrics {
                            m.notifications_dropped(&notifier, 1);
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes a delivered or dropped row.
    pub async fn remove(&self, id: i64) -> Result<(), OutboxError> {
        self.call(move |conn, touched| {
            let gone: Option<String> = conn
                .query_row(
                    "DELETE FROM outbox WHERE id = ?1 RETURNING notifier",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            touched.extend(gone);
            Ok(())
        })
        .await
    }

    /// Records a failed attempt.
    pub async fn failed(&self, id: i64, attempts: u32, error: &str) -> Result<(), OutboxError> {
        let error = error.to_string();
        self.call(move |conn, _| {
            conn.execute(
                "UPDATE outbox SET attempts = ?2, last_error = ?3 WHERE id = ?1",
                params![id, attempts, error],
            )?;
            Ok(())
        })
        .await
    }

    /// Undelivered rows of `notifier` (as of the last committed request; never waits).
    pub fn depth(&self, notifier: &str) -> i64 {
        self.depths.lock().get(notifier).copied().unwrap_or(0)
    }

    /// Notifier names that have undelivered rows.
    pub async fn queued_notifiers(&self) -> Result<Vec<String>, OutboxError> {
        self.call(|conn, _| {
            let mut st = conn.prepare("SELECT DISTINCT notifier FROM outbox")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Deletes every row of a notifier that no longer exists; returns how many.
    pub async fn purge_notifier(&self, notifier: &str) -> Result<usize, OutboxError> {
        let notifier = notifier.to_string();
        self.call(move |conn, touched| {
            let n = conn.execute("DELETE FROM outbox WHERE notifier = ?1", params![notifier])?;
            touched.insert(notifier);
            Ok(n)
        })
        .await
    }

    /// Saves (or updates) a firing alert receivers know about.
    pub async fn save_alert(&self, a: &SavedAlert) -> Result<(), OutboxError> {
        self.commit(vec![Write::SaveAlert(a.clone())]).await
    }

    /// Forgets an alert (resolved, or its route is gone).
    /// With `key`, only while the saved alert still has that dedupe key.
    pub async fn delete_alert(
        &self,
        route: &str,
        check: &str,
        key: Option<&str>,
    ) -> Result<(), OutboxError> {
        self.commit(vec![Write::DeleteAlert {
            route: route.to_string(),
            check: check.to_string(),
            key: key.map(str::to_string),
        }])
        .await
    }

    /// Every saved alert.
    pub async fn load_alerts(&self) -> Result<Vec<SavedAlert>, OutboxError> {
        self.call(|conn, _| {
            let mut st = conn.prepare(
                "SELECT route, check_name, dedupe_key, started_ms, last_sent_ms FROM alert_state ORDER BY route, check_name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(SavedAlert {
                    route: r.get(0)?,
                    check: r.get(1)?,
                    dedupe_key: r.get(2)?,
                    started_ms: r.get(3)?,
                    last_sent_ms: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Saves an API silence.
    pub async fn save_silence(&self, s: &Silence) -> Result<(), OutboxError> {
        let body = serde_json::to_string(s).unwrap_or_default();
        let id = s.id.clone();
        self.call(move |conn, _| {
            conn.execute(
                "INSERT INTO alert_silences (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                params![id, body],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes these silences (expired ones, at start).
    pub async fn prune_silences(&self, ids: &[String]) -> Result<(), OutboxError> {
        let ids = ids.to_vec();
        self.call(move |conn, _| {
            for id in ids {
                conn.execute("DELETE FROM alert_silences WHERE id = ?1", params![id])?;
            }
            Ok(())
        })
        .await
    }

    /// Every saved API silence.
    pub async fn load_silences(&self) -> Result<Vec<Silence>, OutboxError> {
        self.call(|conn, _| {
            let mut st = conn.prepare("SELECT body FROM alert_silences")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for b in rows {
                if let Ok(s) = serde_json::from_str::<Silence>(&b?) {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    /// A row's failed attempts (tests read it).
    #[cfg(test)]
    pub async fn attempts_of(&self, id: i64) -> Option<u32> {
        self.call(move |conn, _| {
            Ok(conn
                .query_row(
                    "SELECT attempts FROM outbox WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
        .ok()
        .flatten()
    }
}

mod writer;
use writer::*;

#[cfg(test)]
mod tests;
