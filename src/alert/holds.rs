//! Holds: what stops notifications while the lifecycle keeps running.
//!
//! - **Flapping**: more than `flap_threshold` state flips within `flap_window` send one
//!   `flapping` notification and hold everything (resolves included) until the check has
//!   been stable for a whole window.
//! - **`depends_on`**: a failing dependency holds its dependents' firing (not their
//!   resolves), and restarts their `for` when it lifts.
//! - **Connectivity guard**: when every `[agent.connectivity]` check fails the agent is
//!   offline: one `LifelineAgentOffline` alert instead of per-check alerts.
//! - **Silences**: config and API silences hold firing (not resolves) while active.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::grouping::dedupe_key;
use super::lifecycle::{Action, Alert, Effects, Notified, Snap};
use super::outbox::SavedAlert;
use super::{NoteStatus, Notification, RouteConfig, Silence};
use crate::time::unix_ms;

/// Route name of the `LifelineAgentOffline` alert.
pub const CONNECTIVITY_ROUTE: &str = "lifeline:connectivity";

/// Records a state flip of the alert's check; on crossing the route's threshold the alert
/// starts flapping and (unless `silenced`) one `flapping` notification goes out.
pub(super) fn note_flip(
    a: &mut Alert,
    r: &RouteConfig,
    snap: &Snap,
    silenced: bool,
    agent_url: &str,
    fx: &mut Effects,
) {
    a.flips.push_back(snap.at);
    while a
        .flips
        .front()
        .is_some_and(|t| snap.at.saturating_duration_since(*t) > r.flap_window)
    {
        a.flips.pop_front();
    }
    if a.flapping || a.flips.len() <= r.flap_threshold as usize {
        return;
    }
    a.flapping = true;
    if !silenced {
        let key = dedupe_key(&[
            &r.name,
            &snap.name,
            "flapping",
            &unix_ms(snap.at_wall).to_string(),
        ]);
        let item = snap.item(a.started(snap), None);
        fx.push(Action::Send {
            targets: r.notifiers.clone(),
            note: Notification::new(
                key,
                NoteStatus::Flapping,
                &r.name,
                vec![item],
                snap.at_wall,
                agent_url,
            ),
        });
    }
    tracing::warn!(check = %snap.name, route = %r.name, changes = a.flips.len(), "check is flapping; holding its notifications until it is stable");
}

/// Ends flapping once the check has been stable for a whole `flap_window` (else wakes up
/// then), and forgets flips older than the window.
pub(super) fn settle_flapping(
    a: &mut Alert,
    r: &RouteConfig,
    check: &str,
    now: Instant,
    fx: &mut Effects,
) {
    if a.flapping {
        match a.flips.back() {
            Some(last) if now < *last + r.flap_window => fx.wake_at(*last + r.flap_window),
            _ => {
                a.flapping = false;
                a.flips.clear();
                tracing::info!(check, route = %r.name, "check is stable again");
            }
        }
    }
    while a
        .flips
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > r.flap_window)
    {
        a.flips.pop_front();
    }
}

/// Whether one of `check`'s `depends_on` checks is failing.
pub(super) fn dependency_failing(
    depends_on: &HashMap<String, Vec<String>>,
    checks: &HashMap<String, Snap>,
    check: &str,
) -> bool {
    depends_on.get(check).is_some_and(|deps| {
        deps.iter()
            .any(|d| checks.get(d).is_some_and(|s| s.status.is_failing()))
    })
}

/// The silences in force: config ones first, then API ones.
#[derive(Debug, Default)]
pub(super) struct Silences {
    all: Vec<Silence>,
}

impl Silences {
    /// The config silences only.
    pub(super) fn new(config: &[Silence]) -> Self {
        Self {
            all: config.to_vec(),
        }
    }

    /// Replaces the API silences (config silences stay).
    pub(super) fn set_api(&mut self, config: &[Silence], api: Vec<Silence>) {
        self.all = config.iter().cloned().chain(api).collect();
    }

    /// Replaces the config silences (reload; API silences stay).
    pub(super) fn reload(&mut self, config: &[Silence]) {
        let api: Vec<Silence> = self
            .all
            .iter()
            .filter(|s| !s.from_config)
            .cloned()
            .collect();
        self.set_api(config, api);
    }

    /// Whether an active silence holds this check at `wall`.
    pub(super) fn holds(&self, snap: &Snap, wall: SystemTime) -> bool {
        self.all
            .iter()
            .any(|s| s.active(wall) && s.matches(&snap.name, snap.kind, &snap.labels))
    }

    /// Silence boundaries change holds: asks to wake up just after each one to come.
    pub(super) fn wake_at_boundaries(&self, now: Instant, wall: SystemTime, fx: &mut Effects) {
        let ahead = |t: SystemTime| t.duration_since(wall).ok();
        for s in &self.all {
            for d in [ahead(s.starts_at), ahead(s.ends_at)].into_iter().flatten() {
                fx.wake_at(now + d + Duration::from_millis(1));
            }
        }
    }
}

/// The connectivity guard's state.
#[derive(Debug, Default)]
pub(super) struct Connectivity {
    since: Option<(Instant, SystemTime)>,
    notified: Option<Notified>,
}

/// What the connectivity guard reads.
pub(super) struct GuardCx<'a> {
    /// `[agent.connectivity] checks`.
    pub(super) connectivity: &'a [String],
    /// The latest snapshot of every check.
    pub(super) checks: &'a HashMap<String, Snap>,
    /// How long the agent must be offline before it is notified (the shortest `for`).
    pub(super) wait: Duration,
    /// Every route's notifiers.
    pub(super) targets: Vec<String>,
    /// `http://<listen>`.
    pub(super) agent_url: &'a str,
}

impl Connectivity {
    /// Whether every connectivity check is failing (never, without connectivity checks).
    pub(super) fn is_offline(connectivity: &[String], checks: &HashMap<String, Snap>) -> bool {
        !connectivity.is_empty()
            && connectivity
                .iter()
                .all(|c| checks.get(c).is_some_and(|s| s.status.is_failing()))
    }

    /// Restores the offline alert receivers were told about before a restart.
    pub(super) fn restore(&mut self, key: String, started: SystemTime) {
        self.notified = Some(Notified { key, started });
    }

    /// Fires the offline alert after `wait` offline; resolves it once a connectivity
    /// check is up again.
    pub(super) fn evaluate(
        &mut self,
        offline: bool,
        cx: GuardCx<'_>,
        now: Instant,
        wall: SystemTime,
        fx: &mut Effects,
    ) {
        if offline {
            let (since, since_wall) = *self.since.get_or_insert((now, wall));
            if self.notified.is_some() {
                return;
            }
            if now < since + cx.wait {
                fx.wake_at(since + cx.wait);
                return;
            }
            if cx.targets.is_empty() {
                return;
            }
            let key = dedupe_key(&[CONNECTIVITY_ROUTE, &unix_ms(since_wall).to_string()]);
            let note = offline_note(&cx, &key, NoteStatus::Firing, since_wall, None, wall);
            tracing::error!(checks = ?cx.connectivity, "every connectivity check is failing: the agent is offline; holding per-check alerts");
            // Before its Send: the two are one outbox request (`engine::requests`).
            fx.push(Action::Save(SavedAlert {
                route: CONNECTIVITY_ROUTE.into(),
                check: "*".into(),
                dedupe_key: key.clone(),
                started_ms: unix_ms(since_wall),
                last_sent_ms: unix_ms(wall),
            }));
            fx.push(Action::Send {
                targets: cx.targets,
                note,
            });
            self.notified = Some(Notified {
                key,
                started: since_wall,
            });
        } else {
            self.since = None;
            let back = cx
                .connectivity
                .iter()
                .any(|c| cx.checks.get(c).is_some_and(|s| s.status.is_up()));
            if back && let Some(n) = self.notified.take() {
                tracing::info!("a connectivity check is up again: the agent is back online");
                let note = offline_note(
                    &cx,
                    &n.key,
                    NoteStatus::Resolved,
                    n.started,
                    Some(wall),
                    wall,
                );
                fx.push(Action::Send {
                    targets: cx.targets,
                    note,
                });
                fx.push(Action::Forget {
                    route: CONNECTIVITY_ROUTE.into(),
                    check: "*".into(),
                });
            }
        }
    }
}

fn offline_note(
    cx: &GuardCx<'_>,
    key: &str,
    status: NoteStatus,
    started: SystemTime,
    ended: Option<SystemTime>,
    wall: SystemTime,
) -> Notification {
    let alerts = cx
        .connectivity
        .iter()
        .filter_map(|c| cx.checks.get(c))
        .map(|s| s.item(started, ended))
        .collect();
    Notification::new(key, status, CONNECTIVITY_ROUTE, alerts, wall, cx.agent_url).with_offline()
}
