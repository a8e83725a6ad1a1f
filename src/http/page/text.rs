//! Status page text: escaping, status icons, score bands and how ratios, latencies and ages are written.

use super::*;

pub(super) fn time_ago(out: &mut String, t: SystemTime, now: SystemTime) {
    let iso = rfc3339(t);
    let ago = now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    let _ = write!(
        out,
        "<time datetime=\"{iso}\" title=\"{iso}\">{} ago</time>",
        fmt_age(ago)
    );
}

/// "3 checks: 2 healthy, 1 failing, 0 other".
pub(super) fn counts<'a>(states: impl Iterator<Item = &'a CheckState>) -> String {
    let (mut n, mut healthy, mut failing) = (0, 0, 0);
    for s in states {
        n += 1;
        if s.status == Status::Healthy {
            healthy += 1;
        } else if s.status.is_failing() {
            failing += 1;
        }
    }
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
pub fn status_icon(s: Status) -> &'static str {
    match s {
        Status::Healthy => "\u{2714}",
        Status::Degraded => "\u{25B2}",
        Status::Connecting => "\u{21BB}",
        Status::Unhealthy => "\u{2716}",
        Status::Disconnected => "\u{2298}",
        Status::Unknown => "?",
    }
}

pub(super) fn overall_icon(status: &str) -> &'static str {
    match status {
        "healthy" => "\u{2714}",
        "degraded" => "\u{25B2}",
        "partial" => "\u{25D0}",
        "down" => "\u{2716}",
        _ => "?",
    }
}

/// An uptime ratio as a percentage with two decimals, never rounded up to 100.
pub fn fmt_ratio(r: f64) -> String {
    let pct = (r * 10_000.0).floor() / 100.0;
    format!("{pct:.2}%")
}

/// Latency as the page script shows it: `0.42 ms`, `7.3 ms`, `120 ms`, `1.25 s`.
pub fn fmt_latency(ms: Option<f64>) -> String {
    match ms {
        None => "—".into(),
        Some(ms) if ms < 1.0 => format!("{ms:.2} ms"),
        Some(ms) if ms < 10.0 => format!("{ms:.1} ms"),
        Some(ms) if ms < 1000.0 => format!("{} ms", ms.round()),
        Some(ms) => format!("{:.2} s", ms / 1000.0),
    }
}

/// An age as the page script shows it: `42s`, `3m 5s`, `2h 10m`, `3d 4h`.
pub(super) fn fmt_age(secs: u64) -> String {
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
    crate::alert::template::escape_entities(s, true)
}
