//! The status page with history in the store, in a real headless Chromium: result bars,
//! uptime and sparklines match the history API; incidents, maintenance, groups, the
//! timeline, keyboard and pointer details, dark mode, 1280 and 360 px screenshots.

use std::time::{Duration, SystemTime};

use lifeline::check::ErrorKind;
use lifeline::health::Status;
use serde_json::{Value, json};

use super::cdp::Chromium;
use super::harness::{PageAgent, Target, publish_screenshot};
use crate::common::api::{get_json, post_json};
use crate::common::free_port;

const MIN: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

fn config(alpha: &str, beta: &str, gamma: &str, silence_from: &str, silence_to: &str) -> String {
    format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
[status_page]
title = "Acme <status>"
description = "Voice platform"
group_by = "team"
[defaults]
interval = "1h"
timeout = "1s"
unhealthy_threshold = 1
[defaults.backoff]
base = "1h"
max = "1h"
jitter = "0s"
[[checks]]
name = "alpha"
kind = "tcp"
address = "{alpha}"
labels = {{ team = "web" }}
[[checks]]
name = "beta"
kind = "tcp"
address = "{beta}"
labels = {{ team = "web" }}
[[checks]]
name = "gamma.db"
kind = "tcp"
address = "{gamma}"
labels = {{ team = "db" }}
critical = false
[[silences]]
matchers = {{ check = "gamma.db" }}
starts_at = {silence_from}
ends_at = {silence_to}
comment = "database <upgrade>"
"#
    )
}

/// 80 results of alpha over the last 80 minutes (every 10th failing, refused), the
/// matching transitions; a 30-minute outage of beta three days ago; the agent running
/// for the whole 31 days before.
fn seed(s: &lifeline::store::Store, now: SystemTime) {
    s.record_run(now - 31 * DAY, now - Duration::from_secs(1));
    s.record_transition(
        "alpha",
        now - 31 * DAY,
        Status::Unknown,
        Status::Healthy,
        None,
        "",
    );
    s.record_transition(
        "beta",
        now - 31 * DAY,
        Status::Unknown,
        Status::Healthy,
        None,
        "",
    );
    for i in (1..=80u32).rev() {
        let at = now - MIN * i;
        let failing = i % 10 == 3;
        let status = if failing {
            Status::Unhealthy
        } else {
            Status::Healthy
        };
        let latency = (!failing).then(|| Duration::from_micros(2000 + u64::from(i % 7) * 1500));
        s.record_sample("alpha", at, status, latency);
        if failing {
            s.record_transition(
                "alpha",
                at,
                Status::Healthy,
                Status::Unhealthy,
                Some(ErrorKind::Refused),
                "connect 10.0.0.9:5060: connection refused <x>",
            );
            s.record_transition(
                "alpha",
                at + MIN,
                Status::Unhealthy,
                Status::Healthy,
                None,
                "",
            );
        }
    }
    let outage = now - 3 * DAY;
    s.record_transition(
        "beta",
        outage,
        Status::Healthy,
        Status::Unhealthy,
        Some(ErrorKind::Timeout),
        "no answer",
    );
    s.record_transition(
        "beta",
        outage + 30 * MIN,
        Status::Unhealthy,
        Status::Healthy,
        None,
        "",
    );
    for i in 0..10u32 {
        s.record_sample(
            "beta",
            outage + MIN * (i * 5),
            if i < 6 {
                Status::Unhealthy
            } else {
                Status::Healthy
            },
            (i >= 6).then_some(Duration::from_millis(4)),
        );
    }
}

/// What the page shows of each check, read in the browser.
const PAGE_FACTS: &str = r#"JSON.stringify(Array.from(document.querySelectorAll('tr[data-check]')).map(tr => {
  const bar = tr.querySelector('.bar'), spark = tr.querySelector('svg.spark');
  const ups = {}; tr.querySelectorAll('.up').forEach(u => ups[u.dataset.window] = u.dataset.ratio ? Number(u.dataset.ratio) : null);
  return {name: tr.dataset.check, r: bar ? bar.dataset.r : '', paths: bar ? bar.querySelectorAll('path').length : 0,
          spark: spark ? Number(spark.dataset.n) : 0,
          points: spark ? spark.querySelector('polyline').getAttribute('points').trim().split(/\s+/).length : 0,
          uptime: ups};
}))"#;

fn code(status: &str) -> char {
    match status {
        "connecting" => '1',
        "healthy" => '2',
        "degraded" => '3',
        "unhealthy" => '4',
        "disconnected" => '5',
        _ => '0',
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_with_history_matches_the_api_in_chromium() {
    let alpha = Target::up().await;
    let beta = Target::up().await;
    let refused = format!("127.0.0.1:{}", free_port());
    let now = SystemTime::now();
    let rfc = |t: SystemTime| lifeline::time::rfc3339(t);
    let cfg = config(
        &alpha.address(),
        &beta.address(),
        &refused,
        &rfc(now - MIN),
        &rfc(now + DAY),
    );
    let a = PageAgent::start(&cfg, true).await;
    let s = Duration::from_secs(15);
    a.wait_status("alpha", Status::Healthy, s).await;
    a.wait_status("beta", Status::Healthy, s).await;
    a.wait_status("gamma.db", Status::Unhealthy, s).await;
    a.seed(|st| seed(st, now)).await;
    // An upcoming maintenance window, created over the API.
    let (code_, body) = post_json(
        &a.url("/api/v1/silences"),
        None,
        Some(&json!({"matchers": {"check": "beta"}, "starts_at": rfc(now + DAY), "ends_at": "2h", "comment": "switch swap"})),
    )
    .await;
    assert_eq!(code_, 200, "{body}");

    // Without JavaScript: the first response has every check, its bar and its uptime.
    let html = reqwest::get(a.url("/"))
        .await
        .expect("GET /")
        .text()
        .await
        .expect("body");
    for name in ["alpha", "beta", "gamma.db"] {
        let row = &html[html
            .find(&format!("<tr id=\"check-{name}\""))
            .unwrap_or_else(|| panic!("no row {name}"))..];
        let row = &row[..row.find("</tr>").expect("row end")];
        assert!(
            row.contains("data-window=\"24h\"") && row.contains("data-window=\"30d\""),
            "{row}"
        );
        if name != "gamma.db" {
            assert!(row.contains("class=\"bar\""), "{row}");
        }
    }
    assert!(
        html.contains("<title>Acme &lt;status&gt; · "),
        "escaped title"
    );
    assert!(
        html.contains("data-group=\"web\"")
            && html.contains("data-group=\"db\" data-status=\"down\"")
    );
    assert!(
        html.contains("data-incident=\"gamma.db\""),
        "incident banner"
    );
    assert!(
        html.contains("data-state=\"active\"") && html.contains("database &lt;upgrade&gt;"),
        "maintenance banner"
    );
    assert!(
        html.contains("data-state=\"upcoming\"") && html.contains("switch swap"),
        "upcoming maintenance"
    );
    assert!(html.contains("id=\"overall-chart\""), "overall score chart");
    assert!(
        html.contains("connection refused &lt;x&gt;"),
        "timeline with escaped messages"
    );

    let browser = Chromium::launch().await;
    let mut tab = browser.tab().await;
    tab.viewport(1280, 900).await;
    tab.navigate(&a.url("/")).await;
    let show = "JSON.stringify({live: document.body.dataset.live, tip: document.getElementById('tip').textContent})";
    tab.wait_true("document.body.dataset.live === 'open' && document.getElementById('counts').textContent.startsWith('3 checks')", s, show)
        .await;

    // Bars, sparklines and uptime: exactly what the history API says.
    let facts: Value =
        serde_json::from_str(tab.eval(PAGE_FACTS).await.as_str().expect("facts")).expect("json");
    let mut alpha_r = String::new();
    for f in facts.as_array().expect("rows") {
        let name = f["name"].as_str().expect("name");
        let (_, h) =
            get_json(&a.url(&format!("/api/v1/checks/{name}/history?since=30d&limit=60"))).await;
        let samples = h["samples"].as_array().expect("samples");
        let want: String = samples
            .iter()
            .rev()
            .map(|x| code(x["status"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(f["r"], want.as_str(), "{name}: bar vs API");
        let with_latency = samples
            .iter()
            .filter(|x| x["latency_ms"].is_number())
            .count();
        assert_eq!(
            f["spark"].as_u64(),
            Some(with_latency as u64),
            "{name}: sparkline vs API"
        );
        if with_latency > 0 {
            assert_eq!(
                f["points"].as_u64(),
                Some(with_latency as u64),
                "{name}: polyline points"
            );
        }
        for w in ["24h", "7d", "30d"] {
            let (_, u) =
                get_json(&a.url(&format!("/api/v1/checks/{name}/uptime?window={w}"))).await;
            match (u["uptime_ratio"].as_f64(), f["uptime"][w].as_f64()) {
                (Some(api), Some(page)) => assert!(
                    (api - page).abs() < 1e-3,
                    "{name} {w}: page {page} vs API {api}"
                ),
                (api, page) => assert_eq!(api, page, "{name} {w}"),
            }
        }
        if name == "alpha" {
            alpha_r = want;
        }
    }
    // The seeded figures themselves: 60 results, 6 failing, on the bar; beta's outage shows
    // in its 7-day uptime only.
    assert_eq!(alpha_r.len(), 60);
    assert_eq!(alpha_r.matches('4').count(), 6, "{alpha_r}");
    let beta_f = facts
        .as_array()
        .expect("rows")
        .iter()
        .find(|f| f["name"] == "beta")
        .expect("beta")
        .clone();
    assert!(beta_f["uptime"]["7d"].as_f64().expect("7d") < 0.999);
    assert_eq!(beta_f["uptime"]["24h"].as_f64(), Some(1.0));

    // Pointer: hovering the newest failing result shows its time, status and error.
    let idx = alpha_r.rfind('4').expect("a failing result");
    let pos = tab
        .eval(&format!(
            "(() => {{ const r = document.querySelector('#check-alpha .bar svg').getBoundingClientRect(); \
             return [r.left + ({idx} + 0.4) / 60 * r.width, r.top + r.height / 2]; }})()"
        ))
        .await;
    tab.mouse_move(pos[0].as_f64().expect("x"), pos[1].as_f64().expect("y"))
        .await;
    let tip_ok = format!(
        "(() => {{ const t = document.getElementById('tip'); return !t.hidden && t.dataset.state === 'loaded' \
         && t.textContent.includes('result {} of 60') && t.textContent.includes('unhealthy') \
         && t.textContent.includes('refused: connect 10.0.0.9:5060: connection refused <x>') && !!t.querySelector('time'); }})()",
        idx + 1
    );
    tab.wait_true(&tip_ok, s, show).await;
    tab.screenshot(&a.dir.path().join("status-page-hover.png"))
        .await;
    tab.mouse_move(5.0, 5.0).await;
    tab.wait_true("document.getElementById('tip').hidden", s, show)
        .await;

    // Keyboard: Tab reaches the bar; Home/ArrowRight walk the results, with latency.
    tab.eval("document.querySelector('#check-alpha a.name').focus()")
        .await;
    tab.key("Tab").await;
    tab.wait_true(
        "document.activeElement === document.querySelector('#check-alpha .bar')",
        s,
        "document.activeElement.outerHTML.slice(0, 200)",
    )
    .await;
    tab.key("Home").await;
    tab.key("ArrowRight").await;
    let first_ok = if alpha_r.as_bytes()[1] == b'2' {
        "t.textContent.includes('latency ')"
    } else {
        "true"
    };
    tab.wait_true(
        &format!("(() => {{ const t = document.getElementById('tip'); return !t.hidden && t.dataset.state === 'loaded' && t.textContent.includes('result 2 of 60') && {first_ok}; }})()"),
        s,
        show,
    )
    .await;
    tab.key("Escape").await;
    tab.wait_true("document.getElementById('tip').hidden", s, show)
        .await;

    // Groups collapse from the keyboard and say their status in text.
    tab.eval("document.querySelector('details[data-group=\"db\"] > summary').focus()")
        .await;
    tab.key("Enter").await;
    tab.wait_true(
        "!document.querySelector('details[data-group=\"db\"]').open",
        s,
        "document.querySelector('details[data-group=\"db\"]').outerHTML.slice(0, 300)",
    )
    .await;
    assert_eq!(
        tab.eval("document.querySelector('details[data-group=\"db\"] .gstat .txt').textContent")
            .await,
        "down"
    );
    tab.key("Enter").await;

    // Incident and maintenance banners, as text.
    let banners = tab.eval("Array.from(document.querySelectorAll('#notices .banner')).map(b => [b.className, b.textContent])").await;
    let text = banners.to_string();
    assert!(
        text.contains("Incident: gamma.db is unhealthy since"),
        "{text}"
    );
    assert!(
        text.contains("Maintenance in progress: check=gamma.db")
            && text.contains("database <upgrade>"),
        "{text}"
    );
    assert!(text.contains("Scheduled maintenance: check=beta"), "{text}");

    // A check failing live gets its incident banner without a reload; the timeline lists
    // the seeded changes.
    tab.eval("window.__same = 1").await;
    let mut beta = beta;
    beta.stop().await;
    assert!(a.agent.force_one("beta").await);
    a.wait_status("beta", Status::Unhealthy, s).await;
    tab.wait_true(
        "!!document.querySelector('[data-incident=\"beta\"]') && window.__same === 1",
        s,
        "JSON.stringify([document.getElementById('check-beta').dataset.status, document.getElementById('notices').textContent])",
    )
    .await;
    let items = tab
        .eval("document.querySelectorAll('#timeline-list li').length")
        .await;
    assert!(items.as_u64().is_some_and(|n| n >= 10), "{items}");

    // Light, dark by the browser's preference, and the explicit switch.
    let bg = "getComputedStyle(document.body).backgroundColor";
    assert_eq!(tab.eval(bg).await, "rgb(246, 248, 250)");
    tab.screenshot(&a.dir.path().join("status-page-1280.png"))
        .await;
    tab.color_scheme("dark").await;
    tab.wait_true(&format!("{bg} === 'rgb(13, 17, 23)'"), s, bg)
        .await;
    let bar_fill = tab
        .eval("getComputedStyle(document.querySelector('#check-alpha .bar path.r2')).stroke")
        .await;
    assert_eq!(bar_fill, "rgb(63, 185, 80)", "dark palette for the bars");
    tab.screenshot(&a.dir.path().join("status-page-dark.png"))
        .await;
    tab.eval("document.getElementById('theme-btn').click()")
        .await; // auto -> light
    tab.wait_true(
        &format!(
            "{bg} === 'rgb(246, 248, 250)' && document.documentElement.dataset.theme === 'light'"
        ),
        s,
        bg,
    )
    .await;
    tab.eval("document.getElementById('theme-btn').click()")
        .await; // light -> dark
    tab.color_scheme("light").await;
    tab.wait_true(&format!("{bg} === 'rgb(13, 17, 23)'"), s, bg)
        .await;
    tab.eval("document.getElementById('theme-btn').click(); localStorage.clear()")
        .await; // -> auto

    // A phone, 360 px: no sideways scrolling, bars still there.
    tab.viewport(360, 800).await;
    tab.wait_true(
        "document.documentElement.scrollWidth <= 360 && window.innerWidth === 360 \
         && document.querySelector('#check-alpha .bar svg').getBoundingClientRect().width > 100",
        s,
        "[document.documentElement.scrollWidth, window.innerWidth, document.querySelector('#check-alpha .bar svg').getBoundingClientRect().width]",
    )
    .await;
    tab.screenshot(&a.dir.path().join("status-page-360.png"))
        .await;
    for f in [
        "status-page-1280.png",
        "status-page-dark.png",
        "status-page-360.png",
    ] {
        let p = a.dir.path().join(f);
        assert!(
            std::fs::metadata(&p)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "{f} saved"
        );
        publish_screenshot(&p);
    }

    drop(tab);
    drop(browser);
    drop(alpha);
    a.stop().await;
}

#[test]
fn the_shipped_config_documents_the_status_page_section() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let src = std::fs::read_to_string(&path).expect("config.toml");
    let mut inside = false;
    let mut keys = Vec::new();
    let text: String = src
        .lines()
        .map(|l| {
            if l == "# [status_page]" {
                inside = true;
                return "[status_page]\n".to_string();
            }
            if inside {
                match l.strip_prefix("# ") {
                    Some(rest) if rest.contains(" = ") => {
                        keys.push(rest.split(' ').next().unwrap_or("").to_string());
                        return format!("{rest}\n");
                    }
                    _ => inside = false,
                }
            }
            format!("{l}\n")
        })
        .collect();
    assert_eq!(
        keys,
        [
            "title",
            "description",
            "logo_url",
            "group_by",
            "public",
            "theme"
        ]
    );
    let c = lifeline::config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let d = lifeline::config::StatusPageConfig::default();
    assert_eq!(
        (
            c.status_page.title.as_str(),
            c.status_page.public,
            c.status_page.theme
        ),
        (d.title.as_str(), false, d.theme)
    );
    assert_eq!(c.status_page.group_by.as_deref(), Some("team"));
}
