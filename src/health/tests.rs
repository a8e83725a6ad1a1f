//! Unit tests of the health model.
use super::*;
use crate::check::{CheckError, Outcome};
use Status::*;

fn state(mode: Mode) -> CheckState {
    CheckState::unknown("c", "tcp", mode)
}

fn up(ms: u64) -> Outcome {
    Outcome::up(Duration::from_millis(ms))
}
fn down(kind: ErrorKind) -> Outcome {
    Outcome::down(CheckError::new(kind, "x"), Duration::ZERO)
}
fn timing(unhealthy: u32, healthy: u32) -> Timing {
    Timing {
        unhealthy_threshold: unhealthy,
        healthy_threshold: healthy,
        degraded_latency: Duration::from_millis(100),
        ..Timing::default()
    }
}

/// (start status, consecutive failures before, outcome, source) → (status, score).
#[test]
fn transitions_table() {
    let t = timing(3, 2);
    let cases: Vec<(Status, u32, Outcome, Source, Status, Option<u8>)> = vec![
        (Unknown, 0, up(10), Source::Probe, Healthy, Some(100)),
        (Connecting, 0, up(10), Source::Probe, Healthy, Some(100)),
        (Connecting, 0, up(500), Source::Probe, Degraded, Some(60)),
        (
            Unknown,
            0,
            down(ErrorKind::Refused),
            Source::Probe,
            Connecting,
            Some(40),
        ),
        (
            Healthy,
            0,
            down(ErrorKind::Refused),
            Source::Probe,
            Healthy,
            Some(90),
        ),
        (
            Healthy,
            1,
            down(ErrorKind::Refused),
            Source::Probe,
            Healthy,
            Some(80),
        ),
        (
            Healthy,
            2,
            down(ErrorKind::Refused),
            Source::Probe,
            Unhealthy,
            Some(0),
        ),
        (
            Degraded,
            0,
            down(ErrorKind::Timeout),
            Source::Probe,
            Degraded,
            Some(50),
        ),
        // An unanswered heartbeat is counted (score) but moves no status (SPEC §4).
        (
            Healthy,
            5,
            down(ErrorKind::Timeout),
            Source::Heartbeat,
            Healthy,
            Some(70),
        ),
        (
            Connecting,
            0,
            down(ErrorKind::Timeout),
            Source::Heartbeat,
            Connecting,
            Some(40),
        ),
        // A heartbeat answered with a failure still counts toward unhealthy_threshold.
        (
            Healthy,
            5,
            down(ErrorKind::Protocol),
            Source::Heartbeat,
            Unhealthy,
            Some(0),
        ),
        (
            Healthy,
            0,
            down(ErrorKind::AuthFailed),
            Source::Probe,
            Unhealthy,
            Some(0),
        ),
        (
            Healthy,
            0,
            down(ErrorKind::AuthFailed),
            Source::Connect,
            Unhealthy,
            Some(0),
        ),
        (
            Unknown,
            0,
            down(ErrorKind::Refused),
            Source::Connect,
            Disconnected,
            Some(0),
        ),
        // The handshake alone claims nothing: the first answered heartbeat does.
        (
            Disconnected,
            1,
            up(10),
            Source::Connect,
            Disconnected,
            Some(0),
        ),
        (Unknown, 0, up(10), Source::Connect, Connecting, Some(40)),
        (
            Disconnected,
            1,
            up(10),
            Source::Heartbeat,
            Healthy,
            Some(100),
        ),
        // healthy_threshold = 2: one success is not enough to leave unhealthy.
        (Unhealthy, 3, up(10), Source::Probe, Unhealthy, Some(0)),
        (
            Healthy,
            0,
            Outcome {
                verdict: Verdict::Warn(Some(ErrorKind::Rejected)),
                ..up(1)
            },
            Source::Probe,
            Degraded,
            Some(60),
        ),
        (
            Healthy,
            0,
            Outcome {
                verdict: Verdict::Unknown,
                ..up(1)
            },
            Source::Probe,
            Unknown,
            None,
        ),
    ];
    for (i, (from, failures, o, src, want, want_score)) in cases.into_iter().enumerate() {
        let mut s = state(if src == Source::Probe {
            Mode::Probe
        } else {
            Mode::Session
        });
        s.status = from;
        s.consecutive_failures = failures;
        s.apply(&o, src, &t);
        assert_eq!(
            (s.status, s.score),
            (want, want_score),
            "case {i}: {from:?} + {o:?}"
        );
    }
}

#[test]
fn recovery_needs_healthy_threshold_successes() {
    let t = timing(1, 2);
    let mut s = state(Mode::Probe);
    assert_eq!(
        s.apply(&down(ErrorKind::Refused), Source::Probe, &t)
            .unwrap()
            .to,
        Unhealthy
    );
    assert_eq!(s.apply(&up(1), Source::Probe, &t), None);
    let c = s.apply(&up(1), Source::Probe, &t).unwrap();
    assert_eq!((c.from, c.to), (Unhealthy, Healthy));
    assert_eq!(c.event(), Some(ChangeEvent::Reconnected));
}

#[test]
fn heartbeat_age_degrades_healthy_session() {
    let t = timing(3, 1);
    let mut s = state(Mode::Session);
    s.apply(&up(1), Source::Connect, &t);
    assert_eq!(
        s.status, Connecting,
        "not healthy before a heartbeat is answered"
    );
    s.apply(&up(1), Source::Heartbeat, &t);
    assert_eq!(
        s.heartbeat_age(Duration::from_secs(10), Duration::from_secs(15)),
        None
    );
    let c = s
        .heartbeat_age(Duration::from_secs(16), Duration::from_secs(15))
        .unwrap();
    assert_eq!(c.to, Degraded);
    assert_eq!(c.event(), Some(ChangeEvent::HealthDegraded));
    assert_eq!(s.apply(&up(1), Source::Heartbeat, &t).unwrap().to, Healthy);
}

#[test]
fn events_follow_spec_names() {
    let e = |from, to| Change { from, to }.event();
    assert_eq!(e(Unknown, Healthy), Some(ChangeEvent::Connected));
    assert_eq!(e(Connecting, Healthy), Some(ChangeEvent::Connected));
    assert_eq!(e(Disconnected, Healthy), Some(ChangeEvent::Reconnected));
    assert_eq!(e(Healthy, Disconnected), Some(ChangeEvent::Disconnected));
    assert_eq!(e(Healthy, Unhealthy), Some(ChangeEvent::Disconnected));
    assert_eq!(e(Healthy, Degraded), Some(ChangeEvent::HealthDegraded));
    assert_eq!(e(Degraded, Healthy), None);
}

fn with(status: Status, critical: bool, weight: f64) -> CheckState {
    let mut s = state(Mode::Probe);
    s.status = status;
    s.score = score(status, 0);
    s.critical = critical;
    s.weight = weight;
    s
}

#[test]
fn overall_rules_table() {
    use OverallStatus as O;
    let cases: Vec<(Vec<CheckState>, O)> = vec![
        (vec![], O::Unknown),
        (vec![with(Unknown, true, 1.0)], O::Unknown),
        (
            vec![with(Healthy, true, 1.0), with(Healthy, false, 1.0)],
            O::Healthy,
        ),
        (
            vec![with(Healthy, true, 1.0), with(Degraded, true, 1.0)],
            O::Degraded,
        ),
        (
            vec![with(Healthy, true, 1.0), with(Connecting, true, 1.0)],
            O::Degraded,
        ),
        (
            vec![with(Healthy, true, 1.0), with(Unhealthy, false, 1.0)],
            O::Degraded,
        ),
        (
            vec![with(Healthy, true, 1.0), with(Disconnected, true, 1.0)],
            O::Partial,
        ),
        (
            vec![with(Unhealthy, true, 1.0), with(Disconnected, false, 1.0)],
            O::Down,
        ),
        (
            vec![with(Unhealthy, false, 1.0), with(Unknown, true, 1.0)],
            O::Down,
        ),
    ];
    for (i, (states, want)) in cases.into_iter().enumerate() {
        assert_eq!(overall(states.iter()).status, want, "case {i}");
    }
}

#[test]
fn overall_score_is_weighted() {
    let states = [
        with(Healthy, true, 3.0),
        with(Unhealthy, true, 1.0),
        with(Unknown, true, 5.0),
    ];
    let o = overall(states.iter());
    assert_eq!(o.score, Some(75.0));
    assert_eq!(o.band(), "orange");
}

#[test]
fn score_penalty_caps_at_thirty() {
    assert_eq!(score(Healthy, 7), Some(70));
    assert_eq!(score(Degraded, 2), Some(40));
    assert_eq!(score(Connecting, 2), Some(40));
}

/// The per-check structures' sizes, so a change that bloats them is noticed (issue: 4 KiB
/// per check at 100,000 checks). Heap parts (names, labels, messages) come on top; the
/// bench measures the whole (`BENCHMARKS.md`).
#[test]
fn per_check_structures_stay_small() {
    use std::mem::size_of;
    // Measured sizes (2026-12-03): 264, 272, 376 (488 before its rarely used part moved
    // behind a pointer), 320 bytes; the bounds leave about 10 % for a new field. Raise
    // one only with a reason (and the bench).
    let sizes = [
        ("CheckState", size_of::<CheckState>(), 290),
        ("Entry", size_of::<super::Entry>(), 300),
        ("Series", size_of::<crate::metrics::series::Series>(), 416),
        ("CheckConfig", size_of::<crate::config::CheckConfig>(), 352),
    ];
    for (name, size, bound) in sizes {
        assert!(size <= bound, "{name} is {size} bytes (bound {bound})");
    }
}
