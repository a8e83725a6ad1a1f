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

type Seen = std::sync::Arc<parking_lot::Mutex<Vec<(String, axum::http::HeaderMap)>>>;

/// A server recording the path and headers of every request; `routes` adds redirects.
async fn recorder(
    routes: impl FnOnce(axum::Router) -> axum::Router,
) -> (std::net::SocketAddr, Seen) {
    let seen: Seen = Seen::default();
    let s = seen.clone();
    let app = routes(axum::Router::new()).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let s = s.clone();
            async move {
                s.lock()
                    .push((req.uri().path().to_string(), req.headers().clone()));
                next.run(req).await
            }
        },
    ));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, seen)
}

fn headers_on(seen: &Seen, path: &str) -> Vec<axum::http::HeaderMap> {
    seen.lock()
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, h)| h.clone())
        .collect()
}

#[tokio::test]
async fn secret_headers_do_not_follow_a_redirect_to_another_origin() {
    // The other origin: same host, other port.
    let (other, other_seen) =
        recorder(|r| r.route("/landing", get(|| async { "landed elsewhere" }))).await;
    let (home, home_seen) = recorder(move |r| {
        let to_other = format!("http://{other}/landing");
        r.route(
            "/cross",
            get(move || {
                let to = to_other.clone();
                async move { (StatusCode::FOUND, [("location", to)]) }
            }),
        )
        .route(
            "/same",
            get(|| async { (StatusCode::TEMPORARY_REDIRECT, [("location", "/landing")]) }),
        )
        .route("/landing", get(|| async { "landed at home" }))
        .route(
            "/loop",
            get(|| async { (StatusCode::FOUND, [("location", "/loop")]) }),
        )
    })
    .await;
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("api-key");
    std::fs::write(&key_file, "k3y-From-File\n").unwrap();
    let headers = format!(
        "headers = {{ x-api-key = \"${{file:{}}}\", Authorization = \"Bearer literal-token\", x-marked = \"marked-literal\", x-trace = \"plain-value\" }}\nsecret_headers = [\"X-Marked\"]",
        key_file.display()
    );
    let check = |name: &str, path: &str| {
        format!(
            "[[checks]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"http://{home}{path}\"\ninterval = \"100ms\"\nunhealthy_threshold = 1\n{headers}\n"
        )
    };
    let cfg = [
        check("cross", "/cross"),
        check("same", "/same"),
        check("loop", "/loop"),
    ]
    .concat();
    let a = TestAgent::start(&cfg).await;
    let w = Duration::from_secs(10);
    a.wait_status("cross", Status::Healthy, w).await;
    a.wait_status("same", Status::Healthy, w).await;
    let l = a.wait_status("loop", Status::Unhealthy, w).await;
    assert_eq!(l.error_kind, Some(ErrorKind::Protocol));
    assert!(
        l.last_error
            .as_deref()
            .unwrap_or("")
            .contains("more than 5 redirects"),
        "{l:?}"
    );
    a.stop().await;

    let away = headers_on(&other_seen, "/landing");
    assert!(!away.is_empty(), "the redirect was followed");
    for h in &away {
        assert_eq!(h.get("x-trace").unwrap(), "plain-value", "{h:?}");
        for secret in ["x-api-key", "authorization", "x-marked"] {
            assert!(
                h.get(secret).is_none(),
                "`{secret}` went to another origin: {h:?}"
            );
        }
    }
    // The configured origin gets everything, on the first hop and after a same-origin
    // redirect.
    for path in ["/cross", "/same", "/landing"] {
        let seen = headers_on(&home_seen, path);
        assert!(!seen.is_empty(), "{path} was asked");
        for h in &seen {
            assert_eq!(h.get("x-api-key").unwrap(), "k3y-From-File");
            assert_eq!(h.get("authorization").unwrap(), "Bearer literal-token");
            assert_eq!(h.get("x-marked").unwrap(), "marked-literal");
            assert_eq!(h.get("x-trace").unwrap(), "plain-value");
        }
    }
}

#[test]
fn secret_headers_must_name_configured_headers() {
    let src = "[[checks]]\nname = \"h\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\nheaders = { x-a = \"1\" }\nsecret_headers = [\"x-b\"]\n";
    let errs = match lifeline::config::parse(std::path::Path::new("c.toml"), src) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    };
    assert!(
        errs.iter()
            .any(|e| e.starts_with("c.toml:6:19:") && e.contains("`x-b` is not in `headers`")),
        "{errs:#?}"
    );
}
