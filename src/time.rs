//! Time at the edges, in one place: RFC 3339 text, Unix milliseconds, and durations as
//! config values are written (`250ms`, `5s`, `1m30s`).
//!
//! Inside the agent, time is `tokio::time::Instant` (so tests can pause it); wall-clock
//! `SystemTime` appears only where a time leaves or enters the process: the API, history,
//! metrics timestamps, notification payloads and silences. Every conversion lives here.

use std::time::{Duration, SystemTime};

/// Lets an action through at most once per period (for log lines that a storm would
/// otherwise repeat thousands of times a second).
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    last: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

impl Throttle {
    /// At most once per `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: parking_lot::Mutex::new(None),
        }
    }

    /// True the first time and then once `period` has passed since the last `true`.
    pub fn allow(&self) -> bool {
        let now = tokio::time::Instant::now();
        let mut last = self.last.lock();
        match *last {
            Some(t) if now.duration_since(t) < self.period => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

/// Formats a time as RFC 3339 in UTC with millisecond precision
/// (`2026-05-01T12:00:00.000Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let dt = ::time::OffsetDateTime::from(t);
    let fmt = ::time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&fmt).unwrap_or_default()
}

/// Parses an RFC 3339 timestamp (any offset). `None` when it is not one, or when it lies
/// before the Unix epoch.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let t =
        ::time::OffsetDateTime::parse(s.trim(), &::time::format_description::well_known::Rfc3339)
            .ok()?;
    let nanos = u64::try_from(t.unix_timestamp_nanos()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Milliseconds since the Unix epoch, negative before it, saturating at the `i64` range.
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The time `ms` milliseconds after the Unix epoch (before it when negative).
pub fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Seconds since the Unix epoch as a float (Prometheus timestamps and gauges).
pub fn unix_secs_f64(t: SystemTime) -> f64 {
    unix_ms(t) as f64 / 1000.0
}

/// A duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{0}`; use a number with a unit, like 250ms, 5s, 2m, 1h")]
pub struct BadDuration(pub String);

/// Parses `250ms`, `5s`, `2m`, `1h`, `1h30m`, `1d`. Zero is allowed; callers that need a
/// positive value check it.
pub fn parse_duration(s: &str) -> Result<Duration, BadDuration> {
    humantime::parse_duration(s.trim()).map_err(|_| BadDuration(s.to_string()))
}

/// Formats a duration the way config values are written (`250ms`, `5s`, `1m30s`, `2m`,
/// `1h`); below a millisecond, in microseconds.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && d > Duration::ZERO {
        return format!("{}µs", d.as_micros());
    }
    if !ms.is_multiple_of(1000) || ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if !s.is_multiple_of(60) {
        if s > 60 {
            return format!("{}m{}s", s / 60, s % 60);
        }
        return format!("{s}s");
    }
    let m = s / 60;
    if !m.is_multiple_of(60) {
        return format!("{m}m");
    }
    format!("{}h", m / 60)
}

/// `#[serde(with = "crate::time::serde_rfc3339")]` for a `SystemTime` written as RFC 3339.
pub mod serde_rfc3339 {
    use std::time::SystemTime;

    /// Writes the time as RFC 3339 text.
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }

    /// Reads RFC 3339 text.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        super::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time")))
    }
}

/// `#[serde(with = "crate::time::serde_rfc3339_opt")]` for an `Option<SystemTime>`
/// written as RFC 3339 or `null`.
pub mod serde_rfc3339_opt {
    use std::time::SystemTime;

    /// Writes the time as RFC 3339 text, `None` as null.
    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }
}

/// `#[serde(with = "crate::time::serde_unix_ms")]` for a `SystemTime` stored as Unix ms.
pub mod serde_unix_ms {
    use std::time::SystemTime;

    /// Writes the time as integer Unix milliseconds.
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(super::unix_ms(*t))
    }

    /// Reads integer Unix milliseconds.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let ms: i64 = serde::Deserialize::deserialize(d)?;
        Ok(super::from_unix_ms(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_at_ms() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_777_000_123_456);
        let s = rfc3339(t);
        assert_eq!(s, "2026-04-24T03:08:43.456Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn unix_ms_both_sides_of_epoch() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(unix_ms(before), -1500);
        assert_eq!(from_unix_ms(-1500), before);
        assert_eq!(
            from_unix_ms(unix_ms(SystemTime::UNIX_EPOCH)),
            SystemTime::UNIX_EPOCH
        );
    }

    #[test]
    fn durations_parse_and_format_like_config() {
        assert_eq!(parse_duration(" 1h30m "), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("30 parsecs").is_err());
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
        assert_eq!(fmt_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(fmt_duration(Duration::from_micros(7)), "7µs");
    }
}
