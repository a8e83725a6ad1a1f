//! A session peer that stops answering (SPEC §4, Sessions). The fault is real: the peer's
//! process is SIGSTOPped ([`Frozen`], through the PIDs of a server the test started; the
//! kernel still accepts TCP connections into the listen backlog, so the peer accepts but
//! never answers), or a test server stops reading its sockets. [`stops_answering`] drives
//! the scenario and asserts the sequence the agent's event bus shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeline::health::Status;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::{TestAgent, wait_for};

/// Processes stopped with SIGSTOP; SIGCONT again on [`Frozen::thaw`] or on drop (so a
/// failing test never leaves a stopped server behind).
pub struct Frozen {
    pids: Vec<u32>,
}

fn pid(p: u32) -> Pid {
    Pid::from_raw(i32::try_from(p).expect("pid fits i32"))
}

impl Frozen {
    /// SIGSTOPs every one of `pids` (processes the test started), in order.
    pub fn freeze(pids: Vec<u32>) -> Self {
        assert!(
            !pids.is_empty(),
            "no server process to stop (was it killed?)"
        );
        for p in &pids {
            kill(pid(*p), Signal::SIGSTOP).unwrap_or_else(|e| panic!("SIGSTOP {p}: {e}"));
        }
        Self { pids }
    }

    /// SIGCONTs them.
    pub fn thaw(mut self) {
        self.cont();
    }

    fn cont(&mut self) {
        for p in self.pids.drain(..) {
            let _ = kill(pid(p), Signal::SIGCONT);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.cont();
    }
}

/// One event about the watched check, with the moment it was received.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Received at.
    pub at: Instant,
    /// SPEC name (`connection:…`), or `lagged` if the recorder missed events.
    pub event: &'static str,
    /// The event's data.
    pub data: Value,
}

impl Entry {
    fn status(&self) -> &str {
        self.data["status"].as_str().unwrap_or("")
    }
}

/// Every event of one check from the moment it was made.
pub struct Timeline {
    log: Arc<Mutex<Vec<Entry>>>,
    task: JoinHandle<()>,
}

impl Timeline {
    /// Starts recording the events of `check`.
    pub fn record(a: &TestAgent, check: &str) -> Self {
        let mut rx = a.events();
        let log: Arc<Mutex<Vec<Entry>>> = Arc::default();
        let l = log.clone();
        let check = check.to_string();
        let task = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) if e.data["check"] == check.as_str() => l.lock().push(Entry {
                        at: Instant::now(),
                        event: e.event,
                        data: e.data.value().clone(),
                    }),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => l.lock().push(Entry {
                        at: Instant::now(),
                        event: "lagged",
                        data: Value::Null,
                    }),
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Self { log, task }
    }

    /// A copy of what was recorded so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.log.lock().clone()
    }

    /// The recorded events named `event`.
    pub fn named(&self, event: &str) -> Vec<Entry> {
        self.log
            .lock()
            .iter()
            .filter(|e| e.event == event)
            .cloned()
            .collect()
    }

    /// Waits until `done` holds for the entries, or panics after `within`.
    pub async fn wait(&self, within: Duration, what: &str, done: impl Fn(&[Entry]) -> bool) {
        let log = self.log.clone();
        wait_for(within, what, || done(&log.lock()).then_some(())).await;
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The heartbeat settings of the watched check.
#[derive(Debug, Clone, Copy)]
pub struct Beats {
    /// `interval`.
    pub interval: Duration,
    /// `heartbeat.poor_after`.
    pub poor_after: Duration,
    /// `heartbeat.stale_after`.
    pub stale_after: Duration,
}

/// What [`stops_answering`] measured, from the moment the peer stopped answering.
#[derive(Debug)]
pub struct Measured {
    /// To `connection:health_degraded`.
    pub degraded_after: Duration,
    /// To `connection:disconnected` with `error_kind = "stale"`.
    pub dropped_after: Duration,
    /// `delay_ms` of the retries while the peer did not answer.
    pub delays_ms: Vec<u64>,
    /// From healing the peer to `connection:reconnected`.
    pub healed_after: Duration,
}

/// How late an event bounded by the feature may come on a loaded machine.
const SLACK: Duration = Duration::from_millis(750);

fn attempts(a: &TestAgent, check: &str, result: &str) -> f64 {
    a.agent
        .shared
        .metrics
        .render()
        .lines()
        .find(|l| {
            l.starts_with("lifeline_check_attempts_total{")
                && l.contains(&format!("check=\"{check}\""))
                && l.contains(&format!("result=\"{result}\""))
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

/// With session `check` of `a` healthy, runs `stop` (the peer keeps its connections but
/// answers nothing) and asserts, from the event bus:
/// * unanswered heartbeats are counted as `timeout` attempts while the status stays
///   `healthy`, until `connection:health_degraded` at `poor_after` after the last answer;
/// * `connection:disconnected` with `error_kind = "stale"` at `stale_after`;
/// * then retries (`connection:reconnecting`) with growing `delay_ms`, and
///   `connection:max_attempts_reached` once (the check must set `backoff.max_attempts = 3`),
///   with no status change and nothing claiming `healthy` in between — whether the peer
///   refuses the handshake (a stopped process) or completes it and then stays silent.
///
/// Then runs `heal` and asserts `connection:reconnected` and `healthy` again with the
/// backoff metric back to 0.
pub async fn stops_answering<G>(
    a: &TestAgent,
    check: &str,
    beats: Beats,
    stop: impl FnOnce() -> G,
    heal: impl FnOnce(G),
) -> Measured {
    a.wait_status(check, Status::Healthy, Duration::from_secs(10))
        .await;
    let tl = Timeline::record(a, check);
    let timeouts_before = attempts(a, check, "timeout");
    let t0 = Instant::now();
    let fault = stop();
    let budget = beats.stale_after * 2 + Duration::from_secs(15);
    tl.wait(budget, "3 retries after the stale drop", |es| {
        es.iter().any(|e| e.event == "connection:disconnected")
            && es
                .iter()
                .filter(|e| e.event == "connection:reconnecting")
                .count()
                >= 3
            && es
                .iter()
                .any(|e| e.event == "connection:max_attempts_reached")
    })
    .await;
    let es = tl.entries();
    let trace: Vec<String> = es
        .iter()
        .map(|e| {
            format!(
                "{:>5}ms {} {} {}",
                (e.at - t0).as_millis(),
                e.event,
                e.status(),
                e.data["error_kind"]
            )
        })
        .collect();
    let trace = trace.join("\n");
    assert!(
        es.iter().all(|e| e.event != "lagged"),
        "events missed:\n{trace}"
    );
    let is_change = |e: &Entry| {
        matches!(
            e.event,
            "connection:connected"
                | "connection:reconnected"
                | "connection:disconnected"
                | "connection:health_degraded"
        )
    };
    let changes: Vec<usize> = (0..es.len()).filter(|i| is_change(&es[*i])).collect();
    assert_eq!(changes.len(), 2, "degraded, then disconnected:\n{trace}");
    let (di, xi) = (changes[0], changes[1]);
    let (degraded, dropped) = (&es[di], &es[xi]);
    assert_eq!(degraded.event, "connection:health_degraded", "{trace}");
    assert_eq!(dropped.event, "connection:disconnected", "{trace}");
    assert_eq!(dropped.data["error_kind"], "stale", "{trace}");
    assert_eq!(dropped.data["status"], "disconnected", "{trace}");
    assert_eq!(dropped.data["previous_status"], "degraded", "{trace}");
    // The last answer came at most one interval (plus its round trip) before the stop.
    let degraded_after = degraded.at - t0;
    let dropped_after = dropped.at - t0;
    let early = beats.interval + Duration::from_millis(50);
    assert!(
        degraded_after + early >= beats.poor_after && degraded_after <= beats.poor_after + SLACK,
        "degraded after {degraded_after:?} (poor_after {:?}):\n{trace}",
        beats.poor_after
    );
    assert!(
        dropped_after + early >= beats.stale_after && dropped_after <= beats.stale_after + SLACK,
        "dropped after {dropped_after:?} (stale_after {:?}):\n{trace}",
        beats.stale_after
    );
    // Counted, but no status moved before poor_after; nothing claimed healthy after it.
    assert!(
        attempts(a, check, "timeout") > timeouts_before,
        "unanswered heartbeats counted as timeout attempts"
    );
    assert!(
        es.iter().all(|e| e.status() != "unhealthy"),
        "never unhealthy:\n{trace}"
    );
    // The stale `connection:failed` is published with the new status, just before the
    // change event: order by position, not by time.
    let first_down = di
        + es[di..]
            .iter()
            .position(|e| e.status() != "degraded")
            .unwrap_or(es.len() - di);
    assert!(first_down <= xi, "{trace}");
    assert!(
        es[..di].iter().all(|e| e.status() == "healthy"),
        "healthy until degraded:\n{trace}"
    );
    assert!(
        es[di..first_down].iter().all(|e| e.status() == "degraded"),
        "degraded until the drop:\n{trace}"
    );
    assert!(
        es[first_down..]
            .iter()
            .all(|e| e.status() == "disconnected"),
        "disconnected while the peer does not answer:\n{trace}"
    );
    let delays_ms: Vec<u64> = es
        .iter()
        .filter(|e| e.event == "connection:reconnecting")
        .map(|e| e.data["delay_ms"].as_u64().expect("delay_ms"))
        .collect();
    assert!(
        delays_ms.windows(2).take(2).all(|w| w[1] > w[0]),
        "delays grow: {delays_ms:?}\n{trace}"
    );
    assert_eq!(
        tl.named("connection:max_attempts_reached").len(),
        1,
        "{trace}"
    );

    let healed = Instant::now();
    heal(fault);
    tl.wait(Duration::from_secs(20), "reconnected after healing", |es| {
        es.iter().any(|e| e.event == "connection:reconnected")
    })
    .await;
    let healed_after = healed.elapsed();
    a.wait_status(check, Status::Healthy, Duration::from_secs(10))
        .await;
    wait_for(Duration::from_secs(5), "backoff metric back to 0", || {
        (a.check_metric("lifeline_check_backoff_seconds", check) == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(a.state(check).attempt, 0, "backoff reset by the answer");
    assert_eq!(tl.named("connection:max_attempts_reached").len(), 1);
    let m = Measured {
        degraded_after,
        dropped_after,
        delays_ms,
        healed_after,
    };
    eprintln!("{check}: {m:?}");
    m
}
