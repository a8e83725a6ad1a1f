//! Bounded memory against real peers: perfdata series follow the latest result of a real
//! exec check (cap per check, cut values counted), a peer's huge error text is clipped in
//! the check's message, and silences are capped in number and length.

use std::time::Duration;

use lifeline::health::Status;

use crate::alerting::{AlertAgent, agent_section, tcp_check, webhook};
use crate::common::api;
use crate::common::postgres::Pg;
use crate::common::*;

const SOON: Duration = Duration::from_secs(15);

/// `lifeline_check_perfdata{check="<check>",…}` labels currently exported.
fn perf_labels(text: &str, check: &str) -> Vec<String> {
    let head = format!("lifeline_check_perfdata{{check=\"{check}\",kind=\"exec\",label=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&head))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perfdata_series_follow_the_latest_result_and_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    // Each run prints a label named after its run number (like a plugin that puts a PID
    // or a timestamp in its labels), plus `fixed`; the second check prints 100 labels.
    let script = dir.path().join("changing.sh");
    write_script(
        &script,
        "#!/bin/sh\nn=$(cat \"$1\" 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > \"$1\"\necho \"OK | run$n=1 fixed=2\"\n",
    );
    let many = dir.path().join("many.sh");
    write_script(
        &many,
        "#!/bin/sh\nprintf 'OK |'\ni=0\nwhile [ $i -lt 100 ]; do printf ' l%03d=%d' $i $i; i=$((i+1)); done\necho\n",
    );
    let counter = dir.path().join("count");
    let a = TestAgent::start(&agent_toml(&format!(
        r#"
[[checks]]
name = "changing"
kind = "exec"
command = ["{s}", "{c}"]
interval = "100ms"
[[checks]]
name = "many"
kind = "exec"
command = ["{m}"]
interval = "100ms"
"#,
        s = script.display(),
        c = counter.display(),
        m = many.display()
    )))
    .await;
    a.wait_status("changing", Status::Healthy, SOON).await;
    // Wait for at least 5 runs.
    wait_for(SOON, "5 runs of the exec check", || {
        std::fs::read_to_string(&counter)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|n| *n >= 5)
    })
    .await;
    let text = api::get_text(&a.url("/metrics")).await;
    let labels = perf_labels(&text, "changing");
    assert_eq!(labels.len(), 2, "only the latest run's labels: {labels:?}");
    assert!(labels.contains(&"fixed".to_string()));
    assert!(
        labels.iter().any(|l| l.starts_with("run") && l != "run1"),
        "{labels:?}"
    );
    // 100 labels in one result: 64 kept (the first ones), 36 counted as dropped per run.
    a.wait_status("many", Status::Healthy, SOON).await;
    let text = api::get_text(&a.url("/metrics")).await;
    let labels = perf_labels(&text, "many");
    assert_eq!(
        labels.len(),
        lifeline::metrics::series::PERFDATA_CAP,
        "{labels:?}"
    );
    assert!(labels.contains(&"l000".to_string()) && !labels.contains(&"l099".to_string()));
    let dropped = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("lifeline_check_perfdata_dropped_total{check=\"many\",kind=\"exec\"} ")
        })
        .and_then(|v| v.parse::<f64>().ok())
        .expect("dropped counter exported");
    assert!(dropped >= 36.0 && dropped % 36.0 == 0.0, "{dropped}");
    a.stop().await;
}

/// PostgreSQL echoes a bad value in its error: a 6 KB error text from a real server ends
/// up clipped to about 1 KiB (on a char boundary, marked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_from_a_real_peer_is_clipped() {
    let pg = Pg::start().await;
    let a = TestAgent::start(&agent_toml(&format!(
        r#"
[[checks]]
name = "pg"
kind = "postgres"
dsn = "{dsn}"
query = "SELECT repeat('é', 3000)::int"
interval = "200ms"
timeout = "5s"
unhealthy_threshold = 1
"#,
        dsn = pg.app_dsn()
    )))
    .await;
    let s = a.wait_status("pg", Status::Unhealthy, SOON).await;
    assert!(
        s.message.ends_with(lifeline::check::CLIPPED_MARK),
        "not clipped: {} bytes",
        s.message.len()
    );
    assert!(
        s.message.len() <= lifeline::check::MESSAGE_CAP + lifeline::check::CLIPPED_MARK.len(),
        "{} bytes",
        s.message.len()
    );
    assert!(
        s.message.contains("éé"),
        "the peer's text is kept up to the cut"
    );
    a.stop().await;
}

#[tokio::test]
async fn silences_are_capped_in_number_and_length() {
    let dir = tempfile::tempdir().unwrap();
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = format!(
        "{}[alerting]\nmax_silences = 3\nmax_silence_duration = \"2d\"\n{}{}[[routes]]\nnotifiers = [\"hook\"]\n",
        agent_section(dir.path()),
        webhook("hook", "http://127.0.0.1:9/x", ""),
        tcp_check("db", &target.local_addr().unwrap().to_string(), ""),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    let url = a.url("/api/v1/silences");
    let body = |ends: &str| serde_json::json!({"matchers": {"check": "db"}, "ends_at": ends});
    // Too long.
    let (code, e) = api::post_json(&url, None, Some(&body("3d"))).await;
    assert_eq!(code, 400, "{e}");
    assert!(e.to_string().contains("max_silence_duration"), "{e}");
    // Up to the cap, then a clear 400.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (code, s) = api::post_json(&url, None, Some(&body("1h"))).await;
        assert_eq!(code, 200, "{s}");
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    let (code, e) = api::post_json(&url, None, Some(&body("1h"))).await;
    assert_eq!(code, 400, "{e}");
    assert!(e.to_string().contains("max_silences"), "{e}");
    // Expiring one makes room; the ended one is forgotten rather than kept forever.
    let (code, _) = api::delete_json(&format!("{url}/{}", ids[0])).await;
    assert_eq!(code, 200);
    let (code, s) = api::post_json(&url, None, Some(&body("1h"))).await;
    assert_eq!(code, 200, "{s}");
    let (_, list) = api::get_json(&url).await;
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    a.stop().await;
}
