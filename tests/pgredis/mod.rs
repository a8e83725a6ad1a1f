//! `postgres` and `redis` kinds against real servers (tests/common/postgres.rs, redis.rs).

mod postgres;
mod redis;

use std::time::Duration;

/// Timing shared by these tests: fast interval, short backoff without jitter.
pub const FAST: &str = r#"interval = "200ms"
timeout = "2s"
backoff = { base = "100ms", max = "800ms", multiplier = 2.0, jitter = "0ms" }"#;

/// For detection tests: heartbeats far apart, so only the watch on the driver task can
/// notice a dead connection within the deadline.
pub const SLOW_BEATS: &str = r#"interval = "10s"
timeout = "2s"
backoff = { base = "100ms", max = "800ms", multiplier = 2.0, jitter = "0ms" }
heartbeat = { poor_after = "20s", stale_after = "30s" }"#;

/// The `[agent]` header.
pub const AGENT: &str = "[agent]\ndata_dir = \"{dir}/data\"\n";

/// A listener that accepts connections and never answers; kept open until dropped.
pub async fn silent_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (port, task)
}

/// Deadline for things that need one attempt or a few.
pub const SOON: Duration = Duration::from_secs(10);
