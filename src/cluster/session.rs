//! Membership: a lease, the member key under it, keep-alives, and fencing.
//!
//! The member key is written under a fresh lease and kept alive every third of
//! `lease_ttl`. A member whose lease etcd has not confirmed for `lease_ttl` is *fenced*:
//! its lease may have expired and another member may own its checks, so it notifies
//! nobody ([`super::Cluster::connected`] is false) but keeps checking and exporting.
//! A lease etcd says is gone is replaced by a new one and the member registers again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::Cluster;
use super::view::MemberInfo;

impl Cluster {
    /// Holds a lease and the member key for as long as the agent runs.
    pub(super) async fn session(self: Arc<Self>) {
        let ttl = self.cfg.lease_ttl;
        let mut retry = Duration::from_millis(200);
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            match self.register().await {
                Ok(lease) => {
                    retry = Duration::from_millis(200);
                    self.keep_alive(lease).await;
                    if self.cancel.is_cancelled() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot join the cluster yet");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = self.cancel.cancelled() => return,
                    }
                    retry = (retry * 2).min(ttl / 2);
                }
            }
        }
    }

    /// Grants a lease and writes the member key under it.
    async fn register(&self) -> Result<i64, super::etcd::EtcdError> {
        let lease = self.lease_etcd.grant(self.cfg.lease_ttl).await?;
        let since = super::now_ms();
        let info = MemberInfo {
            name: self.cfg.member.clone(),
            location: self.cfg.location.clone(),
            since_ms: since,
            lease: format!("{lease:x}"),
            listen: self.config.read().listen.clone(),
        };
        let body = serde_json::to_vec(&info).unwrap_or_default();
        if let Err(e) = self
            .lease_etcd
            .put(&self.keys.member(&self.cfg.member), &body, Some(lease))
            .await
        {
            let _ = self.lease_etcd.revoke(lease).await;
            return Err(e);
        }
        *self.last_ok.lock() = Some(Instant::now());
        self.lease.store(lease, Ordering::Release);
        self.joined_ms.store(since, Ordering::Relaxed);
        tracing::info!(member = %self.cfg.member, lease = %format!("{lease:x}"), endpoint = %self.lease_etcd.endpoint(),
            "registered in the cluster");
        // Runner statuses lived under the old lease: publish them again under this one.
        if let Some(agent) = self.agent.get() {
            let owned = self.assignment.read().owned.clone();
            self.publish.mark_all(agent, &owned);
        }
        self.rebalance_wake.notify_one();
        Ok(lease)
    }

    /// Keeps `lease` alive until etcd says it is gone (or the agent stops).
    async fn keep_alive(&self, lease: i64) {
        let ttl = self.cfg.lease_ttl;
        let every = ttl / 3;
        let mut wait = every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.cancel.cancelled() => return,
            }
            match self.lease_etcd.keep_alive(lease).await {
                Ok(Some(_)) => {
                    *self.last_ok.lock() = Some(Instant::now());
                    wait = every;
                }
                Ok(None) => {
                    self.lease.store(0, Ordering::Release);
                    self.report_fence();
                    tracing::warn!(member = %self.cfg.member, lease = %format!("{lease:x}"),
                        "the cluster lease expired; registering again");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cluster keep-alive failed");
                    // Try more often while the lease may still be saved.
                    wait = every / 2;
                }
            }
        }
    }

    /// Reports every change of [`Cluster::connected`] until the agent stops.
    pub(super) async fn fence_watch(self: Arc<Self>) {
        loop {
            self.report_fence();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.cancel.cancelled() => return,
            }
        }
    }

    /// Reports a change of [`Cluster::connected`]: the metric, and a log line at `error`
    /// when fenced, `info` when back.
    pub(super) fn report_fence(&self) {
        let now = self.connected();
        let was = self.reported_connected.swap(now, Ordering::AcqRel);
        self.metrics.connected.set(i64::from(now));
        if was && !now {
            tracing::error!(member = %self.cfg.member, lease_ttl = ?self.cfg.lease_ttl,
                "lost the cluster (etcd has not confirmed the lease within lease_ttl): not sending notifications; checks keep running");
        } else if !was && now {
            tracing::info!(member = %self.cfg.member, "connected to the cluster; notifications enabled");
        }
    }
}
