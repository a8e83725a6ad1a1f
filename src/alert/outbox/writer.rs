//! The outbox's writer thread: the only owner of the SQLite connection. It runs queued
//! requests in batches (one transaction, a savepoint each), keeps per-notifier depths, and
//! falls back to an in-memory database while the file cannot be written, copying the rows
//! back once it can.

use super::*;

/// Opens the connection and creates the outbox tables (on the writer thread).
fn open_conn(dir: &Path, path: &Path) -> Result<Connection, OutboxError> {
    std::fs::create_dir_all(dir).map_err(|source| OutboxError::DataDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let err = |source| OutboxError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    // FULL: a notification the engine was told is queued survives a power cut (NORMAL
    // in WAL mode may lose the last commits). The history store keeps NORMAL.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    conn.execute_batch(SCHEMA).map_err(err)?;
    Ok(conn)
}

/// The writer thread: the only owner of the connection.
pub(super) struct Writer {
    /// The connection in use: the file, or an in-memory database while the file fails.
    conn: Connection,
    /// Whether `conn` is the file.
    on_disk: bool,
    dir: PathBuf,
    path: PathBuf,
    rx: Receiver<Job>,
    depths: Arc<Mutex<HashMap<String, i64>>>,
    metrics: Option<Arc<Metrics>>,
    /// Highest outbox id handed out (ids keep growing across a switch: delivery tasks
    /// read rows after the last id they saw).
    max_id: i64,
    /// Next attempt to go back to the file (memory mode only).
    next_heal: std::time::Instant,
}

/// Tables copied between the file and memory, with their columns.
const TABLES: [(&str, &str); 3] = [
    (
        "outbox",
        "id, notifier, dedupe_key, status, payload, created_ms, attempts, last_error",
    ),
    (
        "alert_state",
        "route, check_name, dedupe_key, started_ms, last_sent_ms",
    ),
    ("alert_silences", "id, body"),
];

/// A fresh in-memory outbox database.
fn memory_conn() -> rusqlite::Result<Connection> {
    let c = Connection::open_in_memory()?;
    c.execute_batch(SCHEMA)?;
    Ok(c)
}

fn max_id_of(conn: &Connection) -> i64 {
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'outbox'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap_or(0)
}

/// Copies every row of the outbox tables from `from` to `to` (which is emptied first) and
/// makes `to` hand out ids above `max_id`, in one transaction of `to`.
fn copy_all(from: &Connection, to: &Connection, max_id: i64) -> rusqlite::Result<()> {
    to.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| {
        for (table, cols) in TABLES {
            to.execute(&format!("DELETE FROM {table}"), [])?;
            let n = cols.split(',').count();
            let marks = (1..=n)
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut read = from.prepare(&format!("SELECT {cols} FROM {table}"))?;
            let mut write =
                to.prepare(&format!("INSERT INTO {table} ({cols}) VALUES ({marks})"))?;
            let mut rows = read.query([])?;
            while let Some(row) = rows.next()? {
                let vals: Vec<rusqlite::types::Value> = (0..n)
                    .map(|i| row.get(i))
                    .collect::<rusqlite::Result<_>>()?;
                write.execute(rusqlite::params_from_iter(vals))?;
            }
        }
        // Always writes a page, so a full disk shows here rather than on the next request.
        to.execute("DELETE FROM sqlite_sequence WHERE name = 'outbox'", [])?;
        to.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?1)",
            params![max_id],
        )?;
        Ok(())
    })();
    match r {
        Ok(()) => to.execute_batch("COMMIT"),
        Err(e) => {
            let _ = to.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

impl Writer {
    /// Opens the file, or starts in memory if it cannot be used.
    #[allow(clippy::disallowed_methods)] // a dedicated thread: std's clock is the right one
    pub(super) fn start(
        dir: PathBuf,
        path: PathBuf,
        rx: Receiver<Job>,
        depths: Arc<Mutex<HashMap<String, i64>>>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, OutboxError> {
        let mut w = Writer {
            conn: memory_conn().map_err(|source| OutboxError::Open {
                path: path.clone(),
                source,
            })?,
            on_disk: false,
            dir,
            path,
            rx,
            depths,
            metrics,
            max_id: 0,
            next_heal: std::time::Instant::now(),
        };
        // Reading the queues proves the file is a database (a corrupt one fails here).
        let disk = open_conn(&w.dir, &w.path).and_then(|c| {
            let max_id = max_id_of(&c);
            let old = std::mem::replace(&mut w.conn, c);
            match w.count_all() {
                Ok(()) => Ok(max_id),
                Err(source) => {
                    w.conn = old;
                    Err(OutboxError::Open {
                        path: w.path.clone(),
                        source,
                    })
                }
            }
        });
        match disk {
            Ok(max_id) => {
                w.on_disk = true;
                w.max_id = max_id;
                w.report_ok();
            }
            Err(e) => w.went_to_memory(&e),
        }
        Ok(w)
    }

    fn report_ok(&self) {
        if let Some(m) = &self.metrics {
            m.storage_ok(STORE, MODE_DISK);
        }
    }

    /// The file failed: count it, say so, retry it later.
    #[allow(clippy::disallowed_methods)]
    fn went_to_memory(&mut self, e: &dyn std::fmt::Display) {
        self.on_disk = false;
        self.next_heal = std::time::Instant::now() + HEAL_EVERY;
        tracing::error!(path = %self.path.display(), error = %e,
            "alert outbox cannot use its database; notifications are kept in memory and still delivered until it can be written again");
        if let Some(m) = &self.metrics {
            m.storage_failed(STORE, &e.to_string(), MODE_MEMORY);
        }
    }

    /// Leaves the file for memory, taking along what can still be read from it.
    fn switch_to_memory(&mut self, e: &dyn std::fmt::Display) {
        let mem = match memory_conn() {
            Ok(m) => m,
            Err(me) => {
                tracing::error!(error = %me, "alert outbox: cannot create the in-memory database");
                return;
            }
        };
        self.max_id = self.max_id.max(max_id_of(&self.conn));
        if let Err(ce) = copy_all(&self.conn, &mem, self.max_id) {
            tracing::warn!(error = %ce, "alert outbox: rows of the database could not all be read; continuing with what memory holds");
            let _ = mem.execute(
                "INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('outbox', ?1)",
                params![self.max_id],
            );
        }
        self.conn = mem;
        self.went_to_memory(e);
        if let Err(ce) = self.count_all() {
            tracing::warn!(error = %ce, "alert outbox: cannot count the queues");
        }
    }

    /// In memory: tries the file again; on success writes memory's rows to it.
    #[allow(clippy::disallowed_methods)]
    fn try_heal(&mut self) {
        let now = std::time::Instant::now();
        if self.on_disk || now < self.next_heal {
            return;
        }
        self.next_heal = now + HEAL_EVERY;
        let disk = match open_conn(&self.dir, &self.path) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "alert outbox: database still unavailable");
                return;
            }
        };
        self.max_id = self.max_id.max(max_id_of(&self.conn)).max(max_id_of(&disk));
        match copy_all(&self.conn, &disk, self.max_id) {
            Ok(()) => {
                self.conn = disk;
                self.on_disk = true;
                tracing::info!(path = %self.path.display(), "alert outbox database writable again; queued notifications written to it");
                self.report_ok();
                if let Err(e) = self.count_all() {
                    tracing::warn!(error = %e, "alert outbox: cannot count the queues");
                }
            }
            Err(e) => tracing::debug!(error = %e, "alert outbox: database still not writable"),
        }
    }

    /// Runs until every [`Outbox`] handle is gone.
    pub(super) fn run(mut self) {
        loop {
            let first = if self.on_disk {
                match self.rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            } else {
                match self.rx.recv_timeout(HEAL_EVERY) {
                    Ok(j) => j,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        self.try_heal();
                        continue;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            };
            self.try_heal();
            let mut jobs = vec![first];
            while jobs.len() < BATCH_MAX {
                match self.rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            if let Some(e) = self.batch(jobs)
                && self.on_disk
            {
                // The callers of this batch were told it failed (they retry); the next
                // requests go to memory.
                self.switch_to_memory(&e);
            }
            self.max_id = self.max_id.max(max_id_of(&self.conn));
        }
    }

    /// Runs `jobs` in one transaction, each in a savepoint; answers them after the commit.
    /// Returns the error if the database itself failed (not just a request).
    fn batch(&self, jobs: Vec<Job>) -> Option<String> {
        let sql = |s: &str| self.conn.execute_batch(s);
        let mut broken: Option<String> = None;
        let mut in_batch = match sql("BEGIN IMMEDIATE") {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "alert outbox: cannot begin a transaction; running requests one by one");
                if is_storage_error(&e) {
                    broken = Some(e.to_string());
                }
                false
            }
        };
        let mut touched = Touched::new();
        let mut waiting: Vec<Done> = Vec::new();
        for job in jobs {
            let savepoint = sql("SAVEPOINT job").is_ok();
            let (ran, done) = job(&self.conn, &mut touched);
            if ran == Ran::Storage && broken.is_none() {
                broken = Some("a request failed: the database cannot be written".into());
            }
            let end = if ran == Ran::Ok {
                "RELEASE job"
            } else {
                "ROLLBACK TO job; RELEASE job"
            };
            let ended = savepoint && sql(end).is_ok();
            if in_batch && self.conn.is_autocommit() {
                // SQLite rolled the whole transaction back (disk full, I/O error): nothing
                // of this batch so far was written.
                tracing::error!("alert outbox: the transaction was rolled back");
                in_batch = false;
                broken.get_or_insert_with(|| "the transaction was rolled back".into());
                waiting.drain(..).for_each(|d| d(false));
                done(false);
            } else if in_batch {
                waiting.push(done);
            } else {
                // On its own: the savepoint was its transaction (or, without one, each
                // statement committed by itself).
                done(ended || !savepoint);
            }
        }
        let committed = in_batch
            && match sql("COMMIT") {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "alert outbox: cannot commit");
                    broken.get_or_insert_with(|| e.to_string());
                    let _ = sql("ROLLBACK");
                    false
                }
            };
        self.count(&touched);
        waiting.into_iter().for_each(|d| d(committed));
        broken
    }

    /// Counts the queue of every notifier (at open).
    fn count_all(&self) -> rusqlite::Result<()> {
        let mut st = self
            .conn
            .prepare("SELECT notifier, COUNT(*) FROM outbox GROUP BY notifier")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let counts = rows.collect::<rusqlite::Result<HashMap<_, _>>>()?;
        *self.depths.lock() = counts;
        Ok(())
    }

    /// Counts the queues of these notifiers again.
    fn count(&self, notifiers: &Touched) {
        for n in notifiers {
            let c = self.conn.query_row(
                "SELECT COUNT(*) FROM outbox WHERE notifier = ?1",
                params![n],
                |r| r.get::<_, i64>(0),
            );
            match c {
                Ok(c) => {
                    self.depths.lock().insert(n.clone(), c);
                }
                Err(e) => {
                    tracing::warn!(notifier = %n, error = %e, "alert outbox: cannot count the queue")
                }
            }
        }
    }
}
