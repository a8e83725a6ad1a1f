//! Starts `tests/peers/socketio/server.js` (the npm `socket.io` server) on a free port and
//! kills it on drop (by its handle).

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::require_bin;

pub struct SioServer {
    child: Child,
    pub port: u16,
}

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/socketio")
}

impl SioServer {
    /// Starts the server with `env` (PING_INTERVAL, PING_TIMEOUT, TOKEN, TOKENS).
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let dir = peer_dir();
        assert!(
            dir.join("node_modules/socket.io/package.json").is_file(),
            "npm package `socket.io` missing in {}: run scripts/test-deps/socketio.sh (scripts/test.sh does)",
            dir.display()
        );
        let node = require_bin("node", "nodejs", &[]);
        let mut child = Command::new(node)
            .arg("server.js")
            .arg("0")
            .current_dir(&dir)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node server.js");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("socket.io server did not start within 30 s")
            .expect("read server stdout")
            .expect("server exited before listening");
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected server output: {line}"));
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, port }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GET /control/state.
    pub async fn state(&self) -> serde_json::Value {
        reqwest::get(format!("{}/control/state", self.url()))
            .await
            .expect("control state")
            .json()
            .await
            .expect("state json")
    }

    /// POST a control endpoint.
    pub async fn post(&self, path: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.url()))
            .send()
            .await
            .expect("control post");
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("server pid");
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Freezes the server process (SIGSTOP): sockets stay open, nothing is sent.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a frozen server.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}
