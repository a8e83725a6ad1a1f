//! A real `redis-server` for tests: free port on 127.0.0.1, no persistence, config and
//! working dir in a temp dir; killed (SIGKILL) and removed on drop, also on panic.
//! [`Redis::start_auth`] adds `requirepass` ([`PASSWORD`]) and an ACL user
//! ([`ACL_USER`] / [`ACL_PASSWORD`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, require_bin, wait_listening};

/// `requirepass` of [`Redis::start_auth`] servers.
pub const PASSWORD: &str = "redis-secret-pw";
/// ACL user of [`Redis::start_auth`] servers.
pub const ACL_USER: &str = "alice";
/// Its password.
pub const ACL_PASSWORD: &str = "alice-secret-pw";

/// A running (or killed) redis-server.
pub struct Redis {
    /// TCP port on [`Redis::host`].
    pub port: u16,
    /// The address it listens on: 127.0.0.1, or the namespace's ([`Redis::start_in`]).
    pub host: String,
    ns: Option<super::netns::NsRef>,
    /// Whether it requires a password.
    pub auth: bool,
    /// The CA of the server certificate (TLS servers: `rediss://localhost:PORT` only).
    pub ca: Option<PathBuf>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
}

impl Redis {
    /// No authentication.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// `requirepass` plus an ACL user.
    pub async fn start_auth() -> Self {
        Self::launch(true).await
    }

    /// TLS only (no plain port), certificate for `localhost` signed by [`Redis::ca`].
    pub async fn start_tls() -> Self {
        Self::launch_with(false, true, 90).await
    }

    /// As [`Redis::start_tls`], with a server certificate that expires in `days` days.
    pub async fn start_tls_valid(days: u32) -> Self {
        Self::launch_with(false, true, days).await
    }

    async fn launch(auth: bool) -> Self {
        Self::launch_with(auth, false, 90).await
    }

    /// No authentication, inside the network namespace `ns` on its address.
    pub async fn start_in(ns: &super::netns::NsRef) -> Self {
        Self::launch_in(false, false, 90, Some(ns.clone())).await
    }

    async fn launch_with(auth: bool, tls: bool, days: u32) -> Self {
        Self::launch_in(auth, tls, days, None).await
    }

    async fn launch_in(auth: bool, tls: bool, days: u32, ns: Option<super::netns::NsRef>) -> Self {
        let bin = require_bin("redis-server", "redis-server", &[]);
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let ca = tls.then(|| super::postgres::make_certs_valid(dir.path(), days));
        let host = ns
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_string(), |n| n.peer_ip.to_string());
        let mut conf = format!(
            "port {}\nbind {host}\nsave \"\"\nappendonly no\ndaemonize no\nprotected-mode no\ndir {}\nlogfile {}\n",
            if tls { 0 } else { port },
            dir.path().display(),
            dir.path().join("redis.log").display(),
        );
        if tls {
            let d = dir.path();
            conf.push_str(&format!(
                "tls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\n",
                d.join("server.crt").display(),
                d.join("server.key").display(),
                d.join("ca.crt").display(),
            ));
        }
        if auth {
            conf.push_str(&format!("requirepass {PASSWORD}\n"));
            conf.push_str(&format!("user {ACL_USER} on >{ACL_PASSWORD} ~* &* +@all\n"));
        }
        std::fs::write(dir.path().join("redis.conf"), conf).expect("redis.conf");
        let mut r = Redis {
            port,
            host,
            ns,
            auth,
            ca,
            dir,
            bin,
            child: None,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg(self.dir.path().join("redis.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match &self.ns {
            Some(ns) => ns.spawn(&mut cmd),
            None => cmd.spawn().expect("spawn redis-server"),
        };
        self.child = Some(child);
        wait_listening(
            &format!("{}:{}", self.host, self.port),
            Duration::from_secs(10),
        )
        .await;
    }

    /// `redis://[user:password@]HOST:PORT/DB`.
    pub fn url(&self, userinfo: &str, db: u32) -> String {
        let at = if userinfo.is_empty() {
            String::new()
        } else {
            format!("{userinfo}@")
        };
        format!("redis://{at}{}:{}/{db}", self.host, self.port)
    }

    /// A URL with full rights for the test's own commands.
    pub fn admin_url(&self) -> String {
        if self.auth {
            self.url(&format!(":{PASSWORD}"), 0)
        } else {
            self.url("", 0)
        }
    }

    /// Runs one command as admin; the reply.
    pub async fn cmd(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.admin_url()).expect("redis url");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("test connection to redis");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// `CLIENT LIST` lines of the agent's connections (every client but the one asking).
    pub async fn agent_clients(&self) -> Vec<String> {
        let v = self.cmd(&["CLIENT", "LIST"]).await;
        let text = match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::VerbatimString { text, .. } => text,
            other => panic!("CLIENT LIST answered {other:?}"),
        };
        text.lines()
            .filter(|l| !l.contains("cmd=client|list"))
            .map(str::to_owned)
            .collect()
    }

    /// SIGKILLs the server (through its child handle) and reaps it.
    fn kill_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's process id (for [`super::stale::Frozen`]); empty once killed.
    pub fn pids(&self) -> Vec<u32> {
        self.child.iter().map(Child::id).collect()
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl super::scenarios::RestartablePeer for Redis {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn sigkill(&mut self) {
        self.kill_child();
    }

    /// Starts again on the same port.
    async fn start_again(&mut self) {
        assert!(self.child.is_none(), "restart a running server");
        self.spawn().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill_child();
    }
}
