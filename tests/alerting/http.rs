//! Slack and webhook notifiers against a real HTTP receiver; retries, drops, restarts,
//! storm grouping and the silences API end to end.

use std::time::Duration;

use hmac::Mac;
use lifeline::health::Status;

use super::{AlertAgent, Target, agent_section, metric, notifications_series, tcp_check, webhook};
use crate::common::receivers::HttpReceiver;
use crate::common::{api, wait_for};

const T: Duration = Duration::from_secs(10);

fn route(notifiers: &str, extra: &str) -> String {
    format!("[[routes]]\nnotifiers = [{notifiers}]\nfor = \"0s\"\ngroup_wait = \"0s\"\n{extra}\n")
}

/// Webhook `hook` to `url` (plus `hook_extra`), routed at once, for tcp check `db` on
/// `target`.
fn hook_for_db(dir: &std::path::Path, url: &str, hook_extra: &str, target: &str) -> String {
    format!(
        "{}{}{}{}",
        agent_section(dir),
        webhook("hook", url, hook_extra),
        route("\"hook\"", ""),
        tcp_check("db", target, ""),
    )
}

#[tokio::test]
async fn slack_and_webhook_get_firing_then_resolved_with_a_valid_signature() {
    let dir = tempfile::tempdir().unwrap();
    let rx = HttpReceiver::start().await;
    let mut target = Target::up().await;
    let config = format!(
        "{}{}[[notifiers]]\nname = \"slack\"\nkind = \"slack\"\nwebhook_url = \"{}\"\n{}{}",
        agent_section(dir.path()),
        webhook(
            "hook",
            &rx.url("/hook"),
            "hmac_secret = \"hmac-key-0123\"\nheaders = { X-Team = \"ops\" }"
        ),
        rx.url("/slack"),
        route("\"hook\", \"slack\"", ""),
        tcp_check("db", &target.addr(), "labels = { team = \"payments\" }"),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    a.wait_status("db", Status::Healthy, T).await;
    target.stop().await;

    let hook = rx.wait_delivered("/hook", 1, T).await;
    let n = &hook[0].json;
    assert_eq!(n["version"], "1");
    assert_eq!(n["status"], "firing");
    assert_eq!(n["route"], "route-1");
    let key = n["dedupe_key"].as_str().expect("dedupe_key").to_string();
    assert_eq!(key.len(), 32);
    let al = &n["alerts"][0];
    assert_eq!(al["check"], "db");
    assert_eq!(al["kind"], "tcp");
    assert_eq!(al["status"], "unhealthy");
    assert_eq!(al["previous_status"], "healthy");
    assert_eq!(al["error_kind"], "refused");
    assert_eq!(al["labels"]["team"], "payments");
    assert_eq!(al["score"], 0);
    assert!(al["started_at"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert!(al["ended_at"].is_null());
    assert!(al["message"].as_str().is_some_and(|m| !m.is_empty()));
    let keys: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec!["alerts", "dedupe_key", "route", "status", "version"]
    );
    // HMAC-SHA256 over the exact body, computed independently here.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"hmac-key-0123").unwrap();
    mac.update(&hook[0].body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(hook[0].headers["x-lifeline-signature"], want.as_str());
    assert_eq!(hook[0].headers["x-team"], "ops");
    assert_eq!(hook[0].headers["content-type"], "application/json");

    let slack = rx.wait_delivered("/slack", 1, T).await;
    let text = slack[0].json["text"].as_str().expect("slack text");
    assert!(
        text.contains("🔴") && text.contains("FIRING") && text.contains("db"),
        "{text}"
    );
    assert!(
        text.contains("unhealthy since") && text.contains("[refused]"),
        "{text}"
    );

    target.start().await;
    let hook = rx.wait_delivered("/hook", 2, T).await;
    let r = &hook[1].json;
    assert_eq!(r["status"], "resolved");
    assert_eq!(r["dedupe_key"], key.as_str());
    assert_eq!(r["alerts"][0]["status"], "healthy");
    assert!(r["alerts"][0]["ended_at"].as_str().is_some());
    let slack = rx.wait_delivered("/slack", 2, T).await;
    assert!(slack[1].json["text"].as_str().unwrap().contains("✅"));

    // The counter moves right after the receiver's answer reaches the agent.
    a.wait_notifications("hook", "sent", T, |n| n == 2.0).await;
    let m = a.metrics();
    assert!(
        m.contains("lifeline_notification_latency_seconds_count{notifier=\"hook\"} 2"),
        "{m}"
    );
    a.stop().await;
}

#[tokio::test]
async fn a_receiver_answering_503_three_times_gets_the_notification_once() {
    let dir = tempfile::tempdir().unwrap();
    let rx = HttpReceiver::start().await;
    rx.fail_next(3, 503);
    let target = Target::down();
    let config = hook_for_db(
        dir.path(),
        &rx.url("/hook"),
        "retry_base = \"50ms\"\nretry_max = \"200ms\"",
        &target.addr(),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    let got = rx.wait_delivered("/hook", 1, T).await;
    let all = rx.all();
    assert_eq!(all.len(), 4, "3 failures then one delivery");
    assert!(
        all.iter()
            .all(|p| p.json["dedupe_key"] == got[0].json["dedupe_key"])
    );
    assert_eq!(
        all.iter().map(|p| p.answered).collect::<Vec<_>>(),
        vec![503, 503, 503, 200]
    );
    a.wait_outbox_drained("hook", T).await;
    let am = a.agent.shared.metrics.clone();
    let sent = notifications_series("hook", "sent");
    wait_for(T, "sent counter and queue gauge", || {
        let m = am.render();
        (metric(&m, &sent) == 1.0
            && m.contains("lifeline_notification_queue_depth{notifier=\"hook\"} 0"))
        .then_some(())
    })
    .await;
    let m = a.metrics();
    assert_eq!(
        metric(&m, &notifications_series("hook", "failed")),
        3.0,
        "{m}"
    );
    assert_eq!(metric(&m, &sent), 1.0, "{m}");
    assert_eq!(
        metric(&m, "lifeline_notification_queue_depth{notifier=\"hook\"}"),
        0.0,
        "{m}"
    );
    assert_eq!(rx.delivered("/hook").len(), 1);
    a.stop().await;
}

#[tokio::test]
async fn a_permanent_4xx_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rx = HttpReceiver::start().await;
    rx.fail_next(1, 400);
    let target = Target::down();
    let config = hook_for_db(
        dir.path(),
        &rx.url("/hook"),
        "retry_base = \"50ms\"",
        &target.addr(),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    a.wait_notifications("hook", "dropped", T, |n| n == 1.0)
        .await;
    assert_eq!(rx.all().len(), 1, "a 400 is not retried");
    assert_eq!(a.engine.outbox().depth("hook"), 0);
    a.stop().await;
}

#[tokio::test]
async fn a_receiver_down_across_a_restart_gets_the_notification_once_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::common::free_port();
    let target = Target::down();
    let config = hook_for_db(
        dir.path(),
        &format!("http://127.0.0.1:{port}/hook"),
        "retry_base = \"100ms\"\nretry_max = \"300ms\"",
        &target.addr(),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    a.wait_notifications("hook", "failed", T, |n| n >= 2.0)
        .await;
    assert_eq!(a.engine.outbox().depth("hook"), 1);
    a.stop().await;

    let rx = HttpReceiver::start_on(port).await;
    let b = AlertAgent::start(dir.path(), &config).await;
    let got = rx.wait_delivered("/hook", 1, T).await;
    assert_eq!(got[0].json["status"], "firing");
    // The check fails again after the restart: the alert was already notified, so no new
    // firing notification goes out. Give the engine several check rounds to misbehave.
    b.wait_status("db", Status::Unhealthy, T).await;
    b.wait_outbox_drained("hook", T).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        rx.all().len(),
        1,
        "{:?}",
        rx.all().iter().map(|p| p.json.clone()).collect::<Vec<_>>()
    );
    b.stop().await;
}

#[tokio::test]
async fn fifty_checks_failing_together_send_one_grouped_notification() {
    let dir = tempfile::tempdir().unwrap();
    let rx = HttpReceiver::start().await;
    let target = Target::down();
    let mut config = format!(
        "{}{}{}",
        agent_section(dir.path()),
        webhook("hook", &rx.url("/hook"), ""),
        "[[routes]]\nnotifiers = [\"hook\"]\nfor = \"0s\"\ngroup_wait = \"1s\"\n",
    );
    for i in 0..50 {
        config.push_str(&tcp_check(&format!("svc-{i:02}"), &target.addr(), ""));
    }
    let a = AlertAgent::start(dir.path(), &config).await;
    let got = rx.wait_delivered("/hook", 1, T).await;
    assert_eq!(got[0].json["alerts"].as_array().map(Vec::len), Some(50));
    // Another group_wait and more: still the one notification.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.all().len(), 1);
    a.stop().await;
}

#[tokio::test]
async fn silences_api_holds_notifications_until_expired() {
    let dir = tempfile::tempdir().unwrap();
    let rx = HttpReceiver::start().await;
    let mut target = Target::up().await;
    let config = hook_for_db(dir.path(), &rx.url("/hook"), "", &target.addr());
    let a = AlertAgent::start(dir.path(), &config).await;
    let silence =
        serde_json::json!({"matchers": {"check": "db"}, "ends_at": "1h", "comment": "maintenance"});
    let (status, s) = api::post_json(&a.url("/api/v1/silences"), None, Some(&silence)).await;
    assert_eq!(status, 200);
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["status"], "active");
    let (_, list) = api::get_json(&a.url("/api/v1/silences")).await;
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["comment"], "maintenance");
    let no_matchers = serde_json::json!({"matchers": {}, "ends_at": "1h"});
    let (status, _) = api::post_json(&a.url("/api/v1/silences"), None, Some(&no_matchers)).await;
    assert_eq!(status, 400);

    a.wait_status("db", Status::Healthy, T).await;
    target.stop().await;
    a.wait_status("db", Status::Unhealthy, T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.all().is_empty(), "silenced");

    let (status, s) = api::delete_json(&a.url(&format!("/api/v1/silences/{id}"))).await;
    assert_eq!(status, 200);
    assert_eq!(s["status"], "expired");
    let got = rx.wait_delivered("/hook", 1, T).await;
    assert_eq!(got[0].json["status"], "firing");
    let (status, _) = api::delete_json(&a.url("/api/v1/silences/nope")).await;
    assert_eq!(status, 404);
    a.stop().await;
}
