//! Sessions to a real server that stops answering: the redis-server / postgres processes
//! the test started are SIGSTOPped (their listen sockets still accept connections into
//! the backlog, so the peer accepts but never answers), then SIGCONTed.

use std::time::Duration;

use super::{AGENT, check_toml};
use crate::common::TestAgent;
use crate::common::postgres::Pg;
use crate::common::redis::Redis;
use crate::common::stale::{Beats, Frozen, stops_answering};

/// Heartbeats every 200 ms (300 ms to answer), degraded after 1 s, dropped after 2 s;
/// retries after 200 ms, 400 ms, then `max` (1.6 s) from the third failure on.
pub const TIMING: &str = r#"interval = "200ms"
timeout = "300ms"
unhealthy_threshold = 1
heartbeat = { poor_after = "1s", stale_after = "2s" }
backoff = { base = "200ms", max = "1600ms", multiplier = 2.0, jitter = "0ms", max_attempts = 3 }"#;

pub const BEATS: Beats = Beats {
    interval: Duration::from_millis(200),
    poor_after: Duration::from_secs(1),
    stale_after: Duration::from_secs(2),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_redis_degrades_goes_stale_and_backs_off_until_continued() {
    let r = Redis::start().await;
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check_toml("redis", "url", "r", "session", &r.url("", 0), TIMING, "")
    ))
    .await;
    stops_answering(&a, "r", BEATS, || Frozen::freeze(r.pids()), Frozen::thaw).await;
    let clients = r.agent_clients().await;
    assert_eq!(clients.len(), 1, "one session after healing: {clients:?}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_postgres_degrades_goes_stale_and_backs_off_until_continued() {
    let pg = Pg::start().await;
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check_toml("postgres", "dsn", "p", "session", &pg.app_dsn(), TIMING, "")
    ))
    .await;
    // The postmaster first (no more forks), then every backend, the agent's included.
    stops_answering(&a, "p", BEATS, || Frozen::freeze(pg.pids()), Frozen::thaw).await;
    a.stop().await;
}
