//! `GET /client.js` used by a page on another origin listed in `allowed_origins`: it sees
//! a target stop, the agent go away, and everything come back after a restart.

use std::time::Duration;

use lifeline::health::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cdp::Chromium;
use super::harness::{PageAgent, Target};
use crate::common::accept_each;

/// Serves `html` to every request (the "application" on its own origin).
async fn app_server(html: String) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    accept_each(move |mut s| {
        let html = html.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                html.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(html.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    })
    .await
}

fn config(origin: &str, beta: &str) -> String {
    format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
allowed_origins = ["{origin}"]
[defaults]
interval = "200ms"
timeout = "1s"
unhealthy_threshold = 1
[defaults.backoff]
base = "100ms"
max = "300ms"
jitter = "50ms"
[[checks]]
name = "beta"
kind = "tcp"
address = "{beta}"
"#
    )
}

const LAST: &str = "JSON.stringify(window.reports.slice(-3))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_js_on_another_origin_follows_a_stop_and_an_agent_restart() {
    let mut beta = Target::up().await;
    // The agent's port is fixed up front so the application page can name it.
    let agent_port = crate::common::free_port();
    let page_tpl = |agent: u16| {
        format!(
            "<!doctype html><title>app</title><script type=\"module\">\
             import {{ subscribe }} from \"http://127.0.0.1:{agent}/client.js\";\
             window.reports = [];\
             window.stop = subscribe({{ checks: [\"beta\"], minDelayMs: 100, maxDelayMs: 800 }}, (h) => window.reports.push(h));\
             </script>"
        )
    };
    let (app, app_task) = app_server(page_tpl(agent_port)).await;
    let origin = format!("http://{app}");
    let cfg = config(&origin, &beta.address());
    let a = PageAgent::start_in(
        tempfile::tempdir().expect("tempdir"),
        agent_port,
        &cfg,
        false,
    )
    .await;
    let s = Duration::from_secs(20);
    a.wait_status("beta", Status::Healthy, s).await;

    // CORS: the listed origin gets the header, another origin does not.
    let c = reqwest::Client::new();
    let js = c
        .get(a.url("/client.js"))
        .header("origin", &origin)
        .send()
        .await
        .expect("client.js");
    assert_eq!(js.headers()["access-control-allow-origin"], origin.as_str());
    assert!(
        js.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/javascript")
    );
    let other = c
        .get(a.url("/health/detailed"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("detailed");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let events = c
        .get(a.url("/api/v1/events"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("events");
    assert_eq!(
        events.status(),
        403,
        "a foreign origin's event stream is refused"
    );

    let browser = Chromium::launch().await;
    let mut tab = browser.tab().await;
    tab.navigate(&format!("{origin}/")).await;
    let healthy = "(() => { const r = window.reports || []; const h = r[r.length - 1]; \
                   return !!h && h.connected && h.status === 'healthy' && h.checks.beta.status === 'healthy' \
                   && Object.keys(h.checks).length === 1 && typeof h.score === 'number'; })()";
    tab.wait_true(healthy, s, LAST).await;

    // The target stops: the application hears it from the event stream.
    let before = tab.eval("window.reports.length").await;
    beta.stop().await;
    tab.wait_true(
        "(() => { const h = window.reports[window.reports.length - 1]; \
         return h.connected && h.status === 'down' && ['unhealthy','disconnected'].includes(h.checks.beta.status) \
         && h.checks.beta.error_kind === 'refused'; })()",
        s,
        LAST,
    )
    .await;
    assert!(tab.eval("window.reports.length").await.as_u64() > before.as_u64());

    // The agent goes away: the client says so, and keeps retrying with backoff.
    let dir = a.stop().await;
    tab.wait_true(
        "window.reports[window.reports.length - 1].connected === false",
        s,
        LAST,
    )
    .await;
    beta.start().await;
    let a = PageAgent::start_in(dir, agent_port, &cfg, false).await;
    // Back: the resync from /health/detailed brings the state after the restart.
    tab.wait_true(healthy, s, LAST).await;
    let seen = tab
        .eval("window.reports.map(h => (h.connected ? 'up:' : 'gone:') + h.checks.beta.status).join(' ')")
        .await;
    let seen = seen.as_str().unwrap_or_default().to_string();
    assert!(seen.contains("gone:"), "{seen}");
    // stop() ends the subscription: a second subscriber hears the next change, the
    // stopped one does not.
    tab.eval(&format!(
        "import('http://127.0.0.1:{agent_port}/client.js').then(m => {{ window.r2 = []; \
         m.subscribe({{ checks: ['beta'] }}, (h) => window.r2.push(h)); }})"
    ))
    .await;
    tab.wait_true("!!window.r2 && window.r2.length > 0 && window.r2[window.r2.length - 1].checks.beta.status === 'healthy'", s, "JSON.stringify(window.r2)")
        .await;
    tab.eval("window.stop(); window.n = window.reports.length")
        .await;
    beta.stop().await;
    tab.wait_true(
        "window.r2[window.r2.length - 1].status === 'down'",
        s,
        "JSON.stringify(window.r2)",
    )
    .await;
    assert_eq!(
        tab.eval("window.reports.length === window.n").await,
        serde_json::Value::Bool(true)
    );

    drop(tab);
    drop(browser);
    app_task.abort();
    a.stop().await;
}
