//! Slow link: every reply from the peer is delayed by 1.5 s ([`relay`](super::relay)),
//! with `degraded_latency = "1s"` (for `tcp`, whose only exchange is the kernel's
//! handshake, two of three SYNs are dropped instead: connects take 2–3 s). The check must be `degraded` (it works, slowly) and
//! stay so over the following results: no failure, never `unhealthy`/`disconnected`.
//! Timeouts are generous (10 s) because a handshake takes several delayed round trips
//! (PostgreSQL's SCRAM exchange: about four). The heartbeat `interval` (2 s) is longer
//! than a delayed round trip, so one heartbeat is answered before the next is sent.

use std::time::Duration;

use super::relay::{DELAY, Relay};
use super::*;
use crate::common::netns::Netns;

const TIMING: &str = "interval = \"2s\"\ntimeout = \"10s\"\ndegraded_latency = \"1s\"\n\
    unhealthy_threshold = 1\n\
    backoff = { base = \"100ms\", max = \"400ms\", jitter = \"0s\", max_attempts = 0 }\n";

async fn slow(kind: Kind) {
    let ns = Netns::new();
    let peer = Peer::start(kind, &ns, 1000).await;
    let upstream = ns.peer(peer.port());
    // `tcp` only connects: its slow link is a lossy handshake (see `Netns::slow_syn`).
    let relay = match kind {
        Kind::Tcp => {
            ns.slow_syn(upstream.port());
            None
        }
        Kind::SipUdp => Some(Relay::udp(upstream).await),
        _ => Some(Relay::tcp(upstream).await),
    };
    let to = relay.as_ref().map_or(upstream, |r| r.addr);
    let mut timing = TIMING.to_string();
    if kind.session() {
        timing.push_str("heartbeat = { poor_after = \"10s\", stale_after = \"30s\" }\n");
    }
    let a = AgentProc::start(&agent_config(&kind.check_toml(to, &timing, true))).await;
    let s = a.wait_status("degraded", Duration::from_secs(40)).await;
    let m = a.mark();
    a.wait_n(m, "connection:health_check", 2, Duration::from_secs(15))
        .await;
    let evs = a.events_since(m);
    let trace = a.trace(m, evs[0].1.at);
    for (_, e) in &evs {
        // (`health_degraded` may still come in just after the status was read.)
        let benign = matches!(
            e.event.as_str(),
            "connection:health_check" | "connection:health_degraded"
        );
        assert!(
            benign && e.data["status"] == "degraded",
            "{kind:?}: degraded, not down, on a slow link:\n{trace}"
        );
    }
    let s2 = a.state().await;
    assert_eq!(s2["status"], "degraded", "{kind:?}: {s2}");
    let latency = s2["latency_ms"].as_f64().unwrap_or(0.0);
    assert!(
        latency >= 1000.0,
        "{kind:?}: latency {latency} ms with replies delayed by {DELAY:?}: {s2}"
    );
    eprintln!(
        "CHAOS slow {kind:?}: degraded (latency {latency:.0} ms, first degraded state {})",
        s["latency_ms"]
    );
}

#[tokio::test]
async fn slow_link_tcp() {
    slow(Kind::Tcp).await;
}

#[tokio::test]
async fn slow_link_http() {
    slow(Kind::Http).await;
}

#[tokio::test]
async fn slow_link_websocket_session() {
    slow(Kind::Websocket).await;
}

#[tokio::test]
async fn slow_link_socketio_session() {
    slow(Kind::Socketio).await;
}

#[tokio::test]
async fn slow_link_sip_udp() {
    slow(Kind::SipUdp).await;
}

#[tokio::test]
async fn slow_link_sip_tcp_session() {
    slow(Kind::SipTcp).await;
}

#[tokio::test]
async fn slow_link_ami_session() {
    slow(Kind::Ami).await;
}

#[tokio::test]
async fn slow_link_postgres_session() {
    slow(Kind::Postgres).await;
}

#[tokio::test]
async fn slow_link_redis_session() {
    slow(Kind::Redis).await;
}
