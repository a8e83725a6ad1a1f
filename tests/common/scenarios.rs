//! Chaos scenarios shared by the suites of session kinds: the peer is SIGKILLed (through
//! its child handle only) and started again on the same port, or it drops the agent's
//! connection while it stays up. Every wait is an event wait or a deadline poll.
//!
//! A kind joins by implementing [`RestartablePeer`] for its test server and calling
//! [`sigkill_backoff_reconnect`] with a config whose check uses short, jitter-free
//! backoff (base ≥ 100 ms) and heartbeats far apart, so only the watch on the
//! connection can notice the kill in time.

use std::future::Future;
use std::time::{Duration, Instant};

use lifeline::check::ErrorKind;
use lifeline::health::Status;

use super::{TestAgent, is_event, wait_event};

/// How long after the SIGKILL (or the server-side drop) the agent has to notice.
pub const NOTICE_WITHIN: Duration = Duration::from_millis(500);

/// Deadline for the steps that take one attempt or a few.
const STEP: Duration = Duration::from_secs(10);

/// A test server run as a child process that a scenario can kill and start again.
pub trait RestartablePeer {
    /// The check kind that watches this peer (`postgres`, `redis`); also its name in logs.
    fn kind(&self) -> &'static str;

    /// SIGKILLs the server through its own child handle (never by process name);
    /// resolves once it is gone.
    fn sigkill(&mut self) -> impl Future<Output = ()> + Send;

    /// Starts the server again on the same port; resolves once it accepts connections.
    fn start_again(&mut self) -> impl Future<Output = ()> + Send;
}

/// What [`sigkill_backoff_reconnect`] measured.
#[derive(Debug)]
pub struct Outage {
    /// From the SIGKILL to the `connection:disconnected` event.
    pub noticed_after: Duration,
    /// `delay_ms` of the first three `connection:reconnecting` events.
    pub delays_ms: Vec<u64>,
}

/// Starts an agent on `config`, waits for check `check` to be healthy, SIGKILLs `peer`
/// and asserts: `connection:disconnected` within [`NOTICE_WITHIN`]; three
/// `connection:reconnecting` events with growing delays; a backoff metric of at least
/// 100 ms and error kind `refused` while down. Then restarts `peer` and asserts
/// `connection:reconnected`, healthy again, one reconnect counted and the backoff metric
/// back to 0. Stops the agent.
pub async fn sigkill_backoff_reconnect<P: RestartablePeer>(
    peer: &mut P,
    config: &str,
    check: &str,
) -> Outage {
    let a = TestAgent::start(config).await;
    a.wait_status(check, Status::Healthy, STEP).await;
    let mut rx = a.events();
    let killed = Instant::now();
    peer.sigkill().await;
    wait_event(
        &mut rx,
        NOTICE_WITHIN,
        "disconnected within 500 ms of SIGKILL",
        |e| is_event(e, "connection:disconnected", check),
    )
    .await;
    let noticed_after = killed.elapsed();
    eprintln!("{} SIGKILL → disconnected: {noticed_after:?}", peer.kind());
    // Down: retries back off 100 ms, 200 ms, 400 ms … (visible in the metric and events).
    let mut delays_ms = Vec::new();
    while delays_ms.len() < 3 {
        let e = wait_event(&mut rx, STEP, "reconnecting", |e| {
            is_event(e, "connection:reconnecting", check)
        })
        .await;
        delays_ms.push(e.data["delay_ms"].as_u64().expect("delay_ms"));
    }
    assert!(
        delays_ms.windows(2).all(|w| w[1] > w[0]),
        "backoff grows: {delays_ms:?}"
    );
    let backoff = a
        .check_metric("lifeline_check_backoff_seconds", check)
        .expect("backoff metric");
    assert!(backoff >= 0.1, "backoff metric while down: {backoff}");
    assert_eq!(a.state(check).error_kind, Some(ErrorKind::Refused));
    peer.start_again().await;
    wait_event(&mut rx, STEP, "reconnected", |e| {
        is_event(e, "connection:reconnected", check)
    })
    .await;
    a.wait_status(check, Status::Healthy, STEP).await;
    assert_eq!(
        a.check_metric("lifeline_session_reconnects_total", check),
        Some(1.0)
    );
    assert_eq!(
        a.check_metric("lifeline_check_backoff_seconds", check),
        Some(0.0)
    );
    a.stop().await;
    Outage {
        noticed_after,
        delays_ms,
    }
}

/// With check `check` of `a` healthy, runs `drop_it` (the server closes the agent's
/// connection while it stays up, e.g. `pg_terminate_backend`, `CLIENT KILL`) and asserts:
/// `connection:failed` with error kind `closed` within [`NOTICE_WITHIN`], then
/// `connection:reconnected` and healthy again. `what` names the drop in messages.
pub async fn dropped_connection_is_replaced(
    a: &TestAgent,
    check: &str,
    what: &str,
    drop_it: impl Future<Output = ()>,
) {
    let mut rx = a.events();
    let t = Instant::now();
    drop_it.await;
    let e = wait_event(
        &mut rx,
        NOTICE_WITHIN,
        &format!("failed after {what}"),
        |e| is_event(e, "connection:failed", check),
    )
    .await;
    eprintln!("{what} → failed: {:?}", t.elapsed());
    assert_eq!(e.data["error_kind"], "closed", "{e:?}");
    wait_event(&mut rx, STEP, "reconnected", |e| {
        is_event(e, "connection:reconnected", check)
    })
    .await;
    a.wait_status(check, Status::Healthy, STEP).await;
}
