//! Reading the history: read-only connections for the API and the CLI (history, uptime,
//! the checks known), the time window arguments they take, and the last known states the
//! agent restores at start.

use std::path::Path;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::StoreError;
use super::db::{self, HEARTBEAT_EVERY, find_check, status_of_code, status_of_name};
use crate::check::ErrorKind;
use crate::health::{Restored, Status};
use crate::time::{from_unix_ms, unix_ms};

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
            status: status_of_name(&r.get::<_, String>(1)?),
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

/// A read-only connection for the API and the CLI (works while the agent writes).
pub struct Reader {
    conn: Connection,
}

impl Reader {
    /// Opens `<data_dir>/lifeline.db` read-only.
    pub fn open(data_dir: &Path) -> Result<Reader, StoreError> {
        Ok(Reader {
            conn: db::open_ro(data_dir)?,
        })
    }

    fn id(&self, check: &str) -> Result<Option<i64>, StoreError> {
        find_check(&self.conn, check)
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
                    status: status_of_name(&r.get::<_, String>(1)?),
                    previous_status: status_of_name(&r.get::<_, String>(2)?),
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
        let mut status = before.as_deref().map_or(Status::Unknown, status_of_name);
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
            status = status_of_name(&s);
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
