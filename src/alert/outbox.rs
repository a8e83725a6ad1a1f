//! The outbox: every notification is a row in `<data_dir>/lifeline.db` before anything is
//! sent; one delivery task per notifier sends its rows in order, retrying with backoff
//! (`retry_base` doubling up to `retry_max`) on temporary failures until delivered or
//! older than `max_age`. Delivered and dropped rows are deleted. The same file keeps the
//! alerts receivers were told about (`alert_state`, so a restart does not re-send them)
//! and the silences created over the API (`alert_silences`).
//!
//! The history store owns the file's `PRAGMA user_version` and its own tables; this module
//! only creates its own tables (`IF NOT EXISTS`) on its own connection (WAL, busy timeout).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::time::unix_ms;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{AlertError, Notification, Notifier, NotifierConfig, NotifyError, Silence};
use crate::metrics::{Metrics, NotifyResult};

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

/// The SQLite outbox.
pub struct Outbox {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Outbox {
    /// Opens (creating if needed) `<data_dir>/lifeline.db`.
    pub fn open(data_dir: &Path) -> Result<Self, AlertError> {
        std::fs::create_dir_all(data_dir).map_err(|source| AlertError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("lifeline.db");
        let err = |source| AlertError::Store {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one row per notifier; returns their ids.
    pub fn enqueue(&self, notifiers: &[String], n: &Notification) -> rusqlite::Result<Vec<i64>> {
        let payload = serde_json::to_string(n).unwrap_or_default();
        let now = unix_ms(SystemTime::now());
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut ids = Vec::with_capacity(notifiers.len());
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO outbox (notifier, dedupe_key, status, payload, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for name in notifiers {
                st.execute(params![name, n.dedupe_key, n.status.as_str(), payload, now])?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Up to `limit` undelivered rows of `notifier` with id > `after`, oldest first.
    pub fn next(&self, notifier: &str, after: i64, limit: usize) -> rusqlite::Result<Vec<Row>> {
        let conn = self.conn.lock();
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
                }
            }
        }
        Ok(out)
    }

    /// Removes a delivered or dropped row.
    pub fn remove(&self, id: i64) -> rusqlite::Result<()> {
        self.conn
            .lock()
            .execute("DELETE FROM outbox WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Records a failed attempt.
    pub fn failed(&self, id: i64, attempts: u32, error: &str) -> rusqlite::Result<()> {
        self.conn.lock().execute(
            "UPDATE outbox SET attempts = ?2, last_error = ?3 WHERE id = ?1",
            params![id, attempts, error],
        )?;
        Ok(())
    }

    /// Undelivered rows of `notifier`.
    pub fn depth(&self, notifier: &str) -> i64 {
        self.conn
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE notifier = ?1",
                params![notifier],
                |r| r.get(0),
            )
            .unwrap_or(0)
    }

    /// Notifier names that have undelivered rows.
    pub fn queued_notifiers(&self) -> rusqlite::Result<Vec<String>> {
        let conn = self.conn.lock();
        let mut st = conn.prepare("SELECT DISTINCT notifier FROM outbox")?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect()
    }

    /// Deletes every row of a notifier that no longer exists; returns how many.
    pub fn purge_notifier(&self, notifier: &str) -> rusqlite::Result<usize> {
        self.conn
            .lock()
            .execute("DELETE FROM outbox WHERE notifier = ?1", params![notifier])
    }

    /// Saves (or updates) a firing alert receivers know about.
    pub fn save_alert(&self, a: &SavedAlert) -> rusqlite::Result<()> {
        self.conn.lock().execute(
            "INSERT INTO alert_state (route, check_name, dedupe_key, started_ms, last_sent_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (route, check_name) DO UPDATE SET dedupe_key = excluded.dedupe_key,
               started_ms = excluded.started_ms, last_sent_ms = excluded.last_sent_ms",
            params![a.route, a.check, a.dedupe_key, a.started_ms, a.last_sent_ms],
        )?;
        Ok(())
    }

    /// Forgets an alert (resolved, or its route is gone).
    pub fn delete_alert(&self, route: &str, check: &str) -> rusqlite::Result<()> {
        self.conn.lock().execute(
            "DELETE FROM alert_state WHERE route = ?1 AND check_name = ?2",
            params![route, check],
        )?;
        Ok(())
    }

    /// Every saved alert.
    pub fn load_alerts(&self) -> rusqlite::Result<Vec<SavedAlert>> {
        let conn = self.conn.lock();
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
        rows.collect()
    }

    /// Saves an API silence.
    pub fn save_silence(&self, s: &Silence) -> rusqlite::Result<()> {
        let body = serde_json::to_string(s).unwrap_or_default();
        self.conn.lock().execute(
            "INSERT INTO alert_silences (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            params![s.id, body],
        )?;
        Ok(())
    }

    /// Deletes silences that ended before `before`.
    pub fn prune_silences(&self, ids: &[String]) -> rusqlite::Result<()> {
        let conn = self.conn.lock();
        for id in ids {
            conn.execute("DELETE FROM alert_silences WHERE id = ?1", params![id])?;
        }
        Ok(())
    }

    /// Every saved API silence.
    pub fn load_silences(&self) -> rusqlite::Result<Vec<Silence>> {
        let conn = self.conn.lock();
        let mut st = conn.prepare("SELECT body FROM alert_silences")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for b in rows {
            if let Ok(s) = serde_json::from_str::<Silence>(&b?) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The oldest undelivered row's attempts, for tests and diagnostics.
    pub fn attempts_of(&self, id: i64) -> Option<u32> {
        self.conn
            .lock()
            .query_row(
                "SELECT attempts FROM outbox WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten()
    }
}

/// A notifier's delivery task: sends its rows in id order, one at a time.
pub struct Delivery {
    /// Notifier name.
    pub name: String,
    /// Current config and sender (swapped on reload).
    pub target: ArcSwap<(Arc<NotifierConfig>, Arc<dyn Notifier>)>,
    /// Poked when rows are added.
    pub wake: Notify,
    /// Stops this task (the notifier was removed or the agent stops).
    pub cancel: CancellationToken,
}

/// Retry delay after the `n`-th failed attempt: `base * 2^(n-1)` capped at `max`, plus up
/// to 10 % jitter.
pub fn retry_delay(base: Duration, max: Duration, n: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << n.saturating_sub(1).min(20));
    let d = exp.min(max);
    let jitter = d.mul_f64(fastrand::f64() * 0.1);
    d + jitter
}

impl Delivery {
    /// Runs until cancelled.
    pub async fn run(self: Arc<Self>, outbox: Arc<Outbox>, metrics: Arc<Metrics>) {
        let mut after = 0i64;
        metrics.notification_queue(&self.name, outbox.depth(&self.name));
        loop {
            let rows = match outbox.next(&self.name, after, 64) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(notifier = %self.name, error = %e, "cannot read the outbox");
                    Vec::new()
                }
            };
            if rows.is_empty() {
                // Rows are only ever added with larger ids, so `after` stays valid; a
                // wake-up that raced with the query is kept by Notify's permit.
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = self.cancel.cancelled() => return,
                }
            }
            for row in rows {
                after = row.id;
                if !self.deliver(&outbox, &metrics, row).await {
                    return;
                }
                metrics.notification_queue(&self.name, outbox.depth(&self.name));
            }
        }
    }

    /// Delivers one row (retrying); false if cancelled meanwhile.
    async fn deliver(&self, outbox: &Outbox, metrics: &Metrics, row: Row) -> bool {
        let mut attempts = row.attempts;
        loop {
            let (cfg, sender) = {
                let t = self.target.load();
                (t.0.clone(), t.1.clone())
            };
            let age =
                Duration::from_millis((unix_ms(SystemTime::now()) - row.created_ms).max(0) as u64);
            if row.note.refresh && age > super::alertmanager::KEEPALIVE {
                // A stale keep-alive is superseded by a newer one (or by the resolve).
                let _ = outbox.remove(row.id);
                return true;
            }
            if age > cfg.max_age {
                tracing::warn!(notifier = %self.name, dedupe_key = %row.note.dedupe_key, status = row.note.status.as_str(),
                    attempts, "notification older than max_age; dropping it");
                metrics.notification(&self.name, NotifyResult::Dropped);
                let _ = outbox.remove(row.id);
                return true;
            }
            let result = tokio::select! {
                r = sender.send(&row.note) => r,
                _ = self.cancel.cancelled() => return false,
            };
            match result {
                Ok(()) => {
                    if let Err(e) = outbox.remove(row.id) {
                        tracing::error!(notifier = %self.name, error = %e, "delivered, but cannot delete the outbox row (it will be sent again)");
                    }
                    let since = unix_ms(SystemTime::now()) - row.note.changed_at_ms;
                    metrics.notification_latency(
                        &self.name,
                        Duration::from_millis(since.max(0) as u64),
                    );
                    metrics.notification(&self.name, NotifyResult::Sent);
                    tracing::info!(notifier = %self.name, dedupe_key = %row.note.dedupe_key, status = row.note.status.as_str(),
                        alerts = row.note.alerts.len(), "notification delivered");
                    return true;
                }
                Err(NotifyError::Permanent(msg)) => {
                    tracing::error!(notifier = %self.name, dedupe_key = %row.note.dedupe_key, status = row.note.status.as_str(),
                        error = %msg, "notification rejected permanently; dropping it");
                    metrics.notification(&self.name, NotifyResult::Dropped);
                    let _ = outbox.remove(row.id);
                    return true;
                }
                Err(NotifyError::Transient(msg)) => {
                    attempts += 1;
                    metrics.notification(&self.name, NotifyResult::Failed);
                    let _ = outbox.failed(row.id, attempts, &msg);
                    let delay = retry_delay(cfg.retry_base, cfg.retry_max, attempts);
                    tracing::warn!(notifier = %self.name, dedupe_key = %row.note.dedupe_key, attempts,
                        retry_in_ms = delay.as_millis() as u64, error = %msg, "notification not delivered; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.cancel.cancelled() => return false,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(300);
        let d1 = retry_delay(b, m, 1);
        assert!(d1 >= b && d1 <= b.mul_f64(1.1));
        let d3 = retry_delay(b, m, 3);
        assert!(d3 >= Duration::from_secs(4) && d3 <= Duration::from_secs_f64(4.4));
        let d30 = retry_delay(b, m, 30);
        assert!(d30 >= m && d30 <= m.mul_f64(1.1));
    }

    #[test]
    fn rows_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notification::test_sample();
        {
            let o = Outbox::open(dir.path()).unwrap();
            o.enqueue(&["a".into(), "b".into()], &n).unwrap();
            o.enqueue(&["a".into()], &n).unwrap();
        }
        let o = Outbox::open(dir.path()).unwrap();
        let rows = o.next("a", 0, 10).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].id < rows[1].id);
        assert_eq!(rows[0].note, n);
        assert_eq!(o.depth("b"), 1);
        o.remove(rows[0].id).unwrap();
        assert_eq!(o.depth("a"), 1);
    }
}
