//! The soak (issue 18): the release `lifeline` binary in its own process runs 10,000
//! checks of mixed kinds for an hour against real local peers, 5 % of the targets flapping
//! every minute, Prometheus scraping its `/metrics` every 5 s. Every 10 s the agent is
//! sampled from `/proc` (RSS, open fds, threads, CPU user/system), `/health/detailed`
//! (`agent.scheduler`: the last 10 s window's lag p99) and its `/api/v1/events` stream
//! (status transitions); the samples go to a CSV and an SVG time series.
//!
//! ```text
//! cargo build --release --bench soak      # then run the binary it names, or:
//! target/release/deps/soak-<hash> [--minutes 60] [--checks 10000] [--flap-percent 5]
//!     [--csv target/soak/soak.csv] [--plot docs/benchmarks/soak.svg] [--no-prometheus]
//!     [--peers-nice 10]
//! ```
//!
//! Peers, all started by the soak in temp dirs on free ports: a separate peer process
//! (this binary in `--peers-child` mode) serves one loopback address per target — tcp
//! (accept, close), http (answers `200 ok`) and TCP relays to a WebSocket echo
//! (`tests/peers/websocket/server.js` under node), to `redis-server` and to PostgreSQL
//! (`initdb` + `postgres`, Debian `postgresql`). A flap takes a target down for 30 s:
//! its listener is closed (connections refused) and, for relays, its open connections are
//! cut, then it listens again. Every peer (Prometheus included) runs at `nice 10`
//! (`--peers-nice`): they stand in for other machines, and the agent is the one under
//! test (see [`peer_command`]).
//!
//! Pass: RSS and open fds flat (the mean of the last 15 minutes within 5 % of the mean of
//! minutes 10–25; a shorter run scales both windows to its length), no 10 s window with a
//! scheduler lag p99 over 100 ms after the first 10/60 of the run (start-up), and every flap
//! seen: each flapped target's check reported a failing status while it was down and a
//! working one after it came back — judged from the agent's history API (the store is a
//! lossless observer); the event stream's own count, which drops events for a slow reader
//! (`agent:lagged`), is reported beside it.

// Benchmarks drive whole processes from plain threads: std's clock and sleep are the right
// ones here (clippy.toml bans them in the agent's async code).
#![allow(clippy::disallowed_methods)]

#[path = "support/procfs.rs"]
mod procfs;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use procfs::{Cpu, fds, major_faults, rss_mib, steal_seconds, threads};

/// How much lower than the agent the soak's peers run (`--peers-nice`, default 10).
static PEERS_NICE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(10);

/// A command for one of the soak's peers (PostgreSQL, Redis, the WebSocket echo, the peer
/// process, Prometheus), started through `nice -n PEERS_NICE` (which execs it, so the pid
/// is the peer's own). In production these are other machines; here they share the two
/// cores with the agent, and at the agent's own priority their bursts (PostgreSQL forks a
/// backend for each of 40 probe connections a second, Prometheus ingests 350,000 samples
/// every 5 s) land in the agent's scheduler lag as time its workers wait for a core. At a
/// lower priority they still get every core the agent leaves idle. `--peers-nice 0` runs
/// them at the agent's priority.
fn peer_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let n = PEERS_NICE.load(Ordering::Relaxed);
    if n == 0 {
        return Command::new(program);
    }
    let mut c = Command::new("nice");
    c.arg("-n").arg(n.to_string()).arg(program);
    c
}

/// What a target of the peer process does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serve {
    /// Accept and close.
    Tcp,
    /// Read the request head, answer `200 ok`, close.
    Http,
    /// Relay to an upstream server.
    Relay,
}

/// The check kinds of the mix, with their share of the checks (per 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Http,
    WebSocket,
    RedisProbe,
    RedisSession,
    PgProbe,
    PgSession,
}

const MIX: [(Kind, usize); 7] = [
    (Kind::Tcp, 50),
    (Kind::Http, 30),
    (Kind::WebSocket, 10),
    (Kind::RedisProbe, 3),
    (Kind::RedisSession, 3),
    (Kind::PgProbe, 2),
    (Kind::PgSession, 2),
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Http => "http",
            Kind::WebSocket => "websocket (session)",
            Kind::RedisProbe => "redis (probe)",
            Kind::RedisSession => "redis (session)",
            Kind::PgProbe => "postgres (probe)",
            Kind::PgSession => "postgres (session)",
        }
    }

    fn serve(self) -> Serve {
        match self {
            Kind::Tcp => Serve::Tcp,
            Kind::Http => Serve::Http,
            _ => Serve::Relay,
        }
    }
}

/// The kind of each of `n` checks, in the proportions of [`MIX`].
fn kinds(n: usize) -> Vec<Kind> {
    let mut v = Vec::with_capacity(n);
    for (k, share) in MIX {
        v.extend(std::iter::repeat_n(k, n * share / 100));
    }
    while v.len() < n {
        v.push(Kind::Tcp);
    }
    v
}

// ---------------------------------------------------------------------------------------
// The peer process.

/// Child mode: serves the targets listed in `spec` (`ADDR tcp|http|relay [UPSTREAM]` per
/// line) and reads `down I` / `up I` commands on stdin until it closes.
fn peers_child(spec: &Path) {
    let text = std::fs::read_to_string(spec).expect("spec");
    let targets: Vec<(SocketAddr, Serve, Option<SocketAddr>)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let serve = match f[1] {
                "tcp" => Serve::Tcp,
                "http" => Serve::Http,
                _ => Serve::Relay,
            };
            (
                f[0].parse().expect("addr"),
                serve,
                f.get(2).map(|u| u.parse().expect("upstream")),
            )
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut live = Vec::with_capacity(targets.len());
        for t in &targets {
            live.push(Some(listen(*t).await));
        }
        println!("ready");
        // stdin is read on a plain thread (tokio's `io-std` is not enabled here).
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            let mut f = line.split_whitespace();
            let (Some(cmd), Some(Ok(i))) = (f.next(), f.next().map(str::parse::<usize>)) else {
                continue;
            };
            let Some(slot) = live.get_mut(i) else {
                continue;
            };
            match cmd {
                "down" => {
                    if let Some(tok) = slot.take() {
                        tok.cancel();
                    }
                }
                "up" if slot.is_none() => *slot = Some(listen(targets[i]).await),
                _ => {}
            }
        }
    });
}

/// Binds a target (retrying: the port may still be held for a moment) and serves it
/// until the token is cancelled; cancelling also cuts its relayed connections.
async fn listen(
    (addr, serve, upstream): (SocketAddr, Serve, Option<SocketAddr>),
) -> tokio_util::sync::CancellationToken {
    let tok = tokio_util::sync::CancellationToken::new();
    let l = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                eprintln!("peers: bind {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let t = tok.clone();
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = t.cancelled() => return,
                r = l.accept() => match r {
                    Ok((s, _)) => s,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            match serve {
                Serve::Tcp => drop(s),
                Serve::Http => {
                    tokio::spawn(answer_http(s));
                }
                Serve::Relay => {
                    let (t, up) = (t.clone(), upstream.expect("relay upstream"));
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = t.cancelled() => {}
                            _ = relay(s, up) => {}
                        }
                    });
                }
            }
        }
    });
    tok
}

async fn answer_http(mut s: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut buf = [0u8; 4096];
        let mut have = 0;
        while have < buf.len() {
            let n = s.read(&mut buf[have..]).await.ok()?;
            if n == 0 {
                return None;
            }
            have += n;
            if buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await
            .ok()?;
        s.shutdown().await.ok()
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
}

async fn relay(mut s: tokio::net::TcpStream, up: SocketAddr) {
    let Ok(Ok(mut u)) =
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(up)).await
    else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut s, &mut u).await;
}

// ---------------------------------------------------------------------------------------
// The parent: peers, agent, Prometheus, sampling.

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `n` loopback addresses free to listen on: 127.0.2.1–40 × ports from 20000, below the
/// ephemeral range so the agent's own connections never collide with them.
fn target_addrs(n: usize) -> Vec<SocketAddr> {
    let mut v = Vec::with_capacity(n);
    'all: for ip in 1..=40u8 {
        for port in 20_000..32_000u16 {
            let a = SocketAddr::from(([127, 0, 2, ip], port));
            if std::net::TcpListener::bind(a).is_ok() {
                v.push(a);
                if v.len() == n {
                    break 'all;
                }
            }
            if v.len() >= ip as usize * 500 {
                break;
            }
        }
    }
    assert_eq!(v.len(), n, "not enough free loopback ports for the targets");
    v
}

/// `GET path` over HTTP/1.0 with a deadline; the body when the answer is 200.
fn get(port: u16, path: &str, within: Duration) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), within).ok()?;
    s.set_read_timeout(Some(within)).ok()?;
    s.set_write_timeout(Some(within)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.take(256 << 20).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_port(port: u16, what: &str) {
    wait_until(Duration::from_secs(60), what, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// The newest `/usr/lib/postgresql/<v>/bin/<name>`.
fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    let p = dirs
        .last()
        .map(|d| d.join("bin").join(name))
        .expect("PostgreSQL (Debian package postgresql)");
    assert!(p.is_file(), "{} (Debian package postgresql)", p.display());
    p
}

/// uid and gid of the `postgres` user when running as root (postgres refuses root).
fn pg_owner() -> Option<(u32, u32)> {
    if nix::unistd::getuid().is_root() {
        let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
        let f: Vec<String> = passwd
            .lines()
            .find(|l| l.starts_with("postgres:"))
            .expect("a `postgres` user (Debian package postgresql)")
            .split(':')
            .map(str::to_string)
            .collect();
        Some((f[2].parse().expect("uid"), f[3].parse().expect("gid")))
    } else {
        None
    }
}

fn postgres(dir: &Path, port: u16) -> Proc {
    let owner = pg_owner();
    let data = dir.join("pg");
    std::fs::create_dir_all(&data).expect("pg dir");
    let as_owner = |c: &mut Command| {
        if let Some((u, g)) = owner {
            c.uid(u).gid(g);
        }
    };
    if let Some((u, g)) = owner {
        std::os::unix::fs::chown(dir, Some(u), Some(g)).expect("chown");
        std::os::unix::fs::chown(&data, Some(u), Some(g)).expect("chown");
    }
    let mut init = Command::new(pg_bin("initdb"));
    init.args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "-D",
    ])
    .arg(&data)
    .stdout(Stdio::null());
    as_owner(&mut init);
    let out = init.output().expect("initdb");
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut run = peer_command(pg_bin("postgres"));
    run.arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=600",
            "-c",
            "fsync=off",
            "-c",
            "shared_buffers=64MB",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("pg.log")).expect("pg log"));
    as_owner(&mut run);
    let p = Proc(run.spawn().expect("postgres"));
    wait_port(port, "postgres");
    p
}

fn redis(dir: &Path, port: u16) -> Proc {
    let p = Proc(
        peer_command("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "10000",
                "--protected-mode",
                "no",
                "--dir",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server)"),
    );
    wait_port(port, "redis-server");
    p
}

fn websocket_echo() -> (Proc, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/websocket/server.js");
    let mut child = peer_command("node")
        .arg(&script)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node (Debian package nodejs) for tests/peers/websocket/server.js");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("websocket echo ready");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "websocket echo said {line:?} (is `ws` installed? scripts/test-deps/socketio.sh)"
            )
        });
    (Proc(child), port)
}

fn prometheus(dir: &Path, agent_port: u16, port: u16) -> Proc {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 5s\n  scrape_timeout: 5s\nscrape_configs:\n- job_name: lifeline\n  static_configs:\n  - targets: ['127.0.0.1:{agent_port}']\n"
        ),
    )
    .expect("prometheus.yml");
    let p = Proc(
        peer_command("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=3h")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
            .spawn()
            .expect("prometheus (Debian package prometheus)"),
    );
    wait_port(port, "prometheus");
    p
}

/// The first value of an instant query.
fn prom_query(port: u16, q: &str) -> Option<f64> {
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = get(
        port,
        &format!("/api/v1/query?query={enc}"),
        Duration::from_secs(10),
    )?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Status transitions read from the agent's event stream, by check index.
#[derive(Default)]
struct Seen {
    /// (seconds since the start, check index, true = to a working status).
    transitions: Mutex<Vec<(f64, usize, bool)>>,
    downs: AtomicU64,
    ups: AtomicU64,
    /// `agent:lagged` notices (events this reader missed).
    lagged: AtomicU64,
}

/// Reads `/api/v1/events` (SSE over HTTP/1.0, so the body is plain lines) on a thread.
fn watch_events(port: u16, t0: Instant, seen: Arc<Seen>) {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("events");
        write!(s, "GET /api/v1/events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("events");
        let mut r = BufReader::with_capacity(1 << 20, s);
        let mut line = String::new();
        let mut event = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if let Some(e) = l.strip_prefix("event:") {
                event = e.trim().to_string();
                continue;
            }
            let Some(data) = l.strip_prefix("data:") else {
                continue;
            };
            let up = match event.as_str() {
                "connection:disconnected" => false,
                "connection:reconnected" | "connection:health_degraded" => true,
                "agent:lagged" => {
                    seen.lagged.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                _ => continue,
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                continue;
            };
            if event == "connection:health_degraded"
                && !matches!(
                    v["previous_status"].as_str(),
                    Some("unhealthy" | "disconnected")
                )
            {
                continue;
            }
            let Some(i) = v["check"]
                .as_str()
                .and_then(|c| c.strip_prefix('c'))
                .and_then(|c| c.parse::<usize>().ok())
            else {
                continue;
            };
            let at = t0.elapsed().as_secs_f64();
            seen.transitions.lock().push((at, i, up));
            let n = if up { &seen.ups } else { &seen.downs };
            n.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Every status transition of the flapped checks, from the agent's history API (the
/// store is a lossless observer; the event stream may drop events for a slow reader):
/// (seconds since the start, check index, true = to a working status).
fn history_transitions(port: u16, checks: &[usize], t0_unix: f64) -> Vec<(f64, usize, bool)> {
    let failing = |s: &str| matches!(s, "unhealthy" | "disconnected");
    let working = |s: &str| matches!(s, "healthy" | "degraded");
    let out = Mutex::new(Vec::new());
    let next = AtomicU64::new(0);
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&i) = checks.get(n) else { return };
                    let path = format!("/api/v1/checks/c{i}/history?since=3h&limit=500");
                    let Some(v) = get(port, &path, Duration::from_secs(30))
                        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                    else {
                        eprintln!("soak: no history for c{i}");
                        continue;
                    };
                    let mut mine = Vec::new();
                    for t in v["transitions"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or(&[])
                    {
                        let (Some(at), Some(to), Some(from)) = (
                            t["at"].as_str(),
                            t["status"].as_str(),
                            t["previous_status"].as_str(),
                        ) else {
                            continue;
                        };
                        let Ok(at) = time::OffsetDateTime::parse(
                            at,
                            &time::format_description::well_known::Rfc3339,
                        ) else {
                            continue;
                        };
                        let secs = at.unix_timestamp_nanos() as f64 / 1e9 - t0_unix;
                        if failing(to) && !failing(from) {
                            mine.push((secs, i, false));
                        } else if working(to) && failing(from) {
                            mine.push((secs, i, true));
                        }
                    }
                    out.lock().extend(mine);
                }
            });
        }
    });
    let mut v = out.into_inner();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// One 10 s sample.
#[derive(Debug, Clone, Default)]
struct Sample {
    t: f64,
    rss: f64,
    fds: usize,
    threads: usize,
    cpu_user: f64,
    cpu_system: f64,
    lag_p99_ms: Option<f64>,
    attempts: u64,
    downs: u64,
    ups: u64,
    lagged: u64,
    flaps: usize,
    prom_up: Option<f64>,
    prom_scrape_ms: Option<f64>,
    prom_samples: Option<f64>,
    /// The agent's major page faults so far.
    majflt: u64,
    /// The machine's steal time so far (s, all CPUs).
    steal_s: f64,
}

/// One flap: target index, when it went down and came back (seconds since the start).
#[derive(Debug, Clone, Copy)]
struct Flap {
    target: usize,
    down: f64,
    up: f64,
}

struct Opts {
    minutes: f64,
    checks: usize,
    flap_percent: f64,
    csv: PathBuf,
    plot: PathBuf,
    /// Without Prometheus (to tell its scrapes' share of the lag).
    no_prometheus: bool,
}

fn config(port: u16, data: &Path, addrs: &[SocketAddr], kinds: &[Kind]) -> String {
    let mut s = format!(
        "[agent]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n",
        data.display()
    );
    for (i, (a, k)) in addrs.iter().zip(kinds).enumerate() {
        s.push_str(&format!("[[checks]]\nname = \"c{i}\"\n"));
        s.push_str(&match k {
            Kind::Tcp => format!("kind = \"tcp\"\naddress = \"{a}\"\n"),
            Kind::Http => format!("kind = \"http\"\nurl = \"http://{a}/\"\n"),
            Kind::WebSocket => {
                format!("kind = \"websocket\"\nmode = \"session\"\nurl = \"ws://{a}/\"\n")
            }
            Kind::RedisProbe => format!("kind = \"redis\"\nurl = \"redis://{a}\"\n"),
            Kind::RedisSession => {
                format!("kind = \"redis\"\nmode = \"session\"\nurl = \"redis://{a}\"\n")
            }
            Kind::PgProbe => format!(
                "kind = \"postgres\"\ndsn = \"postgres://postgres@{a}/postgres?sslmode=disable\"\n"
            ),
            Kind::PgSession => format!(
                "kind = \"postgres\"\nmode = \"session\"\ndsn = \"postgres://postgres@{a}/postgres?sslmode=disable\"\n"
            ),
        });
    }
    s
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// How far a transition's time may precede the flap's recorded time: the bench notes a
/// flap after writing its commands, and a cut session is noticed within milliseconds.
const SKEW: f64 = 1.0;

/// Whether each flap was seen: a transition to failing while the target was down (or
/// within 5 s of its return, events being read as they come) and one back to working
/// after it returned, before that target's next flap.
fn flaps_seen(flaps: &[Flap], transitions: &[(f64, usize, bool)], end: f64) -> Vec<Flap> {
    let mut by: HashMap<usize, Vec<(f64, bool)>> = HashMap::new();
    for &(t, i, up) in transitions {
        by.entry(i).or_default().push((t, up));
    }
    let mut missed = Vec::new();
    for (n, f) in flaps.iter().enumerate() {
        let next = flaps[n + 1..]
            .iter()
            .find(|g| g.target == f.target)
            .map(|g| g.down)
            .unwrap_or(end);
        let ev = by.get(&f.target).map(Vec::as_slice).unwrap_or(&[]);
        let down = ev
            .iter()
            .find(|(t, up)| !*up && *t >= f.down - SKEW && *t <= f.up + 5.0)
            .map(|(t, _)| *t);
        let ok = down.is_some_and(|d| {
            ev.iter()
                .any(|(t, up)| *up && *t >= d.max(f.up - SKEW) && *t <= next)
        });
        if !ok {
            missed.push(*f);
        }
    }
    missed
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    if let Some(spec) = arg("--peers-child") {
        peers_child(Path::new(&spec));
        return;
    }
    if let Some(n) = arg("--peers-nice").and_then(|s| s.parse().ok()) {
        PEERS_NICE.store(n, Ordering::Relaxed);
    }
    let o = Opts {
        minutes: arg("--minutes")
            .and_then(|s| s.parse().ok())
            .unwrap_or(60.0),
        checks: arg("--checks")
            .and_then(|s| s.parse().ok())
            .unwrap_or(10_000),
        flap_percent: arg("--flap-percent")
            .and_then(|s| s.parse().ok())
            .unwrap_or(5.0),
        csv: arg("--csv")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/soak/soak.csv")),
        plot: arg("--plot").map(PathBuf::from).unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks/soak.svg")
        }),
        no_prometheus: args.iter().any(|a| a == "--no-prometheus"),
    };
    let report = run(&o);
    std::process::exit(if report { 0 } else { 1 });
}

fn run(o: &Opts) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let kinds = kinds(o.checks);
    let addrs = target_addrs(o.checks);
    println!(
        "soak: {} checks ({}), {} minutes, {}% of targets flapping every minute, peers at nice {}",
        o.checks,
        MIX.iter()
            .map(|(k, _)| format!("{} {}", kinds.iter().filter(|x| *x == k).count(), k.name()))
            .collect::<Vec<_>>()
            .join(", "),
        o.minutes,
        o.flap_percent,
        PEERS_NICE.load(Ordering::Relaxed)
    );

    // Upstreams, then the peer process in front of them.
    let pg_dir = dir.path().join("postgres");
    std::fs::create_dir_all(&pg_dir).expect("pg dir");
    let (pg_port, redis_port) = (free_port(), free_port());
    let _pg = postgres(&pg_dir, pg_port);
    let _redis = redis(dir.path(), redis_port);
    let (_ws, ws_port) = websocket_echo();
    let spec: String = addrs
        .iter()
        .zip(&kinds)
        .map(|(a, k)| {
            let up = match k {
                Kind::WebSocket => Some(ws_port),
                Kind::RedisProbe | Kind::RedisSession => Some(redis_port),
                Kind::PgProbe | Kind::PgSession => Some(pg_port),
                _ => None,
            };
            let serve = match k.serve() {
                Serve::Tcp => "tcp",
                Serve::Http => "http",
                Serve::Relay => "relay",
            };
            match up {
                Some(p) => format!("{a} {serve} 127.0.0.1:{p}\n"),
                None => format!("{a} {serve}\n"),
            }
        })
        .collect();
    let spec_path = dir.path().join("peers.txt");
    std::fs::write(&spec_path, spec).expect("spec");
    let mut peers = peer_command(std::env::current_exe().expect("exe"));
    peers
        .arg("--peers-child")
        .arg(&spec_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("peers.log")).expect("log"));
    let mut peers = peers.spawn().expect("peer process");
    let mut control: ChildStdin = peers.stdin.take().expect("stdin");
    let mut ready = String::new();
    BufReader::new(peers.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("peers ready");
    assert_eq!(ready.trim(), "ready", "peer process");
    let peers = Proc(peers);

    // The agent: release binary, [agent] + checks (history on, every default).
    let port = free_port();
    let cfg = dir.path().join("lifeline.toml");
    std::fs::write(&cfg, config(port, &dir.path().join("data"), &addrs, &kinds)).expect("config");
    let agent = Proc(
        Command::new(env!("CARGO_BIN_EXE_lifeline"))
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).expect("log"))
            .spawn()
            .expect("lifeline binary"),
    );
    let pid = agent.pid();
    wait_until(Duration::from_secs(60), "the agent to be ready", || {
        get(port, "/-/ready", Duration::from_secs(5)).is_some()
    });
    let prom_port = free_port();
    let _prom = (!o.no_prometheus).then(|| prometheus(dir.path(), port, prom_port));

    let t0 = Instant::now();
    let t0_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let seen = Arc::new(Seen::default());
    watch_events(port, t0, seen.clone());
    let total = o.minutes * 60.0;
    let per_flap = ((o.checks as f64) * o.flap_percent / 100.0).round() as usize;
    let mut flaps: Vec<Flap> = Vec::new();
    let mut down_now: Vec<(usize, f64)> = Vec::new();
    let mut last_round = std::collections::BTreeSet::new();
    let mut next_flap = 60.0;
    let mut next_sample = 0.0;
    let mut samples: Vec<Sample> = Vec::new();
    let mut csv = String::from(
        "t_s,rss_mib,fds,threads,cpu_user_s,cpu_system_s,lag_p99_ms,attempts_10s,downs,ups,lagged,flaps,prom_up,prom_scrape_ms,prom_samples,majflt,steal_s\n",
    );
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
    loop {
        let now = t0.elapsed().as_secs_f64();
        if now >= total {
            break;
        }
        // The targets down for 30 s come back (before a new round goes down).
        if let Some(&(_, d)) = down_now.first()
            && now >= d + 30.0
        {
            let back: Vec<(usize, f64)> = std::mem::take(&mut down_now);
            let cmds: String = back.iter().map(|(i, _)| format!("up {i}\n")).collect();
            control.write_all(cmds.as_bytes()).expect("peer control");
            let up = t0.elapsed().as_secs_f64();
            flaps.extend(
                back.into_iter()
                    .map(|(target, down)| Flap { target, down, up }),
            );
        }
        // Flaps: a new 5 % goes down on each minute (the last one a minute before the
        // end); each comes back 30 s later.
        if now >= next_flap {
            if next_flap + 60.0 <= total {
                // Never the previous round's targets: a late loop could bring one back
                // and take it down again in the same instant.
                let mut picked = std::collections::BTreeSet::new();
                while picked.len() < per_flap.min(o.checks / 2) {
                    let i = fastrand::usize(0..o.checks);
                    if !last_round.contains(&i) {
                        picked.insert(i);
                    }
                }
                last_round = picked.clone();
                let mut cmds = String::new();
                for &i in &picked {
                    cmds.push_str(&format!("down {i}\n"));
                }
                control.write_all(cmds.as_bytes()).expect("peer control");
                let at = t0.elapsed().as_secs_f64();
                down_now.extend(picked.into_iter().map(|i| (i, at)));
            }
            next_flap += 60.0;
        }
        if now >= next_sample {
            let cpu = Cpu::of(&pid);
            let detail = get(port, "/health/detailed", Duration::from_secs(10))
                .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
            let sched = detail.as_ref().map(|d| d["agent"]["scheduler"].clone());
            let s = Sample {
                t: now,
                rss: rss_mib(&pid),
                fds: fds(&pid),
                threads: threads(&pid),
                cpu_user: cpu.user,
                cpu_system: cpu.system,
                lag_p99_ms: sched
                    .as_ref()
                    .and_then(|s| s["lag_p99_seconds"].as_f64())
                    .map(|s| s * 1000.0),
                attempts: sched
                    .as_ref()
                    .and_then(|s| s["attempts"].as_u64())
                    .unwrap_or(0),
                downs: seen.downs.load(Ordering::Relaxed),
                ups: seen.ups.load(Ordering::Relaxed),
                lagged: seen.lagged.load(Ordering::Relaxed),
                flaps: flaps.len(),
                prom_up: prom_query(prom_port, "up{job=\"lifeline\"}"),
                prom_scrape_ms: prom_query(prom_port, "scrape_duration_seconds{job=\"lifeline\"}")
                    .map(|s| s * 1000.0),
                prom_samples: prom_query(prom_port, "scrape_samples_scraped{job=\"lifeline\"}"),
                majflt: major_faults(&pid),
                steal_s: steal_seconds(),
            };
            csv.push_str(&format!(
                "{:.1},{:.2},{},{},{:.2},{:.2},{},{},{},{},{},{},{},{},{},{},{:.2}\n",
                s.t,
                s.rss,
                s.fds,
                s.threads,
                s.cpu_user,
                s.cpu_system,
                opt(s.lag_p99_ms),
                s.attempts,
                s.downs,
                s.ups,
                s.lagged,
                s.flaps,
                opt(s.prom_up),
                opt(s.prom_scrape_ms),
                opt(s.prom_samples),
                s.majflt,
                s.steal_s,
            ));
            println!(
                "t={:>6.0}s rss={:.1}MiB fds={} threads={} cpu={:.1}+{:.1}s lag_p99={} attempts/10s={} downs={} ups={} flaps={} prom_up={} scrape={}ms majflt={} steal={:.2}s",
                s.t,
                s.rss,
                s.fds,
                s.threads,
                s.cpu_user,
                s.cpu_system,
                opt(s.lag_p99_ms),
                s.attempts,
                s.downs,
                s.ups,
                s.flaps,
                opt(s.prom_up),
                opt(s.prom_scrape_ms),
                s.majflt,
                s.steal_s
            );
            samples.push(s);
            // A slow sample (a starved agent) skips slots rather than bunching the next.
            while next_sample <= t0.elapsed().as_secs_f64() {
                next_sample += 10.0;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The last flap came back 30 s before the end; give its checks until every flap is
    // seen on the event stream, or a minute. Then the verdict comes from the history
    // (lossless), the event stream's own count is reported beside it.
    let grace_end = Instant::now() + Duration::from_secs(60);
    let missed_live = loop {
        let end = t0.elapsed().as_secs_f64();
        let m = flaps_seen(&flaps, &seen.transitions.lock(), end);
        if m.is_empty() || Instant::now() >= grace_end {
            break m;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    // The store writes in batches: let the last ones land.
    std::thread::sleep(Duration::from_secs(5));
    let end = t0.elapsed().as_secs_f64();
    let mut flapped: Vec<usize> = flaps.iter().map(|f| f.target).collect();
    flapped.sort_unstable();
    flapped.dedup();
    let history = history_transitions(port, &flapped, t0_unix);
    let missed = flaps_seen(&flaps, &history, end);
    let scrapes = get(prom_port, "/metrics", Duration::from_secs(10))
        .map(|b| {
            b.lines()
                .filter(|l| l.starts_with("prometheus_target_interval_length_seconds_count"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .unwrap_or(0.0);
    let log_lines = std::fs::read_to_string(dir.path().join("agent.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    drop(agent);
    drop(peers);
    drop(control);

    // Verdict.
    let frac = |m: f64| m / 60.0 * total;
    let window = |a: f64, b: f64, f: &dyn Fn(&Sample) -> f64| -> f64 {
        mean(
            &samples
                .iter()
                .filter(|s| s.t >= a && s.t < b)
                .map(f)
                .collect::<Vec<_>>(),
        )
    };
    let (b0, b1, l0) = (frac(10.0), frac(25.0), total - frac(15.0));
    let rss_base = window(b0, b1, &|s| s.rss);
    let rss_last = window(l0, total + 1.0, &|s| s.rss);
    let fds_base = window(b0, b1, &|s| s.fds as f64);
    let fds_last = window(l0, total + 1.0, &|s| s.fds as f64);
    let drift = |a: f64, b: f64| (b - a) / a * 100.0;
    let (rss_drift, fds_drift) = (drift(rss_base, rss_last), drift(fds_base, fds_last));
    // A window with attempts but no p99 was past the largest bucket (1 s): JSON has no
    // infinity, so `/health/detailed` says null.
    let lag_of = |s: &Sample| match s.lag_p99_ms {
        Some(l) => Some(l),
        None if s.attempts > 0 => Some(f64::INFINITY),
        None => None,
    };
    let lags: Vec<f64> = samples
        .iter()
        .filter(|s| s.t >= b0)
        .filter_map(lag_of)
        .collect();
    let lag_worst = lags.iter().copied().fold(0.0_f64, f64::max);
    let lag_all_worst = samples.iter().filter_map(lag_of).fold(0.0_f64, f64::max);
    let lag_over = lags.iter().filter(|l| **l > 100.0).count();
    let last = samples.last().cloned().unwrap_or_default();
    let first = samples.first().cloned().unwrap_or_default();
    let cpu_pct = ((last.cpu_user + last.cpu_system) - (first.cpu_user + first.cpu_system))
        / (last.t - first.t).max(1.0)
        * 100.0;
    let rss_ok = rss_drift.abs() <= 5.0;
    let fds_ok = fds_drift.abs() <= 5.0;
    let lag_ok = lag_over == 0 && !lags.is_empty();
    let flaps_ok = missed.is_empty() && !flaps.is_empty();
    let pass = rss_ok && fds_ok && lag_ok && flaps_ok;
    let scale = if (o.minutes - 60.0).abs() > f64::EPSILON {
        format!(
            " (windows scaled to a {} min run: baseline {:.1}–{:.1} min, last {:.1} min)",
            o.minutes,
            b0 / 60.0,
            b1 / 60.0,
            (total - l0) / 60.0
        )
    } else {
        String::new()
    };
    println!("\nsoak result{scale}:");
    println!(
        "  RSS  baseline {rss_base:.1} MiB, last {rss_last:.1} MiB: {rss_drift:+.2}% {}",
        if rss_ok { "ok" } else { "FAIL" }
    );
    println!(
        "  fds  baseline {fds_base:.0}, last {fds_last:.0}: {fds_drift:+.2}% {}",
        if fds_ok { "ok" } else { "FAIL" }
    );
    println!(
        "  scheduler lag p99 (10 s windows after {:.1} min): worst {lag_worst:.1} ms, {lag_over} of {} windows over 100 ms (worst incl. start-up {lag_all_worst:.1} ms) {}",
        b0 / 60.0,
        lags.len(),
        if lag_ok { "ok" } else { "FAIL" }
    );
    // What the machine did in each late window: the agent's major page faults (a thread
    // waiting for the disk) and the hypervisor's steal time, against the run's median.
    let per_window: Vec<(f64, u64, f64)> = samples
        .windows(2)
        .map(|w| {
            (
                w[1].t,
                w[1].majflt.saturating_sub(w[0].majflt),
                w[1].steal_s - w[0].steal_s,
            )
        })
        .collect();
    let mut steals: Vec<f64> = per_window.iter().map(|w| w.2).collect();
    steals.sort_by(f64::total_cmp);
    let median_steal = steals.get(steals.len() / 2).copied().unwrap_or(0.0);
    for s in samples
        .iter()
        .filter(|s| lag_of(s).is_some_and(|l| l > 100.0))
    {
        if let Some((_, faults, steal)) = per_window.iter().find(|w| w.0 == s.t) {
            println!(
                "    late window t={:.0}s: {faults} major faults, steal {steal:.2}s (median window {median_steal:.2}s)",
                s.t
            );
        }
    }
    println!(
        "  flaps {} ({} targets × {} rounds), unseen in the history {} ({} history transitions: {} to failing, {} back) {}",
        flaps.len(),
        per_flap,
        flaps.len() / per_flap.max(1),
        missed.len(),
        history.len(),
        history.iter().filter(|t| !t.2).count(),
        history.iter().filter(|t| t.2).count(),
        if flaps_ok { "ok" } else { "FAIL" }
    );
    println!(
        "  event stream: {} to failing, {} back, unseen {} — {} agent:lagged notices (events the reader missed)",
        seen.downs.load(Ordering::Relaxed),
        seen.ups.load(Ordering::Relaxed),
        missed_live.len(),
        seen.lagged.load(Ordering::Relaxed),
    );
    for m in missed.iter().take(10) {
        let ev: Vec<_> = history
            .iter()
            .filter(|(_, i, _)| *i == m.target)
            .map(|(t, _, up)| format!("{t:.1}{}", if *up { "↑" } else { "↓" }))
            .collect();
        println!(
            "    unseen: c{} ({}) down {:.1}s up {:.1}s; its transitions {ev:?}",
            m.target,
            kinds[m.target].name(),
            m.down,
            m.up
        );
    }
    println!(
        "  agent CPU {cpu_pct:.1}% of a core (user {:.0} s + system {:.0} s), threads {}, attempts/10 s {} (last window), log lines {log_lines}; Prometheus scrapes {scrapes:.0}, last scrape {} ms, {} samples",
        last.cpu_user - first.cpu_user,
        last.cpu_system - first.cpu_system,
        last.threads,
        last.attempts,
        opt(last.prom_scrape_ms),
        opt(last.prom_samples),
    );
    println!("  {}", if pass { "PASS" } else { "FAIL" });
    if let Some(p) = o.csv.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    std::fs::write(&o.csv, csv).expect("write csv");
    plot(&o.plot, &samples, (b0, b1, l0, total), o);
    println!("  csv {}, plot {}", o.csv.display(), o.plot.display());
    pass
}

/// The time series as an SVG: six panels, the baseline and last windows shaded.
fn plot(path: &Path, s: &[Sample], (b0, b1, l0, total): (f64, f64, f64, f64), o: &Opts) {
    let (pw, ph, pad, top) = (420.0, 150.0, 48.0, 40.0);
    let cpu: Vec<(f64, f64, f64)> = s
        .windows(2)
        .map(|w| {
            let dt = (w[1].t - w[0].t).max(1.0);
            (
                w[1].t,
                (w[1].cpu_user - w[0].cpu_user) / dt * 100.0,
                (w[1].cpu_system - w[0].cpu_system) / dt * 100.0,
            )
        })
        .collect();
    let trans: Vec<(f64, f64, f64)> = s
        .windows(2)
        .map(|w| {
            (
                w[1].t,
                (w[1].downs - w[0].downs) as f64,
                (w[1].ups - w[0].ups) as f64,
            )
        })
        .collect();
    /// (label, colour, points) of one line.
    type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);
    /// (title, lines, a limit drawn dashed) of one panel.
    type Panel<'a> = (&'a str, Vec<Line<'a>>, Option<f64>);
    let panels: Vec<Panel> = vec![
        (
            "RSS (MiB)",
            vec![("rss", "#1f77b4", s.iter().map(|x| (x.t, x.rss)).collect())],
            None,
        ),
        (
            "open fds",
            vec![(
                "fds",
                "#1f77b4",
                s.iter().map(|x| (x.t, x.fds as f64)).collect(),
            )],
            None,
        ),
        (
            "CPU (% of a core)",
            vec![
                ("user", "#1f77b4", cpu.iter().map(|x| (x.0, x.1)).collect()),
                (
                    "system",
                    "#d62728",
                    cpu.iter().map(|x| (x.0, x.2)).collect(),
                ),
            ],
            None,
        ),
        (
            "threads",
            vec![(
                "threads",
                "#1f77b4",
                s.iter().map(|x| (x.t, x.threads as f64)).collect(),
            )],
            None,
        ),
        (
            "scheduler lag p99 per 10 s (ms, bucket bound)",
            vec![(
                "lag",
                "#1f77b4",
                s.iter()
                    .filter_map(|x| x.lag_p99_ms.map(|l| (x.t, l)))
                    .collect(),
            )],
            Some(100.0),
        ),
        (
            "status transitions per 10 s",
            vec![
                (
                    "to failing",
                    "#d62728",
                    trans.iter().map(|x| (x.0, x.1)).collect(),
                ),
                (
                    "back",
                    "#2ca02c",
                    trans.iter().map(|x| (x.0, x.2)).collect(),
                ),
            ],
            None,
        ),
    ];
    let (w, h) = (2.0 * (pw + pad * 1.5), top + 3.0 * (ph + pad * 1.3));
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{pad}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">lifeline soak: {} checks, {} min, {}% of targets flapping every minute, Prometheus scraping every 5 s</text>",
        o.checks, o.minutes, o.flap_percent
    );
    for (n, (title, lines, limit)) in panels.iter().enumerate() {
        let x0 = pad + (n % 2) as f64 * (pw + pad * 1.5);
        let y0 = top + (n / 2) as f64 * (ph + pad * 1.3) + 16.0;
        let max_v = lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.1))
            .chain(*limit)
            .fold(1.0_f64, f64::max)
            * 1.1;
        let x = |t: f64| x0 + t / total.max(1.0) * pw;
        let y = |v: f64| y0 + ph - v / max_v * ph;
        svg.push_str(&format!(
            "<text x=\"{x0}\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">{title}</text>",
            y0 - 6.0
        ));
        if n < 2 {
            for (a, b) in [(b0, b1), (l0, total)] {
                svg.push_str(&format!(
                    "<rect x=\"{:.1}\" y=\"{y0}\" width=\"{:.1}\" height=\"{ph}\" fill=\"#eee\"/>",
                    x(a),
                    x(b) - x(a)
                ));
            }
        }
        svg.push_str(&format!(
            "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{yb}\" stroke=\"#888\"/><line x1=\"{x0}\" y1=\"{yb}\" x2=\"{xr}\" y2=\"{yb}\" stroke=\"#888\"/>\
             <text x=\"{tx}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"end\">{max_v:.0}</text><text x=\"{tx}\" y=\"{yb}\" font-size=\"10\" text-anchor=\"end\">0</text>\
             <text x=\"{xr}\" y=\"{tb}\" font-size=\"10\" text-anchor=\"end\">{:.0} min</text>",
            total / 60.0,
            yb = y0 + ph,
            xr = x0 + pw,
            tx = x0 - 4.0,
            ty = y0 + 8.0,
            tb = y0 + ph + 12.0,
        ));
        if let Some(l) = limit {
            svg.push_str(&format!(
                "<line x1=\"{x0}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#666\">limit {l:.0} ms</text>",
                x0 + pw,
                x0 + 4.0,
                y(*l) - 3.0,
                ly = y(*l)
            ));
        }
        for (k, (label, colour, pts)) in lines.iter().enumerate() {
            let p: Vec<String> = pts
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            svg.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
                p.join(" ")
            ));
            if lines.len() > 1 {
                svg.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"{colour}\">— {label}</text>",
                    x0 + pw - 150.0 + k as f64 * 75.0,
                    y0 - 6.0
                ));
            }
        }
    }
    svg.push_str(&format!(
        "<text x=\"{pad}\" y=\"{:.1}\" font-size=\"10\" fill=\"#666\">shaded: the baseline (minutes 10–25 of 60) and last-15-minute windows compared for flatness</text></svg>",
        h - 8.0
    ));
    if let Some(p) = path.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    std::fs::write(path, svg).expect("write plot");
}
