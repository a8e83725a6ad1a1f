//! The database file itself: opening it for writing (pragmas, migrations, moving a corrupt
//! file aside) or for reading, and what a row of each table holds. The tables are in
//! `schema.sql`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::{DB_FILE, StoreError};
use crate::health::Status;
use crate::time::unix_ms;

/// Migrations, in order; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[include_str!("schema.sql")];

/// The history writer's page cache, in KiB (SQLite's `cache_size` pragma, negative).
pub(crate) const CACHE_KIB: i64 = -2_048;

/// How long connections wait for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer updates its run's `agent_runs.last_seen` at least this often; readers take
/// a run without a clean stop whose heartbeat is recent as still live.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// A row of `samples`.
pub(crate) struct SampleRow {
    pub(crate) check: Box<str>,
    pub(crate) at: i64,
    /// See [`status_code`].
    pub(crate) status: u8,
    pub(crate) latency_us: Option<i64>,
}

/// A row of `transitions`.
pub(crate) struct TransitionRow {
    pub(crate) check: Box<str>,
    pub(crate) at: i64,
    pub(crate) status: Status,
    pub(crate) previous: Status,
    pub(crate) error_kind: Option<&'static str>,
    pub(crate) message: String,
}

/// A row of `check_state`: the latest state of one check.
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

/// The status of a status name in `transitions` or `check_state` (unknown if not a name).
pub(crate) fn status_of_name(name: &str) -> Status {
    Status::parse(name).unwrap_or(Status::Unknown)
}

/// The id of `name` in `checks`, if it has one.
pub(crate) fn find_check(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id FROM checks WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

/// Whether SQLite says the file is not a database or is damaged.
pub(crate) fn is_corrupt(e: &StoreError) -> bool {
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
/// A corrupt file is counted in `metrics` (`lifeline_store_errors_total`,
/// `lifeline_storage_errors_total{store="history"}`).
pub(crate) fn open_rw(
    dir: &Path,
    metrics: &crate::metrics::Metrics,
) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(DB_FILE);
    match try_open_rw(&path) {
        Err(e) if is_corrupt(&e) => {
            metrics.store_errors.inc();
            metrics.storage_failed(
                "history",
                &format!("corrupt database moved aside: {e}"),
                "starting a new file",
            );
            move_corrupt_aside(&path, &e)?;
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
    // SQLite's own default page cache (2 MiB). Each commit touches one index leaf per
    // check, so with 10,000 checks a larger cache would fill with those leaves (16 MiB
    // held 16 MiB of the agent's RSS); at this size a leaf not cached is read back from
    // the OS page cache, which costs about 10 % more store CPU at 100,000 samples/s
    // (docs/history.md) and nothing in RSS.
    conn.pragma_update(None, "cache_size", CACHE_KIB)?;
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

/// Opens `<data_dir>/lifeline.db` read-only; errors unless it has tables of a schema
/// version this build knows.
pub(crate) fn open_ro(data_dir: &Path) -> Result<Connection, StoreError> {
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
    Ok(conn)
}

/// Moves the corrupt database at `path` aside (see [`move_aside`]) and logs why (`e`);
/// the next open starts a new file.
pub(crate) fn move_corrupt_aside(path: &Path, e: &StoreError) -> Result<(), StoreError> {
    let moved = move_aside(path)?;
    tracing::error!(
        path = %path.display(),
        moved_to = %moved.display(),
        error = %e,
        "history database is corrupt: moved it aside and started a new one"
    );
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
