//! Every route of the HTTP interface over a real socket, bearer-token auth, JSON errors,
//! SSE and /ws streams, and reload.

use std::time::Duration;

use futures_util::StreamExt;
use lifeline::health::Status;
use serde_json::Value;

use crate::common::*;

fn client() -> reqwest::Client {
    lifeline::net::tls::install_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn agent_with_target(token: bool) -> (TestAgent, tokio::net::TcpListener) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let tok = if token {
        "api_token = \"s3cret-api-token\""
    } else {
        ""
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
    let c = client();
    let h: Value = c
        .get(a.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["score"], 100.0);
    assert_eq!(h["checks"]["svc"], "healthy");
    assert!(h["version"].is_string() && h["uptime_seconds"].is_number());

    let d: Value = c
        .get(a.url("/health/detailed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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

    let one = c.get(a.url("/health/service/svc")).send().await.unwrap();
    assert_eq!(one.status(), 200);
    let one: Value = one.json().await.unwrap();
    assert_eq!(one["name"], "svc");

    let missing = c.get(a.url("/health/service/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("nope"));

    let unknown_route = c.get(a.url("/no/such/route")).send().await.unwrap();
    assert_eq!(unknown_route.status(), 404);
    assert!(unknown_route.json::<Value>().await.unwrap()["error"].is_string());

    let m = c.get(a.url("/metrics")).send().await.unwrap();
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

    let page = c
        .get(a.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("svc"));
    a.stop().await;
}

#[tokio::test]
async fn post_routes_need_the_bearer_token_when_set() {
    let (a, _l) = agent_with_target(true).await;
    let c = client();
    for path in [
        "/health/force-check",
        "/health/service/svc/check",
        "/-/reload",
    ] {
        let r = c.post(a.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without token");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string());
        let r = c
            .post(a.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
    }
    // GET routes stay open.
    assert_eq!(c.get(a.url("/health")).send().await.unwrap().status(), 200);

    let r = c
        .post(a.url("/health/force-check"))
        .bearer_auth("s3cret-api-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["checks"][0]["name"], "svc");
    let r = c
        .post(a.url("/health/service/svc/check"))
        .bearer_auth("s3cret-api-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(a.url("/health/service/nope/check"))
        .bearer_auth("s3cret-api-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    a.stop().await;
}

#[tokio::test]
async fn force_check_returns_a_fresh_result() {
    let (a, l) = agent_with_target(false).await;
    let c = client();
    drop(l);
    // Without waiting for the schedule: the forced attempt itself sees the refusal.
    let r: Value = c
        .post(a.url("/health/service/svc/check"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let c = client();

    a.write_config(
        &(check("keep", a1, "100ms")
            + &check("change", a2, "100ms")
            + &check("added", a2, "100ms")),
    );
    let r = c.post(a.url("/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let names = a.agent.states().names();
    assert_eq!(names, ["keep", "change", "added"]);
    assert_eq!(
        a.state("keep").since,
        keep_since,
        "unchanged check kept its state"
    );
    assert_eq!(
        a.state("change").status,
        Status::Unknown,
        "changed check restarted"
    );
    a.wait_status("added", Status::Healthy, Duration::from_secs(5))
        .await;
    a.wait_status("change", Status::Healthy, Duration::from_secs(5))
        .await;
    let m = c
        .get(a.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !m.contains("check=\"drop\""),
        "removed check's series are gone"
    );
    assert!(m.contains("lifeline_config_last_reload_successful 1"));

    a.write_config("[[checks]]\nname = \"x\"\nkind = \"nope\"\n");
    let r = c.post(a.url("/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
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
    let m = c
        .get(a.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("lifeline_config_last_reload_successful 0"));
    a.stop().await;
}
