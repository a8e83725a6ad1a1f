//! `rule`: minijinja expressions over other checks' states.

use std::time::Duration;

use lifeline::check::ErrorKind;
use lifeline::health::Status;

use super::config;
use crate::common::*;

#[tokio::test]
async fn rules_are_true_false_or_unknown() {
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let down_port = free_port();
    let voice = "labels = { team = \"voice\" }\n";
    let a = TestAgent::start(&agent_toml(&format!(
        r#"[defaults]
interval = "100ms"
unhealthy_threshold = 1
{}{}[[checks]]
name = "mystery"
kind = "exec"
command = ["/bin/sh", "-c", "echo 'cannot tell'; exit 3"]
[[checks]]
name = "r-true"
kind = "rule"
expr = "checks['web'].up and checks['web'].latency_ms < 2000 and healthy('web') and count_failing(team='voice') == 1"
[[checks]]
name = "r-false"
kind = "rule"
expr = "up('web') and checks[\"db.main\"].status == 'healthy'"
[[checks]]
name = "r-unknown"
kind = "rule"
expr = "checks.mystery.up"
"#,
        tcp_check("web", up_addr, voice),
        tcp_check("db.main", format!("127.0.0.1:{down_port}"), voice)
    )))
    .await;
    let s = a
        .wait_status("r-true", Status::Healthy, Duration::from_secs(5))
        .await;
    assert_eq!(s.message, "rule is true");
    let s = a
        .wait_status("r-false", Status::Unhealthy, Duration::from_secs(5))
        .await;
    assert_eq!(s.error_kind, Some(ErrorKind::Rejected));
    assert!(s.message.starts_with("rule is false: "), "{}", s.message);
    a.wait_status("mystery", Status::Unknown, Duration::from_secs(5))
        .await;
    let mut ev = a.events();
    let e = wait_event(
        &mut ev,
        Duration::from_secs(5),
        "r-unknown evaluated",
        |e| is_event(e, "connection:health_check", "r-unknown"),
    )
    .await;
    assert_eq!(e.data["status"], "unknown", "{}", e.data);
    assert_eq!(a.state("r-unknown").message, "no result yet from mystery");
    drop(up);
    a.stop().await;
}

#[tokio::test]
async fn a_dependency_change_reevaluates_the_rule_at_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let a = TestAgent::start(&agent_toml(&format!(
        r#"{}
[[checks]]
name = "voice"
kind = "rule"
expr = "checks['pbx'].up"
# Without triggers this rule would only run once an hour.
interval = "1h"
unhealthy_threshold = 1
"#,
        tcp_check("pbx", addr, "interval = \"100ms\"\nunhealthy_threshold = 1")
    )))
    .await;
    a.wait_status("voice", Status::Healthy, Duration::from_secs(5))
        .await;
    drop(listener);
    a.wait_status("pbx", Status::Unhealthy, Duration::from_secs(5))
        .await;
    let s = a
        .wait_status("voice", Status::Unhealthy, Duration::from_secs(3))
        .await;
    assert_eq!(s.error_kind, Some(ErrorKind::Rejected));
    a.stop().await;
}

#[test]
fn bad_expressions_are_rejected_at_load_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let load = |expr: &str| {
        config(
            dir.path(),
            &format!(
                "[agent]\ndata_dir = \"{{dir}}/data\"\n[[checks]]\nname = \"pbx-ws\"\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n[[checks]]\nname = \"r\"\nkind = \"rule\"\nexpr = \"{expr}\"\n"
            ),
        )
    };
    let rejects = |expr: &str, needle: &str| {
        let e = load(expr).unwrap_err();
        assert!(e.contains(needle), "{e}");
    };
    assert!(load("checks['pbx-ws'].up").is_ok());
    // Line 10 is `expr = "…"`; the value starts at column 8, its text at column 9.
    rejects(
        "checks['pbx-ws'].up and (",
        "config.toml:10:33: `expr`: syntax error: unexpected end of input",
    );
    rejects(
        "checks['pbx-wss'].up",
        "config.toml:10:16: `expr` refers to unknown check `pbx-wss` (did you mean `pbx-ws`?)",
    );
    rejects(
        "healthy('nope')",
        "config.toml:10:17: `expr` refers to unknown check `nope`",
    );
    rejects(
        "check['pbx-ws'].up",
        "config.toml:10:9: `expr`: unknown variable `check`",
    );
    rejects("checks['r'].up", "a rule cannot refer to itself");
    rejects("", "`expr` is empty");
}
