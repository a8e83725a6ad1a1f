//! Slack text escaping against a receiver that enforces the incoming-webhook API: peer
//! text (a WebSocket server's close reason, a label) arrives escaped, so it cannot ping `<!channel>` or
//! forge `<url|links>`; links written in the operator's template stay links.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;

use super::{AlertAgent, agent_section};
use crate::common::wait_for;

const T: Duration = Duration::from_secs(15);

/// A local stand-in for `hooks.slack.com/services/…` that answers as Slack does:
/// `200 ok` for a JSON object with a non-empty string `text` (at most 40,000 chars),
/// `400 invalid_payload` / `400 no_text` otherwise, `404 no_service` on another path or
/// method. Only accepted texts are kept.
struct SlackHook {
    addr: std::net::SocketAddr,
    texts: Arc<Mutex<Vec<(String, String)>>>,
    rejected: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

fn slack_answer(
    method: &axum::http::Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, (StatusCode, &'static str)> {
    if method != axum::http::Method::POST || !path.starts_with("/services/") {
        return Err((StatusCode::NOT_FOUND, "no_service"));
    }
    let json_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/json"));
    if !json_type {
        return Err((StatusCode::BAD_REQUEST, "invalid_payload"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| (StatusCode::BAD_REQUEST, "invalid_payload"))?;
    let obj = v
        .as_object()
        .ok_or((StatusCode::BAD_REQUEST, "invalid_payload"))?;
    match obj.get("text") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
            if s.chars().count() > 40_000 {
                return Err((StatusCode::BAD_REQUEST, "msg_too_long"));
            }
            Ok(s.clone())
        }
        Some(serde_json::Value::String(_)) | None => Err((StatusCode::BAD_REQUEST, "no_text")),
        Some(_) => Err((StatusCode::BAD_REQUEST, "invalid_payload")),
    }
}

impl SlackHook {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind slack hook");
        let addr = listener.local_addr().expect("addr");
        let texts: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let rejected: Arc<Mutex<Vec<String>>> = Arc::default();
        let (t, r) = (texts.clone(), rejected.clone());
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: Bytes| {
                let (t, r) = (t.clone(), r.clone());
                async move {
                    match slack_answer(&method, uri.path(), &headers, &body) {
                        Ok(text) => {
                            t.lock().push((uri.path().to_string(), text));
                            (StatusCode::OK, "ok")
                        }
                        Err((code, why)) => {
                            r.lock().push(format!("{code} {why}"));
                            (code, why)
                        }
                    }
                }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            texts,
            rejected,
            task,
        }
    }

    fn url(&self, team: &str) -> String {
        format!("http://{}/services/T000/B000/{team}", self.addr)
    }

    async fn wait_text(&self, team: &str) -> String {
        let path = format!("/services/T000/B000/{team}");
        wait_for(T, &format!("a Slack message on {path}"), || {
            self.texts
                .lock()
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, t)| t.clone())
        })
        .await
    }
}

impl Drop for SlackHook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const PEER: &str = "<!channel> pay at <http://evil.example|click> & co";

/// The peer: a WebSocket server that closes every session with `PEER` as the reason.
async fn hostile_ws() -> (String, tokio::task::JoinHandle<()>) {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(s).await {
                    let _ = ws
                        .close(Some(CloseFrame {
                            code: CloseCode::Policy,
                            reason: PEER.into(),
                        }))
                        .await;
                }
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn peer_text_arrives_escaped_while_template_links_survive() {
    let dir = tempfile::tempdir().unwrap();
    let hook = SlackHook::start().await;
    let (ws_url, ws_task) = hostile_ws().await;
    let config = format!(
        r#"{agent}
[[notifiers]]
name = "templated"
kind = "slack"
webhook_url = "{templated}"
title = "{{{{ checks }}}} is {{{{ status }}}}"
text = """
{{% for a in alerts %}}{{{{ a.message }}}} (team {{{{ a.labels.team }}}})
{{% endfor %}}Runbook: <https://runbook.example/pay|runbook> &amp; <!here|here>
"""

[[notifiers]]
name = "plain"
kind = "slack"
webhook_url = "{plain}"

[[routes]]
notifiers = ["templated", "plain"]
for = "0s"
group_wait = "0s"

[[checks]]
name = "pay"
kind = "websocket"
url = "{ws_url}"
interval = "200ms"
timeout = "2s"
unhealthy_threshold = 1
labels = {{ team = "<!subteam^S1|oncall>" }}
"#,
        agent = agent_section(dir.path()),
        templated = hook.url("templated"),
        plain = hook.url("plain"),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    let escaped_peer = "&lt;!channel&gt; pay at &lt;http://evil.example|click&gt; &amp; co";

    let text = hook.wait_text("templated").await;
    assert!(text.contains(escaped_peer), "{text}");
    assert!(text.contains("(team &lt;!subteam^S1|oncall&gt;)"), "{text}");
    // The operator's own markup is untouched: a link, an entity, a mention they chose.
    assert!(
        text.contains("Runbook: <https://runbook.example/pay|runbook> &amp; <!here|here>"),
        "{text}"
    );
    assert!(text.contains("*pay is firing*"), "{text}");
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(!text.contains("<http://evil"), "{text}");

    let text = hook.wait_text("plain").await;
    assert!(text.contains(escaped_peer), "{text}");
    assert!(text.contains("*[FIRING] pay*"), "{text}");
    assert!(!text.contains('<') && !text.contains('>'), "{text}");

    assert!(
        hook.rejected.lock().is_empty(),
        "Slack would have rejected: {:?}",
        hook.rejected.lock()
    );
    a.stop().await;
    ws_task.abort();
}

#[tokio::test]
async fn the_slack_stand_in_rejects_what_slack_rejects() {
    // The receiver is only a proof if it refuses malformed payloads as Slack does.
    let hook = SlackHook::start().await;
    let c = lifeline::net::http_client::shared();
    let post = |body: &'static str, ct: &'static str| {
        c.post(hook.url("x"))
            .header("content-type", ct)
            .body(body)
            .timeout(Duration::from_secs(5))
            .send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(post("{\"text\":\"hi\"}", "application/json").await.unwrap()),
        200
    );
    assert_eq!(
        status(post("{\"text\":\"\"}", "application/json").await.unwrap()),
        400
    );
    assert_eq!(
        status(post("{\"text\":1}", "application/json").await.unwrap()),
        400
    );
    assert_eq!(
        status(post("not json", "application/json").await.unwrap()),
        400
    );
    assert_eq!(
        status(post("{\"text\":\"hi\"}", "text/plain").await.unwrap()),
        400
    );
    assert_eq!(hook.rejected.lock().len(), 4);
}
