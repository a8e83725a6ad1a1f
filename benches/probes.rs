//! tcp probes as a user runs them: the release `lifeline` binary in its own process, on a
//! generated config with only `[agent]`, `[defaults]` and the checks (so history is on,
//! as by default), against listeners in another process; side by side with Prometheus +
//! blackbox_exporter on the same targets, and the kernel's floor (a minimal blocking
//! connect + close loop) measured in the same run. Everything is read from `/proc` and
//! from the processes' own `/metrics`.
//!
//! ```text
//! cargo bench --bench probes -- [--checks 1000,5000,10000] [--interval 1s] [--timeout 500ms]
//!     [--seconds 30] [--blackbox 1000,5000] [--plot docs/benchmarks/probes.svg]
//! ```
//!
//! Targets are 20 loopback addresses × 5 ports (127.0.0.1–20), so 10,000 connections/s do
//! not run out of 4-tuples; the listener process accepts and closes.
//!
//! `LIFELINE_BIN=path` runs another build of the agent instead of this tree's (to pair
//! two builds on the same machine in turn).

// Benchmarks time whole processes from plain threads: std's clock and sleep are the
// right ones here (clippy.toml bans them in the agent's async code).
#![allow(clippy::disallowed_methods)]

#[path = "support/expo.rs"]
mod expo;
#[path = "support/procfs.rs"]
mod procfs;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use expo::{Expo, quantile};
use procfs::{Cpu, fds, rss_mib, threads};

const IPS: u8 = 20;
const PORTS: u16 = 5;

/// Target addresses from the first port.
fn targets(base: u16) -> Vec<SocketAddr> {
    let mut v = Vec::new();
    for i in 1..=IPS {
        for p in 0..PORTS {
            v.push(SocketAddr::from(([127, 0, 0, i], base + p)));
        }
    }
    v
}

/// Five consecutive ports free on every target address.
fn free_base() -> u16 {
    'next: for base in (20_000 + (std::process::id() % 20_000) as u16..60_000).step_by(7) {
        for a in targets(base) {
            if std::net::TcpListener::bind(a).is_err() {
                continue 'next;
            }
        }
        return base;
    }
    panic!("no free port range for the targets");
}

/// Child mode: accept and close on every target address, forever.
fn listen_forever(base: u16) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for a in targets(base) {
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

/// Child mode: blocking connect + close round the targets for `secs`; prints
/// `connects user_s system_s` of this process.
fn floor_child(base: u16, secs: f64) {
    let t = targets(base);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for a in &t {
            if let Ok(s) = TcpStream::connect(a) {
                drop(s);
                n += 1;
            }
        }
    }
    let c = Cpu::of("self");
    println!("{n} {} {}", c.user, c.system);
}

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

fn spawn_listeners(base: u16) -> Proc {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--listen-child", &base.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("listener child");
    let mut buf = [0u8; 6];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut buf)
        .expect("listener ready");
    Proc(child)
}

/// The kernel's cost of one loopback connect + close (µs of CPU: user, system).
fn floor(base: u16) -> (f64, f64, f64) {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(["--floor-child", &base.to_string(), "5"])
        .output()
        .expect("floor child");
    let s = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let (n, u, sy) = (f[0], f[1], f[2]);
    (n / 5.0, u / n * 1e6, sy / n * 1e6)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET path` over HTTP/1.0; the body and the wall time it took.
fn get(port: u16, path: &str) -> Option<(String, Duration)> {
    let (body, t) = fetch(port, path, "")?;
    Some((String::from_utf8_lossy(&body).into_owned(), t))
}

/// A `200` response's body as bytes and the time it took; `headers` are extra request
/// lines, each ending in CRLF.
fn fetch(port: u16, path: &str, headers: &str) -> Option<(Vec<u8>, Duration)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{headers}\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = head.lines().next()?;
    (status.split_whitespace().nth(1) == Some("200"))
        .then(|| (buf[end + 4..].to_vec(), t.elapsed()))
}

/// What ten scrapes, one a second, took.
struct Scrapes {
    wall_ms: f64,
    mib: f64,
}

/// Scrapes `/metrics` `count` times, one every `every` (gzipped when `gzip`, as
/// Prometheus asks by default): the median wall time and the size on the wire; `rss`
/// keeps the highest RSS seen meanwhile.
fn scrape_series(
    port: u16,
    pid: &str,
    gzip: bool,
    count: u32,
    every: Duration,
    rss: &mut f64,
) -> Scrapes {
    let headers = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    let t1 = Instant::now();
    let mut walls = Vec::new();
    let mut size = 0;
    for i in 0..count {
        let (b, w) = fetch(port, "/metrics", headers).expect("scrape");
        size = b.len();
        walls.push(w.as_secs_f64() * 1000.0);
        *rss = rss.max(rss_mib(pid));
        if let Some(d) = (every * (i + 1)).checked_sub(t1.elapsed()) {
            std::thread::sleep(d);
        }
        *rss = rss.max(rss_mib(pid));
    }
    walls.sort_by(f64::total_cmp);
    Scrapes {
        wall_ms: walls[walls.len() / 2],
        mib: size as f64 / 1_048_576.0,
    }
}

fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
struct Run {
    who: &'static str,
    checks: usize,
    rate: f64,
    cpu_us: f64,
    user_us: f64,
    system_us: f64,
    rss: f64,
    rss_scraped: f64,
    latency_p99_ms: Option<f64>,
    lag_p99_ms: Option<f64>,
    scrape_ms: f64,
    scrape_mib: f64,
    gzip_ms: f64,
    gzip_mib: f64,
    changes: f64,
    log_lines: usize,
    fds: usize,
    threads: usize,
}

struct Opts {
    interval: String,
    interval_s: f64,
    timeout: String,
    seconds: u64,
}

fn config(n: usize, base: u16, port: u16, dir: &Path, o: &Opts) -> String {
    let t = targets(base);
    let mut s = format!(
        "[agent]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[defaults]\ninterval = \"{}\"\ntimeout = \"{}\"\n",
        dir.display(),
        o.interval,
        o.timeout
    );
    for i in 0..n {
        s.push_str(&format!(
            "[[checks]]\nname = \"c{i}\"\nkind = \"tcp\"\naddress = \"{}\"\n",
            t[i % t.len()]
        ));
    }
    s
}

/// A running agent with its own temp dir (config, data, log).
struct Agent {
    proc: Proc,
    pid: String,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts the agent on `n` checks and waits until it is ready.
fn start_agent(n: usize, base: u16, o: &Opts) -> Agent {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let path = dir.path().join("lifeline.toml");
    std::fs::write(&path, config(n, base, port, &dir.path().join("data"), o)).expect("config");
    let log = dir.path().join("agent.log");
    let proc = Proc(
        Command::new(
            std::env::var_os("LIFELINE_BIN")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_lifeline").into()),
        )
        .arg("--config")
        .arg(&path)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("lifeline binary"),
    );
    let pid = proc.pid();
    wait_until(Duration::from_secs(60), "the agent to be ready", || {
        get(port, "/-/ready").is_some()
    });
    Agent {
        proc,
        pid,
        port,
        log,
        _dir: dir,
    }
}

/// `/metrics` on its own: an agent with `n` checks at `interval = "1h"` (each check is
/// probed once, within a second of the start, and then the agent is idle), scraped 20
/// times plain and 20 times gzipped, 200 ms apart. With nothing else running, the
/// agent's CPU over the scrapes (less its idle rate, measured just before) is theirs.
fn scrape_cost(n: usize, base: u16, o: &Opts) {
    let idle = Opts {
        interval: "1h".into(),
        interval_s: 3600.0,
        timeout: o.timeout.clone(),
        seconds: o.seconds,
    };
    let a = start_agent(n, base, &idle);
    std::thread::sleep(Duration::from_secs(5));
    let c0 = Cpu::of(&a.pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let idle_per_s = Cpu::of(&a.pid).since(c0).total() / t0.elapsed().as_secs_f64();
    let rss0 = rss_mib(&a.pid);
    for (what, gzip) in [("plain", false), ("gzip", true)] {
        let c1 = Cpu::of(&a.pid);
        let t1 = Instant::now();
        let mut peak = rss0;
        let sc = scrape_series(
            a.port,
            &a.pid,
            gzip,
            20,
            Duration::from_millis(200),
            &mut peak,
        );
        let cpu = Cpu::of(&a.pid).since(c1).total() - idle_per_s * t1.elapsed().as_secs_f64();
        println!(
            "scrape    checks={n:>6} idle agent, {what:>5}: {:.1}ms CPU per scrape, wall p50 {:.1}ms, {:.2}MiB, rss {rss0:.1}MiB (peak {peak:.1})",
            cpu / 20.0 * 1000.0,
            sc.wall_ms,
            sc.mib,
        );
    }
    drop(a.proc);
}

fn lifeline(n: usize, base: u16, o: &Opts) -> Run {
    let Agent {
        proc: _agent,
        pid,
        port,
        log,
        _dir,
    } = start_agent(n, base, o);
    // Warm-up: every check has run at least twice.
    std::thread::sleep(Duration::from_secs_f64(5.0 + 2.0 * o.interval_s));
    let (body0, _) = get(port, "/metrics").expect("scrape");
    let m0 = Expo::parse(&body0);
    let c0 = Cpu::of(&pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(o.seconds));
    let cpu = Cpu::of(&pid).since(c0);
    let wall = t0.elapsed().as_secs_f64();
    let rss = rss_mib(&pid);
    let (body1, _) = get(port, "/metrics").expect("scrape");
    let m1 = Expo::parse(&body1);
    let probes =
        m1.sum("lifeline_check_attempts_total", "") - m0.sum("lifeline_check_attempts_total", "");
    let per = |s: f64| s / probes.max(1.0) * 1e6;
    let mut rss_scraped: f64 = rss;
    // Every second for 10 s, as a Prometheus with a 1 s interval would. Their CPU is not
    // taken here: beside 10,000 probes a second it is within the noise of `/proc`'s 10 ms
    // ticks (see `scrape_cost`).
    let second = Duration::from_secs(1);
    let plain = scrape_series(port, &pid, false, 10, second, &mut rss_scraped);
    let gz = scrape_series(port, &pid, true, 10, second, &mut rss_scraped);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let r = Run {
        who: "lifeline",
        checks: n,
        rate: probes / wall,
        cpu_us: per(cpu.total()),
        user_us: per(cpu.user),
        system_us: per(cpu.system),
        rss,
        rss_scraped,
        latency_p99_ms: quantile(
            &m0.buckets("lifeline_check_latency_seconds"),
            &m1.buckets("lifeline_check_latency_seconds"),
            0.99,
        )
        .map(|s| s * 1000.0),
        lag_p99_ms: quantile(
            &m0.buckets("lifeline_scheduler_lag_seconds"),
            &m1.buckets("lifeline_scheduler_lag_seconds"),
            0.99,
        )
        .map(|s| s * 1000.0),
        scrape_ms: plain.wall_ms,
        scrape_mib: plain.mib,
        gzip_ms: gz.wall_ms,
        gzip_mib: gz.mib,
        changes: m1.sum("lifeline_check_state_changes_total", "")
            - m0.sum("lifeline_check_state_changes_total", ""),
        log_lines: text.lines().count(),
        fds: fds(&pid),
        threads: threads(&pid),
    };
    let degraded = m1.sum("lifeline_check_status", "status=\"degraded\"");
    let failing = m1.sum("lifeline_check_status", "status=\"unhealthy\"");
    println!(
        "lifeline  checks={n:>6} probes/s={:>8.0} cpu/probe={:>6.1}µs (user {:.1} + system {:.1}) rss={:.1}MiB (scraped {:.1}) latency_p99={} lag_p99={} scrape={:.1}ms wall {:.1}MiB gzip={:.1}ms wall {:.2}MiB changes={:.0} degraded={degraded:.0} unhealthy={failing:.0} log_lines={} fds={} threads={}",
        r.rate,
        r.cpu_us,
        r.user_us,
        r.system_us,
        r.rss,
        r.rss_scraped,
        ms(r.latency_p99_ms),
        ms(r.lag_p99_ms),
        r.scrape_ms,
        r.scrape_mib,
        r.gzip_ms,
        r.gzip_mib,
        r.changes,
        r.log_lines,
        r.fds,
        r.threads,
    );
    r
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("≤{v:.1}ms"))
        .unwrap_or_else(|| "-".into())
}

fn blackbox(n: usize, base: u16, o: &Opts) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let bb_port = free_port();
    let prom_port = free_port();
    std::fs::write(
        dir.path().join("bb.yml"),
        format!(
            "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: {}\n",
            o.timeout
        ),
    )
    .expect("bb.yml");
    let t = targets(base);
    let mut prom = format!(
        "global:\n  scrape_interval: {0}\n  scrape_timeout: {0}\nscrape_configs:\n- job_name: blackbox\n  metrics_path: /probe\n  params:\n    module: [tcp_connect]\n  static_configs:\n  - targets:\n",
        o.interval
    );
    for i in 0..n {
        // distinct targets so Prometheus keeps one series per check
        prom.push_str(&format!("    - {}?c={i}\n", t[i % t.len()]));
    }
    prom.push_str(&format!(
        "  relabel_configs:\n  - source_labels: [__address__]\n    regex: '([^?]*).*'\n    target_label: __param_target\n  - source_labels: [__address__]\n    target_label: instance\n  - target_label: __address__\n    replacement: 127.0.0.1:{bb_port}\n"
    ));
    std::fs::write(dir.path().join("prom.yml"), prom).expect("prom.yml");
    let bb = Proc(
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
    let pr = Proc(
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
    wait_until(Duration::from_secs(60), "prometheus to scrape", || {
        scrapes(prom_port) >= n as f64
    });
    std::thread::sleep(Duration::from_secs_f64(3.0 + 2.0 * o.interval_s));
    let (bbp, prp) = (bb.pid(), pr.pid());
    let (b0, p0) = (Cpu::of(&bbp), Cpu::of(&prp));
    let s0 = scrapes(prom_port);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(o.seconds));
    let s1 = scrapes(prom_port);
    let wall = t0.elapsed().as_secs_f64();
    let (b, p) = (Cpu::of(&bbp).since(b0), Cpu::of(&prp).since(p0));
    let probes = (s1 - s0).max(1.0);
    let per = |s: f64| s / probes * 1e6;
    let lat = prom_query(
        prom_port,
        &format!(
            "quantile(0.99, max_over_time(probe_duration_seconds[{}s]))",
            o.seconds
        ),
    );
    let success = prom_query(prom_port, "avg(probe_success)");
    let rss = rss_mib(&bbp) + rss_mib(&prp);
    let r = Run {
        who: "blackbox",
        checks: n,
        rate: probes / wall,
        cpu_us: per(b.total() + p.total()),
        user_us: per(b.user + p.user),
        system_us: per(b.system + p.system),
        rss,
        rss_scraped: rss,
        latency_p99_ms: lat.map(|s| s * 1000.0),
        fds: fds(&bbp) + fds(&prp),
        threads: threads(&bbp) + threads(&prp),
        ..Run::default()
    };
    println!(
        "blackbox  checks={n:>6} probes/s={:>8.0} cpu/probe={:>6.1}µs (exporter {:.1} + prometheus {:.1}; user {:.1} + system {:.1}) rss={:.1}MiB (exporter {:.1} + prometheus {:.1}) latency_p99(max per target)={} success={:.3}",
        r.rate,
        r.cpu_us,
        per(b.total()),
        per(p.total()),
        r.user_us,
        r.system_us,
        r.rss,
        rss_mib(&bbp),
        rss_mib(&prp),
        ms(r.latency_p99_ms),
        success.unwrap_or(f64::NAN),
    );
    r
}

/// Scrapes Prometheus has done (its own counter).
fn scrapes(port: u16) -> f64 {
    get(port, "/metrics")
        .map(|(b, _)| Expo::parse(&b).sum("prometheus_target_interval_length_seconds_count", ""))
        .unwrap_or(0.0)
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
    let (body, _) = get(port, &format!("/api/v1/query?query={enc}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn parse_duration(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().expect("duration");
    match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        u => panic!("unit {u}"),
    }
}

/// CPU per probe and RSS against the number of checks, as an SVG.
fn plot(path: &Path, runs: &[Run], floor_us: f64) {
    let (w, h, pad) = (720.0, 300.0, 50.0);
    let max_n = runs.iter().map(|r| r.checks).max().unwrap_or(1) as f64;
    let panel = |title: &str,
                 x0: f64,
                 val: &dyn Fn(&Run) -> f64,
                 unit: &str,
                 extra: Option<f64>| {
        let pw = w / 2.0 - pad * 1.5;
        let ph = h - pad * 2.0;
        let max_v = runs.iter().map(val).chain(extra).fold(1.0_f64, f64::max) * 1.1;
        let x = |n: f64| x0 + pad + n / max_n * pw;
        let y = |v: f64| pad + ph - v / max_v * ph;
        let mut s = format!(
            "<text x=\"{}\" y=\"20\" font-size=\"13\" font-weight=\"bold\">{title}</text>\
             <line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#888\"/>\
             <line x1=\"{0}\" y1=\"{2}\" x2=\"{3}\" y2=\"{2}\" stroke=\"#888\"/>",
            x0 + pad,
            pad,
            pad + ph,
            x0 + pad + pw
        );
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"10\">{max_v:.0} {unit}</text><text x=\"{}\" y=\"{}\" font-size=\"10\">{max_n:.0} checks</text>",
            x0 + 4.0,
            pad + 4.0,
            x0 + pad + pw - 50.0,
            pad + ph + 16.0
        ));
        if let Some(f) = extra {
            let (l, r, fy) = (x0 + pad, x0 + pad + pw, y(f));
            s.push_str(&format!(
                "<line x1=\"{l}\" y1=\"{fy}\" x2=\"{r}\" y2=\"{fy}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/><text x=\"{tx}\" y=\"{ty}\" font-size=\"10\" fill=\"#666\">kernel floor {f:.0} {unit}</text>",
                tx = l + 4.0,
                ty = fy - 3.0
            ));
        }
        for (who, colour) in [("lifeline", "#1f77b4"), ("blackbox", "#d62728")] {
            let pts: Vec<String> = runs
                .iter()
                .filter(|r| r.who == who)
                .map(|r| format!("{:.1},{:.1}", x(r.checks as f64), y(val(r))))
                .collect();
            if pts.is_empty() {
                continue;
            }
            s.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                pts.join(" ")
            ));
            for p in &pts {
                let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
                s.push_str(&format!(
                    "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{colour}\"/>"
                ));
            }
        }
        s
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
        h + 20.0
    );
    svg.push_str(&panel(
        "CPU per probe (µs)",
        0.0,
        &|r| r.cpu_us,
        "µs",
        Some(floor_us),
    ));
    svg.push_str(&panel(
        "RSS (MiB)",
        w / 2.0,
        &|r| r.rss_scraped,
        "MiB",
        None,
    ));
    svg.push_str(&format!(
        "<text x=\"{pad}\" y=\"{}\" font-size=\"11\" fill=\"#1f77b4\">— lifeline</text><text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#d62728\">— Prometheus + blackbox_exporter</text></svg>",
        h + 10.0,
        pad + 90.0,
        h + 10.0
    ));
    std::fs::write(path, svg).expect("write plot");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    if let Some(base) = arg("--listen-child") {
        listen_forever(base.parse().expect("base"));
        return;
    }
    if let Some(base) = arg("--floor-child") {
        let secs = args.last().and_then(|s| s.parse().ok()).unwrap_or(5.0);
        floor_child(base.parse().expect("base"), secs);
        return;
    }
    let list = |name: &str, default: &str| -> Vec<usize> {
        arg(name)
            .unwrap_or_else(|| default.into())
            .split(',')
            .filter_map(|x| x.parse().ok())
            .collect()
    };
    let counts = list("--checks", "1000,5000,10000");
    let bb = list("--blackbox", "");
    let interval = arg("--interval").unwrap_or_else(|| "1s".into());
    let o = Opts {
        interval_s: parse_duration(&interval),
        interval,
        timeout: arg("--timeout").unwrap_or_else(|| "500ms".into()),
        seconds: arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(30),
    };
    let base = free_base();
    let listeners = spawn_listeners(base);
    let (floor_rate, fu, fs) = floor(base);
    println!(
        "floor     loopback connect+close: {:.1}µs of CPU (user {fu:.1} + system {fs:.1}) at {floor_rate:.0}/s, one blocking thread",
        fu + fs
    );
    let mut runs = Vec::new();
    for &n in &counts {
        runs.push(lifeline(n, base, &o));
    }
    if let Some(&n) = counts.iter().max() {
        scrape_cost(n, base, &o);
    }
    for &n in &bb {
        runs.push(blackbox(n, base, &o));
    }
    drop(listeners);
    println!("\nratios (blackbox / lifeline, same checks, same run):");
    println!("| checks | probes/s (ll / bb) | CPU per probe | RSS | probe latency p99 |");
    println!("|---|---|---|---|---|");
    for b in runs.iter().filter(|r| r.who == "blackbox") {
        if let Some(l) = runs
            .iter()
            .find(|r| r.who == "lifeline" && r.checks == b.checks)
        {
            let lat = match (b.latency_p99_ms, l.latency_p99_ms) {
                (Some(x), Some(y)) => format!("{x:.1} / ≤{y:.1} ms"),
                _ => "-".into(),
            };
            println!(
                "| {} | {:.0} / {:.0} | {:.1}× less ({:.0} vs {:.0} µs) | {:.1}× less ({:.0} vs {:.0} MiB) | {lat} |",
                b.checks,
                l.rate,
                b.rate,
                b.cpu_us / l.cpu_us,
                l.cpu_us,
                b.cpu_us,
                b.rss / l.rss_scraped,
                l.rss_scraped,
                b.rss,
            );
        }
    }
    if let Some(p) = arg("--plot") {
        plot(&PathBuf::from(p), &runs, fu + fs);
    }
}
