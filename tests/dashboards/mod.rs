//! The Grafana dashboard and the Prometheus rules, proven against a real Prometheus
//! scraping a running agent, plus `promtool` checks of the rules and the live exposition.

mod prometheus;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lifeline::health::Status;
use lifeline::metrics::NotifyResult;
use regex::Regex;
use serde_json::Value;

use self::prometheus::Prometheus;
use crate::common::tls_peer::TlsPeer;
use crate::common::*;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn dashboard() -> Value {
    let text =
        std::fs::read_to_string(repo("dashboards/lifeline-overview.json")).expect("read dashboard");
    serde_json::from_str(&text).expect("dashboard is JSON")
}

/// `(where, text)` pairs.
type Located = Vec<(String, String)>;

/// Every PromQL expression in the dashboard: `(where, expr)`. Template variable queries
/// come back as `label_values(...)` text (Grafana's function, not PromQL).
fn dashboard_exprs(d: &Value) -> (Located, Located) {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    let title = m.get("refId").and_then(Value::as_str).unwrap_or("");
                    out.push((format!("{path} {title}"), e.clone()));
                }
                for (k, x) in m {
                    if k != "templating" {
                        let name = m
                            .get("title")
                            .or(m.get("name"))
                            .and_then(Value::as_str)
                            .unwrap_or(k);
                        walk(x, &format!("{path}/{name}"), out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, path, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(d, "", &mut exprs);
    let vars = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| {
            let q = match &v["query"] {
                Value::String(s) => s.clone(),
                o => o["query"].as_str().expect("variable query").to_string(),
            };
            (v["name"].as_str().unwrap_or("?").to_string(), q)
        })
        .collect();
    (exprs, vars)
}

/// Grafana's template variables replaced by concrete values Prometheus accepts.
fn substitute(expr: &str) -> String {
    let re = Regex::new(r"\$\{?(\w+)(?::\w+)?\}?").expect("regex");
    re.replace_all(expr, |c: &regex::Captures<'_>| match &c[1] {
        "__rate_interval" => "1m".to_string(),
        "__interval" => "15s".to_string(),
        "__range" => "5m".to_string(),
        "instance" | "kind" | "check" => ".*".to_string(),
        other => panic!("expression uses an undefined variable `${other}`: {expr}"),
    })
    .into_owned()
}

/// Metric names an expression reads (not recording-rule names, not label values).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = Regex::new(r#"(?:^|[^A-Za-z0-9_:"])((?:lifeline|process)_[A-Za-z0-9_]+)\b(:?)"#)
        .expect("regex");
    re.captures_iter(expr)
        .filter(|c| &c[2] != ":")
        .map(|c| c[1].to_string())
        .collect()
}

#[test]
fn dashboard_is_an_importable_grafana_dashboard() {
    let d = dashboard();
    assert_eq!(d["uid"], "lifeline-overview", "fixed uid");
    assert!(d["schemaVersion"].as_u64().expect("schemaVersion") >= 39);
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    assert!(
        d["id"].is_null(),
        "exported dashboards carry no database id"
    );
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    assert_eq!(vars, ["instance", "kind", "check"]);
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut titles = BTreeMap::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().expect("x") + g["w"].as_u64().expect("w") <= 24,
            "panel wider than the grid"
        );
        if p["type"] == "row" {
            continue;
        }
        titles.insert(
            p["title"].as_str().expect("title").to_string(),
            p["type"].as_str().expect("type").to_string(),
        );
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {} datasource",
            p["title"]
        );
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "panel {} says what it answers",
            p["title"]
        );
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}");
        }
    }
    for v in d["templating"]["list"].as_array().expect("variables") {
        assert_eq!(v["datasource"]["uid"], "${DS_PROMETHEUS}");
    }
    // The panels the issue asks for.
    for (title, kind) in [
        ("Overall score", "stat"),
        ("Overall status", "stat"),
        ("Status of every check", "state-timeline"),
        ("Latency quantiles", "timeseries"),
        ("Failures by error kind", "timeseries"),
        ("Session reconnects", "timeseries"),
        ("Backoff delay", "timeseries"),
        ("Scheduler lag", "timeseries"),
        ("Notification delivery", "timeseries"),
        ("Notification queue depth and latency", "timeseries"),
        ("Plugins", "table"),
        ("TLS certificate expiry", "bargauge"),
    ] {
        assert_eq!(
            titles.get(title).map(String::as_str),
            Some(kind),
            "panel `{title}`"
        );
    }
    // Only SPEC §6 names (as src/metrics.rs registers them) and process_* are used.
    let src = [
        "src/metrics/mod.rs",
        "src/metrics/series.rs",
        "src/metrics/families.rs",
    ]
    .iter()
    .map(|p| std::fs::read_to_string(repo(p)).expect("metrics source"))
    .collect::<String>();
    let (exprs, vars) = dashboard_exprs(&d);
    for (at, e) in exprs.iter().chain(vars.iter()) {
        for name in metric_names(e) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                name.starts_with("process_") || src.contains(&format!("\"{family}\"")),
                "{at}: `{name}` is not a metric the agent defines"
            );
        }
    }
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let promtool = require_bin("promtool", "prometheus", &["/usr/bin"]);
    let run = |args: &[&str]| {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(repo("dashboards"))
            .output()
            .expect("run promtool");
        let text = output_text(&out);
        assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
        text
    };
    let checked = run(&["check", "rules", "lifeline.rules.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run(&["test", "rules", "lifeline.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// A WebSocket server that accepts every handshake and answers pings (for a session check).
async fn ws_server() -> (String, tokio::task::JoinHandle<()>) {
    let (addr, task) = accept_each(|s| {
        tokio::spawn(async move {
            if let Ok(mut ws) = tokio_tungstenite::accept_async(s).await {
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(m).await.is_err() {
                        break;
                    }
                }
            }
        });
    })
    .await;
    (format!("ws://{addr}/"), task)
}

/// An agent with a healthy probe check, a failing critical probe check and a healthy
/// session check; the alert engine's and plugin loader's metrics fed through the same
/// typed API those modules use.
async fn agent_with_data() -> (TestAgent, Vec<tokio::task::JoinHandle<()>>, TlsPeer) {
    let (tcp, t1) = tcp_sink().await;
    let (ws, t2) = ws_server().await;
    // A certificate expiring in 2 days: the TLS panel and the expiry alert have data.
    let peer = TlsPeer::start(2).await;
    let refused = format!("127.0.0.1:{}", free_port());
    let cert = format!(
        "[[checks]]\nname = \"cert\"\nkind = \"tls\"\naddress = \"localhost:{}\"\nca_file = \"{}\"\n",
        peer.addr.port(),
        peer.ca.display()
    );
    let a = TestAgent::start(&agent_toml(&format!(
        r#"[defaults]
interval = "200ms"
timeout = "1s"
unhealthy_threshold = 1
{}{}{}{cert}"#,
        tcp_check("web", tcp, "labels = { team = \"web\" }\n"),
        tcp_check("db", refused, "critical = true\n"),
        ws_session_check("pbx-ws", &ws, ""),
    )))
    .await;
    let m = &a.agent.shared.metrics;
    m.reload(true); // as `lifeline run` does after loading its config
    m.notification("ops", NotifyResult::Sent);
    m.notification("pager", NotifyResult::Failed);
    m.notification_queue("ops", 0);
    m.notification_queue("pager", 3);
    m.notification_latency("ops", Duration::from_millis(120));
    m.plugin_loaded("example", "1.2.0", "1");
    a.wait_status("web", Status::Healthy, Duration::from_secs(10))
        .await;
    a.wait_status("db", Status::Unhealthy, Duration::from_secs(10))
        .await;
    a.wait_status("pbx-ws", Status::Healthy, Duration::from_secs(10))
        .await;
    a.wait_status("cert", Status::Degraded, Duration::from_secs(10))
        .await;
    (a, vec![t1, t2], peer)
}

/// Sample names in a text exposition.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_rule_expression_runs_against_a_real_prometheus() {
    let (a, tasks, _peer) = agent_with_data().await;
    let rules = repo("dashboards/lifeline.rules.yml");
    let prom = Prometheus::start(&a.addr.to_string(), &[&rules]).await;
    let http = reqwest::Client::new();

    // Scraped a few times (rates need two samples).
    prom.wait_series(
        r#"count_over_time(up{job="lifeline"}[1m]) >= 3"#,
        Duration::from_secs(30),
    )
    .await;
    let up = prom.query(r#"up{job="lifeline"}"#).await.expect("up");
    assert_eq!(
        up[0]["value"][1], "1",
        "the agent is scraped successfully: {up:?}"
    );
    // Counters moving after the first scrapes, as live notifiers make them.
    let m = a.agent.shared.metrics.clone();
    m.notification("ops", NotifyResult::Sent);
    m.notification("pager", NotifyResult::Failed);
    m.notification_latency("ops", Duration::from_millis(80));
    prom.wait_series(
        r#"increase(lifeline_notifications_total{notifier="pager",result="failed"}[1m]) > 0"#,
        Duration::from_secs(15),
    )
    .await;

    let metrics = http
        .get(a.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let exported = exported_names(&metrics);

    // The dashboard: every panel and annotation expression parses and returns series.
    let d = dashboard();
    let (exprs, vars) = dashboard_exprs(&d);
    assert!(exprs.len() >= 25, "found only {} expressions", exprs.len());
    let mut failures = Vec::new();
    for (at, e) in &exprs {
        let q = substitute(e);
        match prom.query(&q).await {
            Err(err) => failures.push(format!("{at}: `{q}` does not run: {err}")),
            Ok(r) if r.is_empty() => failures.push(format!("{at}: `{q}` returned no series")),
            Ok(_) => {}
        }
        for name in metric_names(e) {
            if !exported.contains(&name) {
                failures.push(format!("{at}: `{name}` is not exported by the agent"));
            }
        }
    }
    // Template variables: label_values(selector, label).
    let lv = Regex::new(r"^\s*label_values\((.+),\s*(\w+)\s*\)\s*$").expect("regex");
    for (name, q) in &vars {
        let c = lv
            .captures(q)
            .unwrap_or_else(|| panic!("variable {name}: unexpected query {q}"));
        let (sel, label) = (substitute(&c[1]), &c[2]);
        match prom.query(&sel).await {
            Err(err) => failures.push(format!("variable {name}: `{sel}` does not run: {err}")),
            Ok(r) => {
                let values: BTreeSet<&str> = r
                    .iter()
                    .filter_map(|s| s["metric"][label].as_str())
                    .collect();
                if values.is_empty() {
                    failures.push(format!("variable {name}: `{sel}` has no `{label}` values"));
                }
                if name == "check" {
                    assert_eq!(values, BTreeSet::from(["cert", "db", "pbx-ws", "web"]));
                }
            }
        }
        for m in metric_names(q) {
            if !exported.contains(&m) {
                failures.push(format!(
                    "variable {name}: `{m}` is not exported by the agent"
                ));
            }
        }
    }

    // The rules, as loaded and evaluated by Prometheus itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let groups = loop {
        let r = prom.api("rules", &[]).await;
        let groups = r["data"]["groups"].as_array().cloned().unwrap_or_default();
        let all: Vec<&Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let evaluated = !all.is_empty()
            && all.iter().all(|r| {
                r["health"] == "ok"
                    && !r["lastEvaluation"]
                        .as_str()
                        .unwrap_or("0001")
                        .starts_with("0001")
            });
        if evaluated {
            break groups;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "rules not all evaluated ok within 30s: {r:#}\n{}",
                prom.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut n_rules = 0;
    for g in &groups {
        for r in g["rules"].as_array().expect("rules") {
            n_rules += 1;
            let (name, q) = (
                r["name"].as_str().expect("name"),
                r["query"].as_str().expect("query"),
            );
            let res = prom.query(q).await;
            if let Err(e) = &res {
                failures.push(format!("rule {name}: `{q}` does not run: {e}"));
            }
            for m in metric_names(q) {
                if !exported.contains(&m) && m != "up" {
                    failures.push(format!("rule {name}: `{m}` is not exported by the agent"));
                }
            }
            if r["type"] == "recording" {
                if res.is_ok_and(|s| s.is_empty()) {
                    failures.push(format!("recording rule {name}: `{q}` returned no series"));
                }
                if prom.query(name).await.is_ok_and(|s| s.is_empty()) {
                    failures.push(format!("recording rule {name}: no recorded series"));
                }
            }
        }
    }
    assert!(n_rules >= 15, "only {n_rules} rules loaded");

    // The alerts that must (and must not) be active for this agent's state.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let want = [
        ("LifelineCheckFailing", "check", "db"),
        ("LifelineNotificationsFailing", "notifier", "pager"),
        ("LifelineNotificationBacklog", "notifier", "pager"),
        ("LifelineTLSCertificateExpiring", "check", "cert"),
    ];
    let active = loop {
        let r = prom.api("alerts", &[]).await;
        let active: BTreeSet<(String, String)> = r["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let l = &a["labels"];
                let who = l["check"].as_str().or(l["notifier"].as_str()).unwrap_or("");
                (
                    l["alertname"].as_str().unwrap_or("").to_string(),
                    who.to_string(),
                )
            })
            .collect();
        if want
            .iter()
            .all(|(n, _, w)| active.contains(&(n.to_string(), w.to_string())))
        {
            break active;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("expected alerts {want:?} to be active, got {active:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (name, who) in [
        ("LifelineCheckFailing", "web"),
        ("LifelineCheckFailing", "pbx-ws"),
        ("LifelineNotificationsFailing", "ops"),
        ("LifelineAgentDown", ""),
        ("LifelineAgentAbsent", ""),
        ("LifelineOverallDown", ""),
        ("LifelineConfigReloadFailed", ""),
        ("LifelineStoreErrors", ""),
        ("LifelineTLSCertificateExpired", ""),
    ] {
        assert!(
            !active
                .iter()
                .any(|(n, w)| n == name && (who.is_empty() || w == who)),
            "{name} {who} must not be active: {active:?}"
        );
    }

    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
    drop(prom);
    for t in tasks {
        t.abort();
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_exposition_passes_promtool_check_metrics() {
    let promtool = require_bin("promtool", "prometheus", &["/usr/bin"]);
    let (a, tasks, _peer) = agent_with_data().await;
    let body = api::get_text(&a.url("/metrics")).await;
    for family in [
        "lifeline_check_info",
        "lifeline_check_latency_seconds_bucket",
        "lifeline_session_reconnects_total",
        "lifeline_notifications_total",
        "lifeline_plugin_info",
        "lifeline_check_tls_not_after_timestamp_seconds",
        "process_cpu_seconds_total",
    ] {
        assert!(
            exported_names(&body).contains(family),
            "{family} missing from /metrics"
        );
    }
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn promtool");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, body.as_bytes())
        .await
        .expect("write");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("promtool finished")
        .expect("promtool ran");
    let text = output_text(&out);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "promtool check metrics:\n{text}"
    );
    for t in tasks {
        t.abort();
    }
    a.stop().await;
}
