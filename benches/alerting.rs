//! Alerting benchmarks (run: `cargo bench --bench alerting`).
//!
//! 1. Latency from a check's failing status change (the engine's `on_change`) to the
//!    firing notification arriving at a local HTTP receiver, with `for = 0s` and
//!    `group_wait = 0s`: the whole path engine → SQLite outbox → delivery task → HTTP.
//! 2. Outbox throughput: rows written per second (`Outbox::enqueue`, one transaction
//!    each), and notifications delivered per second by one notifier's delivery task to a
//!    local receiver.

// Benchmarks and test harnesses time whole processes and wait for peers from plain
// threads: std's clock is the right one here (clippy.toml bans it in the agent's async code).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use lifeline::alert::delivery::Delivery;
use lifeline::alert::outbox::Outbox;
use lifeline::alert::{Notification, NotifierConfig, NotifierKind};
use lifeline::events::Observer;
use lifeline::health::{Change, CheckState, Status};
use tokio::sync::mpsc;

async fn receiver() -> (
    String,
    mpsc::UnboundedReceiver<(Instant, serde_json::Value)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let tx = tx.clone();
        async move {
            let at = Instant::now();
            let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let _ = tx.send((at, v));
            "ok"
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), rx)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn latency() {
    const N: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, mut rx) = receiver().await;
    let mut toml = format!(
        "[agent]\ndata_dir = \"{}\"\n[[notifiers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{url}\"\n\
         [[routes]]\nnotifiers = [\"hook\"]\nfor = \"0s\"\ngroup_wait = \"0s\"\n",
        dir.path().join("data").display()
    );
    for i in 0..N {
        toml.push_str(&format!(
            "[[checks]]\nname = \"c{i}\"\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n"
        ));
    }
    let cfg = lifeline::config::parse(&dir.path().join("c.toml"), &toml).expect("config");
    let engine = lifeline::alert::AlertEngine::start(
        &cfg,
        lifeline::metrics::Metrics::new(),
        lifeline::net::http_client::shared(),
    )
    .await
    .expect("engine");
    let mut samples = Vec::with_capacity(N);
    for (i, c) in cfg.checks.iter().enumerate() {
        let mut s = CheckState::new(c);
        s.status = Status::Healthy;
        engine.on_change(
            &s,
            Change {
                from: Status::Connecting,
                to: Status::Healthy,
            },
        );
        s.status = Status::Unhealthy;
        s.last_error = Some("connection refused".into());
        let start = Instant::now();
        engine.on_change(
            &s,
            Change {
                from: Status::Healthy,
                to: Status::Unhealthy,
            },
        );
        let name = format!("c{i}");
        loop {
            let (at, v) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("notification within 10s")
                .expect("receiver alive");
            if v["status"] == "firing" && v["alerts"][0]["check"] == name.as_str() {
                samples.push(at - start);
                break;
            }
        }
    }
    engine.shutdown();
    samples.sort();
    println!(
        "failure -> notification at receiver (n={N}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn throughput() {
    const N: usize = 2000;
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = Arc::new(Outbox::open(dir.path()).await.expect("outbox"));
    let note = Notification::test_sample();
    let targets = vec!["hook".to_string()];
    let start = Instant::now();
    for i in 0..N {
        let mut n = note.clone();
        n.dedupe_key = format!("k{i}");
        outbox.enqueue(&targets, &n).await.expect("enqueue");
    }
    let write = start.elapsed();
    println!(
        "outbox writes: {N} rows in {:.1} ms = {:.0} rows/s (one transaction each, WAL, synchronous=NORMAL)",
        write.as_secs_f64() * 1e3,
        N as f64 / write.as_secs_f64()
    );

    let (url, mut rx) = receiver().await;
    let cfg = Arc::new(NotifierConfig {
        name: "hook".into(),
        kind: NotifierKind::Webhook {
            url: url::Url::parse(&url).expect("url"),
            hmac_secret: None,
            headers: Default::default(),
        },
        retry_base: Duration::from_secs(1),
        retry_max: Duration::from_secs(300),
        max_age: Duration::from_secs(86_400),
        title: None,
        text: None,
    });
    let sender = lifeline::alert::build_notifier(&cfg, &lifeline::net::http_client::shared());
    let d = Arc::new(Delivery {
        name: "hook".into(),
        target: ArcSwap::from_pointee((cfg, sender)),
        wake: tokio::sync::Notify::new(),
        cancel: tokio_util::sync::CancellationToken::new(),
        gate: None,
    });
    let start = Instant::now();
    tokio::spawn(
        d.clone()
            .run(outbox.clone(), lifeline::metrics::Metrics::new()),
    );
    for _ in 0..N {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("delivery")
            .expect("alive");
    }
    let took = start.elapsed();
    d.cancel.cancel();
    println!(
        "outbox delivery (one webhook notifier, sequential, local receiver): {N} in {:.1} ms = {:.0} notifications/s",
        took.as_secs_f64() * 1e3,
        N as f64 / took.as_secs_f64()
    );
}

fn main() {
    lifeline::net::tls::install_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        latency().await;
        throughput().await;
    });
}
