//! The status page at `GET /` (SPEC §5): one self-contained HTML document (styles and
//! script inline, no external resources) whose first response already shows every check
//! with its recent results, uptime and latency trend, the incidents and maintenance
//! windows, and the last week of status changes — rendered here on the server; its script
//! then follows `/api/v1/events` and updates the page in place. See `docs/status-page.md`.

use std::fmt::Write as _;
use std::sync::Arc;
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
const TEMPLATE: &str = include_str!("../status_page.html");

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
    /// In a cluster: per check run from more than one place, each runner's (location,
    /// status), as the runners published them.
    pub locations: Option<&'a std::collections::BTreeMap<String, Vec<(String, String)>>>,
}

/// Per replicated check, each runner's (location, status), from the cluster report.
fn locations_of(
    st: &AppState,
) -> Option<std::collections::BTreeMap<String, Vec<(String, String)>>> {
    let r = st.cluster.as_ref()?.report();
    Some(
        r.checks
            .into_iter()
            .filter(|c| c.runners.len() > 1)
            .map(|c| {
                let v = c
                    .runners
                    .iter()
                    .map(|m| match c.statuses.get(m) {
                        Some(s) => (s.location.clone(), s.status.clone()),
                        None => (m.clone(), "unknown".to_string()),
                    })
                    .collect();
                (c.name, v)
            })
            .collect(),
    )
}

/// What one response renders from, owned so both halves can be rendered off the workers.
struct Page {
    states: Vec<CheckState>,
    cfg: Arc<crate::config::Config>,
    nonce: String,
    locations: Option<std::collections::BTreeMap<String, Vec<(String, String)>>>,
    now: SystemTime,
    has_store: bool,
    auth: bool,
}

impl Page {
    fn input<'a>(
        &'a self,
        history: Option<&'a PageHistory>,
        silences: &'a [Silence],
    ) -> PageInput<'a> {
        PageInput {
            states: &self.states,
            history,
            silences,
            config: &self.cfg.status_page,
            now: self.now,
            nonce: &self.nonce,
            has_store: self.has_store,
            auth: self.auth,
            locations: self.locations.as_ref(),
        }
    }
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
    let locations = locations_of(&st);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::convert::Infallible>>(2);
    // Both halves are rendered on background threads (at 10,000 checks the page is
    // megabytes of HTML; on a runtime worker it would hold up the probes behind it).
    let page = Arc::new(Page {
        states,
        cfg,
        nonce,
        locations,
        now,
        has_store,
        auth,
    });
    tokio::spawn(async move {
        let p = page.clone();
        let head = crate::metrics::background::run("status-page", move || {
            render_head(&p.input(None, &[]))
        })
        .await;
        let Some(head) = head else { return };
        if tx.send(Ok(head)).await.is_err() {
            return;
        }
        let history = read_history(&st, now).await;
        let silences = st.alerts.as_ref().map(|e| e.silences()).unwrap_or_default();
        let rest = crate::metrics::background::run("status-page", move || {
            render_rest(&page.input(history.as_ref(), &silences))
        })
        .await;
        if let Some(rest) = rest {
            let _ = tx.send(Ok(rest)).await;
        }
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
            let locs = p.locations.and_then(|l| l.get(&s.name)).map(Vec::as_slice);
            row(out, s, h, public, locs, p.now);
        }
        out.push_str("</tbody></table></details>\n");
    }
}

/// A replicated check's status from each place it runs: `eu-west healthy · us-east
/// unhealthy`.
fn locations_html(locs: &[(String, String)]) -> String {
    let items: Vec<String> = locs
        .iter()
        .map(|(loc, st)| {
            format!(
                "<span class=\"loc\" data-location=\"{l}\" data-status=\"{s}\">{l} <b>{s}</b></span>",
                l = esc(loc),
                s = esc(st)
            )
        })
        .collect();
    format!("<span class=\"locs\">{}</span>", items.join(" · "))
}

/// One `<tr>`. `history` is `None` without a store, `Some(None)` for a check the store
/// has nothing on yet.
fn row(
    out: &mut String,
    s: &CheckState,
    history: Option<Option<&PageCheck>>,
    public: bool,
    locations: Option<&[(String, String)]>,
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
         <th scope=\"row\">{link}<span class=\"kind\">{kind} · {mode}</span>{locs}</th>\
         <td class=\"status\"><span class=\"badge\"><span class=\"icon\" aria-hidden=\"true\">{icon}</span>\
         <span class=\"txt\">{status}</span></span></td>\
         <td class=\"score num\">{score}</td>\
         <td class=\"latency num\">{latency}</td>",
        kind = esc(s.kind),
        mode = s.mode.as_str(),
        icon = status_icon(s.status),
        latency = fmt_latency(s.latency_ms),
        locs = locations.map(locations_html).unwrap_or_default(),
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

mod charts;
mod notices;
mod text;
use charts::*;
use notices::*;
pub use text::*;

#[cfg(test)]
mod tests;
