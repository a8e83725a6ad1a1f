//! Delivery: one task per notifier sends its outbox rows in id order, one at a time,
//! retrying with backoff (`retry_base` doubling up to `retry_max`) on temporary failures
//! until delivered or older than `max_age`; a receiver that answers with `Retry-After`
//! ([`NotifyError::RetryAfter`]) is retried after exactly that wait instead. Delivered and
//! dropped rows are deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::gate::{Gate, GateVerdict};
use super::outbox::{Outbox, Row};
use super::{Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use crate::metrics::{Metrics, NotifyResult};
use crate::time::unix_ms;

/// A notifier's delivery task: sends its rows in id order, one at a time.
pub struct Delivery {
    /// Notifier name.
    pub name: String,
    /// Current config and sender (swapped on reload).
    pub target: ArcSwap<(Arc<NotifierConfig>, Arc<dyn Notifier>)>,
    /// Poked when rows are added.
    pub wake: Notify,
    /// Stops this task (the notifier was removed or the agent stops).
    pub cancel: CancellationToken,
    /// The cluster's say over each send, when the agent is in one.
    pub gate: Option<Arc<dyn Gate>>,
}

/// The delivery tasks, by notifier name.
#[derive(Default)]
pub struct Deliveries {
    tasks: Mutex<HashMap<String, Arc<Delivery>>>,
    gate: Option<Arc<dyn Gate>>,
}

impl Deliveries {
    /// No tasks yet; every send asks `gate` first (the cluster), if given.
    pub fn new(gate: Option<Arc<dyn Gate>>) -> Self {
        Self {
            tasks: Mutex::new(HashMap::new()),
            gate,
        }
    }

    /// Matches the tasks to `notifiers`: new ones start (cancelled with `cancel`), kept
    /// ones get the new config, removed ones stop and their queued rows are dropped.
    pub async fn sync(
        &self,
        notifiers: &[Arc<NotifierConfig>],
        http: &reqwest::Client,
        outbox: &Arc<Outbox>,
        metrics: &Arc<Metrics>,
        cancel: &CancellationToken,
    ) {
        let mut removed = Vec::new();
        {
            let mut ds = self.tasks.lock();
            ds.retain(|name, d| {
                let keep = notifiers.iter().any(|n| &n.name == name);
                if !keep {
                    d.cancel.cancel();
                    removed.push(name.clone());
                }
                keep
            });
            for cfg in notifiers {
                let sender = super::build_notifier(cfg, http);
                match ds.get(&cfg.name) {
                    Some(d) => d.target.store(Arc::new((cfg.clone(), sender))),
                    None => {
                        let d = Arc::new(Delivery {
                            name: cfg.name.clone(),
                            target: ArcSwap::from_pointee((cfg.clone(), sender)),
                            wake: Notify::new(),
                            cancel: cancel.child_token(),
                            gate: self.gate.clone(),
                        });
                        tokio::spawn(d.clone().run(outbox.clone(), metrics.clone()));
                        ds.insert(cfg.name.clone(), d);
                    }
                }
            }
        }
        for name in removed {
            let gone = outbox.purge_notifier(&name).await.unwrap_or(0);
            tracing::warn!(notifier = %name, rows = gone, "notifier removed; dropping its queued notifications");
            metrics.notifications_dropped(&name, gone as u64);
        }
    }

    /// Rows were added for these notifiers: updates their queue gauge and wakes them.
    pub fn wake(
        &self,
        notifiers: impl IntoIterator<Item = String>,
        outbox: &Outbox,
        metrics: &Metrics,
    ) {
        let ds = self.tasks.lock();
        for n in notifiers {
            if let Some(d) = ds.get(&n) {
                metrics.notification_queue(&n, outbox.depth(&n));
                d.wake.notify_one();
            }
        }
    }
}

/// Retry delay after the `n`-th failed attempt: `base * 2^(n-1)` capped at `max`, plus up
/// to 10 % jitter.
pub fn retry_delay(base: Duration, max: Duration, n: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << n.saturating_sub(1).min(20));
    let d = exp.min(max);
    let jitter = d.mul_f64(fastrand::f64() * 0.1);
    d + jitter
}

impl Delivery {
    /// Runs until cancelled.
    pub async fn run(self: Arc<Self>, outbox: Arc<Outbox>, metrics: Arc<Metrics>) {
        let mut after = 0i64;
        metrics.notification_queue(&self.name, outbox.depth(&self.name));
        loop {
            let rows = match outbox.next(&self.name, after, 64).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(notifier = %self.name, error = %e, "cannot read the outbox");
                    Vec::new()
                }
            };
            if rows.is_empty() {
                // Rows are only ever added with larger ids, so `after` stays valid; a
                // wake-up that raced with the query is kept by Notify's permit.
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = self.cancel.cancelled() => return,
                }
            }
            for row in rows {
                after = row.id;
                if !self.deliver(&outbox, &metrics, row).await {
                    return;
                }
                metrics.notification_queue(&self.name, outbox.depth(&self.name));
            }
        }
    }

    /// Delivers one row (retrying); false if cancelled meanwhile.
    async fn deliver(&self, outbox: &Outbox, metrics: &Metrics, row: Row) -> bool {
        let mut attempts = row.attempts;
        loop {
            let (cfg, sender) = {
                let t = self.target.load();
                (t.0.clone(), t.1.clone())
            };
            let age =
                Duration::from_millis((unix_ms(SystemTime::now()) - row.created_ms).max(0) as u64);
            if row.note.refresh && age > super::alertmanager::KEEPALIVE {
                // A stale keep-alive is superseded by a newer one (or by the resolve).
                let _ = outbox.remove(row.id).await;
                return true;
            }
            if age > cfg.max_age {
                tracing::warn!(notifier = %self.name, dedupe_key = %row.note.dedupe_key, status = row.note.status.as_str(),
                    attempts, "notification older than max_age; dropping it");
                let _ = outbox.remove(row.id).await;
                metrics.notification(&self.name, NotifyResult::Dropped);
                return true;
            }
            let alertmanager = matches!(cfg.kind, NotifierKind::Alertmanager { .. });
            let notes = match &self.gate {
                None => vec![row.note.clone()],
                Some(g) => match g.before(&self.name, alertmanager, &row.note).await {
                    GateVerdict::Send(n) if !n.is_empty() => n,
                    GateVerdict::Send(_) => {
                        let _ = outbox.remove(row.id).await;
                        return true;
                    }
                    GateVerdict::Skip(why) => {
                        tracing::debug!(notifier = %self.name, dedupe_key = %row.note.dedupe_key,
                            status = row.note.status.as_str(), why = %why, "not sending: the cluster says");
                        let _ = outbox.remove(row.id).await;
                        return true;
                    }
                    GateVerdict::Wait(d) => {
                        tokio::select! {
                            _ = tokio::time::sleep(d) => continue,
                            _ = self.cancel.cancelled() => return false,
                        }
                    }
                },
            };
            let result = tokio::select! {
                r = send_all(&*sender, &notes) => r,
                _ = self.cancel.cancelled() => return false,
            };
            if let Some(g) = &self.gate {
                g.after(&self.name, alertmanager, &notes, result.is_ok())
                    .await;
            }
            match result {
                Ok(()) => {
                    if let Err(e) = outbox.remove(row.id).await {
                        tracing::error!(notifier = %self.name, error = %e, "delivered, but cannot delete the outbox row (it will be sent again)");
                    }
                    let since = unix_ms(SystemTime::now()) - row.note.changed_at_ms;
                    metrics.notification_latency(
                        &self.name,
                        Duration::from_millis(since.max(0) as u64),
                    );
                    metrics.notification(&self.name, NotifyResult::Sent);
                    tracing::info!(notifier = %self.name, dedupe_key = %row.note.dedupe_key, status = row.note.status.as_str(),
                        alerts = row.note.alerts.len(), "notification delivered");
                    return true;
                }
                Err(NotifyError::Permanent(msg)) => {
                    tracing::error!(notifier = %self.name, dedupe_key = %row.note.dedupe_key, status = row.note.status.as_str(),
                        error = %msg, "notification rejected permanently; dropping it");
                    let _ = outbox.remove(row.id).await;
                    metrics.notification(&self.name, NotifyResult::Dropped);
                    return true;
                }
                Err(e @ (NotifyError::Transient(_) | NotifyError::RetryAfter { .. })) => {
                    attempts += 1;
                    metrics.notification(&self.name, NotifyResult::Failed);
                    let (msg, delay) = match e {
                        // The receiver said when: not sooner (and not the backoff's later).
                        NotifyError::RetryAfter { message, after } => (message, after),
                        NotifyError::Transient(m) | NotifyError::Permanent(m) => {
                            (m, retry_delay(cfg.retry_base, cfg.retry_max, attempts))
                        }
                    };
                    let _ = outbox.failed(row.id, attempts, &msg).await;
                    tracing::warn!(notifier = %self.name, dedupe_key = %row.note.dedupe_key, attempts,
                        retry_in_ms = delay.as_millis() as u64, error = %msg, "notification not delivered; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.cancel.cancelled() => return false,
                    }
                }
            }
        }
    }
}

/// Sends each of `notes` in order; the first failure stops and is returned.
async fn send_all(sender: &dyn Notifier, notes: &[Notification]) -> Result<(), NotifyError> {
    for n in notes {
        sender.send(n).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(300);
        let d1 = retry_delay(b, m, 1);
        assert!(d1 >= b && d1 <= b.mul_f64(1.1));
        let d3 = retry_delay(b, m, 3);
        assert!(d3 >= Duration::from_secs(4) && d3 <= Duration::from_secs_f64(4.4));
        let d30 = retry_delay(b, m, 30);
        assert!(d30 >= m && d30 <= m.mul_f64(1.1));
    }
}
