//! Unit tests of the store's helpers (the integration tests are in `tests/store/`).

use super::db::{status_code, status_of_code, status_of_name};
use super::parse_time;
use crate::health::Status;
use crate::time::{from_unix_ms, unix_ms};

#[test]
fn times_parse_as_rfc3339_or_duration_back() {
    let now = from_unix_ms(1_700_000_000_000);
    assert_eq!(
        parse_time("24h", now),
        Ok(from_unix_ms(1_700_000_000_000 - 86_400_000))
    );
    assert_eq!(parse_time("now", now), Ok(now));
    assert_eq!(
        parse_time("2023-11-14T22:13:20Z", now),
        Ok(from_unix_ms(1_700_000_000_000))
    );
    assert_eq!(
        parse_time("2023-11-14T23:13:20.5+01:00", now),
        Ok(from_unix_ms(1_700_000_000_500))
    );
    assert!(parse_time("yesterday", now).is_err());
}

#[test]
fn ms_round_trip_and_status_codes() {
    for ms in [0, 1, 1_700_000_000_123, -5_000] {
        assert_eq!(unix_ms(from_unix_ms(ms)), ms);
    }
    for s in Status::ALL {
        assert_eq!(status_of_code(i64::from(status_code(s))), s);
        assert_eq!(status_of_name(s.as_str()), s);
    }
    assert_eq!(status_code(Status::Healthy), 2);
    assert_eq!(status_of_code(99), Status::Unknown);
    assert_eq!(status_of_name("sideways"), Status::Unknown);
}

/// A healthy check's state row is written once a minute (at its own offset), not after
/// every success; anything else that changes what a restart restores is written at once.
#[test]
fn repeated_successes_write_the_state_once_a_minute() {
    use super::handle::state_worth_writing;
    use crate::check::{CheckError, ErrorKind, Mode, Outcome};
    use crate::health::CheckState;
    use std::time::Duration;
    let up = Outcome::up(Duration::from_millis(1));
    let down = Outcome::down(CheckError::new(ErrorKind::Refused, "no"), Duration::ZERO);
    let mut s = CheckState::unknown("c1", "tcp", Mode::Probe);
    let t0 = 1_700_000_000_000_i64;
    // One success a second for ten minutes, as the health model records them.
    let mut written = 0;
    for i in 0..600 {
        s.consecutive_successes += 1;
        s.previous_success_at = s.last_success_at;
        s.last_success_at = Some(from_unix_ms(t0 + i * 1_000));
        if state_worth_writing(&s, &up) {
            written += 1;
        }
    }
    // The first success (a fresh count) and one per minute boundary after it.
    assert!(
        (10..=11).contains(&written),
        "{written} rows for 600 successes"
    );
    // A failure, and the first success after failures, are always written.
    s.consecutive_failures = 1;
    assert!(state_worth_writing(&s, &down));
    s.consecutive_failures = 0;
    s.consecutive_successes = 1;
    assert!(state_worth_writing(&s, &up));
    // Another name falls at another offset within the minute.
    let offsets: std::collections::BTreeSet<i64> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            let mut s = CheckState::unknown(n, "tcp", Mode::Probe);
            s.consecutive_successes = 2;
            (0..60)
                .find(|i| {
                    s.previous_success_at = Some(from_unix_ms(t0 + i * 1_000));
                    s.last_success_at = Some(from_unix_ms(t0 + (i + 1) * 1_000));
                    state_worth_writing(&s, &up)
                })
                .unwrap()
        })
        .collect();
    assert!(
        offsets.len() > 1,
        "every name wrote in the same second: {offsets:?}"
    );
}
