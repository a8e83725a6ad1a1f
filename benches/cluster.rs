//! Cluster bench, as users run it: the release binary as separate agent processes on a
//! real 3-member etcd (Debian `etcd-server`), tcp checks against listeners in this
//! process.
//!
//! 1. Failover: kill -9 one agent (round robin over three), time until every check it
//!    ran runs on a survivor (its `/health`), restart it, settle; p50/p99 over the kills.
//! 2. Moves: checks that change member when scaling 3 → 4 → 6, against the ideal.
//! 3. etcd traffic: gRPC messages and bytes etcd handled per check per minute, steady
//!    and with 10 % of the targets flapping every 10 s (etcd's own `/metrics`).
//!
//! ```sh
//! cargo build --release --bench cluster
//! target/release/deps/cluster-<hash> [--checks 90] [--kills 20] [--lease-ttl 2] [--traffic-seconds 60]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// A TCP port that was free a moment ago (what the test harness below asks of `super`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Finds `name` on PATH or in `extra_dirs` (what the harness below asks of `super`).
fn require_bin(name: &str, package: &str, extra_dirs: &[&str]) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(std::path::PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found: install the Debian package `{package}`"))
}

/// The tests' etcd cluster (a real 3-member `etcd-server` on loopback).
#[path = "../tests/common/etcd.rs"]
#[allow(dead_code)]
mod etcd;

use etcd::EtcdCluster;

const BIN: &str = env!("CARGO_BIN_EXE_lifeline");

struct Agent {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    endpoints: Vec<String>,
    checks: String,
    lease_ttl: u64,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start(&self, name: &str) -> Agent {
        let port = free_port();
        let data = self.dir.path().join(name);
        std::fs::create_dir_all(&data).expect("data dir");
        let eps: Vec<String> = self.endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let config = format!(
            "[agent]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n[cluster]\netcd = [{}]\n\
             member = \"{name}\"\nlease_ttl = \"{}s\"\n\n{}",
            data.display(),
            eps.join(", "),
            self.lease_ttl,
            self.checks
        );
        let path = data.join("config.toml");
        std::fs::write(&path, config).expect("config");
        let log = std::fs::File::create(data.join("agent.log")).expect("log");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn lifeline (cargo build --release first)");
        Agent {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log: data.join("agent.log"),
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

async fn running(c: &reqwest::Client, a: &Agent) -> Option<BTreeSet<String>> {
    let v: serde_json::Value = c
        .get(format!("{}/health", a.base))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(v["checks"].as_object()?.keys().cloned().collect())
}

/// What one agent says: members seen (0 unless it is a member) and checks it owns.
async fn view(c: &reqwest::Client, a: &Agent) -> (usize, usize) {
    let Ok(r) = c.get(format!("{}/api/v1/cluster", a.base)).send().await else {
        return (0, 0);
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    if v["role"] != "member" {
        return (0, 0);
    }
    (
        v["members"].as_array().map_or(0, Vec::len),
        v["owned_checks"].as_u64().unwrap_or(0) as usize,
    )
}

/// Waits until every agent sees all of them, runs exactly what it owns, each check runs
/// exactly once, and the placement stayed the same over three polls 300 ms apart.
async fn settle(c: &reqwest::Client, agents: &[&Agent], checks: usize) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last: Option<BTreeMap<String, usize>> = None;
    let mut same = 0;
    loop {
        let mut place = BTreeMap::new();
        let mut ok = true;
        for (i, a) in agents.iter().enumerate() {
            let (members, owned) = view(c, a).await;
            let runs = running(c, a).await.unwrap_or_default();
            ok &= members == agents.len() && owned == runs.len();
            for ch in runs {
                ok &= place.insert(ch, i).is_none();
            }
        }
        ok &= place.len() == checks;
        if ok && last.as_ref() == Some(&place) {
            same += 1;
            if same >= 2 {
                return place;
            }
        } else {
            same = 0;
        }
        last = ok.then_some(place);
        if Instant::now() >= deadline {
            let mut why = String::new();
            for a in agents {
                let (members, owned) = view(c, a).await;
                let runs = running(c, a).await.map(|r| r.len());
                why.push_str(&format!(
                    "\n  {}: members {members}, owns {owned}, runs {runs:?}",
                    a.base
                ));
                if runs.is_none() {
                    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
                    let tail = &log[log.len().saturating_sub(2000)..];
                    why.push_str(&format!("\n  its log ends:\n{tail}"));
                }
            }
            panic!("the cluster did not settle in 90 s:{why}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

/// Sum of the etcd series named `names` over every member's `/metrics`.
async fn etcd_sum(c: &reqwest::Client, endpoints: &[String], names: &[&str]) -> f64 {
    let mut sum = 0.0;
    for ep in endpoints {
        let Ok(r) = c.get(format!("{ep}/metrics")).send().await else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        for l in text.lines() {
            if names.iter().any(|n| {
                l.strip_prefix(n)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            }) && let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
            {
                sum += v;
            }
        }
    }
    sum
}

/// Listeners that accept and close; each can be switched off (its listener closed, so
/// connects are refused) and on again (bound to the same port).
struct Targets {
    ports: Vec<u16>,
    down: Vec<tokio::sync::watch::Sender<bool>>,
}

async fn targets(n: usize) -> Targets {
    let mut ports = Vec::new();
    let mut down = Vec::new();
    for _ in 0..n {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = first.local_addr().expect("addr").port();
        ports.push(port);
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        down.push(tx);
        tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                match listener.take() {
                    Some(l) => {
                        tokio::select! {
                            r = l.accept() => {
                                if let Ok((s, _)) = r {
                                    drop(s);
                                }
                                listener = Some(l);
                            }
                            r = rx.changed() => {
                                if r.is_err() {
                                    return;
                                }
                                if !*rx.borrow() {
                                    listener = Some(l);
                                }
                            }
                        }
                    }
                    None => {
                        if rx.changed().await.is_err() {
                            return;
                        }
                        if !*rx.borrow() {
                            listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                                .await
                                .ok();
                        }
                    }
                }
            }
        });
    }
    Targets { ports, down }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n_checks = arg("--checks", 90) as usize;
    let kills = arg("--kills", 20) as usize;
    let lease_ttl = arg("--lease-ttl", 2);
    let traffic_s = arg("--traffic-seconds", 60);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let etcd = EtcdCluster::start(3).await;
        let t = targets(n_checks).await;
        let mut checks = String::new();
        for (i, p) in t.ports.iter().enumerate() {
            checks.push_str(&format!(
                "[[checks]]\nname = \"c{i:03}\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{p}\"\n\
                 interval = \"1s\"\ntimeout = \"500ms\"\nunhealthy_threshold = 1\n\n"
            ));
        }
        let setup = Setup {
            endpoints: etcd.endpoints(),
            checks,
            lease_ttl,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let c = client();
        let names = ["agent-0", "agent-1", "agent-2", "agent-3", "agent-4", "agent-5"];

        // 1. Failover.
        let mut agents: Vec<Agent> = names[..3].iter().map(|n| setup.start(n)).collect();
        settle(&c, &agents.iter().collect::<Vec<_>>(), n_checks).await;
        let mut times = Vec::new();
        for round in 0..kills {
            let v = round % 3;
            let orphans = running(&c, &agents[v]).await.unwrap_or_default();
            let t0 = Instant::now();
            let _ = agents[v].child.kill();
            let _ = agents[v].child.wait();
            loop {
                let mut seen = BTreeSet::new();
                for (i, a) in agents.iter().enumerate() {
                    if i != v {
                        seen.extend(running(&c, a).await.unwrap_or_default());
                    }
                }
                if orphans.is_subset(&seen) {
                    break;
                }
                assert!(t0.elapsed() < Duration::from_secs(60), "no failover");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let took = t0.elapsed().as_secs_f64();
            times.push(took);
            eprintln!("kill {round:>2}: {} checks moved in {took:.3} s", orphans.len());
            agents[v] = setup.start(names[v]);
            settle(&c, &agents.iter().collect::<Vec<_>>(), n_checks).await;
        }

        // 3. etcd traffic with three members (before scaling changes anything).
        let msgs = ["grpc_server_msg_received_total", "grpc_server_msg_sent_total"];
        let bytes = [
            "etcd_network_client_grpc_received_bytes_total",
            "etcd_network_client_grpc_sent_bytes_total",
        ];
        let mut traffic = Vec::new();
        for flapping in [false, true] {
            let (m0, b0) = (
                etcd_sum(&c, &setup.endpoints, &msgs).await,
                etcd_sum(&c, &setup.endpoints, &bytes).await,
            );
            let start = Instant::now();
            let flappers = n_checks / 10;
            let mut flips = 0;
            while start.elapsed() < Duration::from_secs(traffic_s) {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if flapping {
                    flips += 1;
                    for d in &t.down[..flappers] {
                        let _ = d.send(flips % 2 == 1);
                    }
                }
            }
            for d in &t.down {
                let _ = d.send(false);
            }
            let mins = start.elapsed().as_secs_f64() / 60.0;
            let (m1, b1) = (
                etcd_sum(&c, &setup.endpoints, &msgs).await,
                etcd_sum(&c, &setup.endpoints, &bytes).await,
            );
            traffic.push((flapping, (m1 - m0) / mins, (b1 - b0) / mins));
        }

        // 2. Moves when scaling 3 → 4 → 6.
        let p3 = settle(&c, &agents.iter().collect::<Vec<_>>(), n_checks).await;
        agents.push(setup.start(names[3]));
        let p4 = settle(&c, &agents.iter().collect::<Vec<_>>(), n_checks).await;
        agents.push(setup.start(names[4]));
        agents.push(setup.start(names[5]));
        let p6 = settle(&c, &agents.iter().collect::<Vec<_>>(), n_checks).await;
        let moved = |a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>| {
            a.iter().filter(|(k, v)| b.get(*k) != Some(v)).count()
        };
        let (m34, m46) = (moved(&p3, &p4), moved(&p4, &p6));

        println!("\n## lifeline cluster bench ({n_checks} tcp checks, lease_ttl {lease_ttl}s, 3-member etcd)\n");
        println!("| measure | value |");
        println!("|---|---|");
        println!(
            "| failover, kill -9 → all its checks running elsewhere (n={}) | p50 {:.2} s, p99 {:.2} s, max {:.2} s ({:.2}–{:.2} × lease_ttl) |",
            times.len(),
            pct(&times, 0.5),
            pct(&times, 0.99),
            pct(&times, 1.0),
            pct(&times, 0.5) / lease_ttl as f64,
            pct(&times, 0.99) / lease_ttl as f64
        );
        println!(
            "| checks moved 3 → 4 members | {m34} of {n_checks} ({:.1} %; ideal 25 %) |",
            100.0 * m34 as f64 / n_checks as f64
        );
        println!(
            "| checks moved 4 → 6 members | {m46} of {n_checks} ({:.1} %; ideal 33.3 %) |",
            100.0 * m46 as f64 / n_checks as f64
        );
        let agents_n = 3.0;
        let steady = traffic.iter().find(|t| !t.0).map(|t| (t.1, t.2)).unwrap_or_default();
        for (flapping, m, b) in &traffic {
            println!(
                "| etcd traffic, {}: whole cluster per minute | {m:.0} gRPC messages, {:.1} KiB ({:.2} messages, {:.0} bytes per check) |",
                if *flapping {
                    "10 % of targets flapping every 10 s"
                } else {
                    "steady (all healthy; lease keep-alives only)"
                },
                b / 1024.0,
                m / n_checks as f64,
                b / n_checks as f64
            );
        }
        if let Some((_, m, b)) = traffic.iter().find(|t| t.0) {
            let transitions = (n_checks / 10) as f64 * 6.0;
            println!(
                "| etcd traffic per state change (above steady) | {:.1} gRPC messages, {:.0} bytes |",
                (m - steady.0) / transitions,
                (b - steady.1) / transitions
            );
        }
        println!(
            "| steady traffic per agent per minute (keep-alive every lease_ttl/3) | {:.0} gRPC messages |",
            steady.0 / agents_n
        );
    });
}
