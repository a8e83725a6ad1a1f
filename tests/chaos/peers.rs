//! The peers, one per kind, inside a namespace, each a separate server process spawned
//! there: [`ProcPeer`] for lighttpd, the npm `ws` server (`tests/peers/websocket`), the
//! npm `socket.io` server, Kamailio and the AMI peer (`tests/peers/ami/server.py`, the
//! transcript server of `common::fake_ami` as a process); PostgreSQL and redis through
//! `common`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::Kind;
use crate::common::netns::{NsRef, tcp_rows};
use crate::common::postgres::Pg;
use crate::common::redis::Redis;
use crate::common::scenarios::RestartablePeer;
use crate::common::{free_port, require_bin};

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

/// The peer of one kind.
pub enum Peer {
    Proc(ProcPeer),
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

fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

fn sio_dir() -> PathBuf {
    peers_dir().join("socketio")
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
            Kind::Websocket => {
                let dir = peers_dir().join("websocket");
                assert!(
                    sio_dir().join("node_modules/ws/package.json").is_file(),
                    "npm package `ws` missing in {}/node_modules (it comes with socket.io): \
                     run scripts/test-deps/socketio.sh",
                    sio_dir().display()
                );
                let node = require_bin("node", "nodejs", &[]);
                let port = free_port();
                let ip = ns.peer_ip.to_string();
                Peer::Proc(
                    ProcPeer::start(
                        ns,
                        "node server.js (ws)",
                        port,
                        false,
                        None,
                        Box::new(move || {
                            let mut c = tokio::process::Command::new(&node);
                            c.arg("server.js")
                                .current_dir(&dir)
                                .env("HOST", &ip)
                                .env("PORT", port.to_string())
                                .stdout(Stdio::null())
                                .stderr(Stdio::null());
                            c
                        }),
                    )
                    .await,
                )
            }
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
                let port = free_port();
                let ip = ns.peer_ip.into();
                Peer::Proc(
                    ProcPeer::start(
                        ns,
                        "python3 server.py (ami)",
                        port,
                        false,
                        None,
                        Box::new(move || {
                            let mut c = crate::common::fake_ami::process_command(ip, port);
                            c.stdout(Stdio::null()).stderr(Stdio::null());
                            c
                        }),
                    )
                    .await,
                )
            }
            Kind::Postgres => Peer::Pg(Box::new(Pg::start_in(ns).await)),
            Kind::Redis => Peer::Redis(Redis::start_in(ns).await),
        }
    }

    /// The port it listens on (at the namespace's address).
    pub fn port(&self) -> u16 {
        match self {
            Peer::Proc(p) => p.port,
            Peer::Pg(p) => p.port,
            Peer::Redis(r) => r.port,
        }
    }

    /// SIGKILL (by the server's own PID, or its process group); returns once it is gone.
    pub async fn kill9(&mut self) {
        match self {
            Peer::Proc(p) => p.kill9().await,
            Peer::Pg(p) => p.sigkill().await,
            Peer::Redis(r) => r.sigkill().await,
        }
    }

    /// Starts it again on the same port; returns once it accepts connections.
    pub async fn restart(&mut self) {
        match self {
            Peer::Proc(p) => p.spawn().await,
            Peer::Pg(p) => p.start_again().await,
            Peer::Redis(r) => r.start_again().await,
        }
    }

    /// The agent's sessions as the peer itself lists them: `pg_stat_activity`,
    /// `CLIENT LIST`, the socket.io and `ws` servers' client counts; for the others
    /// (Kamailio, the AMI peer) the namespace's own TCP table (ESTABLISHED connections
    /// to the peer's port).
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
