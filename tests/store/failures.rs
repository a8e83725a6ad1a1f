use std::time::{Duration, SystemTime};

use lifeline::health::Status;

use super::{all_history, open_store, tcp_config};
use crate::common::api::get_json;
use crate::common::*;

fn errors(a: &TestAgent) -> u64 {
    a.agent.shared.metrics.store_errors.get()
}

/// An unwritable data_dir (a path under a regular file: root ignores permission bits)
/// leaves the agent checking and serving metrics, counts store errors, retries, and
/// recovers once the directory can be created.
#[tokio::test]
async fn unwritable_data_dir_keeps_the_agent_running_and_recovers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // `config.toml` is a regular file TestAgent writes before the store opens.
    let cfg = tcp_config(&addr.to_string(), "").replace("{dir}/data", "{dir}/config.toml/sub");
    let a = TestAgent::start_with_store(&cfg).await;
    let store = a.store.clone().unwrap();
    assert!(!store.available());
    assert!(errors(&a) >= 1);
    a.wait_status("t", Status::Healthy, Duration::from_secs(5))
        .await;
    // Retries keep failing and are counted.
    wait_for(Duration::from_secs(10), "a retry to fail", || {
        (errors(&a) >= 2).then_some(())
    })
    .await;
    assert!(store.flush().is_err());
    let metrics = api::get_text(&a.url("/metrics")).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("lifeline_store_errors_total "))
        .expect("lifeline_store_errors_total exported");
    assert!(
        line.split(' ').nth(1).unwrap().parse::<f64>().unwrap() >= 2.0,
        "{line}"
    );
    let (code, e) = get_json(&a.url("/api/v1/checks/t/history")).await;
    assert_eq!(code, 503, "{e}");
    assert_eq!(a.state("t").status, Status::Healthy);

    // Make the directory creatable: the next attempt opens the store and the rows kept
    // in memory meanwhile are written.
    std::fs::remove_file(&a.config_path).unwrap();
    store.flush().expect("store recovers");
    assert!(store.available());
    let h = all_history(&store.reader().unwrap(), "t");
    assert_eq!(
        h.transitions.len(),
        2,
        "transitions from before recovery kept: {h:?}"
    );
    assert!(!h.samples.is_empty());
    let (code, _) = get_json(&a.url("/api/v1/checks/t/history")).await;
    assert_eq!(code, 200);
    drop(listener);
    a.stop().await;
}

/// A corrupt database file is moved aside (`lifeline.db.corrupt-<ts>`) and a new one is
/// started.
#[test]
fn corrupt_database_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = b"this is not an SQLite database, just some bytes ".repeat(200);
    std::fs::write(dir.path().join("lifeline.db"), &garbage).unwrap();
    let s = open_store(dir.path(), Duration::from_secs(86_400));
    assert!(s.available());
    let moved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("lifeline.db.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(std::fs::read(dir.path().join(&moved[0])).unwrap(), garbage);
    s.record_sample("c", SystemTime::now(), Status::Healthy, None);
    s.flush().unwrap();
    assert_eq!(all_history(&s.reader().unwrap(), "c").samples.len(), 1);
    s.shutdown();
}

/// A database from a newer lifeline is not touched (and not taken for corrupt).
#[test]
fn newer_schema_is_refused_not_moved() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(dir.path().join("lifeline.db")).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    let s = open_store(dir.path(), Duration::from_secs(86_400));
    assert!(!s.available());
    assert!(
        s.flush()
            .unwrap_err()
            .to_string()
            .contains("schema version 99")
    );
    assert!(dir.path().join("lifeline.db").is_file());
    assert!(
        !std::fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("corrupt"))
    );
    s.shutdown();
}

/// Pruning removes rows older than the retention only; the newest transition of each
/// check stays (it is the status at the start of later windows).
#[test]
fn retention_prunes_old_rows_only() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = lifeline::metrics::Metrics::new();
    let h = lifeline::config::HistoryConfig {
        retention: Duration::from_secs(30 * 86_400),
        sample_every: Duration::ZERO,
    };
    let s = lifeline::store::Store::open(dir.path(), &h, metrics.clone()).unwrap();
    // Whole milliseconds, as stored.
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64);
    let ago = |d: u64| now - Duration::from_secs(d * 3600);
    for t in [ago(40 * 24), ago(31 * 24), ago(29 * 24), ago(1)] {
        s.record_sample("a", t, Status::Healthy, Some(Duration::from_millis(1)));
    }
    for (check, at, from, to) in [
        ("a", ago(40 * 24), Status::Unknown, Status::Healthy),
        ("a", ago(35 * 24), Status::Healthy, Status::Unhealthy),
        ("a", ago(24), Status::Unhealthy, Status::Healthy),
        ("b", ago(40 * 24), Status::Unknown, Status::Healthy),
        ("b", ago(39 * 24), Status::Healthy, Status::Degraded),
    ] {
        s.record_transition(check, at, from, to, None, "");
    }
    s.record_run(ago(40 * 24), ago(39 * 24));
    s.record_run(ago(48), ago(24));
    s.flush().unwrap();
    let before = metrics.store_rows_pruned.get();

    let removed = s.prune(now).unwrap();
    // 2 samples of a, 2 transitions of a, 1 of b, 1 run.
    assert_eq!(removed, 6);
    assert_eq!(metrics.store_rows_pruned.get() - before, 6);
    let r = s.reader().unwrap();
    let a = all_history(&r, "a");
    assert_eq!(
        a.samples.iter().map(|x| x.at).collect::<Vec<_>>(),
        [ago(1), ago(29 * 24)]
    );
    assert_eq!(
        a.transitions.iter().map(|x| x.at).collect::<Vec<_>>(),
        [ago(24)]
    );
    let b = all_history(&r, "b");
    assert_eq!(b.transitions.len(), 1);
    assert_eq!(b.transitions[0].status, Status::Degraded);
    // The kept transition still answers uptime for a recent window.
    let u = r.uptime("b", ago(2), ago(1), now).unwrap().unwrap();
    assert_eq!(u.down_seconds, 0.0);
    // Pruning again removes nothing.
    assert_eq!(s.prune(now).unwrap(), 0);
    drop(r);
    s.shutdown();
}
