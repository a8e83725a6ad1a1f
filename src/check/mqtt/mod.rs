//! `mqtt` (probe and session): connect to an MQTT broker (protocol 3.1.1 or 5.0, plain or
//! TLS), optionally log in, and with `topic` prove that messages flow: subscribe to the
//! topic, publish a unique payload and wait for it to come back.
//!
//! CONNACK refusals are classified (bad user name or password / not authorized →
//! `auth_failed`, any other refusal → `rejected`). In session mode the connection stays
//! open and each heartbeat is an MQTT keep-alive round trip (PINGREQ → PINGRESP), plus the
//! topic round trip when `topic` is set; a broker that closes the connection or sends
//! DISCONNECT ends the session at once. The wire format is [`codec`]. See `docs/mqtt.md`.

pub mod codec;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

use self::codec::{CodecError, Connect, MqttCodec, Packet, Version};
use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, KindSpec, Outcome,
    Phases, Session, SessionIo,
};
use crate::config::raw::Table;
use crate::net::addr::join_host_port;
use crate::net::capped::{DEFAULT_BUDGET, ReadBudget};
use crate::net::stream::{self, BoxIo};
use crate::net::tls::TlsOptions;
use crate::secret::Secret;

/// The broker's port when `address` has none (plain).
pub const DEFAULT_PORT: u16 = 1883;
/// The broker's port when `address` has none and `tls = true`.
pub const DEFAULT_TLS_PORT: u16 = 8883;
/// Default MQTT keep-alive sent in CONNECT.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(60);
/// How long DISCONNECT may take on shutdown or after a probe.
const GOODBYE: Duration = Duration::from_millis(200);

/// `mqtt` settings.
#[derive(Debug, Clone)]
pub struct MqttSpec {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS (MQTTS).
    pub tls: bool,
    /// Certificate handling with `tls`.
    pub tls_options: TlsOptions,
    /// Protocol level.
    pub version: Version,
    /// Fixed client identifier (default: `lifeline` + 15 random hex digits, per
    /// connection: 23 alphanumeric characters, what every 3.1.1 broker must accept).
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret<String>>,
    /// Topic of the publish/subscribe round trip.
    pub topic: Option<String>,
    /// Keep-alive announced in CONNECT, in seconds.
    pub keep_alive: u16,
}

/// Where the value of `key` is (the table, if it is absent).
fn key_span(t: &Table<'_, '_>, key: &'static str) -> std::ops::Range<usize> {
    t.raw(key).map(|v| v.span()).unwrap_or_else(|| t.span())
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 1024 && !t.contains(['+', '#', '\0'])
}

/// Reads `address`, `tls`, `protocol`, `client_id`, `username`, `password`, `topic`,
/// `keep_alive`, `ca_file`, `tls_skip_verify`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let tls = t.bool("tls").unwrap_or(false);
    let tls_options = t.tls_options();
    let default_port = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
    let address = t.req_str("address").and_then(|a| {
        let hp = stream::host_port(&a.value, default_port);
        if hp.is_none() {
            t.error(
                a.span,
                format!("`address` must be HOST[:PORT], got `{}`", a.value),
            );
        }
        hp
    });
    let version = match t.str("protocol") {
        None => Some(Version::V311),
        Some(p) => match p.value.as_str() {
            "3.1.1" | "4" => Some(Version::V311),
            "5" | "5.0" => Some(Version::V5),
            other => {
                t.error(
                    p.span,
                    format!("`protocol` must be \"3.1.1\" or \"5\", got `{other}`"),
                );
                None
            }
        },
    };
    let client_id = t.str("client_id").and_then(|c| {
        if c.value.is_empty() || c.value.len() > 256 || c.value.contains('\0') {
            t.error(c.span, "`client_id` must be 1 to 256 bytes without NUL");
            None
        } else {
            Some(c.value)
        }
    });
    let username = t.str("username").map(|u| u.value);
    let password = t.secret("password");
    let topic = match t.str("topic") {
        None => Some(None),
        Some(s) if valid_topic(&s.value) => Some(Some(s.value)),
        Some(s) => {
            t.error(
                s.span,
                "`topic` must be a topic name (1 to 1024 bytes, no `+`, `#` or NUL)",
            );
            None
        }
    };
    let keep_alive = match t.duration("keep_alive") {
        None => Some(DEFAULT_KEEP_ALIVE.as_secs() as u16),
        Some(d) if d.as_secs() <= u64::from(u16::MAX) && d.subsec_nanos() == 0 => {
            Some(d.as_secs() as u16)
        }
        Some(_) => {
            t.error(
                key_span(t, "keep_alive"),
                "`keep_alive` must be whole seconds from 0s to 65535s",
            );
            None
        }
    };
    let version = version?;
    if version == Version::V311 && password.is_some() && username.is_none() {
        t.error(
            key_span(t, "password"),
            "`password` needs `username` with MQTT 3.1.1 (use protocol = \"5\" for a password alone)",
        );
        return None;
    }
    let (host, port) = address?;
    Some(Arc::new(MqttSpec {
        host,
        port,
        tls,
        tls_options,
        version,
        client_id,
        username,
        password,
        topic: topic?,
        keep_alive: keep_alive?,
    }))
}

impl MqttSpec {
    fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

impl KindSpec for MqttSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let tls = stream::connector_if(self.tls, &self.tls_options, &[])?;
        Ok(Arc::new(MqttCheck {
            spec: self.clone(),
            tls,
        }))
    }

    fn session_key(&self) -> Option<String> {
        Some(format!(
            "{}|{}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{}",
            self.address(),
            self.tls,
            self.tls_options,
            self.version.as_str(),
            self.client_id,
            self.username,
            self.password.as_ref().map(|p| p.expose()),
            self.topic,
            self.keep_alive,
        ))
    }
}

struct MqttCheck {
    spec: MqttSpec,
    tls: Option<TlsConnector>,
}

/// What a CONNACK code means.
fn connack_error(version: Version, code: u8) -> CheckError {
    let (auth, what) = match (version, code) {
        (Version::V311, 1) => (false, "unacceptable protocol version"),
        (Version::V311, 2) => (false, "identifier rejected"),
        (Version::V311, 3) => (false, "server unavailable"),
        (Version::V311, 4) => (true, "bad user name or password"),
        (Version::V311, 5) => (true, "not authorized"),
        (Version::V5, 0x84) => (false, "unsupported protocol version"),
        (Version::V5, 0x85) => (false, "client identifier not valid"),
        (Version::V5, 0x86) => (true, "bad user name or password"),
        (Version::V5, 0x87) => (true, "not authorized"),
        (Version::V5, 0x88) => (false, "server unavailable"),
        (Version::V5, 0x89) => (false, "server busy"),
        (Version::V5, 0x8a) => (false, "banned"),
        (Version::V5, 0x8c) => (true, "bad authentication method"),
        (Version::V5, 0x9c) => (false, "use another server"),
        (Version::V5, 0x9d) => (false, "server moved"),
        (Version::V5, 0x9f) => (false, "connection rate exceeded"),
        _ => (false, "refused"),
    };
    let kind = if auth {
        ErrorKind::AuthFailed
    } else {
        ErrorKind::Rejected
    };
    CheckError::new(
        kind,
        format!("broker refused the connection: {what} (CONNACK code 0x{code:02x})"),
    )
}

fn codec_error(e: CodecError) -> CheckError {
    match e {
        CodecError::Io(io) => CheckError::io("mqtt", &io),
        other => CheckError::new(ErrorKind::Protocol, other.to_string()),
    }
}

/// A connected (CONNACK accepted) broker connection.
struct Conn {
    framed: Framed<BoxIo, MqttCodec>,
    budget: Arc<ReadBudget>,
    version: Version,
    next_id: u16,
    subscribed: bool,
}

impl Conn {
    async fn send(&mut self, p: Bytes) -> Result<(), CheckError> {
        self.framed.send(p).await.map_err(codec_error)
    }

    /// The next packet; EOF, DISCONNECT and decode errors are errors.
    async fn next(&mut self) -> Result<Packet, CheckError> {
        match self.framed.next().await {
            None => Err(CheckError::new(
                ErrorKind::Closed,
                "broker closed the connection",
            )),
            Some(Err(e)) => Err(codec_error(e)),
            Some(Ok(Packet::Disconnect { reason })) => Err(CheckError::new(
                ErrorKind::Closed,
                match reason {
                    Some(0x8e) => "broker disconnected: session taken over (another client with the same client_id)".to_string(),
                    Some(r) => format!("broker disconnected (reason code 0x{r:02x})"),
                    None => "broker disconnected".to_string(),
                },
            )),
            Some(Ok(p)) => Ok(p),
        }
    }

    /// PINGREQ → PINGRESP (application messages in between are skipped).
    async fn ping(&mut self) -> Result<(), CheckError> {
        self.send(codec::pingreq()).await?;
        loop {
            if self.next().await? == Packet::PingResp {
                return Ok(());
            }
        }
    }

    /// Subscribes to `topic` (once per connection), publishes a unique payload and waits
    /// for it to come back.
    async fn round_trip(&mut self, topic: &str) -> Result<(), CheckError> {
        if !self.subscribed {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            self.send(codec::subscribe(self.version, id, topic)).await?;
            loop {
                match self.next().await? {
                    Packet::SubAck { id: got, codes } if got == id => {
                        let code = codes.first().copied().unwrap_or(0x80);
                        if code >= 0x80 {
                            let kind = if code == 0x87 {
                                ErrorKind::AuthFailed
                            } else {
                                ErrorKind::Rejected
                            };
                            return Err(CheckError::new(
                                kind,
                                format!(
                                    "broker refused the subscription to `{topic}` (SUBACK code 0x{code:02x})"
                                ),
                            ));
                        }
                        break;
                    }
                    _ => continue,
                }
            }
            self.subscribed = true;
        }
        let payload = format!("lifeline {:016x}", fastrand::u64(..));
        self.send(codec::publish(self.version, topic, payload.as_bytes()))
            .await?;
        loop {
            if let Packet::Publish {
                topic: t,
                payload: p,
            } = self.next().await?
                && t == topic
                && p == payload.as_bytes()
            {
                return Ok(());
            }
        }
    }

    /// Sends DISCONNECT, bounded.
    async fn goodbye(mut self) {
        let _ = tokio::time::timeout(GOODBYE, async {
            let _ = self.send(codec::disconnect()).await;
            let _ = self.framed.close().await;
        })
        .await;
    }
}

impl MqttCheck {
    /// TCP, TLS and CONNECT/CONNACK, timed into `phases`.
    async fn open(&self, phases: &mut Phases) -> Result<Conn, CheckError> {
        let s = &self.spec;
        let budget = ReadBudget::new(DEFAULT_BUDGET);
        let io = stream::open(
            &s.address(),
            &s.host,
            self.tls.as_ref(),
            budget.clone(),
            phases,
        )
        .await?;
        let mut conn = Conn {
            framed: Framed::new(io, MqttCodec::new(s.version)),
            budget,
            version: s.version,
            next_id: 1,
            subscribed: false,
        };
        let random_id;
        let client_id = match &s.client_id {
            Some(c) => c.as_str(),
            None => {
                random_id = format!("lifeline{:015x}", fastrand::u64(..) >> 4);
                random_id.as_str()
            }
        };
        let t = Instant::now();
        conn.send(codec::connect(&Connect {
            version: s.version,
            client_id,
            keep_alive: s.keep_alive,
            username: s.username.as_deref(),
            password: s.password.as_ref().map(|p| p.expose().as_str()),
        }))
        .await?;
        match conn.next().await? {
            Packet::ConnAck { code: 0, .. } => {}
            Packet::ConnAck { code, .. } => return Err(connack_error(s.version, code)),
            other => {
                return Err(CheckError::new(
                    ErrorKind::Protocol,
                    format!("expected CONNACK, got {}", packet_name(&other)),
                ));
            }
        }
        phases.auth = Some(t.elapsed());
        Ok(conn)
    }

    async fn open_outcome(&self) -> Result<(Conn, Outcome), Outcome> {
        let start = Instant::now();
        let mut phases = Phases::default();
        let fail = |e, phases| Outcome::down(e, start.elapsed()).with_phases(phases);
        let mut conn = match self.open(&mut phases).await {
            Ok(c) => c,
            Err(e) => return Err(fail(e, phases)),
        };
        if let Some(topic) = &self.spec.topic {
            let t = Instant::now();
            if let Err(e) = conn.round_trip(topic).await {
                phases.exchange = Some(t.elapsed());
                return Err(fail(e, phases));
            }
            phases.exchange = Some(t.elapsed());
        }
        let o = Outcome::up(start.elapsed())
            .with_phases(phases)
            .with_detail("protocol", self.spec.version.as_str());
        Ok((conn, o))
    }
}

fn packet_name(p: &Packet) -> String {
    match p {
        Packet::ConnAck { .. } => "CONNACK".into(),
        Packet::SubAck { .. } => "SUBACK".into(),
        Packet::Publish { .. } => "PUBLISH".into(),
        Packet::PingResp => "PINGRESP".into(),
        Packet::Disconnect { .. } => "DISCONNECT".into(),
        Packet::Other(t) => format!("packet type {t}"),
    }
}

impl Check for MqttCheck {
    fn probe<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.open_outcome().await {
                Err(o) => o,
                Ok((conn, o)) => {
                    conn.goodbye().await;
                    o
                }
            }
        })
    }

    fn connect<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move {
            let (conn, outcome) = self.open_outcome().await?;
            Ok(Connected {
                session: Box::new(MqttSession {
                    conn,
                    topic: self.spec.topic.clone(),
                }),
                outcome,
            })
        })
    }
}

struct MqttSession {
    conn: Conn,
    topic: Option<String>,
}

impl MqttSession {
    async fn beat(&mut self) -> Result<(), CheckError> {
        self.conn.ping().await?;
        if let Some(t) = &self.topic {
            self.conn.round_trip(t).await?;
        }
        Ok(())
    }
}

impl Session for MqttSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let mut s = *self;
            let bye = || CheckError::new(ErrorKind::Closed, "agent closed the session");
            loop {
                tokio::select! {
                    biased;
                    _ = io.shutdown.cancelled() => {
                        s.conn.goodbye().await;
                        return bye();
                    }
                    // Between heartbeats: retained or stray messages are skipped; EOF,
                    // DISCONNECT or garbage end the session at once.
                    r = s.conn.next() => match r {
                        Ok(_) => continue,
                        Err(e) => return e,
                    },
                    b = io.beats.recv() => {
                        if b.is_none() {
                            s.conn.goodbye().await;
                            return bye();
                        }
                        s.conn.budget.reset();
                        let t = Instant::now();
                        // No timeout of our own: the supervisor reports a heartbeat past
                        // `timeout` and ends the session at `stale_after`; waiting for the
                        // answer keeps the connection in step.
                        let r = tokio::select! {
                            biased;
                            _ = io.shutdown.cancelled() => {
                                s.conn.goodbye().await;
                                return bye();
                            }
                            r = s.beat() => r,
                        };
                        let latency = t.elapsed();
                        let o = match r {
                            Ok(()) => Outcome::up(latency),
                            Err(e) => return e,
                        };
                        let o = o.with_phases(Phases { exchange: Some(latency), ..Phases::default() });
                        if io.report.send(o).await.is_err() {
                            return bye();
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
    fn connack_codes_are_classified() {
        let k = |v, c| connack_error(v, c).kind;
        assert_eq!(k(Version::V311, 4), ErrorKind::AuthFailed);
        assert_eq!(k(Version::V311, 5), ErrorKind::AuthFailed);
        assert_eq!(k(Version::V311, 2), ErrorKind::Rejected);
        assert_eq!(k(Version::V5, 0x86), ErrorKind::AuthFailed);
        assert_eq!(k(Version::V5, 0x87), ErrorKind::AuthFailed);
        assert_eq!(k(Version::V5, 0x89), ErrorKind::Rejected);
        assert!(connack_error(Version::V5, 0x86).message.contains("0x86"));
    }

    #[test]
    fn topics() {
        assert!(valid_topic("lifeline/probe"));
        assert!(!valid_topic("a/+/b"));
        assert!(!valid_topic("a/#"));
        assert!(!valid_topic(""));
    }
}
