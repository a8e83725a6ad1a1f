//! `ami` (probe and session): the Asterisk Manager Interface over TCP.
//!
//! The client behaves like a careful AMI client against a real Asterisk: it reads the
//! banner `Asterisk Call Manager/<version>`, logs in with `Events: off` and an `ActionID`
//! (plain `Secret`, or the MD5 challenge when `auth = "md5"`), then sends `Ping` (expects
//! `Response: Success` + `Ping: Pong`) and the optional extra `action` (expects
//! `Response: Success`). Replies are matched by `ActionID`; events and replies to other
//! actions are skipped. In session mode this repeats on every heartbeat and `Logoff` is
//! sent on shutdown. With `tls = true` the connection is TLS from the first byte
//! (Asterisk's `tlsenable`/`tlsbindaddr`, port 5039 by convention), verified like every
//! other kind (`ca_file`, `tls_skip_verify`) and reported under `details.tls` with
//! `tls_expiry_warning`. See `docs/ami.md`.

pub mod codec;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::Framed;

use self::codec::{Action, AmiCodec, CodecError, Frame, Message};
use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, KindSpec, Outcome,
    Phases, Session, SessionIo,
};
use crate::config::raw::Table;
use crate::net::tls::CertOutcome;
use crate::net::tls::PeerCert;
use crate::net::tls::{self, TlsOptions};
use crate::secret::Secret;

/// What the banner starts with.
pub const BANNER_PREFIX: &str = "Asterisk Call Manager/";

/// How long `Logoff` may take on shutdown or after a probe.
const LOGOFF_WAIT: Duration = Duration::from_millis(500);

/// How the client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `Login` with `Secret` (the default).
    Plain,
    /// `Challenge` with `AuthType: MD5`, then `Login` with `Key: md5hex(challenge + secret)`.
    Md5,
}

impl AuthMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Md5 => "md5",
        }
    }
}

/// `ami` settings.
#[derive(Debug, Clone)]
pub struct AmiSpec {
    /// `host:port` of the manager interface (Asterisk's default port is 5038).
    pub address: String,
    /// Manager user (`[user]` section of manager.conf).
    pub username: String,
    /// Its secret.
    pub secret: Secret<String>,
    /// An extra action run after `Ping` (e.g. `CoreStatus`); its reply must be `Success`.
    pub action: Option<String>,
    /// Plain or MD5 challenge login.
    pub auth: AuthMode,
    /// `tls = true`: TLS from the first byte (Asterisk `tlsenable`).
    pub tls: bool,
    /// Certificate handling when `tls` is on.
    pub tls_options: TlsOptions,
    /// `tls_expiry_warning` when `tls` is on (`None`: off).
    pub tls_expiry_warning: Option<Duration>,
}

fn is_action_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Reads `address`, `username`, `secret`, `action`, `auth`, `tls`, `ca_file`,
/// `tls_skip_verify`, `tls_expiry_warning`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let address = t.req_str("address").and_then(|a| {
        if crate::net::addr::split_host_port(&a.value).is_none() {
            t.error(
                a.span,
                format!("`address` must be HOST:PORT, got `{}`", a.value),
            );
            None
        } else {
            Some(a.value)
        }
    });
    let username = t.req_str("username").and_then(|u| {
        if u.value.is_empty() || !codec::is_safe_value(&u.value) {
            t.error(u.span, "`username` must be non-empty and on one line");
            None
        } else {
            Some(u.value)
        }
    });
    let secret = if t.has("secret") {
        let raw = t.str("secret");
        raw.and_then(|s| {
            if codec::is_safe_value(&s.value) {
                Some(Secret::registered(s.value))
            } else {
                t.error(s.span, "`secret` must not contain line breaks");
                None
            }
        })
    } else {
        t.missing("secret");
        None
    };
    let action = match t.str("action") {
        None => Some(None),
        Some(a) if is_action_name(&a.value) => Some(Some(a.value)),
        Some(a) => {
            t.error(
                a.span,
                format!(
                    "`action` must be an AMI action name like `CoreStatus`, got `{}`",
                    a.value
                ),
            );
            None
        }
    };
    let auth = match t.str("auth") {
        None => Some(AuthMode::Plain),
        Some(a) => match a.value.as_str() {
            "plain" => Some(AuthMode::Plain),
            "md5" => Some(AuthMode::Md5),
            other => {
                t.error(
                    a.span,
                    format!("`auth` must be \"plain\" or \"md5\", got `{other}`"),
                );
                None
            }
        },
    };
    let tls = t.bool("tls").unwrap_or(false);
    let tls_options = t.tls_options();
    let tls_expiry_warning = t.tls_expiry_warning();
    Some(Arc::new(AmiSpec {
        address: address?,
        username: username?,
        secret: secret?,
        action: action?,
        auth: auth?,
        tls,
        tls_options,
        tls_expiry_warning,
    }))
}

impl KindSpec for AmiSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let tls = if self.tls {
            Some(tls::client_config(&self.tls_options)?)
        } else {
            None
        };
        Ok(Arc::new(AmiCheck {
            spec: self.clone(),
            tls,
        }))
    }

    /// Endpoint and credentials, plus the extra action and auth mode because they change
    /// what each heartbeat does.
    fn session_key(&self) -> Option<String> {
        Some(format!(
            "{}|{}|{}|{}|{:?}|{}|{:?}",
            self.address,
            self.username,
            self.secret.expose(),
            self.auth.as_str(),
            self.action,
            self.tls,
            self.tls_options,
        ))
    }
}

struct AmiCheck {
    spec: AmiSpec,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A byte stream the codec runs on (plain TCP or TLS).
trait AmiIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AmiIo for T {}

/// A logged-in (or logging-in) manager connection.
struct Conn {
    framed: Framed<Box<dyn AmiIo>, AmiCodec>,
    seq: u64,
    /// The server certificate (`tls = true`).
    cert: Option<PeerCert>,
}

fn codec_error(e: CodecError) -> CheckError {
    match e {
        CodecError::Io(io) => CheckError::io("ami", &io),
        CodecError::Truncated => CheckError::new(ErrorKind::Closed, e.to_string()),
        CodecError::BadField(_) => CheckError::new(ErrorKind::Internal, e.to_string()),
        CodecError::TooLarge | CodecError::TooManyHeaders => {
            CheckError::new(ErrorKind::Protocol, e.to_string())
        }
    }
}

fn eof() -> CheckError {
    CheckError::new(ErrorKind::Closed, "AMI server closed the connection")
}

/// What an action's reply means: `Ok` for `Success`/`Follows`, otherwise the error.
pub fn judge(action: &str, reply: &Message) -> Result<(), CheckError> {
    let what = reply.get("Message").unwrap_or("");
    match reply.response() {
        Some(r) if r.eq_ignore_ascii_case("Success") || r.eq_ignore_ascii_case("Follows") => {
            if action.eq_ignore_ascii_case("Ping") && !reply.is("Ping", "Pong") {
                return Err(CheckError::new(
                    ErrorKind::Protocol,
                    "Ping reply has no `Ping: Pong`",
                ));
            }
            Ok(())
        }
        Some(r) if r.eq_ignore_ascii_case("Error") => {
            let denied = what.eq_ignore_ascii_case("Permission denied")
                || what.eq_ignore_ascii_case("Authentication failed");
            let kind = if denied || action.eq_ignore_ascii_case("Login") {
                ErrorKind::AuthFailed
            } else {
                ErrorKind::Rejected
            };
            Err(CheckError::new(kind, format!("{action}: {what}")))
        }
        Some(r) if r.eq_ignore_ascii_case("Goodbye") => Err(CheckError::new(
            ErrorKind::Closed,
            format!("{action}: server said Goodbye ({what})"),
        )),
        Some(r) => Err(CheckError::new(
            ErrorKind::Protocol,
            format!("{action}: unexpected Response: {r}"),
        )),
        None => Err(CheckError::new(
            ErrorKind::Protocol,
            format!("{action}: reply without Response"),
        )),
    }
}

impl Conn {
    /// Connects (TLS when `tls` is given) and reads the banner; returns the version it
    /// announces.
    async fn open(
        address: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
        phases: &mut Phases,
    ) -> Result<(Self, String), CheckError> {
        let tcp = crate::net::addr::connect(address, phases).await?;
        let (stream, cert): (Box<dyn AmiIo>, _) = match tls {
            None => (Box::new(tcp), None),
            Some(cfg) => {
                let host = crate::net::addr::split_host_port(address)
                    .map(|(h, _)| h)
                    .unwrap_or(address);
                let s = tls::handshake(tcp, host, cfg, phases).await?;
                let cert = tls::stream_cert(&s);
                (Box::new(s), cert)
            }
        };
        let mut framed = Framed::new(stream, AmiCodec::new());
        let banner = match framed.next().await {
            Some(Ok(Frame::Banner(b))) => b,
            Some(Ok(Frame::Message(_))) => {
                return Err(CheckError::new(ErrorKind::Protocol, "no AMI banner"));
            }
            Some(Err(e)) => return Err(codec_error(e)),
            None => return Err(eof()),
        };
        let Some(version) = banner.strip_prefix(BANNER_PREFIX) else {
            let shown: String = banner.chars().take(80).collect();
            return Err(CheckError::new(
                ErrorKind::Protocol,
                format!("not an AMI server: banner `{shown}`"),
            ));
        };
        let version = version.trim().to_string();
        Ok((
            Self {
                framed,
                seq: 0,
                cert,
            },
            version,
        ))
    }

    fn next_id(&mut self) -> String {
        self.seq += 1;
        format!("lifeline-{}", self.seq)
    }

    async fn send(&mut self, a: Action) -> Result<(), CheckError> {
        self.framed.send(a).await.map_err(codec_error)
    }

    /// The next message (banner frames cannot come twice; anything else is skipped).
    async fn recv(&mut self) -> Result<Message, CheckError> {
        loop {
            match self.framed.next().await {
                Some(Ok(Frame::Message(m))) => return Ok(m),
                Some(Ok(Frame::Banner(_))) => {}
                Some(Err(e)) => return Err(codec_error(e)),
                None => return Err(eof()),
            }
        }
    }

    /// Sends `a` and waits for the reply carrying its `ActionID`; events and other
    /// replies in between are ignored.
    async fn request(&mut self, a: Action) -> Result<Message, CheckError> {
        let id = a.id.clone();
        let name = a.name.clone();
        self.send(a).await?;
        loop {
            let m = match self.recv().await {
                Ok(m) => m,
                Err(e) if e.kind == ErrorKind::Closed => {
                    return Err(CheckError::new(
                        ErrorKind::Closed,
                        format!("AMI server closed the connection before answering {name}"),
                    ));
                }
                Err(e) => return Err(e),
            };
            if m.event().is_none() && m.action_id() == Some(id.as_str()) {
                return Ok(m);
            }
        }
    }

    async fn login(&mut self, spec: &AmiSpec) -> Result<(), CheckError> {
        let mut login = Action::new("Login", self.next_id());
        match spec.auth {
            AuthMode::Plain => {
                login = login
                    .header("Username", spec.username.as_str())
                    .header("Secret", spec.secret.expose().as_str());
            }
            AuthMode::Md5 => {
                let ch = Action::new("Challenge", self.next_id()).header("AuthType", "MD5");
                let reply = self.request(ch).await?;
                judge("Challenge", &reply)?;
                let challenge = reply
                    .get("Challenge")
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| {
                        CheckError::new(ErrorKind::Protocol, "Challenge reply has no challenge")
                    })?;
                let mut input = challenge.as_bytes().to_vec();
                input.extend_from_slice(spec.secret.expose().as_bytes());
                login = login
                    .header("AuthType", "MD5")
                    .header("Username", spec.username.as_str())
                    .header("Key", md5_hex(&input));
            }
        }
        login = login.header("Events", "off");
        let reply = self.request(login).await?;
        judge("Login", &reply)
    }

    /// The heartbeat exchange: `Ping`, then the extra action if any.
    async fn exchange(&mut self, spec: &AmiSpec) -> Result<(), CheckError> {
        let ping = Action::new("Ping", self.next_id());
        judge("Ping", &self.request(ping).await?)?;
        if let Some(name) = &spec.action {
            let a = Action::new(name.as_str(), self.next_id());
            judge(name, &self.request(a).await?)?;
        }
        Ok(())
    }

    /// Logs off politely; never waits longer than [`LOGOFF_WAIT`].
    async fn logoff(&mut self) {
        let bye = Action::new("Logoff", self.next_id());
        let _ = tokio::time::timeout(LOGOFF_WAIT, self.request(bye)).await;
    }
}

impl AmiCheck {
    /// Connect, banner, login, one exchange; the connection and the outcome.
    async fn open(&self) -> (Result<Conn, CheckError>, Phases, Option<String>) {
        let mut phases = Phases::default();
        let opened = Conn::open(&self.spec.address, self.tls.as_ref(), &mut phases).await;
        let (mut conn, version) = match opened {
            Ok(x) => x,
            Err(e) => return (Err(e), phases, None),
        };
        let t = Instant::now();
        let r = conn.login(&self.spec).await;
        phases.auth = Some(t.elapsed());
        if let Err(e) = r {
            return (Err(e), phases, Some(version));
        }
        let t = Instant::now();
        let r = conn.exchange(&self.spec).await;
        phases.exchange = Some(t.elapsed());
        match r {
            Ok(()) => (Ok(conn), phases, Some(version)),
            Err(e) => {
                conn.logoff().await;
                (Err(e), phases, Some(version))
            }
        }
    }

    /// [`AmiCheck::open`] under the attempt's timeout.
    async fn open_timed(&self, at: &Attempt) -> (Result<Conn, CheckError>, Outcome) {
        let start = Instant::now();
        let (res, phases, version) = match tokio::time::timeout(at.timeout, self.open()).await {
            Ok(x) => x,
            Err(_) => (
                Err(CheckError::timeout("AMI login", at.timeout)),
                Phases::default(),
                None,
            ),
        };
        let latency = start.elapsed();
        let mut o = match &res {
            Ok(_) => Outcome::up(latency),
            Err(e) => Outcome::down(e.clone(), latency),
        };
        let cert = res.as_ref().ok().and_then(|c| c.cert.clone());
        o = o
            .with_phases(phases)
            .with_peer_cert(cert, self.spec.tls_expiry_warning);
        if let Some(v) = version {
            o = o.with_detail("version", v);
        }
        (res, o)
    }
}

impl Check for AmiCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let (res, o) = self.open_timed(at).await;
            if let Ok(mut conn) = res {
                conn.logoff().await;
            }
            o
        })
    }

    fn connect<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move {
            match self.open_timed(at).await {
                (Ok(conn), outcome) => Ok(Connected {
                    session: Box::new(AmiSession {
                        conn,
                        action: self.spec.action.clone(),
                        warn: self.spec.tls_expiry_warning,
                    }),
                    outcome,
                }),
                (Err(_), outcome) => Err(outcome),
            }
        })
    }
}

struct AmiSession {
    conn: Conn,
    action: Option<String>,
    warn: Option<Duration>,
}

/// One heartbeat in flight: the actions still unanswered and the first failure.
struct Beat {
    started: Instant,
    waiting: Vec<(String, String)>,
    failure: Option<CheckError>,
}

fn agent_closed() -> CheckError {
    CheckError::new(ErrorKind::Closed, "agent closed the session")
}

impl Session for AmiSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let AmiSession {
                mut conn,
                action,
                warn,
            } = *self;
            let mut beat: Option<Beat> = None;
            loop {
                tokio::select! {
                    _ = io.shutdown.cancelled() => {
                        conn.logoff().await;
                        return agent_closed();
                    }
                    b = io.beats.recv() => {
                        if b.is_none() {
                            conn.logoff().await;
                            return agent_closed();
                        }
                        // A beat still unanswered was already timed out by the supervisor;
                        // its late replies no longer match and are skipped.
                        let mut actions = vec![Action::new("Ping", conn.next_id())];
                        if let Some(name) = &action {
                            actions.push(Action::new(name.as_str(), conn.next_id()));
                        }
                        let waiting = actions.iter().map(|a| (a.id.clone(), a.name.clone())).collect();
                        beat = Some(Beat { started: Instant::now(), waiting, failure: None });
                        for a in actions {
                            if let Err(e) = conn.send(a).await {
                                return e;
                            }
                        }
                    }
                    m = conn.framed.next() => {
                        let m = match m {
                            Some(Ok(Frame::Message(m))) => m,
                            Some(Ok(Frame::Banner(_))) => continue,
                            Some(Err(e)) => return codec_error(e),
                            None => return eof(),
                        };
                        if m.event().is_some() {
                            continue;
                        }
                        let Some(b) = beat.as_mut() else {
                            if m.is("Response", "Goodbye") {
                                return judge("session", &m).err().unwrap_or_else(eof);
                            }
                            continue;
                        };
                        let Some(pos) = b.waiting.iter().position(|(id, _)| Some(id.as_str()) == m.action_id()) else {
                            if m.is("Response", "Goodbye") {
                                return judge("session", &m).err().unwrap_or_else(eof);
                            }
                            continue;
                        };
                        let (_, name) = b.waiting.remove(pos);
                        if let Err(e) = judge(&name, &m) {
                            // The server no longer knows us (e.g. manager reload): log in again.
                            if name == "Ping" && e.kind == ErrorKind::AuthFailed {
                                return e;
                            }
                            if e.kind == ErrorKind::Closed {
                                return e;
                            }
                            b.failure.get_or_insert(e);
                        }
                        if b.waiting.is_empty() {
                            let latency = b.started.elapsed();
                            let o = match b.failure.take() {
                                None => Outcome::up(latency),
                                Some(e) => Outcome::down(e, latency),
                            }
                            .with_peer_cert(conn.cert.clone(), warn);
                            beat = None;
                            if io.report.send(o).await.is_err() {
                                conn.logoff().await;
                                return agent_closed();
                            }
                        }
                    }
                }
            }
        })
    }
}

/// Lower-case hex MD5 of `data`: the `Key` of an AMI challenge login is
/// `md5_hex(challenge + secret)`. Not used for anything security-relevant on our side.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(lines: &[(&str, &str)]) -> Message {
        Message {
            headers: lines
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: None,
        }
    }

    #[test]
    fn replies_are_judged_by_response_and_message() {
        let ok = reply(&[("Response", "Success"), ("Ping", "Pong")]);
        assert!(judge("Ping", &ok).is_ok());
        let no_pong = reply(&[("Response", "Success")]);
        assert_eq!(
            judge("Ping", &no_pong).unwrap_err().kind,
            ErrorKind::Protocol
        );
        let denied = reply(&[("Response", "Error"), ("Message", "Permission denied")]);
        assert_eq!(
            judge("CoreStatus", &denied).unwrap_err().kind,
            ErrorKind::AuthFailed
        );
        let failed = reply(&[("Response", "Error"), ("Message", "Authentication failed")]);
        assert_eq!(
            judge("Login", &failed).unwrap_err().kind,
            ErrorKind::AuthFailed
        );
        let unknown = reply(&[
            ("Response", "Error"),
            ("Message", "Invalid/unknown command: X."),
        ]);
        assert_eq!(judge("X", &unknown).unwrap_err().kind, ErrorKind::Rejected);
        let bye = reply(&[("Response", "Goodbye")]);
        assert_eq!(judge("Ping", &bye).unwrap_err().kind, ErrorKind::Closed);
        let follows = reply(&[("Response", "Follows")]);
        assert!(judge("Command", &follows).is_ok());
    }

    #[test]
    fn action_names_are_tokens() {
        assert!(is_action_name("CoreStatus"));
        assert!(!is_action_name("Core Status"));
        assert!(!is_action_name("Ping\r\nAction: Logoff"));
        assert!(!is_action_name(""));
    }

    #[test]
    fn challenge_key_is_md5_hex() {
        // RFC 1321 test suite values.
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }
}
