//! Peer `kill -9` and restart on the same port, 50 times in a row, against one agent
//! process. Backoff is short and jitter-free (base 50 ms, max 200 ms) so a round takes
//! about the peer's start-up time. Asserted: every kill is seen as exactly one
//! `connection:disconnected` and every return as one `connection:reconnected` (counted
//! over the whole run), sessions end with exactly one connection (the agent's sockets and
//! the peer's own list), and the agent's fd count and RSS are flat: measured after round
//! 5 (caches, pools and allocator arenas warmed up) and after round 50, fds may differ by
//! at most 2 and RSS may grow by at most [`RSS_SLACK_KIB`].

use std::time::{Duration, Instant};

use super::*;
use crate::common::netns::Netns;

const ROUNDS: usize = 50;
const WARM: usize = 5;
/// RSS growth allowed between round 5 and round 50 (allocator noise, not a per-round
/// leak: 45 rounds leaking even 100 KiB each would exceed it).
const RSS_SLACK_KIB: u64 = 4 * 1024;

fn timing(kind: Kind) -> String {
    if kind.session() {
        // Heartbeats far apart: only the watch on the socket can notice the kill.
        "interval = \"2s\"\ntimeout = \"2s\"\n\
         backoff = { base = \"50ms\", max = \"200ms\", jitter = \"0s\", max_attempts = 0 }\n\
         heartbeat = { poor_after = \"10s\", stale_after = \"20s\" }\n"
            .into()
    } else {
        "interval = \"100ms\"\ntimeout = \"1s\"\nunhealthy_threshold = 1\n\
         backoff = { base = \"50ms\", max = \"200ms\", jitter = \"0s\", max_attempts = 0 }\n"
            .into()
    }
}

async fn restart(kind: Kind) {
    let started = Instant::now();
    let ns = Netns::new();
    let mut peer = Peer::start(kind, &ns, 1000).await;
    let to = ns.peer(peer.port());
    let a = AgentProc::start(&agent_config(&kind.check_toml(to, &timing(kind), false))).await;
    a.wait_status("healthy", Duration::from_secs(20)).await;
    let first = a.mark();
    let (mut fds0, mut rss0) = (0, 0);
    let mut noticed = Vec::with_capacity(ROUNDS);
    let mut back = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        let m = a.mark();
        let t = Instant::now();
        peer.kill9().await;
        let (di, d) = a
            .wait_event(m, "connection:disconnected", Duration::from_secs(10))
            .await;
        noticed.push(d.at.saturating_duration_since(t));
        let t = Instant::now();
        peer.restart().await;
        let (_, r) = a
            .wait_event(di, "connection:reconnected", Duration::from_secs(20))
            .await;
        back.push(r.at.saturating_duration_since(t));
        if round == WARM {
            a.wait_status("healthy", Duration::from_secs(10)).await;
            fds0 = a.fds();
            rss0 = a.rss_kib();
        }
    }
    a.wait_status("healthy", Duration::from_secs(10)).await;
    // One more result after the last return: any late extra change would be in by now.
    a.wait_n(
        a.mark(),
        "connection:health_check",
        1,
        Duration::from_secs(10),
    )
    .await;
    let evs = a.events_since(first);
    let count = |n: &str| evs.iter().filter(|(_, e)| e.event == n).count();
    let (downs, ups) = (
        count("connection:disconnected"),
        count("connection:reconnected"),
    );
    assert_eq!(
        (downs, ups),
        (ROUNDS, ROUNDS),
        "{kind:?}: {ROUNDS} kills must show {ROUNDS} disconnected and {ROUNDS} reconnected events"
    );
    let (fds1, rss1) = (a.fds(), a.rss_kib());
    if kind.session() {
        assert_eq!(a.sockets_to(to), 1, "{kind:?}: one session after the run");
        let (p, n) = (&peer, &ns);
        eventually(
            Duration::from_secs(10),
            &format!("{kind:?}: exactly one session in the peer's own list after the run"),
            || async move { p.sessions(n).await == 1 },
        )
        .await;
    }
    assert!(
        fds1 <= fds0 + 2,
        "{kind:?}: fds {fds0} after round {WARM}, {fds1} after round {ROUNDS}"
    );
    assert!(
        rss1 <= rss0 + RSS_SLACK_KIB,
        "{kind:?}: RSS {rss0} KiB after round {WARM}, {rss1} KiB after round {ROUNDS}"
    );
    noticed.sort();
    back.sort();
    eprintln!(
        "CHAOS restart {kind:?}: {ROUNDS} rounds in {:?}; kill → disconnected median {:?} max {:?}; \
         restart → reconnected median {:?} max {:?}; fds {fds0} -> {fds1}; RSS {rss0} -> {rss1} KiB",
        started.elapsed(),
        noticed[ROUNDS / 2],
        noticed[ROUNDS - 1],
        back[ROUNDS / 2],
        back[ROUNDS - 1],
    );
}

#[tokio::test]
async fn restart_50_tcp() {
    restart(Kind::Tcp).await;
}

#[tokio::test]
async fn restart_50_http() {
    restart(Kind::Http).await;
}

#[tokio::test]
async fn restart_50_websocket_session() {
    restart(Kind::Websocket).await;
}

#[tokio::test]
async fn restart_50_socketio_session() {
    restart(Kind::Socketio).await;
}

#[tokio::test]
async fn restart_50_sip_udp() {
    restart(Kind::SipUdp).await;
}

#[tokio::test]
async fn restart_50_sip_tcp_session() {
    restart(Kind::SipTcp).await;
}

#[tokio::test]
async fn restart_50_ami_session() {
    restart(Kind::Ami).await;
}

#[tokio::test]
async fn restart_50_postgres_session() {
    restart(Kind::Postgres).await;
}

#[tokio::test]
async fn restart_50_redis_session() {
    restart(Kind::Redis).await;
}
