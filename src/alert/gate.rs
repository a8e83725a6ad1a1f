//! What a cluster asks of alerting. Without `[cluster]` there is no gate and alerting
//! works as on a single agent; with one (`crate::cluster`), pages for a check go out
//! only from its notifier of record, only when `quorum` runners agree, only while the
//! member holds its etcd lease, and never twice for the same transition.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::Notification;

/// What to do with one outbox row for one notifier.
#[derive(Debug, Clone, PartialEq)]
pub enum GateVerdict {
    /// Send these (the row's alerts that still need telling, possibly under the dedupe
    /// key receivers already know); an empty list is [`GateVerdict::Skip`].
    Send(Vec<Notification>),
    /// Nothing to send: receivers were already told, or another member pages for it.
    Skip(String),
    /// Not now (the member is fenced, or another member is sending it): ask again after.
    Wait(Duration),
}

/// The cluster's side of alerting.
pub trait Gate: Send + Sync {
    /// Whether pages (notifiers other than Alertmanager) for `check` go out from this
    /// agent: it is the check's notifier of record.
    fn pages(&self, check: &str) -> bool;

    /// Whether a failure of `check` is seen by enough of its runners to alert on
    /// (`quorum`); true for checks without a quorum.
    fn confirmed(&self, check: &str) -> bool;

    /// Decides a delivery of `note` to `notifier` (`alertmanager`: an Alertmanager, which
    /// dedupes by itself, so every runner posts to it).
    fn before<'a>(
        &'a self,
        notifier: &'a str,
        alertmanager: bool,
        note: &'a Notification,
    ) -> BoxFuture<'a, GateVerdict>;

    /// Reports how the sends [`Gate::before`] allowed went (`delivered`: all of them).
    fn after<'a>(
        &'a self,
        notifier: &'a str,
        alertmanager: bool,
        sent: &'a [Notification],
        delivered: bool,
    ) -> BoxFuture<'a, ()>;
}
