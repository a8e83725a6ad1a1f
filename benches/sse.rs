//! Events fan-out: what 1,000 SSE subscribers cost the agent at about 1,000 events/s, and
//! whether one subscriber that stops reading slows the others.
//!
//! ```sh
//! cargo build --release --bench sse
//! target/release/deps/sse-<hash> [--checks 1000] [--subscribers 1000] [--seconds 30]
//! ```
//!
//! The release agent runs in its own process with `[agent]` and the checks only (history
//! on, every default but the stream caps): `--checks` tcp checks at `interval = "1s"`, so
//! the bus carries one `connection:health_check` per check per second. Their targets are
//! listeners in a child process (this binary in `--peers-child` mode) that accept and
//! close. The subscribers are in this process, so what they cost is not billed to the
//! agent. Three windows of `--seconds` each, CPU read from `/proc/<agent>/stat`:
//!
//! 1. no subscriber (the checks' own cost),
//! 2. `--subscribers` SSE clients reading `/api/v1/events`,
//! 3. the same plus one client that sends its request and never reads.
//!
//! The fan-out cost is window 2 minus window 1, in cores (target: at most 0.25). Each
//! window also gives every subscriber's event rate (min, median) so a slow subscriber
//! that slowed the others shows in window 3.

// The bench drives from its main thread (sleeps, wall clock); the subscribers run on
// their own runtime.
#![allow(clippy::disallowed_methods)]

#[path = "support/procfs.rs"]
mod procfs;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use procfs::Cpu;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Listener ports for the targets: 1,000 connects/s leave TIME_WAIT entries spread over
/// several 4-tuple spaces.
const TARGET_PORTS: usize = 10;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: a number")))
        .unwrap_or(default)
}

/// `--peers-child`: binds the target listeners, prints their addresses, accepts and
/// closes until stdin closes.
fn peers_child() {
    let mut out = std::io::stdout().lock();
    for _ in 0..TARGET_PORTS {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind target");
        writeln!(out, "{}", l.local_addr().expect("addr")).expect("stdout");
        std::thread::spawn(move || {
            for s in l.incoming() {
                drop(s);
            }
        });
    }
    drop(out);
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

struct Agent {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(checks: usize, subscribers: usize, targets: &[SocketAddr]) -> Agent {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cfg = format!(
        "[agent]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nmax_streams = {}\nmax_connections = {}\nwrite_timeout = \"5s\"\n",
        dir.path().join("data").display(),
        subscribers + 16,
        subscribers + 64,
    );
    for i in 0..checks {
        cfg.push_str(&format!(
            "[[checks]]\nname = \"c{i}\"\nkind = \"tcp\"\naddress = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
            targets[i % targets.len()]
        ));
    }
    let path = dir.path().join("config.toml");
    std::fs::write(&path, cfg).expect("config");
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .arg("--config")
        .arg(&path)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start the agent");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the agent did not listen: {}",
            std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Agent {
        child,
        addr,
        _dir: dir,
    }
}

/// One SSE subscriber: counts the events it reads (`\n\n`-terminated blocks that are not
/// keep-alive comments) into `count`.
async fn subscribe(addr: SocketAddr, count: Arc<AtomicU64>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("request");
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let events = buf[..n].windows(7).filter(|w| w == b"event: ").count();
        count.fetch_add(events as u64, Ordering::Relaxed);
    }
}

/// A subscriber that sends its request and never reads.
async fn stalled(addr: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = sock.connect(addr).await.expect("connect");
    s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("request");
    s
}

struct Window {
    cpu: Cpu,
    secs: f64,
    /// Events per second of each subscriber, sorted.
    rates: Vec<f64>,
}

fn measure(agent: &Agent, counts: &[Arc<AtomicU64>], secs: u64) -> Window {
    let before: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let c0 = Cpu::of(&agent.pid());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = Cpu::of(&agent.pid()).since(c0);
    let took = t0.elapsed().as_secs_f64();
    let mut rates: Vec<f64> = counts
        .iter()
        .zip(before)
        .map(|(c, b)| (c.load(Ordering::Relaxed) - b) as f64 / took)
        .collect();
    rates.sort_by(f64::total_cmp);
    Window {
        cpu,
        secs: took,
        rates,
    }
}

fn print(name: &str, w: &Window) {
    let cores = w.cpu.total() / w.secs;
    let (min, med) = match w.rates.len() {
        0 => ("-".into(), "-".into()),
        n => (
            format!("{:.0}", w.rates[0]),
            format!("{:.0}", w.rates[n / 2]),
        ),
    };
    println!(
        "| {name} | {:.3} cores (user {:.3}, system {:.3}) | {min} | {med} |",
        cores,
        w.cpu.user / w.secs,
        w.cpu.system / w.secs
    );
}

fn main() {
    if std::env::args().any(|a| a == "--peers-child") {
        peers_child();
        return;
    }
    let checks = arg("--checks", 1000) as usize;
    let subscribers = arg("--subscribers", 1000) as usize;
    let secs = arg("--seconds", 30);

    let mut peers = Command::new(std::env::current_exe().expect("exe"))
        .arg("--peers-child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("peers child");
    let mut lines = BufReader::new(peers.stdout.take().expect("stdout")).lines();
    let targets: Vec<SocketAddr> = (0..TARGET_PORTS)
        .map(|_| {
            lines
                .next()
                .expect("a target address")
                .expect("read")
                .parse()
                .expect("an address")
        })
        .collect();

    let agent = start_agent(checks, subscribers, &targets);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // Warm-up: every check has run, the history store has its first batches.
    std::thread::sleep(Duration::from_secs(10));
    println!(
        "# {checks} tcp checks at 1 s, {subscribers} SSE subscribers, {secs} s windows, agent pid {}",
        agent.pid()
    );
    println!("| window | agent CPU | events/s per subscriber, min | median |");
    println!("|---|---|---|---|");
    let idle = measure(&agent, &[], secs);
    print("no subscriber", &idle);

    let counts: Vec<Arc<AtomicU64>> = (0..subscribers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    for c in &counts {
        rt.spawn(subscribe(agent.addr, c.clone()));
    }
    std::thread::sleep(Duration::from_secs(3));
    let fan = measure(&agent, &counts, secs);
    print(&format!("{subscribers} subscribers"), &fan);

    let _stalled = rt.block_on(stalled(agent.addr));
    let slow = measure(&agent, &counts, secs);
    print(&format!("{subscribers} + 1 that never reads"), &slow);

    let cost = (fan.cpu.total() / fan.secs) - (idle.cpu.total() / idle.secs);
    println!(
        "fan-out cost: {cost:.3} cores for {subscribers} subscribers (target <= 0.25): {}",
        if cost <= 0.25 { "met" } else { "MISSED" }
    );
    let median = |w: &Window| w.rates.get(w.rates.len() / 2).copied().unwrap_or(0.0);
    println!(
        "with a stalled subscriber: min {:.0} / median {:.0} events/s, before {:.0} / {:.0}",
        slow.rates.first().copied().unwrap_or(0.0),
        median(&slow),
        fan.rates.first().copied().unwrap_or(0.0),
        median(&fan)
    );
    drop(agent);
    drop(peers.stdin.take());
    let _ = peers.kill();
    let _ = peers.wait();
}
