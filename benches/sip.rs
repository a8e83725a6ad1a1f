//! SIP OPTIONS benchmark against a local SIPp UAS (`tests/data/sip/uas_200.xml`).
//!
//! 1. Round trips per second and CPU per probe: 10,000 UDP probes through the `sip` check
//!    (no scheduler), one at a time and 32 at a time.
//! 2. Agent CPU per SIP check: a whole in-process agent (scheduler, health, metrics,
//!    events) runs 100 `sip` checks every second until 1,000 checks have completed; the
//!    process's user+system CPU time (from /proc/self/stat, the same counters
//!    getrusage(RUSAGE_SELF) reads, without unsafe FFI) is divided by the checks done.
//!
//! Run: `cargo bench --bench sip` (needs `sipp` from the Debian package `sip-tester`).

// Benchmarks and test harnesses time whole processes and wait for peers from plain
// threads: std's clock is the right one here (clippy.toml bans it in the agent's async code).
#![allow(clippy::disallowed_methods)]

#[path = "support/procfs.rs"]
mod procfs;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lifeline::check::{Attempt, BuildEnv, Check, Verdict};
use lifeline::health::StateTable;
use tokio_util::sync::CancellationToken;

/// Agent checks to complete.
const CHECKS: usize = 1000;
/// Direct probes per run: more than `CHECKS` because /proc CPU times tick every 10 ms.
const PROBES: usize = 10_000;

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// SIPp in the foreground, killed on drop.
struct Sipp(Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sipp(port: u16, dir: &Path) -> Sipp {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sip/uas_200.xml");
    let child = Command::new("sipp")
        .current_dir(dir)
        .arg("-sf")
        .arg(scenario)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-t", "u1"])
        .args([
            "-cp",
            &free_udp_port().to_string(),
            "-mp",
            &free_udp_port().to_string(),
        ])
        .arg("-nostdin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp not found: install the Debian package `sip-tester`");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "sipp did not bind UDP {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Sipp(child)
}

fn config(dir: &Path, port: u16, checks: usize, interval: &str) -> std::path::PathBuf {
    let mut text = format!(
        "[agent]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}/data\"\n",
        dir.display()
    );
    for i in 0..checks {
        text.push_str(&format!(
            "[[checks]]\nname = \"sip-{i}\"\nkind = \"sip\"\ntarget = \"sip:127.0.0.1:{port}\"\ninterval = \"{interval}\"\ntimeout = \"2s\"\ndegraded_latency = \"1s\"\n"
        ));
    }
    let path = dir.join(format!("bench-{checks}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

async fn round_trips(check: Arc<dyn Check>, concurrency: usize) -> (Duration, usize, Vec<String>) {
    let at = Attempt {
        check: Arc::from("bench"),
        timeout: Duration::from_secs(2),
        attempt: 0,
        states: Arc::new(StateTable::new()),
        cancel: CancellationToken::new(),
    };
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(PROBES));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let check = check.clone();
        let at = at.clone();
        let left = left.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            let mut failed = Vec::new();
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let o = check.probe(&at).await;
                if o.verdict == Verdict::Up {
                    ok += 1;
                } else {
                    failed.push(format!("{:?}: {}", o.verdict, o.message));
                }
            }
            (ok, failed)
        }));
    }
    let mut ok = 0;
    let mut failed = Vec::new();
    for t in tasks {
        let (n, f) = t.await.expect("task");
        ok += n;
        failed.extend(f);
    }
    (start.elapsed(), ok, failed)
}

fn main() {
    lifeline::net::tls::install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let _sipp = start_sipp(port, dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    rt.block_on(async {
        let cfg = lifeline::config::load(&config(dir.path(), port, 1, "1s")).expect("config");
        let env = BuildEnv {
            http: reqwest::Client::new(),
            push: Default::default(),
        };
        let check = cfg.checks[0].spec.build(&env).expect("build");
        // Warm up (SIPp, sockets, page faults).
        let _ = round_trips(check.clone(), 10).await;
        println!("SIP OPTIONS over UDP against SIPp, {PROBES} probes");
        for conc in [1, 32] {
            let cpu0 = procfs::Cpu::own();
            let (wall, ok, failed) = round_trips(check.clone(), conc).await;
            let cpu = procfs::Cpu::own() - cpu0;
            println!(
                "  concurrency {conc:>2}: {ok}/{PROBES} answered 200, {:.0} round trips/s, mean {:.0} µs wall, {:.0} µs CPU per probe",
                ok as f64 / wall.as_secs_f64(),
                wall.as_secs_f64() * 1e6 / ok.max(1) as f64 * conc as f64,
                cpu.as_secs_f64() * 1e6 / ok.max(1) as f64,
            );
            for f in failed.iter().take(3) {
                println!("    not up: {f}");
            }
        }

        // The whole agent: 100 checks every second until 1,000 have completed.
        let n = 100;
        let cfg = lifeline::config::load(&config(dir.path(), port, n, "1s")).expect("config");
        let cpu0 = procfs::Cpu::own();
        let t0 = Instant::now();
        let agent = lifeline::app::Agent::new(cfg, lifeline::metrics::Metrics::new(), Arc::new(Vec::new()));
        agent.apply().await;
        let done = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let states = agent.states();
            let done: u64 = (0..n)
                .filter_map(|i| states.state(&format!("sip-{i}")))
                .map(|s| u64::from(s.consecutive_successes))
                .sum();
            if done >= CHECKS as u64 || t0.elapsed() > Duration::from_secs(60) {
                break done;
            }
        };
        let cpu = procfs::Cpu::own() - cpu0;
        let wall = t0.elapsed();
        agent.shutdown(Duration::from_secs(5)).await;
        println!(
            "Agent: {n} sip checks at interval 1s, {done} checks in {:.1} s: {:.2} s CPU total, {:.0} µs CPU per check ({:.1}% of one core)",
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / done.max(1) as f64,
            cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        );
    });
}
