//! `websocket` (probe and session): handshake to a ws/wss `url`; heartbeat with a
//! WebSocket ping answered by a pong, or — when `send` is set — an application message
//! whose reply must match `expect`. A `token` is fetched and sent on the handshake.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use super::ParseCx;
use super::token::{TokenSource, TokenSpec, handshake_headers};
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, KindSpec, Outcome,
    Phases, Session, SessionIo,
};
use crate::config::raw::Table;
use crate::net::tls::CertOutcome;
use crate::net::tls::PeerCert;
use crate::net::tls::TlsOptions;
use crate::net::ws::{Ws, classify, open};
use crate::secret::Secret;

/// `websocket` settings.
#[derive(Debug, Clone)]
pub struct WebSocketSpec {
    /// ws:// or wss:// URL.
    pub url: url::Url,
    /// Handshake headers.
    pub headers: BTreeMap<String, Secret<String>>,
    /// Application heartbeat message (text).
    pub send: Option<String>,
    /// Regex the reply must match.
    pub expect: Option<regex::Regex>,
    /// Bearer token source.
    pub token: Option<TokenSpec>,
    /// Certificate handling.
    pub tls: TlsOptions,
    /// `tls_expiry_warning` for `wss` (`None`: off).
    pub tls_expiry_warning: Option<Duration>,
}

/// Reads `url`, `headers`, `send`, `expect`, `token`, `ca_file`, `tls_skip_verify`,
/// `tls_expiry_warning`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let url = t.url("url", &["ws", "wss"]);
    let headers = t.headers("headers");
    let send = t.str("send").map(|s| s.value);
    let expect = t.regex("expect");
    let token = super::token::parse(t);
    let tls = t.tls_options();
    let tls_expiry_warning = t.tls_expiry_warning();
    Some(Arc::new(WebSocketSpec {
        url: url?,
        headers: headers?,
        send,
        expect: expect?,
        token: token?,
        tls,
        tls_expiry_warning,
    }))
}

impl KindSpec for WebSocketSpec {
    fn build(&self, env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let tls = crate::net::ws::tls_for(&self.url, &self.tls)?;
        Ok(Arc::new(WebSocketCheck {
            spec: self.clone(),
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
            "{}|{:?}|{:?}|{:?}|{:?}",
            self.url,
            headers,
            self.send,
            self.expect.as_ref().map(|r| r.as_str()),
            self.token.as_ref().map(|t| t.url.as_str()),
        ))
    }
}

/// A websocket check.
pub struct WebSocketCheck {
    spec: WebSocketSpec,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<TokenSource>,
}

impl WebSocketCheck {
    async fn connect_ws(&self, at: &Attempt) -> Result<(Ws, Phases), CheckError> {
        let hs = handshake_headers(&self.spec.headers, self.token.as_ref(), at.timeout).await?;
        match open(&self.spec.url, &hs.headers, self.tls.clone()).await {
            Ok((ws, mut phases)) => {
                if self.token.is_some() {
                    phases.auth = Some(hs.token_time);
                }
                Ok((ws, phases))
            }
            Err(e) => {
                if let Some(src) = &self.token {
                    src.forget_if_refused(&e);
                }
                Err(e)
            }
        }
    }

    fn heart(&self) -> Heart {
        Heart {
            send: self.spec.send.clone(),
            expect: self.spec.expect.clone(),
            seq: 0,
        }
    }
}

/// The heartbeat exchange: a ping (answered by a pong) or an application message (answered
/// by a text matching `expect`).
struct Heart {
    send: Option<String>,
    expect: Option<regex::Regex>,
    seq: u64,
}

impl Heart {
    fn request(&mut self) -> Option<Message> {
        self.seq += 1;
        match &self.send {
            Some(s) => Some(Message::text(s.clone())),
            None if self.expect.is_some() => None,
            None => Some(Message::Ping(self.seq.to_be_bytes().to_vec().into())),
        }
    }

    /// True if `m` answers the outstanding heartbeat.
    fn answers(&self, m: &Message) -> bool {
        match m {
            Message::Pong(p) => {
                self.send.is_none() && self.expect.is_none() && p.as_ref() == self.seq.to_be_bytes()
            }
            Message::Text(t) if self.send.is_some() || self.expect.is_some() => self
                .expect
                .as_ref()
                .is_none_or(|re| re.is_match(t.as_str())),
            _ => false,
        }
    }
}

fn closed(frame: Option<&tungstenite::protocol::CloseFrame>) -> CheckError {
    match frame {
        Some(f) => CheckError::new(
            ErrorKind::Closed,
            format!(
                "peer closed the session (code {}, {})",
                u16::from(f.code),
                f.reason
            ),
        ),
        None => CheckError::new(ErrorKind::Closed, "peer closed the session"),
    }
}

impl Check for WebSocketCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            let (mut ws, mut phases) = match self.connect_ws(at).await {
                Ok(x) => x,
                Err(e) => return Outcome::down(e, start.elapsed()),
            };
            let cert = crate::net::ws::peer_cert(&ws);
            let warn = self.spec.tls_expiry_warning;
            let mut heart = self.heart();
            let t = Instant::now();
            if let Some(m) = heart.request()
                && let Err(e) = ws.send(m).await
            {
                return Outcome::down(classify(&e), start.elapsed()).with_phases(phases);
            }
            let result = loop {
                match ws.next().await {
                    None => break Err(closed(None)),
                    Some(Err(e)) => break Err(classify(&e)),
                    Some(Ok(Message::Close(f))) => break Err(closed(f.as_ref())),
                    Some(Ok(m)) if heart.answers(&m) => break Ok(()),
                    Some(Ok(_)) => {}
                }
            };
            phases.exchange = Some(t.elapsed());
            let latency = start.elapsed();
            // Close politely, but never wait long for the peer's close frame.
            let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
            match result {
                Ok(()) => Outcome::up(latency).with_phases(phases),
                Err(e) => Outcome::down(e, latency).with_phases(phases),
            }
            .with_peer_cert(cert, warn)
        })
    }

    fn connect<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move {
            let start = Instant::now();
            match self.connect_ws(at).await {
                Ok((ws, phases)) => {
                    let cert = crate::net::ws::peer_cert(&ws);
                    let warn = self.spec.tls_expiry_warning;
                    Ok(Connected {
                        outcome: Outcome::up(start.elapsed())
                            .with_phases(phases)
                            .with_peer_cert(cert.clone(), warn),
                        session: Box::new(WsSession {
                            ws,
                            heart: self.heart(),
                            cert,
                            warn,
                        }),
                    })
                }
                Err(e) => Err(Outcome::down(e, start.elapsed())),
            }
        })
    }
}

struct WsSession {
    ws: Ws,
    heart: Heart,
    /// The certificate of the connection, re-checked against the warning each heartbeat.
    cert: Option<PeerCert>,
    warn: Option<Duration>,
}

impl Session for WsSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let WsSession {
                ws,
                mut heart,
                cert,
                warn,
            } = *self;
            let (mut sink, mut stream) = ws.split();
            let mut waiting: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = io.shutdown.cancelled() => {
                        let _ = tokio::time::timeout(Duration::from_millis(500), sink.send(Message::Close(None))).await;
                        return CheckError::new(ErrorKind::Closed, "agent closed the session");
                    }
                    b = io.beats.recv() => {
                        let Some(()) = b else {
                            let _ = tokio::time::timeout(Duration::from_millis(500), sink.send(Message::Close(None))).await;
                            return CheckError::new(ErrorKind::Closed, "agent closed the session");
                        };
                        if let Some(m) = heart.request()
                            && let Err(e) = sink.send(m).await
                        {
                            return classify(&e);
                        }
                        waiting = Some(Instant::now());
                    }
                    m = stream.next() => match m {
                        None => return closed(None),
                        Some(Err(e)) => return classify(&e),
                        Some(Ok(Message::Close(f))) => return closed(f.as_ref()),
                        Some(Ok(m)) => {
                            if let Some(sent) = waiting
                                && heart.answers(&m)
                            {
                                waiting = None;
                                let o = Outcome::up(sent.elapsed()).with_peer_cert(cert.clone(), warn);
                                if io.report.send(o).await.is_err() {
                                    return CheckError::new(ErrorKind::Closed, "agent closed the session");
                                }
                            }
                        }
                    }
                }
            }
        })
    }
}
