//! Every route of the HTTP interface over a real socket, bearer-token auth, JSON errors,
//! SSE and /ws streams, and reload.

use std::time::Duration;

use futures_util::StreamExt;
use lifeline::health::Status;
use serde_json::Value;

use crate::common::api::{client, get_json, get_text, post_json};
use crate::common::*;

const TOKEN: &str = "s3cret-api-token";

async fn agent_with_target(token: bool) -> (TestAgent, tokio::net::TcpListener) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let tok = if token {
        format!("api_token = \"{TOKEN}\"")
    } else {
        String::new()
    };
    let a = TestAgent::start(&format!(
        r#"
[agent]
{tok}
[[checks]]
name = "svc"
kind = "tcp"
address = "{addr}"
interval = "100ms"
unhealthy_threshold = 1
labels = {{ team = "voice" }}
backoff = {{ base = "100ms", max = "200ms", jitter = "0s" }}
"#
    ))
    .await;
    a.wait_status("svc", Status::Healthy, Duration::from_secs(5))
        .await;
    (a, l)
}

#[tokio::test]
async fn read_routes_answer_in_spec_shape() {
    let (a, _l) = agent_with_target(false).await;
    let (_, h) = get_json(&a.url("/health")).await;
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["score"], 100.0);
    assert_eq!(h["checks"]["svc"], "healthy");
    assert!(h["version"].is_string() && h["uptime_seconds"].is_number());

    let (_, d) = get_json(&a.url("/health/detailed")).await;
    let chk = &d["checks"][0];
    for key in [
        "name",
        "kind",
        "mode",
        "labels",
        "status",
        "score",
        "latency_ms",
        "consecutive_failures",
        "attempt",
        "next_attempt_at",
        "last_success_at",
        "last_error",
        "error_kind",
        "heartbeat_age_ms",
    ] {
        assert!(
            chk.get(key).is_some(),
            "detailed check lacks `{key}`: {chk}"
        );
    }
    assert_eq!(chk["labels"]["team"], "voice");

    let (status, one) = get_json(&a.url("/health/service/svc")).await;
    assert_eq!(status, 200);
    assert_eq!(one["name"], "svc");

    let (status, body) = get_json(&a.url("/health/service/nope")).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nope"));

    let (status, body) = get_json(&a.url("/no/such/route")).await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());

    let m = client().get(a.url("/metrics")).send().await.unwrap();
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let m = m.text().await.unwrap();
    assert!(
        m.contains("lifeline_check_up{check=\"svc\",kind=\"tcp\"} 1"),
        "{m}"
    );
    assert!(m.contains(
        "lifeline_check_info{check=\"svc\",kind=\"tcp\",mode=\"probe\",team=\"voice\"} 1"
    ));
    assert!(m.contains("process_resident_memory_bytes"));

    let page = get_text(&a.url("/")).await;
    assert!(page.contains("svc"));
    a.stop().await;
}

#[tokio::test]
async fn post_routes_need_the_bearer_token_when_set() {
    let (a, _l) = agent_with_target(true).await;
    for path in [
        "/health/force-check",
        "/health/service/svc/check",
        "/-/reload",
    ] {
        let (status, body) = post_json(&a.url(path), None, None).await;
        assert_eq!(status, 401, "{path} without token");
        assert!(body["error"].is_string());
        let (status, _) = post_json(&a.url(path), Some("wrong"), None).await;
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    // GET routes stay open.
    assert_eq!(get_json(&a.url("/health")).await.0, 200);

    let (status, d) = post_json(&a.url("/health/force-check"), Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(d["checks"][0]["name"], "svc");
    let (status, _) = post_json(&a.url("/health/service/svc/check"), Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let (status, _) = post_json(&a.url("/health/service/nope/check"), Some(TOKEN), None).await;
    assert_eq!(status, 404);
    a.stop().await;
}

#[tokio::test]
async fn force_check_returns_a_fresh_result() {
    let (a, l) = agent_with_target(false).await;
    drop(l);
    // Without waiting for the schedule: the forced attempt itself sees the refusal.
    let (_, r) = post_json(&a.url("/health/service/svc/check"), None, None).await;
    assert_eq!(r["status"], "unhealthy", "{r}");
    assert_eq!(r["error_kind"], "refused");
    a.stop().await;
}

#[tokio::test]
async fn sse_stream_delivers_a_state_change() {
    let (a, l) = agent_with_target(false).await;
    let resp = client().get(a.url("/api/v1/events")).send().await.unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut resp = resp;
    drop(l);
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let data = loop {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("SSE event within 5s")
            .unwrap()
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(pos) = buf.find("event: connection:disconnected\ndata: ") {
            let rest = &buf[pos + "event: connection:disconnected\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                break rest[..end].to_string();
            }
        }
    };
    let v: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(v["check"], "svc");
    assert_eq!(v["status"], "unhealthy");
    assert_eq!(v["previous_status"], "healthy");
    assert!(v["at"].as_str().unwrap().ends_with('Z'));
    a.stop().await;
}

#[tokio::test]
async fn ws_stream_delivers_a_state_change() {
    let (a, l) = agent_with_target(false).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", a.addr))
        .await
        .unwrap();
    drop(l);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("event within 5s")
            .expect("open")
            .unwrap();
        let Ok(text) = m.to_text() else { continue };
        let v: Value = serde_json::from_str(text).unwrap();
        if v["event"] == "connection:disconnected" {
            assert_eq!(v["data"]["check"], "svc");
            assert_eq!(v["data"]["error_kind"], "refused");
            break;
        }
    }
    a.stop().await;
}

/// A reload that edits some checks and adds, removes and moves none restarts exactly
/// those (by the path that reads nothing else), including a change of kind, and
/// answers how many supervisors it started and stopped.
#[tokio::test]
async fn reload_of_edited_checks_touches_only_them() {
    let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a1 = l1.local_addr().unwrap();
    // A port nothing listens on: the edited check must fail there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let tcp = |name: &str, addr: std::net::SocketAddr| {
        format!(
            "[[checks]]\nname = \"{name}\"\nkind = \"tcp\"\naddress = \"{addr}\"\ninterval = \"100ms\"\n"
        )
    };
    let names = ["c0", "c1", "c2", "c3"];
    let a = TestAgent::start(&names.iter().map(|n| tcp(n, a1)).collect::<String>()).await;
    for n in names {
        a.wait_status(n, Status::Healthy, Duration::from_secs(5))
            .await;
    }
    let since: Vec<_> = names.iter().map(|n| a.state(n).since).collect();
    let entry = |n: &str| a.agent.states().get(n).unwrap();
    let before: Vec<_> = names.iter().map(|n| entry(n)).collect();
    // c1 now points at a closed port; c2 becomes an http check; c0 and c3 stay.
    let http = format!(
        "[[checks]]\nname = \"c2\"\nkind = \"http\"\nurl = \"http://{closed}/\"\ninterval = \"100ms\"\n"
    );
    a.write_config(&(tcp("c0", a1) + &tcp("c1", closed) + &http + &tcp("c3", a1)));
    let done = a.agent.reload().await.expect("valid").expect("applied");
    assert_eq!(
        done,
        lifeline::app::Applied {
            started: 2,
            stopped: 2,
            only_changed: true
        },
        "only the two edited checks restart, by the changed-only path"
    );
    assert_eq!(a.agent.states().names(), names);
    for (i, n) in names.iter().enumerate() {
        let same = std::sync::Arc::ptr_eq(&before[i], &entry(n));
        assert_eq!(
            same,
            *n == "c0" || *n == "c3",
            "{n}: entry kept only if unchanged"
        );
    }
    assert_eq!(a.state("c0").since, since[0]);
    assert_eq!(a.state("c3").since, since[3]);
    a.wait_status("c1", Status::Unhealthy, Duration::from_secs(10))
        .await;
    a.wait_status("c2", Status::Unhealthy, Duration::from_secs(10))
        .await;
    assert_eq!(a.state("c2").kind, "http");
    let m = get_text(&a.url("/metrics")).await;
    assert!(
        m.contains("check=\"c2\",kind=\"http\"") && !m.contains("check=\"c2\",kind=\"tcp\""),
        "c2's series moved to its new kind"
    );
    // Nothing edited: nothing restarts.
    let (status, body) = post_json(&a.url("/-/reload"), None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["started"].as_u64(), body["stopped"].as_u64()),
        (Some(0), Some(0)),
        "{body}"
    );
    a.stop().await;
}

#[tokio::test]
async fn reload_adds_removes_changes_and_refuses_bad_config() {
    let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let check = |name: &str, addr: std::net::SocketAddr, interval: &str| {
        format!(
            "[[checks]]\nname = \"{name}\"\nkind = \"tcp\"\naddress = \"{addr}\"\ninterval = \"{interval}\"\n"
        )
    };
    let a = TestAgent::start(
        &(check("keep", a1, "100ms") + &check("change", a1, "100ms") + &check("drop", a1, "100ms")),
    )
    .await;
    for n in ["keep", "change", "drop"] {
        a.wait_status(n, Status::Healthy, Duration::from_secs(5))
            .await;
    }
    let keep_since = a.state("keep").since;
    let change_entry = a.agent.states().get("change").unwrap();
    a.write_config(
        &(check("keep", a1, "100ms")
            + &check("change", a2, "100ms")
            + &check("added", a2, "100ms")),
    );
    let (status, _) = post_json(&a.url("/-/reload"), None, None).await;
    assert_eq!(status, 200);
    let names = a.agent.states().names();
    assert_eq!(names, ["keep", "change", "added"]);
    assert_eq!(
        a.state("keep").since,
        keep_since,
        "unchanged check kept its state"
    );
    // Restarted: a fresh state entry (its first probe may already have run, so the
    // status says nothing either way).
    assert!(
        !std::sync::Arc::ptr_eq(&change_entry, &a.agent.states().get("change").unwrap()),
        "changed check restarted"
    );
    a.wait_status("added", Status::Healthy, Duration::from_secs(5))
        .await;
    a.wait_status("change", Status::Healthy, Duration::from_secs(5))
        .await;
    let m = get_text(&a.url("/metrics")).await;
    assert!(
        !m.contains("check=\"drop\""),
        "removed check's series are gone"
    );
    assert!(m.contains("lifeline_config_last_reload_successful 1"));

    a.write_config("[[checks]]\nname = \"x\"\nkind = \"nope\"\n");
    let (status, body) = post_json(&a.url("/-/reload"), None, None).await;
    assert_eq!(status, 400);
    let detail = body["detail"][0].as_str().unwrap();
    assert!(
        detail.contains("config.toml:3:8: unknown check kind `nope`"),
        "{detail}"
    );
    assert_eq!(
        a.agent.states().names(),
        ["keep", "change", "added"],
        "running config stays"
    );
    let m = get_text(&a.url("/metrics")).await;
    assert!(m.contains("lifeline_config_last_reload_successful 0"));
    a.stop().await;
}
