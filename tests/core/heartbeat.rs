//! A websocket peer that keeps accepting connections and completing the handshake but
//! answers no ping: the session degrades, goes stale, and the retries back off (the
//! handshake alone neither resets the backoff nor claims `healthy`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::websocket::WsServer;
use crate::common::stale::{Beats, stops_answering};
use crate::common::{TestAgent, ws_session_check};

const BEATS: Beats = Beats {
    interval: Duration::from_millis(100),
    poor_after: Duration::from_millis(500),
    stale_after: Duration::from_secs(1),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_peer_that_accepts_but_never_answers_is_retried_with_growing_delays() {
    let (srv, url) = WsServer::start().await;
    let a = TestAgent::start(&ws_session_check(
        "ws",
        &url,
        r#"interval = "100ms"
timeout = "200ms"
unhealthy_threshold = 1
heartbeat = { poor_after = "500ms", stale_after = "1s" }
backoff = { base = "200ms", max = "1600ms", multiplier = 2.0, jitter = "0ms", max_attempts = 3 }
"#,
    ))
    .await;
    let before = srv.accepted.lock().len();
    stops_answering(
        &a,
        "ws",
        BEATS,
        || srv.stall.store(true, Ordering::SeqCst),
        |()| {
            // Every retry so far completed the handshake; none was called healthy.
            let retried = srv.accepted.lock().len() - before;
            assert!(retried >= 2, "handshakes while stalled: {retried}");
            srv.stall.store(false, Ordering::SeqCst);
        },
    )
    .await;
    srv.close_all.notify_waiters();
    a.stop().await;
}
