//! Publishing: each runner's status of each check it runs (`runners/<check>/<member>`,
//! under its lease, read by the quorum and the API), and the notifier of record's full
//! state (`state/<check>`, no lease: where the next runner starts after a failover).
//!
//! Results are noted by the observer hooks without I/O; a task writes what changed at
//! most every [`EVERY`], in transactions of [`PER_TXN`] checks. A check's keys are
//! written when its status changes, and while its failures in a row climb to
//! [`FAILURES_CAP`] (so a takeover continues the count towards `unhealthy_threshold`),
//! not on every result.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Cluster;
use super::etcd::{Op, Txn};
use super::view::{PublishedState, RunnerStatus};
use crate::app::Agent;
use crate::health::{CheckState, Status};
use crate::time::unix_ms;

/// How often changes are written.
const EVERY: Duration = Duration::from_millis(200);
/// Checks per transaction (two puts each; etcd allows 128 operations).
const PER_TXN: usize = 50;
/// Failures in a row are published up to this count.
const FAILURES_CAP: u32 = 10;

/// What was last noted per check, and what waits to be written.
#[derive(Default)]
pub(super) struct Publisher {
    noted: Mutex<HashMap<String, (Status, u32)>>,
    dirty: Mutex<HashMap<String, CheckState>>,
    wake: Notify,
}

impl Publisher {
    /// Notes a result of a check this member runs (no I/O).
    pub(super) fn note(&self, cluster: &Cluster, s: &CheckState) {
        if !cluster.assignment.read().owned.contains(&s.name) {
            return;
        }
        let key = (s.status, s.consecutive_failures.min(FAILURES_CAP));
        {
            let mut n = self.noted.lock();
            if n.get(&s.name) == Some(&key) {
                return;
            }
            n.insert(s.name.clone(), key);
        }
        self.dirty.lock().insert(s.name.clone(), s.clone());
        self.wake.notify_one();
    }

    /// Marks every check of `checks` for publishing from the agent's current states (a
    /// new lease, a new assignment).
    pub(super) fn mark_all(&self, agent: &Agent, checks: &HashSet<String>) {
        let mut d = self.dirty.lock();
        for c in checks {
            if let Some(s) = agent.states().state(c)
                && s.status != Status::Unknown
            {
                d.insert(c.clone(), s);
            }
        }
        drop(d);
        self.wake.notify_one();
    }

    /// The check moved away: nothing more is published for it.
    pub(super) fn forget(&self, check: &str) {
        self.noted.lock().remove(check);
        self.dirty.lock().remove(check);
    }
}

impl Cluster {
    /// Writes noted changes until the agent stops.
    pub(super) async fn publish_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.publish.wake.notified() => {}
                _ = self.cancel.cancelled() => return,
            }
            tokio::time::sleep(EVERY).await;
            let batch: Vec<CheckState> =
                self.publish.dirty.lock().drain().map(|(_, s)| s).collect();
            let lease = self.lease.load(Ordering::Acquire);
            if batch.is_empty() {
                continue;
            }
            if lease == 0 {
                self.requeue(batch);
                continue;
            }
            for chunk in batch.chunks(PER_TXN) {
                let ops = self.ops(chunk, lease);
                let t = Txn {
                    compare: Vec::new(),
                    success: ops,
                    failure: Vec::new(),
                };
                if let Err(e) = self.etcd.txn(&t).await {
                    tracing::debug!(error = %e, checks = chunk.len(), "cannot publish check states yet");
                    self.requeue(chunk.to_vec());
                }
            }
        }
    }

    /// Puts a batch back (newer notes win) and retries it later.
    fn requeue(&self, batch: Vec<CheckState>) {
        let mut d = self.publish.dirty.lock();
        for s in batch {
            d.entry(s.name.clone()).or_insert(s);
        }
        drop(d);
        self.publish.wake.notify_one();
    }

    fn ops(&self, states: &[CheckState], lease: i64) -> Vec<Op> {
        let a = self.assignment.read();
        let mut ops = Vec::with_capacity(states.len() * 2);
        let now = super::now_ms();
        for s in states {
            if !a.owned.contains(&s.name) {
                continue;
            }
            let r = RunnerStatus {
                status: s.status.as_str().to_string(),
                location: self.cfg.location.clone(),
                since_ms: s.since.map(unix_ms),
                at_ms: now,
                failures: s.consecutive_failures,
                error_kind: s.error_kind.map(|k| k.as_str().to_string()),
            };
            ops.push(Op::Put {
                key: self.keys.runner(&s.name, &self.cfg.member),
                value: serde_json::to_vec(&r).unwrap_or_default(),
                lease: Some(lease),
            });
            if a.notifier.contains(&s.name) {
                let p = PublishedState {
                    status: s.status.as_str().to_string(),
                    consecutive_failures: s.consecutive_failures,
                    since_ms: s.since.map(unix_ms),
                    last_success_ms: s.last_success_at.map(unix_ms),
                    error_kind: s.error_kind.map(|k| k.as_str().to_string()),
                    message: crate::secret::redact(&s.message),
                    member: self.cfg.member.clone(),
                    at_ms: now,
                };
                ops.push(Op::Put {
                    key: self.keys.state(&s.name),
                    value: serde_json::to_vec(&p).unwrap_or_default(),
                    lease: None,
                });
            }
        }
        ops
    }
}
