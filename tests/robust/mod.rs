//! Issue 12: the agent keeps working when its own resources fail — bounded memory (secrets,
//! perfdata series, peer messages, silences), notifications never lost silently, a broken
//! `data_dir`, reload and shutdown, and a clean environment for exec checks. Faults are
//! real: read-only bind mounts, a full tmpfs, a garbage database file, a plugin whose
//! `create` blocks, real child processes.

mod bounded;
mod exec_env;
mod reload;
mod storage;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Child;

use crate::common::free_port;

/// The agent binary built by cargo for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_lifeline");

/// A running `lifeline run` process, killed on drop (by its handle).
pub struct Proc {
    pub child: Child,
    pub port: u16,
}

impl Proc {
    /// Starts `lifeline run --config <config>` with `envs` added; the HTTP port is
    /// `port` (already written into the config by the caller).
    pub fn spawn(config: &Path, port: u16, envs: &[(&str, &str)]) -> Self {
        let child = crate::common::lifeline_run(config, "info", envs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the lifeline binary");
        Self { child, port }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Waits until `/metrics` answers.
    pub async fn wait_up(&self, within: Duration) {
        let url = self.url("/metrics");
        let c = crate::common::api::client();
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(r) = c.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agent did not serve /metrics within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/metrics` text (empty if it does not answer).
    pub async fn metrics(&self) -> String {
        match crate::common::api::client()
            .get(self.url("/metrics"))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// `/health/detailed` JSON (Null if it does not answer).
    pub async fn detailed(&self) -> serde_json::Value {
        crate::common::api::get_json(&self.url("/health/detailed"))
            .await
            .1
    }

    /// Sends `sig` (by PID, to this process only).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.child.id().expect("running") as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("kill(2)");
    }
}

/// Value of the first metric line that starts with `prefix` (e.g. `name{labels}`).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until `/metrics` of `p` has `prefix` with a value satisfying `ok`.
pub async fn wait_metric(p: &Proc, prefix: &str, within: Duration, ok: impl Fn(f64) -> bool) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let m = p.metrics().await;
        if metric(&m, prefix).is_some_and(&ok) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{prefix} did not reach the expected value within {within:?}; last /metrics:\n{}",
            m.lines()
                .filter(|l| l.starts_with("lifeline_storage")
                    || l.starts_with("lifeline_notif")
                    || l.starts_with("lifeline_check_up"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A mount this test made (tmpfs or a read-only bind), unmounted on drop.
pub struct Mount {
    pub path: PathBuf,
}

impl Mount {
    fn run(args: &[&str]) {
        let out = std::process::Command::new("mount")
            .args(args)
            .output()
            .expect("run mount(8) (Debian package `mount`)");
        assert!(
            out.status.success(),
            "mount {args:?} failed (the tests need root and mount(8)): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A tmpfs of `kib` KiB at `path` (created).
    pub fn tmpfs(path: &Path, kib: u32) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        Self::run(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={kib}k"),
            "tmpfs",
            path.to_str().expect("utf-8 path"),
        ]);
        Self {
            path: path.to_path_buf(),
        }
    }

    /// `path` bind-mounted over itself read-only.
    pub fn read_only(path: &Path) -> Self {
        let p = path.to_str().expect("utf-8 path");
        Self::run(&["--bind", "-o", "ro", p, p]);
        // Older util-linux ignore `ro` on the first bind: make sure.
        let probe = path.join(".lifeline-ro-probe");
        if std::fs::write(&probe, b"x").is_ok() {
            let _ = std::fs::remove_file(&probe);
            Self::run(&["-o", "remount,bind,ro", p]);
        }
        assert!(
            std::fs::write(&probe, b"x").is_err(),
            "{p} is still writable after a read-only bind mount"
        );
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Unmounts now (the heal step of a test).
    pub fn unmount(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let st = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "umount {} failed",
            self.path.display()
        );
        self.path = PathBuf::new();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status();
        }
    }
}

/// A tcp check on a listener the test holds, plus a webhook notifier and an immediate
/// route; `{extra}` goes into `[agent]`.
pub fn agent_with_webhook(port: u16, data_dir: &Path, hook: &str, target: &str) -> String {
    format!(
        r#"
[agent]
listen = "127.0.0.1:{port}"
data_dir = "{d}"
[[checks]]
name = "svc"
kind = "tcp"
address = "{target}"
interval = "100ms"
timeout = "1s"
unhealthy_threshold = 1
[[notifiers]]
name = "hook"
kind = "webhook"
url = "{hook}"
retry_base = "100ms"
[[routes]]
notifiers = ["hook"]
for = "0s"
group_wait = "0s"
"#,
        d = data_dir.display()
    )
}

/// A free port for the agent's HTTP server.
pub fn agent_port() -> u16 {
    free_port()
}
