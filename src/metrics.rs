//! Prometheus metrics (SPEC §6) behind typed methods: label strings live in this file only.
//!
//! Per-check series are bound once per check into a [`CheckMetrics`] (so the hot path does
//! no label hashing) and removed when the check is removed by a reload.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge as PGauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::check::{ErrorKind, Outcome, Verdict};
use crate::health::{CheckState, Overall, OverallStatus, Status};

/// Latency buckets (seconds): 1 ms … 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    up: IntGaugeVec,
    status: IntGaugeVec,
    score: GaugeVec,
    latency: HistogramVec,
    attempts: IntCounterVec,
    failures: IntCounterVec,
    consecutive_failures: IntGaugeVec,
    backoff: GaugeVec,
    last_success: GaugeVec,
    state_changes: IntCounterVec,
    reconnects: IntCounterVec,
    perfdata: GaugeVec,
    phase: GaugeVec,
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
    info: Arc<InfoCollector>,
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
        let gv = |n: &str, h: &str, l: &[&str]| GaugeVec::new(opts(n, h), l).expect("valid metric");
        let ck = &["check", "kind"];
        let m = Self {
            up: igv(
                "lifeline_check_up",
                "1 if the check is healthy or degraded, 0 otherwise.",
                ck,
            ),
            status: igv(
                "lifeline_check_status",
                "1 for the check's current status, 0 for the other five.",
                &["check", "kind", "status"],
            ),
            score: gv(
                "lifeline_check_score",
                "Health score of the check, 0-100.",
                ck,
            ),
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "lifeline_check_latency_seconds",
                    "Duration of each successful attempt or heartbeat round trip.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                ck,
            )
            .expect("valid metric"),
            attempts: cv(
                "lifeline_check_attempts_total",
                "Attempts by result (success, failure, timeout).",
                &["check", "kind", "result"],
            ),
            failures: cv(
                "lifeline_check_failures_total",
                "Failed attempts by error kind.",
                &["check", "kind", "error_kind"],
            ),
            consecutive_failures: igv(
                "lifeline_check_consecutive_failures",
                "Failures in a row.",
                ck,
            ),
            backoff: gv(
                "lifeline_check_backoff_seconds",
                "Delay before the next attempt.",
                ck,
            ),
            last_success: gv(
                "lifeline_check_last_success_timestamp_seconds",
                "Unix time of the last success.",
                ck,
            ),
            state_changes: cv("lifeline_check_state_changes_total", "Status changes.", ck),
            reconnects: cv(
                "lifeline_session_reconnects_total",
                "Sessions re-established after being lost.",
                ck,
            ),
            perfdata: gv(
                "lifeline_check_perfdata",
                "Values reported by the check (exec/plugin perfdata, SIP status code), base units.",
                &["check", "kind", "label"],
            ),
            phase: gv(
                "lifeline_check_phase_seconds",
                "Time per phase of the last attempt.",
                &["check", "kind", "phase"],
            ),
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
            info: Arc::new(InfoCollector::default()),
            registry,
        };
        let build = igv("lifeline_build_info", "Build information.", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let r = &m.registry;
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(m.up.clone()),
            Box::new(m.status.clone()),
            Box::new(m.score.clone()),
            Box::new(m.latency.clone()),
            Box::new(m.attempts.clone()),
            Box::new(m.failures.clone()),
            Box::new(m.consecutive_failures.clone()),
            Box::new(m.backoff.clone()),
            Box::new(m.last_success.clone()),
            Box::new(m.state_changes.clone()),
            Box::new(m.reconnects.clone()),
            Box::new(m.perfdata.clone()),
            Box::new(m.phase.clone()),
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
            Box::new(build),
            Box::new(InfoHandle(m.info.clone())),
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

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(64 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Binds the per-check series of one check and publishes its info row.
    pub fn check(self: &Arc<Self>, s: &CheckState) -> CheckMetrics {
        let l = [s.name.as_str(), s.kind];
        let mut info = self.info.rows.write();
        info.insert(
            s.name.clone(),
            InfoRow {
                kind: s.kind,
                mode: s.mode.as_str(),
                labels: s.labels.clone(),
            },
        );
        drop(info);
        let cm = CheckMetrics {
            name: s.name.clone(),
            kind: s.kind,
            up: self.up.with_label_values(&l),
            status: Status::ALL.map(|st| self.status.with_label_values(&[l[0], l[1], st.as_str()])),
            score: self.score.with_label_values(&l),
            latency: self.latency.with_label_values(&l),
            ok: self.attempts.with_label_values(&[l[0], l[1], "success"]),
            fail: self.attempts.with_label_values(&[l[0], l[1], "failure"]),
            timeout: self.attempts.with_label_values(&[l[0], l[1], "timeout"]),
            consecutive: self.consecutive_failures.with_label_values(&l),
            backoff: self.backoff.with_label_values(&l),
            last_success: self.last_success.with_label_values(&l),
            changes: self.state_changes.with_label_values(&l),
            phases: Default::default(),
            reconnects: (s.mode == crate::check::Mode::Session)
                .then(|| self.reconnects.with_label_values(&l)),
            root: self.clone(),
        };
        cm.status(s);
        cm
    }

    /// Removes every series of a check (reload removed or changed it).
    pub fn remove_check(&self, name: &str, kind: &str) {
        let l = [name, kind];
        let _ = self.up.remove_label_values(&l);
        for st in Status::ALL {
            let _ = self.status.remove_label_values(&[name, kind, st.as_str()]);
        }
        let _ = self.score.remove_label_values(&l);
        let _ = self.latency.remove_label_values(&l);
        for r in ["success", "failure", "timeout"] {
            let _ = self.attempts.remove_label_values(&[name, kind, r]);
        }
        for k in ErrorKind::ALL {
            let _ = self.failures.remove_label_values(&[name, kind, k.as_str()]);
        }
        let _ = self.consecutive_failures.remove_label_values(&l);
        let _ = self.backoff.remove_label_values(&l);
        let _ = self.last_success.remove_label_values(&l);
        let _ = self.state_changes.remove_label_values(&l);
        let _ = self.reconnects.remove_label_values(&l);
        for p in ["dns", "connect", "tls", "auth", "exchange"] {
            let _ = self.phase.remove_label_values(&[name, kind, p]);
        }
        let mut info = self.info.rows.write();
        if let Some(row) = info.remove(name) {
            drop(info);
            let _ = row;
        }
        // Perfdata labels are open-ended: remove whatever this check reported.
        let families = self.perfdata.collect();
        for f in families {
            for m in f.get_metric() {
                let labels: BTreeMap<&str, &str> = m
                    .get_label()
                    .iter()
                    .map(|p| (p.name(), p.value()))
                    .collect();
                if labels.get("check") == Some(&name)
                    && let Some(label) = labels.get("label")
                {
                    let _ = self.perfdata.remove_label_values(&[name, kind, label]);
                }
            }
        }
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One check's series, bound once.
pub struct CheckMetrics {
    name: String,
    kind: &'static str,
    up: IntGauge,
    status: [IntGauge; 6],
    score: Gauge,
    latency: Histogram,
    ok: IntCounter,
    fail: IntCounter,
    timeout: IntCounter,
    consecutive: IntGauge,
    backoff: Gauge,
    last_success: Gauge,
    changes: IntCounter,
    /// Bound on first use, so phases a kind never measures export no series.
    phases: [std::sync::OnceLock<Gauge>; 5],
    reconnects: Option<IntCounter>,
    root: Arc<Metrics>,
}

impl CheckMetrics {
    /// Records one result.
    pub fn result(&self, o: &Outcome) {
        match &o.verdict {
            Verdict::Up | Verdict::Warn(_) => {
                self.ok.inc();
                self.latency.observe(o.latency.as_secs_f64());
                self.last_success.set(unix_now());
            }
            Verdict::Down(k) => {
                if *k == ErrorKind::Timeout {
                    self.timeout.inc();
                } else {
                    self.fail.inc();
                }
                self.root
                    .failures
                    .with_label_values(&[&self.name, self.kind, k.as_str()])
                    .inc();
            }
            Verdict::Unknown => self.fail.inc(),
        }
        let p = &o.phases;
        let measured = [p.dns, p.connect, p.tls, p.auth, p.exchange];
        for (i, name) in ["dns", "connect", "tls", "auth", "exchange"].iter().enumerate() {
            if let Some(d) = measured[i] {
                self.phases[i]
                    .get_or_init(|| {
                        self.root
                            .phase
                            .with_label_values(&[&self.name, self.kind, name])
                    })
                    .set(d.as_secs_f64());
            }
        }
        for p in &o.perfdata {
            self.root
                .perfdata
                .with_label_values(&[&self.name, self.kind, &p.label])
                .set(p.value);
        }
    }

    /// Publishes status, score, consecutive failures.
    pub fn status(&self, s: &CheckState) {
        self.up.set(i64::from(s.status.is_up()));
        for (g, st) in self.status.iter().zip(Status::ALL) {
            g.set(i64::from(st == s.status));
        }
        self.score.set(s.score.map(f64::from).unwrap_or(f64::NAN));
        self.consecutive.set(i64::from(s.consecutive_failures));
    }

    /// A status change happened.
    pub fn changed(&self) {
        self.changes.inc();
    }

    /// A lost session was re-established.
    pub fn reconnected(&self) {
        if let Some(r) = &self.reconnects {
            r.inc();
        }
    }

    /// Delay before the next attempt.
    pub fn backoff(&self, d: Duration) {
        self.backoff.set(d.as_secs_f64());
    }
}

#[derive(Default)]
struct InfoCollector {
    rows: RwLock<BTreeMap<String, InfoRow>>,
}

struct InfoRow {
    kind: &'static str,
    mode: &'static str,
    labels: BTreeMap<String, String>,
}

struct InfoHandle(Arc<InfoCollector>);

static INFO_DESC: std::sync::LazyLock<Vec<Desc>> = std::sync::LazyLock::new(|| {
    vec![
        Desc::new(
            "lifeline_check_info".into(),
            "Static facts about each check; its labels are the check's own labels.".into(),
            vec![],
            Default::default(),
        )
        .expect("valid desc"),
    ]
});

impl Collector for InfoHandle {
    fn desc(&self) -> Vec<&Desc> {
        INFO_DESC.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let rows = self.0.rows.read();
        let mut fam = MetricFamily::default();
        fam.set_name("lifeline_check_info".into());
        fam.set_help(
            "Static facts about each check; its labels are the check's own labels.".into(),
        );
        fam.set_field_type(MetricType::GAUGE);
        let pair = |n: &str, v: &str| {
            let mut p = LabelPair::default();
            p.set_name(n.to_string());
            p.set_value(v.to_string());
            p
        };
        let metrics = rows
            .iter()
            .map(|(name, r)| {
                let mut m = Metric::default();
                let mut labels = vec![
                    pair("check", name),
                    pair("kind", r.kind),
                    pair("mode", r.mode),
                ];
                labels.extend(r.labels.iter().map(|(k, v)| pair(k, v)));
                labels.sort_by(|a, b| a.name().cmp(b.name()));
                m.set_label(labels);
                let mut g = PGauge::default();
                g.set_value(1.0);
                m.set_gauge(g);
                m
            })
            .collect();
        fam.set_metric(metrics);
        if rows.is_empty() {
            return Vec::new();
        }
        vec![fam]
    }
}
