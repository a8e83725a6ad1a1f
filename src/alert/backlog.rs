//! Writes the outbox could not take yet (a full disk, a locked or unwritable file). Each
//! entry is one request of [`Outbox::commit`]: a notification together with the alert
//! states it changes (or state changes alone), written all or nothing. They are kept in
//! memory, in order, and written again with backoff, still as one request each; an entry
//! is never written ahead of an older one, so a resolve cannot overtake its firing and a
//! state change cannot overtake an older one of the same alert. A target is given up only once the notification is older than that notifier's
//! `max_age` (or the notifier is gone); each given-up target counts in
//! `lifeline_notifications_total{result="dropped"}`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::NotifierConfig;
use super::delivery::retry_delay;
use super::outbox::{Outbox, Write};
use crate::metrics::{Metrics, NotifyResult};

/// First retry delay of a failed write.
const RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Most notifications kept; beyond, the oldest is given up.
const CAP: usize = 10_000;

#[derive(Debug)]
struct Pending {
    /// One [`Outbox::commit`] request.
    writes: Vec<Write>,
    since: Instant,
    attempts: u32,
    next_try: Instant,
}

/// Requests waiting to be written to the outbox, oldest first.
#[derive(Debug, Default)]
pub struct Backlog {
    items: VecDeque<Pending>,
}

impl Backlog {
    /// An empty backlog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the oldest waiting request is tried again.
    pub fn next_try(&self) -> Option<Instant> {
        self.items.front().map(|p| p.next_try)
    }

    /// Queues one request: `writes` go to the outbox together, by a later
    /// [`Backlog::flush`]. Nothing is queued for an empty request.
    pub fn push(&mut self, writes: Vec<Write>, metrics: &Metrics, now: Instant) {
        if writes.is_empty() {
            return;
        }
        if self.items.len() >= CAP
            && let Some(old) = self.items.pop_front()
        {
            for w in &old.writes {
                if let Write::Enqueue { notifiers, note } = w {
                    tracing::error!(route = %note.route, dedupe_key = %note.dedupe_key,
                        "too many notifications waiting for the outbox; giving up the oldest");
                    for t in notifiers {
                        metrics.notification(t, NotifyResult::Dropped);
                    }
                } else {
                    tracing::error!(write = ?w,
                        "too many writes waiting for the outbox; giving up the oldest alert state change");
                }
            }
        }
        self.items.push_back(Pending {
            writes,
            since: now,
            attempts: 0,
            next_try: now,
        });
    }

    /// Writes the waiting requests that are due, oldest first, stopping at the first
    /// failure (it is tried again after a backoff, whole). `max_age` gives a notifier's
    /// `max_age` (`None`: the notifier is gone); a notification's targets past it are
    /// given up, the alert states of its request are still written. Returns the notifiers
    /// that got rows.
    pub async fn flush(
        &mut self,
        outbox: &Outbox,
        metrics: &Metrics,
        max_age: &(dyn Fn(&str) -> Option<Duration> + Sync),
        now: Instant,
    ) -> Vec<String> {
        let mut written = Vec::new();
        while let Some(p) = self.items.front_mut() {
            if p.next_try > now {
                break;
            }
            let age = now.saturating_duration_since(p.since);
            let attempts = p.attempts;
            for w in p.writes.iter_mut() {
                let Write::Enqueue { notifiers, note } = w else {
                    continue;
                };
                notifiers.retain(|t| match max_age(t) {
                    Some(max) if age <= max => true,
                    Some(_) => {
                        tracing::error!(notifier = %t, route = %note.route, dedupe_key = %note.dedupe_key,
                            attempts, "notification could not be written to the outbox within max_age; giving up");
                        metrics.notification(t, NotifyResult::Dropped);
                        false
                    }
                    None => {
                        tracing::warn!(notifier = %t, route = %note.route, dedupe_key = %note.dedupe_key,
                            "notifier removed before the notification reached the outbox; dropping it");
                        metrics.notification(t, NotifyResult::Dropped);
                        false
                    }
                });
            }
            p.writes
                .retain(|w| !matches!(w, Write::Enqueue { notifiers, .. } if notifiers.is_empty()));
            if p.writes.is_empty() {
                self.items.pop_front();
                continue;
            }
            match outbox.commit(p.writes.clone()).await {
                Ok(()) => {
                    let Some(p) = self.items.pop_front() else {
                        break;
                    };
                    for w in p.writes {
                        if let Write::Enqueue { notifiers, note } = w {
                            tracing::info!(route = %note.route, status = note.status.as_str(), dedupe_key = %note.dedupe_key,
                                alerts = note.alerts.len(), notifiers = ?notifiers, "notification queued");
                            written.extend(notifiers);
                        }
                    }
                }
                Err(e) => {
                    p.attempts += 1;
                    let delay = retry_delay(RETRY_BASE, RETRY_MAX, p.attempts);
                    p.next_try = now + delay;
                    for w in &p.writes {
                        match w {
                            Write::Enqueue { note, .. } => {
                                tracing::error!(route = %note.route, dedupe_key = %note.dedupe_key, error = %e,
                                    attempts = p.attempts, retry_in_ms = delay.as_millis() as u64,
                                    "cannot write the notification to the outbox; will retry");
                            }
                            _ => tracing::error!(write = ?w, error = %e, attempts = p.attempts,
                                retry_in_ms = delay.as_millis() as u64,
                                "cannot write the alert state to the outbox; will retry"),
                        }
                    }
                    break;
                }
            }
        }
        written
    }
}

/// The `max_age` of each of these notifiers, for [`Backlog::flush`].
pub fn max_age_of(
    notifiers: &[Arc<NotifierConfig>],
) -> impl Fn(&str) -> Option<Duration> + Sync + '_ {
    |n| notifiers.iter().find(|c| c.name == n).map(|c| c.max_age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{NoteStatus, Notification};

    fn send(note: Notification) -> Vec<Write> {
        vec![Write::Enqueue {
            notifiers: vec!["hook".into()],
            note,
        }]
    }

    /// A second connection makes every outbox insert fail (or stop failing).
    fn inserts_fail(db: &std::path::Path, fail: bool) {
        let c = rusqlite::Connection::open(db).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        let sql = if fail {
            "CREATE TRIGGER fail_all BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'injected'); END;"
        } else {
            "DROP TRIGGER fail_all;"
        };
        c.execute_batch(sql).unwrap();
    }

    /// An outbox whose inserts fail, fresh metrics, and a backlog holding one firing.
    async fn failing_setup(dir: &tempfile::TempDir) -> (Outbox, Arc<Metrics>, Backlog, Instant) {
        let outbox = Outbox::open(dir.path()).await.unwrap();
        let metrics = Metrics::new();
        inserts_fail(outbox.path(), true);
        let t0 = Instant::now();
        let mut b = Backlog::new();
        b.push(send(Notification::test_sample()), &metrics, t0);
        (outbox, metrics, b, t0)
    }

    #[tokio::test]
    async fn a_failed_write_is_retried_in_order_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, metrics, mut b, t0) = failing_setup(&dir).await;
        let day = |_: &str| Some(Duration::from_secs(86_400));
        let mut resolved = Notification::test_sample();
        resolved.status = NoteStatus::Resolved;
        assert!(b.flush(&outbox, &metrics, &day, t0).await.is_empty());
        assert_eq!(b.len(), 1);
        // A newer notification waits behind the failed one.
        b.push(send(resolved.clone()), &metrics, t0);
        assert!(b.flush(&outbox, &metrics, &day, t0).await.is_empty());
        let retry = b.next_try().unwrap();
        assert!(retry >= t0 + RETRY_BASE, "backs off");
        inserts_fail(outbox.path(), false);
        // Not due yet: nothing happens.
        assert!(b.flush(&outbox, &metrics, &day, t0).await.is_empty());
        assert_eq!(outbox.depth("hook"), 0);
        let written = b.flush(&outbox, &metrics, &day, retry).await;
        assert_eq!(written, vec!["hook".to_string(), "hook".to_string()]);
        assert!(b.is_empty());
        let rows = outbox.next("hook", 0, 10).await.unwrap();
        let got: Vec<NoteStatus> = rows.iter().map(|r| r.note.status).collect();
        assert_eq!(got, vec![NoteStatus::Firing, NoteStatus::Resolved]);
        assert!(!metrics.render().contains("result=\"dropped\""));
    }

    #[tokio::test]
    async fn a_failed_request_is_retried_whole_with_its_alert_states() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).await.unwrap();
        let metrics = Metrics::new();
        inserts_fail(outbox.path(), true);
        let t0 = Instant::now();
        let saved = crate::alert::outbox::SavedAlert {
            route: "r".into(),
            check: "db".into(),
            dedupe_key: "k".into(),
            started_ms: 1,
            last_sent_ms: 2,
        };
        let mut req = vec![Write::SaveAlert(saved.clone())];
        req.extend(send(Notification::test_sample()));
        let mut b = Backlog::new();
        b.push(req, &metrics, t0);
        let day = |_: &str| Some(Duration::from_secs(86_400));
        assert!(b.flush(&outbox, &metrics, &day, t0).await.is_empty());
        // The save ran first and worked, but its request failed: nothing is saved.
        assert!(outbox.load_alerts().await.unwrap().is_empty());
        inserts_fail(outbox.path(), false);
        let retry = b.next_try().unwrap();
        assert_eq!(
            b.flush(&outbox, &metrics, &day, retry).await,
            vec!["hook".to_string()]
        );
        assert_eq!(outbox.load_alerts().await.unwrap(), vec![saved]);
        assert_eq!(outbox.depth("hook"), 1);
    }

    #[tokio::test]
    async fn a_write_failing_past_max_age_is_given_up_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, metrics, mut b, t0) = failing_setup(&dir).await;
        let max_age = |_: &str| Some(Duration::from_secs(60));
        b.flush(&outbox, &metrics, &max_age, t0).await;
        assert_eq!(b.len(), 1);
        b.flush(&outbox, &metrics, &max_age, t0 + Duration::from_secs(61))
            .await;
        assert!(b.is_empty());
        assert!(
            metrics
                .render()
                .contains("lifeline_notifications_total{notifier=\"hook\",result=\"dropped\"} 1"),
            "{}",
            metrics.render()
        );
    }
}
