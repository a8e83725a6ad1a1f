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
