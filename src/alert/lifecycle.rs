//! The alert lifecycle: per (route, check) an alert is *inactive*, *pending* (failing for
//! less than the route's `for`) or *firing*, and separately remembers what receivers were
//! told (nothing, or "firing" under a `dedupe_key`).
//!
//! This module also holds the vocabulary the other parts of the state machine share: the
//! [`Snap`] of a check it is fed, the [`Action`]s it produces and the [`Effects`] they are
//! collected in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::outbox::SavedAlert;
use super::{AlertItem, Notification};
use crate::health::{Change, CheckState, Status};
use crate::time::rfc3339;

/// What the engine knows about a check: the last state it was told.
#[derive(Debug, Clone)]
pub struct Snap {
    /// Check name.
    pub name: String,
    /// Kind.
    pub kind: &'static str,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Status after the change.
    pub status: Status,
    /// Status before it.
    pub previous: Status,
    /// Last failure kind.
    pub error_kind: Option<&'static str>,
    /// Last failure (or result) text.
    pub message: String,
    /// Score.
    pub score: Option<u8>,
    /// When the change happened.
    pub at: Instant,
    /// The same moment in wall time.
    pub at_wall: SystemTime,
}

impl Snap {
    /// A snapshot of `s` right after `change`.
    pub fn of(s: &CheckState, change: Change) -> Self {
        let message = if s.status.is_failing() {
            s.last_error.clone().unwrap_or_else(|| s.message.clone())
        } else {
            s.message.clone()
        };
        Self {
            name: s.name.clone(),
            kind: s.kind,
            labels: s.labels.clone(),
            status: s.status,
            previous: change.from,
            error_kind: s.error_kind.map(|k| k.as_str()),
            message: crate::secret::redact(&message),
            score: s.score,
            at: Instant::now(),
            at_wall: SystemTime::now(),
        }
    }

    /// The alert item of this check, failing since `started` (and recovered at `ended`).
    pub fn item(&self, started: SystemTime, ended: Option<SystemTime>) -> AlertItem {
        AlertItem {
            check: self.name.clone(),
            kind: self.kind.to_string(),
            status: self.status.as_str().to_string(),
            previous_status: self.previous.as_str().to_string(),
            error_kind: self.error_kind.map(str::to_string),
            message: self.message.clone(),
            labels: self.labels.clone(),
            score: self.score,
            started_at: rfc3339(started),
            ended_at: ended.map(rfc3339),
        }
    }
}

/// An output of the state machine, executed in order by the engine task.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write to the outbox for these notifiers.
    Send {
        /// Notifier names.
        targets: Vec<String>,
        /// The notification.
        note: Notification,
    },
    /// Remember a notified firing alert. The `Save`s of the alerts a `Send` notifies come
    /// just before it, its `Forget`s and `ForgetKey`s just after it: the engine writes
    /// them with the notification as one outbox request (`engine::requests`).
    Save(SavedAlert),
    /// Forget one.
    Forget {
        /// Route.
        route: String,
        /// Check.
        check: String,
    },
    /// Forget one if it is still the alert with this key: it follows its resolved `Send`
    /// and is written in the same outbox request, so no crash can leave the alert
    /// forgotten with its resolved never queued (nor the reverse).
    ForgetKey {
        /// Route.
        route: String,
        /// Check.
        check: String,
        /// Its dedupe key.
        key: String,
    },
}

/// What an evaluation produced: actions, and when the state machine next has work.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// Actions in the order they must run.
    pub(super) actions: Vec<Action>,
    /// The earliest timer asked for.
    pub(super) deadline: Option<Instant>,
}

impl Effects {
    /// Asks to be evaluated again at `t` (the earliest request wins).
    pub(super) fn wake_at(&mut self, t: Instant) {
        self.deadline = Some(self.deadline.map_or(t, |d| d.min(t)));
    }

    /// Queues an action.
    pub(super) fn push(&mut self, a: Action) {
        self.actions.push(a);
    }
}

/// Receivers were told this alert is firing.
#[derive(Debug, Clone)]
pub(super) struct Notified {
    /// The firing notification's key (its resolve reuses it).
    pub(super) key: String,
    /// When the check started failing.
    pub(super) started: SystemTime,
}

/// The alerts, by (route, check).
pub(super) type Alerts = HashMap<(String, String), Alert>;

/// One alert: a check on a route.
#[derive(Debug)]
pub(super) struct Alert {
    /// Failing since (set on the change into failing).
    pub(super) failing_since: Option<(Instant, SystemTime)>,
    /// Failing for at least `for` (counted from `eligible_from`).
    pub(super) firing: bool,
    /// When it went firing.
    pub(super) fired_wall: SystemTime,
    /// What receivers were told.
    pub(super) notified: Option<Notified>,
    /// Recent state flips (kept by [`super::holds`]' flapping rules).
    pub(super) flips: VecDeque<Instant>,
    /// Flapping: notifications held (see [`super::holds`]).
    pub(super) flapping: bool,
    /// Held by a dependency or the connectivity guard at the last evaluation.
    pub(super) held_reset: bool,
    /// A new `for` period counts from here (start, end of a dependency/connectivity hold).
    pub(super) eligible_from: Instant,
    /// Waiting in its route's `group_wait` buffer.
    pub(super) buffered: bool,
}

/// The holds on an alert at one evaluation (flapping is the alert's own).
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    /// A failing dependency or the connectivity guard: no firing, `for` restarts after.
    pub(super) reset: bool,
    /// An active silence: no firing.
    pub(super) silenced: bool,
}

/// What one evaluation of an alert asks of its route's grouping.
#[derive(Debug, Default)]
pub(super) struct Step {
    /// The alert became eligible to notify: add it to the `group_wait` buffer.
    pub(super) buffer: bool,
    /// The alert resolved: (the key of its firing, its resolved item).
    pub(super) resolve: Option<(String, AlertItem)>,
    /// Nothing left to remember about it.
    pub(super) removable: bool,
}

impl Alert {
    /// A fresh, inactive alert.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            failing_since: None,
            firing: false,
            fired_wall: SystemTime::UNIX_EPOCH,
            notified: None,
            flips: VecDeque::new(),
            flapping: false,
            held_reset: false,
            eligible_from: now,
            buffered: false,
        }
    }

    /// Records whether a dependency or the connectivity guard holds the alert now. When
    /// such a hold lifts, an alert nobody was told about needs a full `for` again, so
    /// targets that recover along with their dependency never page.
    pub(super) fn note_reset_hold(&mut self, held: bool, now: Instant) {
        if held {
            self.held_reset = true;
        } else if self.held_reset {
            self.held_reset = false;
            self.eligible_from = now;
            if self.notified.is_none() {
                self.firing = false;
            }
        }
    }

    /// Advances the lifecycle for the check's latest `snap`: pending → firing after
    /// `for_` (unless a reset hold is on), eligible to notify unless held or flapping,
    /// resolved when the check is up again (unless flapping).
    pub(super) fn step(
        &mut self,
        snap: &Snap,
        for_: Duration,
        held: Held,
        now: Instant,
        wall: SystemTime,
        fx: &mut Effects,
    ) -> Step {
        let (reset_hold, hold_fire) = (held.reset, self.flapping || held.reset || held.silenced);
        let mut out = Step::default();
        if snap.status.is_failing() {
            let since = self.failing_since.map(|f| f.0).unwrap_or(snap.at);
            let start = since.max(self.eligible_from);
            if !self.firing {
                if now >= start + for_ {
                    self.firing = true;
                    self.fired_wall = wall;
                } else if !reset_hold {
                    fx.wake_at(start + for_);
                }
            }
            let eligible = self.firing && self.notified.is_none() && !hold_fire;
            if eligible && !self.buffered {
                self.buffered = true;
                out.buffer = true;
            } else if !eligible && self.buffered {
                self.buffered = false;
            }
        } else {
            self.firing = false;
            self.buffered = false;
            if snap.status.is_up()
                && !self.flapping
                && let Some(n) = self.notified.take()
            {
                out.resolve = Some((n.key, snap.item(n.started, Some(snap.at_wall))));
            }
        }
        out.removable = self.notified.is_none()
            && self.flips.is_empty()
            && !self.flapping
            && !self.buffered
            && !snap.status.is_failing();
        out
    }

    /// When the check started failing, as the notification reports it.
    pub(super) fn started(&self, snap: &Snap) -> SystemTime {
        self.failing_since.map(|f| f.1).unwrap_or(snap.at_wall)
    }
}
