//! Reading the history: read-only connections for the API and the CLI (history, uptime,
//! the checks known), the time window arguments they take, and the last known states the
//! agent restores at start.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

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
        let changes: Vec<(i64, Status)> = changes
            .into_iter()
            .map(|(at, st)| (at, status_of_name(&st)))
            .collect();
        let before = before.as_deref().map_or(Status::Unknown, status_of_name);
        let (up, down, unknown) = split_time(&runs, before, &changes, a, b);
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

/// Walks one check's status over `[a, b)`: `before` is its status at or before the
/// earliest change, `changes` its transitions in time order (those at or before `a` only
/// set the starting status). Calls `f(status, from, to)` for each stretch.
fn stretches(
    before: Status,
    changes: &[(i64, Status)],
    a: i64,
    b: i64,
    mut f: impl FnMut(Status, i64, i64),
) {
    let mut status = before;
    let mut from = a;
    for &(at, s) in changes {
        if at <= a {
            status = s;
            continue;
        }
        if at >= b {
            break;
        }
        f(status, from, at);
        status = s;
        from = at;
    }
    f(status, from, b);
}

/// Milliseconds of `[x, y)` inside the agent's `runs`.
fn running(runs: &[(i64, i64)], x: i64, y: i64) -> i64 {
    runs.iter()
        .map(|(rs, re)| (y.min(*re) - x.max(*rs)).max(0))
        .sum()
}

/// Time up (healthy, degraded), down and unknown within `[a, b)` while the agent ran.
fn split_time(
    runs: &[(i64, i64)],
    before: Status,
    changes: &[(i64, Status)],
    a: i64,
    b: i64,
) -> (i64, i64, i64) {
    let (mut up, mut down, mut unknown) = (0i64, 0i64, 0i64);
    stretches(before, changes, a, b, |s, x, y| {
        let t = running(runs, x, y);
        match s {
            Status::Healthy | Status::Degraded => up += t,
            Status::Unknown => unknown += t,
            _ => down += t,
        }
    });
    (up, down, unknown)
}

/// What the status page asks of the history (see [`Reader::page`]).
#[derive(Debug, Clone)]
pub struct PageQuery {
    /// The moment the page is for.
    pub now: SystemTime,
    /// Newest samples per check (the result bar and sparkline).
    pub bars: usize,
    /// Uptime windows back from `now` (at most 30 days each, the longest first or not).
    pub windows: Vec<Duration>,
    /// The score chart: its window back from `now` and its number of buckets.
    pub chart: (Duration, usize),
    /// The transitions timeline: its window back from `now` and the most rows returned.
    pub timeline: (Duration, usize),
}

/// One check's recent history, as the status page shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageCheck {
    /// The newest samples, newest first, at most [`PageQuery::bars`] (the same ones
    /// `history?limit=bars` returns).
    pub samples: Vec<Sample>,
    /// Uptime ratio over each of [`PageQuery::windows`], computed as [`Reader::uptime`]
    /// does; none without known time.
    pub uptime: Vec<Option<f64>>,
    /// Per chart bucket, oldest first: the time-weighted score of the status the check had
    /// (healthy 100, degraded 60, connecting 40, failing 0) while the agent ran and the
    /// status was known; none without such time.
    pub chart: Vec<Option<f64>>,
}

/// A transition and its check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckTransition {
    /// Check name.
    pub check: String,
    /// The transition.
    #[serde(flatten)]
    pub transition: Transition,
}

/// Everything the status page reads from the history, in one batch of queries whose
/// number does not grow with the number of checks.
#[derive(Debug, Clone, Default)]
pub struct PageHistory {
    /// By check name (checks with anything recorded).
    pub checks: HashMap<String, PageCheck>,
    /// Transitions of every check within [`PageQuery::timeline`], newest first.
    pub transitions: Vec<CheckTransition>,
}

/// The score the chart gives a stretch of `status` (none for unknown).
fn chart_score(status: Status) -> Option<f64> {
    match status {
        Status::Unknown => None,
        Status::Healthy => Some(100.0),
        Status::Degraded => Some(60.0),
        Status::Connecting => Some(40.0),
        Status::Unhealthy | Status::Disconnected => Some(0.0),
    }
}

impl Reader {
    /// The status page's history for every check at once: the newest samples, uptime over
    /// each window, the score chart and the transitions timeline. A handful of statements
    /// whatever the number of checks (each per-check lookup is an index seek).
    pub fn page(&self, q: &PageQuery) -> Result<PageHistory, StoreError> {
        const MONTH: Duration = Duration::from_secs(30 * 86_400);
        let now = unix_ms(q.now);
        let span = |d: Duration| i64::try_from(d.min(MONTH).as_millis()).unwrap_or(i64::MAX);
        let longest = q
            .windows
            .iter()
            .copied()
            .chain([q.chart.0, q.timeline.0])
            .map(span)
            .max()
            .unwrap_or(0);
        let from = now - longest;
        let names: HashMap<i64, String> = self
            .conn
            .prepare_cached("SELECT id, name FROM checks")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut out = PageHistory::default();

        // The newest `bars` samples of each check: the n-th newest `at` bounds an index
        // range per check (CROSS JOIN keeps `checks` the outer loop).
        let bars = q.bars.max(1) as i64;
        let mut st = self.conn.prepare_cached(
            "SELECT s.check_id, s.rowid, s.at, s.status, s.latency_us
             FROM checks c CROSS JOIN samples s
             WHERE s.check_id = c.id AND s.at <= ?2 AND s.at >= COALESCE(
                (SELECT at FROM samples WHERE check_id = c.id AND at <= ?2
                 ORDER BY at DESC LIMIT 1 OFFSET ?1 - 1), 0)",
        )?;
        let mut rows: HashMap<i64, Vec<(i64, i64, Sample)>> = HashMap::new();
        for r in st.query_map(params![bars, now], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })? {
            let (id, rowid, at, status, lat) = r?;
            rows.entry(id).or_default().push((
                at,
                rowid,
                Sample {
                    at: from_unix_ms(at),
                    status: status_of_code(status),
                    latency_ms: lat.map(|us| us as f64 / 1000.0),
                },
            ));
        }

        // Status before the longest window, and every change since.
        let mut before: HashMap<i64, Status> = HashMap::new();
        let mut st = self.conn.prepare_cached(
            "SELECT c.id, (SELECT status FROM transitions WHERE check_id = c.id AND at <= ?1
                           ORDER BY at DESC, rowid DESC LIMIT 1)
             FROM checks c",
        )?;
        for r in st.query_map(params![from], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
        })? {
            let (id, s) = r?;
            before.insert(id, s.as_deref().map_or(Status::Unknown, status_of_name));
        }
        let mut changes: HashMap<i64, Vec<(i64, Status)>> = HashMap::new();
        let timeline_from = now - span(q.timeline.0);
        let mut st = self.conn.prepare_cached(
            "SELECT check_id, at, status, previous_status, error_kind, message
             FROM transitions WHERE at > ?1 AND at <= ?2 ORDER BY at, rowid",
        )?;
        for r in st.query_map(params![from, now], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
            ))
        })? {
            let (id, at, status, previous, error_kind, message) = r?;
            let status = status_of_name(&status);
            changes.entry(id).or_default().push((at, status));
            if at >= timeline_from
                && let Some(name) = names.get(&id)
            {
                out.transitions.push(CheckTransition {
                    check: name.clone(),
                    transition: Transition {
                        at: from_unix_ms(at),
                        status,
                        previous_status: status_of_name(&previous),
                        error_kind,
                        message,
                    },
                });
            }
        }
        out.transitions.reverse();
        out.transitions.truncate(q.timeline.1);

        let runs = self.runs(from, now, now)?;
        let (chart_span, buckets) = (span(q.chart.0), q.chart.1.max(1) as i64);
        let chart_from = now - chart_span;
        for (id, name) in &names {
            let mut samples = rows.remove(id).unwrap_or_default();
            samples.sort_by_key(|x| std::cmp::Reverse((x.0, x.1)));
            samples.truncate(q.bars);
            let start = before.get(id).copied().unwrap_or(Status::Unknown);
            let ch = changes.get(id).map(Vec::as_slice).unwrap_or(&[]);
            let uptime = q
                .windows
                .iter()
                .map(|w| {
                    let (up, down, _) = split_time(&runs, start, ch, now - span(*w), now);
                    (up + down > 0).then(|| up as f64 / (up + down) as f64)
                })
                .collect();
            let mut sums = vec![(0.0f64, 0i64); buckets as usize];
            stretches(start, ch, chart_from, now, |s, x, y| {
                let Some(score) = chart_score(s) else {
                    return;
                };
                // Spread the stretch over the buckets it covers.
                let width = (chart_span / buckets).max(1);
                let mut t = x;
                while t < y {
                    let i = ((t - chart_from) / width).clamp(0, buckets - 1);
                    let end = if i == buckets - 1 {
                        y
                    } else {
                        y.min(chart_from + (i + 1) * width)
                    };
                    let ms = running(&runs, t, end);
                    sums[i as usize].0 += score * ms as f64;
                    sums[i as usize].1 += ms;
                    t = end;
                }
            });
            let chart = sums
                .into_iter()
                .map(|(s, ms)| (ms > 0).then(|| s / ms as f64))
                .collect();
            out.checks.insert(
                name.clone(),
                PageCheck {
                    samples: samples.into_iter().map(|(_, _, s)| s).collect(),
                    uptime,
                    chart,
                },
            );
        }
        Ok(out)
    }
}
