//! Supervisor timing under paused tokio time: backoff sequence, max attempts, force-check,
//! one attempt in flight; session heartbeats (degraded at `poor_after`, stale drop at
//! `stale_after`, backoff across connections that never answer, reset by the first answer).

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

thread_local! {
    /// The size of the future the last [`spawn`] on this thread started.
    pub(super) static FUTURE_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

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
        placement: crate::cluster::Placement::new(),
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

fn start(check: Arc<dyn Check>, c: CheckConfig) -> (Arc<Shared>, Handle, CancellationToken) {
    start_seeded(check, c, 42)
}

fn start_seeded(
    check: Arc<dyn Check>,
    c: CheckConfig,
    seed: u64,
) -> (Arc<Shared>, Handle, CancellationToken) {
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
        .replace(&[c.name.as_str()], vec![(c.name.clone(), entry.clone())]);
    let cancel = CancellationToken::new();
    let h = spawn(
        shared.clone(),
        check,
        vec![Member {
            config: Arc::new(c),
            entry,
            metrics: m,
        }],
        seed,
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

/// A session kind: every connect succeeds at once; the session answers heartbeats (after
/// 1 ms) while `answer` is set and ignores them otherwise, like a peer that accepts
/// connections but stopped answering.
#[derive(Default)]
struct FakeSessionCheck {
    connects: Mutex<Vec<Instant>>,
    answers: Arc<Mutex<Vec<Instant>>>,
    answer: Arc<std::sync::atomic::AtomicBool>,
}

impl Check for FakeSessionCheck {
    fn probe<'a>(&'a self, _at: &'a Attempt) -> crate::check::BoxFuture<'a, Outcome> {
        Box::pin(async { unreachable!("session checks are not probed") })
    }

    fn connect<'a>(
        &'a self,
        _at: &'a Attempt,
    ) -> crate::check::BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move {
            self.connects.lock().push(Instant::now());
            let session = FakeSession {
                answer: self.answer.clone(),
                answers: self.answers.clone(),
            };
            Ok(Connected {
                session: Box::new(session),
                outcome: Outcome::up(Duration::from_millis(1)),
            })
        })
    }
}

struct FakeSession {
    answer: Arc<std::sync::atomic::AtomicBool>,
    answers: Arc<Mutex<Vec<Instant>>>,
}

impl crate::check::Session for FakeSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> crate::check::BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let bye = || CheckError::new(ErrorKind::Closed, "agent closed the session");
            loop {
                tokio::select! {
                    _ = io.shutdown.cancelled() => return bye(),
                    b = io.beats.recv() => {
                        if b.is_none() {
                            return bye();
                        }
                        if self.answer.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            self.answers.lock().push(Instant::now());
                            if io.report.send(Outcome::up(Duration::from_millis(1))).await.is_err() {
                                return bye();
                            }
                        }
                    }
                }
            }
        })
    }
}

/// Session timing: a beat every 1 s (0.5 s to answer), degraded after 3 s, dropped after
/// 6 s; backoff 1, 2, 4, 8 s without jitter, `max_attempts` 5; one unanswered heartbeat
/// would be enough to make a probe unhealthy.
fn session_config() -> CheckConfig {
    let mut c = config(Duration::ZERO, 5);
    c.mode = Mode::Session;
    c.kind = "websocket";
    c.timing.interval = Duration::from_secs(1);
    c.timing.timeout = Duration::from_millis(500);
    c.timing.unhealthy_threshold = 1;
    c.timing.backoff.max = Duration::from_secs(8);
    c.timing.heartbeat.poor_after = Duration::from_secs(3);
    c.timing.heartbeat.stale_after = Duration::from_secs(6);
    c
}

/// Every event of the bus with the (paused) time it was published.
type Log = Arc<Mutex<Vec<(Instant, &'static str, serde_json::Value)>>>;

fn record(s: &Shared) -> Log {
    let log: Log = Arc::default();
    let mut rx = s.bus.subscribe();
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok(e) = rx.recv().await {
            l.lock()
                .push((Instant::now(), e.event, e.data.value().clone()));
        }
    });
    log
}

/// Waits (in paused time) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

fn named(log: &Log, name: &str) -> Vec<(Instant, serde_json::Value)> {
    log.lock()
        .iter()
        .filter(|(_, n, _)| *n == name)
        .map(|(t, _, d)| (*t, d.clone()))
        .collect()
}

fn timeouts(s: &Shared) -> f64 {
    s.metrics
        .render()
        .lines()
        .find(|l| {
            l.starts_with("lifeline_check_attempts_total{")
                && l.contains("check=\"fake\"")
                && l.contains("result=\"timeout\"")
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(start_paused = true)]
async fn unanswered_heartbeats_degrade_at_poor_after_and_drop_stale_at_stale_after() {
    let f = Arc::new(FakeSessionCheck::default());
    f.answer.store(true, Ordering::SeqCst);
    let (s, h, _c) = start(f.clone(), session_config());
    let log = record(&s);
    until("healthy", || {
        s.states.state("fake").unwrap().status == crate::health::Status::Healthy
    })
    .await;
    assert_eq!(f.connects.lock().len(), 1);
    f.answer.store(false, Ordering::SeqCst);
    let last = *f.answers.lock().last().unwrap();
    until("stale drop", || {
        !named(&log, "connection:disconnected").is_empty()
    })
    .await;

    // Unanswered beats were counted as timeouts, but moved no status before poor_after.
    assert!(timeouts(&s) >= 2.0, "timeouts counted: {}", timeouts(&s));
    let changes: Vec<(Instant, String)> = log
        .lock()
        .iter()
        .filter(|(_, n, _)| *n != "connection:health_check" && *n != "connection:failed")
        .map(|(t, n, d)| (*t, format!("{n} {}", d["status"].as_str().unwrap_or(""))))
        .collect();
    let degraded = named(&log, "connection:health_degraded");
    assert_eq!(degraded.len(), 1, "{changes:?}");
    assert_eq!(
        degraded[0].0 - last,
        Duration::from_secs(3),
        "degraded at poor_after"
    );
    let dropped = named(&log, "connection:disconnected");
    assert_eq!(dropped.len(), 1, "{changes:?}");
    assert_eq!(
        dropped[0].0 - last,
        Duration::from_secs(6),
        "dropped at stale_after"
    );
    assert_eq!(dropped[0].1["error_kind"], "stale");
    assert_eq!(dropped[0].1["status"], "disconnected");
    assert_eq!(dropped[0].1["previous_status"], "degraded");
    // Between the last answer and the drop: healthy (counted failures), then degraded.
    let failed = named(&log, "connection:failed");
    assert!(
        failed
            .iter()
            .filter(|(t, _)| *t < dropped[0].0)
            .all(|(_, d)| d["error_kind"] == "timeout"
                && matches!(d["status"].as_str(), Some("healthy" | "degraded"))),
        "{failed:?}"
    );
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn connections_never_answered_back_off_and_reach_max_attempts_once() {
    let f = Arc::new(FakeSessionCheck::default());
    let (s, h, _c) = start(f.clone(), session_config());
    let log = record(&s);
    until("7 connects", || f.connects.lock().len() >= 7).await;
    let c = f.connects.lock().clone();
    let secs: Vec<u64> = gaps(&c).iter().map(|d| d.as_secs()).collect();
    // stale_after (6 s) on each connection, then 1, 2, 4, 8, 8, 8 s of backoff.
    assert_eq!(secs, [7, 8, 10, 14, 14, 14]);
    let delays: Vec<u64> = named(&log, "connection:reconnecting")
        .iter()
        .map(|(_, d)| d["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(delays[..6], [1000, 2000, 4000, 8000, 8000, 8000]);
    let reached = named(&log, "connection:max_attempts_reached");
    assert_eq!(reached.len(), 1);
    assert_eq!(reached[0].1["attempt"], 5);
    let statuses: Vec<String> = log
        .lock()
        .iter()
        .filter_map(|(_, _, d)| d["status"].as_str().map(str::to_owned))
        .collect();
    assert!(
        statuses
            .iter()
            .all(|x| x == "connecting" || x == "disconnected"),
        "never claimed up: {statuses:?}"
    );
    assert!(named(&log, "connection:connected").is_empty());
    let drops = named(&log, "connection:disconnected");
    assert_eq!(drops.len(), 1, "one change to disconnected, then it stays");
    assert_eq!(drops[0].1["error_kind"], "stale");
    assert_eq!(drops[0].1["previous_status"], "connecting");
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn first_answered_heartbeat_resets_the_backoff() {
    let f = Arc::new(FakeSessionCheck::default());
    let (s, h, _c) = start(f.clone(), session_config());
    let log = record(&s);
    until("3 reconnects scheduled", || {
        named(&log, "connection:reconnecting").len() >= 3
    })
    .await;
    assert_eq!(s.states.state("fake").unwrap().attempt, 3);
    f.answer.store(true, Ordering::SeqCst);
    until("reconnected", || {
        !named(&log, "connection:reconnected").is_empty()
    })
    .await;
    let st = s.states.state("fake").unwrap();
    assert_eq!(st.status, crate::health::Status::Healthy);
    assert_eq!(st.attempt, 0, "backoff reset by the answer");
    // The answer came one round trip after the handshake, not one interval later.
    let connect = *f.connects.lock().last().unwrap();
    let first = f.answers.lock()[0];
    assert_eq!(first - connect, Duration::from_millis(1));
    f.answer.store(false, Ordering::SeqCst);
    until("4 reconnects scheduled", || {
        named(&log, "connection:reconnecting").len() >= 4
    })
    .await;
    let delays: Vec<u64> = named(&log, "connection:reconnecting")
        .iter()
        .map(|(_, d)| d["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(
        delays,
        [1000, 2000, 4000, 1000],
        "counting starts again at 1"
    );
    assert_eq!(named(&log, "connection:disconnected").len(), 2);
    h.stop(Duration::from_secs(1)).await;
}

#[test]
fn next_slot_keeps_a_check_on_its_slot() {
    let s = Instant::now() + Duration::from_secs(100);
    let i = Duration::from_secs(5);
    let ms = Duration::from_millis;
    // On its slot: exactly one interval later, also when the attempt began a little late.
    assert_eq!(next_slot(s, i, s), s + i);
    assert_eq!(next_slot(s, i, s + ms(900)), s + i);
    assert_eq!(next_slot(s, i, s + i * 7 + ms(2400)), s + i * 8);
    // Off its slot (first attempt, recovery): back to it, between 0.5 and 1.5 intervals on.
    assert_eq!(next_slot(s, i, s - ms(4000)), s);
    assert_eq!(next_slot(s, i, s - ms(2500)), s);
    assert_eq!(next_slot(s, i, s - ms(2400)), s + i);
    assert_eq!(next_slot(s, i, s + ms(2600)), s + i * 2);
    assert_eq!(next_slot(s, Duration::ZERO, s + i), s + i);
}

/// 50 checks at 5 s: after their first attempts (all within the first second, so every
/// check has a status quickly), their attempts are spread over the whole interval instead
/// of all falling in the same second of every five, and each check keeps a steady
/// interval.
#[tokio::test(start_paused = true)]
async fn probes_spread_over_the_interval() {
    let t0 = Instant::now();
    let mut fakes = vec![];
    let mut handles = vec![];
    for n in 0..50u64 {
        let f = Arc::new(FakeCheck::default());
        f.succeed.store(true, Ordering::SeqCst);
        let mut c = config(Duration::ZERO, 0);
        c.name = format!("fake-{n}");
        handles.push(start_seeded(f.clone(), c, 1000 + n));
        fakes.push(f);
    }
    let mut by_second = [0usize; 5];
    for f in &fakes {
        let calls = calls(f, 5).await;
        assert!(
            calls[0] - t0 <= Duration::from_secs(1),
            "first attempt within 1 s"
        );
        for g in &gaps(&calls)[1..] {
            assert_eq!(*g, Duration::from_secs(5), "steady interval: {calls:?}");
        }
        for c in &calls[2..5] {
            by_second[((*c - t0).as_millis() / 1000 % 5) as usize] += 1;
        }
    }
    // 150 attempts over the five seconds of the interval: about 30 each, never all in one.
    for (sec, n) in by_second.iter().enumerate() {
        assert!(
            (10..=60).contains(n),
            "attempts in second {sec} of the interval: {by_second:?}"
        );
    }
    for (_, h, _) in handles {
        h.stop(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn mailbox_delivers_closes_and_never_strands_a_request() {
    use super::{Command, Inbox, Mail, Mailbox};
    let mb = Arc::new(Mailbox::default());
    let (mail, inbox) = (Mail(mb.clone()), Inbox(mb));
    // A request sent before anyone waits is still delivered.
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    mail.send(Command::Force(tx));
    let Some(Command::Force(reply)) = inbox.recv().await else {
        panic!("request lost");
    };
    reply.send(()).unwrap();
    rx.try_recv().expect("answered");
    // A waiting supervisor is woken by a request.
    let waiter = tokio::spawn(async move {
        let got = inbox.recv().await.is_some();
        (got, inbox)
    });
    tokio::task::yield_now().await;
    let (tx, _rx) = tokio::sync::oneshot::channel();
    mail.send(Command::Force(tx));
    let (got, inbox) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap();
    assert!(got);
    // The supervisor gone: a request is answered at once instead of waiting forever.
    drop(inbox);
    let (tx, rx) = tokio::sync::oneshot::channel();
    mail.send(Command::Force(tx));
    assert!(rx.await.is_err(), "the request's sender was dropped");
    // The handle gone: the supervisor's next receive ends.
    let mb = Arc::new(Mailbox::default());
    let (mail, inbox) = (Mail(mb.clone()), Inbox(mb));
    drop(mail);
    assert!(inbox.recv().await.is_none());
}

/// The per-supervisor structures' sizes, so a change that bloats them is noticed (there
/// is one supervisor per check; see `health::tests::per_check_structures_stay_small`).
/// A probe supervisor's task is about 1 KB in all (its future holds a `Supervisor` and
/// its wait; the attempt is boxed while it runs); measured with massif, BENCHMARKS.md.
#[test]
fn per_supervisor_structures_stay_small() {
    use std::mem::size_of;
    // Measured when this test was written: 224, 72 and 96 bytes; about 10 % headroom.
    let sizes = [
        ("Supervisor", size_of::<Supervisor>(), 248),
        ("Mailbox", size_of::<Mailbox>(), 80),
        ("Handle", size_of::<Handle>(), 106),
    ];
    for (name, size, bound) in sizes {
        assert!(size <= bound, "{name} is {size} bytes (bound {bound})");
    }
}

/// A probe supervisor's future between two probes holds its wait only: the attempt's
/// future is boxed while it runs. (Sizes of unoptimised builds, which tests are; a
/// release build's are smaller.)
#[tokio::test(start_paused = true)]
async fn a_probe_task_at_rest_holds_only_its_wait() {
    let (_shared, h, cancel) = start(Arc::new(FakeCheck::default()), config(Duration::ZERO, 0));
    let bytes = FUTURE_BYTES.get();
    eprintln!("probe supervisor future: {bytes} bytes");
    assert!(
        bytes > 0 && bytes <= 850,
        "probe supervisor future is {bytes} bytes"
    );
    cancel.cancel();
    h.stop(Duration::from_secs(1)).await;
}

#[test]
fn on_grid_moves_back_to_a_multiple_of_the_grid() {
    let epoch = Instant::now();
    for ms in [0u64, 1, 9, 10, 11, 49, 50, 51, 999, 1_000, 12_345] {
        let t = epoch + Duration::from_millis(ms);
        let g = on_grid(epoch, t, GRID);
        assert!(g <= t && t - g < GRID, "{ms} ms");
        assert_eq!((g - epoch).as_millis() % GRID.as_millis(), 0, "{ms} ms");
    }
    // Slots on the grid stay on it: `next_slot` steps by whole intervals.
    let slot = on_grid(epoch, epoch + Duration::from_millis(1_234), GRID);
    let next = next_slot(
        slot,
        Duration::from_secs(1),
        slot + Duration::from_millis(3),
    );
    assert_eq!((next - epoch).as_millis() % GRID.as_millis(), 0);
    // A zero step (a zero interval) leaves the instant alone.
    let t = epoch + Duration::from_micros(1_234);
    assert_eq!(on_grid(epoch, t, Duration::ZERO), t);
}

#[test]
fn the_grid_holds_about_a_batch_of_probes() {
    assert_eq!(grid_step(1_000.0), GRID);
    assert_eq!(grid_step(2_000.0), GRID);
    assert_eq!(grid_step(10_000.0), Duration::from_millis(10));
    assert_eq!(grid_step(1e9), GRID_MIN);
    assert_eq!(grid_step(0.0), GRID);
    assert_eq!(grid_step(f64::NAN), GRID);
    // A short interval gets a finer grid than the agent's step.
    assert_eq!(grid_for(GRID, Duration::from_secs(1)), GRID);
    assert_eq!(
        grid_for(GRID, Duration::from_millis(200)),
        Duration::from_millis(10)
    );
    assert_eq!(grid_for(GRID, Duration::ZERO), Duration::ZERO);
    // Twenty slots per interval at least: 20 checks at 200 ms fall on 20 distinct slots.
    let epoch = Instant::now();
    let iv = Duration::from_millis(200);
    let slots: std::collections::BTreeSet<_> = (0..20u32)
        .map(|i| on_grid(epoch, epoch + iv * i / 20, grid_for(GRID, iv)))
        .collect();
    assert_eq!(slots.len(), 20);
}

#[test]
fn the_agent_sizes_its_grid_from_the_configured_rate() {
    let shared = Shared::new(
        Arc::new(StateTable::new()),
        Bus::new(16),
        Metrics::new(),
        Arc::new(vec![]),
    );
    assert_eq!(shared.grid(), GRID);
    let every = |n: usize, iv: Duration| std::iter::repeat_n(iv, n);
    shared.set_probe_intervals(every(10_000, Duration::from_secs(1)));
    assert_eq!(shared.grid(), Duration::from_millis(10));
    // 100,000 checks at 10 s are 10,000 probes a second too.
    shared.set_probe_intervals(every(100_000, Duration::from_secs(10)));
    assert_eq!(shared.grid(), Duration::from_millis(10));
    shared
        .set_probe_intervals(every(1_000, Duration::from_secs(1)).chain(every(5, Duration::ZERO)));
    assert_eq!(shared.grid(), GRID);
}
