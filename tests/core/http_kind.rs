//! `http` kind against a real HTTP server: accepted statuses, body regex, the body read
//! cap, 401 → auth_failed, other statuses → rejected, headers sent.

use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use lifeline::check::ErrorKind;
use lifeline::health::Status;

use crate::common::*;

async fn server() -> String {
    let app = axum::Router::new()
        .route("/ok", get(|| async { "service is ok" }))
        .route("/teapot", get(|| async { (StatusCode::IM_A_TEAPOT, "no") }))
        .route(
            "/error",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/secret",
            get(|headers: axum::http::HeaderMap| async move {
                match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
                    Some("k3y-Secret-Value") => (StatusCode::OK, "welcome"),
                    _ => (StatusCode::UNAUTHORIZED, "who are you"),
                }
            }),
        )
        // 2 MiB of filler, then the marker: beyond a 1 KiB read cap.
        .route(
            "/huge",
            get(|| async { format!("{}MARKER", "x".repeat(2 * 1024 * 1024)) }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    base
}

#[tokio::test]
async fn http_checks_judge_status_body_and_cap() {
    let base = server().await;
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("api-key");
    std::fs::write(&key_file, "k3y-Secret-Value\n").unwrap();
    let check = |name: &str, extra: &str| {
        format!(
            "[[checks]]\nname = \"{name}\"\nkind = \"http\"\ninterval = \"100ms\"\nunhealthy_threshold = 1\n{extra}\n"
        )
    };
    let cfg = [
        check(
            "ok",
            &format!("url = \"{base}/ok\"\nexpect_body = \"is ok$\""),
        ),
        check(
            "body-mismatch",
            &format!("url = \"{base}/ok\"\nexpect_body = \"^nope\""),
        ),
        check(
            "teapot-accepted",
            &format!("url = \"{base}/teapot\"\nexpect_status = [418, \"2xx\"]"),
        ),
        check("server-error", &format!("url = \"{base}/error\"")),
        check("no-key", &format!("url = \"{base}/secret\"")),
        check(
            "with-key",
            &format!(
                "url = \"{base}/secret\"\nheaders = {{ x-api-key = \"${{file:{}}}\" }}",
                key_file.display()
            ),
        ),
        check(
            "capped",
            &format!("url = \"{base}/huge\"\nexpect_body = \"MARKER\"\nmax_body = 1024"),
        ),
        check(
            "uncapped",
            &format!("url = \"{base}/huge\"\nexpect_body = \"MARKER\"\nmax_body = 4194304"),
        ),
    ]
    .concat();
    let a = TestAgent::start(&cfg).await;
    let w = Duration::from_secs(10);
    let ok = a.wait_status("ok", Status::Healthy, w).await;
    assert_eq!(ok.details["status_code"], 200);
    a.wait_status("teapot-accepted", Status::Healthy, w).await;
    a.wait_status("with-key", Status::Healthy, w).await;
    a.wait_status("uncapped", Status::Healthy, w).await;
    let m = a.wait_status("body-mismatch", Status::Unhealthy, w).await;
    assert_eq!(m.error_kind, Some(ErrorKind::Protocol));
    let e = a.wait_status("server-error", Status::Unhealthy, w).await;
    assert_eq!(e.error_kind, Some(ErrorKind::Rejected));
    assert!(e.last_error.unwrap().contains("500"));
    let k = a.wait_status("no-key", Status::Unhealthy, w).await;
    assert_eq!(k.error_kind, Some(ErrorKind::AuthFailed));
    let c = a.wait_status("capped", Status::Unhealthy, w).await;
    assert_eq!(c.error_kind, Some(ErrorKind::Protocol));
    assert!(c.last_error.unwrap().contains("truncated at max_body"));
    // The header value never shows in the API.
    let detailed = api::get_text(&a.url("/health/detailed")).await;
    assert!(!detailed.contains("k3y-Secret-Value"));
    a.stop().await;
}
