//! Shields-style SVG badges of one check: `GET /api/v1/checks/{name}/badge/status.svg`,
//! `…/badge/uptime.svg?window=7d` and `…/badge/latency.svg`. Flat, 20 px high, the check
//! name on the left and the value on a coloured field on the right; cacheable for 30 s.
//! With `[status_page] public = true` they are readable without basic auth.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::page::{esc, fmt_latency, fmt_ratio};
use crate::health::Status;

/// Green (healthy, high uptime); every field colour has at least 4.5:1 contrast with the
/// white text.
pub const GREEN: &str = "#1a7f37";
/// Orange (degraded, middling uptime).
pub const ORANGE: &str = "#b35900";
/// Red (down, low uptime).
pub const RED: &str = "#cf222e";
/// Grey (unknown, no data).
pub const GREY: &str = "#57606a";
/// The label field.
const LABEL: &str = "#3d4450";
/// Longest uptime window a badge reads.
const MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// Text and colour of a status badge: failing statuses read `down`.
pub fn status_value(s: Status) -> (&'static str, &'static str) {
    match s {
        Status::Healthy => ("healthy", GREEN),
        Status::Degraded => ("degraded", ORANGE),
        Status::Unhealthy | Status::Disconnected => ("down", RED),
        Status::Connecting => ("connecting", GREY),
        Status::Unknown => ("unknown", GREY),
    }
}

/// The colour of an uptime ratio: ≥ 99.9 % green, ≥ 99 % orange, below red.
pub fn uptime_colour(r: f64) -> &'static str {
    if r >= 0.999 {
        GREEN
    } else if r >= 0.99 {
        ORANGE
    } else {
        RED
    }
}

/// Approximate advance width of `c` in 11 px Verdana / DejaVu Sans, in tenths of a pixel.
fn advance(c: char) -> u32 {
    match c {
        'i' | 'l' | 'j' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' | 'I' => 33,
        ' ' | 'f' | 't' | 'r' | '(' | ')' | '[' | ']' | '-' => 45,
        'm' | 'w' | 'M' | 'W' => 106,
        '%' => 120,
        '0'..='9' => 70,
        c if c.is_ascii_uppercase() => 78,
        c if c.is_ascii() => 65,
        _ => 90,
    }
}

fn text_width(s: &str) -> u32 {
    s.chars().map(advance).sum::<u32>().div_ceil(10)
}

/// A flat badge: `label` on the left, `value` on a `colour` field. Both texts are escaped
/// (and cut to 64 characters).
pub fn svg(label: &str, value: &str, colour: &str) -> String {
    let cut = |s: &str| -> String {
        if s.chars().count() > 64 {
            s.chars().take(63).chain(['…']).collect()
        } else {
            s.to_string()
        }
    };
    let (label, value) = (cut(label), cut(value));
    let lw = text_width(&label) + 12;
    let vw = text_width(&value) + 12;
    let w = lw + vw;
    let (l, v) = (esc(&label), esc(&value));
    let mut out = String::with_capacity(900);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"20\" viewBox=\"0 0 {w} 20\" role=\"img\" aria-label=\"{l}: {v}\">\
         <title>{l}: {v}</title>\
         <clipPath id=\"c\"><rect width=\"{w}\" height=\"20\" rx=\"3\"/></clipPath>\
         <g clip-path=\"url(#c)\"><rect class=\"label\" width=\"{lw}\" height=\"20\" fill=\"{LABEL}\"/>\
         <rect class=\"value\" x=\"{lw}\" width=\"{vw}\" height=\"20\" fill=\"{colour}\"/></g>\
         <g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,'DejaVu Sans',Geneva,sans-serif\" font-size=\"11\">\
         <text class=\"label\" x=\"{lx}\" y=\"14\">{l}</text><text class=\"value\" x=\"{vx}\" y=\"14\">{v}</text></g></svg>",
        lx = lw / 2,
        vx = lw + vw / 2,
    );
    out
}

fn respond(code: StatusCode, body: String) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=30"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
        ],
        body,
    )
        .into_response()
}

fn unknown_check(name: &str) -> Response {
    respond(StatusCode::NOT_FOUND, svg(name, "no such check", GREY))
}

/// `GET /api/v1/checks/{name}/badge/status.svg`.
pub async fn status(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    let Some(s) = st.agent.states().state(&name) else {
        return unknown_check(&name);
    };
    let (value, colour) = status_value(s.status);
    respond(StatusCode::OK, svg(&name, value, colour))
}

/// `GET /api/v1/checks/{name}/badge/latency.svg`: latency of the last success while the
/// check is up; `down` while it fails.
pub async fn latency(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    let Some(s) = st.agent.states().state(&name) else {
        return unknown_check(&name);
    };
    let (value, colour) = match (s.status, s.latency_ms) {
        (st, _) if st.is_failing() => ("down".to_string(), RED),
        (Status::Healthy, Some(ms)) => (fmt_latency(Some(ms)), GREEN),
        (Status::Degraded, Some(ms)) => (fmt_latency(Some(ms)), ORANGE),
        (_, Some(ms)) => (fmt_latency(Some(ms)), GREY),
        (_, None) => ("n/a".to_string(), GREY),
    };
    respond(
        StatusCode::OK,
        svg(&format!("{name} latency"), &value, colour),
    )
}

/// `GET /api/v1/checks/{name}/badge/uptime.svg?window=24h` (up to `30d`): the uptime
/// ratio from the history store, `n/a` without one.
pub async fn uptime(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if st.agent.states().state(&name).is_none() {
        return unknown_check(&name);
    }
    let window = q.get("window").map(String::as_str).unwrap_or("24h");
    let d = match crate::time::parse_duration(window) {
        Ok(d) if !d.is_zero() && d <= MAX_WINDOW => d,
        _ => {
            return respond(
                StatusCode::BAD_REQUEST,
                svg("uptime", "window: 1s to 30d", GREY),
            );
        }
    };
    let label = format!("{name} uptime {window}");
    let Some(store) = st.store.clone() else {
        return respond(StatusCode::OK, svg(&label, "n/a", GREY));
    };
    let now = SystemTime::now();
    let since = now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
    let n = name.clone();
    let read = tokio::task::spawn_blocking(move || {
        store
            .reader()
            .and_then(|r| r.uptime(&n, since, now, now))
            .map(|u| u.and_then(|u| u.uptime_ratio))
    });
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(Ok(Some(r)))) => {
            respond(StatusCode::OK, svg(&label, &fmt_ratio(r), uptime_colour(r)))
        }
        Ok(Ok(Ok(None))) => respond(StatusCode::OK, svg(&label, "n/a", GREY)),
        _ => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            svg(&label, "unavailable", GREY),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_escaped_and_widths_grow_with_text() {
        let s = svg("<a&b>", "\"x\"", GREEN);
        assert!(
            s.contains("&lt;a&amp;b&gt;") && s.contains("&quot;x&quot;"),
            "{s}"
        );
        assert!(!s.contains("<a&b>"));
        let short = svg("a", "ok", GREEN);
        let long = svg("a-much-longer-check-name", "ok", GREEN);
        let width = |s: &str| -> u32 {
            s.split("width=\"")
                .nth(1)
                .and_then(|w| w.split('"').next())
                .and_then(|w| w.parse().ok())
                .expect("width")
        };
        assert!(width(&long) > width(&short) + 100);
        let cut = svg(&"x".repeat(500), "v", GREY);
        assert!(cut.len() < 2000);
    }

    #[test]
    fn status_and_uptime_colours() {
        assert_eq!(status_value(Status::Healthy), ("healthy", GREEN));
        assert_eq!(status_value(Status::Degraded), ("degraded", ORANGE));
        assert_eq!(status_value(Status::Unhealthy), ("down", RED));
        assert_eq!(status_value(Status::Disconnected), ("down", RED));
        assert_eq!(uptime_colour(1.0), GREEN);
        assert_eq!(uptime_colour(0.995), ORANGE);
        assert_eq!(uptime_colour(0.5), RED);
    }
}
