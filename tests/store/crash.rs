use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lifeline::store::Reader;

use super::all_history;
use crate::common::api::get_json;
use crate::common::*;

/// The agent binary, killed on drop (by its own handle) if still running.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &Path) -> Agent {
    let child = Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lifeline");
    Agent(child)
}

fn committed_samples(data: &Path) -> usize {
    Reader::open(data)
        .ok()
        .and_then(|r| {
            r.knows("t")
                .ok()
                .filter(|k| *k)
                .map(|_| all_history(&r, "t").samples.len())
        })
        .unwrap_or(0)
}

/// `kill -9` mid-run, then restart: the database opens, every row committed before the
/// kill is there, the run without a clean stop is recorded, and writing continues.
#[tokio::test]
async fn kill_9_then_restart_keeps_committed_rows() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[agent]
listen = "127.0.0.1:{port}"
data_dir = "{}"
[[checks]]
name = "t"
kind = "tcp"
address = "{target}"
interval = "20ms"
"#,
            data.display()
        ),
    )
    .unwrap();

    let mut first = spawn(&config);
    wait_for(Duration::from_secs(20), "20 committed samples", || {
        (committed_samples(&data) >= 20).then_some(())
    })
    .await;
    // SIGKILL (std's Child::kill) by the child's own handle, mid-write.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let committed = committed_samples(&data);
    assert!(committed >= 20);

    let second = spawn(&config);
    wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(20)).await;
    // The database opened: the new run writes more samples, the old ones are all there.
    wait_for(Duration::from_secs(20), "new samples after restart", || {
        (committed_samples(&data) > committed + 5).then_some(())
    })
    .await;
    let (code, h) = get_json(&format!(
        "http://127.0.0.1:{port}/api/v1/checks/t/history?since=1h&limit=10000"
    ))
    .await;
    assert_eq!(code, 200, "{h}");
    assert!(h["samples"].as_array().unwrap().len() > committed, "{h}");
    // The restored check did not go back through `connecting`.
    let transitions: Vec<&str> = h["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(transitions, ["healthy", "connecting"], "{h}");

    // `lifeline history` reads the same store while the agent runs.
    let out = Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .args([
            "history", "t", "--since", "1h", "--limit", "5", "--json", "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["check"], "t");
    assert_eq!(v["samples"].as_array().unwrap().len(), 5);
    assert_eq!(v["transitions"][0]["status"], "healthy");
    assert!(v["uptime"]["uptime_ratio"].as_f64().unwrap() > 0.9, "{v}");
    let out = Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .args(["history", "t", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("t: uptime ") && text.contains("healthy      <- connecting"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .args(["history", "nope", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));

    // The killed run has no clean stop; SIGTERM on the second gives it one.
    let pid = second.0.id().to_string();
    let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    let mut second = second;
    let exit = tokio::task::spawn_blocking(move || {
        let s = second.0.wait();
        (s, second)
    })
    .await
    .unwrap();
    assert!(exit.0.unwrap().success());
    let c = rusqlite::Connection::open(data.join("lifeline.db")).unwrap();
    let runs: Vec<Option<i64>> = c
        .prepare("SELECT stopped_at FROM agent_runs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs[0].is_none() && runs[1].is_some(), "{runs:?}");
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    drop(listener);
}
