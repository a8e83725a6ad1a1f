//! Test support: an in-process agent on a free port, deadline-based waits, free ports,
//! and lookups of the real server binaries tests spawn (failing with the Debian package
//! to install when one is missing — never a silent skip).

#![allow(dead_code)]

pub mod api;
pub mod etcd;
pub mod grpc;
pub mod hostile;
pub mod mariadb;
pub mod mosquitto;
pub mod netns;
pub mod postgres;
pub mod receivers;
pub mod redis;
pub mod scenarios;
pub mod stale;
pub mod tls_peer;
pub mod toml;

// Benches that include this module use none of these.
#[allow(unused_imports)]
pub use toml::{agent_toml, tcp_check, ws_session_check};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lifeline::app::Agent;
use lifeline::check::ErrorKind;
use lifeline::events::{Observers, Published as Event};
use lifeline::health::{CheckState, Status};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// A running agent with its HTTP server on 127.0.0.1:<free port>.
pub struct TestAgent {
    pub agent: Arc<Agent>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    server: JoinHandle<std::io::Result<()>>,
    /// The history store (agents started with [`TestAgent::start_with_store`]).
    pub store: Option<Arc<lifeline::store::Store>>,
    /// Events since before the first `apply` (only with a store: `connection:restored`).
    pub start_events: Option<broadcast::Receiver<Arc<Event>>>,
}

impl TestAgent {
    /// Starts an agent on `config` (TOML text). `{dir}` in the text is replaced by the
    /// temp dir; `{port}` by the HTTP port the agent will listen on.
    pub async fn start(config: &str) -> Self {
        Self::start_with(config, Arc::new(Vec::new())).await
    }

    /// As [`TestAgent::start`], with observers.
    pub async fn start_with(config: &str, observers: Observers) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::launch(dir, config, observers, false).await
    }

    /// As [`TestAgent::start`], with the history store open in `agent.data_dir` (its
    /// last known states restored, as `lifeline run` does).
    pub async fn start_with_store(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::launch(dir, config, Arc::new(Vec::new()), true).await
    }

    /// Starts again in the temp dir of a stopped agent (see [`TestAgent::stop_keep_dir`]),
    /// with the store.
    pub async fn restart_in(dir: tempfile::TempDir, config: &str) -> Self {
        Self::launch(dir, config, Arc::new(Vec::new()), true).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        config: &str,
        observers: Observers,
        with_store: bool,
    ) -> Self {
        lifeline::net::tls::install_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let text = config
            .replace("{dir}", dir.path().to_str().expect("utf-8 path"))
            .replace("{port}", &addr.port().to_string());
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let cfg = lifeline::config::load(&config_path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{text}"));
        let metrics = lifeline::metrics::Metrics::new();
        let store = with_store.then(|| {
            lifeline::store::Store::open(&cfg.agent.data_dir, &cfg.history, metrics.clone())
                .expect("store writer starts")
        });
        let observers: Observers = match &store {
            Some(s) => {
                let mut v: Vec<Arc<dyn lifeline::events::Observer>> =
                    observers.iter().cloned().collect();
                v.push(s.clone());
                Arc::new(v)
            }
            None => observers,
        };
        let agent = Agent::new(cfg, metrics, observers);
        let start_events = store.as_ref().map(|_| agent.shared.bus.subscribe());
        if let Some(s) = &store {
            agent.restore(s.take_restored());
        }
        agent.apply().await;
        let server = tokio::spawn(lifeline::http::serve(
            listener,
            lifeline::http::AppState {
                agent: agent.clone(),
                store: store.clone(),
                alerts: None,
            },
            agent.cancel.clone(),
        ));
        Self {
            agent,
            addr,
            dir,
            config_path,
            server,
            store,
            start_events,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A subscription to the event bus.
    pub fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.agent.shared.bus.subscribe()
    }

    /// The current state of `name`.
    pub fn state(&self, name: &str) -> CheckState {
        self.agent
            .states()
            .state(name)
            .unwrap_or_else(|| panic!("no check {name}"))
    }

    /// The value of the series `metric{…check="<check>"…}` in the agent's metrics text.
    pub fn check_metric(&self, metric: &str, check: &str) -> Option<f64> {
        let text = self.agent.shared.metrics.render();
        let want = format!("check=\"{check}\"");
        text.lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&want))
            .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
    }

    /// Waits until `name` has `status`, or panics after `within`.
    pub async fn wait_status(&self, name: &str, status: Status, within: Duration) -> CheckState {
        let st = self.agent.states().clone();
        let n = name.to_string();
        wait_for(
            within,
            &format!("{name} to become {}", status.as_str()),
            || st.state(&n).filter(|s| s.status == status),
        )
        .await
    }

    /// Waits until `name` is unhealthy (or panics after `within`) and asserts its error
    /// kind is `kind`.
    pub async fn wait_unhealthy(
        &self,
        name: &str,
        kind: ErrorKind,
        within: Duration,
    ) -> CheckState {
        let s = self.wait_status(name, Status::Unhealthy, within).await;
        assert_eq!(s.error_kind, Some(kind), "{name}: {:?}", s.last_error);
        s
    }

    /// Waits until every check of `names` has `status`, each within `within`.
    pub async fn wait_all(&self, names: &[&str], status: Status, within: Duration) {
        for n in names {
            self.wait_status(n, status, within).await;
        }
    }

    /// Rewrites the config file (with the same substitutions as `start`).
    pub fn write_config(&self, config: &str) {
        let text = config
            .replace("{dir}", self.dir.path().to_str().expect("utf-8 path"))
            .replace("{port}", &self.addr.port().to_string());
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// Stops the agent (and closes its store, if any).
    pub async fn stop(self) {
        let _ = self.stop_keep_dir().await;
    }

    /// Stops the agent and closes its store; returns the temp dir for a restart.
    pub async fn stop_keep_dir(self) -> tempfile::TempDir {
        self.agent.shutdown(Duration::from_secs(5)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.server).await;
        if let Some(s) = self.store {
            tokio::task::spawn_blocking(move || s.shutdown())
                .await
                .expect("store shutdown");
        }
        self.dir
    }
}

/// Polls `f` every 10 ms until it returns `Some`, or panics after `within`.
pub async fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the next event matching `pred`, or panics after `within`.
pub async fn wait_event(
    rx: &mut broadcast::Receiver<Arc<Event>>,
    within: Duration,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Arc<Event> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("timed out after {within:?} waiting for event: {what}"),
            Ok(Ok(e)) if pred(&e) => return e,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event bus closed: {e}"),
        }
    }
}

/// Asserts the last error of `s` mentions `needle`.
pub fn assert_error_mentions(s: &CheckState, needle: &str) {
    assert!(
        s.last_error.as_deref().unwrap_or("").contains(needle),
        "last error lacks `{needle}`: {:?}",
        s.last_error
    );
}

/// True if `e` is `name` about check `check`.
pub fn is_event(e: &Event, name: &str, check: &str) -> bool {
    e.event == name && e.data["check"] == check
}

/// A listener on 127.0.0.1:<free port> that hands every accepted connection to `on`;
/// returns its address and the accept task (abort it to stop listening).
pub async fn accept_each(
    mut on: impl FnMut(tokio::net::TcpStream) + Send + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            on(s);
        }
    });
    (addr, task)
}

/// A listener that accepts connections and drops them at once; returns its address and
/// the accept task (abort it to stop listening).
pub async fn tcp_sink() -> (String, JoinHandle<()>) {
    let (addr, task) = accept_each(drop).await;
    (addr.to_string(), task)
}

/// A listener that accepts connections and never answers; kept open until dropped.
pub async fn silent_listener() -> (u16, JoinHandle<()>) {
    let mut held = Vec::new();
    let (addr, task) = accept_each(move |s| held.push(s)).await;
    (addr.port(), task)
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Finds `name` on PATH or in `extra_dirs`; panics naming the Debian package otherwise.
pub fn require_bin(name: &str, package: &str, extra_dirs: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(extra_dirs.iter().map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` not found: install the Debian package `{package}` (the README's test command does)"
    );
}

/// Waits until a TCP connect to `addr` succeeds, or panics after `within`.
pub async fn wait_listening(addr: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{addr} did not start listening within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `lifeline --log-format json run --config <config>` (the binary cargo built for these
/// tests) with `RUST_LOG=<rust_log>` and `envs` added, killed on drop; the caller sets
/// stdout and stderr.
pub fn lifeline_run(
    config: &Path,
    rust_log: &str,
    envs: &[(&str, &str)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lifeline"));
    cmd.args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .env("RUST_LOG", rust_log)
        .envs(envs.iter().copied())
        .kill_on_drop(true);
    cmd
}

/// Writes `text` to `path` as an executable script (mode 0755).
pub fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// A finished process's stdout followed by its stderr (lossy UTF-8).
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Path of a file under `tests/data`.
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

pub mod fake_ami;
