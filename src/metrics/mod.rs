//! Prometheus metrics (SPEC §6) behind typed methods: label strings live in this file only.
//!
//! Per-check series are plain atomics ([`series`]) bound once per check into a
//! [`CheckMetrics`] (the hot path does no label hashing and no allocation) and rendered
//! directly; agent-wide metrics live in the `prometheus` crate's registry.

pub mod background;
pub mod families;
pub mod series;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::check::{ErrorKind, Outcome, Verdict};
use crate::health::{CheckState, Overall, OverallStatus};
use series::Series;

/// A blocking writer that hands what it is given to a scrape's body in pieces of about
/// [`families::CHUNK_BYTES`]; it fails with `BrokenPipe` once the body is dropped.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(families::CHUNK_BYTES + 4096),
        );
        self.tx
            .blocking_send(bytes::Bytes::from(piece))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    /// Sends what is left.
    fn close(mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= families::CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    checks: RwLock<BTreeMap<String, Arc<Series>>>,
    /// `[metrics]`.
    settings: RwLock<crate::config::MetricsConfig>,
    overall_score: Gauge,
    overall_status: IntGaugeVec,
    /// `lifeline_scheduler_lag_seconds`.
    pub scheduler_lag: Histogram,
    notifications: IntCounterVec,
    notification_queue: IntGaugeVec,
    notification_latency: HistogramVec,
    plugin_info: IntGaugeVec,
    /// `lifeline_store_queue_depth`.
    pub store_queue_depth: IntGauge,
    /// `lifeline_store_write_seconds`.
    pub store_write_seconds: Histogram,
    /// `lifeline_store_batch_size`.
    pub store_batch_size: Histogram,
    /// `lifeline_store_rows_pruned_total`.
    pub store_rows_pruned: IntCounter,
    /// `lifeline_store_errors_total`.
    pub store_errors: IntCounter,
    /// `lifeline_events_dropped_total`: observer queue overflows.
    pub events_dropped: IntCounterVec,
    reload_ok: IntGauge,
    reload_ts: Gauge,
    http_requests: IntCounterVec,
    /// `lifeline_http_connections`: open connections to the agent's HTTP server.
    pub http_connections: IntGauge,
    http_rejected: IntCounterVec,
    storage_up: IntGaugeVec,
    storage_errors: IntCounterVec,
    storage: parking_lot::Mutex<BTreeMap<&'static str, StorageState>>,
}

/// What the agent knows about one of its stores (`/health/detailed` → `agent.storage`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StorageState {
    /// Writing works right now.
    pub up: bool,
    /// Errors since start.
    pub errors: u64,
    /// The last error (already free of secrets), if any.
    pub last_error: Option<String>,
    /// Unix time of the last error.
    pub last_error_at: Option<f64>,
    /// What the store does meanwhile (e.g. "notifications kept in memory").
    pub mode: &'static str,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Creates and registers every metric, including `process_*`.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let cv =
            |n: &str, h: &str, l: &[&str]| IntCounterVec::new(opts(n, h), l).expect("valid metric");
        let igv =
            |n: &str, h: &str, l: &[&str]| IntGaugeVec::new(opts(n, h), l).expect("valid metric");
        let m = Self {
            checks: RwLock::new(BTreeMap::new()),
            settings: RwLock::new(crate::config::MetricsConfig::default()),
            overall_score: Gauge::with_opts(opts(
                "lifeline_overall_score",
                "Weight-averaged score of all checks that have one.",
            ))
            .expect("valid metric"),
            overall_status: igv(
                "lifeline_overall_status",
                "1 for the current overall status.",
                &["status"],
            ),
            scheduler_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "lifeline_scheduler_lag_seconds",
                    "How late attempts start against their due time.",
                )
                .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            )
            .expect("valid metric"),
            notifications: cv(
                "lifeline_notifications_total",
                "Notifications by result (sent, failed, dropped).",
                &["notifier", "result"],
            ),
            notification_queue: igv(
                "lifeline_notification_queue_depth",
                "Undelivered outbox entries.",
                &["notifier"],
            ),
            notification_latency: HistogramVec::new(
                HistogramOpts::new(
                    "lifeline_notification_latency_seconds",
                    "From alert state change to delivery.",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0]),
                &["notifier"],
            )
            .expect("valid metric"),
            plugin_info: igv(
                "lifeline_plugin_info",
                "Loaded plugins.",
                &["plugin", "version", "abi"],
            ),
            store_queue_depth: IntGauge::with_opts(opts(
                "lifeline_store_queue_depth",
                "History writes waiting for the writer thread.",
            ))
            .expect("valid metric"),
            store_write_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "lifeline_store_write_seconds",
                    "Duration of one history batch write.",
                )
                .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            )
            .expect("valid metric"),
            store_batch_size: Histogram::with_opts(
                HistogramOpts::new("lifeline_store_batch_size", "Rows per history batch.")
                    .buckets(vec![1.0, 10.0, 100.0, 1000.0, 10000.0]),
            )
            .expect("valid metric"),
            store_rows_pruned: IntCounter::with_opts(opts(
                "lifeline_store_rows_pruned_total",
                "History rows removed by retention.",
            ))
            .expect("valid metric"),
            store_errors: IntCounter::with_opts(opts(
                "lifeline_store_errors_total",
                "History store errors.",
            ))
            .expect("valid metric"),
            events_dropped: cv(
                "lifeline_events_dropped_total",
                "Results an observer queue had no room for.",
                &["observer"],
            ),
            reload_ok: IntGauge::with_opts(opts(
                "lifeline_config_last_reload_successful",
                "Whether the last configuration reload attempt was successful.",
            ))
            .expect("valid metric"),
            reload_ts: Gauge::with_opts(opts(
                "lifeline_config_last_reload_success_timestamp_seconds",
                "Timestamp of the last successful configuration reload.",
            ))
            .expect("valid metric"),
            http_requests: cv(
                "lifeline_http_requests_total",
                "HTTP requests served, by route template and status code.",
                &["route", "code"],
            ),
            http_connections: IntGauge::with_opts(opts(
                "lifeline_http_connections",
                "Open connections to the agent's HTTP server.",
            ))
            .expect("valid metric"),
            http_rejected: cv(
                "lifeline_http_rejected_total",
                "Connections and requests refused or cut by a limit or a safety check.",
                &["reason"],
            ),
            storage_up: igv(
                "lifeline_storage_up",
                "1 while the store can write to data_dir, 0 while it cannot.",
                &["store"],
            ),
            storage_errors: cv(
                "lifeline_storage_errors_total",
                "Failed writes or opens of a store in data_dir.",
                &["store"],
            ),
            storage: parking_lot::Mutex::new(BTreeMap::new()),
            registry,
        };
        for r in HttpRejected::ALL {
            m.http_rejected.with_label_values(&[r.as_str()]);
        }
        let build = igv("lifeline_build_info", "Build information.", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let r = &m.registry;
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(m.overall_score.clone()),
            Box::new(m.overall_status.clone()),
            Box::new(m.scheduler_lag.clone()),
            Box::new(m.notifications.clone()),
            Box::new(m.notification_queue.clone()),
            Box::new(m.notification_latency.clone()),
            Box::new(m.plugin_info.clone()),
            Box::new(m.store_queue_depth.clone()),
            Box::new(m.store_write_seconds.clone()),
            Box::new(m.store_batch_size.clone()),
            Box::new(m.store_rows_pruned.clone()),
            Box::new(m.store_errors.clone()),
            Box::new(m.events_dropped.clone()),
            Box::new(m.reload_ok.clone()),
            Box::new(m.reload_ts.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.http_connections.clone()),
            Box::new(m.http_rejected.clone()),
            Box::new(m.storage_up.clone()),
            Box::new(m.storage_errors.clone()),
            Box::new(build),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            r.register(c).expect("metric registered once");
        }
        m.set_overall(Overall {
            status: OverallStatus::Unknown,
            score: None,
        });
        Arc::new(m)
    }

    /// Registers a component's own agent-wide collector (the cluster's, for one); false
    /// if one of its names is taken.
    pub fn register(&self, c: Box<dyn Collector>) -> bool {
        self.registry.register(c).is_ok()
    }

    /// The text exposition, whole (tests, benches; the HTTP handler streams it).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = self.render_pieces(|piece| {
            out.push_str(piece);
            Ok(())
        });
        out
    }

    /// Applies the `[metrics]` settings (at start and on reload) to every check's series.
    pub fn set_settings(&self, c: &crate::config::MetricsConfig) {
        {
            let mut settings = self.settings.write();
            if *settings == *c {
                return; // a reload that left `[metrics]` alone: no walk over every check
            }
            *settings = c.clone();
        }
        for s in self.checks.read().values() {
            s.histogram
                .store(c.histogram_for(s.kind), Ordering::Relaxed);
        }
    }

    fn options(&self) -> families::Options {
        let c = self.settings.read();
        families::Options {
            latency_histogram: c.latency_histogram || c.kinds.values().any(|on| *on),
        }
    }

    fn chunks(&self) -> families::Chunks {
        let checks: Vec<Arc<Series>> = self.checks.read().values().cloned().collect();
        families::Chunks::new(checks, self.options())
    }

    /// The agent-wide families (the `prometheus` registry), after the per-check ones.
    fn render_agent(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The exposition as a stream of pieces of about [`families::CHUNK_BYTES`], gzipped
    /// when `gzip` is set (level 1: a Prometheus exposition still shrinks about 8×, at a
    /// fraction of the default level's CPU).
    ///
    /// Rendering and compression run on a thread of their own at a lower priority
    /// ([`background`]), never on an async worker, so a scrape of 100,000 checks does not
    /// delay probes, even when it and they want the same core. The pieces travel
    /// through a channel of two: a scrape holds at most a few pieces in memory, the
    /// renderer waits while the socket is slow, and it stops as soon as the client goes.
    pub fn render_stream(
        self: &Arc<Self>,
        gzip: bool,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send + 'static
    {
        use futures_util::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(2);
        let m = self.clone();
        background::spawn("metrics-render", move || {
            // An error here is the client gone: nothing to report.
            let _ = if gzip {
                let out = ChunkSender {
                    tx,
                    buf: Vec::with_capacity(families::CHUNK_BYTES + 4096),
                };
                let mut z = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                m.render_pieces(|piece| std::io::Write::write_all(&mut z, piece.as_bytes()))
                    .and_then(|()| z.finish())
                    .and_then(ChunkSender::close)
            } else {
                let gone = |_| std::io::Error::from(std::io::ErrorKind::BrokenPipe);
                m.render_pieces(|piece| {
                    let piece = bytes::Bytes::from(std::mem::take(piece));
                    tx.blocking_send(piece).map_err(gone)
                })
            };
        });
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>)
    }

    /// Hands the whole exposition to `emit` one piece of about [`families::CHUNK_BYTES`]
    /// at a time. `emit` may take the piece (the plain stream sends it as it is: no copy
    /// into a second buffer, which at 10,000 checks was 24 MB per scrape) or leave it
    /// (gzip reads it into the encoder): a piece left behind is cleared and written
    /// again, so the walk allocates once rather than a fresh quarter-megabyte — fresh
    /// pages to fault in — per piece.
    fn render_pieces(
        &self,
        mut emit: impl FnMut(&mut String) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut chunks = self.chunks();
        let mut piece = String::new();
        loop {
            piece.clear();
            piece.reserve(families::CHUNK_BYTES + 4096);
            if !chunks.next_into(&mut piece, families::CHUNK_BYTES) {
                break;
            }
            emit(&mut piece)?;
        }
        emit(&mut self.render_agent())
    }

    /// Creates the series of one check (replacing any of the same name).
    pub fn check(self: &Arc<Self>, s: &CheckState) -> CheckMetrics {
        let series = Arc::new(Series::new(
            &s.name,
            s.kind,
            s.mode.as_str(),
            s.mode == crate::check::Mode::Session,
            s.labels.clone(),
        ));
        series.histogram.store(
            self.settings.read().histogram_for(s.kind),
            Ordering::Relaxed,
        );
        self.checks.write().insert(s.name.clone(), series.clone());
        let cm = CheckMetrics { series };
        cm.status(s);
        cm
    }

    /// Removes every series of a check (reload removed or changed it).
    pub fn remove_check(&self, name: &str, _kind: &str) {
        self.checks.write().remove(name);
    }

    /// Overall score and status.
    pub fn set_overall(&self, o: Overall) {
        self.overall_score.set(o.score.unwrap_or(f64::NAN));
        for st in OverallStatus::ALL {
            self.overall_status
                .with_label_values(&[st.as_str()])
                .set(i64::from(st == o.status));
        }
    }

    /// A notification outcome: `result` is `sent`, `failed` or `dropped`.
    pub fn notification(&self, notifier: &str, result: NotifyResult) {
        self.notifications
            .with_label_values(&[notifier, result.as_str()])
            .inc();
    }

    /// Undelivered outbox entries of a notifier.
    pub fn notification_queue(&self, notifier: &str, depth: i64) {
        self.notification_queue
            .with_label_values(&[notifier])
            .set(depth);
    }

    /// Time from alert state change to delivery.
    pub fn notification_latency(&self, notifier: &str, d: Duration) {
        self.notification_latency
            .with_label_values(&[notifier])
            .observe(d.as_secs_f64());
    }

    /// A loaded plugin.
    pub fn plugin_loaded(&self, plugin: &str, version: &str, abi: &str) {
        self.plugin_info
            .with_label_values(&[plugin, version, abi])
            .set(1);
    }

    /// Config reload result.
    pub fn reload(&self, ok: bool) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            self.reload_ts.set(unix_now());
        }
    }
}

impl Metrics {
    /// Store `store` (`history`, `outbox`) can write again (or could from the start).
    pub fn storage_ok(&self, store: &'static str, mode: &'static str) {
        self.storage_up.with_label_values(&[store]).set(1);
        self.storage_errors.with_label_values(&[store]);
        let mut m = self.storage.lock();
        let e = m.entry(store).or_insert_with(|| StorageState {
            up: true,
            errors: 0,
            last_error: None,
            last_error_at: None,
            mode,
        });
        e.up = true;
        e.mode = mode;
    }

    /// Store `store` failed to open or write; `mode` says what it does meanwhile.
    pub fn storage_failed(&self, store: &'static str, error: &str, mode: &'static str) {
        self.storage_up.with_label_values(&[store]).set(0);
        self.storage_errors.with_label_values(&[store]).inc();
        let mut m = self.storage.lock();
        let e = m.entry(store).or_insert_with(|| StorageState {
            up: false,
            errors: 0,
            last_error: None,
            last_error_at: None,
            mode,
        });
        e.up = false;
        e.errors += 1;
        e.mode = mode;
        e.last_error = Some(crate::check::clip(&crate::secret::redact(error), 512).into_owned());
        e.last_error_at = Some(unix_now());
    }

    /// Every store's state, by store name.
    pub fn storage_report(&self) -> BTreeMap<&'static str, StorageState> {
        self.storage.lock().clone()
    }

    /// `n` notifications for `notifier` given up at once (e.g. its queue purged).
    pub fn notifications_dropped(&self, notifier: &str, n: u64) {
        if n > 0 {
            self.notifications
                .with_label_values(&[notifier, NotifyResult::Dropped.as_str()])
                .inc_by(n);
        }
    }

    /// One answered HTTP request: `route` is the matched route template.
    pub fn http_request(&self, route: &str, code: u16) {
        let mut buf = itoa::Buffer::new();
        self.http_requests
            .with_label_values(&[route, buf.format(code)])
            .inc();
    }

    /// A connection or request refused or cut.
    pub fn http_rejected(&self, reason: HttpRejected) {
        self.http_rejected
            .with_label_values(&[reason.as_str()])
            .inc();
    }
}

/// `reason` label of `lifeline_http_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRejected {
    /// `max_connections` reached: the connection was closed at once.
    ConnectionLimit,
    /// `max_streams` reached: `503`.
    StreamLimit,
    /// The request head did not arrive within `header_timeout`.
    HeaderTimeout,
    /// The TLS handshake failed or did not finish within `header_timeout`.
    TlsHandshake,
    /// The client accepted no bytes for `write_timeout`.
    WriteTimeout,
    /// Missing or wrong credentials: `401`.
    Unauthorized,
    /// A browser `Origin` that is not allowed: `403`.
    Origin,
    /// A `Host` not in `allowed_hosts`: `421`.
    Host,
    /// A form-like POST without a token: `415`.
    ContentType,
    /// A body over `max_body_bytes`: `413`.
    BodyTooLarge,
}

impl HttpRejected {
    /// Every reason (their series start at 0).
    pub const ALL: [Self; 10] = [
        Self::ConnectionLimit,
        Self::StreamLimit,
        Self::HeaderTimeout,
        Self::TlsHandshake,
        Self::WriteTimeout,
        Self::Unauthorized,
        Self::Origin,
        Self::Host,
        Self::ContentType,
        Self::BodyTooLarge,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionLimit => "connection_limit",
            Self::StreamLimit => "stream_limit",
            Self::HeaderTimeout => "header_timeout",
            Self::TlsHandshake => "tls_handshake",
            Self::WriteTimeout => "write_timeout",
            Self::Unauthorized => "unauthorized",
            Self::Origin => "origin",
            Self::Host => "host",
            Self::ContentType => "content_type",
            Self::BodyTooLarge => "body_too_large",
        }
    }
}

/// Result label of `lifeline_notifications_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyResult {
    /// Delivered.
    Sent,
    /// Delivery failed; will be retried.
    Failed,
    /// Given up (permanent failure or too old).
    Dropped,
}

impl NotifyResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

/// Unix time now, in seconds.
pub fn unix_now() -> f64 {
    crate::time::unix_secs_f64(SystemTime::now())
}

/// One check's series, bound once.
pub struct CheckMetrics {
    series: Arc<Series>,
}

impl CheckMetrics {
    /// Records one result.
    pub fn result(&self, o: &Outcome) {
        let s = &self.series;
        match &o.verdict {
            Verdict::Up | Verdict::Warn(_) => {
                s.attempts[0].fetch_add(1, Ordering::Relaxed);
                s.observe_latency(o.latency.as_secs_f64());
                s.last_success.set(unix_now());
            }
            Verdict::Down(k) => {
                let i = if *k == ErrorKind::Timeout { 2 } else { 1 };
                s.attempts[i].fetch_add(1, Ordering::Relaxed);
                let ki = ErrorKind::ALL.iter().position(|x| x == k).unwrap_or(0);
                s.rare_or_init().failures[ki].fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Unknown => {
                s.attempts[1].fetch_add(1, Ordering::Relaxed);
            }
        }
        let p = &o.phases;
        for (i, d) in [p.dns, p.connect, p.tls, p.auth, p.exchange]
            .into_iter()
            .enumerate()
        {
            if let Some(d) = d {
                s.set_phase(i, d.as_secs_f64());
            }
        }
        if let Some(t) = o.tls_not_after {
            s.rare_or_init()
                .tls_not_after
                .set(crate::time::unix_secs_f64(t));
        }
        // The latest result decides which perfdata series exist (none after a result
        // without perfdata, e.g. a timeout: a stale value is worse than a gap).
        s.set_perfdata(o.perfdata.iter().map(|x| (x.label.as_str(), x.value)));
    }

    /// Publishes status, score, consecutive failures.
    pub fn status(&self, st: &CheckState) {
        let s = &self.series;
        s.set_status(st.status);
        s.score.set(st.score.map(f64::from).unwrap_or(f64::NAN));
        s.consecutive
            .store(i64::from(st.consecutive_failures), Ordering::Relaxed);
    }

    /// A status change happened.
    pub fn changed(&self) {
        self.series.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// A lost session was re-established.
    pub fn reconnected(&self) {
        if let Some(r) = &self.series.reconnects {
            r.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Delay before the next attempt.
    pub fn backoff(&self, d: Duration) {
        self.series.backoff.set(d.as_secs_f64());
    }
}
