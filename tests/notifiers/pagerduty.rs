//! PagerDuty Events API v2 against a stand-in that enforces the documented event shape:
//! `POST /v2/enqueue`, `Content-Type: application/json`, at most 512 KB; `routing_key` a
//! 32-character string; `event_action` one of trigger/acknowledge/resolve; `dedup_key` a
//! string of at most 255 characters (required for acknowledge/resolve); for triggers a
//! `payload` with a non-empty `summary` (≤ 1024 chars), a non-empty `source`, a
//! `severity` of critical/error/warning/info, an ISO 8601 `timestamp` if present, string
//! `component`/`group`/`class`, an object `custom_details`, and `links` of `{href, text}`.
//! Answers: `202 {"status":"success","message":"Event processed","dedup_key":…}`;
//! `400 {"status":"invalid event","message":"Event object is invalid","errors":[…]}`;
//! `404` on another path; `413` over 512 KB.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Receiver, Reply, Req, count, fire_and_resolve, throttle_gap};

const KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";

fn invalid(errors: Vec<String>) -> Reply {
    Reply::json(
        400,
        json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
    )
}

fn is_str(v: &Value, max: usize) -> bool {
    v.as_str().is_some_and(|s| s.chars().count() <= max)
}

/// The Events API v2 rules.
pub fn pagerduty(req: &Req) -> Reply {
    if req.method != "POST" || req.path != "/v2/enqueue" {
        return Reply::json(404, json!({"status": "not found"}));
    }
    if req.body.len() > 512 * 1024 {
        return Reply::text(413, "Request Entity Too Large");
    }
    if !req.is_json() {
        return invalid(vec!["Content-Type must be application/json".into()]);
    }
    let Some(ev) = req.json.as_object() else {
        return invalid(vec!["Event must be a JSON object".into()]);
    };
    let mut errors = Vec::new();
    if ev
        .get("routing_key")
        .and_then(Value::as_str)
        .is_none_or(|k| k.len() != 32)
    {
        errors.push("'routing_key' is missing or invalid".into());
    }
    let action = ev.get("event_action").and_then(Value::as_str).unwrap_or("");
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        errors.push("'event_action' must be one of trigger, acknowledge, resolve".into());
    }
    match ev.get("dedup_key") {
        None if action != "trigger" => errors.push("'dedup_key' is required".into()),
        Some(k) if !is_str(k, 255) || k.as_str() == Some("") => {
            errors.push("'dedup_key' must be a string of at most 255 characters".into())
        }
        _ => {}
    }
    if action == "trigger" {
        match ev.get("payload").and_then(Value::as_object) {
            None => errors.push("'payload' is required".into()),
            Some(p) => {
                let summary = p.get("summary").and_then(Value::as_str).unwrap_or("");
                if summary.is_empty() || summary.chars().count() > 1024 {
                    errors.push("'payload.summary' must be 1 to 1024 characters".into());
                }
                if p.get("source")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errors.push("'payload.source' is required".into());
                }
                let sev = p.get("severity").and_then(Value::as_str).unwrap_or("");
                if !["critical", "error", "warning", "info"].contains(&sev) {
                    errors
                        .push("'payload.severity' must be critical, error, warning or info".into());
                }
                if let Some(ts) = p.get("timestamp")
                    && ts
                        .as_str()
                        .is_none_or(|t| lifeline::time::parse_rfc3339(t).is_none())
                {
                    errors.push("'payload.timestamp' must be ISO 8601".into());
                }
                for k in ["component", "group", "class"] {
                    if p.get(k).is_some_and(|v| !v.is_string()) {
                        errors.push(format!("'payload.{k}' must be a string"));
                    }
                }
                if p.get("custom_details").is_some_and(|v| !v.is_object()) {
                    errors.push("'payload.custom_details' must be an object".into());
                }
            }
        }
        if let Some(links) = ev.get("links") {
            let ok = links.as_array().is_some_and(|l| {
                l.iter()
                    .all(|x| x["href"].is_string() && x.get("text").is_none_or(Value::is_string))
            });
            if !ok {
                errors.push("'links' must be a list of {href, text}".into());
            }
        }
    }
    if !errors.is_empty() {
        return invalid(errors);
    }
    Reply::json(
        202,
        json!({"status": "success", "message": "Event processed", "dedup_key": ev.get("dedup_key").cloned().unwrap_or(Value::Null)}),
    )
}

pub(super) fn notifier(rx: &Receiver, extra: &str) -> String {
    format!(
        "[[notifiers]]\nname = \"n\"\nkind = \"pagerduty\"\nurl = \"{}\"\nrouting_key = \"{KEY}\"\nretry_base = \"50ms\"\n{extra}\n",
        rx.url("/v2/enqueue")
    )
}

#[tokio::test]
async fn trigger_then_resolve_with_the_same_dedup_key_after_honouring_retry_after() {
    let rx = Receiver::start(pagerduty).await;
    let throttle = Reply::json(
        429,
        json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly. Please retry later."}),
    )
    .with_header("Retry-After", "2");
    let run = fire_and_resolve(
        &rx,
        &notifier(&rx, "severity = { unhealthy = \"error\" }"),
        Some(throttle),
        1,
    )
    .await;
    rx.assert_nothing_rejected();
    let (t, r) = (&run.accepted[0].json, &run.accepted[1].json);
    assert_eq!(t["event_action"], "trigger");
    assert_eq!(t["routing_key"], KEY);
    let key = t["dedup_key"].as_str().expect("dedup_key");
    assert_eq!(key.len(), 32);
    assert_eq!(t["payload"]["severity"], "error", "mapped from unhealthy");
    assert_eq!(t["payload"]["component"], "db");
    assert_eq!(t["payload"]["class"], "refused");
    assert_eq!(t["payload"]["group"], "route-1");
    assert!(
        t["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("[FIRING] db"),
        "{t}"
    );
    assert_eq!(
        t["payload"]["custom_details"]["alerts"][0]["labels"]["team"],
        "payments"
    );
    assert!(
        t["links"][0]["href"]
            .as_str()
            .unwrap()
            .ends_with("/health/service/db")
    );
    assert_eq!(r["event_action"], "resolve");
    assert_eq!(
        r["dedup_key"], key,
        "the resolve closes what the trigger opened"
    );
    assert!(r.get("payload").is_none());
    // 429 + Retry-After: 2 with retry_base = 50ms: the retry waited the 2 s.
    let gap = throttle_gap(&rx);
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    assert_eq!(count(&run.metrics, "failed"), 1.0, "{}", run.metrics);
    assert_eq!(count(&run.metrics, "sent"), 2.0, "{}", run.metrics);
}

#[tokio::test]
async fn the_pagerduty_stand_in_rejects_what_pagerduty_rejects() {
    let rx = Receiver::start(pagerduty).await;
    let c = lifeline::net::http_client::shared();
    let post = |body: Value| {
        c.post(rx.url("/v2/enqueue"))
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
    };
    let good = json!({"routing_key": KEY, "event_action": "trigger",
        "payload": {"summary": "s", "source": "h", "severity": "critical"}});
    assert_eq!(post(good.clone()).await.unwrap().status(), 202);
    let mut bad = good.clone();
    bad["payload"]["severity"] = "fatal".into();
    assert_eq!(post(bad).await.unwrap().status(), 400);
    let mut bad = good.clone();
    bad["routing_key"] = "short".into();
    assert_eq!(post(bad).await.unwrap().status(), 400);
    let resolve_without_key = json!({"routing_key": KEY, "event_action": "resolve"});
    assert_eq!(post(resolve_without_key).await.unwrap().status(), 400);
    let mut bad = good;
    bad["payload"]["summary"] = "x".repeat(1025).into();
    assert_eq!(post(bad).await.unwrap().status(), 400);
    assert_eq!(rx.rejected().len(), 4);
}
