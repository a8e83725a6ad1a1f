//! `push` (dead man's switch) against a real agent over HTTP: jobs push with their
//! check's token through `POST`/`GET /api/v1/push/{name}`; a missing push turns the check
//! unhealthy with `error_kind = "timeout"`.

use std::time::Duration;

use lifeline::check::ErrorKind;
use lifeline::health::Status;
use serde_json::{Value, json};

use crate::common::api::{client, send_json};
use crate::common::*;

const TOKEN: &str = "push-token-0123456789abcdef";
const WITHIN: Duration = Duration::from_secs(10);

fn config(extra_agent: &str, interval: &str, grace: &str) -> String {
    format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
{extra_agent}
[[checks]]
name = "nightly-backup"
kind = "push"
token = "{TOKEN}"
interval = "{interval}"
grace = "{grace}"
unhealthy_threshold = 1
healthy_threshold = 1

[[checks]]
name = "not-push"
kind = "tcp"
address = "127.0.0.1:1"
interval = "1h"
"#
    )
}

/// Status, message, latency and the window: up, degraded, down as pushed; nothing within
/// `interval + grace` → `timeout`; a push brings it back at once.
#[tokio::test]
async fn pushes_drive_the_status_and_silence_is_a_timeout() {
    let a = TestAgent::start(&config("", "1s", "500ms")).await;
    assert_eq!(a.state("nightly-backup").status, Status::Unknown);
    let url = a.url("/api/v1/push/nightly-backup");

    // POST with a bearer token and no body: up.
    let (code, body) = send_json(client().post(&url).bearer_auth(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "healthy", "{body}");
    assert_eq!(body["details"]["pushed_status"], "up");

    // GET with ?token= (curl one-liner): degraded with a message.
    let (code, body) = send_json(client().get(format!(
        "{url}?token={TOKEN}&status=degraded&message=slow%20disk&latency_ms=2500"
    )))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["message"], "slow disk");
    assert_eq!(body["latency_ms"], 2500.0);

    // POST JSON: down.
    let (code, body) =
        send_json(client().post(&url).bearer_auth(TOKEN).json(
            &json!({"status": "down", "message": "backup failed: disk full", "latency_ms": 12}),
        ))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(body["error_kind"], "rejected");

    // A form body (`curl -d status=up`) works too.
    let r = client()
        .post(format!("{url}?token={TOKEN}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("status=up&message=done")
        .send()
        .await
        .expect("form push");
    assert_eq!(r.status(), 200);
    assert_eq!(a.state("nightly-backup").status, Status::Healthy);

    // Silence: unhealthy with error_kind timeout once 1.5 s have passed.
    let pushed = tokio::time::Instant::now();
    let s = a
        .wait_status("nightly-backup", Status::Unhealthy, WITHIN)
        .await;
    assert_eq!(s.error_kind, Some(ErrorKind::Timeout), "{s:?}");
    assert!(s.message.contains("last push"), "{}", s.message);
    let waited = pushed.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "timeout noticed after {waited:?}"
    );
    let m = api::get_text(&a.url("/metrics")).await;
    assert!(
        m.contains("kind=\"push\""),
        "push checks have the usual series:\n{m}"
    );
    assert!(
        !m.contains(TOKEN)
            && !api::get_text(&a.url("/api/v1/checks"))
                .await
                .contains(TOKEN)
    );

    // A push brings it back at once.
    let (code, body) = send_json(client().post(&url).bearer_auth(TOKEN)).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("healthy")));
    a.stop().await;
}

/// No push ever: unknown during the first window, then a timeout.
#[tokio::test]
async fn a_job_that_never_pushes_times_out() {
    let a = TestAgent::start(&config("", "500ms", "500ms")).await;
    let s = a
        .wait_status("nightly-backup", Status::Unhealthy, WITHIN)
        .await;
    assert_eq!(s.error_kind, Some(ErrorKind::Timeout));
    assert!(s.message.contains("no push received"), "{}", s.message);
    a.stop().await;
}

/// Wrong or missing token → 401, unknown name or a check of another kind → 404, a bad
/// status → 400, an oversized body → 413; none of them counts as a push.
#[tokio::test]
async fn bad_pushes_are_refused() {
    let a = TestAgent::start(&config("max_body_bytes = 1024", "1h", "1h")).await;
    let url = a.url("/api/v1/push/nightly-backup");
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (client().post(&url), 401),
        (
            client().post(&url).bearer_auth("wrong-token-0123456789"),
            401,
        ),
        (client().get(format!("{url}?token=nope")), 401),
        (
            client().post(a.url("/api/v1/push/nope")).bearer_auth(TOKEN),
            404,
        ),
        (
            client()
                .post(a.url("/api/v1/push/not-push"))
                .bearer_auth(TOKEN),
            404,
        ),
        (
            client().get(format!("{url}?token={TOKEN}&status=sideways")),
            400,
        ),
        (
            client().get(format!("{url}?token={TOKEN}&latency_ms=-5")),
            400,
        ),
        (
            client()
                .post(&url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
        ),
        (
            client()
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&json!({"message": "x".repeat(4096)})),
            413,
        ),
    ];
    for (req, want) in cases {
        let (code, body): (u16, Value) = send_json(req).await;
        assert_eq!(code, want, "{body}");
    }
    assert_eq!(a.state("nightly-backup").status, Status::Unknown);
    a.stop().await;
}

/// With basic auth on every route, push routes still work with only their token (no
/// agent credentials, nothing in `public_paths`), while other routes need basic auth.
#[tokio::test]
async fn push_works_behind_basic_auth_with_its_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "basic_auth_users:\n  ops: {}\n",
            bcrypt::hash("ops-pw", 4).expect("bcrypt")
        ),
    )
    .expect("write web config");
    let a = TestAgent::start(&config(
        &format!("web_config = \"{}\"", web.display()),
        "1h",
        "1h",
    ))
    .await;
    let (code, _) = send_json(client().get(a.url("/health/detailed"))).await;
    assert_eq!(code, 401, "basic auth is on");
    let (code, body) = send_json(
        client()
            .post(a.url("/api/v1/push/nightly-backup"))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("healthy")),
        "{body}"
    );
    let (code, _) = send_json(
        client()
            .post(a.url("/api/v1/push/nightly-backup"))
            .basic_auth("ops", Some("ops-pw")),
    )
    .await;
    assert_eq!(code, 401, "basic credentials are not a push token");
    a.stop().await;
}

/// `lifeline check` says plainly that a push check cannot be checked once (exit 3).
#[tokio::test]
async fn one_shot_check_explains_push() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        config("", "1m", "30s").replace("{dir}", dir.path().to_str().expect("utf-8")),
    )
    .expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .arg("--config")
        .arg(&path)
        .args(["check", "nightly-backup"])
        .output()
        .await
        .expect("run lifeline check");
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("cannot be checked once"), "{text}");
}
