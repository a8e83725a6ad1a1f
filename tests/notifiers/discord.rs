//! Discord "Execute Webhook" against a stand-in that enforces the documented request:
//! `POST /api/webhooks/{id}/{token}` (unknown id → `404 {"code":10015}`, wrong token →
//! `401 {"code":50027}`), a JSON body with `content` (≤ 2,000 chars) or `embeds` (≤ 10)
//! (else `400 {"code":50006,"message":"Cannot send an empty message"}`); embeds with
//! `title` ≤ 256, `description` ≤ 4,096, `footer.text` ≤ 2,048, ≤ 25 `fields` (`name`
//! ≤ 256, `value` ≤ 1,024), an integer `color` ≤ 0xFFFFFF, an ISO 8601 `timestamp`, and
//! all embeds together ≤ 6,000 characters; `username` ≤ 80 without "discord"/"clyde";
//! `allowed_mentions.parse` ⊆ {roles, users, everyone} (else `400 {"code":50035,
//! "message":"Invalid Form Body"}`). Answers `204 No Content`; rate limits are `429`
//! with `Retry-After` and `{"message":"You are being rate limited.","retry_after":…,
//! "global":false}`.

use std::time::Duration;

use serde_json::{Value, json};

use super::{HOSTILE, Receiver, Reply, Req, count, fire_and_resolve, hostile_firing, throttle_gap};

const ID: &str = "1180000000000000001";
pub(super) const TOKEN: &str = "wh-token-AbC123_xyz";

fn invalid(field: &str) -> Reply {
    Reply::json(
        400,
        json!({"code": 50035, "message": "Invalid Form Body", "errors": {field: {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}}}),
    )
}

fn len(v: &Value) -> usize {
    v.as_str().map(|s| s.chars().count()).unwrap_or(0)
}

/// The Execute Webhook rules.
pub fn discord(req: &Req) -> Reply {
    let Some(rest) = req.path.strip_prefix("/api/webhooks/") else {
        return Reply::json(404, json!({"message": "404: Not Found", "code": 0}));
    };
    let (id, token) = rest.split_once('/').unwrap_or((rest, ""));
    if req.method != "POST" {
        return Reply::json(
            405,
            json!({"message": "405: Method Not Allowed", "code": 0}),
        );
    }
    if id != ID {
        return Reply::json(404, json!({"message": "Unknown Webhook", "code": 10015}));
    }
    if token != TOKEN {
        return Reply::json(
            401,
            json!({"message": "Invalid Webhook Token", "code": 50027}),
        );
    }
    let b = &req.json;
    let empty = Reply::json(
        400,
        json!({"message": "Cannot send an empty message", "code": 50006}),
    );
    if !req.is_json() || !b.is_object() {
        return empty;
    }
    let content = len(&b["content"]);
    let embeds = b["embeds"].as_array().cloned().unwrap_or_default();
    if content == 0 && embeds.is_empty() {
        return empty;
    }
    if content > 2000 {
        return invalid("content");
    }
    if embeds.len() > 10 {
        return invalid("embeds");
    }
    let mut total = 0;
    for e in &embeds {
        if len(&e["title"]) > 256 {
            return invalid("embeds.0.title");
        }
        if len(&e["description"]) > 4096 {
            return invalid("embeds.0.description");
        }
        if len(&e["footer"]["text"]) > 2048 {
            return invalid("embeds.0.footer.text");
        }
        let fields = e["fields"].as_array().cloned().unwrap_or_default();
        if fields.len() > 25
            || fields
                .iter()
                .any(|f| len(&f["name"]) > 256 || len(&f["value"]) > 1024)
        {
            return invalid("embeds.0.fields");
        }
        if let Some(c) = e.get("color")
            && c.as_u64().is_none_or(|c| c > 0xFF_FF_FF)
        {
            return invalid("embeds.0.color");
        }
        if let Some(t) = e.get("timestamp")
            && t.as_str()
                .is_none_or(|t| lifeline::time::parse_rfc3339(t).is_none())
        {
            return invalid("embeds.0.timestamp");
        }
        total += len(&e["title"])
            + len(&e["description"])
            + len(&e["footer"]["text"])
            + fields
                .iter()
                .map(|f| len(&f["name"]) + len(&f["value"]))
                .sum::<usize>();
    }
    if total > 6000 {
        return invalid("embeds");
    }
    if let Some(u) = b.get("username") {
        let lower = u.as_str().unwrap_or("").to_lowercase();
        if len(u) == 0 || len(u) > 80 || lower.contains("discord") || lower.contains("clyde") {
            return invalid("username");
        }
    }
    if let Some(m) = b.get("allowed_mentions")
        && !m["parse"].as_array().is_some_and(|p| {
            p.iter().all(|x| {
                x.as_str()
                    .is_some_and(|s| ["roles", "users", "everyone"].contains(&s))
            })
        })
    {
        return invalid("allowed_mentions");
    }
    Reply::text(204, "")
}

pub(super) fn notifier(rx: &Receiver, token: &str) -> String {
    format!(
        "[[notifiers]]\nname = \"n\"\nkind = \"discord\"\nwebhook_url = \"{}\"\nusername = \"lifeline\"\nretry_base = \"50ms\"\n",
        rx.url(&format!("/api/webhooks/{ID}/{token}"))
    )
}

#[tokio::test]
async fn an_embed_for_firing_and_resolved_after_honouring_retry_after() {
    let rx = Receiver::start(discord).await;
    // Discord sends the wait both as a header and in the body; the header wins.
    let throttle = Reply::json(
        429,
        json!({"message": "You are being rate limited.", "retry_after": 2.0, "global": false}),
    )
    .with_header("Retry-After", "2");
    let run = fire_and_resolve(&rx, &notifier(&rx, TOKEN), Some(throttle), 1).await;
    rx.assert_nothing_rejected();
    let (f, r) = (&run.accepted[0].json, &run.accepted[1].json);
    assert_eq!(f["username"], "lifeline");
    assert_eq!(f["allowed_mentions"]["parse"], json!([]), "nothing pings");
    let e = &f["embeds"][0];
    assert!(e["title"].as_str().unwrap().contains("FIRING"), "{e}");
    assert_eq!(e["color"], 0xE0_1E_5A);
    assert!(
        e["description"]
            .as_str()
            .unwrap()
            .contains("db (tcp) is unhealthy"),
        "{e}"
    );
    assert!(e["footer"]["text"].as_str().unwrap().contains("route-1"));
    assert_eq!(r["embeds"][0]["color"], 0x2E_B6_7D);
    assert!(
        r["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains("RESOLVED")
    );
    let gap = throttle_gap(&rx);
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    assert_eq!(count(&run.metrics, "sent"), 2.0);
}

#[tokio::test]
async fn peer_text_cannot_ping_or_forge_masked_links() {
    let rx = Receiver::start(discord).await;
    let got = hostile_firing(&rx, &notifier(&rx, TOKEN), HOSTILE).await;
    rx.assert_nothing_rejected();
    let d = got.json["embeds"][0]["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(d.contains(r"\[click\](http://evil.example)"), "{d}");
    assert!(d.contains(r"\<b\>x\</b\>"), "{d}");
    assert_eq!(got.json["allowed_mentions"]["parse"], json!([]));
}

#[tokio::test]
async fn an_unknown_webhook_is_dropped_and_counted() {
    let rx = Receiver::start(discord).await;
    let dir = tempfile::tempdir().unwrap();
    let target = crate::alerting::Target::down();
    let config = format!(
        "{}{}\n{}{}",
        crate::alerting::agent_section(dir.path()),
        notifier(&rx, "revoked-token-000"),
        super::route("n"),
        crate::alerting::tcp_check("db", &target.addr(), ""),
    );
    let a = crate::alerting::AlertAgent::start(dir.path(), &config).await;
    a.wait_notifications("n", "dropped", super::T, |n| n == 1.0)
        .await;
    assert_eq!(rx.all().len(), 1);
    assert_eq!(rx.all()[0].reply.status, 401);
    a.stop().await;
}

#[tokio::test]
async fn the_discord_stand_in_rejects_what_discord_rejects() {
    let rx = Receiver::start(discord).await;
    let c = lifeline::net::http_client::shared();
    let url = rx.url(&format!("/api/webhooks/{ID}/{TOKEN}"));
    let post = |body: Value| {
        c.post(&url)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
    };
    assert_eq!(post(json!({"content": "hi"})).await.unwrap().status(), 204);
    assert_eq!(post(json!({})).await.unwrap().status(), 400);
    assert_eq!(
        post(json!({"embeds": [{"title": "x".repeat(257)}]}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(json!({"content": "hi", "username": "Discord bot"}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(json!({"content": "hi", "allowed_mentions": {"parse": ["all"]}}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(rx.rejected().len(), 4);
}
