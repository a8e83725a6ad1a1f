//! A tcp target that stops listening goes unhealthy after `unhealthy_threshold` failures
//! and recovers after `healthy_threshold` successes, with the events in order.

use std::time::Duration;

use lifeline::health::Status;

use crate::common::*;

#[tokio::test]
async fn tcp_target_down_and_back_follows_thresholds_and_events() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let a = TestAgent::start(&tcp_check(
        "db-port",
        addr,
        r#"interval = "50ms"
timeout = "500ms"
unhealthy_threshold = 3
healthy_threshold = 2
backoff = { base = "50ms", max = "100ms", jitter = "0s" }
"#,
    ))
    .await;
    let mut rx = a.events();
    a.wait_status("db-port", Status::Healthy, Duration::from_secs(5))
        .await;

    drop(listener);
    // Collect this check's events until it is reported down.
    let mut seen = Vec::new();
    loop {
        let e = wait_event(
            &mut rx,
            Duration::from_secs(5),
            "events while failing",
            |e| {
                e.data["check"] == "db-port"
                    && e.event != "connection:health_check"
                    && e.event != "connection:connected"
            },
        )
        .await;
        seen.push((e.event, e.data["status"].as_str().unwrap_or("").to_string()));
        if e.event == "connection:disconnected" {
            break;
        }
    }
    let failed = seen
        .iter()
        .filter(|(n, _)| *n == "connection:failed")
        .count();
    assert_eq!(
        failed, 3,
        "exactly unhealthy_threshold failures before down: {seen:?}"
    );
    // While below the threshold the check stays healthy (with a reduced score).
    assert_eq!(
        seen[0],
        ("connection:failed", "healthy".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(n, _)| *n == "connection:reconnecting"),
        "{seen:?}"
    );
    let st = a.state("db-port");
    assert_eq!((st.status, st.score), (Status::Unhealthy, Some(0)));
    assert_eq!(st.error_kind, Some(lifeline::check::ErrorKind::Refused));

    let _listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let mut checks_after = 0;
    loop {
        let e = wait_event(&mut rx, Duration::from_secs(5), "recovery", |e| {
            e.data["check"] == "db-port"
                && (e.event == "connection:health_check" || e.event == "connection:reconnected")
        })
        .await;
        if e.event == "connection:reconnected" {
            break;
        }
        if e.data["latency_ms"].is_number() && e.data["status"] == "unhealthy" {
            checks_after += 1;
        }
    }
    assert!(
        checks_after >= 1,
        "the first success alone must not recover (healthy_threshold = 2)"
    );
    assert_eq!(a.state("db-port").status, Status::Healthy);
    a.stop().await;
}
