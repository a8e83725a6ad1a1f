//! Partition: 100 % packet loss on the peer's link (nftables DROP on its veth, inside its
//! namespace), then heal.
//!
//! Asserted, per kind:
//! * the check goes down with `error_kind = "timeout"` (probes) or `"stale"` (sessions);
//!   the `connection:disconnected` event comes within `interval + timeout` of the
//!   partition for a probe (the attempt in flight or the next one, due at most one
//!   `interval` later, hits the loss and times out) and within `stale_after` for a
//!   session (measured from the partition, which is after the last answered heartbeat),
//!   plus [`SLACK`];
//! * after healing, `connection:reconnected` within one backoff step: the attempt in
//!   flight may still wait out its `timeout` (its SYN was dropped), then at most
//!   `backoff.max`, plus [`SLACK`];
//! * no duplicate sessions: the peer's own list shows exactly one connection of the agent
//!   (after the dead one is gone: the agent's FIN for it was dropped too, and its
//!   retransmission reaches the peer only after the heal), and the agent holds exactly
//!   one socket to the peer;
//! * no leaked descriptors: the agent's fd count after healing is within 2 of before.

use std::time::{Duration, Instant};

use super::*;
use crate::common::netns::Netns;

const INTERVAL: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_secs(1);
const STALE_AFTER: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_millis(400);

fn timing(kind: Kind) -> String {
    let mut t = String::from(
        "interval = \"250ms\"\ntimeout = \"1s\"\nunhealthy_threshold = 1\n\
         backoff = { base = \"100ms\", max = \"400ms\", jitter = \"0s\", max_attempts = 0 }\n",
    );
    if kind.session() {
        t.push_str("heartbeat = { poor_after = \"1s\", stale_after = \"2s\" }\n");
    }
    t
}

async fn partition(kind: Kind) {
    let ns = Netns::new();
    let peer = Peer::start(kind, &ns, 250).await;
    let to = ns.peer(peer.port());
    let a = AgentProc::start(&agent_config(&kind.check_toml(to, &timing(kind), false))).await;
    a.wait_status("healthy", Duration::from_secs(20)).await;
    // A few answered heartbeats / probes first.
    a.wait_n(
        a.mark(),
        "connection:health_check",
        2,
        Duration::from_secs(10),
    )
    .await;
    if kind.session() {
        let n = peer.sessions(&ns).await;
        assert_eq!(n, 1, "{kind:?}: one session before the partition");
    }
    let fds_before = a.fds();

    let mark = a.mark();
    let t0 = Instant::now();
    ns.partition();
    let (di, down) = a
        .wait_event(mark, "connection:disconnected", Duration::from_secs(15))
        .await;
    let detected = down.at - t0;
    let want_kind = if kind.session() { "stale" } else { "timeout" };
    let bound = if kind.session() {
        STALE_AFTER
    } else {
        INTERVAL + TIMEOUT
    } + SLACK;
    let trace = a.trace(mark, t0);
    assert_eq!(
        down.data["error_kind"], want_kind,
        "{kind:?}: error kind of the drop:\n{trace}"
    );
    assert!(
        detected <= bound,
        "{kind:?}: partition detected after {detected:?} (bound {bound:?}):\n{trace}"
    );
    // Still partitioned: a retry is scheduled and times out.
    a.wait_event(di, "connection:reconnecting", Duration::from_secs(10))
        .await;
    a.wait_event(di + 1, "connection:failed", Duration::from_secs(10))
        .await;

    let healed_mark = a.mark();
    let t1 = Instant::now();
    ns.heal();
    let (_, up) = a
        .wait_event(
            healed_mark,
            "connection:reconnected",
            Duration::from_secs(15),
        )
        .await;
    let healed = up.at - t1;
    let heal_bound = TIMEOUT + BACKOFF_MAX + SLACK;
    assert!(
        healed <= heal_bound,
        "{kind:?}: healthy again {healed:?} after healing (bound {heal_bound:?}):\n{}",
        a.trace(mark, t0)
    );
    a.wait_status("healthy", Duration::from_secs(10)).await;

    if kind.session() {
        // The dead connection goes once the agent's retransmitted FIN gets through.
        let (p, n) = (&peer, &ns);
        eventually(
            Duration::from_secs(30),
            &format!("{kind:?}: exactly one session on the peer"),
            || async move { p.sessions(n).await == 1 },
        )
        .await;
        assert_eq!(a.sockets_to(to), 1, "{kind:?}: agent sockets to the peer");
        // And it stays one over a few more heartbeats.
        a.wait_n(
            a.mark(),
            "connection:health_check",
            2,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(peer.sessions(&ns).await, 1, "{kind:?}: still one session");
    }
    let fds_after = a.fds();
    assert!(
        fds_after <= fds_before + 2,
        "{kind:?}: fds {fds_before} before, {fds_after} after the partition"
    );
    eprintln!(
        "CHAOS partition {kind:?}: down ({want_kind}) after {detected:?} (bound {bound:?}), \
         healthy {healed:?} after heal (bound {heal_bound:?}), fds {fds_before} -> {fds_after}"
    );
}

#[tokio::test]
async fn partition_tcp() {
    partition(Kind::Tcp).await;
}

#[tokio::test]
async fn partition_http() {
    partition(Kind::Http).await;
}

#[tokio::test]
async fn partition_websocket_session() {
    partition(Kind::Websocket).await;
}

#[tokio::test]
async fn partition_socketio_session() {
    partition(Kind::Socketio).await;
}

#[tokio::test]
async fn partition_sip_udp() {
    partition(Kind::SipUdp).await;
}

#[tokio::test]
async fn partition_sip_tcp_session() {
    partition(Kind::SipTcp).await;
}

#[tokio::test]
async fn partition_ami_session() {
    partition(Kind::Ami).await;
}

#[tokio::test]
async fn partition_postgres_session() {
    partition(Kind::Postgres).await;
}

#[tokio::test]
async fn partition_redis_session() {
    partition(Kind::Redis).await;
}
