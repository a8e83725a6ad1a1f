//! The `template` notifier: any HTTP endpoint. The receiver here stands for an incident
//! tool with its own small API (a `PUT /api/v1/incidents/{key}` with an `X-Api-Key`
//! header and a JSON body with string `title`, `state` ∈ {open, closed} and an `items`
//! list), so the test proves method, path, headers and a body rendered from the
//! operator's template, with peer text JSON-escaped.

use serde_json::{Value, json};

use super::{HOSTILE, Receiver, Reply, Req, fire_and_resolve, hostile_firing};

const KEY: &str = "api-key-T3mpl4te";

/// The incident tool's rules.
pub fn incidents(req: &Req) -> Reply {
    if req.header("x-api-key") != KEY {
        return Reply::json(401, json!({"error": "bad key"}));
    }
    let Some(key) = req.path.strip_prefix("/api/v1/incidents/") else {
        return Reply::json(404, json!({"error": "no route"}));
    };
    if req.method != "PUT" || key.len() != 32 {
        return Reply::json(405, json!({"error": "PUT /api/v1/incidents/{32-hex key}"}));
    }
    if !req.is_json() {
        return Reply::json(415, json!({"error": "JSON only"}));
    }
    let b = &req.json;
    let ok = b["title"].is_string()
        && matches!(b["state"].as_str(), Some("open" | "closed"))
        && b["items"].as_array().is_some_and(|i| {
            i.iter()
                .all(|x| x["check"].is_string() && x["message"].is_string())
        });
    if !ok {
        return Reply::json(422, json!({"error": "title, state, items required"}));
    }
    Reply::json(200, json!({"id": key}))
}

const BODY: &str = r#"{"title": "{{ title }}", "state": "{% if status == 'resolved' %}closed{% else %}open{% endif %}",
 "items": [{% for a in alerts %}{"check": "{{ a.check }}", "message": "{{ a.message }}", "score": {{ a.score | tojson }}}{% if not loop.last %},{% endif %}{% endfor %}]}"#;

pub(super) fn notifier(rx: &Receiver) -> String {
    format!(
        "[[notifiers]]\nname = \"n\"\nkind = \"template\"\nmethod = \"PUT\"\nurl = \"{}{{{{ dedupe_key }}}}\"\nheaders = {{ X-Api-Key = \"{KEY}\" }}\nretry_base = \"50ms\"\nbody = '''{BODY}'''\n",
        rx.url("/api/v1/incidents/")
    )
}

#[tokio::test]
async fn a_templated_put_for_firing_and_resolved_after_honouring_retry_after() {
    let rx = Receiver::start(incidents).await;
    let throttle =
        Reply::json(429, json!({"error": "rate limited"})).with_header("Retry-After", "1");
    let run = fire_and_resolve(&rx, &notifier(&rx), Some(throttle), 1).await;
    rx.assert_nothing_rejected();
    let (f, r) = (&run.accepted[0], &run.accepted[1]);
    assert_eq!(f.method, "PUT");
    assert_eq!(f.path, r.path, "same key for the firing and its resolve");
    assert_eq!(f.json["state"], "open");
    assert_eq!(f.json["title"], "[FIRING] db");
    assert_eq!(f.json["items"][0]["check"], "db");
    assert_eq!(f.json["items"][0]["score"], 0);
    assert_eq!(r.json["state"], "closed");
    let gap = super::throttle_gap(&rx);
    assert!(
        gap >= std::time::Duration::from_millis(900),
        "retried after {gap:?}"
    );
}

#[tokio::test]
async fn peer_text_is_json_escaped_in_templated_bodies() {
    let rx = Receiver::start(incidents).await;
    let got = hostile_firing(&rx, &notifier(&rx), HOSTILE).await;
    rx.assert_nothing_rejected();
    let m: &Value = &got.json["items"][0]["message"];
    assert!(m.as_str().unwrap().contains(HOSTILE), "{m}");
}
