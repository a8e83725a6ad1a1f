//! ntfy JSON publishing against a stand-in that enforces the documented request:
//! `POST`/`PUT` to the server root with a JSON object; `topic` required and matching
//! `^[-_A-Za-z0-9]{1,64}$`; `message` a string of at most 4,096 bytes; `title` a string;
//! `priority` an integer 1–5; `tags` a list of strings; a protected topic needs
//! `Authorization: Bearer <token>` (missing → `403`, unknown token → `401`). Errors are
//! `{"code":…,"http":…,"error":…}`; success is `200` with the message
//! (`{"id","time","expires","event":"message","topic",…}`); rate limits are `429`
//! (`{"code":42901,"http":429,"error":"limit reached: too many requests"}`).

use std::time::Duration;

use serde_json::{Value, json};

use super::{Receiver, Reply, Req, count, fire_and_resolve, throttle_gap};

pub(super) const TOPIC: &str = "lifeline-ops_7Qx";
pub(super) const TOKEN: &str = "tk_7eevizlsiwf9yi4uxsrs83r4352o0";

fn err(code: u32, http: u16, error: &str) -> Reply {
    Reply::json(http, json!({"code": code, "http": http, "error": error}))
}

fn valid_topic(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The publish rules.
pub fn ntfy(req: &Req) -> Reply {
    if req.path != "/" || !(req.method == "POST" || req.method == "PUT") {
        return err(40401, 404, "page not found");
    }
    let Some(b) = req.json.as_object() else {
        return err(
            40024,
            400,
            "invalid request: request body must be message JSON",
        );
    };
    let topic = b.get("topic").and_then(Value::as_str).unwrap_or("");
    if !valid_topic(topic) {
        return err(40009, 400, "invalid request: topic invalid");
    }
    match req.header("authorization").strip_prefix("Bearer ") {
        None if req.header("authorization").is_empty() => return err(40301, 403, "forbidden"),
        Some(t) if t == TOKEN => {}
        _ => return err(40101, 401, "unauthorized"),
    }
    if topic != TOPIC {
        return err(40301, 403, "forbidden");
    }
    if let Some(m) = b.get("message") {
        match m.as_str() {
            Some(m) if m.len() <= 4096 => {}
            Some(_) => return err(41301, 413, "message too large"),
            None => return err(40024, 400, "invalid request: message must be a string"),
        }
    }
    if b.get("title").is_some_and(|t| !t.is_string()) {
        return err(40024, 400, "invalid request: title must be a string");
    }
    if let Some(p) = b.get("priority")
        && !p.as_u64().is_some_and(|p| (1..=5).contains(&p))
    {
        return err(40007, 400, "invalid priority");
    }
    if let Some(t) = b.get("tags")
        && !t.as_array().is_some_and(|t| t.iter().all(Value::is_string))
    {
        return err(
            40024,
            400,
            "invalid request: tags must be a list of strings",
        );
    }
    Reply::json(
        200,
        json!({"id": "sPs71M8A2T", "time": 1_764_630_000, "expires": 1_764_673_200, "event": "message",
               "topic": topic, "title": b.get("title"), "message": b.get("message"),
               "priority": b.get("priority"), "tags": b.get("tags")}),
    )
}

pub(super) fn notifier(rx: &Receiver, topic: &str) -> String {
    format!(
        "[[notifiers]]\nname = \"n\"\nkind = \"ntfy\"\nurl = \"{}\"\ntopic = \"{topic}\"\ntoken = \"{TOKEN}\"\ntags = [\"lifeline\"]\npriority = {{ unhealthy = \"urgent\" }}\nretry_base = \"50ms\"\n",
        rx.url("/")
    )
}

#[tokio::test]
async fn publishes_title_priority_and_tags_after_honouring_retry_after() {
    let rx = Receiver::start(ntfy).await;
    let throttle = Reply::json(
        429,
        json!({"code": 42901, "http": 429, "error": "limit reached: too many requests"}),
    )
    .with_header("Retry-After", "2");
    let run = fire_and_resolve(&rx, &notifier(&rx, TOPIC), Some(throttle), 1).await;
    rx.assert_nothing_rejected();
    let (f, r) = (&run.accepted[0], &run.accepted[1]);
    assert_eq!(f.header("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(f.json["topic"], TOPIC);
    assert_eq!(f.json["title"], "[FIRING] db");
    assert_eq!(f.json["priority"], 5, "unhealthy = urgent");
    assert_eq!(f.json["tags"], json!(["rotating_light", "lifeline"]));
    assert!(f.json["message"].as_str().unwrap().contains("[refused]"));
    assert_eq!(r.json["title"], "[RESOLVED] db");
    assert_eq!(r.json["priority"], 3);
    assert_eq!(r.json["tags"], json!(["white_check_mark", "lifeline"]));
    let gap = throttle_gap(&rx);
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    assert_eq!(count(&run.metrics, "failed"), 1.0);
}

#[tokio::test]
async fn the_ntfy_stand_in_rejects_what_ntfy_rejects() {
    let rx = Receiver::start(ntfy).await;
    let c = lifeline::net::http_client::shared();
    let post = |auth: Option<&str>, body: Value| {
        let mut r = c
            .post(rx.url("/"))
            .json(&body)
            .timeout(Duration::from_secs(5));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let bearer = format!("Bearer {TOKEN}");
    let good = json!({"topic": TOPIC, "message": "m", "priority": 4, "tags": ["x"]});
    assert_eq!(
        post(Some(&bearer), good.clone()).await.unwrap().status(),
        200
    );
    assert_eq!(post(None, good.clone()).await.unwrap().status(), 403);
    assert_eq!(
        post(Some("Bearer tk_nope"), good.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    let mut bad = good.clone();
    bad["priority"] = 9.into();
    assert_eq!(post(Some(&bearer), bad).await.unwrap().status(), 400);
    let mut bad = good;
    bad["topic"] = "bad topic!".into();
    assert_eq!(post(Some(&bearer), bad).await.unwrap().status(), 400);
    assert_eq!(rx.rejected().len(), 4);
}
