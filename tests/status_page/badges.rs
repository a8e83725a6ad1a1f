//! Badges: valid SVG (parsed by Chromium's XML parser), the right text and colour for
//! healthy, degraded and down, cacheable for 30 s; with `[status_page] public = true`
//! the page and the badges are readable without the basic auth every other route needs,
//! and the page shows no error text.

use std::time::{Duration, SystemTime};

use lifeline::health::Status;
use serde_json::{Value, json};

use super::cdp::Chromium;
use super::harness::{PageAgent, Target};
use crate::common::free_port;

fn config(up: &str, slow: &str, down: &str) -> String {
    format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
web_config = "web.yml"
[status_page]
public = true
[defaults]
interval = "1h"
timeout = "1s"
unhealthy_threshold = 1
[[checks]]
name = "up"
kind = "tcp"
address = "{up}"
[[checks]]
name = "slow"
kind = "tcp"
address = "{slow}"
degraded_latency = "0s"
[[checks]]
name = "down"
kind = "tcp"
address = "{down}"
"#
    )
}

/// Parses an SVG document in the browser: `{ok, label, value, fill, width}`.
const PARSE: &str = r#"(svg) => { const d = new DOMParser().parseFromString(svg, 'image/svg+xml');
  if (d.querySelector('parsererror') || d.documentElement.nodeName !== 'svg') return {ok: false};
  const t = d.querySelectorAll('text');
  return {ok: true, ns: d.documentElement.namespaceURI, label: t[0].textContent, value: t[1].textContent,
          fill: d.querySelector('rect.value').getAttribute('fill'), width: Number(d.documentElement.getAttribute('width'))}; }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badges_are_svg_with_the_right_text_and_colour_and_public_without_auth() {
    let up = Target::up().await;
    let slow = Target::up().await;
    let refused = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    std::fs::write(
        dir.path().join("web.yml"),
        format!("basic_auth_users:\n  ops: {hash}\n"),
    )
    .expect("web.yml");
    let a = PageAgent::start_in(
        dir,
        0,
        &config(&up.address(), &slow.address(), &refused),
        false,
    )
    .await;
    let s = Duration::from_secs(15);
    a.wait_status("up", Status::Healthy, s).await;
    a.wait_status("slow", Status::Degraded, s).await;
    a.wait_status("down", Status::Unhealthy, s).await;
    // A week of history for `up`: down for 1 % of it.
    let now = SystemTime::now();
    let week = Duration::from_secs(7 * 86_400);
    a.seed(|st| {
        st.record_run(now - week - Duration::from_secs(60), now);
        st.record_transition(
            "up",
            now - week - Duration::from_secs(30),
            Status::Unknown,
            Status::Healthy,
            None,
            "",
        );
        let outage = now - week / 2;
        st.record_transition("up", outage, Status::Healthy, Status::Unhealthy, None, "x");
        st.record_transition(
            "up",
            outage + week / 100,
            Status::Unhealthy,
            Status::Healthy,
            None,
            "",
        );
    })
    .await;

    let c = reqwest::Client::new();
    let mut svgs = Vec::new();
    for (path, label, value, fill) in [
        ("up/badge/status.svg", "up", "healthy", "#1a7f37"),
        ("slow/badge/status.svg", "slow", "degraded", "#b35900"),
        ("down/badge/status.svg", "down", "down", "#cf222e"),
        ("down/badge/latency.svg", "down latency", "down", "#cf222e"),
        (
            "up/badge/uptime.svg?window=7d",
            "up uptime 7d",
            "98.99%",
            "#cf222e",
        ),
        (
            "up/badge/uptime.svg?window=1h",
            "up uptime 1h",
            "100.00%",
            "#1a7f37",
        ),
        ("nope/badge/status.svg", "nope", "no such check", "#57606a"),
    ] {
        // No credentials: badges are public on a public status page.
        let r = c
            .get(a.url(&format!("/api/v1/checks/{path}")))
            .send()
            .await
            .expect("badge");
        let want = if path.starts_with("nope") { 404 } else { 200 };
        assert_eq!(r.status(), want, "{path}");
        assert_eq!(r.headers()["content-type"], "image/svg+xml; charset=utf-8");
        assert_eq!(r.headers()["cache-control"], "max-age=30");
        svgs.push((path, label, value, fill, r.text().await.expect("svg")));
    }
    let lat = c
        .get(a.url("/api/v1/checks/up/badge/latency.svg"))
        .send()
        .await
        .expect("latency")
        .text()
        .await
        .expect("svg");
    assert!(
        lat.contains(" ms</text>") && lat.contains("#1a7f37"),
        "{lat}"
    );

    let browser = Chromium::launch().await;
    let mut tab = browser.tab().await;
    tab.navigate("about:blank").await;
    for (path, label, value, fill, svg) in svgs {
        let v = tab
            .eval(&format!("({PARSE})({})", Value::String(svg.clone())))
            .await;
        assert_eq!(v["ok"], true, "{path} is not valid SVG: {svg}");
        assert_eq!(v["ns"], "http://www.w3.org/2000/svg");
        assert_eq!(v["label"], label, "{path}");
        if let Some(window) = path.split("window=").nth(1) {
            // The badge shows the uptime API's ratio, rounded down to 0.01 %. The two are
            // read moments apart and the check's first "connecting" moment (however long
            // the machine took to run the first probe) counts as down, so compare them
            // instead of a fixed figure: 7 days with a 1 % outage, or the last hour.
            let shown = v["value"].as_str().unwrap_or_default();
            let pct: f64 = shown
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{path}: {shown}"));
            let u: Value = c
                .get(a.url(&format!("/api/v1/checks/up/uptime?window={window}")))
                .basic_auth("ops", Some("s3cret"))
                .send()
                .await
                .expect("uptime")
                .json()
                .await
                .expect("uptime json");
            let ratio = u["uptime_ratio"].as_f64().expect("uptime_ratio") * 100.0;
            assert!(
                (pct - ratio).abs() <= 0.02,
                "{path}: badge {shown}, api {ratio}"
            );
            if window == "7d" {
                assert!((98.9..=99.0).contains(&pct), "{path}: {shown}");
                assert!(
                    ["#cf222e", "#b35900"].contains(&v["fill"].as_str().unwrap_or_default()),
                    "{path}"
                );
            } else {
                assert!(pct > 99.0, "{path}: {shown}");
                let want = if pct >= 99.9 { "#1a7f37" } else { "#b35900" };
                assert_eq!(v["fill"], want, "{path}: {shown}");
            }
        } else {
            assert_eq!(v["value"], value, "{path}");
            assert_eq!(v["fill"], fill, "{path}");
        }
        assert!(v["width"].as_f64().is_some_and(|w| w > 40.0), "{path}");
    }

    // Public: the page without credentials, without error text; the JSON API still closed.
    let page = c.get(a.url("/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(
        html.contains("data-incident=\"down\""),
        "incidents are public"
    );
    assert!(!html.contains("refused"), "no error text on a public page");
    assert!(
        !html.contains("href=\"health/"),
        "no API links on a public page"
    );
    for p in ["/health/detailed", "/api/v1/checks/up/history", "/metrics"] {
        assert_eq!(c.get(a.url(p)).send().await.expect(p).status(), 401, "{p}");
    }
    let ok = c
        .get(a.url("/health/detailed"))
        .basic_auth("ops", Some("s3cret"))
        .send()
        .await
        .expect("auth");
    assert_eq!(ok.status(), 200);
    // In the browser, the public page stays readable: a static snapshot, no error text.
    tab.navigate(&a.url("/")).await;
    tab.wait_true(
        "document.body.dataset.live === 'static' && document.getElementById('live-text').textContent.includes('refreshed every 30 seconds')",
        s,
        "JSON.stringify([document.body.dataset.live, document.getElementById('live-text').textContent])",
    )
    .await;
    assert_eq!(
        tab.eval("document.body.textContent.includes('refused')")
            .await,
        json!(false)
    );

    drop(tab);
    drop(browser);
    drop((up, slow));
    a.stop().await;
}
