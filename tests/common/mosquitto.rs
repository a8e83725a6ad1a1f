//! A real `mosquitto` broker for tests: its own config file in a temp dir, listening on
//! 127.0.0.1:<free port> (plus a TLS listener with certificates made by openssl, when
//! asked), no persistence; killed (SIGKILL, through its child handle) on drop.
//! [`Mosquitto::start_auth`] refuses anonymous clients and knows [`USER`] / [`PASSWORD`]
//! from a password file made with `mosquitto_passwd`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, require_bin, wait_listening};

/// The user of [`Mosquitto::start_auth`] brokers.
pub const USER: &str = "monitor";
/// Its password.
pub const PASSWORD: &str = "mqtt-secret-pw";

/// A running (or killed) broker.
pub struct Mosquitto {
    /// Plain MQTT port on 127.0.0.1.
    pub port: u16,
    /// TLS port (brokers started with TLS), certificate for `localhost` signed by `ca`.
    pub tls_port: Option<u16>,
    /// The CA of the TLS certificate.
    pub ca: Option<PathBuf>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Anonymous clients allowed.
    pub async fn start() -> Self {
        Self::launch(false, false).await
    }

    /// Only [`USER`] / [`PASSWORD`].
    pub async fn start_auth() -> Self {
        Self::launch(true, false).await
    }

    /// Anonymous, plus a TLS listener.
    pub async fn start_tls() -> Self {
        Self::launch(false, true).await
    }

    async fn launch(auth: bool, tls: bool) -> Self {
        let bin = require_bin("mosquitto", "mosquitto", &["/usr/sbin"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = free_port();
        // Running as root, mosquitto would switch to user `mosquitto`, who cannot read
        // the temp dir: stay root.
        let mut conf = format!(
            "user root\npersistence false\nlog_dest file {}\nlog_type all\nper_listener_settings false\nlistener {port} 127.0.0.1\n",
            d.join("mosquitto.log").display()
        );
        let mut tls_port = None;
        let mut ca = None;
        if tls {
            ca = Some(super::postgres::make_certs(d));
            let p = free_port();
            tls_port = Some(p);
            conf.push_str(&format!(
                "listener {p} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            ));
        }
        if auth {
            let passwd = require_bin("mosquitto_passwd", "mosquitto", &[]);
            let file = d.join("passwd");
            let out = Command::new(passwd)
                .arg("-c")
                .arg("-b")
                .arg(&file)
                .args([USER, PASSWORD])
                .output()
                .expect("run mosquitto_passwd");
            assert!(out.status.success(), "mosquitto_passwd: {out:?}");
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                file.display()
            ));
        } else {
            conf.push_str("allow_anonymous true\n");
        }
        std::fs::write(d.join("mosquitto.conf"), conf).expect("mosquitto.conf");
        let mut m = Mosquitto {
            port,
            tls_port,
            ca,
            dir,
            bin,
            child: None,
        };
        m.spawn().await;
        m
    }

    async fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let within = Duration::from_secs(10);
        wait_listening(&format!("127.0.0.1:{}", self.port), within).await;
        if let Some(p) = self.tls_port {
            wait_listening(&format!("127.0.0.1:{p}"), within).await;
        }
    }

    /// The broker's process id (for [`super::stale::Frozen`]); empty once killed.
    pub fn pids(&self) -> Vec<u32> {
        self.child.iter().map(Child::id).collect()
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn kill_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl super::scenarios::RestartablePeer for Mosquitto {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    async fn sigkill(&mut self) {
        self.kill_child();
    }

    async fn start_again(&mut self) {
        assert!(self.child.is_none(), "restart a running broker");
        self.spawn().await;
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill_child();
    }
}
