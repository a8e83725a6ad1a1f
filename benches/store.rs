//! History store benchmark: sustained write rate through the store's `Observer` hot path
//! (as the supervisors call it), the process CPU it takes, and database size per million
//! samples. Run: `cargo bench --bench store` (prints a Markdown table).

// Benchmarks and test harnesses time whole processes and wait for peers from plain
// threads: std's clock is the right one here (clippy.toml bans it in the agent's async code).
#![allow(clippy::disallowed_methods)]

#[path = "support/procfs.rs"]
mod procfs;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeline::check::{Mode, Outcome};
use lifeline::config::HistoryConfig;
use lifeline::events::Observer;
use lifeline::health::{CheckState, Status};
use lifeline::metrics::Metrics;
use lifeline::store::Store;

const CHECKS: usize = 10_000;

fn states() -> Vec<CheckState> {
    (0..CHECKS)
        .map(|i| {
            let mut s = CheckState::unknown(&format!("check-{i:05}"), "tcp", Mode::Probe);
            s.status = Status::Healthy;
            s.score = Some(100);
            s.latency_ms = Some(1.5);
            s.consecutive_successes = 1;
            s.last_success_at = Some(std::time::SystemTime::now());
            s
        })
        .collect()
}

fn open(dir: &std::path::Path) -> (Arc<Store>, Arc<Metrics>) {
    let m = Metrics::new();
    let h = HistoryConfig {
        retention: Duration::from_secs(30 * 86_400),
        sample_every: Duration::ZERO,
    };
    (Store::open(dir, &h, m.clone()).expect("store"), m)
}

fn dropped(m: &Metrics) -> u64 {
    m.events_dropped.with_label_values(&["store"]).get()
}

struct Paced {
    rate: usize,
    secs: f64,
    cpu_cores: f64,
    dropped: u64,
    max_queue: i64,
    p99_batch_ms: f64,
}

/// Every check reports `per_check_hz` times a second for `secs`; results are spread
/// evenly in 10 ms slices, as supervisors spread them.
fn paced(per_check_hz: usize, secs: u64) -> Paced {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, m) = open(dir.path());
    let states = states();
    let o = Outcome::up(Duration::from_micros(1500));
    let rate = CHECKS * per_check_hz;
    let per_slice = rate / 100;
    let slices = secs as usize * 100;
    let cpu0 = procfs::Cpu::own();
    let t0 = Instant::now();
    let mut i = 0usize;
    let mut max_queue = 0;
    for slice in 0..slices {
        for _ in 0..per_slice {
            store.on_result(&states[i % CHECKS], &o);
            i += 1;
        }
        max_queue = max_queue.max(m.store_queue_depth.get());
        let next = t0 + Duration::from_millis(10 * (slice as u64 + 1));
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    store.flush().expect("flush");
    let wall = t0.elapsed().as_secs_f64();
    let cores = (procfs::Cpu::own() - cpu0).as_secs_f64() / wall;
    let p99 = percentile_batch_ms(&m, 0.99);
    store.shutdown();
    Paced {
        rate,
        secs: wall,
        cpu_cores: cores,
        dropped: dropped(&m),
        max_queue,
        p99_batch_ms: p99,
    }
}

/// Upper bound of the bucket holding quantile `q` of `lifeline_store_write_seconds`.
fn percentile_batch_ms(m: &Metrics, q: f64) -> f64 {
    let text = m.render();
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("lifeline_store_write_seconds_bucket{le=\"") {
            let (le, v) = rest.split_once("\"} ").unwrap_or(("", "0"));
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(0.0)
            };
            buckets.push((le, v.parse().unwrap_or(0.0)));
        }
    }
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    buckets
        .iter()
        .find(|(_, c)| *c >= total * q)
        .map(|(le, _)| le * 1000.0)
        .unwrap_or(f64::NAN)
}

/// As fast as the writer takes them (the producer waits when the queue is full).
fn unpaced(total: usize) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, m) = open(dir.path());
    let names: Vec<String> = (0..CHECKS).map(|i| format!("check-{i:05}")).collect();
    let cpu0 = procfs::Cpu::own();
    let t0 = Instant::now();
    let now = std::time::SystemTime::now();
    for i in 0..total {
        let at = now + Duration::from_millis((i / CHECKS) as u64 * 1000);
        while !store.record_sample(
            &names[i % CHECKS],
            at,
            Status::Healthy,
            Some(Duration::from_micros(900)),
        ) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    store.flush().expect("flush");
    let wall = t0.elapsed().as_secs_f64();
    let cores = (procfs::Cpu::own() - cpu0).as_secs_f64() / wall;
    let d = dropped(&m);
    store.shutdown();
    (total as f64 / wall, cores, d)
}

/// Bytes of `lifeline.db` per million samples (10,000 checks × 100 samples each, after
/// a checkpoint).
fn size_per_million() -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    let names: Vec<String> = (0..CHECKS).map(|i| format!("check-{i:05}")).collect();
    let now = std::time::SystemTime::now();
    let n = 1_000_000;
    for i in 0..n {
        let at = now + Duration::from_millis((i / CHECKS) as u64 * 1000);
        let lat = Duration::from_micros(500 + (i as u64 * 7919) % 20_000);
        while !store.record_sample(&names[i % CHECKS], at, Status::Healthy, Some(lat)) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    store.flush().expect("flush");
    store.shutdown();
    let path = dir.path().join("lifeline.db");
    let c = rusqlite::Connection::open(&path).expect("open");
    let _: (i64, i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("checkpoint");
    let samples: i64 = c
        .query_row("SELECT count(*) FROM samples", [], |r| r.get(0))
        .expect("count");
    assert_eq!(samples, n as i64);
    drop(c);
    std::fs::metadata(&path)
        .map(|m| m.len() as f64)
        .unwrap_or(0.0)
        / (n as f64 / 1e6)
}

fn main() {
    let secs: u64 = std::env::var("STORE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!(
        "| scenario | offered samples/s | achieved | process CPU (cores) | dropped | max queue | p99 batch write |"
    );
    println!("|---|---|---|---|---|---|---|");
    for hz in [1, 5, 10] {
        let p = paced(hz, secs);
        println!(
            "| {CHECKS} checks × {hz}/s via Observer, {:.0} s | {} | {} | {:.2} | {} | {} | ≤ {:.0} ms |",
            p.secs,
            p.rate,
            if p.dropped == 0 {
                "all"
            } else {
                "some dropped"
            },
            p.cpu_cores,
            p.dropped,
            p.max_queue,
            p.p99_batch_ms
        );
    }
    let (rate, cores, d) = unpaced(2_000_000);
    println!(
        "| unpaced, 2,000,000 samples over {CHECKS} checks | max | {rate:.0}/s | {cores:.2} | {d} | – | – |"
    );
    let size = size_per_million();
    println!();
    // Bytes per million samples / 1e6 = MB per million = bytes per sample.
    println!("database size: {:.1} MB per million samples", size / 1e6);
}
