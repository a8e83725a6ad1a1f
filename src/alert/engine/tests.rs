use std::collections::BTreeMap;

use super::*;
use crate::alert::{NoteStatus, Notification};
use crate::health::Status;

fn route(name: &str, for_: u64, group_wait: u64) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        matchers: BTreeMap::new(),
        notifiers: vec!["hook".into()],
        for_: Duration::from_secs(for_),
        group_wait: Duration::from_secs(group_wait),
        repeat_interval: Duration::from_secs(4 * 3600),
        send_resolved: true,
        flap_threshold: 6,
        flap_window: Duration::from_secs(600),
    }
}

struct T {
    core: Core,
    t0: Instant,
    w0: SystemTime,
    now: Duration,
    status: HashMap<String, Status>,
    sent: Vec<Notification>,
    /// Every action, in order.
    log: Vec<Action>,
}

impl T {
    fn new(routes: Vec<RouteConfig>, checks: &[&str]) -> Self {
        Self::with(Setup {
            routes,
            checks: Arc::new(checks.iter().map(|c| c.to_string()).collect()),
            agent_url: "http://127.0.0.1:9477".into(),
            ..Setup::default()
        })
    }
    fn with(setup: Setup) -> Self {
        let t0 = Instant::now();
        Self {
            core: Core::new(setup, t0),
            t0,
            w0: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            now: Duration::ZERO,
            status: HashMap::new(),
            sent: Vec::new(),
            log: Vec::new(),
        }
    }
    fn set(&mut self, check: &str, status: Status) {
        let prev = self
            .status
            .insert(check.to_string(), status)
            .unwrap_or(Status::Connecting);
        self.core.change(Snap {
            name: check.into(),
            kind: "tcp",
            labels: BTreeMap::new(),
            status,
            previous: prev,
            error_kind: status.is_failing().then_some("refused"),
            message: String::new(),
            score: Some(0),
            at: self.t0 + self.now,
            at_wall: self.w0 + self.now,
        });
        self.eval();
    }
    fn eval(&mut self) {
        self.core.evaluate(self.t0 + self.now, self.w0 + self.now);
        for a in self.core.take_actions() {
            self.log.push(a.clone());
            if let Action::Send { note, .. } = a {
                self.sent.push(note);
            }
        }
    }
    /// Advances the clock, running every deadline on the way.
    fn advance(&mut self, secs: u64) {
        let end = self.now + Duration::from_secs(secs);
        while let Some(d) = self.core.deadline() {
            let at = d.duration_since(self.t0);
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            self.eval();
        }
        self.now = end;
        self.eval();
    }
    fn statuses(&self) -> Vec<(&'static str, usize)> {
        self.sent
            .iter()
            .map(|n| (n.status.as_str(), n.alerts.len()))
            .collect()
    }
}

#[test]
fn a_failure_shorter_than_for_sends_nothing() {
    let mut t = T::new(vec![route("r", 30, 0)], &["db"]);
    t.set("db", Status::Healthy);
    t.set("db", Status::Unhealthy);
    t.advance(29);
    t.set("db", Status::Healthy);
    t.advance(3600);
    assert!(t.sent.is_empty(), "{:?}", t.statuses());
    t.set("db", Status::Unhealthy);
    t.advance(30);
    assert_eq!(t.statuses(), vec![("firing", 1)]);
}

#[test]
fn storm_of_fifty_is_one_notification_and_one_resolve() {
    let names: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut t = T::new(vec![route("r", 0, 10)], &refs);
    for n in &names {
        t.set(n, Status::Healthy);
    }
    for (i, n) in names.iter().enumerate() {
        if i % 10 == 0 {
            t.advance(1);
        }
        t.set(n, Status::Disconnected);
    }
    t.advance(60);
    assert_eq!(t.statuses(), vec![("firing", 50)]);
    let key = t.sent[0].dedupe_key.clone();
    for n in &names {
        t.set(n, Status::Healthy);
    }
    t.advance(60);
    assert_eq!(t.statuses(), vec![("firing", 50), ("resolved", 50)]);
    assert_eq!(t.sent[1].dedupe_key, key);
}

#[test]
fn flapping_sends_one_flapping_notification_then_holds() {
    let mut t = T::new(vec![route("r", 0, 0)], &["db"]);
    t.set("db", Status::Healthy);
    for _ in 0..20 {
        t.advance(5);
        t.set("db", Status::Unhealthy);
        t.advance(5);
        t.set("db", Status::Healthy);
    }
    let flapping = t
        .sent
        .iter()
        .filter(|n| n.status == NoteStatus::Flapping)
        .count();
    assert_eq!(flapping, 1, "{:?}", t.statuses());
    // Before detection: fire/resolve pairs for the first flips only (threshold 6).
    assert!(t.sent.len() <= 1 + 6, "{:?}", t.statuses());
    let before = t.sent.len();
    // Stable (failing) for the whole window: one firing, held no longer.
    t.set("db", Status::Unhealthy);
    t.advance(599);
    assert_eq!(t.sent.len(), before);
    t.advance(2);
    assert_eq!(t.sent.last().map(|n| n.status), Some(NoteStatus::Firing));
}

#[test]
fn failing_dependency_holds_dependents_but_not_their_resolves() {
    let mut setup = Setup {
        routes: vec![route("r", 0, 0)],
        checks: Arc::new(["gw", "app", "api"].iter().map(|s| s.to_string()).collect()),
        ..Setup::default()
    };
    setup.depends_on.insert("app".into(), vec!["gw".into()]);
    setup.depends_on.insert("api".into(), vec!["gw".into()]);
    let mut t = T::with(setup);
    for c in ["gw", "app", "api"] {
        t.set(c, Status::Healthy);
    }
    // api fails first: it fires.
    t.set("api", Status::Unhealthy);
    assert_eq!(t.statuses(), vec![("firing", 1)]);
    // The dependency fails, then app: only gw pages.
    t.set("gw", Status::Unhealthy);
    t.set("app", Status::Unhealthy);
    t.advance(60);
    let checks: Vec<&str> = t
        .sent
        .iter()
        .flat_map(|n| n.alerts.iter().map(|a| a.check.as_str()))
        .collect();
    assert_eq!(checks, vec!["api", "gw"]);
    // The already-firing dependent still gets its resolve while gw is down.
    t.set("api", Status::Healthy);
    assert_eq!(
        t.sent
            .last()
            .map(|n| (n.status, n.alerts[0].check.as_str())),
        Some((NoteStatus::Resolved, "api"))
    );
    // gw recovers, app recovers within `for` (0 here: at once) – app never pages.
    t.set("app", Status::Healthy);
    t.set("gw", Status::Healthy);
    t.advance(60);
    assert!(
        !t.sent
            .iter()
            .any(|n| n.alerts.iter().any(|a| a.check == "app")),
        "{:?}",
        t.sent
    );
}

#[test]
fn connectivity_outage_pages_once() {
    let mut names: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    names.push("gateway".into());
    names.push("dns".into());
    let mut t = T::with(Setup {
        routes: vec![route("r", 10, 5)],
        checks: Arc::new(names.iter().cloned().collect()),
        connectivity: vec!["gateway".into(), "dns".into()],
        ..Setup::default()
    });
    for n in &names {
        t.set(n, Status::Healthy);
    }
    t.set("gateway", Status::Unhealthy);
    t.set("dns", Status::Unhealthy);
    for n in names.iter().take(20) {
        t.set(n, Status::Disconnected);
    }
    t.advance(3600);
    assert_eq!(t.sent.len(), 1, "{:?}", t.statuses());
    assert!(t.sent[0].offline);
    assert_eq!(t.sent[0].alertname(), "LifelineAgentOffline");
    // Network back, targets recover within `for`: one resolve, nothing else.
    t.set("dns", Status::Healthy);
    t.set("gateway", Status::Healthy);
    t.advance(5);
    for n in names.iter().take(20) {
        t.set(n, Status::Healthy);
    }
    t.advance(3600);
    assert_eq!(t.statuses(), vec![("firing", 2), ("resolved", 2)]);
    assert_eq!(t.sent[0].dedupe_key, t.sent[1].dedupe_key);
}

#[test]
fn repeat_interval_resends_with_the_same_key() {
    let mut r = route("r", 0, 0);
    r.repeat_interval = Duration::from_secs(3600);
    let mut t = T::new(vec![r], &["db"]);
    t.set("db", Status::Unhealthy);
    t.advance(3600 * 3 + 10);
    assert_eq!(t.statuses(), vec![("firing", 1); 4]);
    assert!(t.sent.iter().all(|n| n.dedupe_key == t.sent[0].dedupe_key));
}

#[test]
fn silence_holds_until_it_ends() {
    let mut t = T::new(vec![route("r", 0, 0)], &["db", "cache"]);
    let w0 = t.w0;
    t.core.set_api_silences(vec![Silence {
        id: "s".into(),
        matchers: [("check".to_string(), "db".to_string())].into(),
        starts_at: w0,
        ends_at: w0 + Duration::from_secs(100),
        comment: String::new(),
        from_config: false,
    }]);
    t.set("db", Status::Unhealthy);
    t.set("cache", Status::Unhealthy);
    assert_eq!(t.sent.len(), 1);
    assert_eq!(t.sent[0].alerts[0].check, "cache");
    t.advance(99);
    assert_eq!(t.sent.len(), 1);
    t.advance(2);
    assert_eq!(t.sent.len(), 2);
    assert_eq!(t.sent[1].alerts[0].check, "db");
}

#[test]
fn restored_alert_is_not_resent_and_resolves() {
    let mut t = T::new(vec![route("r", 30, 0)], &["db"]);
    let wall = t.w0;
    t.core.restore(
        vec![SavedAlert {
            route: "r".into(),
            check: "db".into(),
            dedupe_key: "k1".into(),
            started_ms: unix_ms(wall) - 60_000,
            last_sent_ms: unix_ms(wall) - 60_000,
        }],
        t.t0,
        wall,
    );
    t.set("db", Status::Unhealthy);
    t.advance(600);
    assert!(t.sent.is_empty(), "{:?}", t.statuses());
    t.set("db", Status::Healthy);
    assert_eq!(t.statuses(), vec![("resolved", 1)]);
    assert_eq!(t.sent[0].dedupe_key, "k1");
}

/// The check recovered while the agent was down: its restored state and its first result
/// are both healthy, so the only snapshot the engine gets is healthy → healthy (what
/// `AlertEngine::on_result` sends for a check with a restored alert). That must resolve.
#[test]
fn restored_alert_of_a_check_that_recovered_meanwhile_resolves_on_its_first_result() {
    let mut t = T::new(vec![route("r", 30, 0)], &["db"]);
    let wall = t.w0;
    t.core.restore(
        vec![SavedAlert {
            route: "r".into(),
            check: "db".into(),
            dedupe_key: "k1".into(),
            started_ms: unix_ms(wall) - 60_000,
            last_sent_ms: unix_ms(wall) - 60_000,
        }],
        t.t0,
        wall,
    );
    t.status.insert("db".into(), Status::Healthy);
    t.set("db", Status::Healthy);
    assert_eq!(t.statuses(), vec![("resolved", 1)]);
    assert_eq!(t.sent[0].dedupe_key, "k1");
}

#[test]
fn reload_adds_routes_for_already_failing_checks_and_forgets_removed_ones() {
    let mut t = T::new(vec![route("a", 0, 0)], &["db"]);
    t.set("db", Status::Unhealthy);
    assert_eq!(t.statuses(), vec![("firing", 1)]);
    t.core.reload(Setup {
        routes: vec![route("b", 0, 0)],
        checks: Arc::new(["db".to_string()].into()),
        ..Setup::default()
    });
    let forgot = t.core.take_actions();
    assert!(
        forgot.contains(&Action::Forget {
            route: "a".into(),
            check: "db".into()
        }),
        "{forgot:?}"
    );
    t.advance(1);
    assert_eq!(t.sent.last().map(|n| n.route.as_str()), Some("b"));
}

#[test]
fn a_saved_alert_is_forgotten_only_after_its_resolved_is_queued() {
    // A kill -9 between the two used to lose the resolved: the alert state was deleted
    // first, so the next run did not know receivers had been told (found by the kill -9
    // campaign, tests/chaos/kill9.rs).
    let mut t = T::new(vec![route("a", 0, 5)], &["db"]);
    t.set("db", Status::Unhealthy);
    t.advance(6);
    assert_eq!(t.statuses(), vec![("firing", 1)]);
    let key = t.sent[0].dedupe_key.clone();
    t.log.clear();
    t.set("db", Status::Healthy);
    assert!(
        !t.log
            .iter()
            .any(|a| matches!(a, Action::Forget { .. } | Action::ForgetKey { .. })),
        "forgotten while the resolved waits for group_wait: {:?}",
        t.log
    );
    t.advance(6);
    let resolved = t.log.iter().position(
        |a| matches!(a, Action::Send { note, .. } if note.status == NoteStatus::Resolved),
    );
    let forget = t.log.iter().position(|a| {
        *a == Action::ForgetKey {
            route: "a".into(),
            check: "db".into(),
            key: key.clone(),
        }
    });
    assert!(
        matches!((resolved, forget), (Some(r), Some(f)) if r < f),
        "{:?}",
        t.log
    );
}

#[test]
fn keys_are_stable() {
    assert_eq!(dedupe_key(&["r", "a", "1"]), dedupe_key(&["r", "a", "1"]));
    assert_ne!(dedupe_key(&["r", "a1"]), dedupe_key(&["r", "a", "1"]));
    assert_eq!(dedupe_key(&["x"]).len(), 32);
}

fn told(route: &str, check: &str, key: &str) -> SavedAlert {
    SavedAlert {
        route: route.into(),
        check: check.into(),
        dedupe_key: key.into(),
        started_ms: 1_700_000_000_000,
        last_sent_ms: 1_700_000_000_000,
    }
}

#[test]
fn adopting_a_check_whose_firing_receivers_know_sends_no_firing_and_resolves_under_their_key() {
    let mut t = T::new(vec![route("r", 0, 0)], &["db"]);
    let (now, wall) = (t.t0, t.w0);
    t.core
        .adopt("db", vec![told("r", "db", "k-from-before")], now, wall);
    t.set("db", Status::Unhealthy);
    t.advance(60);
    assert!(
        t.sent.is_empty(),
        "re-sent a known firing: {:?}",
        t.statuses()
    );
    t.set("db", Status::Healthy);
    t.advance(1);
    assert_eq!(t.statuses(), vec![("resolved", 1)]);
    assert_eq!(t.sent[0].dedupe_key, "k-from-before");
}

#[test]
fn adopting_with_nothing_told_pages_an_alert_this_member_thought_sent() {
    // A replica evaluated and "notified" in its own view while another member was the
    // notifier of record, which died before telling anyone.
    let mut t = T::new(vec![route("r", 0, 0)], &["db"]);
    t.set("db", Status::Healthy);
    t.set("db", Status::Unhealthy);
    t.advance(1);
    assert_eq!(t.statuses(), vec![("firing", 1)]);
    let (now, wall) = (t.t0 + t.now, t.w0 + t.now);
    t.core.adopt("db", Vec::new(), now, wall);
    t.advance(1);
    assert_eq!(t.statuses(), vec![("firing", 1), ("firing", 1)]);
}

#[test]
fn a_released_check_is_forgotten_without_a_resolved() {
    let mut t = T::new(vec![route("r", 0, 0)], &["db"]);
    t.set("db", Status::Healthy);
    t.set("db", Status::Unhealthy);
    t.advance(1);
    t.core.release("db");
    t.advance(3600 * 5);
    assert_eq!(t.statuses(), vec![("firing", 1)], "no repeat, no resolved");
    assert!(t.core.firing().is_empty());
}

struct Quorum(std::sync::atomic::AtomicBool);

impl Gate for Quorum {
    fn pages(&self, _check: &str) -> bool {
        true
    }
    fn confirmed(&self, _check: &str) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn before<'a>(
        &'a self,
        _n: &'a str,
        _am: bool,
        note: &'a Notification,
    ) -> futures_util::future::BoxFuture<'a, super::super::gate::GateVerdict> {
        Box::pin(async move { super::super::gate::GateVerdict::Send(vec![note.clone()]) })
    }
    fn after<'a>(
        &'a self,
        _n: &'a str,
        _am: bool,
        _sent: &'a [Notification],
        _ok: bool,
    ) -> futures_util::future::BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

#[test]
fn an_unconfirmed_failure_waits_for_its_quorum_then_counts_for_from_there() {
    let mut t = T::new(vec![route("r", 10, 0)], &["db"]);
    let q = Arc::new(Quorum(std::sync::atomic::AtomicBool::new(false)));
    t.core.set_gate(Some(q.clone()));
    t.set("db", Status::Healthy);
    t.set("db", Status::Unhealthy);
    t.advance(60);
    assert!(
        t.sent.is_empty(),
        "paged without quorum: {:?}",
        t.statuses()
    );
    q.0.store(true, Ordering::Relaxed);
    // The cluster wakes the engine when runner statuses change.
    t.eval();
    t.advance(9);
    assert!(
        t.sent.is_empty(),
        "`for` counts from when the quorum is met"
    );
    t.advance(2);
    assert_eq!(t.statuses(), vec![("firing", 1)]);
}

/// The kinds of writes of each outbox request: `S` save, `E` enqueue (with its status),
/// `D` delete.
fn shapes(reqs: &[Vec<Write>]) -> Vec<Vec<String>> {
    reqs.iter()
        .map(|r| {
            r.iter()
                .map(|w| match w {
                    Write::SaveAlert(s) => format!("S:{}", s.check),
                    Write::Enqueue { note, .. } => format!("E:{}", note.status.as_str()),
                    Write::DeleteAlert { check, key, .. } => {
                        format!("D:{check}{}", if key.is_some() { "@key" } else { "" })
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_notification_and_the_states_it_changes_are_one_outbox_request() {
    // A kill -9 between a saved firing and its queued notification left a resolved whose
    // firing nobody received (kill -9 campaign, ~1 in 100 kills): the two now go to the
    // outbox together.
    let mut t = T::new(vec![route("a", 0, 5)], &["db", "web"]);
    t.set("db", Status::Unhealthy);
    t.set("web", Status::Unhealthy);
    t.log.clear();
    t.advance(6);
    let firing = requests(std::mem::take(&mut t.log));
    assert_eq!(
        shapes(&firing),
        vec![vec!["S:db", "S:web", "E:firing"]],
        "{firing:?}"
    );
    let key = t.sent[0].dedupe_key.clone();
    t.set("db", Status::Healthy);
    t.set("web", Status::Healthy);
    t.advance(6);
    let resolved = requests(std::mem::take(&mut t.log));
    assert_eq!(
        shapes(&resolved),
        vec![vec!["E:resolved", "D:db@key", "D:web@key"]],
        "{resolved:?}"
    );
    assert!(resolved[0].iter().all(|w| match w {
        Write::DeleteAlert { key: k, .. } => k.as_deref() == Some(key.as_str()),
        Write::Enqueue { note, .. } => note.dedupe_key == key,
        Write::SaveAlert(_) => false,
    }));
}

#[test]
fn requests_split_at_each_send_and_keep_lone_state_changes() {
    let save = |c: &str| {
        Action::Save(SavedAlert {
            route: "r".into(),
            check: c.into(),
            dedupe_key: "k".into(),
            started_ms: 0,
            last_sent_ms: 0,
        })
    };
    let send = |status| {
        let mut note = Notification::test_sample();
        note.status = status;
        Action::Send {
            targets: vec!["hook".into()],
            note,
        }
    };
    let forget = |c: &str| Action::Forget {
        route: "r".into(),
        check: c.into(),
    };
    let reqs = requests(vec![
        forget("gone"),
        save("a"),
        send(NoteStatus::Firing),
        send(NoteStatus::Resolved),
        forget("b"),
        save("c"),
        send(NoteStatus::Firing),
        forget("d"),
    ]);
    assert_eq!(
        shapes(&reqs),
        vec![
            vec!["D:gone", "S:a", "E:firing"],
            vec!["E:resolved", "D:b"],
            vec!["S:c", "E:firing", "D:d"],
        ]
    );
    assert!(requests(vec![]).is_empty());
    assert_eq!(shapes(&requests(vec![forget("x")])), vec![vec!["D:x"]]);
}
