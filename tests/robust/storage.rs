//! A broken `data_dir` never stops monitoring: a read-only directory, a full disk and a
//! garbage database file are reported (`lifeline_storage_up{store}`,
//! `lifeline_storage_errors_total{store}`, `/health/detailed` → `agent.storage`) while
//! checks, `/metrics` and webhook notifications keep working; once the disk heals, rows
//! are written again (the outbox's in-memory rows included).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeline::alert::Notification;
use lifeline::alert::outbox::Outbox;

use super::{Mount, Proc, agent_port, agent_with_webhook, metric, wait_metric};
use crate::common::receivers::HttpReceiver;

const WITHIN: Duration = Duration::from_secs(20);

fn count(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    c.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Starts the real binary with `data` as its `data_dir`, a webhook to a fresh receiver
/// (`/hook`) and a tcp check `svc` on a listener held open by the caller (drop it to make
/// `svc` fail); returns the receiver, the listener, the config path and the process.
async fn start_with_webhook(
    dir: &Path,
    data: &Path,
) -> (HttpReceiver, std::net::TcpListener, PathBuf, Proc) {
    let rx = HttpReceiver::start().await;
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = agent_port();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        agent_with_webhook(
            port,
            data,
            &rx.url("/hook"),
            &target.local_addr().unwrap().to_string(),
        ),
    )
    .unwrap();
    let p = Proc::spawn(&cfg, port, &[]);
    p.wait_up(WITHIN).await;
    (rx, target, cfg, p)
}

/// Waits until `lifeline_check_up` of the tcp check `svc` is 1.
async fn wait_svc_up(p: &Proc) {
    wait_metric(
        p,
        "lifeline_check_up{check=\"svc\",kind=\"tcp\"}",
        WITHIN,
        |v| v == 1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_data_dir_keeps_checks_metrics_and_webhooks_then_heals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut ro = Mount::read_only(&data);
    let (rx, target, _cfg, p) = start_with_webhook(dir.path(), &data).await;
    // Both stores report the fault; the checks keep running.
    wait_metric(&p, "lifeline_storage_up{store=\"outbox\"}", WITHIN, |v| {
        v == 0.0
    })
    .await;
    wait_metric(&p, "lifeline_storage_up{store=\"history\"}", WITHIN, |v| {
        v == 0.0
    })
    .await;
    let m = p.metrics().await;
    assert!(metric(&m, "lifeline_storage_errors_total{store=\"outbox\"}").unwrap() >= 1.0);
    assert!(metric(&m, "lifeline_storage_errors_total{store=\"history\"}").unwrap() >= 1.0);
    wait_svc_up(&p).await;
    let d = p.detailed().await;
    assert_eq!(d["agent"]["status"], "degraded", "{d}");
    assert_eq!(d["agent"]["storage"]["outbox"]["up"], false, "{d}");
    assert!(
        d["agent"]["storage"]["outbox"]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{d}"
    );
    assert_eq!(d["checks"][0]["name"], "svc", "existing fields stay: {d}");
    // A state change is still notified, from memory.
    drop(target);
    let t0 = Instant::now();
    let got = rx.wait_delivered("/hook", 1, WITHIN).await;
    assert_eq!(got[0].json["status"], "firing", "{:?}", got[0].json);
    eprintln!(
        "read-only data_dir: firing delivered {} ms after the target closed",
        t0.elapsed().as_millis()
    );
    // Heal: the directory is writable again → both stores write, the outbox flushes what
    // memory held (the firing alert's state).
    ro.unmount();
    let t1 = Instant::now();
    wait_metric(&p, "lifeline_storage_up{store=\"outbox\"}", WITHIN, |v| {
        v == 1.0
    })
    .await;
    let outbox_ms = t1.elapsed().as_millis();
    wait_metric(
        &p,
        "lifeline_storage_up{store=\"history\"}",
        Duration::from_secs(40),
        |v| v == 1.0,
    )
    .await;
    eprintln!(
        "read-only data_dir healed: outbox on disk after {outbox_ms} ms, history after {} ms",
        t1.elapsed().as_millis()
    );
    let db = data.join("lifeline.db");
    assert!(
        count(&db, "SELECT COUNT(*) FROM alert_state") >= 1,
        "flushed from memory"
    );
    crate::common::wait_for(WITHIN, "history rows written after the heal", || {
        (count(&db, "SELECT COUNT(*) FROM transitions") >= 1).then_some(())
    })
    .await;
    let d = p.detailed().await;
    assert_eq!(d["agent"]["status"], "ok", "{d}");
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_database_file_is_reported_and_monitoring_continues() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("lifeline.db"),
        b"definitely not an SQLite file ".repeat(500),
    )
    .unwrap();
    let (rx, target, cfg, p) = start_with_webhook(dir.path(), &data).await;
    wait_svc_up(&p).await;
    let m = p.metrics().await;
    assert!(
        metric(&m, "lifeline_storage_errors_total{store=\"history\"}").unwrap_or(0.0) >= 1.0,
        "the corrupt file is counted"
    );
    let aside = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("lifeline.db.corrupt-")
        });
    assert!(aside, "the garbage file is kept aside for inspection");
    drop(target);
    let got = rx.wait_delivered("/hook", 1, WITHIN).await;
    assert_eq!(got[0].json["status"], "firing");
    // Garbage written over the live file: monitoring and notifications go on.
    std::fs::write(data.join("lifeline.db"), b"garbage again ".repeat(1000)).unwrap();
    let back = std::net::TcpListener::bind(format!("127.0.0.1:{}", got_port(&cfg))).unwrap();
    let got = rx.wait_delivered("/hook", 2, WITHIN).await;
    assert_eq!(got[1].json["status"], "resolved", "{:?}", got[1].json);
    wait_svc_up(&p).await;
    drop(back);
    drop(p);
}

/// The target port written in the config (the test re-binds it to bring the check back).
fn got_port(cfg: &Path) -> u16 {
    let text = std::fs::read_to_string(cfg).unwrap();
    let line = text.lines().find(|l| l.starts_with("address = ")).unwrap();
    line.trim_end_matches('"')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A full disk (a tiny tmpfs filled up): writes fail → the outbox goes to memory (rows
/// readable and deliverable, `lifeline_storage_up{store="outbox"} 0`); space comes back →
/// the rows are written to the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_outbox_runs_in_memory_then_flushes_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    let _fs = Mount::tmpfs(&mnt, 256);
    let metrics = lifeline::metrics::Metrics::new();
    let o = Outbox::open_with(&mnt, Some(metrics.clone()))
        .await
        .unwrap();
    assert!(o.on_disk().await);
    let mut n = Notification::test_sample();
    n.alerts[0].message = "x".repeat(4000);
    o.enqueue(&["hook".into()], &n).await.unwrap();
    // Fill the disk.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).and_then(|_| f.sync_data()).is_ok() {}
    }
    // Writes fail (SQLITE_FULL) → memory; each failed enqueue is retried by the caller (the
    // backlog does it in the agent) and works there.
    let mut ok = 1;
    let mut failures = 0;
    for _ in 0..500 {
        match o.enqueue(&["hook".into()], &n).await {
            Ok(_) => ok += 1,
            Err(_) => failures += 1,
        }
        if failures > 0 && !o.on_disk().await {
            break;
        }
    }
    assert!(failures >= 1, "the full disk never made a write fail");
    assert!(!o.on_disk().await, "outbox switched to memory");
    o.enqueue(&["hook".into()], &n)
        .await
        .expect("memory takes it");
    ok += 1;
    let text = metrics.render();
    assert_eq!(
        metric(&text, "lifeline_storage_up{store=\"outbox\"}"),
        Some(0.0)
    );
    let rows = o.next("hook", 0, 10_000).await.unwrap();
    assert_eq!(rows.len(), ok, "rows from before the switch came along");
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    // Space again.
    std::fs::remove_file(&filler).unwrap();
    let t0 = Instant::now();
    crate::common::wait_for(Duration::from_secs(10), "outbox back on disk", || {
        (metric(&metrics.render(), "lifeline_storage_up{store=\"outbox\"}") == Some(1.0))
            .then_some(())
    })
    .await;
    eprintln!(
        "full disk healed: outbox on disk {} ms after space returned",
        t0.elapsed().as_millis()
    );
    assert!(o.on_disk().await);
    let on_file = count(&mnt.join("lifeline.db"), "SELECT COUNT(*) FROM outbox");
    assert_eq!(on_file, ok as i64, "memory rows written to the file");
    // New ids keep growing (delivery reads rows after the last id it saw).
    let last = rows.last().unwrap().id;
    let ids = o.enqueue(&["hook".into()], &n).await.unwrap();
    assert!(ids[0] > last);
    drop(o);
}
