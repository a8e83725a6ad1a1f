//! Clustering on etcd (`[cluster]`): several agents share the checks of one config, each
//! check runs on `replicas` live members per location, pages go out once, from the
//! check's notifier of record, and a member that loses etcd stops paging.
//!
//! ```text
//!  session.rs   lease grant / keep-alive, member key, fencing (connected or not)
//!  watch.rs     members/ and runners/ watched (never polled) into the View
//!  rebalance    View + placements ─► Assignment (rendezvous.rs) ─► Agent::apply,
//!               state restored from state/<check>, alerts adopted from ledger/
//!  publish.rs   Observer: runners/<check>/<member> (leased) and state/<check>
//!  ledger.rs    alert::gate::Gate: notifier of record, quorum, claims and the
//!               delivery record, so a transition is paged once across failovers
//!  report.rs    GET /api/v1/cluster and `lifeline cluster status`
//! ```
//!
//! Keys under `prefix` (default `/lifeline/`):
//!
//! | key | lease | written by |
//! |---|---|---|
//! | `members/<member>` | member's | the member, while it lives |
//! | `runners/<check>/<member>` | member's | each runner: its status of the check |
//! | `state/<check>` | none | the notifier of record: where the next runner starts |
//! | `ledger/<route>/<check>/<notifier>` | none | the sender, after a delivery |
//! | `claims/<route>/<check>/<notifier>` | sender's | the sender, while it sends |

pub mod config;
pub mod etcd;
mod ledger;
mod publish;
pub mod rendezvous;
pub mod report;
mod session;
pub mod view;
mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{ClusterConfig, Placement};

use crate::alert::AlertEngine;
use crate::app::Agent;
use crate::config::Config;
use crate::metrics::Metrics;
use etcd::{Etcd, EtcdOptions};
use view::{Assignment, PublishedState, View};

/// Percent-escapes `/` and `%` so a name is one key segment.
fn segment(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

/// The inverse of [`segment`].
fn unsegment(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

/// Key layout under the prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (ends with `/`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    /// `members/`.
    pub fn members(&self) -> String {
        format!("{}members/", self.prefix)
    }
    /// `members/<m>`.
    pub fn member(&self, m: &str) -> String {
        format!("{}members/{}", self.prefix, segment(m))
    }
    /// `runners/`.
    pub fn runners(&self) -> String {
        format!("{}runners/", self.prefix)
    }
    /// `runners/<check>/<member>`.
    pub fn runner(&self, check: &str, m: &str) -> String {
        format!("{}runners/{}/{}", self.prefix, segment(check), segment(m))
    }
    /// (check, member) of a `runners/` key.
    pub fn parse_runner(&self, key: &str) -> Option<(String, String)> {
        let rest = key.strip_prefix(&self.runners())?;
        let (c, m) = rest.split_once('/')?;
        Some((unsegment(c), unsegment(m)))
    }
    /// `state/`.
    pub fn states(&self) -> String {
        format!("{}state/", self.prefix)
    }
    /// `state/<check>`.
    pub fn state(&self, check: &str) -> String {
        format!("{}state/{}", self.prefix, segment(check))
    }
    /// `ledger/`.
    pub fn ledgers(&self) -> String {
        format!("{}ledger/", self.prefix)
    }
    /// `ledger/<route>/<check>/<notifier>`.
    pub fn ledger(&self, route: &str, check: &str, notifier: &str) -> String {
        format!(
            "{}ledger/{}/{}/{}",
            self.prefix,
            segment(route),
            segment(check),
            segment(notifier)
        )
    }
    /// (route, check, notifier) of a `ledger/` key.
    pub fn parse_ledger(&self, key: &str) -> Option<(String, String, String)> {
        let rest = key.strip_prefix(&self.ledgers())?;
        let mut it = rest.splitn(3, '/');
        let (r, c, n) = (it.next()?, it.next()?, it.next()?);
        Some((unsegment(r), unsegment(c), unsegment(n)))
    }
    /// `claims/<route>/<check>/<notifier>`.
    pub fn claim(&self, route: &str, check: &str, notifier: &str) -> String {
        format!(
            "{}claims/{}/{}/{}",
            self.prefix,
            segment(route),
            segment(check),
            segment(notifier)
        )
    }
}

/// The cluster's own series.
struct ClusterMetrics {
    members: IntGauge,
    connected: IntGauge,
    owned: IntGauge,
    rebalances: IntCounter,
}

impl ClusterMetrics {
    fn new(metrics: &Metrics, cfg: &ClusterConfig) -> Self {
        let g = |n: &str, h: &str| IntGauge::with_opts(Opts::new(n, h)).expect("valid metric");
        let m = Self {
            members: g(
                "lifeline_cluster_members",
                "Live members of the cluster, as this member sees them.",
            ),
            connected: g(
                "lifeline_cluster_connected",
                "1 while this member holds its etcd lease (it may notify), 0 when fenced.",
            ),
            owned: g("lifeline_cluster_owned_checks", "Checks this member runs."),
            rebalances: IntCounter::with_opts(Opts::new(
                "lifeline_cluster_rebalances_total",
                "Times the set of checks this member runs changed.",
            ))
            .expect("valid metric"),
        };
        let info = IntGaugeVec::new(
            Opts::new("lifeline_agent_info", "This agent's cluster identity."),
            &["member", "location"],
        )
        .expect("valid metric");
        info.with_label_values(&[&cfg.member, &cfg.location]).set(1);
        for c in [
            Box::new(m.members.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.connected.clone()),
            Box::new(m.owned.clone()),
            Box::new(m.rebalances.clone()),
            Box::new(info),
        ] {
            if !metrics.register(c) {
                tracing::debug!("cluster metric already registered");
            }
        }
        m
    }
}

/// What the cluster reads of the running config.
#[derive(Debug, Default, Clone)]
struct ConfigView {
    /// Check → placement, in config order.
    placements: Vec<(String, Placement)>,
    /// Quorum per check (only those above 1).
    quorum: HashMap<String, u32>,
    /// Route → repeat_interval.
    repeat: HashMap<String, Duration>,
    /// The agent's listen address.
    listen: String,
}

impl ConfigView {
    fn of(c: &Config) -> Self {
        Self {
            placements: c
                .checks
                .iter()
                .filter(|k| c.agent.shard.is_none_or(|s| s.owns(&k.name)))
                .map(|k| (k.name.clone(), k.placement.clone()))
                .collect(),
            quorum: c
                .checks
                .iter()
                .filter(|k| k.placement.quorum > 1)
                .map(|k| (k.name.clone(), k.placement.quorum))
                .collect(),
            repeat: c
                .alerting
                .routes
                .iter()
                .map(|r| (r.name.clone(), r.repeat_interval))
                .collect(),
            listen: c.agent.listen.to_string(),
        }
    }
}

/// One member of a cluster: membership, assignment, publishing and the alerting gate.
pub struct Cluster {
    cfg: ClusterConfig,
    /// Listings, watches, publishing and the gate.
    etcd: Etcd,
    /// The lease and the member key, with the shorter [`ClusterConfig::request_timeout`].
    lease_etcd: Etcd,
    keys: Keys,
    metrics: ClusterMetrics,
    config: RwLock<ConfigView>,
    view: RwLock<View>,
    assignment: RwLock<Assignment>,
    /// The lease this member holds (0: none).
    lease: AtomicI64,
    /// When etcd last confirmed the lease.
    last_ok: Mutex<Option<Instant>>,
    /// Last value of [`Cluster::connected`] the fence watch reported.
    reported_connected: AtomicBool,
    /// The members watch has delivered a full listing.
    have_view: AtomicBool,
    /// An assignment was applied at least once.
    assigned: AtomicBool,
    rebalance_wake: Notify,
    publish: publish::Publisher,
    agent: OnceLock<Arc<Agent>>,
    engine: OnceLock<Arc<AlertEngine>>,
    /// Engine wake-ups asked for by runner-status changes (coalesced).
    engine_wake: AtomicBool,
    joined_ms: AtomicI64,
    cancel: CancellationToken,
}

impl Cluster {
    /// A member for `config` (which has `[cluster]`); nothing runs until
    /// [`Cluster::start`]. Fails only on an unusable etcd endpoint or TLS file.
    pub fn new(config: &Config, metrics: &Metrics) -> Result<Arc<Self>, etcd::EtcdError> {
        let cfg = config
            .cluster
            .clone()
            .ok_or_else(|| etcd::EtcdError::Config("no [cluster] section".into()))?;
        let etcd = Etcd::new(&options(&cfg))?;
        let lease_etcd = Etcd::new(&EtcdOptions {
            request_timeout: cfg.request_timeout(),
            ..options(&cfg)
        })?;
        Ok(Arc::new(Self {
            keys: Keys::new(&cfg.prefix),
            metrics: ClusterMetrics::new(metrics, &cfg),
            config: RwLock::new(ConfigView::of(config)),
            view: RwLock::new(View::default()),
            assignment: RwLock::new(Assignment::default()),
            lease: AtomicI64::new(0),
            last_ok: Mutex::new(None),
            reported_connected: AtomicBool::new(false),
            have_view: AtomicBool::new(false),
            assigned: AtomicBool::new(false),
            rebalance_wake: Notify::new(),
            publish: publish::Publisher::default(),
            agent: OnceLock::new(),
            engine: OnceLock::new(),
            engine_wake: AtomicBool::new(false),
            joined_ms: AtomicI64::new(0),
            cancel: CancellationToken::new(),
            etcd,
            lease_etcd,
            cfg,
        }))
    }

    /// Starts membership, the watches, rebalancing and publishing for `agent` (whose
    /// placement this member now decides) and `engine` (adopts and releases alerts).
    pub fn start(self: &Arc<Self>, agent: Arc<Agent>, engine: Arc<AlertEngine>) {
        agent.set_placement(Arc::new(Runs(self.clone())));
        let _ = self.agent.set(agent);
        let _ = self.engine.set(engine);
        tracing::info!(member = %self.cfg.member, location = %self.cfg.location,
            etcd = %self.cfg.etcd.join(","), "joining the cluster");
        tokio::spawn(self.clone().session());
        tokio::spawn(self.clone().fence_watch());
        tokio::spawn(self.clone().watch_members());
        tokio::spawn(self.clone().watch_runners());
        tokio::spawn(self.clone().rebalance_loop());
        tokio::spawn(self.clone().publish_loop());
        tokio::spawn(self.clone().engine_waker());
    }

    /// Leaves the cluster: the lease is revoked so the other members take over at once.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let lease = self.lease.swap(0, Ordering::AcqRel);
        if lease != 0 {
            match tokio::time::timeout(self.cfg.request_timeout(), self.lease_etcd.revoke(lease))
                .await
            {
                Ok(Ok(())) => tracing::info!(member = %self.cfg.member, "left the cluster"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not revoke the cluster lease; it expires by itself")
                }
                Err(_) => {
                    tracing::warn!("revoking the cluster lease timed out; it expires by itself")
                }
            }
        }
    }

    /// This member's config.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// Whether this member holds a lease etcd confirmed within `lease_ttl`: only then
    /// may it notify.
    pub fn connected(&self) -> bool {
        self.lease.load(Ordering::Acquire) != 0
            && self
                .last_ok
                .lock()
                .is_some_and(|t| t.elapsed() < self.cfg.lease_ttl)
    }

    /// Checks this member runs now.
    pub fn owned(&self) -> HashSet<String> {
        self.assignment.read().owned.clone()
    }

    /// A consistent copy of what this member knows (for the API).
    pub fn report(&self) -> report::Report {
        let view = self.view.read().clone();
        let a = self.assignment.read().clone();
        let role = if !self.connected() {
            report::Role::Fenced
        } else if !view.members.contains_key(&self.cfg.member) {
            report::Role::Joining
        } else {
            report::Role::Member
        };
        let lease = self.lease.load(Ordering::Acquire);
        let quorum = self.config.read().quorum.clone();
        let q = |c: &str| quorum.get(c).copied().unwrap_or(1);
        report::Report::build(
            &self.cfg,
            &view,
            &a,
            role,
            lease,
            self.joined_ms.load(Ordering::Relaxed),
            &q,
        )
    }

    fn set_view_members(&self) {
        let n = self.view.read().members.len();
        self.metrics.members.set(n as i64);
    }

    /// Recomputes the assignment and applies it (runs in the rebalance task only).
    async fn rebalance(&self) -> Result<(), etcd::EtcdError> {
        let (Some(agent), Some(engine)) = (self.agent.get(), self.engine.get()) else {
            return Ok(());
        };
        let view = self.view.read().clone();
        if !self.have_view.load(Ordering::Acquire) || !view.members.contains_key(&self.cfg.member) {
            // Not (yet, or no longer) a member as etcd sees it: keep what runs.
            return Ok(());
        }
        let cv = self.config.read().clone();
        let new = Assignment::compute(
            &view,
            cv.placements.iter().map(|(n, p)| (n.as_str(), p)),
            self.cfg.replicas,
            &self.cfg.member,
        );
        let old = self.assignment.read().clone();
        if new == old {
            return Ok(());
        }
        let gained: Vec<String> = new.owned.difference(&old.owned).cloned().collect();
        let released: Vec<String> = old.owned.difference(&new.owned).cloned().collect();
        let first = !self.assigned.load(Ordering::Acquire);
        // Alerts the outbox restored at start for checks that now run elsewhere are
        // not this member's to repeat or resolve.
        let stale: Vec<String> = if first {
            cv.placements
                .iter()
                .map(|(n, _)| n.clone())
                .filter(|n| !new.owned.contains(n))
                .collect()
        } else {
            Vec::new()
        };
        let to_notify: Vec<String> = new
            .notifier
            .iter()
            .filter(|c| !old.notifier.contains(*c) && old.owned.contains(*c))
            .cloned()
            .collect();
        let adopt: HashSet<String> = gained.iter().chain(&to_notify).cloned().collect();
        // What the previous runners left: read before anything changes, so a failed
        // read changes nothing (the next wake-up tries again).
        let told = if adopt.is_empty() {
            HashMap::new()
        } else {
            ledger::told(&self.etcd, &self.keys, &adopt).await?
        };
        let states = if gained.is_empty() {
            Vec::new()
        } else {
            let set: HashSet<String> = gained.iter().cloned().collect();
            self.published_states(&set).await?
        };
        let owned_changed = new.owned != old.owned;
        *self.assignment.write() = new.clone();
        self.assigned.store(true, Ordering::Release);
        for c in released.iter().chain(&stale) {
            engine.release(c);
            self.publish.forget(c);
        }
        for c in &adopt {
            engine.adopt(c, told.get(c).cloned().unwrap_or_default());
        }
        if owned_changed {
            agent.restore(states);
            agent.apply().await;
            self.metrics.rebalances.inc();
            self.metrics.owned.set(new.owned.len() as i64);
            tracing::info!(member = %self.cfg.member, runs = new.owned.len(), gained = gained.len(),
                released = released.len(), notifier_of = new.notifier.len(), members = view.members.len(),
                "cluster assignment changed");
            if !released.is_empty() {
                self.unpublish(&released).await;
            }
        } else {
            tracing::debug!(notifier_of = new.notifier.len(), "notifier roles changed");
        }
        // Checks that arrived publish on their first result (nothing was noted for them);
        // one that was already running and became this member's to notify for publishes
        // its `state/` now, from its current state.
        let promoted: HashSet<String> = to_notify.into_iter().collect();
        self.publish.mark_all(agent, &promoted);
        Ok(())
    }

    async fn rebalance_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.rebalance_wake.notified() => {}
                _ = self.cancel.cancelled() => return,
            }
            // Take a burst of membership events as one change.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Err(e) = self.rebalance().await {
                tracing::warn!(error = %e, "cannot rebalance now; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.rebalance_wake.notify_one();
            }
        }
    }

    /// The states runners published for the checks `want` picks.
    async fn published_states(
        &self,
        want: &HashSet<String>,
    ) -> Result<Vec<crate::health::Restored>, etcd::EtcdError> {
        let (kvs, _) = self.etcd.range_prefix(&self.keys.states()).await?;
        let mut out = Vec::new();
        for kv in kvs {
            let Some(check) = kv.key.strip_prefix(&self.keys.states()).map(unsegment) else {
                continue;
            };
            if !want.contains(&check) {
                continue;
            }
            let Ok(p) = serde_json::from_slice::<PublishedState>(&kv.value) else {
                tracing::warn!(key = %kv.key, "unreadable published state; starting from unknown");
                continue;
            };
            let Some(status) = crate::health::Status::parse(&p.status) else {
                continue;
            };
            let at = |ms: Option<i64>| {
                ms.map(|m| SystemTime::UNIX_EPOCH + Duration::from_millis(m.max(0) as u64))
            };
            out.push(crate::health::Restored {
                name: check,
                status,
                consecutive_failures: p.consecutive_failures,
                last_success_at: at(p.last_success_ms),
                since: at(p.since_ms),
                error_kind: p
                    .error_kind
                    .as_deref()
                    .and_then(crate::check::ErrorKind::parse),
                message: p.message,
            });
        }
        Ok(out)
    }

    /// Removes this member's runner statuses of checks it no longer runs.
    async fn unpublish(&self, checks: &[String]) {
        for c in checks {
            let key = self.keys.runner(c, &self.cfg.member);
            if let Err(e) = self.etcd.delete(&key).await {
                tracing::debug!(error = %e, key = %key, "cannot remove a runner status (it expires with the lease)");
            }
        }
    }

    /// Coalesces engine wake-ups from runner-status changes to at most 10 a second.
    async fn engine_waker(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.cancel.cancelled() => return,
            }
            if self.engine_wake.swap(false, Ordering::AcqRel)
                && let Some(e) = self.engine.get()
            {
                e.wake();
            }
        }
    }

    /// Whether `check`'s failure is seen by its quorum of runners.
    fn quorum_met(&self, check: &str) -> bool {
        let q = match self.config.read().quorum.get(check) {
            Some(&q) => q as usize,
            None => return true,
        };
        let runners = self
            .assignment
            .read()
            .runners
            .get(check)
            .cloned()
            .unwrap_or_default();
        let view = self.view.read();
        let statuses = view.runners.get(check);
        let mut failing = 0;
        for r in &runners {
            let f = if r == &self.cfg.member {
                self.agent
                    .get()
                    .and_then(|a| a.states().get(check))
                    .is_some_and(|e| e.state.lock().status.is_failing())
            } else {
                statuses.and_then(|s| s.get(r)).is_some_and(|s| s.failing())
            };
            failing += usize::from(f);
        }
        failing >= q
    }
}

/// The agent-side view of the assignment.
struct Runs(Arc<Cluster>);

impl crate::app::Placement for Runs {
    fn runs(&self, check: &str) -> bool {
        self.0.assignment.read().owned.contains(check)
    }
}

impl crate::events::Observer for Cluster {
    fn on_result(&self, state: &crate::health::CheckState, _outcome: &crate::check::Outcome) {
        self.publish.note(self, state);
    }

    fn on_change(&self, state: &crate::health::CheckState, _change: crate::health::Change) {
        self.publish.note(self, state);
    }

    fn on_reload(&self, config: &Config) {
        *self.config.write() = ConfigView::of(config);
        self.rebalance_wake.notify_one();
    }
}

/// The etcd client options of `cfg`.
pub fn options(cfg: &ClusterConfig) -> EtcdOptions {
    EtcdOptions {
        endpoints: cfg.etcd.clone(),
        username: cfg.username.clone(),
        password: cfg.password.clone(),
        ca_file: cfg.ca_file.clone(),
        cert_file: cfg.cert_file.clone(),
        key_file: cfg.key_file.clone(),
        request_timeout: cfg.call_timeout(),
    }
}

/// Unix ms now.
fn now_ms() -> i64 {
    crate::time::unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_odd_names() {
        let k = Keys::new("/lf/");
        let key = k.ledger("a/b%", "db", "slack");
        assert_eq!(
            k.parse_ledger(&key),
            Some(("a/b%".into(), "db".into(), "slack".into()))
        );
        let r = k.runner("db", "agent-1");
        assert_eq!(k.parse_runner(&r), Some(("db".into(), "agent-1".into())));
    }
}
