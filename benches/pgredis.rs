//! `postgres` and `redis` kinds against local servers started like the tests do:
//!
//! 1. probe cost: client CPU (user + system of this process) and wall time per probe
//!    (connect, login, query, close), and per session heartbeat;
//! 2. detection latency: SIGKILL of the server → `connection:disconnected` event of a
//!    session check in a running agent, over 20 kills (median, p99, max).
//!
//! Run: `cargo bench --bench pgredis` (needs the Debian packages `postgresql` and
//! `redis-server`). Figures go to docs/benchmarks/pgredis.md.

// Benchmarks and test harnesses time whole processes and wait for peers from plain
// threads: std's clock is the right one here (clippy.toml bans it in the agent's async code).
#![allow(clippy::disallowed_methods)]
#![allow(missing_docs)]

#[path = "support/procfs.rs"]
mod procfs;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/runtime.rs"]
mod runtime;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeline::check::{Attempt, BuildEnv, Check, SessionIo};
use lifeline::health::{StateTable, Status};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use common::postgres::Pg;
use common::redis::Redis;
use common::scenarios::RestartablePeer;
use common::{TestAgent, is_event, wait_event};

fn build(kind: &str, key: &str, target: &str) -> Arc<dyn Check> {
    let toml = format!(
        "[agent]\ndata_dir = \"/tmp\"\n[[checks]]\nname = \"b\"\nkind = \"{kind}\"\n{key} = \"{target}\"\n"
    );
    let cfg = lifeline::config::parse(std::path::Path::new("bench.toml"), &toml).expect("config");
    let env = BuildEnv {
        http: reqwest::Client::new(),
        push: Default::default(),
    };
    cfg.checks[0].spec.build(&env).expect("build")
}

fn attempt() -> Attempt {
    Attempt {
        check: Arc::from("b"),
        timeout: Duration::from_secs(5),
        attempt: 0,
        states: Arc::new(StateTable::new()),
        cancel: CancellationToken::new(),
    }
}

/// (CPU µs, wall µs) per probe.
async fn probe_cost(check: &Arc<dyn Check>, n: u32) -> (f64, f64) {
    let at = attempt();
    for _ in 0..20 {
        assert!(check.probe(&at).await.is_success(), "warm-up probe failed");
    }
    let (c0, w0) = (procfs::Cpu::own(), Instant::now());
    for _ in 0..n {
        let o = check.probe(&at).await;
        assert!(o.is_success(), "probe failed: {}", o.message);
    }
    let (c, w) = (procfs::Cpu::own() - c0, w0.elapsed());
    (
        c.as_secs_f64() * 1e6 / f64::from(n),
        w.as_secs_f64() * 1e6 / f64::from(n),
    )
}

/// (CPU µs, wall µs) per session heartbeat.
async fn heartbeat_cost(check: &Arc<dyn Check>, n: u32) -> (f64, f64) {
    let at = attempt();
    let connected = check
        .connect(&at)
        .await
        .unwrap_or_else(|o| panic!("connect: {}", o.message));
    let (beat_tx, beat_rx) = mpsc::channel(1);
    let (report_tx, mut report_rx) = mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(connected.session.run(SessionIo {
        beats: beat_rx,
        report: report_tx,
        shutdown: shutdown.clone(),
        timeout: Duration::from_secs(5),
    }));
    let mut beat = async || {
        beat_tx.send(()).await.expect("session alive");
        let o = report_rx.recv().await.expect("heartbeat answer");
        assert!(o.is_success(), "heartbeat failed: {}", o.message);
    };
    for _ in 0..50 {
        beat().await;
    }
    let (c0, w0) = (procfs::Cpu::own(), Instant::now());
    for _ in 0..n {
        beat().await;
    }
    let (c, w) = (procfs::Cpu::own() - c0, w0.elapsed());
    shutdown.cancel();
    let _ = task.await;
    (
        c.as_secs_f64() * 1e6 / f64::from(n),
        w.as_secs_f64() * 1e6 / f64::from(n),
    )
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "n={} median={:.1} ms p99={:.1} ms max={:.1} ms min={:.1} ms",
        v.len(),
        ms(p(0.5)),
        ms(p(0.99)),
        ms(v[v.len() - 1]),
        ms(v[0])
    )
}

const SESSION: &str = "mode = \"session\"\ninterval = \"30s\"\ntimeout = \"2s\"\nbackoff = { base = \"50ms\", max = \"200ms\", jitter = \"0ms\" }\nheartbeat = { poor_after = \"60s\", stale_after = \"90s\" }\n";

/// SIGKILL of `peer` → `connection:disconnected` of a session check of its kind whose
/// target is `check_toml` (its `dsn`/`url` line), `kills` times (restarted after each).
async fn detect<P: RestartablePeer>(peer: &mut P, check_toml: &str, kills: usize) -> Vec<Duration> {
    let name = peer.kind();
    let a = TestAgent::start(&format!(
        "[agent]\ndata_dir = \"{{dir}}/data\"\n[[checks]]\nname = \"{name}\"\nkind = \"{name}\"\n{check_toml}\n{SESSION}"
    ))
    .await;
    let mut out = Vec::new();
    for _ in 0..kills {
        a.wait_status(name, Status::Healthy, Duration::from_secs(30))
            .await;
        let mut rx = a.events();
        let t = Instant::now();
        peer.sigkill().await;
        wait_event(&mut rx, Duration::from_secs(5), "disconnected", |e| {
            is_event(e, "connection:disconnected", name)
        })
        .await;
        out.push(t.elapsed());
        peer.start_again().await;
    }
    a.stop().await;
    out
}

fn main() {
    lifeline::net::tls::install_provider();
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it: then only a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let n: u32 = std::env::var("PGREDIS_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 2000 } else { 20 });
    let kills = if full { 20 } else { 2 };
    // Probe cost on one thread, so the process CPU is the probes' CPU.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pg = Pg::start().await;
        let r = Redis::start().await;
        let pg_check = build("postgres", "dsn", &pg.app_dsn());
        let redis_check = build("redis", "url", &r.url("", 0));
        let (c, w) = probe_cost(&pg_check, n).await;
        println!("postgres probe (scram-sha-256 login + SELECT 1, no TLS): {c:.0} µs CPU, {w:.0} µs wall per probe (n={n})");
        let trust_check = build("postgres", "dsn", &pg.dsn("trusty", None, "postgres", "sslmode=disable"));
        let (c, w) = probe_cost(&trust_check, n).await;
        println!("postgres probe (trust login + SELECT 1, no TLS): {c:.0} µs CPU, {w:.0} µs wall per probe (n={n})");
        let (c, w) = heartbeat_cost(&pg_check, n * 5).await;
        println!("postgres session heartbeat (SELECT 1): {c:.1} µs CPU, {w:.0} µs wall per heartbeat (n={})", n * 5);
        let (c, w) = probe_cost(&redis_check, n).await;
        println!("redis probe (connect + PING/INFO pipeline): {c:.0} µs CPU, {w:.0} µs wall per probe (n={n})");
        let (c, w) = heartbeat_cost(&redis_check, n * 5).await;
        println!("redis session heartbeat (PING): {c:.1} µs CPU, {w:.0} µs wall per heartbeat (n={})", n * 5);
    });
    // Detection latency inside a full agent (multi-threaded like production).
    let rt = runtime::multi_thread();
    rt.block_on(async {
        let mut pg = Pg::start().await;
        let dsn = format!("dsn = \"{}\"", pg.app_dsn());
        println!(
            "postgres SIGKILL → connection:disconnected: {}",
            stats(detect(&mut pg, &dsn, kills).await)
        );
        let mut r = Redis::start().await;
        let url = format!("url = \"{}\"", r.url("", 0));
        println!(
            "redis SIGKILL → connection:disconnected: {}",
            stats(detect(&mut r, &url, kills).await)
        );
    });
}
