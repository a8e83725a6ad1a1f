//! The `socketio` kind end to end against the real Socket.IO server.

use std::time::Duration;

use lifeline::check::ErrorKind;
use lifeline::health::Status;
use tokio::time::Instant;

use super::peer::SioServer;
use crate::common::*;

fn config(url: &str, mode: &str, extra: &str) -> String {
    format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
[[checks]]
name = "rt"
kind = "socketio"
mode = "{mode}"
url = "{url}"
interval = "100ms"
timeout = "3s"
unhealthy_threshold = 1
backoff = {{ base = "100ms", max = "200ms", jitter = "0s" }}
{extra}
"#
    )
}

const FAST: [(&str, &str); 2] = [("PING_INTERVAL", "200"), ("PING_TIMEOUT", "200")];

#[tokio::test]
async fn healthy_session_answers_pings_and_reports_sid() {
    let s = SioServer::start(&[("PING_INTERVAL", "200"), ("PING_TIMEOUT", "1000")]).await;
    let a = TestAgent::start(&config(&s.url(), "session", "")).await;
    let st = a
        .wait_status("rt", Status::Healthy, Duration::from_secs(10))
        .await;
    assert!(
        st.details["sid"].as_str().is_some_and(|x| !x.is_empty()),
        "{:?}",
        st.details
    );
    assert_eq!(st.details["ping_interval_ms"], 200);
    assert_eq!(st.details["ping_timeout_ms"], 1000);
    // The server drops a client that misses a pong for 1 s; stay through ten pings.
    let mut ev = a.events();
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(50), ev.recv()).await {
            assert_ne!(e.event, "connection:failed", "{:?}", e.data);
            assert_ne!(e.event, "connection:disconnected", "{:?}", e.data);
        }
    }
    assert_eq!(s.state().await["clients"], 1);
    assert_eq!(a.state("rt").status, Status::Healthy);
    a.stop().await;
    // The agent leaves politely.
    wait_for_async(Duration::from_secs(5), "client gone", || async {
        s.state().await["clients"] == 0
    })
    .await;
}

async fn wait_for_async<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn server_side_disconnect_is_detected_at_once() {
    let s = SioServer::start(&[]).await; // default 25 s ping interval: pings cannot help
    let cfg = config(&s.url(), "session", "").replace("interval = \"100ms\"", "interval = \"10s\"");
    let a = TestAgent::start(&cfg).await;
    a.wait_status("rt", Status::Healthy, Duration::from_secs(10))
        .await;
    for (endpoint, expect) in [
        ("/control/disconnect", "disconnected the namespace"),
        ("/control/close", "closed"),
    ] {
        let mut ev = a.events();
        let t = Instant::now();
        s.post(endpoint).await;
        wait_event(&mut ev, Duration::from_secs(3), "disconnected", |e| {
            is_event(e, "connection:disconnected", "rt")
        })
        .await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{endpoint}: seen after {:?}",
            t.elapsed()
        );
        let st = a.state("rt");
        assert_eq!(st.error_kind, Some(ErrorKind::Closed), "{endpoint}");
        assert!(
            st.last_error.clone().unwrap_or_default().contains(expect),
            "{endpoint}: {:?}",
            st.last_error
        );
        wait_event(&mut ev, Duration::from_secs(5), "reconnected", |e| {
            is_event(e, "connection:reconnected", "rt")
        })
        .await;
    }
    a.stop().await;
}

#[tokio::test]
async fn connect_error_is_auth_failed_and_good_auth_connects() {
    let s = SioServer::start(&[("TOKEN", "letmein")]).await;
    let text = format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
[[checks]]
name = "bad"
kind = "socketio"
mode = "session"
url = "{url}"
auth = {{ token = "wrong" }}
interval = "100ms"
[[checks]]
name = "good"
kind = "socketio"
mode = "session"
url = "{url}"
namespace = "/admin"
auth = {{ token = "letmein", client = "lifeline" }}
interval = "100ms"
"#,
        url = s.url()
    );
    let a = TestAgent::start(&text).await;
    let bad = a
        .wait_status("bad", Status::Unhealthy, Duration::from_secs(10))
        .await;
    assert_eq!(bad.error_kind, Some(ErrorKind::AuthFailed));
    assert!(bad.last_error.unwrap_or_default().contains("unauthorized"));
    a.wait_status("good", Status::Healthy, Duration::from_secs(10))
        .await;
    a.stop().await;
}

#[tokio::test]
async fn silent_server_is_dropped_as_stale_within_ping_interval_plus_timeout() {
    let s = SioServer::start(&[("PING_INTERVAL", "300"), ("PING_TIMEOUT", "400")]).await;
    let a = TestAgent::start(&config(&s.url(), "session", "")).await;
    a.wait_status("rt", Status::Healthy, Duration::from_secs(10))
        .await;
    let mut ev = a.events();
    let t = Instant::now();
    s.freeze();
    let e = wait_event(&mut ev, Duration::from_secs(3), "stale", |e| {
        is_event(e, "connection:failed", "rt") && e.data["error_kind"] == "stale"
    })
    .await;
    let took = t.elapsed();
    let st = a.state("rt");
    s.thaw();
    // Dead 700 ms (pingInterval + pingTimeout) after the last ping, which came at most
    // 300 ms (+ a round trip) before the freeze; the supervisor's own stale_after is 30 s.
    assert!(
        took <= Duration::from_millis(700 + 300),
        "dropped after {took:?}"
    );
    assert_eq!(e.data["check"], "rt");
    assert_eq!(st.status, Status::Disconnected);
    assert!(
        st.last_error
            .unwrap_or_default()
            .contains("pingInterval + pingTimeout")
    );
    a.wait_status("rt", Status::Healthy, Duration::from_secs(10))
        .await;
    a.stop().await;
}

#[tokio::test]
async fn emit_is_acknowledged_and_checked_against_expect() {
    let s = SioServer::start(&FAST).await;
    let text = format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
[[checks]]
name = "echo"
kind = "socketio"
mode = "session"
url = "{url}"
namespace = "/admin"
emit = {{ event = "echo", data = {{ n = 7 }}, expect = '"echo":\{{"n":7\}},"nsp":"/admin"' }}
interval = "100ms"
[[checks]]
name = "mismatch"
kind = "socketio"
url = "{url}"
emit = {{ event = "echo", expect = "never-there" }}
interval = "100ms"
unhealthy_threshold = 1
"#,
        url = s.url()
    );
    let a = TestAgent::start(&text).await;
    a.wait_status("echo", Status::Healthy, Duration::from_secs(10))
        .await;
    let mut ev = a.events();
    // Several acked heartbeats in a row.
    for _ in 0..5 {
        wait_event(&mut ev, Duration::from_secs(2), "acked heartbeat", |e| {
            is_event(e, "connection:health_check", "echo")
        })
        .await;
    }
    assert_eq!(a.state("echo").status, Status::Healthy);
    let m = a
        .wait_status("mismatch", Status::Unhealthy, Duration::from_secs(10))
        .await;
    assert_eq!(m.error_kind, Some(ErrorKind::Protocol));
    assert!(m.last_error.unwrap_or_default().contains("does not match"));
    a.stop().await;
}

#[tokio::test]
async fn token_goes_in_auth_and_header_and_is_refetched_after_rejection() {
    let s = SioServer::start(&[
        ("TOKEN", "good-token"),
        ("TOKENS", "stale-token,good-token"),
    ])
    .await;
    let cfg = config(
        &s.url(),
        "session",
        &format!("token = {{ url = \"{}/token\" }}", s.url()),
    );
    let a = TestAgent::start(&cfg).await;
    let mut ev = a.events();
    wait_event(
        &mut ev,
        Duration::from_secs(10),
        "auth failure with the first token",
        |e| is_event(e, "connection:auth_failed", "rt"),
    )
    .await;
    a.wait_status("rt", Status::Healthy, Duration::from_secs(10))
        .await;
    let st = s.state().await;
    assert_eq!(st["fetches"], 2, "refetched once after the rejection: {st}");
    assert_eq!(st["last"]["auth"]["token"], "good-token");
    assert_eq!(st["last"]["authorization"], "Bearer good-token");
    a.stop().await;
}
