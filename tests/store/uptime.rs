use std::time::{Duration, SystemTime};

use lifeline::health::Status;

use super::{open_store, tcp_config};
use crate::common::api::get_json;
use crate::common::*;

const H: u64 = 3600;

fn at(base: SystemTime, secs: u64) -> SystemTime {
    base + Duration::from_secs(secs)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Known up/down periods and agent runs with injected times (2024-01-01):
///
/// ```text
/// agent runs:   [0h ─────────── 10h)      [12h ─────────────── 24h)
/// check:        healthy 0h, unhealthy 4h, healthy 5h, degraded 20h
/// ```
#[test]
fn uptime_over_windows_with_known_periods_and_agent_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_store(dir.path(), Duration::from_secs(3650 * 86_400));
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200);
    s.record_run(at(base, 0), at(base, 10 * H));
    s.record_run(at(base, 12 * H), at(base, 24 * H));
    let changes = [
        (0, Status::Connecting, Status::Healthy),
        (4 * H, Status::Healthy, Status::Unhealthy),
        (5 * H, Status::Unhealthy, Status::Healthy),
        (20 * H, Status::Healthy, Status::Degraded),
    ];
    for (t, from, to) in changes {
        s.record_transition("c", at(base, t), from, to, None, "");
    }
    // One sample a minute over the first 24 h.
    for m in 0..24 * 60 {
        s.record_sample(
            "c",
            at(base, m * 60),
            Status::Healthy,
            Some(Duration::from_millis(3)),
        );
    }
    s.flush().unwrap();
    let r = s.reader().unwrap();
    let now = SystemTime::now();
    let up = |a: u64, b: u64| {
        r.uptime("c", at(base, a), at(base, b), now)
            .unwrap()
            .unwrap()
    };

    // The whole day: 22 h running, 21 h up (degraded counts as up), 1 h down.
    let u = up(0, 24 * H);
    assert!(close(u.agent_down_seconds, (2 * H) as f64), "{u:?}");
    assert!(close(u.up_seconds, (21 * H) as f64), "{u:?}");
    assert!(close(u.down_seconds, H as f64), "{u:?}");
    assert!(close(u.uptime_ratio.unwrap(), 21.0 / 22.0), "{u:?}");
    assert_eq!(u.samples, 24 * 60);

    // A window starting inside the outage takes the status from the earlier transition.
    let u = up(4 * H + 1800, 4 * H + 2700);
    assert_eq!(u.uptime_ratio, Some(0.0), "{u:?}");
    assert_eq!(u.samples, 15);

    // 3h–6h: 2 h up, 1 h down, agent always running.
    let u = up(3 * H, 6 * H);
    assert!(close(u.uptime_ratio.unwrap(), 2.0 / 3.0), "{u:?}");
    assert_eq!(u.agent_down_seconds, 0.0);

    // Entirely while the agent was down: no ratio, all agent downtime.
    let u = up(10 * H + 1800, 11 * H + 1800);
    assert_eq!(u.uptime_ratio, None, "{u:?}");
    assert!(close(u.agent_down_seconds, H as f64), "{u:?}");

    // Spanning the agent downtime: 9h–13h = 2 h running, all up.
    let u = up(9 * H, 13 * H);
    assert_eq!(u.uptime_ratio, Some(1.0), "{u:?}");
    assert!(close(u.agent_down_seconds, (2 * H) as f64), "{u:?}");

    // Before anything was recorded: the agent was not running.
    let u = up(0, 1);
    assert!(
        u.uptime_ratio == Some(1.0) && close(u.up_seconds, 1.0),
        "{u:?}"
    );
    let before = r
        .uptime("c", base - Duration::from_secs(H), base, now)
        .unwrap()
        .unwrap();
    assert_eq!(before.uptime_ratio, None);
    assert!(close(before.agent_down_seconds, H as f64), "{before:?}");

    assert!(r.uptime("nope", base, at(base, H), now).unwrap().is_none());
    drop(r);
    s.shutdown();
}

/// A run that ended without a clean stop (kill -9) ends at its last heartbeat.
#[test]
fn a_run_without_clean_stop_ends_at_its_last_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_store(dir.path(), Duration::from_secs(3650 * 86_400));
    s.flush().unwrap();
    s.shutdown();
    // Forge a crashed run: started at base, last heartbeat at base + 2h, never stopped.
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200);
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    {
        let c = rusqlite::Connection::open(dir.path().join("lifeline.db")).unwrap();
        c.execute(
            "INSERT INTO agent_runs (started_at, last_seen) VALUES (?1, ?2)",
            [ms(base), ms(at(base, 2 * H))],
        )
        .unwrap();
    }
    let s = open_store(dir.path(), Duration::from_secs(3650 * 86_400));
    s.record_transition("c", base, Status::Unknown, Status::Healthy, None, "");
    s.flush().unwrap();
    let r = s.reader().unwrap();
    let u = r
        .uptime("c", base, at(base, 4 * H), SystemTime::now())
        .unwrap()
        .unwrap();
    assert!(close(u.agent_down_seconds, (2 * H) as f64), "{u:?}");
    assert!(close(u.up_seconds, (2 * H) as f64), "{u:?}");
    drop(r);
    s.shutdown();
}

/// The API over the last 24 h: a past run plus the live one, the check's past outage.
#[tokio::test]
async fn uptime_api_reports_ratio_samples_and_agent_downtime() {
    let a = TestAgent::start_with_store(&tcp_config("127.0.0.1:9", "")).await;
    let store = a.store.clone().unwrap();
    let now = SystemTime::now();
    let ago = |h: u64| now - Duration::from_secs(h * H);
    // The agent ran from 24 h ago to 14 h ago, and runs again since this test started.
    store.record_run(ago(24), ago(14));
    store.record_transition(
        "old",
        ago(25),
        Status::Connecting,
        Status::Healthy,
        None,
        "",
    );
    store.record_transition(
        "old",
        ago(20),
        Status::Healthy,
        Status::Disconnected,
        None,
        "",
    );
    store.record_transition(
        "old",
        ago(18),
        Status::Disconnected,
        Status::Healthy,
        None,
        "",
    );
    for h in 0..24 {
        store.record_sample(
            "old",
            ago(h) - Duration::from_secs(1),
            Status::Healthy,
            None,
        );
    }
    store.flush().unwrap();
    let (code, u) = get_json(&a.url("/api/v1/checks/old/uptime?window=24h")).await;
    assert_eq!(code, 200, "{u}");
    assert_eq!(u["check"], "old");
    assert_eq!(u["window"], "24h");
    assert_eq!(u["samples"], 24);
    // Running: 10 h in the past run + the few seconds of this run; up 8 h, down 2 h.
    let down = u["agent_down_seconds"].as_f64().unwrap();
    assert!((down - (14 * H) as f64).abs() < 60.0, "{u}");
    let ratio = u["uptime_ratio"].as_f64().unwrap();
    assert!((ratio - 0.8).abs() < 0.01, "{u}");
    a.stop().await;
}
