//! What the cluster tests share: agents as real processes (`chaos::agent::AgentProc`)
//! configured for one etcd cluster, targets that count the probes they get, and readers
//! of `/api/v1/cluster` and `/health`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

pub use crate::chaos::agent::AgentProc;
pub use crate::common::etcd::EtcdCluster;

/// The lease every test cluster uses: failover within about this.
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// TCP listeners that accept, count and close every connection (one per check).
pub struct CountingTargets {
    pub ip: Ipv4Addr,
    pub ports: Vec<u16>,
    counts: Vec<Arc<AtomicU64>>,
    _tasks: JoinSet<()>,
}

impl CountingTargets {
    /// `n` listeners on `ip`, each on a free port.
    pub async fn start(ip: Ipv4Addr, n: usize) -> Self {
        let mut tasks = JoinSet::new();
        let mut ports = Vec::new();
        let mut counts = Vec::new();
        for _ in 0..n {
            let l = tokio::net::TcpListener::bind((ip, 0))
                .await
                .expect("bind counting target");
            ports.push(l.local_addr().expect("addr").port());
            let c = Arc::new(AtomicU64::new(0));
            counts.push(c.clone());
            tasks.spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    c.fetch_add(1, Ordering::Relaxed);
                    drop(s);
                }
            });
        }
        Self {
            ip,
            ports,
            counts,
            _tasks: tasks,
        }
    }

    /// Connections each target got so far.
    pub fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// `[[checks]]` `c00`… against the targets.
    pub fn checks_toml(&self, interval: &str) -> String {
        let mut s = String::new();
        for (i, p) in self.ports.iter().enumerate() {
            s.push_str(&format!(
                "[[checks]]\nname = \"c{i:02}\"\nkind = \"tcp\"\naddress = \"{}:{p}\"\n\
                 interval = \"{interval}\"\ntimeout = \"500ms\"\nunhealthy_threshold = 1\n\n",
                self.ip
            ));
        }
        s
    }
}

/// An agent config: `[agent]` (listen and data dir filled in by [`AgentProc`]),
/// `[cluster]` for `member` in `location`, then `rest` (checks, notifiers, routes).
pub fn agent_toml(
    etcd: &[String],
    member: &str,
    location: &str,
    replicas: u32,
    rest: &str,
) -> String {
    let eps: Vec<String> = etcd.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "[agent]\nlisten = \"{{listen}}\"\ndata_dir = \"{{dir}}/data\"\n\n\
         [cluster]\netcd = [{}]\nmember = \"{member}\"\nlocation = \"{location}\"\n\
         replicas = {replicas}\nlease_ttl = \"{}s\"\n\n{rest}",
        eps.join(", "),
        LEASE_TTL.as_secs()
    )
}

/// `GET /api/v1/cluster` of `a`.
pub async fn report(a: &AgentProc) -> Value {
    let url = format!("{}/api/v1/cluster", a.base);
    match crate::common::api::client().get(&url).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// The checks `a` runs now (its `/health`).
pub async fn running(a: &AgentProc) -> BTreeSet<String> {
    let url = format!("{}/health", a.base);
    let Ok(r) = crate::common::api::client().get(&url).send().await else {
        return BTreeSet::new();
    };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["checks"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// `check`'s status in `a`'s `/health`.
pub async fn status_in(a: &AgentProc, check: &str) -> Option<String> {
    let url = format!("{}/health", a.base);
    let r = crate::common::api::client().get(&url).send().await.ok()?;
    let v: Value = r.json().await.ok()?;
    v["checks"][check].as_str().map(String::from)
}

/// Waits until every one of `agents` runs `check`.
pub async fn all_run(agents: &[&AgentProc], check: &str, within: Duration) {
    eventually(within, "every agent to run the check", || async {
        for a in agents {
            if !running(a).await.contains(check) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Check → the member running it, over `agents`; panics if a check runs twice.
pub async fn placement(agents: &[&AgentProc]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (i, a) in agents.iter().enumerate() {
        for c in running(a).await {
            if let Some(j) = out.insert(c.clone(), i) {
                panic!("check {c} runs on agents {j} and {i}");
            }
        }
    }
    out
}

/// Polls `f` every 50 ms until it gives `Some`, or panics after `within` with `what`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every agent sees `n` members and, together, they run each of `checks`
/// checks exactly once (`replicas = 1`).
pub async fn settled(agents: &[&AgentProc], n: usize, checks: usize, within: Duration) {
    eventually(within, "the cluster to settle", || async {
        for a in agents {
            let r = report(a).await;
            if r["members"].as_array().map(Vec::len) != Some(n) || r["role"] != "member" {
                return None;
            }
        }
        let mut total = 0;
        for a in agents {
            total += running(a).await.len();
        }
        (total == checks).then_some(())
    })
    .await;
}

/// The notifier of record of `check` as `a` reports it.
pub async fn notifier_of(a: &AgentProc, check: &str) -> Option<String> {
    let r = report(a).await;
    r["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == check)?["notifier"]
        .as_str()
        .map(String::from)
}

/// Sends `sig` to `pid` (a process this test started).
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal agent");
}
