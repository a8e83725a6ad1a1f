//! Whether the agent keeps its cadence: every [`WINDOW`] the scheduler-lag histogram's
//! last window is reduced to its p99 (the time attempts started after they were due).
//! Past [`BEHIND`], the agent is behind: `/health/detailed` says so in its agent
//! section, and one warning a minute says so in the log (never a line per check).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use prometheus::core::Metric;

use crate::metrics::Metrics;
use crate::time::Throttle;

/// Length of a measuring window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// A window whose p99 lag is past this means the machine cannot keep the cadence.
pub const BEHIND: Duration = Duration::from_millis(100);

/// The last window's figures (`/health/detailed` → `agent.scheduler`).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LagReport {
    /// Attempts started in the window.
    pub attempts: u64,
    /// Upper bound of the histogram bucket holding the 99th percentile, in seconds
    /// (`None` with no attempt; infinite past the largest bucket, 1 s).
    pub lag_p99_seconds: Option<f64>,
    /// Whether `lag_p99_seconds` is past [`BEHIND`].
    pub behind: bool,
}

/// The latest report, shared with the HTTP layer.
#[derive(Debug, Default)]
pub struct LagWatch {
    last: Mutex<LagReport>,
}

impl LagWatch {
    /// The last complete window.
    pub fn report(&self) -> LagReport {
        *self.last.lock()
    }

    /// Reduces a window every [`WINDOW`] until `cancel`.
    pub async fn run(self: Arc<Self>, metrics: Arc<Metrics>, cancel: CancellationToken) {
        let warn = Throttle::new(Duration::from_secs(60));
        let mut before = buckets(&metrics);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(WINDOW) => {}
            }
            let now = buckets(&metrics);
            let r = reduce(&before, &now);
            before = now;
            *self.last.lock() = r;
            if r.behind && warn.allow() {
                tracing::warn!(
                    lag_p99_ms = r.lag_p99_seconds.map(|s| s * 1000.0),
                    attempts = r.attempts,
                    "the agent cannot keep the checks' cadence: attempts start late (too many checks for this machine, or the machine is starved)"
                );
            }
        }
    }
}

/// `(upper bound, cumulative count)` of the lag histogram, `+Inf` last.
fn buckets(m: &Metrics) -> Vec<(f64, u64)> {
    let h = m.scheduler_lag.metric();
    let h = h.get_histogram();
    let mut v: Vec<(f64, u64)> = h
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    v.push((f64::INFINITY, h.get_sample_count()));
    v
}

/// One window from two snapshots. Only late attempts are observed, so the count is
/// attempts that started late at all; the p99 is over those.
fn reduce(before: &[(f64, u64)], now: &[(f64, u64)]) -> LagReport {
    let total = now
        .last()
        .map(|b| b.1)
        .unwrap_or(0)
        .saturating_sub(before.last().map(|b| b.1).unwrap_or(0));
    if total == 0 {
        return LagReport::default();
    }
    let rank = (total as f64 * 0.99).ceil() as u64;
    // Buckets never change between snapshots; a `before` of another shape counts as 0.
    let was = |i: usize| {
        if before.len() == now.len() {
            before[i].1
        } else {
            0
        }
    };
    let p99 = now
        .iter()
        .enumerate()
        .find(|(i, (_, c))| c.saturating_sub(was(*i)) >= rank)
        .map(|(_, (le, _))| *le);
    LagReport {
        attempts: total,
        lag_p99_seconds: p99,
        behind: p99.is_some_and(|s| s > BEHIND.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reduces_to_its_p99_and_says_when_behind() {
        let before = vec![(0.01, 10), (0.1, 10), (1.0, 10), (f64::INFINITY, 10)];
        let quiet = vec![(0.01, 110), (0.1, 110), (1.0, 110), (f64::INFINITY, 110)];
        let r = reduce(&before, &quiet);
        assert_eq!(
            (r.attempts, r.lag_p99_seconds, r.behind),
            (100, Some(0.01), false)
        );
        let late = vec![(0.01, 20), (0.1, 40), (1.0, 110), (f64::INFINITY, 110)];
        let r = reduce(&before, &late);
        assert_eq!((r.lag_p99_seconds, r.behind), (Some(1.0), true));
        assert_eq!(reduce(&before, &before).attempts, 0);
    }

    #[test]
    fn buckets_read_the_live_histogram() {
        let m = Metrics::new();
        assert!(!LagWatch::default().report().behind);
        let before = buckets(&m);
        for _ in 0..50 {
            m.scheduler_lag.observe(0.5);
        }
        let r = reduce(&before, &buckets(&m));
        assert_eq!(r.attempts, 50);
        assert!(r.behind);
    }
}
