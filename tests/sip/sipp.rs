//! `sip` against SIPp UAS scenarios (`tests/data/sip/uas_*.xml`).

use std::time::Duration;

use lifeline::check::ErrorKind;
use lifeline::health::Status;

use super::*;

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn udp_200_is_healthy_with_code_and_server_reported() {
    let sipp = Sipp::start("uas_200.xml", Proto::Udp).await;
    let a = TestAgent::start(&agent_config(
        "pbx-sip",
        &sipp.target(),
        "interval = \"200ms\"\ntimeout = \"2s\"",
    ))
    .await;
    let s = a.wait_status("pbx-sip", Status::Healthy, WITHIN).await;
    assert_eq!(s.details["status_code"], 200);
    assert_eq!(s.details["server"], "SIPp lifeline-test");
    assert_eq!(s.details["retransmissions"], 0);
    assert_eq!(s.error_kind, None);
    let m = api::get_text(&a.url("/metrics")).await;
    assert!(
        m.lines().any(|l| l.starts_with("lifeline_check_perfdata{")
            && l.contains("check=\"pbx-sip\"")
            && l.contains("label=\"status_code\"")
            && l.ends_with(" 200")),
        "status_code perfdata missing:\n{m}"
    );
    assert!(
        !m.contains("SIPp lifeline-test"),
        "the server header must not become a label"
    );
    a.stop().await;
}

#[tokio::test]
async fn udp_503_is_degraded_and_rejected() {
    let sipp = Sipp::start("uas_503.xml", Proto::Udp).await;
    let a = TestAgent::start(&agent_config(
        "pbx-sip",
        &sipp.target(),
        "interval = \"200ms\"",
    ))
    .await;
    let s = a.wait_status("pbx-sip", Status::Degraded, WITHIN).await;
    assert_eq!(s.error_kind, Some(ErrorKind::Rejected));
    assert_eq!(s.details["status_code"], 503);
    a.stop().await;
}

#[tokio::test]
async fn udp_404_is_unhealthy_and_rejected_unless_accepted() {
    let sipp = Sipp::start("uas_404.xml", Proto::Udp).await;
    let a = TestAgent::start(&agent_config(
        "pbx-sip",
        &sipp.target(),
        "interval = \"200ms\"\nunhealthy_threshold = 1",
    ))
    .await;
    let s = a.wait_status("pbx-sip", Status::Unhealthy, WITHIN).await;
    assert_eq!(s.error_kind, Some(ErrorKind::Rejected));
    assert_eq!(s.details["status_code"], 404);
    a.stop().await;

    // Widened accept_codes (many PBXes answer OPTIONS with 404): healthy.
    let a = TestAgent::start(&agent_config(
        "pbx-sip",
        &sipp.target(),
        "interval = \"200ms\"\naccept_codes = [\"2xx\", 404]",
    ))
    .await;
    a.wait_status("pbx-sip", Status::Healthy, WITHIN).await;
    a.stop().await;
}

#[tokio::test]
async fn udp_no_answer_times_out_after_timer_e_retransmissions() {
    let sipp = Sipp::start("uas_silent.xml", Proto::Udp).await;
    let a = TestAgent::start(&agent_config(
        "pbx-sip",
        &sipp.target(),
        "interval = \"30s\"\ntimeout = \"2s\"",
    ))
    .await;
    let st = a.agent.states().clone();
    let s = wait_for(WITHIN, "a timed-out attempt", || {
        st.state("pbx-sip")
            .filter(|s| s.error_kind == Some(ErrorKind::Timeout))
    })
    .await;
    // Sent at 0, retransmitted at 0.5 s and 1.5 s; the next (3.5 s) is past the timeout.
    assert_eq!(s.details["retransmissions"], 2, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .unwrap_or("")
            .contains("2 retransmissions"),
        "{s:?}"
    );
    assert!(!s.details.contains_key("status_code"));
    a.stop().await;
}

#[tokio::test]
async fn udp_slow_answer_is_degraded_by_latency() {
    // SIPp answers after 700 ms; the request is retransmitted once at 500 ms meanwhile.
    let sipp = Sipp::start("uas_slow.xml", Proto::Udp).await;
    let a = TestAgent::start(&agent_config(
        "pbx-sip",
        &sipp.target(),
        "interval = \"1s\"\ntimeout = \"3s\"\ndegraded_latency = \"300ms\"",
    ))
    .await;
    let s = a.wait_status("pbx-sip", Status::Degraded, WITHIN).await;
    assert_eq!(s.error_kind, None, "degraded by latency, not rejected");
    assert_eq!(s.details["status_code"], 200);
    assert_eq!(s.details["retransmissions"], 1);
    assert!(s.latency_ms.unwrap_or(0.0) >= 650.0, "{s:?}");
    a.stop().await;
}

#[tokio::test]
async fn tcp_probe_200_healthy_and_503_degraded() {
    let ok = Sipp::start("uas_200.xml", Proto::Tcp).await;
    let busy = Sipp::start("uas_503.xml", Proto::Tcp).await;
    let a = TestAgent::start(&format!(
        "{}\n{}",
        agent_config("sip-ok", &ok.target(), "interval = \"200ms\""),
        agent_config("sip-busy", &busy.target(), "interval = \"200ms\"")
            .replace("[agent]\ndata_dir = \"{dir}/data\"", ""),
    ))
    .await;
    let s = a.wait_status("sip-ok", Status::Healthy, WITHIN).await;
    assert_eq!(s.details["transport"], "tcp");
    assert!(
        !s.details.contains_key("retransmissions"),
        "no retransmissions over TCP"
    );
    let s = a.wait_status("sip-busy", Status::Degraded, WITHIN).await;
    assert_eq!(s.error_kind, Some(ErrorKind::Rejected));
    a.stop().await;
}

#[tokio::test]
async fn tcp_session_heartbeats_and_detects_a_dropped_connection_at_once() {
    let mut sipp = Sipp::start("uas_200.xml", Proto::Tcp).await;
    let a = TestAgent::start(&agent_config(
        "pbx-sip",
        &sipp.target(),
        // Heartbeats far apart: a drop must be seen from the socket, not from a heartbeat.
        "mode = \"session\"\ninterval = \"300ms\"\n[checks.heartbeat]\npoor_after = \"20s\"\nstale_after = \"40s\"",
    ))
    .await;
    let mut events = a.events();
    a.wait_status("pbx-sip", Status::Healthy, WITHIN).await;
    // Several heartbeats answered on the same connection.
    wait_for(WITHIN, "heartbeats", || {
        let s = a.state("pbx-sip");
        (s.consecutive_successes >= 4).then_some(())
    })
    .await;
    assert_eq!(a.state("pbx-sip").status, Status::Healthy);
    let killed = tokio::time::Instant::now();
    sipp.kill().await;
    wait_event(
        &mut events,
        Duration::from_secs(5),
        "connection:disconnected",
        |e| is_event(e, "connection:disconnected", "pbx-sip"),
    )
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "drop noticed late: {:?}",
        killed.elapsed()
    );
    let s = a.state("pbx-sip");
    assert_eq!(s.error_kind, Some(ErrorKind::Closed), "{s:?}");
    a.stop().await;
}

#[tokio::test]
async fn session_mode_over_udp_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        agent_config("s", "sip:127.0.0.1:5060", "mode = \"session\"")
            .replace("{dir}", path_str(dir.path())),
    )
    .expect("write");
    let err = match lifeline::config::load(&path) {
        Ok(_) => panic!("session mode over UDP must be rejected"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("transport=tcp"), "{err}");
}
