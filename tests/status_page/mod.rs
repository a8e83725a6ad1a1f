//! The status page at `GET /`: server-side first render, and live updates in a real
//! headless Chromium (screenshots saved under `target/test-artifacts/`).

mod badges;
mod cdp;
mod client;
mod harness;
mod history;
mod perf;

use std::path::PathBuf;
use std::time::Duration;

use lifeline::health::Status;
use serde_json::Value;

use self::cdp::Chromium;
use crate::common::*;

const HOSTILE: &str = "</script><b id=pwned>x</b><!--";

fn config(alpha: &str, beta: &str, gamma: &str) -> String {
    format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
[defaults]
interval = "200ms"
timeout = "1s"
unhealthy_threshold = 1
[[checks]]
name = "alpha"
kind = "tcp"
address = "{alpha}"
labels = {{ team = "{HOSTILE}" }}
[[checks]]
name = "beta"
kind = "tcp"
address = "{beta}"
[[checks]]
name = "gamma.db"
kind = "tcp"
address = "{gamma}"
critical = false
"#
    )
}

fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-artifacts").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_response_lists_every_check_without_javascript() {
    let (alpha, t1) = tcp_sink().await;
    let refused = format!("127.0.0.1:{}", free_port());
    let (beta, t2) = tcp_sink().await;
    let a = TestAgent::start(&config(&alpha, &beta, &refused)).await;
    a.wait_status("alpha", Status::Healthy, Duration::from_secs(10))
        .await;
    a.wait_status("beta", Status::Healthy, Duration::from_secs(10))
        .await;
    a.wait_status("gamma.db", Status::Unhealthy, Duration::from_secs(10))
        .await;

    let r = reqwest::get(a.url("/")).await.expect("GET /");
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    let html = r.text().await.expect("body");

    // Every check, with status text, score and colour band, in the HTML itself.
    for (name, status, band, score) in [
        ("alpha", "healthy", "green", "100"),
        ("beta", "healthy", "green", "100"),
        ("gamma.db", "unhealthy", "red", "0"),
    ] {
        let start = html
            .find(&format!("<tr id=\"check-{name}\" data-check=\"{name}\" data-status=\"{status}\" class=\"band-{band}\">"))
            .unwrap_or_else(|| panic!("no {status}/{band} row for {name} in:\n{html}"));
        let row = &html[start..start + html[start..].find("</tr>").expect("row end")];
        assert!(
            row.contains(&format!("<span class=\"txt\">{status}</span>")),
            "{row}"
        );
        assert!(
            row.contains(&format!("<td class=\"score num\">{score}</td>")),
            "{row}"
        );
    }
    let gamma = &html[html.find("data-check=\"gamma.db\"").expect("gamma")..];
    assert!(
        gamma[..gamma.find("</tr>").expect("end")].contains("<span class=\"ek\">refused</span>")
    );
    // Overall: two healthy, one (non-critical) failing = degraded, score 66.7.
    assert!(
        html.contains("<span class=\"big\" id=\"overall-score\">67</span>"),
        "overall score"
    );
    assert!(html.contains("data-status=\"degraded\""), "overall status");
    // Hostile text only ever appears escaped; the embedded JSON cannot end its element.
    assert!(!html.contains(HOSTILE), "raw label value in the page");
    assert!(!html.contains("<b id=pwned>"), "raw markup in the page");
    assert_eq!(
        html.matches("</script>").count(),
        1,
        "only the page's own script ends"
    );
    // Self-contained: no external resource, and the CSP nonce matches the inline script.
    assert!(
        !html.contains("https://") && !html.contains("<link"),
        "external resource"
    );
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("nonce");
    assert!(
        html.contains(&format!("<script nonce=\"{nonce}\">")),
        "script nonce"
    );
    assert!(
        csp.contains("connect-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let again = reqwest::get(a.url("/")).await.expect("GET /");
    assert!(
        !again.headers()["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains(nonce),
        "fresh nonce"
    );

    t1.abort();
    t2.abort();
    a.stop().await;
}

/// Answers the page's history and uptime requests with canned SPEC-shaped bodies.
const HISTORY_STUB: &str = r#"(() => {
  const now = Date.now(), iso = ms => new Date(now - ms).toISOString();
  const samples = [];
  for (let i = 0; i < 40; i++) samples.push({at: iso(i * 5000), status: i % 9 === 3 ? 'unhealthy' : 'healthy', latency_ms: i % 9 === 3 ? null : 2 + (i % 7) * 1.5});
  const history = {check: 'gamma.db', transitions: [
    {at: iso(1000), status: 'unhealthy', previous_status: 'healthy', error_kind: 'refused', message: '<img src=x onerror=alert(1)>'},
    {at: iso(600000), status: 'healthy', previous_status: 'connecting', error_kind: null, message: ''},
    {at: iso(605000), status: 'connecting', previous_status: 'unknown', error_kind: null, message: ''}], samples};
  const json = b => Promise.resolve(new Response(JSON.stringify(b), {status: 200, headers: {'content-type': 'application/json'}}));
  const real = window.fetch.bind(window);
  window.fetch = (u, o) => String(u).includes('/history') ? json(history)
    : String(u).includes('/uptime') ? json({window: '24h', uptime_ratio: 0.975, samples: 40, agent_down_seconds: 0})
    : real(u, o);
  return true;
})()"#;

/// What the page shows for the check rows, for failure messages.
const SHOW: &str = r#"JSON.stringify({live: document.body.dataset.live,
  rows: Array.from(document.querySelectorAll('tr[data-check]')).map(r => [r.dataset.check, r.dataset.status, r.className]),
  overall: document.getElementById('overall-score').textContent})"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium_turns_a_stopped_target_red_live() {
    let (alpha, t1) = tcp_sink().await;
    let (beta, beta_task) = tcp_sink().await;
    let refused = format!("127.0.0.1:{}", free_port());
    let a = TestAgent::start(&config(&alpha, &beta, &refused)).await;
    a.wait_status("alpha", Status::Healthy, Duration::from_secs(10))
        .await;
    a.wait_status("beta", Status::Healthy, Duration::from_secs(10))
        .await;
    a.wait_status("gamma.db", Status::Unhealthy, Duration::from_secs(10))
        .await;

    let browser = Chromium::launch().await;
    let mut tab = browser.tab().await;
    tab.navigate(&a.url("/")).await;
    let s = Duration::from_secs(15);
    tab.wait_true("document.readyState === 'complete' && document.querySelectorAll('tr[data-check]').length === 3", s, SHOW)
        .await;
    // The script ran under the page's CSP and subscribed to /api/v1/events.
    tab.wait_true("document.body.dataset.live === 'open'", s, SHOW)
        .await;
    let rows = tab
        .eval("Array.from(document.querySelectorAll('tr[data-check]')).map(r => [r.dataset.check, r.dataset.status, r.className])")
        .await;
    assert_eq!(
        rows,
        serde_json::json!([
            ["alpha", "healthy", "band-green"],
            ["beta", "healthy", "band-green"],
            ["gamma.db", "unhealthy", "band-red"]
        ])
    );
    assert_eq!(
        tab.eval("document.getElementById('pwned') === null").await,
        Value::Bool(true),
        "label markup ran"
    );

    // Stop beta's target: its row must turn red without a reload.
    tab.eval("window.__sameDocument = 'yes'").await;
    beta_task.abort();
    let red_row = "(() => { const r = document.getElementById('check-beta'); return r.classList.contains('band-red') \
                   && ['unhealthy','disconnected'].includes(r.dataset.status) \
                   && r.querySelector('td.score').textContent === '0' \
                   && r.querySelector('.ek').textContent === 'refused'; })()";
    tab.wait_true(red_row, s, SHOW).await;
    assert_eq!(
        tab.eval("window.__sameDocument").await,
        "yes",
        "the page was reloaded"
    );
    // The colour really is the red of the palette, and the status is also said in text.
    let badge = tab
        .eval("getComputedStyle(document.querySelector('#check-beta .badge')).backgroundColor")
        .await;
    assert_eq!(badge, "rgb(207, 34, 46)");
    let text = tab
        .eval("document.querySelector('#check-beta .badge .txt').textContent")
        .await;
    assert!(text == "unhealthy" || text == "disconnected", "{text}");
    tab.wait_true(
        "document.getElementById('announcer').textContent.includes('beta is now')",
        s,
        SHOW,
    )
    .await;
    // The overall score follows (beta is critical: partial, (100 + 0 + 0) / 3).
    tab.wait_true(
        "document.getElementById('overall-score').textContent === '33' && document.getElementById('overall').dataset.status === 'partial'",
        s,
        SHOW,
    )
    .await;
    tab.screenshot(&artifact("status-page.png")).await;

    // The detail view opens in place and copes with or without a history store.
    tab.eval("document.querySelector('#check-beta a.name').click()")
        .await;
    tab.wait_true(
        "document.getElementById('detail').open && document.getElementById('detail-title').textContent === 'beta' \
         && ['loaded','unavailable'].includes(document.getElementById('detail-history').dataset.state)",
        s,
        "document.getElementById('detail').outerHTML",
    )
    .await;
    // The full state is fetched for the detail view (events carry only headline fields).
    tab.wait_true(
        "(() => { const dt = Array.from(document.querySelectorAll('#detail-facts dt')).find(d => d.textContent === 'Failures in a row'); \
         return !!dt && Number(dt.nextElementSibling.textContent) >= 1; })()",
        s,
        "document.getElementById('detail-facts').textContent",
    )
    .await;
    let facts = tab
        .eval("document.getElementById('detail-facts').textContent")
        .await;
    assert!(
        facts.as_str().is_some_and(|f| f.contains("refused")),
        "{facts}"
    );
    tab.eval("document.getElementById('detail-close').click()")
        .await;
    tab.wait_true("!document.getElementById('detail').open", s, SHOW)
        .await;

    // With a history store (SPEC §5 history shape, served here by a stand-in for the
    // store's route): latency chart and transitions, newest first, text escaped.
    tab.eval(HISTORY_STUB).await;
    tab.eval("document.getElementById('check-gamma.db').querySelector('a.name').click()")
        .await;
    tab.wait_true(
        "document.getElementById('detail-history').dataset.state === 'loaded' \
         && document.querySelectorAll('#detail-history ol.transitions li').length === 3 \
         && !!document.querySelector('#detail-history svg.spark polyline') \
         && document.getElementById('detail-uptime').textContent === 'Uptime (24h): 97.50 %'",
        s,
        "document.getElementById('detail-history').outerHTML",
    )
    .await;
    let first = tab
        .eval("document.querySelector('#detail-history ol.transitions li .msg').textContent")
        .await;
    assert_eq!(first, "refused: <img src=x onerror=alert(1)>");
    assert_eq!(
        tab.eval("document.querySelector('#detail-history img') === null")
            .await,
        Value::Bool(true)
    );
    tab.screenshot(&artifact("status-page-detail.png")).await;
    tab.eval("document.getElementById('detail-close').click()")
        .await;
    tab.wait_true("!document.getElementById('detail').open", s, SHOW)
        .await;
    // The hostile label is shown as text in alpha's detail view.
    tab.eval("document.querySelector('#check-alpha a.name').click()")
        .await;
    tab.wait_true("document.getElementById('detail').open", s, SHOW)
        .await;
    let labels = tab
        .eval("document.getElementById('detail-facts').textContent")
        .await;
    assert!(
        labels.as_str().is_some_and(|l| l.contains(HOSTILE)),
        "{labels}"
    );
    assert_eq!(
        tab.eval("document.getElementById('pwned') === null").await,
        Value::Bool(true)
    );
    tab.eval("document.getElementById('detail-close').click()")
        .await;

    // On a phone: no horizontal scrolling, every row still readable.
    tab.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    )
    .await;
    tab.wait_true(
        "document.documentElement.scrollWidth <= window.innerWidth && window.innerWidth <= 400",
        s,
        "[document.documentElement.scrollWidth, window.innerWidth]",
    )
    .await;
    tab.screenshot(&artifact("status-page-phone.png")).await;

    drop(tab);
    drop(browser);
    t1.abort();
    a.stop().await;
}
