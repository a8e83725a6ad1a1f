//! Opsgenie Alert API against a stand-in that enforces the documented requests:
//! `Authorization: GenieKey <key>` (else `401 {"message":"Could not authenticate"}`),
//! `Content-Type: application/json`; create `POST /v2/alerts` with a non-empty
//! `message` (≤ 130 chars), `alias` ≤ 512, `description` ≤ 15,000, `tags` ≤ 20 strings of
//! ≤ 50, `details` a string→string map, `entity` ≤ 512, `source` ≤ 100, `priority`
//! P1–P5; close `POST /v2/alerts/{identifier}/close?identifierType=id|tiny|alias` with
//! optional `user`/`source` ≤ 100 and `note` ≤ 25,000. Answers `202
//! {"result":"Request will be processed","took":…,"requestId":…}`, `422` with `errors`
//! for an invalid body, `404` elsewhere.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Receiver, Reply, Req, count, fire_and_resolve, throttle_gap};

pub(super) const KEY: &str = "eb243592-faa2-4ba2-a551-1afdf565c889";

fn unprocessable(field: &str, why: &str) -> Reply {
    Reply::json(
        422,
        json!({"message": "Request body is not processable. Please check the errors.",
               "errors": {field: why}, "took": 0.001, "requestId": "00000000-0000-0000-0000-000000000000"}),
    )
}

fn accepted() -> Reply {
    Reply::json(
        202,
        json!({"result": "Request will be processed", "took": 0.107, "requestId": "43a29c5c-3dbf-4fa4-9c26-f4f71023e120"}),
    )
}

fn too_long(v: &Value, key: &str, max: usize) -> bool {
    v.get(key)
        .is_some_and(|x| x.as_str().is_none_or(|s| s.chars().count() > max))
}

/// The Alert API rules.
pub fn opsgenie(req: &Req) -> Reply {
    if req.header("authorization") != format!("GenieKey {KEY}") {
        return Reply::json(
            401,
            json!({"message": "Could not authenticate", "took": 0.0, "requestId": "0"}),
        );
    }
    if req.method != "POST" {
        return Reply::json(404, json!({"message": "Not Found"}));
    }
    if !req.is_json() {
        return Reply::json(415, json!({"message": "Unsupported Media Type"}));
    }
    let b = &req.json;
    if req.path == "/v2/alerts" {
        let message = b["message"].as_str().unwrap_or("");
        if message.trim().is_empty() {
            return unprocessable("message", "Message can not be empty.");
        }
        if message.chars().count() > 130 {
            return unprocessable("message", "Message can not be longer than 130 characters.");
        }
        for (k, max) in [
            ("alias", 512),
            ("description", 15_000),
            ("entity", 512),
            ("source", 100),
        ] {
            if too_long(b, k, max) {
                return unprocessable(k, "too long or not a string");
            }
        }
        if let Some(tags) = b.get("tags") {
            let ok = tags.as_array().is_some_and(|t| {
                t.len() <= 20
                    && t.iter()
                        .all(|x| x.as_str().is_some_and(|s| s.chars().count() <= 50))
            });
            if !ok {
                return unprocessable("tags", "at most 20 tags of at most 50 characters");
            }
        }
        if let Some(d) = b.get("details")
            && !d
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
        {
            return unprocessable("details", "must be a map of strings");
        }
        if let Some(p) = b.get("priority")
            && !p
                .as_str()
                .is_some_and(|p| ["P1", "P2", "P3", "P4", "P5"].contains(&p))
        {
            return unprocessable("priority", "Priority should be one of [P1, P2, P3, P4, P5]");
        }
        return accepted();
    }
    let close = req
        .path
        .strip_prefix("/v2/alerts/")
        .and_then(|r| r.strip_suffix("/close"));
    if let Some(id) = close {
        if id.is_empty() || id.contains('/') {
            return Reply::json(404, json!({"message": "Not Found"}));
        }
        let kind = req
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("identifierType="))
            .unwrap_or("id");
        if !["id", "tiny", "alias"].contains(&kind) {
            return unprocessable("identifierType", "must be id, tiny or alias");
        }
        for (k, max) in [("user", 100), ("source", 100), ("note", 25_000)] {
            if too_long(b, k, max) {
                return unprocessable(k, "too long or not a string");
            }
        }
        return accepted();
    }
    Reply::json(404, json!({"message": "Not Found"}))
}

pub(super) fn notifier(rx: &Receiver, key: &str) -> String {
    format!(
        "[[notifiers]]\nname = \"n\"\nkind = \"opsgenie\"\napi_url = \"{}\"\napi_key = \"{key}\"\ntags = [\"voice\"]\nretry_base = \"50ms\"\n",
        rx.url("")
    )
}

#[tokio::test]
async fn create_then_close_by_the_same_alias_after_honouring_retry_after() {
    let rx = Receiver::start(opsgenie).await;
    let throttle = Reply::json(
        429,
        json!({"message": "You are making too many requests! To avoid errors, we recommend you limit requests.", "took": 0.0, "requestId": "0"}),
    )
    .with_header("Retry-After", "2");
    let run = fire_and_resolve(&rx, &notifier(&rx, KEY), Some(throttle), 1).await;
    rx.assert_nothing_rejected();
    let (c, x) = (&run.accepted[0], &run.accepted[1]);
    assert_eq!(c.path, "/v2/alerts");
    assert_eq!(c.header("authorization"), format!("GenieKey {KEY}"));
    let alias = c.json["alias"].as_str().expect("alias");
    assert_eq!(alias.len(), 32);
    assert!(c.json["message"].as_str().unwrap().contains("[FIRING] db"));
    assert_eq!(c.json["priority"], "P1", "unhealthy maps to P1");
    assert_eq!(c.json["entity"], "db");
    assert_eq!(c.json["source"], "lifeline");
    let tags: Vec<&str> = c.json["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, vec!["lifeline", "firing", "voice"]);
    assert!(
        c.json["description"]
            .as_str()
            .unwrap()
            .contains("[refused]")
    );
    assert_eq!(
        x.path,
        format!("/v2/alerts/{alias}/close"),
        "closed by the same alias"
    );
    assert_eq!(x.query, "identifierType=alias");
    assert_eq!(x.json["source"], "lifeline");
    let gap = throttle_gap(&rx);
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    assert_eq!(count(&run.metrics, "sent"), 2.0, "{}", run.metrics);
}

#[tokio::test]
async fn a_rejected_key_is_dropped_and_counted_not_retried() {
    let rx = Receiver::start(opsgenie).await;
    let dir = tempfile::tempdir().unwrap();
    let target = crate::alerting::Target::down();
    let config = format!(
        "{}{}\n{}{}",
        crate::alerting::agent_section(dir.path()),
        notifier(&rx, "not-the-key-000000"),
        super::route("n"),
        crate::alerting::tcp_check("db", &target.addr(), ""),
    );
    let a = crate::alerting::AlertAgent::start(dir.path(), &config).await;
    a.wait_notifications("n", "dropped", super::T, |n| n == 1.0)
        .await;
    assert_eq!(rx.all().len(), 1, "a 401 is not retried");
    assert_eq!(rx.all()[0].reply.status, 401);
    assert_eq!(a.engine.outbox().depth("n"), 0);
    a.stop().await;
}

#[tokio::test]
async fn the_opsgenie_stand_in_rejects_what_opsgenie_rejects() {
    let rx = Receiver::start(opsgenie).await;
    let c = lifeline::net::http_client::shared();
    let send = |path: &str, key: &str, body: Value| {
        c.post(rx.url(path))
            .header("authorization", format!("GenieKey {key}"))
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
    };
    assert_eq!(
        send("/v2/alerts", KEY, json!({"message": "m"}))
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        send("/v2/alerts", "wrong", json!({"message": "m"}))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        send("/v2/alerts", KEY, json!({"message": ""}))
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        send("/v2/alerts", KEY, json!({"message": "x".repeat(131)}))
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        send("/v2/alerts", KEY, json!({"message": "m", "priority": "P9"}))
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        send("/v2/alerts/a/close?identifierType=name", KEY, json!({}))
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(rx.rejected().len(), 5);
}
