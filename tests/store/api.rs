use std::time::{Duration, SystemTime};

use lifeline::check::ErrorKind;
use lifeline::health::Status;
use lifeline::time::rfc3339;

use super::tcp_config;
use crate::common::api::get_json;
use crate::common::*;

/// A real check goes healthy → unhealthy (listener closed) → healthy (listener back); the
/// API returns those transitions and the samples newest first, and `limit` + `until`
/// page through them without gaps or overlaps.
#[tokio::test]
async fn transitions_and_samples_are_recorded_and_paged() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let a = TestAgent::start_with_store(&tcp_config(&addr.to_string(), "")).await;
    let store = a.store.clone().unwrap();
    a.wait_status("t", Status::Healthy, Duration::from_secs(5))
        .await;
    drop(listener);
    a.wait_status("t", Status::Unhealthy, Duration::from_secs(5))
        .await;
    let listener = std::net::TcpListener::bind(addr).expect("rebind the same port");
    a.wait_status("t", Status::Healthy, Duration::from_secs(5))
        .await;
    store.flush().unwrap();

    let (code, h) = get_json(&a.url("/api/v1/checks/t/history")).await;
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["check"], "t");
    let tr = h["transitions"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> = tr
        .iter()
        .map(|t| {
            (
                t["previous_status"].as_str().unwrap(),
                t["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("unhealthy", "healthy"),
            ("healthy", "unhealthy"),
            ("connecting", "healthy"),
            ("unknown", "connecting"),
        ],
        "{h:#}"
    );
    assert_eq!(tr[1]["error_kind"], ErrorKind::Refused.as_str());
    assert!(!tr[1]["message"].as_str().unwrap().is_empty());
    assert_eq!(tr[0]["error_kind"], serde_json::Value::Null);

    let samples = h["samples"].as_array().unwrap();
    assert!(samples.len() >= 3, "{h:#}");
    let ats: Vec<&str> = samples.iter().map(|s| s["at"].as_str().unwrap()).collect();
    assert!(
        ats.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {ats:?}"
    );
    assert!(
        samples
            .iter()
            .any(|s| s["status"] == "unhealthy" && s["latency_ms"].is_null())
    );
    assert!(
        samples
            .iter()
            .any(|s| s["status"] == "healthy" && s["latency_ms"].as_f64().is_some())
    );

    // Page through the samples up to a fixed end, two at a time. Every sample before
    // `cut` was queued before this flush, so the set is fixed.
    // The fixed end is just after the newest sample already returned, so the set of samples
    // before it cannot change while we page (new samples are always later).
    let newest =
        time::OffsetDateTime::parse(ats[0], &time::format_description::well_known::Rfc3339)
            .unwrap();
    let cut = rfc3339(SystemTime::from(newest) + Duration::from_millis(1));
    store.flush().unwrap();
    let (_, full) = get_json(&a.url(&format!(
        "/api/v1/checks/t/history?since=1h&until={cut}&limit=10000"
    )))
    .await;
    let full: Vec<String> = full["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["at"].as_str().unwrap().to_string())
        .collect();
    assert!(full.len() >= 3);
    let mut seen = Vec::new();
    let mut until = cut.clone();
    loop {
        let q = format!("/api/v1/checks/t/history?limit=2&since=1h&until={until}");
        let (code, page) = get_json(&a.url(&q)).await;
        assert_eq!(code, 200, "{page}");
        let s = page["samples"].as_array().unwrap();
        assert!(s.len() <= 2);
        assert!(page["transitions"].as_array().unwrap().len() <= 2);
        let Some(last) = s.last() else { break };
        seen.extend(s.iter().map(|x| x["at"].as_str().unwrap().to_string()));
        until = last["at"].as_str().unwrap().to_string();
    }
    // `until` is exclusive: the pages are the full list, in order, without repeats.
    assert_eq!(seen, full);
    drop(listener);
    a.stop().await;
}

/// Rows inserted with explicit times come back in order within `since`/`until`, `limit`
/// is honoured and capped at 10,000, and bad requests get JSON errors.
#[tokio::test]
async fn injected_rows_respect_window_limit_and_cap() {
    let a = TestAgent::start_with_store(&tcp_config("127.0.0.1:9", "")).await;
    let store = a.store.clone().unwrap();
    let base = SystemTime::now() - Duration::from_secs(3 * 3600);
    for i in 0..10_050u64 {
        assert!(store.record_sample(
            "old",
            base + Duration::from_millis(i * 100),
            Status::Healthy,
            Some(Duration::from_micros(1500 + i)),
        ));
    }
    for (i, (from, to)) in [
        (Status::Unknown, Status::Healthy),
        (Status::Healthy, Status::Unhealthy),
        (Status::Unhealthy, Status::Healthy),
    ]
    .into_iter()
    .enumerate()
    {
        store.record_transition(
            "old",
            base + Duration::from_secs(60 * i as u64),
            from,
            to,
            (to == Status::Unhealthy).then_some(ErrorKind::Timeout),
            "m",
        );
    }
    store.flush().unwrap();

    // The newest sample first; limit above the cap is capped.
    let (code, h) = get_json(&a.url("/api/v1/checks/old/history?since=4h&limit=50000")).await;
    assert_eq!(code, 200, "{h}");
    let s = h["samples"].as_array().unwrap();
    assert_eq!(s.len(), 10_000);
    assert_eq!(
        s[0]["at"],
        rfc3339(base + Duration::from_millis(10_049 * 100))
    );
    assert_eq!(s[0]["latency_ms"], 11.549);
    assert_eq!(
        s[9_999]["at"],
        rfc3339(base + Duration::from_millis(50 * 100))
    );
    let t = h["transitions"].as_array().unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t[0]["at"], rfc3339(base + Duration::from_secs(120)));
    assert_eq!(t[1]["error_kind"], "timeout");

    // A window in RFC 3339: [base + 10 s, base + 11 s) holds samples 100..=109.
    let since = rfc3339(base + Duration::from_secs(10));
    let until = rfc3339(base + Duration::from_secs(11));
    let (code, h) = get_json(&a.url(&format!(
        "/api/v1/checks/old/history?since={since}&until={until}&limit=4"
    )))
    .await;
    assert_eq!(code, 200, "{h}");
    let ats: Vec<&str> = h["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["at"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (106..=109u64)
        .rev()
        .map(|i| rfc3339(base + Duration::from_millis(i * 100)))
        .collect();
    assert_eq!(ats, want);
    assert_eq!(h["transitions"].as_array().unwrap().len(), 0);

    // A configured check with no rows yet answers with empty lists.
    let (code, h) = get_json(&a.url("/api/v1/checks/t/history?since=1s")).await;
    assert_eq!(code, 200, "{h}");

    let (code, e) = get_json(&a.url("/api/v1/checks/nope/history")).await;
    assert_eq!(code, 404, "{e}");
    assert!(e["error"].as_str().unwrap().contains("nope"));
    let (code, e) = get_json(&a.url("/api/v1/checks/old/history?since=yesterday")).await;
    assert_eq!(code, 400, "{e}");
    let (code, e) = get_json(&a.url("/api/v1/checks/old/history?limit=0")).await;
    assert_eq!(code, 400, "{e}");
    let (code, e) = get_json(&a.url("/api/v1/checks/nope/uptime")).await;
    assert_eq!(code, 404, "{e}");
    let (code, e) = get_json(&a.url("/api/v1/checks/old/uptime?window=forever")).await;
    assert_eq!(code, 400, "{e}");
    a.stop().await;
}

/// With `sample_every`, one sample per period is kept; transitions are all recorded.
#[tokio::test]
async fn sample_every_downsamples_results_not_transitions() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = tcp_config(&addr.to_string(), "")
        .replace("[defaults]", "[history]\nsample_every = \"1h\"\n[defaults]");
    let a = TestAgent::start_with_store(&cfg).await;
    let store = a.store.clone().unwrap();
    let m = a.agent.shared.metrics.clone();
    a.wait_status("t", Status::Healthy, Duration::from_secs(5))
        .await;
    let attempts = || {
        m.render()
            .lines()
            .find(|l| l.starts_with("lifeline_check_attempts_total") && l.contains("success"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    wait_for(Duration::from_secs(5), "5 results", || {
        (attempts() >= 5.0).then_some(())
    })
    .await;
    store.flush().unwrap();
    let h = super::all_history(&store.reader().unwrap(), "t");
    assert_eq!(h.samples.len(), 1, "{:?}", h.samples);
    assert_eq!(h.transitions.len(), 2, "{:?}", h.transitions);
    drop(listener);
    a.stop().await;
}
