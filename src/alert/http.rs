//! What the HTTP notifiers share: one request with its answer classified (2xx delivered;
//! 5xx, 408 and 429 retried; other 4xx dropped), `Retry-After` honoured (delta-seconds or
//! HTTP-date, and the `retry_after` JSON field Discord and Telegram put in 429 bodies),
//! the config readers for secret URLs and severity maps, and text truncation for
//! services with field limits.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::{NoteStatus, Notification, NotifyError};
use crate::config::raw::Table;
use crate::secret::Secret;

/// Answer bodies read for error messages (and `retry_after` fields) are capped at this
/// many bytes.
pub const ERROR_BODY_CAP: usize = 4096;

/// The longest wait a `Retry-After` can impose on a notifier's queue; a receiver asking
/// for more is retried after this (and `max_age` still drops what is too old).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// Sends `req` (the shared client's timeouts apply); 2xx is delivered, anything else is
/// classified by [`classify`].
pub async fn send(req: reqwest::RequestBuilder) -> Result<(), NotifyError> {
    let resp = req
        .send()
        .await
        .map_err(|e| NotifyError::from_reqwest(&e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = crate::net::capped::body_text(resp, ERROR_BODY_CAP).await;
    Err(classify(
        status,
        retry_after.as_deref(),
        &text,
        SystemTime::now(),
    ))
}

/// A non-2xx answer as a [`NotifyError`]: 429 and 503 that say when to come back (a
/// `Retry-After` header, or a JSON body with `retry_after` / `parameters.retry_after`
/// in seconds) are [`NotifyError::RetryAfter`]; the rest as [`NotifyError::from_status`].
pub fn classify(
    status: reqwest::StatusCode,
    retry_after: Option<&str>,
    body: &str,
    now: SystemTime,
) -> NotifyError {
    let err = NotifyError::from_status(status, body);
    if !matches!(status.as_u16(), 429 | 503) {
        return err;
    }
    let after = retry_after
        .and_then(|h| parse_retry_after(h, now))
        .or_else(|| body_retry_after(body));
    match (after, err) {
        (Some(after), NotifyError::Transient(message)) => NotifyError::RetryAfter {
            message,
            after: after.min(RETRY_AFTER_MAX),
        },
        (_, err) => err,
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delta-seconds, or an HTTP-date (IMF-fixdate,
/// RFC 850 or asctime form) turned into the time from `now` (zero if it is past).
/// Fractional seconds, which some services send, are accepted too.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(RETRY_AFTER_MAX.as_secs())));
    }
    if let Ok(f) = v.parse::<f64>() {
        return seconds(f);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn seconds(f: f64) -> Option<Duration> {
    (f.is_finite() && f >= 0.0).then(|| Duration::from_secs_f64(f.min(3600.0)))
}

/// `retry_after` (Discord) or `parameters.retry_after` (Telegram) of a JSON 429 body.
fn body_retry_after(body: &str) -> Option<Duration> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let n = v
        .get("retry_after")
        .or_else(|| v.get("parameters").and_then(|p| p.get("retry_after")))?
        .as_f64()?;
    seconds(n)
}

/// At most `max` characters of `s`, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// At most `max` bytes of `s` (cut at a character boundary), ending in `…` when cut.
pub fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The keys of a level map (`severity`, `priority`): what a notification is about.
pub const LEVEL_KEYS: [&str; 6] = [
    "unhealthy",
    "disconnected",
    "degraded",
    "flapping",
    "offline",
    "resolved",
];

/// Which [`LEVEL_KEYS`] entry `n` is: `offline`, `flapping`, `resolved`, or the worst
/// status among its alerts (`unhealthy` > `disconnected` > `degraded`; `unhealthy` when
/// none of them).
pub fn level_key(n: &Notification) -> &'static str {
    if n.offline {
        return "offline";
    }
    match n.status {
        NoteStatus::Flapping => return "flapping",
        NoteStatus::Resolved => return "resolved",
        NoteStatus::Firing => {}
    }
    for worst in ["unhealthy", "disconnected", "degraded"] {
        if n.alerts.iter().any(|a| a.status == worst) {
            return worst;
        }
    }
    "unhealthy"
}

/// A level map: `key = { unhealthy = "critical", … }` over `defaults`. Keys must be
/// [`LEVEL_KEYS`] (less those not in `defaults`), values one of `allowed`.
pub fn read_level_map(
    t: &Table<'_, '_>,
    key: &'static str,
    allowed: &[&str],
    defaults: &[(&str, &str)],
) -> Option<BTreeMap<String, String>> {
    let mut out: BTreeMap<String, String> = defaults
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let Some(map) = t.str_map(key) else {
        return (!t.has(key)).then_some(out);
    };
    let mut ok = true;
    for (k, v) in map {
        let span = v.span.clone();
        if !allowed.contains(&v.value.as_str()) && out.contains_key(&k) {
            t.error(
                span,
                format!(
                    "`{key}.{k}`: `{}` is not one of {}",
                    v.value,
                    allowed.join(", ")
                ),
            );
            ok = false;
            continue;
        }
        match out.entry(k) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                e.insert(v.value);
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                let known: Vec<&str> = defaults.iter().map(|(k, _)| *k).collect();
                t.error(
                    span,
                    format!(
                        "`{key}`: unknown key `{}`; known: {}",
                        e.key(),
                        known.join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A required http(s) URL that is a credential (webhook URLs with tokens): registered
/// for redaction before anything can print it, and never echoed in an error.
pub fn secret_url(t: &Table<'_, '_>, key: &'static str) -> Option<Secret<String>> {
    let s = t.req_str(key)?;
    crate::secret::register(&s.value);
    match url::Url::parse(&s.value) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {
            register_url_parts(&u);
            Some(Secret::registered(s.value))
        }
        Ok(u) => {
            t.error(
                s.span,
                format!("`{key}` must use http or https, got `{}:`", u.scheme()),
            );
            None
        }
        Err(e) => {
            t.error(s.span, format!("`{key}`: invalid URL: {e}"));
            None
        }
    }
}

/// Registers the token-like parts of a credential URL for redaction too: its path and
/// query (a receiver echoing the request line), and each path segment or query value of
/// 16 characters or more (Discord webhook tokens, Teams `sig` values).
pub fn register_url_parts(u: &url::Url) {
    let tail = &u[url::Position::BeforePath..];
    if tail.len() > 1 {
        crate::secret::register(tail);
    }
    for seg in u.path_segments().into_iter().flatten() {
        if seg.len() >= 16 {
            crate::secret::register(seg);
        }
    }
    for (_, v) in u.query_pairs() {
        if v.len() >= 16 {
            crate::secret::register(&v);
        }
    }
    if let Some(q) = u.query() {
        for kv in q.split('&') {
            if let Some((_, v)) = kv.split_once('=')
                && v.len() >= 16
            {
                crate::secret::register(v);
            }
        }
    }
}

/// An optional http(s) URL, `default` when absent (the service's real endpoint; tests
/// and self-hosted servers override it).
pub fn optional_url(t: &Table<'_, '_>, key: &'static str, default: &str) -> Option<url::Url> {
    if t.has(key) {
        t.url(key, &["http", "https"])
    } else {
        url::Url::parse(default).ok()
    }
}

/// `base` with `path` appended (one `/` between them).
pub fn join(base: &url::Url, path: &str) -> String {
    format!(
        "{}/{}",
        base.as_str().trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Tue, 01 Dec 2026 23:00:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 23:00:07 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Tuesday, 01-Dec-26 23:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue Dec  1 23:01:00 2026", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Mon, 30 Nov 2026 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("99999999999", now), Some(RETRY_AFTER_MAX));
    }

    #[test]
    fn classify_429_and_503() {
        let now = SystemTime::UNIX_EPOCH;
        let s = |c| reqwest::StatusCode::from_u16(c).unwrap();
        assert!(matches!(
            classify(s(429), Some("3"), "", now),
            NotifyError::RetryAfter { after, .. } if after == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(s(429), None, r#"{"retry_after": 1.5, "global": false}"#, now),
            NotifyError::RetryAfter { after, .. } if after == Duration::from_millis(1500)
        ));
        assert!(matches!(
            classify(s(429), None, r#"{"ok":false,"error_code":429,"parameters":{"retry_after":4}}"#, now),
            NotifyError::RetryAfter { after, .. } if after == Duration::from_secs(4)
        ));
        assert!(matches!(
            classify(s(503), Some("2"), "", now),
            NotifyError::RetryAfter { .. }
        ));
        assert!(matches!(
            classify(s(429), None, "", now),
            NotifyError::Transient(_)
        ));
        assert!(matches!(
            classify(s(400), Some("3"), "", now),
            NotifyError::Permanent(_)
        ));
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate_bytes("ééé", 5), "é…");
        assert!(truncate_bytes(&"x".repeat(10_000), 4096).len() <= 4096);
    }
}
