//! websocket kind against an in-test WebSocket server: close detection, stalled pings
//! (degraded after `poor_after`, dropped after `stale_after`, reconnect with backoff), and
//! the token fetch-and-cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lifeline::health::Status;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use crate::common::*;

/// A WebSocket server whose behaviour tests steer.
#[derive(Default)]
pub(super) struct WsServer {
    pub(super) accepted: Mutex<Vec<Instant>>,
    /// When set, connections stop reading (so pings go unanswered).
    pub(super) stall: AtomicBool,
    /// Wakes every connection to close itself.
    pub(super) close_all: Notify,
    /// If set, the `Authorization` header must equal it.
    require_auth: Mutex<Option<String>>,
    rejected: AtomicUsize,
}

impl WsServer {
    pub(super) async fn start() -> (Arc<Self>, String) {
        let s = Arc::new(Self::default());
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", l.local_addr().unwrap());
        let srv = s.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = l.accept().await else {
                    return;
                };
                let srv = srv.clone();
                tokio::spawn(async move { srv.serve(sock).await });
            }
        });
        (s, url)
    }

    #[allow(clippy::result_large_err)] // the handshake callback's signature is tungstenite's
    async fn serve(self: Arc<Self>, sock: tokio::net::TcpStream) {
        let need = self.require_auth.lock().clone();
        let me = self.clone();
        let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            if let Some(tok) = &need {
                let got = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                if got != Some(tok.as_str()) {
                    me.rejected.fetch_add(1, Ordering::SeqCst);
                    let mut r = ErrorResponse::new(Some("no".into()));
                    *r.status_mut() = http::StatusCode::UNAUTHORIZED;
                    return Err(r);
                }
            }
            Ok(resp)
        };
        // Registered before the handshake completes, so a close_all can never be missed.
        let closed = self.close_all.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(sock, check).await else {
            return;
        };
        self.accepted.lock().push(Instant::now());
        loop {
            if self.stall.load(Ordering::SeqCst) {
                // Hold the socket open without reading: pings go unanswered.
                closed.as_mut().await;
                return;
            }
            tokio::select! {
                _ = closed.as_mut() => {
                    let _ = ws.close(None).await;
                    return;
                }
                m = ws.next() => match m {
                    None | Some(Err(_)) => return,
                    Some(Ok(_)) => {} // tungstenite answers pings itself
                },
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}

fn session_config(url: &str, extra: &str) -> String {
    ws_session_check(
        "ws",
        url,
        &format!(
            r#"interval = "100ms"
timeout = "200ms"
unhealthy_threshold = 10
heartbeat = {{ poor_after = "400ms", stale_after = "900ms" }}
backoff = {{ base = "300ms", max = "1s", jitter = "0s" }}
{extra}
"#
        ),
    )
}

#[tokio::test]
async fn server_close_is_noticed_within_100ms() {
    let (srv, url) = WsServer::start().await;
    let a = TestAgent::start(&session_config(&url, "")).await;
    let mut rx = a.events();
    a.wait_status("ws", Status::Healthy, Duration::from_secs(5))
        .await;
    let closed_at = Instant::now();
    srv.close_all.notify_waiters();
    let e = wait_event(&mut rx, Duration::from_secs(2), "disconnected", |e| {
        is_event(e, "connection:disconnected", "ws")
    })
    .await;
    let took = closed_at.elapsed();
    assert!(took < Duration::from_millis(100), "noticed after {took:?}");
    assert_eq!(e.data["error_kind"], "closed");
    assert_eq!(e.data["previous_status"], "healthy");
    a.stop().await;
}

#[tokio::test]
async fn unanswered_pings_degrade_then_drop_and_reconnect_with_backoff() {
    let (srv, url) = WsServer::start().await;
    let a = TestAgent::start(&session_config(&url, "")).await;
    let mut rx = a.events();
    a.wait_status("ws", Status::Healthy, Duration::from_secs(5))
        .await;
    // The live session stops reading within 20 ms: its pings go unanswered. (A server
    // that stalls from the handshake on never makes a session healthy: heartbeat.rs.)
    let t0 = Instant::now();
    srv.stall.store(true, Ordering::SeqCst);
    let degraded = wait_event(&mut rx, Duration::from_secs(3), "degraded", |e| {
        is_event(e, "connection:health_degraded", "ws")
    })
    .await;
    let t_degraded = t0.elapsed();
    // The last answer came up to one interval (100 ms) + the stall's 20 ms before t0.
    assert!(
        t_degraded >= Duration::from_millis(260) && t_degraded < Duration::from_millis(800),
        "degraded after {t_degraded:?} (poor_after = 400ms)"
    );
    assert_eq!(degraded.data["status"], "degraded");
    srv.stall.store(false, Ordering::SeqCst);
    let dropped = wait_event(&mut rx, Duration::from_secs(3), "stale drop", |e| {
        is_event(e, "connection:disconnected", "ws")
    })
    .await;
    let t_drop = t0.elapsed();
    assert_eq!(dropped.data["error_kind"], "stale");
    assert!(
        t_drop >= Duration::from_millis(760),
        "dropped after {t_drop:?} (stale_after = 900ms)"
    );
    let dropped_at = Instant::now();
    let before = srv.accepted.lock().len();
    wait_event(&mut rx, Duration::from_secs(3), "reconnected", |e| {
        is_event(e, "connection:reconnected", "ws")
    })
    .await;
    let accepted = srv.accepted.lock().clone();
    assert_eq!(accepted.len(), before + 1, "exactly one new session");
    let gap = accepted[before] - dropped_at;
    assert!(
        gap >= Duration::from_millis(290),
        "reconnect waited backoff.base: {gap:?}"
    );
    assert_eq!(a.state("ws").status, Status::Healthy);
    srv.close_all.notify_waiters();
    a.stop().await;
}

/// A token endpoint counting fetches; each answer is a new token.
#[derive(Default)]
struct TokenServer {
    calls: AtomicUsize,
    expires_in: Mutex<f64>,
}

async fn token_server(ws: Arc<WsServer>) -> (Arc<TokenServer>, String) {
    use axum::routing::post;
    let ts = Arc::new(TokenServer::default());
    *ts.expires_in.lock() = 3600.0;
    let t = ts.clone();
    let app = axum::Router::new().route(
        "/token",
        post(move || {
            let t = t.clone();
            let ws = ws.clone();
            async move {
                let n = t.calls.fetch_add(1, Ordering::SeqCst) + 1;
                let tok = format!("tok-{n}");
                *ws.require_auth.lock() = Some(format!("Bearer {tok}"));
                axum::Json(
                    serde_json::json!({"access_token": tok, "expires_in": *t.expires_in.lock()}),
                )
            }
        }),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (ts, url)
}

#[tokio::test]
async fn token_is_fetched_once_while_valid_and_again_after_expiry_or_401() {
    let (srv, url) = WsServer::start().await;
    let (ts, token_url) = token_server(srv.clone()).await;
    let a = TestAgent::start(&format!(
        r#"
[[checks]]
name = "ws"
kind = "websocket"
url = "{url}"
interval = "50ms"
timeout = "1s"
backoff = {{ base = "50ms", max = "100ms", jitter = "0s" }}
token = {{ url = "{token_url}", ttl = "1h" }}
"#
    ))
    .await;
    // Many probes (each a new handshake) with one token.
    wait_for(Duration::from_secs(5), "10 handshakes", || {
        (srv.accepted.lock().len() >= 10).then_some(())
    })
    .await;
    assert_eq!(
        ts.calls.load(Ordering::SeqCst),
        1,
        "one fetch while the token is valid"
    );
    assert_eq!(a.state("ws").status, Status::Healthy);

    // The server rejects the token: the next handshake gets 401, the token is dropped and
    // fetched again, and the check recovers.
    *srv.require_auth.lock() = Some("Bearer revoked".into());
    wait_for(Duration::from_secs(5), "a second fetch after 401", || {
        (ts.calls.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    assert!(srv.rejected.load(Ordering::SeqCst) >= 1);
    let n = srv.accepted.lock().len();
    wait_for(
        Duration::from_secs(5),
        "handshakes with the new token",
        || (srv.accepted.lock().len() >= n + 3).then_some(()),
    )
    .await;
    assert_eq!(ts.calls.load(Ordering::SeqCst), 2);

    // Short-lived tokens are refetched when they expire.
    *ts.expires_in.lock() = 0.2;
    a.agent.force_one("ws").await; // still cached (1h): no fetch
    assert_eq!(ts.calls.load(Ordering::SeqCst), 2);
    *srv.require_auth.lock() = Some("Bearer revoked-again".into());
    wait_for(Duration::from_secs(5), "fetch 3 (after 401)", || {
        (ts.calls.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    // Token 3 expires after 200 ms: more fetches follow without any 401.
    let rejected = srv.rejected.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(5), "fetch after expiry", || {
        (ts.calls.load(Ordering::SeqCst) >= 5).then_some(())
    })
    .await;
    assert_eq!(
        srv.rejected.load(Ordering::SeqCst),
        rejected,
        "refetched on expiry, not on 401"
    );
    a.stop().await;
}

#[tokio::test]
async fn probe_mode_ping_pong_and_refused() {
    let (_srv, url) = WsServer::start().await;
    let dead = format!("ws://127.0.0.1:{}/", free_port());
    let a = TestAgent::start(&format!(
        r#"
[[checks]]
name = "up"
kind = "websocket"
url = "{url}"
interval = "100ms"
[[checks]]
name = "down"
kind = "websocket"
url = "{dead}"
interval = "100ms"
unhealthy_threshold = 1
"#
    ))
    .await;
    a.wait_status("up", Status::Healthy, Duration::from_secs(5))
        .await;
    let d = a
        .wait_status("down", Status::Unhealthy, Duration::from_secs(5))
        .await;
    assert_eq!(d.error_kind, Some(lifeline::check::ErrorKind::Refused));
    a.stop().await;
}

#[tokio::test]
async fn two_checks_on_one_endpoint_share_one_session() {
    let (srv, url) = WsServer::start().await;
    let a = TestAgent::start(&format!(
        "{}{}",
        ws_session_check(
            "ws-a",
            &url,
            "interval = \"100ms\"\nlabels = { team = \"a\" }\n"
        ),
        ws_session_check(
            "ws-b",
            &url,
            "interval = \"100ms\"\nlabels = { team = \"b\" }\n"
        ),
    ))
    .await;
    a.wait_status("ws-a", Status::Healthy, Duration::from_secs(5))
        .await;
    a.wait_status("ws-b", Status::Healthy, Duration::from_secs(5))
        .await;
    // Several heartbeats later there is still exactly one connection.
    let st = a.agent.states().clone();
    wait_for(Duration::from_secs(5), "heartbeats on both checks", || {
        let b = st.state("ws-b")?;
        (b.heartbeat_age_ms.is_some() && b.latency_ms.is_some()).then_some(())
    })
    .await;
    assert_eq!(srv.accepted.lock().len(), 1, "one shared session");
    a.stop().await;
}
