//! An agent for the status page tests: history store and (optionally) the alert engine
//! wired as `lifeline run` does, on a port that survives a restart; history seeded
//! through the store's own recording calls; a TCP target that can go down and come back
//! on the same port; screenshots kept in the test's temp dir.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lifeline::alert::AlertEngine;
use lifeline::app::Agent;
use lifeline::health::Status;
use lifeline::store::Store;
use tokio::task::JoinHandle;

use crate::common::{free_port, wait_for};

/// A running agent with store (and alerts, when asked).
pub struct PageAgent {
    pub agent: Arc<Agent>,
    pub store: Arc<Store>,
    pub alerts: Option<Arc<AlertEngine>>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    server: JoinHandle<std::io::Result<()>>,
}

impl PageAgent {
    /// Starts on a free port in a fresh temp dir. `{dir}` and `{port}` in `config` are
    /// replaced.
    pub async fn start(config: &str, alerts: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, 0, config, alerts).await
    }

    /// Starts in `dir` on `port` (0: any free port).
    pub async fn start_in(dir: tempfile::TempDir, port: u16, config: &str, alerts: bool) -> Self {
        lifeline::net::tls::install_provider();
        let listener = bind(port).await;
        let addr = listener.local_addr().expect("addr");
        let text = config
            .replace("{dir}", dir.path().to_str().expect("utf-8 path"))
            .replace("{port}", &addr.port().to_string());
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).expect("write config");
        let cfg = lifeline::config::load(&path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{text}"));
        let metrics = lifeline::metrics::Metrics::new();
        let store = Store::open(&cfg.agent.data_dir, &cfg.history, metrics.clone())
            .expect("store writer starts");
        let engine = if alerts {
            Some(
                AlertEngine::start(&cfg, metrics.clone(), lifeline::net::http_client::shared())
                    .await
                    .expect("start alerting"),
            )
        } else {
            None
        };
        let mut observers: Vec<Arc<dyn lifeline::events::Observer>> = vec![store.clone()];
        if let Some(e) = &engine {
            observers.push(e.clone());
        }
        let agent = Agent::new(cfg, metrics, Arc::new(observers));
        agent.restore(store.take_restored());
        agent.apply().await;
        let server = tokio::spawn(lifeline::http::serve(
            listener,
            lifeline::http::AppState {
                agent: agent.clone(),
                store: Some(store.clone()),
                alerts: engine.clone(),
                cluster: None,
            },
            agent.cancel.clone(),
        ));
        Self {
            agent,
            store,
            alerts: engine,
            addr,
            dir,
            server,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Waits until `name` has `status`.
    pub async fn wait_status(&self, name: &str, status: Status, within: Duration) {
        let st = self.agent.states().clone();
        wait_for(
            within,
            &format!("{name} to become {}", status.as_str()),
            || st.state(name).filter(|s| s.status == status),
        )
        .await;
    }

    /// Records history with `f` (the store's own recording calls), then commits it.
    pub async fn seed(&self, f: impl FnOnce(&Store)) {
        f(&self.store);
        self.flush().await;
    }

    /// Commits everything queued in the store.
    pub async fn flush(&self) {
        let s = self.store.clone();
        tokio::task::spawn_blocking(move || s.flush())
            .await
            .expect("flush task")
            .expect("store flush");
    }

    /// Stops everything it started; returns the temp dir (for a restart on the same data).
    pub async fn stop(self) -> tempfile::TempDir {
        self.agent.shutdown(Duration::from_secs(5)).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        if let Some(e) = &self.alerts {
            e.shutdown();
        }
        let s = self.store;
        tokio::task::spawn_blocking(move || s.shutdown())
            .await
            .expect("store shutdown");
        self.dir
    }
}

/// Binds 127.0.0.1:`port`, retrying for a while (a port just released may linger).
async fn bind(port: u16) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("cannot bind 127.0.0.1:{port}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A TCP target on a fixed port that the test takes down and brings back.
pub struct Target {
    pub port: u16,
    task: Option<JoinHandle<()>>,
}

impl Target {
    /// A target that is up.
    pub async fn up() -> Self {
        let mut t = Self {
            port: free_port(),
            task: None,
        };
        t.start().await;
        t
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts accepting (and dropping) connections.
    pub async fn start(&mut self) {
        let l = bind(self.port).await;
        self.task = Some(tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        }));
    }

    /// Stops listening: when this returns the listener is closed, so connections are
    /// refused from now on (an abort alone only asks the runtime to drop it later).
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Copies a screenshot taken into `path` to `$LIFELINE_SCREENSHOTS/<file name>`, if set.
pub fn publish_screenshot(path: &Path) {
    if let Some(out) = std::env::var_os("LIFELINE_SCREENSHOTS") {
        let out = PathBuf::from(out);
        std::fs::create_dir_all(&out).expect("screenshot dir");
        let name = path.file_name().expect("file name");
        std::fs::copy(path, out.join(name)).expect("copy screenshot");
    }
}
