//! Three agents on a real 3-member etcd: every check runs exactly once (counted at the
//! targets), a kill -9 moves the dead member's checks to the others within
//! `lease_ttl` + 2 s, and a fourth member takes about a third of the checks.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::support::*;

const CHECKS: usize = 30;
const INTERVAL: Duration = Duration::from_millis(200);

async fn start_agent(etcd: &EtcdCluster, name: &str, targets: &CountingTargets) -> AgentProc {
    AgentProc::start(&agent_toml(
        &etcd.endpoints(),
        name,
        "here",
        1,
        &targets.checks_toml("200ms"),
    ))
    .await
}

/// Probes each target got over `window`.
async fn probes_over(targets: &CountingTargets, window: Duration) -> Vec<u64> {
    let before = targets.counts();
    tokio::time::sleep(window).await;
    targets
        .counts()
        .iter()
        .zip(before)
        .map(|(a, b)| a - b)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_check_runs_once_fails_over_on_kill9_and_a_new_member_takes_a_third() {
    let etcd = EtcdCluster::start(3).await;
    let targets = CountingTargets::start(Ipv4Addr::LOCALHOST, CHECKS).await;
    let a = start_agent(&etcd, "agent-a", &targets).await;
    let b = start_agent(&etcd, "agent-b", &targets).await;
    let c = start_agent(&etcd, "agent-c", &targets).await;
    settled(&[&a, &b, &c], 3, CHECKS, Duration::from_secs(40)).await;
    let before = placement(&[&a, &b, &c]).await;
    assert_eq!(before.len(), CHECKS);
    for i in 0..3 {
        let n = before.values().filter(|&&m| m == i).count();
        assert!(n >= 3, "agent {i} runs only {n} of {CHECKS}: {before:?}");
    }

    // Exactly once, counted at the targets: one runner makes window / interval probes,
    // two would make twice as many.
    let window = Duration::from_secs(3);
    let per_runner = (window.as_millis() / INTERVAL.as_millis()) as u64;
    let got = probes_over(&targets, window).await;
    for (i, n) in got.iter().enumerate() {
        assert!(
            *n >= per_runner / 2 && *n <= per_runner + per_runner / 3,
            "target c{i:02} got {n} probes in {window:?} (one runner makes about {per_runner}): {got:?}"
        );
    }

    // kill -9 the member with the most checks.
    let victim = (0..3)
        .max_by_key(|i| before.values().filter(|&&m| m == *i).count())
        .expect("three agents");
    let mut agents = [Some(a), Some(b), Some(c)];
    let dead = agents[victim].take().expect("victim");
    let orphans: Vec<String> = before
        .iter()
        .filter(|(_, m)| **m == victim)
        .map(|(c, _)| c.clone())
        .collect();
    let killed = Instant::now();
    dead.kill9().await;
    let survivors: Vec<&AgentProc> = agents.iter().flatten().collect();
    let within = LEASE_TTL + Duration::from_secs(2);
    // Generous deadline for the assertion message; the bound is checked on the time.
    eventually(
        within + Duration::from_secs(5),
        "the dead member's checks to run elsewhere",
        || async {
            let p = placement(&survivors).await;
            orphans.iter().all(|c| p.contains_key(c)).then_some(())
        },
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= within,
        "failover took {took:?}, more than lease_ttl + 2 s"
    );
    // The orphans' targets are probed again, once each.
    let got = probes_over(&targets, window).await;
    for (i, n) in got.iter().enumerate() {
        assert!(
            *n >= per_runner / 2 && *n <= per_runner + per_runner / 3,
            "after the failover, target c{i:02} got {n} probes in {window:?}: {got:?}"
        );
    }

    // A fourth member joins (three again): about a third of the checks move, all to it.
    let after_kill = placement(&survivors).await;
    let names: Vec<&str> = ["agent-a", "agent-b", "agent-c"]
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| *n)
        .collect();
    let d = start_agent(&etcd, "agent-d", &targets).await;
    let mut all: Vec<&AgentProc> = survivors.clone();
    all.push(&d);
    settled(&all, 3, CHECKS, Duration::from_secs(40)).await;
    let after_join = placement(&all).await;
    let moved: BTreeMap<&String, (usize, usize)> = after_kill
        .iter()
        .filter_map(|(c, m)| {
            let now = after_join[c];
            (now != *m).then_some((c, (*m, now)))
        })
        .collect();
    for (c, (_, to)) in &moved {
        assert_eq!(
            *to, 2,
            "check {c} moved between two old members ({names:?})"
        );
    }
    assert!(
        !moved.is_empty() && moved.len() <= CHECKS / 2,
        "{} of {CHECKS} checks moved when a third member joined (about a third expected)",
        moved.len()
    );
    eprintln!(
        "cluster: failover {took:?}; join moved {} of {CHECKS}",
        moved.len()
    );

    // The metrics say the same.
    let m = crate::common::api::client()
        .get(format!("{}/metrics", d.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |series: &str| crate::alerting::metric(&m, series);
    assert_eq!(value("lifeline_cluster_members"), 3.0, "{m}");
    assert_eq!(value("lifeline_cluster_connected"), 1.0);
    assert_eq!(
        value("lifeline_cluster_owned_checks") as usize,
        after_join.values().filter(|&&i| i == 2).count()
    );
    assert!(value("lifeline_cluster_rebalances_total") >= 1.0);
    assert_eq!(
        value("lifeline_agent_info{location=\"here\",member=\"agent-d\"}"),
        1.0
    );

    // `lifeline cluster status` reads the same from etcd, without joining.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.toml");
    let text = agent_toml(
        &etcd.endpoints(),
        "observer",
        "here",
        1,
        &targets.checks_toml("200ms"),
    )
    .replace("{listen}", "127.0.0.1:1")
    .replace("{dir}", dir.path().to_str().expect("utf-8"));
    std::fs::write(&cfg, text).expect("write config");
    let out = tokio::process::Command::new(crate::chaos::agent::BIN)
        .args(["cluster", "status", "--json", "--config"])
        .arg(&cfg)
        .output()
        .await
        .expect("run lifeline cluster status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["role"], "observer");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3));
    let checks = v["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), CHECKS);
    for c in checks {
        let name = c["name"].as_str().expect("name");
        let runner = c["notifier"].as_str().expect("notifier");
        let expected = ["agent-a", "agent-b", "agent-c"]
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, n)| *n)
            .chain(["agent-d"])
            .nth(after_join[name])
            .expect("member");
        assert_eq!(runner, expected, "{name}: the CLI and the agents disagree");
        assert!(c["statuses"][runner]["status"].is_string(), "{c}");
    }
}
