//! Agent cost of tcp probes, RSS, and `/metrics` render time; optionally the same workload
//! through Prometheus + blackbox_exporter for comparison.
//!
//! ```text
//! cargo bench --bench probes -- [--checks 1000,10000] [--seconds 20] [--blackbox 1000]
//! ```
//!
//! Targets are local listeners in a child process (so their accept cost is not counted),
//! spread over 127.0.0.1–127.0.0.20 × 5 ports so 10,000 connections/s do not run out of
//! ephemeral 4-tuples. CPU comes from /proc (utime+stime), RSS from VmRSS.

// Benchmarks and test harnesses time whole processes and wait for peers from plain
// threads: std's clock is the right one here (clippy.toml bans it in the agent's async code).
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IPS: u8 = 20;
const PORTS: u16 = 5;

fn ticks_per_sec() -> f64 {
    100.0
}

/// (utime, stime) of `pid` in seconds.
fn cpu_split(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ut: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    (ut / ticks_per_sec(), st / ticks_per_sec())
}

/// utime + stime of `pid` ("self" for us), in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let path = if pid == "thread-self" {
        "/proc/thread-self/stat".to_string()
    } else {
        format!("/proc/{pid}/stat")
    };
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ut: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    (ut + st) / ticks_per_sec()
}

fn rss_mib(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0)
        .unwrap_or(0.0)
}

/// Target addresses; `base` is chosen by the parent and handed to the listener child.
fn targets_from(base: u16) -> Vec<SocketAddr> {
    let mut v = Vec::new();
    for i in 1..=IPS {
        for p in 0..PORTS {
            v.push(SocketAddr::from(([127, 0, 0, i], base + p)));
        }
    }
    v
}

/// The first target port: the parent picks it from its PID; the child is told.
fn base_port() -> u16 {
    static BASE: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        std::env::var("LIFELINE_BENCH_BASE_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(20000 + (std::process::id() % 20000) as u16)
    })
}

fn targets() -> Vec<SocketAddr> {
    targets_from(base_port())
}

/// Child mode: accept and immediately close on every target address.
fn listen_forever(addrs: &[SocketAddr]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for a in addrs {
            let l = tokio::net::TcpListener::bind(a).await.expect("bind target");
            tokio::spawn(async move {
                loop {
                    if let Ok((s, _)) = l.accept().await {
                        drop(s);
                    }
                }
            });
        }
        println!("ready");
        std::future::pending::<()>().await;
    });
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_listeners() -> Kill {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .arg("--listen-child")
        .env("LIFELINE_BENCH_BASE_PORT", base_port().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    use std::io::Read;
    out.read_exact(&mut buf).unwrap();
    Kill(child)
}

fn config(checks: usize, dir: &std::path::Path) -> String {
    let t = targets();
    let mut s = format!(
        "[agent]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[defaults]\ninterval = \"1s\"\ntimeout = \"2s\"\n",
        dir.display()
    );
    for i in 0..checks {
        s.push_str(&format!(
            "[[checks]]\nname = \"c{i}\"\nkind = \"tcp\"\naddress = \"{}\"\n",
            t[i % t.len()]
        ));
    }
    s
}

fn bench_agent(checks: usize, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(checks, dir.path())).unwrap();
    let cfg = lifeline::config::load(&path).expect("bench config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let metrics = lifeline::metrics::Metrics::new();
        let agent = lifeline::app::Agent::new(cfg, metrics.clone(), Arc::new(Vec::new()));
        agent.apply().await;
        // Warm up: every check has run a few times.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let attempts = |m: &lifeline::metrics::Metrics| -> f64 {
            m.render()
                .lines()
                .filter(|l| l.starts_with("lifeline_check_attempts_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let rss_before_scrape = rss_mib("self");
        let a0 = attempts(&metrics);
        let c0 = cpu_seconds("self");
        let (u0, s0) = cpu_split("self");
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let c1 = cpu_seconds("self");
        let (u1, s1) = cpu_split("self");
        let wall = t0.elapsed().as_secs_f64();
        let a1 = attempts(&metrics);
        let probes = a1 - a0;
        let failures: f64 = 0.0 + metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("lifeline_check_failures_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        let mut kinds: std::collections::BTreeMap<String, f64> = Default::default();
        for l in metrics.render().lines().filter(|l| l.starts_with("lifeline_check_failures_total{")) {
            if let (Some(k), Some(v)) = (
                l.split("error_kind=\"").nth(1).and_then(|r| r.split('"').next()),
                l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()),
            ) {
                *kinds.entry(k.to_string()).or_default() += v;
            }
        }
        println!(
            "failures by kind: {kinds:?}; per probe: user {:.1}µs, system {:.1}µs; rss before the first scrape {rss_before_scrape:.1}MiB",
            (u1 - u0) / probes * 1e6,
            (s1 - s0) / probes * 1e6
        );
        let rss = rss_mib("self");
        // /metrics render: CPU time per render, and wall time (median of 9).
        // The render runs on this thread (block_on), so its own CPU counter excludes the
        // probing done by the runtime's worker threads meanwhile.
        let cpu0 = cpu_seconds("thread-self");
        for _ in 0..20 {
            std::hint::black_box(metrics.render().len());
        }
        let render_cpu_ms = (cpu_seconds("thread-self") - cpu0) / 20.0 * 1000.0;
        let mut times: Vec<f64> = (0..9)
            .map(|_| {
                let t = Instant::now();
                let body = metrics.render();
                std::hint::black_box(body.len());
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let body_len = metrics.render().len();
        let lag = metrics.scheduler_lag.get_sample_sum() / metrics.scheduler_lag.get_sample_count().max(1) as f64;
        println!(
            "lifeline  checks={checks:>6} probes/s={:>8.0} cpu/probe={:>6.1}µs cpu={:>5.1}% rss={:>6.1}MiB metrics_render={:>6.1}ms wall {:>6.1}ms cpu ({:.1} MiB) failures_total={failures:.0} mean_sched_lag={:.2}ms",
            probes / wall,
            (c1 - c0) / probes * 1e6,
            (c1 - c0) / wall * 100.0,
            rss,
            times[4],
            render_cpu_ms,
            body_len as f64 / 1048576.0,
            lag * 1000.0,
        );
        agent.shutdown(Duration::from_secs(5)).await;
    });
}

fn bench_blackbox(checks: usize, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let port = |l: std::net::TcpListener| l.local_addr().unwrap().port();
    let bb_port = port(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let prom_port = port(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    std::fs::write(
        dir.path().join("bb.yml"),
        "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 2s\n",
    )
    .unwrap();
    let t = targets();
    let mut prom = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n- job_name: blackbox\n  metrics_path: /probe\n  params:\n    module: [tcp_connect]\n  static_configs:\n  - targets:\n",
    );
    for i in 0..checks {
        prom.push_str(&format!("    - {}\n", t[i % t.len()]));
        // distinct targets so Prometheus keeps one series per check
        if i >= t.len() {
            prom.pop();
            prom.push_str(&format!("?c={i}\n"));
        }
    }
    prom.push_str(&format!(
        "  relabel_configs:\n  - source_labels: [__address__]\n    target_label: __param_target\n  - source_labels: [__param_target]\n    target_label: instance\n  - target_label: __address__\n    replacement: 127.0.0.1:{bb_port}\n"
    ));
    let mut f = std::fs::File::create(dir.path().join("prom.yml")).unwrap();
    f.write_all(prom.as_bytes()).unwrap();
    let bb = Kill(
        Command::new("prometheus-blackbox-exporter")
            .arg(format!(
                "--config.file={}",
                dir.path().join("bb.yml").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{bb_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-blackbox-exporter (Debian package prometheus-blackbox-exporter)"),
    );
    let pr = Kill(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prom.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus)"),
    );
    std::thread::sleep(Duration::from_secs(8));
    let (bbp, prp) = (bb.0.id().to_string(), pr.0.id().to_string());
    let (b0, p0) = (cpu_seconds(&bbp), cpu_seconds(&prp));
    let t0 = Instant::now();
    let probes_before = scrapes(prom_port);
    std::thread::sleep(Duration::from_secs(seconds));
    let probes_after = scrapes(prom_port);
    let wall = t0.elapsed().as_secs_f64();
    let (b1, p1) = (cpu_seconds(&bbp), cpu_seconds(&prp));
    let probes = (probes_after - probes_before).max(1.0);
    println!(
        "blackbox  checks={checks:>6} probes/s={:>8.0} cpu/probe={:>6.1}µs (exporter {:.1} + prometheus {:.1}) cpu={:>5.1}% rss={:>6.1}MiB (exporter {:.1} + prometheus {:.1})",
        probes / wall,
        ((b1 - b0) + (p1 - p0)) / probes * 1e6,
        (b1 - b0) / probes * 1e6,
        (p1 - p0) / probes * 1e6,
        ((b1 - b0) + (p1 - p0)) / wall * 100.0,
        rss_mib(&bbp) + rss_mib(&prp),
        rss_mib(&bbp),
        rss_mib(&prp),
    );
}

/// Total scrapes Prometheus has done (its own counter), via the HTTP API.
fn scrapes(port: u16) -> f64 {
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.starts_with("prometheus_target_interval_length_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--listen-child") {
        listen_forever(&targets());
        return;
    }
    let arg = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let counts: Vec<usize> = arg("--checks")
        .unwrap_or_else(|| "1000,10000".into())
        .split(',')
        .filter_map(|x| x.parse().ok())
        .collect();
    let seconds: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(20);
    lifeline::net::tls::install_provider();
    let _listeners = spawn_listeners();
    for &n in &counts {
        bench_agent(n, seconds);
    }
    if let Some(n) = arg("--blackbox") {
        for n in n.split(',').filter_map(|x| x.parse().ok()) {
            bench_blackbox(n, seconds);
        }
    }
}
