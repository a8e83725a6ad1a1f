//! `socketio` (probe and session): Socket.IO v5 over Engine.IO v4, WebSocket transport
//! only.
//!
//! Connect: open `<url><path>?EIO=4&transport=websocket`, read the Engine.IO open packet
//! `0{"sid","pingInterval","pingTimeout",…}`, send the Socket.IO CONNECT for the namespace
//! (`40`, or `40/ns,`, followed by the `auth` JSON) and expect `40{"sid":…}`; a
//! `44{…}` CONNECT_ERROR is `auth_failed`. Then the server pings (`2`) and the client
//! answers (`3`); the session is dead when no ping arrives within
//! `pingInterval + pingTimeout` (the protocol's own rule). With `emit`, each heartbeat
//! sends an event with an ack id (`42<id>[…]`) and expects `43<id>[…]`. See
//! `docs/socketio.md`.

pub mod codec;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::ParseCx;
use super::token::{TokenSource, TokenSpec, handshake_headers};
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, KindSpec, Outcome,
    Phases, Session, SessionIo,
};
use crate::config::raw::Table;
use crate::net::tls::CertOutcome;
use crate::net::tls::TlsOptions;
use crate::net::ws::{MAX_MESSAGE, Ws, classify, open as open_ws};
use crate::secret::Secret;
use codec::{EventTemplate, Incoming, PONG, PacketType, incoming, shorten};
pub use codec::{Handshake, Packet, parse_packet};

/// Largest text packet accepted (the WebSocket layer caps frames at the same size).
pub const MAX_PACKET: usize = MAX_MESSAGE;

/// `emit = { event, data, expect }`.
#[derive(Debug, Clone)]
pub struct EmitSpec {
    /// Event name.
    pub event: String,
    /// Optional argument (any JSON).
    pub data: Option<serde_json::Value>,
    /// Regex the acknowledgement's JSON array must match.
    pub expect: Option<regex::Regex>,
}

/// `socketio` settings.
#[derive(Debug, Clone)]
pub struct SocketIoSpec {
    /// http(s):// (or ws(s)://) base URL of the server.
    pub url: url::Url,
    /// Engine.IO path (default `/socket.io/`).
    pub path: String,
    /// Namespace (default `/`).
    pub namespace: String,
    /// Auth object sent in the CONNECT packet.
    pub auth: serde_json::Map<String, serde_json::Value>,
    /// Extra handshake headers.
    pub headers: std::collections::BTreeMap<String, Secret<String>>,
    /// Heartbeat emit with acknowledgement.
    pub emit: Option<EmitSpec>,
    /// Bearer token (sent as `auth.token` and in the handshake header).
    pub token: Option<TokenSpec>,
    /// Certificate handling.
    pub tls: TlsOptions,
    /// `tls_expiry_warning` for `https`/`wss` (`None`: off), applied when connecting.
    pub tls_expiry_warning: Option<Duration>,
}

/// Reads `url`, `path`, `namespace`, `auth`, `headers`, `emit`, `token`, `ca_file`,
/// `tls_skip_verify`, `tls_expiry_warning`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let url = t.url("url", &["http", "https", "ws", "wss"]);
    let path = match t.str("path") {
        None => Some("/socket.io/".to_string()),
        Some(p) if p.value.starts_with('/') && !p.value.contains(['?', '#']) => Some(p.value),
        Some(p) => {
            t.error(p.span, "`path` must start with `/` and have no query");
            None
        }
    };
    let namespace = match t.str("namespace") {
        None => Some("/".to_string()),
        Some(n) if codec::valid_namespace(&n.value) => Some(n.value),
        Some(n) => {
            t.error(
                n.span,
                "`namespace` must start with `/` and contain no `,`, `?`, `#` or spaces",
            );
            None
        }
    };
    let auth = match t.raw("auth").map(|v| v.span()) {
        None => Some(serde_json::Map::new()),
        Some(span) => match t.json("auth") {
            Some(serde_json::Value::Object(m)) => Some(m),
            Some(_) => {
                t.error(span, "`auth` must be a table");
                None
            }
            None => None,
        },
    };
    let headers = t.headers("headers");
    let emit = match t.table("emit") {
        None => Some(None),
        Some(et) => {
            let event = et.req_str("event").map(|e| e.value);
            let data = et.json("data");
            let expect = et.regex("expect");
            et.finish();
            match (event, expect) {
                (Some(event), Some(expect)) => Some(Some(EmitSpec {
                    event,
                    data,
                    expect,
                })),
                _ => None,
            }
        }
    };
    let token = super::token::parse(t);
    let tls = t.tls_options();
    let tls_expiry_warning = t.tls_expiry_warning();
    Some(Arc::new(SocketIoSpec {
        url: url?,
        path: path?,
        namespace: namespace?,
        auth: auth?,
        headers: headers?,
        emit: emit?,
        token: token?,
        tls,
        tls_expiry_warning,
    }))
}

impl SocketIoSpec {
    /// The WebSocket URL: scheme mapped to ws/wss, `path` appended, `EIO=4` and
    /// `transport=websocket` added to the query.
    pub fn ws_url(&self) -> Result<url::Url, CheckError> {
        let mut u = self.url.clone();
        let scheme = match u.scheme() {
            "https" | "wss" => "wss",
            _ => "ws",
        };
        u.set_scheme(scheme)
            .map_err(|_| CheckError::new(ErrorKind::Internal, "cannot map URL scheme"))?;
        let base = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{base}{}", self.path));
        let keep: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| k != "EIO" && k != "transport")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        u.query_pairs_mut()
            .clear()
            .extend_pairs(keep)
            .append_pair("EIO", "4")
            .append_pair("transport", "websocket");
        Ok(u)
    }
}

impl KindSpec for SocketIoSpec {
    fn build(&self, env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let ws_url = self.ws_url()?;
        let tls = crate::net::ws::tls_for(&ws_url, &self.tls)?;
        Ok(Arc::new(SocketIoCheck {
            spec: self.clone(),
            ws_url,
            tls,
            token: self
                .token
                .clone()
                .map(|t| TokenSource::new(t, env.http.clone())),
        }))
    }

    fn session_key(&self) -> Option<String> {
        let headers = crate::net::ws::headers_key(&self.headers);
        Some(format!(
            "{}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}",
            self.url,
            self.path,
            self.namespace,
            serde_json::Value::Object(self.auth.clone()),
            headers,
            self.emit
                .as_ref()
                .map(|e| (&e.event, &e.data, e.expect.as_ref().map(|r| r.as_str()))),
            self.token.as_ref().map(|t| t.url.as_str()),
            (self.tls.ca_file.as_ref(), self.tls.skip_verify),
        ))
    }
}

struct SocketIoCheck {
    spec: SocketIoSpec,
    ws_url: url::Url,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<TokenSource>,
}

/// Parses `0{...}` (a [`codec::OpenError`] is a protocol error).
pub fn parse_open(text: &str) -> Result<Handshake, CheckError> {
    codec::parse_open(text).map_err(|e| CheckError::new(ErrorKind::Protocol, e.to_string()))
}

fn closed(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> CheckError {
    match frame {
        Some(f) => CheckError::new(
            ErrorKind::Closed,
            format!(
                "server closed the WebSocket (code {}, {})",
                u16::from(f.code),
                shorten(&f.reason)
            ),
        ),
        None => CheckError::new(ErrorKind::Closed, "server closed the connection"),
    }
}

/// `1` from the server.
fn engine_closed() -> CheckError {
    CheckError::new(ErrorKind::Closed, "server closed the Engine.IO session")
}

/// A DISCONNECT for our namespace.
fn namespace_left() -> CheckError {
    CheckError::new(ErrorKind::Closed, "server disconnected the namespace")
}

/// The next text frame (other data frames are skipped); the socket ending is an error.
async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes, CheckError> {
    loop {
        match ws.next().await {
            None => return Err(closed(None)),
            Some(Err(e)) => return Err(classify(&e)),
            Some(Ok(Message::Close(f))) => return Err(closed(f.as_ref())),
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(_)) => {}
        }
    }
}

/// Answers a server ping and notes when.
async fn pong(ws: &mut Ws, at: &mut Instant) -> Result<(), CheckError> {
    ws.send(Message::text(PONG))
        .await
        .map_err(|e| classify(&e))?;
    *at = Instant::now();
    Ok(())
}

/// A CONNECT_ERROR payload as an `auth_failed` error.
fn connect_error(data: &str) -> CheckError {
    CheckError::new(
        ErrorKind::AuthFailed,
        format!(
            "namespace connect refused: {}",
            codec::connect_error_message(data)
        ),
    )
}

/// A connected namespace: the socket and what the handshake told us.
struct Link {
    ws: Ws,
    hs: Handshake,
    sid: String,
    /// When our last pong went out (or the open packet arrived): the server's next ping
    /// is due `pingInterval` later.
    last_pong: Instant,
}

impl SocketIoCheck {
    /// Token (if any), WebSocket, open packet, namespace CONNECT.
    async fn open(&self, at: &Attempt, phases: &mut Phases) -> Result<Link, CheckError> {
        let hs = handshake_headers(&self.spec.headers, self.token.as_ref(), at.timeout).await?;
        let mut auth = self.spec.auth.clone();
        if let Some(tok) = &hs.token {
            auth.insert(
                "token".into(),
                serde_json::Value::String(tok.expose().clone()),
            );
        }
        let token_time = hs.token_time;
        let (mut ws, p) = match open_ws(&self.ws_url, &hs.headers, self.tls.clone()).await {
            Ok(x) => x,
            Err(e) => {
                if let Some(src) = &self.token {
                    src.forget_if_refused(&e);
                }
                return Err(e);
            }
        };
        *phases = p;
        let t = Instant::now();
        let hs = loop {
            match ws.next().await {
                None => return Err(closed(None)),
                Some(Err(e)) => return Err(classify(&e)),
                Some(Ok(Message::Close(f))) => return Err(closed(f.as_ref())),
                Some(Ok(Message::Text(text))) => break parse_open(text.as_str())?,
                Some(Ok(Message::Binary(_))) => {
                    return Err(CheckError::new(
                        ErrorKind::Protocol,
                        "binary frame before the open packet",
                    ));
                }
                Some(Ok(_)) => {}
            }
        };
        let mut last_pong = Instant::now();
        ws.send(Message::text(codec::connect(&self.spec.namespace, &auth)))
            .await
            .map_err(|e| classify(&e))?;
        let sid = loop {
            let text = next_text(&mut ws).await?;
            match incoming(text.as_str()) {
                Incoming::Ping => pong(&mut ws, &mut last_pong).await?,
                Incoming::Close => return Err(engine_closed()),
                Incoming::Packet(p) if p.namespace == self.spec.namespace => match p.kind {
                    PacketType::Connect => break codec::connect_sid(p.data),
                    PacketType::ConnectError => {
                        if let Some(src) = &self.token {
                            src.invalidate();
                        }
                        return Err(connect_error(p.data));
                    }
                    PacketType::Disconnect => return Err(namespace_left()),
                    _ => {}
                },
                _ => {}
            }
        };
        let connect_time = t.elapsed();
        if self.token.is_some() || !self.spec.auth.is_empty() {
            phases.auth = Some(token_time + connect_time);
        } else {
            phases.exchange = Some(phases.exchange.unwrap_or_default() + connect_time);
        }
        Ok(Link {
            ws,
            hs,
            sid,
            last_pong,
        })
    }

    fn emit_template(&self, emit: &EmitSpec) -> EventTemplate {
        EventTemplate::new(&self.spec.namespace, &emit.event, emit.data.as_ref())
    }

    /// Judges an ACK payload against `expect`.
    fn judge_ack(emit: &EmitSpec, data: &str) -> Result<(), CheckError> {
        match &emit.expect {
            Some(re) if !re.is_match(data) => Err(CheckError::new(
                ErrorKind::Protocol,
                format!("ack `{}` does not match `{}`", shorten(data), re.as_str()),
            )),
            _ => Ok(()),
        }
    }

    /// One emit/ack round trip on a fresh link (probe and connect), answering pings.
    async fn emit_once(&self, link: &mut Link, emit: &EmitSpec) -> Result<(), CheckError> {
        link.ws
            .send(Message::text(self.emit_template(emit).packet(0)))
            .await
            .map_err(|e| classify(&e))?;
        loop {
            let text = next_text(&mut link.ws).await?;
            match incoming(text.as_str()) {
                Incoming::Ping => pong(&mut link.ws, &mut link.last_pong).await?,
                Incoming::Close => return Err(engine_closed()),
                Incoming::Packet(p) if p.namespace == self.spec.namespace => match (p.kind, p.id) {
                    (PacketType::Ack, Some(0)) => return Self::judge_ack(emit, p.data),
                    (PacketType::Disconnect, _) => return Err(namespace_left()),
                    _ => {}
                },
                _ => {}
            }
        }
    }

    async fn connect_all(&self, at: &Attempt) -> (Result<Link, CheckError>, Outcome) {
        let start = Instant::now();
        let mut phases = Phases::default();
        let work = async {
            let mut link = self.open(at, &mut phases).await?;
            if let Some(emit) = &self.spec.emit {
                let t = Instant::now();
                self.emit_once(&mut link, emit).await?;
                phases.exchange = Some(phases.exchange.unwrap_or_default() + t.elapsed());
            }
            Ok::<Link, CheckError>(link)
        };
        let res = match tokio::time::timeout(at.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(CheckError::timeout("Socket.IO connect", at.timeout)),
        };
        let latency = start.elapsed();
        let o = match &res {
            Ok(link) => Outcome::up(latency)
                .with_detail("sid", link.sid.clone())
                .with_detail("ping_interval_ms", link.hs.ping_interval.as_millis() as u64)
                .with_detail("ping_timeout_ms", link.hs.ping_timeout.as_millis() as u64)
                .with_peer_cert(
                    crate::net::ws::peer_cert(&link.ws),
                    self.spec.tls_expiry_warning,
                ),
            Err(e) => Outcome::down(e.clone(), latency),
        };
        (res, o.with_phases(phases))
    }
}

/// Says goodbye: namespace DISCONNECT, then a close frame; bounded.
async fn leave(ws: &mut Ws, namespace: &str) {
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = ws.send(Message::text(codec::disconnect(namespace))).await;
        let _ = ws.close(None).await;
    })
    .await;
}

impl Check for SocketIoCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let (res, o) = self.connect_all(at).await;
            if let Ok(mut link) = res {
                leave(&mut link.ws, &self.spec.namespace).await;
            }
            o
        })
    }

    fn connect<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move {
            match self.connect_all(at).await {
                (Ok(link), outcome) => Ok(Connected {
                    session: Box::new(SioSession {
                        link,
                        namespace: self.spec.namespace.clone(),
                        emit: self.spec.emit.clone(),
                        emit_packet: self.spec.emit.as_ref().map(|e| self.emit_template(e)),
                    }),
                    outcome,
                }),
                (Err(_), outcome) => Err(outcome),
            }
        })
    }
}

struct SioSession {
    link: Link,
    namespace: String,
    emit: Option<EmitSpec>,
    /// The emit packet, stamped with each ack id.
    emit_packet: Option<EventTemplate>,
}

impl Session for SioSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let SioSession {
                link,
                namespace,
                emit,
                emit_packet,
            } = *self;
            let Link {
                mut ws,
                hs,
                last_pong: mut due_base,
                ..
            } = link;
            let dead_after = hs.ping_interval + hs.ping_timeout;
            // Time the last ping arrived (the connect counts as one).
            let mut last_ping = Instant::now();
            let mut lateness = Duration::ZERO;
            // A beat answered by the next ping because the current one is overdue.
            let mut beat_waits_ping = false;
            let mut ack_id: u64 = 0;
            let mut pending_ack: Option<(u64, Instant)> = None;
            loop {
                let stale_at = last_ping + dead_after;
                tokio::select! {
                    _ = io.shutdown.cancelled() => {
                        leave(&mut ws, &namespace).await;
                        return CheckError::new(ErrorKind::Closed, "agent closed the session");
                    }
                    _ = sleep_until(stale_at) => {
                        return CheckError::new(
                            ErrorKind::Stale,
                            format!("no ping from the server within pingInterval + pingTimeout ({})", crate::time::fmt_duration(dead_after)),
                        );
                    }
                    b = io.beats.recv() => {
                        if b.is_none() {
                            leave(&mut ws, &namespace).await;
                            return CheckError::new(ErrorKind::Closed, "agent closed the session");
                        }
                        if let Some(template) = &emit_packet {
                            ack_id += 1;
                            pending_ack = Some((ack_id, Instant::now()));
                            if let Err(e) = ws.send(Message::text(template.packet(ack_id))).await {
                                return classify(&e);
                            }
                        } else if due_base.elapsed() <= hs.ping_interval + lateness.max(Duration::from_millis(50)) {
                            let o = Outcome::up(lateness)
                                .with_message(format!("last server ping {} ago", crate::time::fmt_duration(last_ping.elapsed())));
                            if io.report.send(o).await.is_err() {
                                return CheckError::new(ErrorKind::Closed, "agent closed the session");
                            }
                        } else {
                            beat_waits_ping = true;
                        }
                    }
                    m = ws.next() => {
                        let text = match m {
                            None => return closed(None),
                            Some(Err(e)) => return classify(&e),
                            Some(Ok(Message::Close(f))) => return closed(f.as_ref()),
                            Some(Ok(Message::Text(t))) => t,
                            Some(Ok(_)) => continue,
                        };
                        match incoming(text.as_str()) {
                            Incoming::Ping => {
                                let now = Instant::now();
                                lateness = now.saturating_duration_since(due_base + hs.ping_interval);
                                last_ping = now;
                                if let Err(e) = ws.send(Message::text(PONG)).await {
                                    return classify(&e);
                                }
                                due_base = Instant::now();
                                // With `emit`, heartbeats are the acks (a ping report would
                                // hide an unanswered emit from the supervisor's timeout).
                                if emit.is_none() || beat_waits_ping {
                                    beat_waits_ping = false;
                                    let o = Outcome::up(lateness).with_message("server ping answered");
                                    if io.report.send(o).await.is_err() {
                                        return CheckError::new(ErrorKind::Closed, "agent closed the session");
                                    }
                                }
                            }
                            Incoming::Close => return engine_closed(),
                            Incoming::Packet(p) if p.namespace == namespace => match p.kind {
                                PacketType::Disconnect => return namespace_left(),
                                PacketType::ConnectError => return connect_error(p.data),
                                PacketType::Ack => {
                                    if let (Some((id, sent)), Some(got), Some(e)) = (pending_ack, p.id, emit.as_ref())
                                        && id == got
                                    {
                                        pending_ack = None;
                                        let rtt = sent.elapsed();
                                        let o = match SocketIoCheck::judge_ack(e, p.data) {
                                            Ok(()) => Outcome::up(rtt),
                                            Err(err) => Outcome::down(err, rtt),
                                        };
                                        if io.report.send(o).await.is_err() {
                                            return CheckError::new(ErrorKind::Closed, "agent closed the session");
                                        }
                                    }
                                }
                                _ => {}
                            },
                            _ => {}
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_packet_errors_are_protocol_errors() {
        assert!(parse_open(r#"0{"pingInterval":1,"pingTimeout":1}"#).is_ok());
        for bad in [
            "40",
            r#"0{"sid":"s"}"#,
            "0{",
            r#"0{"pingInterval":0,"pingTimeout":1}"#,
        ] {
            assert_eq!(
                parse_open(bad).unwrap_err().kind,
                ErrorKind::Protocol,
                "{bad}"
            );
        }
    }

    #[test]
    fn connect_error_is_auth_failed() {
        let e = connect_error(r#"{"message":"unauthorized","data":{"reason":"x"}}"#);
        assert_eq!(e.kind, ErrorKind::AuthFailed);
        assert!(e.message.contains("unauthorized"));
    }

    fn spec(url: &str, path: &str) -> SocketIoSpec {
        SocketIoSpec {
            url: url::Url::parse(url).unwrap(),
            path: path.into(),
            namespace: "/".into(),
            auth: Default::default(),
            headers: Default::default(),
            emit: None,
            token: None,
            tls: TlsOptions::default(),
            tls_expiry_warning: None,
        }
    }

    #[test]
    fn websocket_url_is_built_from_the_base() {
        let u = spec("http://h:3000", "/socket.io/").ws_url().unwrap();
        assert_eq!(
            u.as_str(),
            "ws://h:3000/socket.io/?EIO=4&transport=websocket"
        );
        let u = spec("https://h/app/?x=1&EIO=3", "/rt/").ws_url().unwrap();
        assert_eq!(u.as_str(), "wss://h/app/rt/?x=1&EIO=4&transport=websocket");
    }
}
