//! Telegram Bot API `sendMessage` against a stand-in that enforces the documented
//! request: `POST /bot<token>/sendMessage` (wrong token → `401 Unauthorized`, unknown
//! method → `404 Not Found`), JSON parameters with `chat_id` an integer or `@username`
//! string (unknown chat → `400 Bad Request: chat not found`), a non-empty `text`,
//! `parse_mode` one of HTML/MarkdownV2/Markdown. With `parse_mode = "HTML"` the text is
//! parsed as Telegram does: only the supported tags (`b strong i em u ins s strike del
//! span.tg-spoiler tg-spoiler a[href] code pre blockquote tg-emoji`), properly nested;
//! every other `<`, `>`, `&` must be an entity (`&lt; &gt; &amp; &quot;` or numeric),
//! else `400 Bad Request: can't parse entities: …`; the visible text is at most 4,096
//! characters (`400 Bad Request: message is too long`). Answers
//! `{"ok":true,"result":{message}}`; errors `{"ok":false,"error_code":…,"description":…}`;
//! flood control is `429` with `"parameters":{"retry_after":N}` in the body.

use std::time::Duration;

use serde_json::{Value, json};

use super::{HOSTILE, Receiver, Reply, Req, count, fire_and_resolve, hostile_firing, throttle_gap};

pub(super) const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
pub(super) const CHAT: i64 = -1001234567890;

fn err(code: u16, description: &str) -> Reply {
    Reply::json(
        code,
        json!({"ok": false, "error_code": code, "description": description}),
    )
}

const TAGS: [&str; 14] = [
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
];

/// Parses Telegram HTML; returns the visible text or the error description.
pub fn parse_html(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        match c {
            '<' => {
                let end = rest
                    .find('>')
                    .ok_or_else(|| "Can't find end of the tag".to_string())?;
                let inner = &rest[1..end];
                rest = &rest[end + 1..];
                if let Some(name) = inner.strip_prefix('/') {
                    let name = name.trim();
                    match stack.pop() {
                        Some(open) if open == name => {}
                        _ => return Err(format!("Unexpected end tag \"{name}\"")),
                    }
                    continue;
                }
                let (name, attrs) = inner.split_once(' ').unwrap_or((inner, ""));
                if !(TAGS.contains(&name) || name == "blockquote" || name == "tg-emoji") {
                    return Err(format!("Unsupported start tag \"{name}\""));
                }
                if name == "a" && !attrs.trim_start().starts_with("href=") {
                    return Err("Can't find href attribute of a tag".into());
                }
                if name == "span" && attrs.trim() != "class=\"tg-spoiler\"" {
                    return Err("Tag \"span\" must have class \"tg-spoiler\"".into());
                }
                stack.push(name.to_string());
            }
            '>' => return Err("Unexpected \">\"; use &gt;".into()),
            '&' => {
                let end = rest
                    .find(';')
                    .filter(|e| *e <= 10)
                    .ok_or_else(|| "Unsupported HTML entity; use &amp; for &".to_string())?;
                let ent = &rest[1..end];
                let ch = match ent {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "quot" => '"',
                    e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or("bad numeric entity")?,
                    e if e.starts_with('#') => e[1..]
                        .parse::<u32>()
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or("bad numeric entity")?,
                    other => return Err(format!("Unsupported HTML entity \"&{other};\"")),
                };
                out.push(ch);
                rest = &rest[end + 1..];
            }
            c => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{open}\""
        ));
    }
    Ok(out)
}

/// The Bot API rules.
pub fn telegram(req: &Req) -> Reply {
    let Some(rest) = req.path.strip_prefix("/bot") else {
        return err(404, "Not Found");
    };
    let Some((token, method)) = rest.split_once('/') else {
        return err(404, "Not Found");
    };
    if token != TOKEN {
        return err(401, "Unauthorized");
    }
    if method != "sendMessage" {
        return err(404, "Not Found");
    }
    if req.method != "POST" && req.method != "GET" {
        return err(404, "Not Found");
    }
    if !req.is_json() {
        return err(400, "Bad Request: message text is empty");
    }
    let b = &req.json;
    let chat_ok = match &b["chat_id"] {
        Value::Number(n) => n.as_i64() == Some(CHAT),
        Value::String(s) => s == "@lifeline_alerts",
        _ => return err(400, "Bad Request: chat_id is empty"),
    };
    if !chat_ok {
        return err(400, "Bad Request: chat not found");
    }
    let Some(text) = b["text"].as_str().filter(|t| !t.trim().is_empty()) else {
        return err(400, "Bad Request: message text is empty");
    };
    let visible = match b.get("parse_mode").and_then(Value::as_str) {
        None => text.to_string(),
        Some("HTML") => match parse_html(text) {
            Ok(v) => v,
            Err(e) => return err(400, &format!("Bad Request: can't parse entities: {e}")),
        },
        Some("MarkdownV2" | "Markdown") => text.to_string(),
        Some(_) => return err(400, "Bad Request: unsupported parse_mode"),
    };
    if visible.chars().count() > 4096 {
        return err(400, "Bad Request: message is too long");
    }
    if let Some(l) = b.get("link_preview_options")
        && !l.is_object()
    {
        return err(
            400,
            "Bad Request: can't parse link preview options JSON object",
        );
    }
    Reply::json(
        200,
        json!({"ok": true, "result": {"message_id": 42, "date": 1_764_630_000,
            "chat": {"id": CHAT, "type": "supergroup", "title": "ops"}, "text": visible}}),
    )
}

pub(super) fn notifier(rx: &Receiver, chat: &str) -> String {
    format!(
        "[[notifiers]]\nname = \"n\"\nkind = \"telegram\"\napi_url = \"{}\"\nbot_token = \"{TOKEN}\"\nchat_id = {chat}\nretry_base = \"50ms\"\n",
        rx.url("")
    )
}

#[tokio::test]
async fn html_messages_for_firing_and_resolved_after_honouring_a_body_retry_after() {
    let rx = Receiver::start(telegram).await;
    // Flood control says when in the body only (`parameters.retry_after`).
    let throttle = Reply::json(
        429,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 2", "parameters": {"retry_after": 2}}),
    );
    let run = fire_and_resolve(&rx, &notifier(&rx, &CHAT.to_string()), Some(throttle), 1).await;
    rx.assert_nothing_rejected();
    let (f, r) = (&run.accepted[0].json, &run.accepted[1].json);
    assert_eq!(f["chat_id"], CHAT);
    assert_eq!(f["parse_mode"], "HTML");
    let text = f["text"].as_str().unwrap();
    assert!(text.starts_with("🔴 <b>[FIRING] db</b>\n"), "{text}");
    assert!(text.contains("db (tcp) is unhealthy since"), "{text}");
    assert!(
        r["text"]
            .as_str()
            .unwrap()
            .starts_with("✅ <b>[RESOLVED] db</b>")
    );
    let gap = throttle_gap(&rx);
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    assert_eq!(count(&run.metrics, "sent"), 2.0);
}

#[tokio::test]
async fn peer_text_is_html_escaped_and_telegram_accepts_it() {
    let rx = Receiver::start(telegram).await;
    let got = hostile_firing(&rx, &notifier(&rx, "\"@lifeline_alerts\""), HOSTILE).await;
    rx.assert_nothing_rejected();
    let text = got.json["text"].as_str().unwrap();
    assert!(
        text.contains("&lt;b&gt;x&lt;/b&gt; &amp; &quot;q&quot; \\ [click](http://evil.example)"),
        "{text}"
    );
    // What the chat shows is the peer's text, verbatim, not markup.
    assert!(parse_html(text).unwrap().contains(HOSTILE));
}

#[tokio::test]
async fn an_unknown_chat_is_dropped_and_counted() {
    let rx = Receiver::start(telegram).await;
    let dir = tempfile::tempdir().unwrap();
    let target = crate::alerting::Target::down();
    let config = format!(
        "{}{}\n{}{}",
        crate::alerting::agent_section(dir.path()),
        notifier(&rx, "777"),
        super::route("n"),
        crate::alerting::tcp_check("db", &target.addr(), ""),
    );
    let a = crate::alerting::AlertAgent::start(dir.path(), &config).await;
    a.wait_notifications("n", "dropped", super::T, |n| n == 1.0)
        .await;
    assert_eq!(rx.all().len(), 1);
    assert!(rx.all()[0].reply.body.contains("chat not found"));
    a.stop().await;
}

#[tokio::test]
async fn the_telegram_stand_in_rejects_what_telegram_rejects() {
    assert!(parse_html("<b>ok</b> &lt;x&gt; &amp; &#39;").is_ok());
    assert!(parse_html("a < b").is_err());
    assert!(parse_html("<b>unclosed").is_err());
    assert!(parse_html("<script>x</script>").is_err());
    assert!(parse_html("fish & chips").is_err());
    let rx = Receiver::start(telegram).await;
    let c = lifeline::net::http_client::shared();
    let send = |token: &str, body: Value| {
        c.post(rx.url(&format!("/bot{token}/sendMessage")))
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
    };
    let good = json!({"chat_id": CHAT, "text": "<b>hi</b>", "parse_mode": "HTML"});
    assert_eq!(send(TOKEN, good.clone()).await.unwrap().status(), 200);
    assert_eq!(send("1:wrong", good.clone()).await.unwrap().status(), 401);
    let mut bad = good.clone();
    bad["text"] = "1 < 2".into();
    assert_eq!(send(TOKEN, bad).await.unwrap().status(), 400);
    let mut bad = good.clone();
    bad["text"] = "x".repeat(4097).into();
    assert_eq!(send(TOKEN, bad).await.unwrap().status(), 400);
    let mut bad = good;
    bad["chat_id"] = 5.into();
    assert_eq!(send(TOKEN, bad).await.unwrap().status(), 400);
    assert_eq!(rx.rejected().len(), 4);
}
