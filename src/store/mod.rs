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
//!
//! Where things are:
//! - `handle`: the [`Store`] the agent holds (hot path, flush, prune, shutdown);
//! - `writer`: the writer thread (batching, retries, retention pruning);
//! - `reader`: read-only queries (history, uptime) and the states restored at start;
//! - `db`: opening the file (pragmas, migrations in `schema.sql`, corrupt files) and the
//!   rows of each table.

mod db;
mod handle;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use handle::Store;
pub use reader::{
    BadTime, CheckTransition, History, PageCheck, PageHistory, PageQuery, Reader, Sample,
    Transition, Uptime, parse_time,
};

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "lifeline.db";

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
