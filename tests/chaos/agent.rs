//! The agent under test: `lifeline run` as a child process, its `/ws` events recorded
//! with their arrival times, its fds, RSS and sockets read from `/proc/<pid>`.

use std::net::SocketAddrV4;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::common::free_port;
use crate::common::netns::tcp_rows;

/// The agent binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_lifeline");

/// The one check every chaos agent runs.
pub const CHECK: &str = "c";

/// One event from the agent's `/ws`, with the moment it arrived.
#[derive(Debug, Clone)]
pub struct Ev {
    pub at: Instant,
    pub event: String,
    pub data: Value,
}

/// `lifeline run` as a child process (killed on drop, by its handle), with its `/ws`
/// events recorded.
pub struct AgentProc {
    child: tokio::process::Child,
    pub pid: u32,
    /// `http://<listen>`.
    pub base: String,
    pub dir: tempfile::TempDir,
    events: Arc<Mutex<Vec<Ev>>>,
    ws: Option<JoinHandle<()>>,
}

impl AgentProc {
    /// Writes `config` (`{dir}` → temp dir, `{listen}` → `127.0.0.1:<free port>`) and
    /// starts the agent in the host namespace.
    pub async fn start(config: &str) -> Self {
        let mut cmd = tokio::process::Command::new(BIN);
        let listen = format!("127.0.0.1:{}", free_port());
        Self::launch(config, &listen, &mut cmd).await
    }

    /// As [`AgentProc::start`], with the program already chosen (e.g. `ip netns exec NS
    /// lifeline`) and the API on `listen`.
    pub async fn launch(config: &str, listen: &str, cmd: &mut tokio::process::Command) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = config
            .replace("{dir}", dir.path().to_str().expect("utf-8"))
            .replace("{listen}", listen);
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).expect("write config");
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("log file");
        let child = cmd
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the lifeline binary");
        let pid = child.id().expect("agent pid");
        let mut a = Self {
            child,
            pid,
            base: format!("http://{listen}"),
            dir,
            events: Arc::default(),
            ws: None,
        };
        a.wait_up().await;
        a.subscribe().await;
        a
    }

    async fn wait_up(&mut self) {
        let url = format!("{}/metrics", self.base);
        let c = crate::common::api::client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = c.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("agent exited ({st}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not serve /metrics in 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    async fn subscribe(&mut self) {
        let url = format!("{}/ws", self.base.replacen("http://", "ws://", 1));
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        // The write half stays alive with the task (tungstenite answers pings through it).
        let (sink, mut rx) = ws.split();
        let log = self.events.clone();
        self.ws = Some(tokio::spawn(async move {
            let _sink = sink;
            while let Some(Ok(m)) = rx.next().await {
                let at = Instant::now();
                let Ok(text) = m.to_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                log.lock().push(Ev {
                    at,
                    event: v["event"].as_str().unwrap_or("").to_string(),
                    data: v["data"].clone(),
                });
            }
        }));
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        let start = text.len().saturating_sub(6000);
        text[text.floor_char_boundary(start)..].to_string()
    }

    /// The agent's whole log.
    pub fn full_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// `kill -9` of the agent (this child, by its handle), waiting until it is gone.
    pub async fn kill9(mut self) {
        if let Some(t) = self.ws.take() {
            t.abort();
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// How many events were recorded so far (a mark for [`AgentProc::wait_event`]).
    pub fn mark(&self) -> usize {
        self.events.lock().len()
    }

    /// Every event recorded so far (all checks).
    pub fn all_events(&self) -> Vec<Ev> {
        self.events.lock().clone()
    }

    /// The events of [`CHECK`] from index `from`.
    pub fn events_since(&self, from: usize) -> Vec<(usize, Ev)> {
        self.events
            .lock()
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(_, e)| e.data["check"] == CHECK)
            .map(|(i, e)| (i, e.clone()))
            .collect()
    }

    /// A readable trace of the events from `from`, times relative to `t0`.
    pub fn trace(&self, from: usize, t0: Instant) -> String {
        self.events_since(from)
            .iter()
            .map(|(_, e)| {
                format!(
                    "{:>6}ms {} {} {} {}",
                    e.at.saturating_duration_since(t0).as_millis(),
                    e.event,
                    e.data["status"].as_str().unwrap_or(""),
                    e.data["error_kind"].as_str().unwrap_or(""),
                    e.data["message"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits for the first event `name` of [`CHECK`] at index ≥ `from`; its index and
    /// the event. Panics (with the trace and the agent log) after `within`.
    pub async fn wait_event(&self, from: usize, name: &str, within: Duration) -> (usize, Ev) {
        let t0 = Instant::now();
        let deadline = t0 + within;
        loop {
            if let Some(hit) = self
                .events_since(from)
                .into_iter()
                .find(|(_, e)| e.event == name)
            {
                return hit;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {name} within {within:?}; events:\n{}\nagent log tail:\n{}",
                    self.trace(from, t0),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for `n` events `name` of [`CHECK`] at index ≥ `from`; the index after the
    /// last one.
    pub async fn wait_n(&self, from: usize, name: &str, n: usize, within: Duration) -> usize {
        let mut at = from;
        for _ in 0..n {
            at = self.wait_event(at, name, within).await.0 + 1;
        }
        at
    }

    /// `GET /health/service/<CHECK>` (Null if it does not answer).
    pub async fn state(&self) -> Value {
        let url = format!("{}/health/service/{CHECK}", self.base);
        match crate::common::api::client().get(url).send().await {
            Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// Waits until [`CHECK`] has `status`; its state.
    pub async fn wait_status(&self, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.state().await;
            if s["status"] == status {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{CHECK} not {status} within {within:?}: {s}\nagent log tail:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Open file descriptors of the agent process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident set size of the agent process, KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// ESTABLISHED TCP connections the agent process holds to `to` (its socket fds
    /// matched against the host namespace's TCP table).
    pub fn sockets_to(&self, to: SocketAddrV4) -> usize {
        let inodes: std::collections::HashSet<u64> =
            std::fs::read_dir(format!("/proc/{}/fd", self.pid))
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    let l = std::fs::read_link(e.ok()?.path()).ok()?;
                    let s = l.to_str()?;
                    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect();
        let text =
            std::fs::read_to_string(format!("/proc/{}/net/tcp", self.pid)).unwrap_or_default();
        tcp_rows(&text)
            .filter(|r| r.remote == to && r.state == 1 && inodes.contains(&r.inode))
            .count()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(t) = self.ws.take() {
            t.abort();
        }
        let _ = self.child.start_kill();
    }
}
