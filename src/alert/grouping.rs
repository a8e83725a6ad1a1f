//! Grouping and repeat, per route: alerts that go firing within `group_wait` of each other
//! become one notification under one `dedupe_key`; resolves are grouped the same way and
//! reuse their firing's key; a notified group is re-sent every `repeat_interval` and, for
//! Alertmanager notifiers, refreshed every [`AM_REFRESH`] (keep-alive).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::lifecycle::{Action, Alert, Alerts, Effects, Notified, Snap};
use super::outbox::SavedAlert;
use super::{AlertItem, NoteStatus, Notification, RouteConfig};
use crate::time::unix_ms;

/// How often a firing alert is re-posted to Alertmanager notifiers (keep-alive).
pub const AM_REFRESH: Duration = Duration::from_secs(60);

/// A stable key: the first 32 hex digits of SHA-256 over the parts.
pub fn dedupe_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

/// A notified firing group.
#[derive(Debug)]
struct Group {
    members: BTreeSet<String>,
    last_sent: Instant,
    last_refresh: Instant,
}

/// The grouping state of one route.
#[derive(Debug, Default)]
pub(super) struct RouteState {
    /// Alerts that went firing, waiting for `group_wait`.
    buffer: Option<(Instant, Vec<String>)>,
    /// Resolves waiting for `group_wait`, per firing key.
    resolves: BTreeMap<String, (Instant, Vec<AlertItem>)>,
    /// Notified firing groups (repeat and keep-alive), by key.
    groups: BTreeMap<String, Group>,
}

/// What a route flush reads besides its own state.
pub(super) struct FlushCx<'a> {
    /// The route's alerts (and every other route's).
    pub(super) alerts: &'a mut Alerts,
    /// The latest snapshot of every check.
    pub(super) checks: &'a HashMap<String, Snap>,
    /// The route's Alertmanager notifiers (keep-alive targets).
    pub(super) am_targets: Vec<String>,
    /// `http://<listen>`.
    pub(super) agent_url: &'a str,
    /// Whether a notified alert is held from repeats now (flapping, silenced).
    pub(super) held: &'a dyn Fn(&Alert, &Snap) -> bool,
}

impl RouteState {
    /// Restores a group member receivers were told about before a restart.
    pub(super) fn restore(&mut self, key: String, check: String, last_sent: Instant) {
        self.groups
            .entry(key)
            .or_insert_with(|| Group {
                members: BTreeSet::new(),
                last_sent,
                last_refresh: last_sent,
            })
            .members
            .insert(check);
    }

    /// Drops members whose check is no longer configured (reload).
    pub(super) fn retain_members(&mut self, keep: impl Fn(&str) -> bool) {
        for g in self.groups.values_mut() {
            g.members.retain(|c| keep(c));
        }
    }

    /// Adds a check that went firing to the `group_wait` buffer.
    pub(super) fn buffer(&mut self, check: &str, group_wait: Duration, now: Instant) {
        let (_, members) = self
            .buffer
            .get_or_insert_with(|| (now + group_wait, Vec::new()));
        members.push(check.to_string());
    }

    /// A notified alert resolved: it leaves its group, and (with `send_resolved`) its
    /// resolve waits `group_wait` for others of the same group.
    pub(super) fn resolve(
        &mut self,
        r: &RouteConfig,
        check: &str,
        key: String,
        it: AlertItem,
        now: Instant,
    ) {
        if let Some(g) = self.groups.get_mut(&key) {
            g.members.remove(check);
        }
        if r.send_resolved {
            self.resolves
                .entry(key)
                .or_insert_with(|| (now + r.group_wait, Vec::new()))
                .1
                .push(it);
        }
    }

    /// Runs the route's due timers: a new firing group, grouped resolves, repeats and
    /// keep-alives.
    pub(super) fn flush(
        &mut self,
        r: &RouteConfig,
        mut cx: FlushCx<'_>,
        now: Instant,
        wall: SystemTime,
        fx: &mut Effects,
    ) {
        self.flush_firing(r, &mut cx, now, wall, fx);
        self.flush_resolves(r, cx.agent_url, wall, now, fx);
        self.flush_repeats(r, &cx, now, wall, fx);
    }

    fn flush_firing(
        &mut self,
        r: &RouteConfig,
        cx: &mut FlushCx<'_>,
        now: Instant,
        wall: SystemTime,
        fx: &mut Effects,
    ) {
        let (alerts, checks) = (&mut *cx.alerts, cx.checks);
        let Some((at, members)) = self.buffer.take() else {
            return;
        };
        let members: Vec<String> = members
            .into_iter()
            .filter(|c| {
                alerts
                    .get(&(r.name.clone(), c.clone()))
                    .is_some_and(|a| a.buffered)
            })
            .collect();
        if members.is_empty() {
            return;
        }
        if now < at {
            fx.wake_at(at);
            self.buffer = Some((at, members));
            return;
        }
        let mut sorted = members;
        sorted.sort();
        let ms = unix_ms(wall).to_string();
        let mut parts: Vec<&str> = vec![&r.name];
        parts.extend(sorted.iter().map(String::as_str));
        parts.push(&ms);
        let key = dedupe_key(&parts);
        let mut items = Vec::new();
        let mut changed = wall;
        for c in &sorted {
            let (Some(a), Some(snap)) =
                (alerts.get_mut(&(r.name.clone(), c.clone())), checks.get(c))
            else {
                continue;
            };
            let started = a.started(snap);
            a.buffered = false;
            a.notified = Some(Notified {
                key: key.clone(),
                started,
            });
            changed = changed.min(a.fired_wall);
            items.push(snap.item(started, None));
            fx.push(Action::Save(SavedAlert {
                route: r.name.clone(),
                check: c.clone(),
                dedupe_key: key.clone(),
                started_ms: unix_ms(started),
                last_sent_ms: unix_ms(wall),
            }));
        }
        fx.push(Action::Send {
            targets: r.notifiers.clone(),
            note: Notification::new(
                &key,
                NoteStatus::Firing,
                &r.name,
                items,
                changed,
                cx.agent_url,
            ),
        });
        self.groups.insert(
            key,
            Group {
                members: sorted.into_iter().collect(),
                last_sent: now,
                last_refresh: now,
            },
        );
    }

    fn flush_resolves(
        &mut self,
        r: &RouteConfig,
        agent_url: &str,
        wall: SystemTime,
        now: Instant,
        fx: &mut Effects,
    ) {
        let due: Vec<String> = self
            .resolves
            .iter()
            .filter(|(_, (at, _))| now >= *at)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some((_, items)) = self.resolves.remove(&k) {
                let changed = items
                    .iter()
                    .filter_map(|i| i.ended_at.as_deref().and_then(crate::time::parse_rfc3339))
                    .min()
                    .unwrap_or(wall);
                let forget: Vec<Action> = items
                    .iter()
                    .map(|i| Action::ForgetKey {
                        route: r.name.clone(),
                        check: i.check.clone(),
                        key: k.clone(),
                    })
                    .collect();
                fx.push(Action::Send {
                    targets: r.notifiers.clone(),
                    note: Notification::new(
                        k,
                        NoteStatus::Resolved,
                        &r.name,
                        items,
                        changed,
                        agent_url,
                    ),
                });
                // After the resolved: one outbox request with it (see `Action::ForgetKey`).
                for f in forget {
                    fx.push(f);
                }
            }
        }
        if let Some(at) = self.resolves.values().map(|(at, _)| *at).min() {
            fx.wake_at(at);
        }
    }

    fn flush_repeats(
        &mut self,
        r: &RouteConfig,
        cx: &FlushCx<'_>,
        now: Instant,
        wall: SystemTime,
        fx: &mut Effects,
    ) {
        let am = !cx.am_targets.is_empty();
        let next_due = |g: &Group| {
            let next = g.last_sent + r.repeat_interval;
            if am {
                next.min(g.last_refresh + AM_REFRESH)
            } else {
                next
            }
        };
        self.groups.retain(|_, g| !g.members.is_empty());
        for (k, g) in self.groups.iter_mut() {
            let repeat_due = now >= g.last_sent + r.repeat_interval;
            let refresh_due = am && now >= g.last_refresh + AM_REFRESH;
            if !repeat_due && !refresh_due {
                fx.wake_at(next_due(g));
                continue;
            }
            let mut items = Vec::new();
            for c in &g.members {
                let (Some(a), Some(snap)) = (
                    cx.alerts.get(&(r.name.clone(), c.clone())),
                    cx.checks.get(c),
                ) else {
                    continue;
                };
                let Some(n) = &a.notified else { continue };
                if (cx.held)(a, snap) || !snap.status.is_failing() {
                    continue;
                }
                items.push((c.clone(), snap.item(n.started, None), n.started));
            }
            let note = |items: Vec<AlertItem>| {
                Notification::new(k, NoteStatus::Firing, &r.name, items, wall, cx.agent_url)
            };
            g.last_refresh = now;
            if repeat_due {
                g.last_sent = now;
                if !items.is_empty() {
                    for (c, _, started) in &items {
                        fx.push(Action::Save(SavedAlert {
                            route: r.name.clone(),
                            check: c.clone(),
                            dedupe_key: k.clone(),
                            started_ms: unix_ms(*started),
                            last_sent_ms: unix_ms(wall),
                        }));
                    }
                    fx.push(Action::Send {
                        targets: r.notifiers.clone(),
                        note: note(items.into_iter().map(|i| i.1).collect()),
                    });
                }
            } else if !items.is_empty() {
                fx.push(Action::Send {
                    targets: cx.am_targets.clone(),
                    note: note(items.into_iter().map(|i| i.1).collect()).with_refresh(),
                });
            }
            fx.wake_at(next_due(g));
        }
    }
}
