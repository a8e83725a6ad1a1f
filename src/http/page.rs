//! The status page at `GET /` (SPEC §5): one self-contained HTML document (styles and
//! script inline, no external resources) whose first response already shows every check
//! with its recent results, uptime and latency trend, the incidents and maintenance
//! windows, and the last week of status changes — rendered here on the server; its script
//! then follows `/api/v1/events` and updates the page in place. See `docs/status-page.md`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::alert::Silence;
use crate::config::StatusPageConfig;
use crate::health::{CheckState, Status, overall};
use crate::store::{PageCheck, PageHistory, PageQuery, Sample};
use crate::time::rfc3339;

/// The page template: `{{key}}` markers are filled by [`render`].
const TEMPLATE: &str = include_str!("status_page.html");

/// Results in each check's bar (and points in its sparkline).
pub const BARS: usize = 60;
/// Uptime windows shown per check.
pub const WINDOWS: [(&str, Duration); 3] = [
    ("24h", Duration::from_secs(86_400)),
    ("7d", Duration::from_secs(7 * 86_400)),
    ("30d", Duration::from_secs(30 * 86_400)),
];
/// The overall score chart: 24 hours in 96 buckets of 15 minutes.
pub const CHART: (Duration, usize) = (Duration::from_secs(86_400), 96);
/// The transitions timeline: 7 days, at most this many rows read.
pub const TIMELINE: (Duration, usize) = (Duration::from_secs(7 * 86_400), 500);
/// Rows of the timeline list shown (the strip above it shows every change read).
const TIMELINE_SHOWN: usize = 50;
/// How long the page waits for the history store before rendering without it.
const HISTORY_WAIT: Duration = Duration::from_secs(5);

/// Every marker the template may contain.
const KEYS: &[&str] = &[
    "version",
    "title",
    "page_title",
    "description",
    "logo",
    "theme",
    "color_scheme",
    "public",
    "bars",
    "nonce",
    "generated_at",
    "overall_band",
    "overall_status",
    "overall_score",
    "overall_icon",
    "overall_chart",
    "counts",
    "notices",
    "groups",
    "timeline",
    "legend_error",
    "history",
    "footer_links",
    "mode",
];

/// Paths the page and its badges answer on; with `[status_page] public = true` they are
/// readable without basic auth (the guard asks [`is_public_page`]).
pub fn is_public_page(path: &str) -> bool {
    path == "/"
        || (path.starts_with("/api/v1/checks/")
            && path.split('/').count() == 7
            && path.split('/').nth(5) == Some("badge"))
}

/// What one rendering of the page shows.
pub struct PageInput<'a> {
    /// Every check's live state, in configuration order.
    pub states: &'a [CheckState],
    /// The history read for the page; none without a store (or when it failed).
    pub history: Option<&'a PageHistory>,
    /// Every silence the alert engine knows (expired ones are skipped).
    pub silences: &'a [Silence],
    /// `[status_page]`.
    pub config: &'a StatusPageConfig,
    /// The moment rendered.
    pub now: SystemTime,
    /// The CSP nonce of the inline style and script.
    pub nonce: &'a str,
    /// Whether the agent has a history store (the script adds live results to the bars).
    pub has_store: bool,
    /// Whether basic auth guards the API: a public page then refreshes itself instead of
    /// calling routes that would ask visitors to log in.
    pub auth: bool,
}

/// `GET /`: the status page, with a per-response CSP nonce for its inline style and script.
/// The head and header (live state only) are sent at once; the rest follows when the
/// history has been read, so the browser paints the overall status without waiting.
pub async fn status_page(State(st): State<AppState>) -> Response {
    let cfg = st.agent.config.load_full();
    let now = SystemTime::now();
    let states = st.agent.states().all();
    let nonce = format!("{:032x}", fastrand::u128(..));
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    let auth = cfg.agent.web.as_ref().is_some_and(|w| w.users.is_some());
    let has_store = st.store.is_some();
    let head = render_head(&PageInput {
        states: &states,
        history: None,
        silences: &[],
        config: &cfg.status_page,
        now,
        nonce: &nonce,
        has_store,
        auth,
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::convert::Infallible>>(2);
    tokio::spawn(async move {
        if tx.send(Ok(head)).await.is_err() {
            return;
        }
        let history = read_history(&st, now).await;
        let silences = st.alerts.as_ref().map(|e| e.silences()).unwrap_or_default();
        let rest = render_rest(&PageInput {
            states: &states,
            history: history.as_ref(),
            silences: &silences,
            config: &cfg.status_page,
            now,
            nonce: &nonce,
            has_store,
            auth,
        });
        let _ = tx.send(Ok(rest)).await;
    });
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
        ],
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

/// Reads the page's history in one batch on the blocking pool; none without a store, on
/// an error, or when the store does not answer within [`HISTORY_WAIT`].
async fn read_history(st: &AppState, now: SystemTime) -> Option<PageHistory> {
    let store = st.store.clone()?;
    let q = PageQuery {
        now,
        bars: BARS,
        windows: WINDOWS.iter().map(|w| w.1).collect(),
        chart: CHART,
        timeline: TIMELINE,
    };
    let job = tokio::task::spawn_blocking(move || store.reader().and_then(|r| r.page(&q)));
    match tokio::time::timeout(HISTORY_WAIT, job).await {
        Ok(Ok(Ok(h))) => Some(h),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "status page: history unavailable");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "status page: history read failed");
            None
        }
        Err(_) => {
            tracing::warn!("status page: history store too slow; page rendered without it");
            None
        }
    }
}

/// Renders the whole page. Every value taken from a check, a silence or the config
/// (names, labels, errors, comments, title) is HTML-escaped.
pub fn render(p: &PageInput<'_>) -> String {
    let mut out = render_head(p);
    out.push_str(&render_rest(p));
    out
}

/// The template before and after `<!--stream-->`: the head and header need no history, so
/// they are sent while the history is read.
fn parts() -> (&'static str, &'static str) {
    TEMPLATE
        .split_once("<!--stream-->")
        .unwrap_or((TEMPLATE, ""))
}

/// The document up to the end of the header (live state only).
pub fn render_head(p: &PageInput<'_>) -> String {
    fill(parts().0, |k| value(p, k))
}

/// The rest: notices, groups, timeline, footer and script.
pub fn render_rest(p: &PageInput<'_>) -> String {
    fill(parts().1, |k| value(p, k))
}

/// The text of one template marker.
fn value(p: &PageInput<'_>, key: &str) -> String {
    let states = p.states;
    let public = p.config.public;
    let o = overall(states.iter());
    let status = o.status.as_str();
    let theme = p.config.theme.as_str();
    match key {
        "version" => env!("CARGO_PKG_VERSION").to_string(),
        "title" => esc(&p.config.title),
        "page_title" => esc(&match o.score {
            Some(s) => format!("{} · {status} ({s:.0})", p.config.title),
            None => format!("{} · {status}", p.config.title),
        }),
        "description" => esc(&p.config.description),
        "logo" => match &p.config.logo_url {
            Some(u) => format!(
                "<img class=\"logo\" src=\"{}\" alt=\"\" width=\"40\" height=\"40\">",
                esc(u)
            ),
            None => String::new(),
        },
        "theme" => theme.to_string(),
        "color_scheme" => match theme {
            "light" | "dark" => theme.to_string(),
            _ => "light dark".into(),
        },
        "public" => public.to_string(),
        "history" => p.has_store.to_string(),
        "mode" => if public && p.auth { "snapshot" } else { "live" }.into(),
        "bars" => BARS.to_string(),
        "nonce" => esc(p.nonce),
        "generated_at" => esc(&rfc3339(p.now)),
        "overall_band" => o.band().to_string(),
        "overall_status" => status.to_string(),
        "overall_score" => o
            .score
            .map(|s| format!("{:.0}", s))
            .unwrap_or_else(|| "—".into()),
        "overall_icon" => overall_icon(status).to_string(),
        "overall_chart" => overall_chart(states, p.history),
        "counts" => counts(states.iter()),
        "notices" => {
            let mut out = String::new();
            render_notices(&mut out, p);
            out
        }
        "groups" => {
            let mut out = String::with_capacity(states.len() * 1600 + 4096);
            render_groups(&mut out, p);
            out
        }
        "timeline" => {
            let mut out = String::new();
            render_timeline(&mut out, p);
            out
        }
        "legend_error" => " · hover or focus a bar for each result".into(),
        "footer_links" => {
            if public {
                String::new()
            } else {
                " · <a href=\"metrics\">metrics</a> · <a href=\"health/detailed\">JSON</a>".into()
            }
        }
        _ => String::new(),
    }
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

/// The checks by group (`group_by` label value, in order of first appearance; checks
/// without the label last, under "Other"), or one group of every check.
fn grouped<'a>(states: &'a [CheckState], by: Option<&str>) -> Vec<(String, Vec<&'a CheckState>)> {
    let Some(label) = by else {
        return vec![("Checks".to_string(), states.iter().collect())];
    };
    let mut order: Vec<(String, Vec<&CheckState>)> = Vec::new();
    let mut other = Vec::new();
    for s in states {
        match s.labels.get(label) {
            Some(v) => match order.iter_mut().find(|(g, _)| g == v) {
                Some((_, list)) => list.push(s),
                None => order.push((v.clone(), vec![s])),
            },
            None => other.push(s),
        }
    }
    if !other.is_empty() {
        order.push(("Other".to_string(), other));
    }
    order
}

fn render_groups(out: &mut String, p: &PageInput<'_>) {
    let public = p.config.public;
    if p.states.is_empty() {
        out.push_str("<p id=\"no-checks\" class=\"empty\">No checks are configured.</p>");
        return;
    }
    let error_head = if public {
        ""
    } else {
        "<th scope=\"col\" class=\"c-err\">Last error</th>"
    };
    for (i, (name, members)) in grouped(p.states, p.config.group_by.as_deref())
        .into_iter()
        .enumerate()
    {
        let o = overall(members.iter().copied());
        let status = o.status.as_str();
        let _ = writeln!(
            out,
            "<details class=\"group\" open id=\"group-{i}\" data-group=\"{g}\" data-status=\"{status}\">\
             <summary><span class=\"gname\">{g}</span> <span class=\"gstat band-{band}\"><span class=\"badge\">\
             <span class=\"icon\" aria-hidden=\"true\">{icon}</span><span class=\"txt\">{status}</span></span></span> \
             <span class=\"gcount\">{counts}</span></summary>\
             <table class=\"checks\"><caption class=\"sr-only\">Checks of group {g}</caption><thead><tr>\
             <th scope=\"col\" class=\"c-check\">Check</th><th scope=\"col\" class=\"c-status\">Status</th>\
             <th scope=\"col\" class=\"c-score\">Score</th><th scope=\"col\" class=\"c-lat\">Latency</th>\
             <th scope=\"col\" class=\"c-res\">Last {BARS} results</th><th scope=\"col\" class=\"c-up\">Uptime</th>\
             <th scope=\"col\" class=\"c-trend\">Trend</th>{error_head}<th scope=\"col\" class=\"c-since\">Since</th>\
             </tr></thead><tbody>",
            g = esc(&name),
            band = o.band(),
            icon = overall_icon(status),
            counts = counts(members.iter().copied()),
        );
        for s in members {
            let h = p.history.map(|h| h.checks.get(&s.name));
            row(out, s, h, public, p.now);
        }
        out.push_str("</tbody></table></details>\n");
    }
}

/// One `<tr>`. `history` is `None` without a store, `Some(None)` for a check the store
/// has nothing on yet.
fn row(
    out: &mut String,
    s: &CheckState,
    history: Option<Option<&PageCheck>>,
    public: bool,
    now: SystemTime,
) {
    let name = esc(&s.name);
    let band = band(s.score);
    let status = s.status.as_str();
    let score = s.score.map(|x| x.to_string()).unwrap_or_else(|| "—".into());
    let link = if public {
        format!("<span class=\"name\">{name}</span>")
    } else {
        format!("<a class=\"name\" href=\"health/service/{name}\">{name}</a>")
    };
    let _ = write!(
        out,
        "<tr id=\"check-{name}\" data-check=\"{name}\" data-status=\"{status}\" class=\"band-{band}\">\
         <th scope=\"row\">{link}<span class=\"kind\">{kind} · {mode}</span></th>\
         <td class=\"status\"><span class=\"badge\"><span class=\"icon\" aria-hidden=\"true\">{icon}</span>\
         <span class=\"txt\">{status}</span></span></td>\
         <td class=\"score num\">{score}</td>\
         <td class=\"latency num\">{latency}</td>",
        kind = esc(s.kind),
        mode = s.mode.as_str(),
        icon = status_icon(s.status),
        latency = fmt_latency(s.latency_ms),
    );
    match history {
        None => out.push_str(
            "<td class=\"results\"><span class=\"none\">no history store</span></td>\
             <td class=\"uptime\"><span class=\"none\">—</span></td>\
             <td class=\"trend\"><span class=\"none\">—</span></td>",
        ),
        Some(h) => {
            let samples: &[Sample] = h.map(|h| h.samples.as_slice()).unwrap_or(&[]);
            out.push_str("<td class=\"results\">");
            bar(out, &s.name, samples);
            out.push_str("</td><td class=\"uptime\">");
            for (i, (w, _)) in WINDOWS.iter().enumerate() {
                match h.and_then(|h| h.uptime.get(i).copied().flatten()) {
                    Some(r) => {
                        let _ = write!(
                            out,
                            "<span class=\"up\" data-window=\"{w}\" data-ratio=\"{r:.6}\"><b>{}</b> {w}</span>",
                            fmt_ratio(r)
                        );
                    }
                    None => {
                        let _ = write!(
                            out,
                            "<span class=\"up\" data-window=\"{w}\"><b>—</b> {w}</span>"
                        );
                    }
                }
            }
            out.push_str("</td><td class=\"trend\">");
            sparkline(out, samples);
            out.push_str("</td>");
        }
    }
    if !public {
        let stale = if s.status.is_failing() || s.status == Status::Degraded {
            ""
        } else {
            " stale"
        };
        let _ = write!(out, "<td class=\"error{stale}\">");
        match &s.last_error {
            Some(e) => {
                out.push_str("<span class=\"ev\">");
                if let Some(k) = s.error_kind {
                    let _ = write!(out, "<span class=\"ek\">{}</span>", k.as_str());
                }
                let _ = write!(out, "<span class=\"msg\">{}</span></span>", esc(e));
            }
            None => out.push_str("<span class=\"ev\"><span class=\"none\">—</span></span>"),
        }
        out.push_str("</td>");
    }
    out.push_str("<td class=\"since\">");
    match s.since {
        Some(t) => time_ago(out, t, now),
        None => out.push_str("<span class=\"none\">—</span>"),
    }
    out.push_str("</td></tr>\n");
}

fn time_ago(out: &mut String, t: SystemTime, now: SystemTime) {
    let iso = rfc3339(t);
    let ago = now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    let _ = write!(
        out,
        "<time datetime=\"{iso}\" title=\"{iso}\">{} ago</time>",
        fmt_age(ago)
    );
}

/// The storage code of a status (`samples.status`), used in `data-r` and the classes.
fn code(s: Status) -> u8 {
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
fn bar(out: &mut String, name: &str, newest_first: &[Sample]) {
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
fn tally_text(tally: &[usize; 6], n: usize) -> String {
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
fn sparkline(out: &mut String, newest_first: &[Sample]) {
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

/// Incidents (failing checks, with their start) and maintenance (active and upcoming
/// silences).
fn render_notices(out: &mut String, p: &PageInput<'_>) {
    let mut silences: Vec<&Silence> = p.silences.iter().filter(|s| s.ends_at > p.now).collect();
    silences.sort_by_key(|s| s.starts_at);
    for s in silences {
        let active = s.active(p.now);
        let matchers: Vec<String> = s.matchers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(
            out,
            "<article class=\"banner maint\" data-silence=\"{id}\" data-state=\"{state}\">\
             <span class=\"bicon\" aria-hidden=\"true\">\u{2692}</span><p><strong>{head}</strong> \
             <span class=\"what\">{m}</span> · ",
            id = esc(&s.id),
            state = if active { "active" } else { "upcoming" },
            head = if active {
                "Maintenance in progress:"
            } else {
                "Scheduled maintenance:"
            },
            m = esc(&matchers.join(", ")),
        );
        if active {
            let _ = write!(out, "until {}", when(s.ends_at));
        } else {
            let _ = write!(out, "{} to {}", when(s.starts_at), when(s.ends_at));
        }
        if !s.comment.is_empty() {
            let _ = write!(out, " · <span class=\"comment\">{}</span>", esc(&s.comment));
        }
        out.push_str("</p></article>\n");
    }
    for s in p.states.iter().filter(|s| s.status.is_failing()) {
        incident(out, s, p.config.public, p.now);
    }
}

/// One incident banner (the script builds the same markup).
fn incident(out: &mut String, s: &CheckState, public: bool, now: SystemTime) {
    let name = esc(&s.name);
    let _ = write!(
        out,
        "<article class=\"banner incident\" data-incident=\"{name}\"><span class=\"bicon\" aria-hidden=\"true\">\u{2716}</span>\
         <p><strong>Incident:</strong> <a href=\"#check-{name}\">{name}</a> is <span class=\"st\">{}</span>",
        s.status.as_str()
    );
    if let Some(t) = s.since {
        out.push_str(" since ");
        let _ = write!(
            out,
            "<time datetime=\"{iso}\" title=\"{iso}\" data-fmt=\"at\">{}</time> (",
            crate::time::rfc3339(t).replace('T', " "),
            iso = rfc3339(t)
        );
        time_ago(out, t, now);
        out.push(')');
    }
    if !public && let Some(e) = &s.last_error {
        let kind = s.error_kind.map(|k| k.as_str()).unwrap_or("error");
        let _ = write!(
            out,
            " — <span class=\"ek\">{kind}</span> <span class=\"msg\">{}</span>",
            esc(e)
        );
    }
    out.push_str("</p></article>\n");
}

/// A `<time>` with its RFC 3339 value (the script shows it in local time).
fn when(t: SystemTime) -> String {
    let iso = rfc3339(t);
    format!(
        "<time datetime=\"{iso}\" data-fmt=\"at\">{}</time>",
        iso.replace('T', " ")
    )
}

/// The last 7 days of status changes: a strip (one tick per change, shaped and coloured
/// by the new status) and the newest changes as a list.
fn render_timeline(out: &mut String, p: &PageInput<'_>) {
    let Some(h) = p.history else {
        out.push_str("<p class=\"note\">No history store: this agent keeps no status history.</p>");
        return;
    };
    let all = &h.transitions;
    if all.is_empty() {
        out.push_str("<p class=\"note\">No status changes in the last 7 days.</p>");
        return;
    }
    let hours = TIMELINE.0.as_secs() as f64 / 3600.0;
    let _ = write!(
        out,
        "<svg class=\"tl\" viewBox=\"0 0 {hours} 12\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"{} status changes in the last 7 days, shown in the list below\">",
        all.len()
    );
    for d in 1..7 {
        let _ = write!(out, "<path class=\"day\" d=\"M{} 0v12\"/>", d * 24);
    }
    let mut ticks: [String; 6] = Default::default();
    for t in all {
        let age = p
            .now
            .duration_since(t.transition.at)
            .map(|d| d.as_secs_f64() / 3600.0)
            .unwrap_or(0.0);
        let x = (hours - age).clamp(0.0, hours - 0.4);
        let c = code(t.transition.status);
        let (y, hgt) = bar_shape(c);
        let _ = write!(ticks[c as usize], "M{x:.2} {}h.4v{}h-.4z", y + 1, hgt);
    }
    for (c, d) in ticks.iter().enumerate() {
        if !d.is_empty() {
            let _ = write!(out, "<path class=\"r{c}\" d=\"{d}\"/>");
        }
    }
    out.push_str(
        "</svg><div class=\"tl-axis\" aria-hidden=\"true\"><span>7 days ago</span><span>now</span></div>\
         <ol class=\"transitions\" id=\"timeline-list\">",
    );
    for t in all.iter().take(TIMELINE_SHOWN) {
        let tr = &t.transition;
        let st = tr.status.as_str();
        let b = match tr.status {
            Status::Healthy => "green",
            Status::Degraded | Status::Connecting => "orange",
            s if s.is_failing() => "red",
            _ => "none",
        };
        let _ = write!(
            out,
            "<li data-check=\"{n}\">{at} <strong>{n}</strong> <span class=\"note\">{prev} \u{2192}</span> \
             <span class=\"band-{b}\"><span class=\"badge\"><span class=\"icon\" aria-hidden=\"true\">{icon}</span>\
             <span class=\"txt\">{st}</span></span></span>",
            n = esc(&t.check),
            at = when(tr.at),
            prev = tr.previous_status.as_str(),
            icon = status_icon(tr.status),
        );
        if !p.config.public && (tr.error_kind.is_some() || !tr.message.is_empty()) {
            let kind = tr
                .error_kind
                .as_deref()
                .map(|k| format!("{}: ", esc(k)))
                .unwrap_or_default();
            let _ = write!(out, "<span class=\"msg\">{kind}{}</span>", esc(&tr.message));
        }
        out.push_str("</li>");
    }
    out.push_str("</ol>");
    if all.len() > TIMELINE_SHOWN {
        let more = if all.len() >= TIMELINE.1 {
            format!("{}+", all.len() - TIMELINE_SHOWN)
        } else {
            (all.len() - TIMELINE_SHOWN).to_string()
        };
        let _ = write!(out, "<p class=\"note\">… and {more} older changes.</p>");
    }
}

/// The overall score over the last 24 hours: per bucket, the weight-averaged chart score
/// of the checks (see [`PageCheck::chart`]).
fn overall_chart(states: &[CheckState], history: Option<&PageHistory>) -> String {
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

/// "3 checks: 2 healthy, 1 failing, 0 other".
fn counts<'a>(states: impl Iterator<Item = &'a CheckState>) -> String {
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

fn overall_icon(status: &str) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{ErrorKind, Mode};

    fn state(name: &str, status: Status, team: Option<&str>) -> CheckState {
        let mut s = CheckState::unknown(name, "tcp", Mode::Probe);
        s.status = status;
        s.score = crate::health::score(status, 0);
        if status.is_failing() {
            s.error_kind = Some(ErrorKind::Refused);
            s.last_error = Some("<secret host> refused".into());
            s.since = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        }
        if let Some(t) = team {
            s.labels.insert("team".into(), t.into());
        }
        s
    }

    fn page(
        states: &[CheckState],
        history: Option<&PageHistory>,
        cfg: &StatusPageConfig,
    ) -> String {
        render(&PageInput {
            states,
            history,
            silences: &[],
            config: cfg,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100),
            nonce: "n",
            has_store: history.is_some(),
            auth: false,
        })
    }

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
        for bad in ["https://", "<link", " src=\"http", "@import", "url("] {
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
        // No inline style attributes: the CSP would block them.
        assert!(!TEMPLATE.contains(" style=\""));
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn fill_does_not_rescan_inserted_text() {
        let out = fill("a{{groups}}b{{nonce}}c{{nope}}", |k| match k {
            "groups" => "{{nonce}}".into(),
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
        assert_eq!(fmt_ratio(1.0), "100.00%");
        assert_eq!(fmt_ratio(0.99999), "99.99%");
        assert_eq!(fmt_ratio(0.5), "50.00%");
    }

    #[test]
    fn bar_and_sparkline_follow_the_samples() {
        let at = SystemTime::UNIX_EPOCH;
        let samples: Vec<Sample> = [
            (Status::Healthy, Some(2.0)),
            (Status::Unhealthy, None),
            (Status::Degraded, Some(1500.0)),
            (Status::Healthy, Some(3.0)),
        ]
        .into_iter()
        .map(|(status, latency_ms)| Sample {
            at,
            status,
            latency_ms,
        })
        .collect();
        let mut out = String::new();
        bar(&mut out, "a<b", &samples);
        // Oldest first in data-r; newest (the first sample) on the right edge.
        assert!(out.contains("data-r=\"2342\""), "{out}");
        assert!(
            out.contains(
                "aria-label=\"Last 4 results of a&lt;b: 2 healthy, 1 degraded, 1 unhealthy\""
            ),
            "{out}"
        );
        assert!(out.contains(&format!("M{} 5h1", BARS - 1)), "{out}");
        assert!(
            out.contains("<path class=\"r4\" d=\"M58 2.5h1\"/>"),
            "{out}"
        );
        assert!(
            out.contains("<path class=\"r2\" d=\"M56 5h1M59 5h1\"/>"),
            "{out}"
        );
        assert!(out.contains("3/4 up"));
        let mut sp = String::new();
        sparkline(&mut sp, &samples);
        assert!(sp.contains("data-n=\"3\""), "{sp}");
        assert_eq!(
            sp.split("points=\"").nth(1).map(|p| p.split(' ').count()),
            Some(3)
        );
        // A run of equal results is one dashed line.
        let mut run = String::new();
        bar(&mut run, "x", &vec![samples[0].clone(); 3]);
        assert!(
            run.contains("<path class=\"r2\" d=\"M57 5h3\"/></svg>"),
            "{run}"
        );
        let mut empty = String::new();
        bar(&mut empty, "x", &[]);
        assert!(empty.contains("no results yet"));
    }

    #[test]
    fn groups_follow_the_label_and_public_hides_details() {
        let states = vec![
            state("a", Status::Healthy, Some("web")),
            state("b", Status::Unhealthy, Some("db")),
            state("c", Status::Healthy, None),
            state("d", Status::Healthy, Some("web")),
        ];
        let mut cfg = StatusPageConfig {
            group_by: Some("team".into()),
            ..Default::default()
        };
        let html = page(&states, None, &cfg);
        let pos = |needle: &str| html.find(needle).unwrap_or_else(|| panic!("no {needle}"));
        assert!(pos("data-group=\"web\"") < pos("data-group=\"db\""));
        assert!(pos("data-group=\"db\"") < pos("data-group=\"Other\""));
        assert!(pos("check-a") < pos("check-d") && pos("check-d") < pos("data-group=\"db\""));
        assert!(html.contains("data-group=\"db\" data-status=\"down\""));
        assert!(html.contains("data-incident=\"b\""));
        assert!(html.contains("&lt;secret host&gt; refused"));
        assert!(html.contains("href=\"health/service/a\""));
        assert!(html.contains("no history store"));
        cfg.public = true;
        let html = page(&states, None, &cfg);
        assert!(
            !html.contains("secret host"),
            "error text in the public page"
        );
        assert!(
            !html.contains("href=\"health/"),
            "API links in the public page"
        );
        assert!(
            html.contains("data-incident=\"b\""),
            "the incident is still shown"
        );
        assert!(html.contains("data-public=\"true\""));
    }

    #[test]
    fn public_paths_are_the_page_and_badges_only() {
        assert!(is_public_page("/"));
        assert!(is_public_page("/api/v1/checks/db/badge/status.svg"));
        assert!(is_public_page("/api/v1/checks/db/badge/uptime.svg"));
        assert!(!is_public_page("/api/v1/checks/db/history"));
        assert!(!is_public_page("/api/v1/checks/db/badge"));
        assert!(!is_public_page("/health/detailed"));
        assert!(!is_public_page("/api/v1/checks/db/x/badge/status.svg"));
    }
}
