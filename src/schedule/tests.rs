//! Supervisor timing under paused tokio time: backoff sequence, max attempts, force-check,
//! one attempt in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::check::{BuildEnv, KindSpec};
use crate::config::{BackoffConfig, Timing};
use crate::health::CheckState;

#[derive(Debug)]
struct FakeSpec;
impl KindSpec for FakeSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        unreachable!("tests build FakeCheck directly")
    }
}

/// A probe that fails (or succeeds) as told, records when it was called and how many
/// calls overlapped.
#[derive(Default)]
struct FakeCheck {
    calls: Mutex<Vec<Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    succeed: std::sync::atomic::AtomicBool,
    takes: Mutex<Duration>,
}

impl Check for FakeCheck {
    fn probe<'a>(&'a self, _at: &'a Attempt) -> crate::check::BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.calls.lock().push(Instant::now());
            let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(n, Ordering::SeqCst);
            let takes = *self.takes.lock();
            tokio::time::sleep(takes).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self.succeed.load(Ordering::SeqCst) {
                Outcome::up(Duration::from_millis(1))
            } else {
                Outcome::down(
                    CheckError::new(ErrorKind::Refused, "refused"),
                    Duration::ZERO,
                )
            }
        })
    }
}

fn config(jitter: Duration, max_attempts: u32) -> CheckConfig {
    CheckConfig {
        name: "fake".into(),
        kind: "tcp",
        mode: Mode::Probe,
        labels: Default::default(),
        weight: 1.0,
        critical: true,
        depends_on: vec![],
        timing: Timing {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
            backoff: BackoffConfig {
                base: Duration::from_secs(1),
                max: Duration::from_secs(30),
                multiplier: 2.0,
                jitter,
                max_attempts,
            },
            ..Timing::default()
        },
        spec: Arc::new(FakeSpec),
        fingerprint: 0,
    }
}

fn start(check: Arc<FakeCheck>, c: CheckConfig) -> (Arc<Shared>, Handle, CancellationToken) {
    let metrics = Metrics::new();
    let shared = Shared::new(
        Arc::new(StateTable::new()),
        Bus::new(1024),
        metrics.clone(),
        Arc::new(vec![]),
    );
    let state = CheckState::new(&c);
    let m = metrics.check(&state);
    let entry = Arc::new(Entry {
        state: parking_lot::Mutex::new(state),
    });
    shared
        .states
        .replace(vec![c.name.clone()], vec![(c.name.clone(), entry.clone())]);
    let cancel = CancellationToken::new();
    let h = spawn(
        shared.clone(),
        check,
        vec![Member {
            config: c,
            entry,
            metrics: m,
        }],
        42,
        &cancel,
    );
    (shared, h, cancel)
}

/// Waits (in paused time) until the fake has been called `n` times.
async fn calls(f: &FakeCheck, n: usize) -> Vec<Instant> {
    for _ in 0..100_000 {
        if f.calls.lock().len() >= n {
            return f.calls.lock().clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fake was called {} times, wanted {n}", f.calls.lock().len());
}

fn gaps(calls: &[Instant]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn backoff_sequence_without_jitter_is_exact() {
    let f = Arc::new(FakeCheck::default());
    let (_s, h, _c) = start(f.clone(), config(Duration::ZERO, 0));
    let c = calls(&f, 8).await;
    let secs: Vec<u64> = gaps(&c).iter().map(|d| d.as_millis() as u64).collect();
    assert_eq!(secs, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn jitter_is_added_within_range() {
    let f = Arc::new(FakeCheck::default());
    let (_s, h, _c) = start(f.clone(), config(Duration::from_secs(1), 0));
    let c = calls(&f, 8).await;
    for (i, (g, base)) in gaps(&c).iter().zip([1u64, 2, 4, 8, 16, 30, 30]).enumerate() {
        let base = Duration::from_secs(base);
        assert!(
            *g >= base && *g < base + Duration::from_secs(1),
            "gap {i}: {g:?}"
        );
    }
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn max_attempts_reached_is_emitted_once_and_retries_continue_every_max() {
    let f = Arc::new(FakeCheck::default());
    let (s, h, _c) = start(f.clone(), config(Duration::ZERO, 4));
    let mut rx = s.bus.subscribe();
    let c = calls(&f, 9).await;
    let secs: Vec<u64> = gaps(&c).iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 30, 30, 30, 30, 30]);
    let mut reached = 0;
    while let Ok(e) = rx.try_recv() {
        if e.event == "connection:max_attempts_reached" {
            reached += 1;
            assert_eq!(e.data["attempt"], 4);
        }
    }
    assert_eq!(reached, 1);
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn force_check_resets_backoff_and_runs_at_once() {
    let f = Arc::new(FakeCheck::default());
    let (s, h, _c) = start(f.clone(), config(Duration::ZERO, 0));
    calls(&f, 5).await; // now waiting 16 s
    let before = Instant::now();
    h.force().await;
    let c = calls(&f, 6).await;
    assert!(
        c[5] - before < Duration::from_millis(50),
        "forced attempt ran at once"
    );
    assert_eq!(
        s.states.state("fake").unwrap().attempt,
        1,
        "backoff restarted from 1"
    );
    let c = calls(&f, 7).await;
    assert_eq!(
        c[6] - c[5],
        Duration::from_secs(1),
        "next delay is base again"
    );
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn never_two_attempts_in_flight() {
    let f = Arc::new(FakeCheck::default());
    *f.takes.lock() = Duration::from_secs(2);
    f.succeed.store(true, Ordering::SeqCst);
    let mut c = config(Duration::ZERO, 0);
    c.timing.interval = Duration::from_millis(500);
    let (_s, h, _c) = start(f.clone(), c);
    calls(&f, 2).await;
    // Force-checks arriving while an attempt runs wait for it; they never overlap.
    let h = Arc::new(h);
    let forces: Vec<_> = (0..5)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.force().await })
        })
        .collect();
    for x in forces {
        x.await.unwrap();
    }
    calls(&f, 8).await;
    assert_eq!(f.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn hanging_probe_is_cut_off_at_timeout() {
    let f = Arc::new(FakeCheck::default());
    *f.takes.lock() = Duration::from_secs(3600);
    let (s, h, _c) = start(f.clone(), config(Duration::ZERO, 0));
    let mut rx = s.bus.subscribe();
    calls(&f, 2).await;
    let st = s.states.state("fake").unwrap();
    assert_eq!(st.error_kind, Some(ErrorKind::Timeout));
    let mut failed = false;
    while let Ok(e) = rx.try_recv() {
        failed |= e.event == "connection:failed" && e.data["error_kind"] == "timeout";
    }
    assert!(failed, "a connection:failed event with error_kind timeout");
    h.stop(Duration::from_secs(1)).await;
}
