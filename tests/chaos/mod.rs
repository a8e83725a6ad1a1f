//! Chaos tests (issue 12): real peers inside network namespaces the tests create
//! (`common::netns`), real faults, and the agent binary (`target/debug/lifeline`) as a
//! child process, so its file descriptors and RSS are its own (not shared with tests
//! running in parallel) and its events come from its `/ws` stream.
//!
//! For each of tcp, http, websocket (session), socketio (session), sip udp, sip tcp
//! (session), ami (session), postgres (session) and redis (session):
//! * [`partition`]: 100 % loss on the peer's link (nftables DROP in its namespace), heal;
//! * [`restart`]: the peer SIGKILLed and started again, 50 times in a row;
//! * [`slow`]: every reply delayed by 1.5 s by a relay written here ([`relay`]);
//!
//! and [`resolver`]: the agent in a namespace whose resolver address drops every packet.
//!
//! Peers: processes spawned inside the namespace (lighttpd for tcp/http,
//! the npm `socket.io` server, Kamailio for sip, PostgreSQL, redis-server), killed with
//! SIGKILL by PID (Kamailio: its own process group). The websocket and AMI peers are
//! in-process servers whose listening socket was created inside the namespace; their
//! "kill -9" closes the listener and every connection at once without a goodbye (what
//! the kernel does to the sockets of a SIGKILLed process); the AMI peer is
//! `common::fake_ami` (Asterisk is not in Debian 12).

mod partition;
mod relay;
mod resolver;
mod restart;
mod slow;

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::task::{JoinHandle, JoinSet};

use crate::common::fake_ami::{FakeAmi, FakeAmiConfig};
use crate::common::netns::{NsRef, tcp_rows};
use crate::common::postgres::Pg;
use crate::common::redis::Redis;
use crate::common::scenarios::RestartablePeer;
use crate::common::{free_port, require_bin};

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
        let (_tx, mut rx) = ws.split();
        let log = self.events.clone();
        self.ws = Some(tokio::spawn(async move {
            let _keep = _tx;
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

    /// How many events were recorded so far (a mark for [`AgentProc::wait_event`]).
    pub fn mark(&self) -> usize {
        self.events.lock().len()
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

/// The kinds the chaos tests cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Http,
    Websocket,
    Socketio,
    SipUdp,
    SipTcp,
    Ami,
    Postgres,
    Redis,
}

impl Kind {
    /// A session check (`mode = "session"`), else a probe.
    pub fn session(self) -> bool {
        !matches!(self, Kind::Tcp | Kind::Http | Kind::SipUdp)
    }

    /// The `[[checks]]` table for [`CHECK`] against `to`, then `timing` lines.
    pub fn check_toml(self, to: SocketAddrV4, timing: &str, slow: bool) -> String {
        let keys = match self {
            Kind::Tcp => format!("kind = \"tcp\"\naddress = \"{to}\""),
            Kind::Http => format!("kind = \"http\"\nurl = \"http://{to}/\""),
            Kind::Websocket => {
                format!("kind = \"websocket\"\nmode = \"session\"\nurl = \"ws://{to}/\"")
            }
            // Through the slow relay, the heartbeat is an acknowledged event (its round
            // trip is the latency); otherwise the server's pings.
            Kind::Socketio if slow => format!(
                "kind = \"socketio\"\nmode = \"session\"\nurl = \"http://{to}\"\nemit = {{ event = \"echo\" }}"
            ),
            Kind::Socketio => {
                format!("kind = \"socketio\"\nmode = \"session\"\nurl = \"http://{to}\"")
            }
            Kind::SipUdp => format!("kind = \"sip\"\ntarget = \"sip:{to};transport=udp\""),
            Kind::SipTcp => {
                format!("kind = \"sip\"\nmode = \"session\"\ntarget = \"sip:{to};transport=tcp\"")
            }
            Kind::Ami => format!(
                "kind = \"ami\"\nmode = \"session\"\naddress = \"{to}\"\nusername = \"monitor\"\nsecret = \"amisecret\""
            ),
            Kind::Postgres => format!(
                "kind = \"postgres\"\nmode = \"session\"\ndsn = \"postgres://app:{}@{to}/appdb?sslmode=disable\"",
                crate::common::postgres::APP_PASSWORD
            ),
            Kind::Redis => {
                format!("kind = \"redis\"\nmode = \"session\"\nurl = \"redis://{to}/0\"")
            }
        };
        format!("[[checks]]\nname = \"{CHECK}\"\n{keys}\n{timing}\n")
    }
}

/// An agent config with the API on `{listen}` and one check.
pub fn agent_config(check: &str) -> String {
    format!("[agent]\nlisten = \"{{listen}}\"\ndata_dir = \"{{dir}}/data\"\n{check}")
}

/// A server process inside a namespace, restartable on the same port.
pub struct ProcPeer {
    ns: NsRef,
    make: Box<dyn Fn() -> tokio::process::Command + Send + Sync>,
    child: Option<tokio::process::Child>,
    /// Kill the whole process group (the server forks workers into it).
    group: bool,
    pub port: u16,
    what: &'static str,
    _dir: Option<tempfile::TempDir>,
}

impl ProcPeer {
    async fn start(
        ns: &NsRef,
        what: &'static str,
        port: u16,
        group: bool,
        dir: Option<tempfile::TempDir>,
        make: Box<dyn Fn() -> tokio::process::Command + Send + Sync>,
    ) -> Self {
        let mut p = Self {
            ns: ns.clone(),
            make,
            child: None,
            group,
            port,
            what,
            _dir: dir,
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        let mut cmd = (self.make)();
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        if self.group {
            cmd.process_group(0);
        }
        let mut child = self.ns.spawn_tokio(&mut cmd);
        let to = self.ns.peer(self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Ok(_)) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(to),
            )
            .await
            {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("{} exited before listening on {to}: {st}", self.what);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {to} within 20 s",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.child = Some(child);
    }

    async fn kill9(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if self.group
            && let Some(pid) = c.id()
        {
            let pg = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
        } else {
            let _ = c.start_kill();
        }
        let _ = c.wait().await;
        if self.group {
            // Workers in the group release the port when they are gone.
            self.wait_port_free().await;
        }
    }

    async fn wait_port_free(&self) {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let busy = self.ns.run_in(move || {
                let tcp = std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap_or_default();
                let udp = std::fs::read_to_string("/proc/thread-self/net/udp").unwrap_or_default();
                tcp_rows(&tcp).any(|r| r.local.port() == port && r.state == 0x0a)
                    || tcp_rows(&udp).any(|r| r.local.port() == port)
            });
            if !busy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} port {port} still bound 5 s after SIGKILL",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for ProcPeer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            if self.group
                && let Some(pid) = c.id()
            {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = c.start_kill();
        }
    }
}

/// An in-process WebSocket server (tungstenite answers pings) on a socket inside a
/// namespace.
pub struct WsPeer {
    ns: NsRef,
    pub port: u16,
    tasks: JoinSet<()>,
}

impl WsPeer {
    async fn start(ns: &NsRef) -> Self {
        let mut p = Self {
            ns: ns.clone(),
            port: 0,
            tasks: JoinSet::new(),
        };
        p.listen();
        p
    }

    fn listen(&mut self) {
        let l = self.ns.bind_tcp(self.port);
        self.port = l.local_addr().expect("addr").port();
        let l = tokio::net::TcpListener::from_std(l).expect("register listener");
        let conns: Arc<Mutex<JoinSet<()>>> = Arc::default();
        self.tasks.spawn(async move {
            loop {
                let Ok((sock, _)) = l.accept().await else {
                    return;
                };
                conns.lock().spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(sock).await else {
                        return;
                    };
                    while let Some(Ok(_)) = ws.next().await {}
                });
            }
            // Dropping this task drops `conns`, which aborts every connection task.
        });
    }

    async fn kill9(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    async fn restart(&mut self) {
        self.listen();
    }
}

/// The peer of one kind.
pub enum Peer {
    Proc(ProcPeer),
    Ws(WsPeer),
    Ami {
        ns: NsRef,
        port: u16,
        fake: Option<FakeAmi>,
    },
    Pg(Box<Pg>),
    Redis(Redis),
}

fn kamailio_cmd(ns: &NsRef, port: u16, dir: &std::path::Path) -> tokio::process::Command {
    const MODULE_DIRS: &[&str] = &[
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
    ];
    let bin = require_bin("kamailio", "kamailio", &["/usr/sbin", "/usr/local/sbin"]);
    let mpath = MODULE_DIRS
        .iter()
        .find(|d| std::path::Path::new(d).join("sl.so").is_file())
        .unwrap_or_else(|| panic!("kamailio modules not found in {MODULE_DIRS:?}: install the Debian package `kamailio`"));
    let cfg = std::fs::read_to_string(crate::common::data("sip/kamailio.cfg"))
        .expect("kamailio.cfg")
        .replace("127.0.0.1", &ns.peer_ip.to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@TLSPORT@", "0")
        .replace("@DIR@", dir.to_str().expect("utf-8"))
        .replace("@MPATH@", mpath);
    let cfg_path = dir.join("kamailio.cfg");
    std::fs::write(&cfg_path, cfg).expect("write kamailio.cfg");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).expect("run dir");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.current_dir(dir)
        .args(["-DD", "-E", "-m", "32", "-M", "8"])
        .arg("-f")
        .arg(&cfg_path)
        .arg("-w")
        .arg(dir)
        .arg("-P")
        .arg(dir.join("kamailio.pid"))
        .arg("-Y")
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn sio_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/socketio")
}

impl Peer {
    /// Starts the peer of `kind` inside `ns`. `ping_ms`: the Socket.IO server's
    /// pingInterval.
    pub async fn start(kind: Kind, ns: &NsRef, ping_ms: u64) -> Self {
        match kind {
            Kind::Tcp | Kind::Http => {
                // lighttpd: one process, starts in tens of milliseconds.
                let bin = require_bin("lighttpd", "lighttpd", &["/usr/sbin"]);
                let port = free_port();
                let tmp = tempfile::tempdir().expect("tempdir");
                let d = tmp.path();
                std::fs::create_dir(d.join("www")).expect("docroot");
                std::fs::write(d.join("www/index.html"), "ok\n").expect("index");
                let conf = d.join("lighttpd.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "server.document-root = \"{}\"\nserver.bind = \"{}\"\nserver.port = {port}\n\
                         server.errorlog = \"{}\"\nindex-file.names = (\"index.html\")\n",
                        d.join("www").display(),
                        ns.peer_ip,
                        d.join("error.log").display()
                    ),
                )
                .expect("lighttpd.conf");
                Peer::Proc(
                    ProcPeer::start(
                        ns,
                        "lighttpd",
                        port,
                        false,
                        Some(tmp),
                        Box::new(move || {
                            let mut c = tokio::process::Command::new(&bin);
                            c.arg("-D")
                                .arg("-f")
                                .arg(&conf)
                                .stdout(Stdio::null())
                                .stderr(Stdio::null());
                            c
                        }),
                    )
                    .await,
                )
            }
            Kind::Websocket => Peer::Ws(WsPeer::start(ns).await),
            Kind::Socketio => {
                let dir = sio_dir();
                assert!(
                    dir.join("node_modules/socket.io/package.json").is_file(),
                    "npm package `socket.io` missing in {}: run scripts/test-deps/socketio.sh",
                    dir.display()
                );
                let node = require_bin("node", "nodejs", &[]);
                let port = free_port();
                let ip = ns.peer_ip.to_string();
                let ping = ping_ms.to_string();
                Peer::Proc(
                    ProcPeer::start(
                        ns,
                        "node server.js (socket.io)",
                        port,
                        false,
                        None,
                        Box::new(move || {
                            let mut c = tokio::process::Command::new(&node);
                            c.arg("server.js")
                                .arg(port.to_string())
                                .current_dir(&dir)
                                .env("HOST", &ip)
                                .env("PING_INTERVAL", &ping)
                                .env("PING_TIMEOUT", "20000")
                                .stdout(Stdio::null())
                                .stderr(Stdio::null());
                            c
                        }),
                    )
                    .await,
                )
            }
            Kind::SipUdp | Kind::SipTcp => {
                let port = crate::sip::free_port_both();
                let tmp = tempfile::tempdir().expect("tempdir");
                let dir = tmp.path().to_path_buf();
                let n = ns.clone();
                Peer::Proc(
                    ProcPeer::start(
                        ns,
                        "kamailio",
                        port,
                        true,
                        Some(tmp),
                        Box::new(move || kamailio_cmd(&n, port, &dir)),
                    )
                    .await,
                )
            }
            Kind::Ami => {
                let l = ns.bind_tcp(0);
                let port = l.local_addr().expect("addr").port();
                Peer::Ami {
                    ns: ns.clone(),
                    port,
                    fake: Some(FakeAmi::start_on(FakeAmiConfig::default(), l)),
                }
            }
            Kind::Postgres => Peer::Pg(Box::new(Pg::start_in(ns).await)),
            Kind::Redis => Peer::Redis(Redis::start_in(ns).await),
        }
    }

    /// The port it listens on (at the namespace's address).
    pub fn port(&self) -> u16 {
        match self {
            Peer::Proc(p) => p.port,
            Peer::Ws(w) => w.port,
            Peer::Ami { port, .. } => *port,
            Peer::Pg(p) => p.port,
            Peer::Redis(r) => r.port,
        }
    }

    /// SIGKILL (in-process peers: everything closed at once); returns once it is gone.
    pub async fn kill9(&mut self) {
        match self {
            Peer::Proc(p) => p.kill9().await,
            Peer::Ws(w) => w.kill9().await,
            Peer::Ami { fake, .. } => drop(fake.take()),
            Peer::Pg(p) => p.sigkill().await,
            Peer::Redis(r) => r.sigkill().await,
        }
    }

    /// Starts it again on the same port; returns once it accepts connections.
    pub async fn restart(&mut self) {
        match self {
            Peer::Proc(p) => p.spawn().await,
            Peer::Ws(w) => w.restart().await,
            Peer::Ami { ns, port, fake } => {
                let l = ns.bind_tcp(*port);
                *fake = Some(FakeAmi::start_on(FakeAmiConfig::default(), l));
            }
            Peer::Pg(p) => p.start_again().await,
            Peer::Redis(r) => r.start_again().await,
        }
    }

    /// The agent's sessions as the peer itself lists them: `pg_stat_activity`,
    /// `CLIENT LIST`, the socket.io server's client count; for the others the
    /// namespace's own TCP table (ESTABLISHED connections to the peer's port).
    pub async fn sessions(&self, ns: &NsRef) -> usize {
        match self {
            Peer::Pg(p) => p.lifeline_backends().await.len(),
            Peer::Redis(r) => r.agent_clients().await.len(),
            Peer::Proc(p) if p.what.starts_with("node") => {
                let url = format!("http://{}/control/state", ns.peer(p.port));
                let (_, v) = crate::common::api::get_json(&url).await;
                v["clients"].as_u64().unwrap_or(u64::MAX) as usize
            }
            _ => ns.established_to(self.port()),
        }
    }
}

/// Slack allowed past a bound on this 2-core machine shared with other builds (the
/// agent's timers, a child process, event delivery over `/ws`).
pub const SLACK: Duration = Duration::from_millis(750);

/// Waits until `f` returns true (polling every 50 ms), or panics after `within`.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
