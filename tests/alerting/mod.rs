//! Alerting (SPEC §7) against real receivers: HTTP (Slack, webhook), SMTP (aiosmtpd),
//! Alertmanager. The lifecycle rules themselves (for, grouping, flapping, dependencies,
//! connectivity, silences, repeat, restore) are unit-tested on the state machine in
//! `src/alert/engine/tests.rs` with a synthetic clock; here they run end to end over sockets.

mod alertmanager;
mod config;
mod email;
mod http;
mod slack;
mod storm;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lifeline::alert::AlertEngine;
use lifeline::app::Agent;
use lifeline::health::Status;
use tokio::task::JoinHandle;

use crate::common::wait_for;

/// An agent with the alert engine wired as in `main.rs`.
pub struct AlertAgent {
    pub agent: Arc<Agent>,
    pub engine: Arc<AlertEngine>,
    pub addr: SocketAddr,
    server: JoinHandle<std::io::Result<()>>,
}

impl AlertAgent {
    /// Starts an agent on `config` written to `dir/config.toml`; `{port}` is replaced by
    /// the agent's HTTP port.
    pub async fn start(dir: &Path, config: &str) -> Self {
        lifeline::net::tls::install_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let text = config.replace("{port}", &addr.port().to_string());
        let path: PathBuf = dir.join("config.toml");
        std::fs::write(&path, &text).expect("write config");
        let cfg = lifeline::config::load(&path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{text}"));
        let metrics = lifeline::metrics::Metrics::new();
        let engine =
            AlertEngine::start(&cfg, metrics.clone(), lifeline::net::http_client::shared())
                .await
                .expect("start alerting");
        let observers: lifeline::events::Observers =
            Arc::new(vec![engine.clone() as Arc<dyn lifeline::events::Observer>]);
        let agent = Agent::new(cfg, metrics, observers);
        agent.apply().await;
        let server = tokio::spawn(lifeline::http::serve(
            listener,
            lifeline::http::AppState {
                agent: agent.clone(),
                store: None,
                alerts: Some(engine.clone()),
                cluster: None,
            },
            agent.cancel.clone(),
        ));
        Self {
            agent,
            engine,
            addr,
            server,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The agent's `/metrics` text.
    pub fn metrics(&self) -> String {
        self.agent.shared.metrics.render()
    }

    /// Waits until `check` has `status`, or panics after `within`.
    pub async fn wait_status(&self, check: &str, status: Status, within: Duration) {
        let st = self.agent.states().clone();
        wait_for(within, &format!("{check} {}", status.as_str()), || {
            st.state(check).filter(|s| s.status == status)
        })
        .await;
    }

    /// Waits until `lifeline_notifications_total` of `notifier` with `result` (`sent`,
    /// `failed`, `dropped`) satisfies `ok`, or panics after `within`.
    pub async fn wait_notifications(
        &self,
        notifier: &str,
        result: &str,
        within: Duration,
        ok: impl Fn(f64) -> bool,
    ) {
        let series = notifications_series(notifier, result);
        let m = self.agent.shared.metrics.clone();
        wait_for(within, &format!("{series} to move"), || {
            ok(metric(&m.render(), &series)).then_some(())
        })
        .await;
    }

    /// Waits until the outbox of `notifier` is empty, or panics after `within`.
    pub async fn wait_outbox_drained(&self, notifier: &str, within: Duration) {
        let outbox = self.engine.outbox().clone();
        wait_for(within, "outbox drained", || {
            (outbox.depth(notifier) == 0).then_some(())
        })
        .await;
    }

    /// Stops the agent and the engine (undelivered notifications stay in the outbox).
    pub async fn stop(self) {
        self.engine.shutdown();
        self.agent.shutdown(Duration::from_secs(5)).await;
        self.server.abort();
    }
}

/// A TCP target the test switches up and down (a tcp check against it is healthy while a
/// listener is bound, refused otherwise).
pub struct Target {
    pub port: u16,
    task: Option<JoinHandle<()>>,
}

impl Target {
    /// A target that is up.
    pub async fn up() -> Self {
        let mut t = Self {
            port: crate::common::free_port(),
            task: None,
        };
        t.start().await;
        t
    }

    /// A target that is down (nothing listens).
    pub fn down() -> Self {
        Self {
            port: crate::common::free_port(),
            task: None,
        }
    }

    /// Starts listening.
    pub async fn start(&mut self) {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind target");
        self.task = Some(tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        }));
    }

    /// Stops listening: when this returns the listener is closed and connections are
    /// refused (an abort alone only asks the runtime to drop it later).
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A fast tcp check on `target`.
pub fn tcp_check(name: &str, target: &str, extra: &str) -> String {
    format!(
        r#"
[[checks]]
name = "{name}"
kind = "tcp"
address = "{target}"
interval = "100ms"
timeout = "500ms"
unhealthy_threshold = 1
backoff = {{ base = "100ms", max = "200ms", jitter = "0s" }}
{extra}
"#
    )
}

/// A `[[notifiers]]` webhook `name` posting to `url`, plus `extra` lines.
pub fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!("[[notifiers]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\n{extra}\n")
}

/// `lifeline_notifications_total{notifier="<notifier>",result="<result>"}`.
pub fn notifications_series(notifier: &str, result: &str) -> String {
    format!("lifeline_notifications_total{{notifier=\"{notifier}\",result=\"{result}\"}}")
}

/// The value of the sample `series` (name and labels, as exported) in `text`; 0 if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The `[agent]` section with `data_dir` under `dir`.
pub fn agent_section(dir: &Path) -> String {
    format!(
        "[agent]\nlisten = \"127.0.0.1:{{port}}\"\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    )
}
