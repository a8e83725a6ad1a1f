//! Microsoft Teams Workflows webhook ("Post to a channel when a webhook request is
//! received") against a stand-in that enforces what the flow accepts: `POST` to the
//! trigger path with the `sig` query parameter of the URL (else `401`), `Content-Type:
//! application/json`, a body of at most 28 KB (the Teams message limit; else `413`), a
//! `message` activity whose `attachments` are Adaptive Cards
//! (`contentType = "application/vnd.microsoft.card.adaptive"`, `content.type =
//! "AdaptiveCard"`, a `version`, a `body` of known elements: `TextBlock` with a string
//! `text`, `FactSet` with `{title, value}` strings, …; `Action.OpenUrl` actions with a
//! `url`). Answers `202 Accepted` with an empty body, `400` with a Logic Apps style
//! error otherwise.

use std::time::Duration;

use serde_json::{Value, json};

use super::{HOSTILE, Receiver, Reply, Req, fire_and_resolve, hostile_firing, throttle_gap};

const PATH: &str = "/workflows/0f3b/triggers/manual/paths/invoke";
const SIG: &str = "sig=Xy9-signature-QQ";

fn bad(why: &str) -> Reply {
    Reply::json(
        400,
        json!({"error": {"code": "InvalidRequestContent", "message": why}}),
    )
}

fn element_ok(e: &Value) -> bool {
    match e["type"].as_str() {
        Some("TextBlock") => e["text"].is_string(),
        Some("FactSet") => e["facts"].as_array().is_some_and(|f| {
            f.iter()
                .all(|x| x["title"].is_string() && x["value"].is_string())
        }),
        Some("Container") => e["items"]
            .as_array()
            .is_some_and(|i| i.iter().all(element_ok)),
        Some("Image") => e["url"].is_string(),
        Some("ColumnSet" | "ActionSet" | "RichTextBlock") => true,
        _ => false,
    }
}

/// The Workflows webhook rules.
pub fn teams(req: &Req) -> Reply {
    if req.method != "POST" || req.path != PATH {
        return Reply::json(404, json!({"error": {"code": "TriggerNotFound"}}));
    }
    if !req.query.split('&').any(|kv| kv == SIG) || !req.query.contains("api-version=") {
        return Reply::json(
            401,
            json!({"error": {"code": "DirectApiAuthorizationRequired", "message": "The request must be authenticated"}}),
        );
    }
    if req.body.len() > 28 * 1024 {
        return Reply::json(413, json!({"error": {"code": "MessageSizeTooBig"}}));
    }
    if !req.is_json() {
        return bad("The request content type must be application/json");
    }
    let b = &req.json;
    if b["type"] != "message" {
        return bad("`type` must be \"message\"");
    }
    let Some(atts) = b["attachments"].as_array().filter(|a| !a.is_empty()) else {
        return bad("`attachments` must be a non-empty array");
    };
    for a in atts {
        if a["contentType"] != "application/vnd.microsoft.card.adaptive" {
            return bad("attachment contentType must be application/vnd.microsoft.card.adaptive");
        }
        let c = &a["content"];
        if c["type"] != "AdaptiveCard" || !c["version"].is_string() {
            return bad("content must be an AdaptiveCard with a version");
        }
        if !c["body"]
            .as_array()
            .is_some_and(|b| b.iter().all(element_ok))
        {
            return bad("card body has an unknown or malformed element");
        }
        if let Some(actions) = c.get("actions")
            && !actions.as_array().is_some_and(|l| {
                l.iter()
                    .all(|x| x["type"] == "Action.OpenUrl" && x["url"].is_string())
            })
        {
            return bad("malformed action");
        }
    }
    Reply::text(202, "")
}

pub(super) fn notifier(rx: &Receiver) -> String {
    format!(
        "[[notifiers]]\nname = \"n\"\nkind = \"teams\"\nwebhook_url = \"{}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&{SIG}\"\nretry_base = \"50ms\"\n",
        rx.url(PATH)
    )
}

fn card(r: &Req) -> &Value {
    &r.json["attachments"][0]["content"]
}

#[tokio::test]
async fn an_adaptive_card_for_firing_and_resolved_after_an_http_date_retry_after() {
    let rx = Receiver::start(teams).await;
    // The HTTP-date form: three seconds after the 429 is sent, to the second.
    rx.answer_next_with(|| {
        let when = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
        Reply::json(429, json!({"error": {"code": "WorkflowRequestsThrottled"}}))
            .with_header("Retry-After", &when)
    });
    let run = fire_and_resolve(&rx, &notifier(&rx), None, 1).await;
    rx.assert_nothing_rejected();
    let (f, r) = (card(&run.accepted[0]), card(&run.accepted[1]));
    assert!(
        f["body"][0]["text"].as_str().unwrap().contains("FIRING"),
        "{f}"
    );
    assert_eq!(f["body"][0]["color"], "attention");
    assert_eq!(f["body"][2]["facts"][0]["title"], "db");
    assert!(
        f["body"][2]["facts"][0]["value"]
            .as_str()
            .unwrap()
            .starts_with("unhealthy \\[refused\\]"),
        "{f}"
    );
    assert!(
        f["actions"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/health/detailed")
    );
    assert_eq!(r["body"][0]["color"], "good");
    assert!(r["body"][0]["text"].as_str().unwrap().contains("RESOLVED"));
    // The date was 2–3 s ahead (whole seconds): not retried at retry_base's 50 ms.
    let gap = throttle_gap(&rx);
    assert!(gap >= Duration::from_millis(1500), "retried after {gap:?}");
}

#[tokio::test]
async fn peer_text_cannot_forge_card_markdown() {
    let rx = Receiver::start(teams).await;
    let got = hostile_firing(&rx, &notifier(&rx), HOSTILE).await;
    rx.assert_nothing_rejected();
    let text = card(&got)["body"][1]["text"].as_str().unwrap().to_string();
    assert!(text.contains(r"\[click\](http://evil.example)"), "{text}");
    assert!(!text.contains("[click](http"), "{text}");
}

#[tokio::test]
async fn the_teams_stand_in_rejects_what_the_workflow_rejects() {
    let rx = Receiver::start(teams).await;
    let c = lifeline::net::http_client::shared();
    let url = format!("{}?api-version=2016-06-01&{SIG}", rx.url(PATH));
    let post = |url: String, body: Value| {
        c.post(url)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
    };
    let good = json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": "hi"}]}}]});
    assert_eq!(post(url.clone(), good.clone()).await.unwrap().status(), 202);
    assert_eq!(
        post(rx.url(PATH), good.clone()).await.unwrap().status(),
        401
    );
    assert_eq!(
        post(url.clone(), json!({"text": "legacy MessageCard"}))
            .await
            .unwrap()
            .status(),
        400
    );
    let mut bad = good.clone();
    bad["attachments"][0]["content"]["body"][0] = json!({"type": "TextBlock"});
    assert_eq!(post(url.clone(), bad).await.unwrap().status(), 400);
    let mut big = good;
    big["attachments"][0]["content"]["body"][0]["text"] = "x".repeat(30_000).into();
    assert_eq!(post(url, big).await.unwrap().status(), 413);
    assert_eq!(rx.rejected().len(), 4);
}
