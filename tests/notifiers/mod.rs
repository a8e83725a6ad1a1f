//! The service notifiers (issue 16): PagerDuty, Opsgenie, Teams, Discord, Telegram, ntfy
//! and the generic `template` notifier, each driven by a real agent through firing and
//! resolved against a local stand-in that enforces that service's documented request
//! shape (method, path, auth headers, content type, required fields, types, enums and
//! size limits) and answers as the service does — including 429 with `Retry-After`,
//! which delivery must honour. None of these services ships a server that can run here,
//! so the stand-ins are the receivers (each file names what it enforces).

mod config;
mod discord;
mod existing;
mod limits;
mod ntfy;
mod opsgenie;
mod pagerduty;
mod secrets;
mod teams;
mod telegram;
mod templated;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use lifeline::health::Status;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::alerting::{AlertAgent, Target, agent_section, tcp_check};
use crate::common::wait_for;

/// Deadline for anything the agent should do soon.
pub const T: Duration = Duration::from_secs(15);

/// One request a stand-in got.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body as JSON (Null if it was not JSON).
    pub json: serde_json::Value,
    /// When it arrived.
    pub at: Instant,
}

impl Req {
    /// A header as text ("" when absent or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// True if `Content-Type` is `application/json` (parameters ignored).
    pub fn is_json(&self) -> bool {
        self.header("content-type").split(';').next().map(str::trim) == Some("application/json")
    }
}

/// What a stand-in answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, v: serde_json::Value) -> Self {
        Self {
            status,
            body: v.to_string(),
            headers: vec![("content-type".into(), "application/json".into())],
        }
    }

    /// A plain answer.
    pub fn text(status: u16, s: &str) -> Self {
        Self {
            status,
            body: s.to_string(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    /// True for 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One exchange: the request, the answer, and whether the answer was queued by the
/// test ([`Receiver::answer_next`]) rather than decided by the service rules.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub req: Req,
    pub reply: Reply,
    pub queued: bool,
}

type Rule = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;
type Queued = Box<dyn FnOnce() -> Reply + Send>;

/// A stand-in HTTP service on 127.0.0.1: every request goes through `rule` (the
/// service's documented checks and answers), unless the test queued an answer.
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
    queued: Arc<Mutex<VecDeque<Queued>>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts on a free port.
    pub async fn start(rule: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Self {
        let rule: Rule = Arc::new(rule);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let addr = listener.local_addr().expect("addr");
        let log: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let queued: Arc<Mutex<VecDeque<Queued>>> = Arc::default();
        let (l, q) = (log.clone(), queued.clone());
        let app = axum::Router::new()
            .fallback(
                move |method: axum::http::Method,
                      uri: axum::http::Uri,
                      headers: HeaderMap,
                      body: Bytes| {
                    let (l, q, rule) = (l.clone(), q.clone(), rule.clone());
                    async move {
                        let req = Req {
                            method: method.to_string(),
                            path: uri.path().to_string(),
                            query: uri.query().unwrap_or("").to_string(),
                            json: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                            headers,
                            body,
                            at: Instant::now(),
                        };
                        let forced = q.lock().pop_front();
                        let queued = forced.is_some();
                        let reply = match forced {
                            Some(f) => f(),
                            None => rule(&req),
                        };
                        l.lock().push(Exchange {
                            req,
                            reply: reply.clone(),
                            queued,
                        });
                        let mut resp = axum::response::Response::new(axum::body::Body::from(
                            reply.body.clone(),
                        ));
                        *resp.status_mut() =
                            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
                        for (k, v) in &reply.headers {
                            if let (Ok(k), Ok(v)) = (
                                axum::http::HeaderName::from_bytes(k.as_bytes()),
                                axum::http::HeaderValue::from_str(v),
                            ) {
                                resp.headers_mut().insert(k, v);
                            }
                        }
                        resp
                    }
                },
            )
            .layer(axum::extract::DefaultBodyLimit::max(4 * 1024 * 1024));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            log,
            queued,
            task,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers the next request with `reply` (before the rules see it).
    pub fn answer_next(&self, reply: Reply) {
        self.queued.lock().push_back(Box::new(move || reply));
    }

    /// Answers the next request with what `f` makes when it arrives (a `Retry-After`
    /// date relative to that moment).
    pub fn answer_next_with(&self, f: impl FnOnce() -> Reply + Send + 'static) {
        self.queued.lock().push_back(Box::new(f));
    }

    /// Every exchange so far.
    pub fn all(&self) -> Vec<Exchange> {
        self.log.lock().clone()
    }

    /// Requests the rules accepted (2xx).
    pub fn accepted(&self) -> Vec<Req> {
        self.log
            .lock()
            .iter()
            .filter(|e| !e.queued && e.reply.ok())
            .map(|e| e.req.clone())
            .collect()
    }

    /// Requests the rules rejected, with the answer.
    pub fn rejected(&self) -> Vec<(Req, Reply)> {
        self.log
            .lock()
            .iter()
            .filter(|e| !e.queued && !e.reply.ok())
            .map(|e| (e.req.clone(), e.reply.clone()))
            .collect()
    }

    /// Waits until the rules accepted at least `n` requests.
    pub async fn wait_accepted(&self, n: usize) -> Vec<Req> {
        wait_for(T, &format!("{n} accepted requests"), || {
            let a = self.accepted();
            (a.len() >= n).then_some(a)
        })
        .await
    }

    /// Panics with what the service would have said if it rejected anything.
    pub fn assert_nothing_rejected(&self) {
        let r = self.rejected();
        assert!(
            r.is_empty(),
            "the service would have rejected: {:#?}",
            r.iter()
                .map(|(q, a)| format!("{} {} -> {} {}", q.method, q.path, a.status, a.body))
                .collect::<Vec<_>>()
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A route sending everything to `notifier` at once.
pub fn route(notifier: &str) -> String {
    format!("[[routes]]\nnotifiers = [\"{notifier}\"]\nfor = \"0s\"\ngroup_wait = \"0s\"\n")
}

/// What [`fire_and_resolve`] saw.
pub struct Run {
    /// Requests the rules accepted: the firing ones, then the resolved ones.
    pub accepted: Vec<Req>,
    /// The agent's `/metrics` at the end.
    pub metrics: String,
}

/// Drives a real agent with `notifier` (a `[[notifiers]]` entry named `n`) through a tcp
/// check `db` going down (firing) and up again (resolved); `throttle` is answered to the
/// first request (a 429), so the accepted firing shows whether the wait was honoured.
/// Waits for `per_phase` accepted requests per phase.
pub async fn fire_and_resolve(
    rx: &Receiver,
    notifier: &str,
    throttle: Option<Reply>,
    per_phase: usize,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut target = Target::up().await;
    let config = format!(
        "{}{notifier}\n{}{}",
        agent_section(dir.path()),
        route("n"),
        tcp_check("db", &target.addr(), "labels = { team = \"payments\" }"),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    a.wait_status("db", Status::Healthy, T).await;
    if let Some(t) = throttle {
        rx.answer_next(t);
    }
    target.stop().await;
    rx.wait_accepted(per_phase).await;
    target.start().await;
    let accepted = rx.wait_accepted(2 * per_phase).await;
    a.wait_outbox_drained("n", T).await;
    // The counter moves right after the answer reaches the agent.
    a.wait_notifications("n", "sent", T, |n| n >= (2 * per_phase) as f64)
        .await;
    let metrics = a.metrics();
    a.stop().await;
    Run { accepted, metrics }
}

/// The time between the throttled first request and the first accepted one.
pub fn throttle_gap(rx: &Receiver) -> Duration {
    let all = rx.all();
    let first = all.iter().find(|e| e.queued).expect("a throttled request");
    let next = all
        .iter()
        .find(|e| !e.queued && e.reply.ok())
        .expect("an accepted request");
    next.req.at.duration_since(first.req.at)
}

/// A WebSocket server that closes every session with `reason` (peer text that ends up in
/// the check's message).
pub async fn closing_ws(reason: &'static str) -> (String, JoinHandle<()>) {
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
                            reason: reason.into(),
                        }))
                        .await;
                }
            });
        }
    });
    (url, task)
}

/// Drives a real agent with `notifier` (named `n`) and a websocket check `pay` whose
/// server closes with `reason`; returns the first accepted request.
pub async fn hostile_firing(rx: &Receiver, notifier: &str, reason: &'static str) -> Req {
    let dir = tempfile::tempdir().unwrap();
    let (ws_url, ws_task) = closing_ws(reason).await;
    let config = format!(
        r#"{}{notifier}
{}
[[checks]]
name = "pay"
kind = "websocket"
url = "{ws_url}"
interval = "200ms"
timeout = "2s"
unhealthy_threshold = 1
"#,
        agent_section(dir.path()),
        route("n"),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    let got = rx.wait_accepted(1).await;
    a.stop().await;
    ws_task.abort();
    got[0].clone()
}

/// Peer text with every kind of markup: HTML, Markdown links, mentions, JSON quotes.
pub const HOSTILE: &str = r#"<b>x</b> & "q" \ [click](http://evil.example) @everyone *"#;

/// `lifeline_notifications_total{notifier="n",result="<result>"}` in `metrics`.
pub fn count(metrics: &str, result: &str) -> f64 {
    crate::alerting::metric(metrics, &crate::alerting::notifications_series("n", result))
}
