//! 1,000 checks, each with a full result bar in the store: the page's first contentful
//! paint, measured by Chromium's Performance API, and the size of the first response.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use lifeline::health::Status;

use super::cdp::Chromium;
use super::harness::{PageAgent, Target};

const N: usize = 1000;
/// The target is 300 ms on an idle machine (docs/status-page.md); the assertion leaves
/// room for a machine shared with parallel builds and only catches a page that got slow.
const FCP_LIMIT_MS: f64 = 1500.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_checks_first_paint() {
    let target = Target::up().await;
    let mut cfg = String::from(
        "[agent]\ndata_dir = \"{dir}/data\"\n[status_page]\ngroup_by = \"team\"\n\
         [defaults]\ninterval = \"1h\"\ntimeout = \"2s\"\n",
    );
    for i in 0..N {
        let _ = write!(
            cfg,
            "[[checks]]\nname = \"check-{i:04}\"\nkind = \"tcp\"\naddress = \"{}\"\nlabels = {{ team = \"team-{}\" }}\n",
            target.address(),
            i % 10
        );
    }
    let a = PageAgent::start(&cfg, false).await;
    let states = a.agent.states().clone();
    crate::common::wait_for(Duration::from_secs(60), "every check healthy", || {
        (states
            .all()
            .iter()
            .filter(|s| s.status == Status::Healthy)
            .count()
            == N)
            .then_some(())
    })
    .await;
    let now = SystemTime::now();
    a.seed(|st| {
        st.record_run(now - Duration::from_secs(31 * 86_400), now);
        for i in 0..N {
            let name = format!("check-{i:04}");
            for k in 1..=60u32 {
                let failing = (i + k as usize).is_multiple_of(17);
                let status = if failing {
                    Status::Unhealthy
                } else {
                    Status::Healthy
                };
                let latency =
                    (!failing).then(|| Duration::from_micros(500 + u64::from(k % 9) * 300));
                st.record_sample(
                    &name,
                    now - Duration::from_secs(u64::from(k) * 60),
                    status,
                    latency,
                );
            }
        }
    })
    .await;

    let t = tokio::time::Instant::now();
    let html = reqwest::get(a.url("/"))
        .await
        .expect("GET /")
        .text()
        .await
        .expect("body");
    let server = t.elapsed();
    assert_eq!(html.matches("<tr id=\"check-").count(), N);
    assert_eq!(html.matches("class=\"bar\"").count(), N);

    let browser = Chromium::launch().await;
    let mut tab = browser.tab().await;
    tab.viewport(1280, 900).await;
    let fcp_js = "new Promise(resolve => { const f = () => { const e = performance.getEntriesByName('first-contentful-paint')[0]; \
                  const n = performance.getEntriesByType('navigation')[0]; if (e && n.loadEventEnd > 0) resolve([e.startTime, n.responseEnd, n.responseStart, n.domContentLoadedEventEnd]); else setTimeout(f, 20); }; f(); })";
    let mut runs = Vec::new();
    for _ in 0..3 {
        tab.navigate(&a.url("/")).await;
        tab.wait_true(
            "document.readyState === 'complete'",
            Duration::from_secs(30),
            "document.readyState",
        )
        .await;
        let v = tab.eval(fcp_js).await;
        let ms = |i: usize| v[i].as_f64().unwrap_or(f64::NAN).round();
        runs.push((ms(0), ms(1), ms(2), ms(3)));
    }
    let rows = tab
        .eval("document.querySelectorAll('tr[data-check]').length")
        .await;
    assert_eq!(rows.as_u64(), Some(N as u64));
    // The first load warms the browser; the best of the next two is the figure reported.
    let best =
        runs[1..].iter().copied().fold(
            (f64::MAX, 0.0, 0.0, 0.0),
            |b, r| if r.0 < b.0 { r } else { b },
        );
    println!(
        "status page, {N} checks: {} KiB, whole response in {} ms; first contentful paint {:.0} ms \
         (first byte {:.0} ms, last byte {:.0} ms, DOMContentLoaded {:.0} ms); \
         loads (fcp, last byte, first byte, dcl): {runs:?}",
        html.len() / 1024,
        server.as_millis(),
        best.0,
        best.2,
        best.1,
        best.3
    );
    assert!(
        best.0 <= FCP_LIMIT_MS,
        "first contentful paint {:.0} ms",
        best.0
    );

    drop(tab);
    drop(browser);
    a.stop().await;
}
