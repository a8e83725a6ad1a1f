//! The real binary: `run` with graceful SIGTERM and SIGHUP reload, `check` exit codes,
//! JSON logs, secrets never printed, and `promtool check metrics` on a live /metrics.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_lifeline");

fn spawn_agent(config: &std::path::Path, envs: &[(&str, &str)]) -> Child {
    lifeline_run(config, "debug", envs)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lifeline")
}

fn signal(child: &Child, sig: i32) {
    let pid = child.id().expect("running") as i32;
    // SAFETY-free: use the kill(1) utility rather than libc.
    let name = match sig {
        1 => "HUP",
        15 => "TERM",
        _ => "KILL",
    };
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

async fn get_json(url: &str) -> Option<Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

#[tokio::test]
async fn run_reloads_on_sighup_and_stops_gracefully_on_sigterm_without_leaking_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taddr = target.local_addr().unwrap();
    let dead = free_port();
    let secret_pw = "pw-Zq81xNeverPrint";
    let secret_tok = "tok-Vv93NeverPrint";
    let base = format!(
        r#"
[agent]
listen = "127.0.0.1:{port}"
data_dir = "{d}/data"
api_token = "${{env:LL_TEST_TOKEN}}"
[[checks]]
name = "svc"
kind = "tcp"
address = "{taddr}"
interval = "100ms"
[[checks]]
name = "secret-http"
kind = "http"
url = "http://admin:${{env:LL_TEST_PW}}@127.0.0.1:{dead}/x"
headers = {{ Authorization = "Bearer ${{env:LL_TEST_TOKEN}}" }}
interval = "100ms"
unhealthy_threshold = 1
"#,
        d = dir.path().display()
    );
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, &base).unwrap();
    let mut child = spawn_agent(
        &cfg,
        &[("LL_TEST_PW", secret_pw), ("LL_TEST_TOKEN", secret_tok)],
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(10)).await;
    let mut detailed = Value::Null;
    for _ in 0..500 {
        if let Some(v) = get_json(&format!("{url}/health/detailed")).await
            && v["checks"][1]["status"] == "unhealthy"
            && v["checks"][0]["status"] == "healthy"
        {
            detailed = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !detailed.is_null(),
        "agent did not reach the expected states"
    );
    let metrics = api::get_text(&format!("{url}/metrics")).await;

    // SIGHUP reloads: a new check appears.
    std::fs::write(
        &cfg,
        format!("{base}[[checks]]\nname = \"added\"\nkind = \"tcp\"\naddress = \"{taddr}\"\n"),
    )
    .unwrap();
    signal(&child, 1);
    let mut reloaded = false;
    for _ in 0..500 {
        if let Some(v) = get_json(&format!("{url}/health")).await
            && v["checks"].get("added").is_some()
        {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloaded, "SIGHUP did not reload");

    // SIGTERM: exits 0 within 5 s.
    let t = tokio::time::Instant::now();
    signal(&child, 15);
    let status = tokio::time::timeout(Duration::from_secs(6), child.wait())
        .await
        .expect("exited within 6s")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );

    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(
        logs.contains("check is failing"),
        "a target going down is logged"
    );
    let detailed = detailed.to_string();
    for s in [secret_pw, secret_tok] {
        assert!(!logs.contains(s), "secret in logs");
        assert!(
            !detailed.contains(s),
            "secret in /health/detailed: {detailed}"
        );
        assert!(!metrics.contains(s), "secret in /metrics");
    }
}

async fn check_cmd(config: &str, args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, config).unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&p)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn check_command_exit_codes_and_json() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let dead = free_port();
    let cfg = format!(
        r#"
[[checks]]
name = "up"
kind = "tcp"
address = "{up}"
[[checks]]
name = "slow"
kind = "tcp"
address = "{up}"
degraded_latency = "0s"
[[checks]]
name = "down"
kind = "tcp"
address = "127.0.0.1:{dead}"
"#
    );
    let (code, out) = check_cmd(&cfg, &["up"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("up") && out.contains("healthy"), "{out}");
    let (code, _) = check_cmd(&cfg, &["up", "slow"]).await;
    assert_eq!(code, 1);
    let (code, out) = check_cmd(&cfg, &["--json"]).await;
    assert_eq!(code, 2);
    let v: Value = serde_json::from_str(&out).unwrap();
    let down = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "down")
        .unwrap();
    assert_eq!(down["status"], "unhealthy");
    assert_eq!(down["error_kind"], "refused");
    let (code, _) = check_cmd(&cfg, &["nope"]).await;
    assert_eq!(code, 3);
}

#[tokio::test]
async fn live_metrics_pass_promtool() {
    let promtool = require_bin("promtool", "prometheus", &[]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let a = TestAgent::start(&format!(
        "{}{}",
        tcp_check(
            "up",
            up,
            "interval = \"50ms\"\nlabels = { team = \"voice\", env = \"prod\" }\n"
        ),
        tcp_check(
            "down",
            format!("127.0.0.1:{}", free_port()),
            "interval = \"50ms\"\nunhealthy_threshold = 1\nbackoff = { base = \"50ms\", jitter = \"0s\" }\n"
        ),
    ))
    .await;
    a.wait_status(
        "up",
        lifeline::health::Status::Healthy,
        Duration::from_secs(5),
    )
    .await;
    a.wait_status(
        "down",
        lifeline::health::Status::Unhealthy,
        Duration::from_secs(5),
    )
    .await;
    let body = api::get_text(&a.url("/metrics")).await;
    for name in [
        "lifeline_check_info",
        "lifeline_check_up",
        "lifeline_check_status",
        "lifeline_check_score",
        "lifeline_check_latency_seconds_bucket",
        "lifeline_check_attempts_total",
        "lifeline_check_failures_total",
        "lifeline_check_consecutive_failures",
        "lifeline_check_backoff_seconds",
        "lifeline_check_last_success_timestamp_seconds",
        "lifeline_check_state_changes_total",
        "lifeline_overall_score",
        "lifeline_overall_status",
        "lifeline_check_phase_seconds",
        "lifeline_scheduler_lag_seconds",
        "lifeline_build_info",
        "lifeline_config_last_reload_successful",
        "process_cpu_seconds_total",
    ] {
        assert!(body.contains(name), "missing {name}");
    }
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let complaints = output_text(&out);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "promtool: {complaints}"
    );
    a.stop().await;
}
