//! The watches: `members/` and `runners/` are listed once and then watched from the
//! listing's revision, so every change arrives as an event (never a polling loop). A
//! watch that breaks (etcd down, compaction) lists again and resumes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Cluster;
use super::etcd::{EtcdError, Kv, WatchEvent};
use super::view::{MemberInfo, RunnerStatus};

/// Which prefix a watch follows.
#[derive(Clone, Copy)]
enum Which {
    Members,
    Runners,
}

impl Cluster {
    /// Keeps `view.members` equal to `members/`.
    pub(super) async fn watch_members(self: Arc<Self>) {
        self.watch_loop(Which::Members).await;
    }

    /// Keeps `view.runners` equal to `runners/`.
    pub(super) async fn watch_runners(self: Arc<Self>) {
        self.watch_loop(Which::Runners).await;
    }

    /// Follows `which`'s prefix until the agent stops, listing again after each break.
    async fn watch_loop(&self, which: Which) {
        let prefix = match which {
            Which::Members => self.keys.members(),
            Which::Runners => self.keys.runners(),
        };
        loop {
            let r = self.follow(&prefix, which).await;
            if self.cancel.is_cancelled() {
                return;
            }
            if let Err(e) = r {
                tracing::debug!(error = %e, prefix = %prefix, "watch ended; listing again");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = self.cancel.cancelled() => return,
            }
        }
    }

    /// Lists `prefix`, hands the listing to the `which` view (`None` events: a full listing),
    /// then each batch of watch events, until the watch fails.
    async fn follow(&self, prefix: &str, which: Which) -> Result<(), EtcdError> {
        let apply = |me: &Self, l: Option<Vec<Kv>>, e: Vec<WatchEvent>| match which {
            Which::Members => me.apply_members(l, e),
            Which::Runners => me.apply_runners(l, e),
        };
        let (kvs, rev) = self.etcd.range_prefix(prefix).await?;
        apply(self, Some(kvs), Vec::new());
        let mut w = self.etcd.watch_prefix(prefix, rev + 1).await?;
        // A member that stops answering (paused, partitioned) ends the watch within
        // about 1.5 × lease_ttl, so a stale member list never outlives a lease by much.
        w.set_idle_probe((self.cfg.lease_ttl / 2).min(Duration::from_secs(10)));
        loop {
            let events = tokio::select! {
                e = w.next() => e?,
                _ = self.cancel.cancelled() => return Ok(()),
            };
            apply(self, None, events);
        }
    }

    fn apply_members(&self, listing: Option<Vec<Kv>>, events: Vec<WatchEvent>) {
        let parse = |kv: &Kv| serde_json::from_slice::<MemberInfo>(&kv.value).ok();
        let changed = {
            let mut v = self.view.write();
            let before = v.members.clone();
            if let Some(kvs) = listing {
                v.members = kvs
                    .iter()
                    .filter_map(parse)
                    .map(|m| (m.name.clone(), m))
                    .collect::<BTreeMap<_, _>>();
            }
            for e in events {
                match e {
                    WatchEvent::Put(kv) => {
                        if let Some(m) = parse(&kv) {
                            v.members.insert(m.name.clone(), m);
                        }
                    }
                    WatchEvent::Delete { key, .. } => {
                        if let Some(name) = key.strip_prefix(&self.keys.members()) {
                            let name = super::unsegment(name);
                            if v.members.remove(&name).is_some() {
                                tracing::info!(member = %name, "a member left the cluster (lease expired or revoked)");
                            }
                        }
                    }
                }
            }
            before != v.members
        };
        self.have_view.store(true, Ordering::Release);
        self.set_view_members();
        if changed {
            self.rebalance_wake.notify_one();
        }
    }

    fn apply_runners(&self, listing: Option<Vec<Kv>>, events: Vec<WatchEvent>) {
        let mut v = self.view.write();
        if let Some(kvs) = listing {
            v.runners.clear();
            for kv in kvs {
                if let (Some((c, m)), Ok(s)) = (
                    self.keys.parse_runner(&kv.key),
                    serde_json::from_slice::<RunnerStatus>(&kv.value),
                ) {
                    v.runners.entry(c).or_default().insert(m, s);
                }
            }
        }
        for e in events {
            match e {
                WatchEvent::Put(kv) => {
                    if let (Some((c, m)), Ok(s)) = (
                        self.keys.parse_runner(&kv.key),
                        serde_json::from_slice::<RunnerStatus>(&kv.value),
                    ) {
                        v.runners.entry(c).or_default().insert(m, s);
                    }
                }
                WatchEvent::Delete { key, .. } => {
                    if let Some((c, m)) = self.keys.parse_runner(&key)
                        && let Some(rs) = v.runners.get_mut(&c)
                    {
                        rs.remove(&m);
                        if rs.is_empty() {
                            v.runners.remove(&c);
                        }
                    }
                }
            }
        }
        drop(v);
        self.engine_wake.store(true, Ordering::Release);
    }
}
