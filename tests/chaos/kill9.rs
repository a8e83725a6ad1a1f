//! The `kill -9` campaign (issue 18): the agent binary is SIGKILLed [`rounds`] times at
//! random moments while its one tcp check flaps and its webhook receiver sometimes answers
//! 503, all runs sharing one `data_dir`. Asserted afterwards:
//!
//! - every notification some run attempted (its dedupe key and status are in that run's
//!   log) was delivered at least once, by that run or a later one;
//! - duplicates share the `dedupe_key`: all deliveries of one key and status are the same
//!   notification, and one failure episode never gets a second key while firing;
//! - no resolved is missing: with the target finally up, every firing key gets its
//!   resolved; and no resolved goes out without its firing (a saved firing and its
//!   notification are one outbox request);
//! - the history database opens every time (`lifeline_storage_up{store="history"} 1`);
//! - every restart serves `/metrics` within [`RESTART_LIMIT`].
//!
//! `LIFELINE_KILL9_ROUNDS=100 cargo test --test tests -- kill9` runs the 100.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::alerting::{Target, tcp_check, webhook};
use crate::common::receivers::HttpReceiver;

/// Kills in the test suite (the 100 by hand, see the module doc).
const DEFAULT_ROUNDS: usize = 20;
/// Longest a restart may take, spawn to `/metrics` answered.
const RESTART_LIMIT: Duration = Duration::from_secs(1);

fn rounds() -> usize {
    std::env::var("LIFELINE_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS)
}

/// `(dedupe_key, status)` of every notification a run's log says it tried to send.
fn attempted(log: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let f = &v;
        let Some(key) = f["dedupe_key"].as_str() else {
            continue;
        };
        if let Some(status) = f["status"].as_str() {
            out.insert((key.to_string(), status.to_string()));
        } else {
            // The retry line names the key only; the status is in the delivered line.
            out.insert((key.to_string(), String::new()));
        }
    }
    out
}

/// Brings the target up or down (a no-op when it already is).
async fn flip(target: &mut Target, up: &mut bool, want_up: bool) {
    if want_up && !*up {
        target.start().await;
    } else if !want_up && *up {
        target.stop().await;
    }
    *up = want_up;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_campaign_loses_no_notification() {
    let n = rounds();
    let data = tempfile::tempdir().expect("tempdir");
    let rx = HttpReceiver::start().await;
    let mut target = Target::up().await;
    let mut up = true;
    let config = format!(
        "[agent]\nlisten = \"{{listen}}\"\ndata_dir = \"{}\"\n{}\
         retry_base = \"50ms\"\nretry_max = \"200ms\"\n\
         [[routes]]\nnotifiers = [\"hook\"]\nfor = \"0s\"\ngroup_wait = \"0s\"\n{}",
        data.path().join("data").display(),
        webhook("hook", &rx.url("/hook"), ""),
        tcp_check("db", &target.addr(), "")
    );
    let mut restarts = Vec::with_capacity(n);
    let mut tried = BTreeSet::new();
    let t0 = Instant::now();
    for round in 0..n {
        // Flap the target and sometimes take the receiver "down" (503s) for a while.
        flip(&mut target, &mut up, fastrand::bool()).await;
        if fastrand::u8(0..3) == 0 {
            rx.fail_next(fastrand::usize(1..6), 503);
        }
        let started = Instant::now();
        let a = AgentProc::start(&config).await;
        restarts.push(started.elapsed());
        let metrics = crate::common::api::client()
            .get(format!("{}/metrics", a.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        assert!(
            metrics.contains("lifeline_storage_up{store=\"history\"} 1"),
            "round {round}: history database did not open:\n{}",
            a.log()
        );
        // A random moment: mid-start, mid-flap, mid-delivery.
        let live = Duration::from_millis(fastrand::u64(50..1200));
        let flip_at = Duration::from_millis(fastrand::u64(0..live.as_millis() as u64));
        tokio::time::sleep(flip_at).await;
        flip(&mut target, &mut up, fastrand::bool()).await;
        tokio::time::sleep(live - flip_at).await;
        tried.extend(attempted(&a.full_log()));
        a.kill9().await;
    }

    // The last run: target up, receiver up, until every firing has its resolved.
    flip(&mut target, &mut up, true).await;
    rx.fail_next(0, 503);
    let a = AgentProc::start(&config).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let by_key = loop {
        let mut by_key: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in rx.delivered("/hook") {
            let key = p.json["dedupe_key"].as_str().unwrap_or("").to_string();
            let status = p.json["status"].as_str().unwrap_or("").to_string();
            by_key.entry(key).or_default().insert(status);
        }
        let all_resolved = by_key.values().all(|s| s.contains("resolved"));
        let all_tried = tried.iter().all(|(k, s)| {
            by_key
                .get(k)
                .is_some_and(|got| s.is_empty() || got.contains(s))
        });
        if all_resolved && all_tried {
            break by_key;
        }
        assert!(
            Instant::now() < deadline,
            "after {n} kills: delivered {by_key:?}, attempted {tried:?}\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tried.extend(attempted(&a.full_log()));
    a.kill9().await;

    // One failure episode, one key: the firings delivered never overlap in time.
    let mut open: Option<String> = None;
    for p in rx.delivered("/hook") {
        let key = p.json["dedupe_key"].as_str().unwrap_or("").to_string();
        match p.json["status"].as_str() {
            Some("firing") => {
                if let Some(o) = &open {
                    assert_eq!(o, &key, "a second key while {o} was still firing");
                }
                open = Some(key);
            }
            Some("resolved") if open.as_deref() == Some(key.as_str()) => open = None,
            _ => {}
        }
    }

    // A firing alert's saved state and its notification are one outbox request: no kill
    // can leave a saved firing whose notification was never queued, so no resolved goes
    // out for a firing nobody received (before that fix: about 1 in 100 kills).
    let firing_missing = by_key.values().filter(|s| !s.contains("firing")).count();

    let posts = rx.all();
    let delivered = rx.delivered("/hook").len();
    let dupes = delivered - by_key.values().map(BTreeSet::len).sum::<usize>();
    let worst = restarts.iter().max().copied().unwrap_or_default();
    eprintln!(
        "kill9: {n} kills in {:?}; {} episodes, {delivered} deliveries ({dupes} duplicates), \
         {} refused with 503, {firing_missing} resolved without their firing, \
         restart max {worst:?} mean {:?}",
        t0.elapsed(),
        by_key.len(),
        posts.iter().filter(|p| p.answered == 503).count(),
        restarts.iter().sum::<Duration>() / n.max(1) as u32,
    );
    assert_eq!(
        firing_missing, 0,
        "resolved notifications without their firing: {by_key:?}"
    );
    assert!(
        worst < RESTART_LIMIT,
        "a restart took {worst:?}: {restarts:?}"
    );
}
