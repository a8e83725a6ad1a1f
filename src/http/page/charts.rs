//! Status page graphics: result bars, latency sparklines and the overall score chart, as inline SVG.

use super::*;

/// The storage code of a status (`samples.status`), used in `data-r` and the classes.
pub(super) fn code(s: Status) -> u8 {
    match s {
        Status::Unknown => 0,
        Status::Connecting => 1,
        Status::Healthy => 2,
        Status::Degraded => 3,
        Status::Unhealthy => 4,
        Status::Disconnected => 5,
    }
}

/// The shape of one result in the bar, `(y, height)` in a 10-unit-high box: healthy
/// stands full height, degraded at 6, connecting and unknown as a stub of 3 on the
/// baseline, failing hangs from the top (5) — so the bar reads without colour.
pub fn bar_shape(code: u8) -> (u8, u8) {
    match code {
        2 => (0, 10),
        3 => (4, 6),
        4 | 5 => (0, 5),
        _ => (7, 3),
    }
}

/// The result bar: one path per status (so a bar is at most six elements), each run of
/// equal results one dashed line (a dash per result: `stroke-dasharray` in the style),
/// newest on the right; `data-r` holds the status codes oldest first for the script.
pub(super) fn bar(out: &mut String, name: &str, newest_first: &[Sample]) {
    let n = newest_first.len();
    if n == 0 {
        out.push_str("<span class=\"none\">no results yet</span>");
        return;
    }
    let offset = BARS.saturating_sub(n);
    let codes: Vec<u8> = newest_first.iter().rev().map(|s| code(s.status)).collect();
    let mut paths: [String; 6] = Default::default();
    let mut tally = [0usize; 6];
    let mut i = 0;
    while i < n {
        let c = codes[i];
        let k = codes[i..].iter().take_while(|&&x| x == c).count();
        let (y, h) = bar_shape(c);
        let cy = f64::from(y) + f64::from(h) / 2.0;
        let _ = write!(paths[c as usize], "M{} {cy}h{k}", offset + i);
        tally[c as usize] += k;
        i += k;
    }
    let codes: String = codes.iter().map(|c| char::from(b'0' + c)).collect();
    let up = tally[2] + tally[3];
    let label = tally_text(&tally, n);
    let _ = write!(
        out,
        "<div class=\"bar\" tabindex=\"0\" role=\"group\" data-r=\"{codes}\" aria-label=\"{}: {label}\">\
         <svg viewBox=\"0 0 {BARS} 10\" preserveAspectRatio=\"none\" aria-hidden=\"true\">",
        esc(&format!("Last {n} results of {name}"))
    );
    for (c, d) in paths.iter().enumerate() {
        if !d.is_empty() {
            let _ = write!(out, "<path class=\"r{c}\" d=\"{d}\"/>");
        }
    }
    let _ = write!(out, "</svg><span class=\"bsum\">{up}/{n} up</span></div>");
}

/// "57 healthy, 3 unhealthy" (statuses with results only).
pub(super) fn tally_text(tally: &[usize; 6], n: usize) -> String {
    const NAMES: [&str; 6] = [
        "unknown",
        "connecting",
        "healthy",
        "degraded",
        "unhealthy",
        "disconnected",
    ];
    let parts: Vec<String> = [2usize, 3, 1, 4, 5, 0]
        .iter()
        .filter(|&&c| tally[c] > 0)
        .map(|&c| format!("{} {}", tally[c], NAMES[c]))
        .collect();
    if parts.is_empty() {
        format!("{n} results")
    } else {
        parts.join(", ")
    }
}

/// Latency of the successful results as an inline SVG line, aligned with the bar (ten
/// units per result, integer coordinates: the page stays small at 1,000 checks).
pub(super) fn sparkline(out: &mut String, newest_first: &[Sample]) {
    let n = newest_first.len();
    let offset = BARS.saturating_sub(n);
    let pts: Vec<(usize, f64)> = newest_first
        .iter()
        .rev()
        .enumerate()
        .filter_map(|(i, s)| s.latency_ms.map(|l| (offset + i, l)))
        .collect();
    if pts.is_empty() {
        out.push_str("<span class=\"none\">—</span>");
        return;
    }
    let mut sorted: Vec<f64> = pts.iter().map(|p| p.1).collect();
    sorted.sort_by(f64::total_cmp);
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let median = sorted[sorted.len() / 2];
    let label = format!(
        "Latency of the last {} successful results: min {}, median {}, max {}",
        pts.len(),
        fmt_latency(Some(min)),
        fmt_latency(Some(median)),
        fmt_latency(Some(max))
    );
    let _ = write!(
        out,
        "<svg class=\"spark\" viewBox=\"0 0 {w} 100\" preserveAspectRatio=\"none\" role=\"img\" \
         data-n=\"{}\" aria-label=\"{label}\"><polyline points=\"",
        pts.len(),
        w = BARS * 10,
    );
    let scale = if max > 0.0 { 88.0 / max } else { 0.0 };
    for (i, (x, l)) in pts.iter().enumerate() {
        let y = (95.0 - l * scale).round() as i64;
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{},{y}", x * 10 + 4);
        if pts.len() == 1 {
            // One point: a short flat line so it shows.
            let _ = write!(out, " {},{y}", x * 10 + 10);
        }
    }
    out.push_str("\"/></svg>");
}

/// The overall score over the last 24 hours: per bucket, the weight-averaged chart score
/// of the checks (see [`PageCheck::chart`]).
pub(super) fn overall_chart(states: &[CheckState], history: Option<&PageHistory>) -> String {
    let Some(h) = history else {
        return String::new();
    };
    let buckets = CHART.1;
    let mut sums = vec![(0.0f64, 0.0f64); buckets];
    for s in states {
        let Some(c) = h.checks.get(&s.name) else {
            continue;
        };
        for (i, v) in c.chart.iter().enumerate().take(buckets) {
            if let Some(v) = v {
                sums[i].0 += s.weight * v;
                sums[i].1 += s.weight;
            }
        }
    }
    let values: Vec<Option<f64>> = sums
        .iter()
        .map(|(s, w)| (*w > 0.0).then(|| s / w))
        .collect();
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    if known.is_empty() {
        return String::new();
    }
    let lo = known.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = known.iter().copied().fold(0.0, f64::max);
    let last = known[known.len() - 1];
    let mut out = format!(
        "<figure class=\"chart\"><svg id=\"overall-chart\" viewBox=\"0 0 {buckets} 30\" preserveAspectRatio=\"none\" \
         role=\"img\" data-buckets=\"{}\" aria-label=\"Overall score over the last 24 hours in 15-minute steps: \
         lowest {lo:.0}, highest {hi:.0}, latest {last:.0}\">",
        known.len()
    );
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = v {
            let hgt = (v / 100.0 * 28.0).max(1.0);
            let b = band(Some(v.round() as u8));
            let _ = write!(
                out,
                "<rect class=\"c-{b}\" x=\"{i}\" y=\"{:.1}\" width=\".85\" height=\"{hgt:.1}\"/>",
                30.0 - hgt
            );
        }
    }
    out.push_str("</svg><figcaption>Score, last 24 h</figcaption></figure>");
    out
}
