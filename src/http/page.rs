//! The status page at `GET /` (SPEC §5): one self-contained HTML document (styles and
//! script inline, no external resources) whose first response already lists every check,
//! rendered here on the server; its script then follows `/api/v1/events` and updates rows
//! in place. See `docs/status-page.md`.

use std::time::SystemTime;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::health::{CheckState, Status, overall};
use crate::time::rfc3339;

/// The page template: `{{key}}` markers are filled by [`render`].
const TEMPLATE: &str = include_str!("status_page.html");

/// Every marker the template may contain.
const KEYS: &[&str] = &[
    "version",
    "title",
    "nonce",
    "generated_at",
    "overall_band",
    "overall_status",
    "overall_score",
    "overall_icon",
    "counts",
    "rows",
    "initial_json",
];

/// `GET /`: the status page, with a per-response CSP nonce for its inline style and script.
pub async fn status_page(State(st): State<AppState>) -> Response {
    let states = st.agent.states().all();
    let nonce = format!("{:032x}", fastrand::u128(..));
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    let body = render(&states, SystemTime::now(), &nonce);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
        ],
        body,
    )
        .into_response()
}

/// Renders the page for `states` as of `now`. Every value taken from a check (name,
/// labels, errors, messages) is HTML-escaped; the embedded JSON cannot close its element.
pub fn render(states: &[CheckState], now: SystemTime, nonce: &str) -> String {
    let o = overall(states.iter());
    let score = o
        .score
        .map(|s| format!("{:.0}", s))
        .unwrap_or_else(|| "—".into());
    let status = o.status.as_str();
    let title = match o.score {
        Some(s) => format!("lifeline · {status} ({s:.0})"),
        None => format!("lifeline · {status}"),
    };
    let mut rows = String::with_capacity(states.len() * 900);
    for s in states {
        row(&mut rows, s, now);
    }
    if states.is_empty() {
        rows.push_str(
            "<tr id=\"no-checks\"><td class=\"empty\" colspan=\"6\">No checks are configured.</td></tr>",
        );
    }
    let initial = serde_json::json!({
        "status": status,
        "score": o.score,
        "checks": states,
    });
    fill(TEMPLATE, |key| match key {
        "version" => env!("CARGO_PKG_VERSION").to_string(),
        "title" => esc(&title),
        "nonce" => esc(nonce),
        "generated_at" => esc(&rfc3339(now)),
        "overall_band" => o.band().to_string(),
        "overall_status" => status.to_string(),
        "overall_score" => score.clone(),
        "overall_icon" => overall_icon(status).to_string(),
        "counts" => counts(states),
        "rows" => std::mem::take(&mut rows),
        "initial_json" => script_json(&initial),
        _ => String::new(),
    })
}

/// Replaces each `{{key}}` in `template` with `value(key)` in one pass (so text inserted
/// for one key is never scanned for another).
fn fill(template: &str, mut value: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) if KEYS.contains(&&after[..end]) => {
                out.push_str(&value(&after[..end]));
                rest = &after[end + 2..];
            }
            _ => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One `<tr>`: the same markup the page script builds for a check it learns about later.
fn row(out: &mut String, s: &CheckState, now: SystemTime) {
    use std::fmt::Write as _;
    let name = esc(&s.name);
    let band = band(s.score);
    let status = s.status.as_str();
    let score = s.score.map(|x| x.to_string()).unwrap_or_else(|| "—".into());
    let failing_or_warn = s.status.is_failing() || s.status == Status::Degraded;
    let error = match &s.last_error {
        Some(e) => {
            let kind = s
                .error_kind
                .map(|k| format!("<span class=\"ek\">{}</span>", k.as_str()))
                .unwrap_or_default();
            format!(
                "<span class=\"ev\">{kind}<span class=\"msg\">{}</span></span>",
                esc(e)
            )
        }
        None => "<span class=\"ev\"><span class=\"none\">—</span></span>".into(),
    };
    let since = match s.since {
        Some(t) => {
            let iso = rfc3339(t);
            let ago = now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
            format!(
                "<time datetime=\"{iso}\" title=\"{iso}\">{} ago</time>",
                fmt_age(ago)
            )
        }
        None => "<span class=\"none\">—</span>".into(),
    };
    let _ = writeln!(
        out,
        "<tr id=\"check-{name}\" data-check=\"{name}\" data-status=\"{status}\" class=\"band-{band}\">\
         <th scope=\"row\" data-label=\"Check\"><a class=\"name\" href=\"health/service/{name}\">{name}</a>\
         <span class=\"kind\">{kind} · {mode}</span></th>\
         <td class=\"status\" data-label=\"Status\"><span class=\"badge\"><span class=\"icon\" aria-hidden=\"true\">{icon}</span>\
         <span class=\"txt\">{status}</span></span></td>\
         <td class=\"score num\" data-label=\"Score\">{score}</td>\
         <td class=\"latency num\" data-label=\"Latency\">{latency}</td>\
         <td class=\"error{stale}\" data-label=\"Last error\">{error}</td>\
         <td class=\"since\" data-label=\"Since\">{since}</td></tr>",
        kind = esc(s.kind),
        mode = s.mode.as_str(),
        icon = status_icon(s.status),
        latency = fmt_latency(s.latency_ms),
        stale = if failing_or_warn { "" } else { " stale" },
    );
}

/// "3 checks: 2 healthy, 1 failing, 0 other".
fn counts(states: &[CheckState]) -> String {
    let healthy = states
        .iter()
        .filter(|s| s.status == Status::Healthy)
        .count();
    let failing = states.iter().filter(|s| s.status.is_failing()).count();
    let n = states.len();
    format!(
        "{n} {}: {healthy} healthy, {failing} failing, {} other",
        if n == 1 { "check" } else { "checks" },
        n - healthy - failing
    )
}

/// Colour band of a score: green ≥ 80, orange 50–79, red < 50, none without a score.
pub fn band(score: Option<u8>) -> &'static str {
    match score {
        None => "none",
        Some(s) if s >= 80 => "green",
        Some(s) if s >= 50 => "orange",
        Some(_) => "red",
    }
}

/// The symbol shown next to a status (colour is never the only signal).
fn status_icon(s: Status) -> &'static str {
    match s {
        Status::Healthy => "\u{2714}",
        Status::Degraded => "\u{25B2}",
        Status::Connecting => "\u{21BB}",
        Status::Unhealthy => "\u{2716}",
        Status::Disconnected => "\u{2298}",
        Status::Unknown => "?",
    }
}

fn overall_icon(status: &str) -> &'static str {
    match status {
        "healthy" => "\u{2714}",
        "degraded" => "\u{25B2}",
        "partial" => "\u{25D0}",
        "down" => "\u{2716}",
        _ => "?",
    }
}

/// Latency as the page script shows it: `0.42 ms`, `7.3 ms`, `120 ms`, `1.25 s`.
fn fmt_latency(ms: Option<f64>) -> String {
    match ms {
        None => "—".into(),
        Some(ms) if ms < 1.0 => format!("{ms:.2} ms"),
        Some(ms) if ms < 10.0 => format!("{ms:.1} ms"),
        Some(ms) if ms < 1000.0 => format!("{} ms", ms.round()),
        Some(ms) => format!("{:.2} s", ms / 1000.0),
    }
}

/// An age as the page script shows it: `42s`, `3m 5s`, `2h 10m`, `3d 4h`.
fn fmt_age(secs: u64) -> String {
    let (m, s) = (secs / 60, secs % 60);
    let h = m / 60;
    if secs < 60 {
        format!("{secs}s")
    } else if m < 60 {
        format!("{m}m {s}s")
    } else if h < 48 {
        format!("{h}h {}m", m % 60)
    } else {
        format!("{}d {}h", h / 24, h % 24)
    }
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON safe inside a `<script type="application/json">` element: no `<`, `>` or `&`
/// survive literally, so the text can neither end the element nor open a comment.
fn script_json(v: &serde_json::Value) -> String {
    let text = serde_json::to_string(v).unwrap_or_else(|_| "{}".into());
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_markers_are_all_known_and_no_external_resources() {
        let mut rest = TEMPLATE;
        while let Some(i) = rest.find("{{") {
            let after = &rest[i + 2..];
            let end = after.find("}}").expect("closed marker");
            assert!(
                KEYS.contains(&&after[..end]),
                "unknown marker {}",
                &after[..end]
            );
            rest = &after[end + 2..];
        }
        for bad in ["https://", "<link", " src=", "@import", "url("] {
            assert!(
                !TEMPLATE.contains(bad),
                "template references an external resource: {bad}"
            );
        }
        // The only absolute URL is the SVG namespace name (an identifier, never fetched).
        assert_eq!(
            TEMPLATE.matches("http://").count(),
            TEMPLATE.matches("http://www.w3.org/2000/svg").count()
        );
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let j = script_json(&serde_json::json!({"m": "</script><!--&"}));
        assert!(!j.contains('<') && !j.contains('>') && !j.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&j).expect("still JSON");
        assert_eq!(back["m"], "</script><!--&");
    }

    #[test]
    fn fill_does_not_rescan_inserted_text() {
        let out = fill("a{{rows}}b{{nonce}}c{{nope}}", |k| match k {
            "rows" => "{{nonce}}".into(),
            "nonce" => "N".into(),
            _ => String::new(),
        });
        assert_eq!(out, "a{{nonce}}bNc{{nope}}");
    }

    #[test]
    fn formats_match_the_page_script() {
        assert_eq!(fmt_latency(Some(0.421)), "0.42 ms");
        assert_eq!(fmt_latency(Some(7.33)), "7.3 ms");
        assert_eq!(fmt_latency(Some(120.4)), "120 ms");
        assert_eq!(fmt_latency(Some(1250.0)), "1.25 s");
        assert_eq!(fmt_age(42), "42s");
        assert_eq!(fmt_age(185), "3m 5s");
        assert_eq!(fmt_age(7800), "2h 10m");
        assert_eq!(fmt_age(3 * 86400 + 4 * 3600), "3d 4h");
        assert_eq!(band(Some(80)), "green");
        assert_eq!(band(Some(79)), "orange");
        assert_eq!(band(Some(50)), "orange");
        assert_eq!(band(Some(49)), "red");
        assert_eq!(band(None), "none");
    }
}
