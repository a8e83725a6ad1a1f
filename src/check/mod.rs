//! Check kinds and the contract they obey (see `docs/check-spec.md`).
//!
//! A kind parses its own config keys into a [`KindSpec`] (no I/O), which builds a
//! [`Check`]. A check reports [`Outcome`]s; it never decides statuses, scores, timing or
//! retries: `health.rs` turns outcomes into statuses and `schedule/` owns every timer.
//!
//! * Probe kinds implement [`Check::probe`]: connect, exchange, close.
//! * Session kinds also implement [`Check::connect`], returning a [`Session`] whose
//!   [`Session::run`] owns the connection, answers each heartbeat request with one outcome
//!   and returns only with the error that ended the session — as soon as the socket
//!   reports it.

pub mod ami;
pub mod dns;
pub mod exec;
pub mod grpc;
pub mod http;
pub mod icmp;
pub mod mqtt;
pub mod mysql;
pub mod pieces;
pub mod plugin;
pub mod postgres;
pub mod push;
pub mod redis;
pub mod registry;
pub mod rule;
pub mod sip;
pub mod socketio;
pub mod tcp;
pub mod tls;
pub mod token;
pub mod websocket;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A boxed, sendable future (kinds are used as trait objects): `futures_util`'s.
pub use futures_util::future::BoxFuture;

/// Why an attempt failed (SPEC §3). This is what metrics labels, history and alerts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The attempt ran past its timeout.
    Timeout,
    /// Connection refused / reset while connecting.
    Refused,
    /// Name resolution failed.
    Dns,
    /// TLS handshake or certificate failure.
    Tls,
    /// Credentials rejected.
    AuthFailed,
    /// The peer answered something unexpected.
    Protocol,
    /// The peer answered and refused (e.g. SIP 503, HTTP status not accepted).
    Rejected,
    /// The peer closed the session.
    Closed,
    /// The heartbeat went stale.
    Stale,
    /// A plugin failed.
    Plugin,
    /// A bug or resource problem in the agent.
    Internal,
}

impl ErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ErrorKind; 11] = [
        Self::Timeout,
        Self::Refused,
        Self::Dns,
        Self::Tls,
        Self::AuthFailed,
        Self::Protocol,
        Self::Rejected,
        Self::Closed,
        Self::Stale,
        Self::Plugin,
        Self::Internal,
    ];

    /// The SPEC name (`auth_failed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::AuthFailed => "auth_failed",
            Self::Protocol => "protocol",
            Self::Rejected => "rejected",
            Self::Closed => "closed",
            Self::Stale => "stale",
            Self::Plugin => "plugin",
            Self::Internal => "internal",
        }
    }

    /// Parses a SPEC name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Best classification of an I/O error raised while connecting.
    pub fn from_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused | K::ConnectionReset | K::ConnectionAborted => Self::Refused,
            K::TimedOut | K::WouldBlock => Self::Timeout,
            K::UnexpectedEof | K::BrokenPipe | K::NotConnected => Self::Closed,
            K::InvalidData => Self::Protocol,
            K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => Self::Refused,
            _ => {
                let msg = e.to_string();
                if msg.contains("failed to lookup address") || msg.contains("Name or service") {
                    Self::Dns
                } else {
                    Self::Internal
                }
            }
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CheckError {
    /// The cause, as SPEC names it.
    pub kind: ErrorKind,
    /// Readable detail (already free of secrets).
    pub message: String,
}

/// Longest [`CheckError::message`], in bytes (before the [`CLIPPED_MARK`]): peers choose
/// what they send, and a 10 MB error body must not be kept per check, per event, per row.
pub const MESSAGE_CAP: usize = 1024;

/// Appended to a message that was cut at [`MESSAGE_CAP`].
pub const CLIPPED_MARK: &str = " …[clipped]";

/// `text` cut to at most `cap` bytes on a char boundary, marked with [`CLIPPED_MARK`] when
/// anything was cut.
pub fn clip(text: &str, cap: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= cap {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{CLIPPED_MARK}", &text[..end]))
}

impl CheckError {
    /// A new error; the message is passed through secret redaction, then clipped to
    /// [`MESSAGE_CAP`] bytes (redaction first, so a secret is never half-shown at the cut).
    pub fn new(kind: ErrorKind, message: impl AsRef<str>) -> Self {
        let redacted = crate::secret::redact(message.as_ref());
        let message = match clip(&redacted, MESSAGE_CAP) {
            std::borrow::Cow::Borrowed(_) => redacted,
            std::borrow::Cow::Owned(c) => c,
        };
        Self { kind, message }
    }

    /// From an I/O error, classified by [`ErrorKind::from_io`].
    pub fn io(context: &str, e: &std::io::Error) -> Self {
        Self::new(ErrorKind::from_io(e), format!("{context}: {e}"))
    }

    /// The attempt ran out of time.
    pub fn timeout(what: &str, after: Duration) -> Self {
        Self::new(
            ErrorKind::Timeout,
            format!(
                "{what} timed out after {}",
                crate::time::fmt_duration(after)
            ),
        )
    }
}

/// What one attempt or heartbeat concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Worked.
    Up,
    /// Worked, but the peer says it is not well (exec/plugin warning, SIP 503 with
    /// `error_kind = rejected`).
    Warn(Option<ErrorKind>),
    /// Failed.
    Down(ErrorKind),
    /// The check could not tell (exec/plugin UNKNOWN).
    Unknown,
}

/// A value a check measured (Nagios perfdata, SIP status code, …), exported as
/// `lifeline_check_perfdata{label}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Perf {
    /// Label, e.g. `time` or `status_code`.
    pub label: String,
    /// Value in base units.
    pub value: f64,
}

/// Durations of the phases of the last attempt (`lifeline_check_phase_seconds`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Phases {
    /// Name resolution.
    pub dns: Option<Duration>,
    /// TCP connect.
    pub connect: Option<Duration>,
    /// TLS handshake.
    pub tls: Option<Duration>,
    /// Login / authentication.
    pub auth: Option<Duration>,
    /// The request/response exchange.
    pub exchange: Option<Duration>,
}

impl Phases {
    /// The phases that were measured, with their SPEC names.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Duration)> + '_ {
        [
            ("dns", self.dns),
            ("connect", self.connect),
            ("tls", self.tls),
            ("auth", self.auth),
            ("exchange", self.exchange),
        ]
        .into_iter()
        .filter_map(|(n, d)| d.map(|d| (n, d)))
    }
}

/// The result of one attempt (probe, connect) or one heartbeat.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Worked, warned, failed or unknown.
    pub verdict: Verdict,
    /// Wall time of the attempt or heartbeat round trip.
    pub latency: Duration,
    /// One line for people (error text on failure).
    pub message: String,
    /// Facts learned from the peer (`server_version`, `sid`, …), shown under `details`.
    pub details: BTreeMap<String, serde_json::Value>,
    /// Measured values.
    pub perfdata: Vec<Perf>,
    /// Phase timings.
    pub phases: Phases,
    /// `notAfter` of the server's leaf certificate, for kinds that did TLS
    /// (`lifeline_check_tls_not_after_timestamp_seconds`); set by
    /// `net::tls::CertOutcome::with_peer_cert`.
    pub tls_not_after: Option<std::time::SystemTime>,
}

impl Outcome {
    /// A success that took `latency`.
    pub fn up(latency: Duration) -> Self {
        Self {
            verdict: Verdict::Up,
            latency,
            message: String::new(),
            details: BTreeMap::new(),
            perfdata: Vec::new(),
            phases: Phases::default(),
            tls_not_after: None,
        }
    }

    /// A failure.
    pub fn down(err: CheckError, latency: Duration) -> Self {
        Self {
            verdict: Verdict::Down(err.kind),
            latency,
            message: err.message,
            details: BTreeMap::new(),
            perfdata: Vec::new(),
            phases: Phases::default(),
            tls_not_after: None,
        }
    }

    /// Adds a detail.
    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// Sets the message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Sets the phases.
    pub fn with_phases(mut self, phases: Phases) -> Self {
        self.phases = phases;
        self
    }

    /// The error kind, if the verdict carries one.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match &self.verdict {
            Verdict::Down(k) => Some(*k),
            Verdict::Warn(k) => *k,
            _ => None,
        }
    }

    /// True for `Up` and `Warn`.
    pub fn is_success(&self) -> bool {
        matches!(self.verdict, Verdict::Up | Verdict::Warn(_))
    }
}

/// A read-only view of every check's live state, for kinds that look at other checks
/// (`rule`, plugins). `health::StateTable` implements it; kinds never see the table.
pub trait StateView: Send + Sync {
    /// Every check's state as the JSON object rule expressions and plugins read
    /// (`{"name": {"status": …, "score": …, …}, …}`).
    fn snapshot_json(&self) -> serde_json::Value;
}

/// What a check gets for each attempt.
#[derive(Clone)]
pub struct Attempt {
    /// The check's name (the first member's, for shared sessions).
    pub check: Arc<str>,
    /// Budget for this attempt; the supervisor also enforces it from outside.
    pub timeout: Duration,
    /// Consecutive failures before this attempt.
    pub attempt: u32,
    /// Every check's current state (rule and plugin kinds read it).
    pub states: Arc<dyn StateView>,
    /// Cancelled when the agent shuts down or the attempt is abandoned.
    pub cancel: CancellationToken,
}

/// What a running session is given: heartbeat requests in, one outcome per heartbeat out.
pub struct SessionIo {
    /// One message per heartbeat the supervisor wants. Closed when the session must end.
    pub beats: mpsc::Receiver<()>,
    /// Outcomes of heartbeats (and of anything else the session learns, e.g. an
    /// application-level reply).
    pub report: mpsc::Sender<Outcome>,
    /// Cancelled on shutdown: log off politely and return.
    pub shutdown: CancellationToken,
    /// Heartbeat timeout (the check's `timeout`).
    pub timeout: Duration,
}

/// A live connection owned by a session kind.
pub trait Session: Send {
    /// Drives the connection until it ends; returns why it ended. Must return as soon
    /// as the peer closes (read side reports EOF/error), not at the next heartbeat.
    fn run(self: Box<Self>, io: SessionIo) -> BoxFuture<'static, CheckError>;
}

/// A connected session and the outcome of connecting.
pub struct Connected {
    /// The session to run.
    pub session: Box<dyn Session>,
    /// Latency, phases and details of the connect.
    pub outcome: Outcome,
}

/// A built, ready-to-run check.
pub trait Check: Send + Sync {
    /// One probe: connect, exchange, close.
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome>;

    /// Opens a session (session kinds only). On failure, the failed outcome.
    fn connect<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        let _ = at;
        Box::pin(async {
            Err(Outcome::down(
                CheckError::new(ErrorKind::Internal, "this kind has no session mode"),
                Duration::ZERO,
            ))
        })
    }
}

/// Whether a check keeps a connection or probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Connect, exchange, close, every interval.
    Probe,
    /// One long-lived connection with heartbeats.
    Session,
}

impl Mode {
    /// SPEC name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::Session => "session",
        }
    }
}

/// What building a check may need from the agent (shared clients), never sockets.
#[derive(Clone)]
pub struct BuildEnv {
    /// Shared HTTP client (token fetches, http kind uses its own per-check client).
    pub http: reqwest::Client,
    /// The pushes `push` checks receive through the HTTP API.
    pub push: Arc<push::PushBoard>,
}

/// A kind's validated configuration. Building never opens a socket.
pub trait KindSpec: Send + Sync + fmt::Debug {
    /// Creates the runnable check.
    fn build(&self, env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError>;

    /// Identity of the endpoint and credentials, for session sharing: two session checks
    /// of the same kind with equal keys (and equal timing) share one connection. `None`
    /// means never shared.
    fn session_key(&self) -> Option<String> {
        None
    }

    /// Names of checks whose changes should trigger this check at once (`rule`).
    fn triggers(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What a kind's parser is told about the check it reads.
pub struct ParseCx<'a> {
    /// The check's name.
    pub check: &'a str,
    /// Probe or session.
    pub mode: Mode,
    /// `agent.plugin_dir`.
    pub plugin_dir: &'a Path,
    /// Every check name in the file (rules refer to them).
    pub names: &'a dyn crate::config::names::NameSet,
    /// The check's `interval` (`push` expects a push every interval).
    pub interval: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kind_names_round_trip() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ErrorKind::AuthFailed.as_str(), "auth_failed");
    }

    #[test]
    fn peer_messages_are_clipped_on_a_char_boundary_and_marked() {
        // 'é' is two bytes: a cut at an odd byte offset would split it.
        let huge = format!("x{}", "é".repeat(100_000));
        let e = CheckError::new(ErrorKind::Protocol, &huge);
        assert!(e.message.ends_with(CLIPPED_MARK), "{}", &e.message[..40]);
        let body = e.message.strip_suffix(CLIPPED_MARK).unwrap_or_default();
        assert!(body.len() <= MESSAGE_CAP && body.len() >= MESSAGE_CAP - 4);
        assert!(huge.starts_with(body));
        // Short messages are untouched.
        let e = CheckError::new(ErrorKind::Protocol, "short");
        assert_eq!(e.message, "short");
        let exact = "a".repeat(MESSAGE_CAP);
        assert_eq!(CheckError::new(ErrorKind::Protocol, &exact).message, exact);
    }
}
