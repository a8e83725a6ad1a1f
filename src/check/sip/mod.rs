//! `sip` (probe; session over TCP/TLS/WS, and over UDP for REGISTER): an OPTIONS or a
//! REGISTER to `target`.
//!
//! * `method = "OPTIONS"` (default): healthy when the final response code is in
//!   `accept_codes` (default 200–299). A `503` or a code in `maintenance_codes` is a
//!   warning with `error_kind = rejected` (alive, shedding load); any other code is a
//!   `rejected` failure.
//! * `method = "REGISTER"`: registers `username` at the registrar (digest authentication,
//!   RFC 3261 §22, MD5 or SHA-256); a probe removes its binding again, a session keeps it
//!   refreshed and removes it on shutdown ([`register`]).
//!
//! Over UDP requests are retransmitted per RFC 3261 §17.1.2 (Timer E: 500 ms doubling up
//! to 4 s) until a final response arrives or the attempt's budget runs out; the number of
//! retransmissions is reported. Responses are matched to the request by top-Via branch,
//! Call-ID and CSeq; provisional responses and stray datagrams are ignored. Over TCP/TLS
//! messages are framed by `Content-Length` with the caps of [`message`]; over WebSocket
//! (RFC 7118) each WebSocket message is one SIP message.
//!
//! This file is the kind (config, OPTIONS verdicts, probe and connect); `target` reads the
//! URI, `transport` moves the bytes, `caller` builds requests and answers challenges,
//! [`digest`] computes them, [`register`] judges and keeps registrations, and [`message`]
//! is the wire format.

mod caller;
pub mod digest;
pub mod message;
pub mod register;
mod session;
mod target;
mod transport;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use self::caller::{Caller, Exchange};
use self::message::{Message, Transport};
pub use self::target::{Target, TargetError, parse_target};
use self::transport::Link;
pub use self::transport::{T1, T2, TIMER_F};
use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, KindSpec, Mode, Outcome,
    Perf, Phases, Verdict,
};
use crate::config::raw::Table;
use crate::net::tls::CertOutcome;
use crate::net::tls::{self, TlsOptions};
use crate::secret::Secret;

/// Which request the check sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `OPTIONS`: is the SIP stack answering?
    Options,
    /// `REGISTER`: can a user register?
    Register,
}

impl Method {
    /// The method token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
        }
    }
}

/// Digest credentials.
#[derive(Debug, Clone)]
pub struct Auth {
    /// `username` (also the user part of the address of record).
    pub username: String,
    /// `password` (redacted everywhere).
    pub password: Secret<String>,
    /// `realm`: when set, only a challenge for this realm is answered.
    pub realm: Option<String>,
}

/// `sip` settings.
#[derive(Debug, Clone)]
pub struct SipSpec {
    /// Where to send the request.
    pub target: Target,
    /// OPTIONS or REGISTER.
    pub method: Method,
    /// From URI (OPTIONS; the address of record for REGISTER); default
    /// `sip:lifeline@<local address>`, or `sip:<username>@<target host>` for REGISTER.
    pub from: Option<String>,
    /// Credentials for 401/407 challenges.
    pub auth: Option<Auth>,
    /// REGISTER: the `Expires` asked for, in seconds.
    pub expires: u32,
    /// WebSocket transports: the HTTP path of the upgrade request.
    pub ws_path: String,
    /// Final codes that mean healthy.
    pub accept_codes: Vec<RangeInclusive<u16>>,
    /// Codes (besides 503) that mean "alive but in maintenance": degraded.
    pub maintenance_codes: Vec<RangeInclusive<u16>>,
    /// Certificate handling (TLS, WSS).
    pub tls: TlsOptions,
    /// `tls_expiry_warning` for `transport=tls` (`None`: off).
    pub tls_expiry_warning: Option<Duration>,
}

/// Default `expires` for REGISTER (seconds).
pub const DEFAULT_EXPIRES: u32 = 300;

fn plain_uri(v: &str) -> bool {
    (target::strip_prefix_ci(v, "sip:").is_some() || target::strip_prefix_ci(v, "sips:").is_some())
        && !v.contains(['<', '>', '\r', '\n', ' ', '"'])
}

/// Reads `target`, `method`, `from`, `username`, `password`, `realm`, `expires`,
/// `ws_path`, `accept_codes`, `maintenance_codes`, `ca_file`, `tls_skip_verify`,
/// `tls_expiry_warning`.
pub fn parse(t: &Table<'_, '_>, cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let method = match t.str("method") {
        None => Some(Method::Options),
        Some(m) => match m.value.to_ascii_uppercase().as_str() {
            "OPTIONS" => Some(Method::Options),
            "REGISTER" => Some(Method::Register),
            _ => {
                t.error(m.span, "`method` must be \"OPTIONS\" or \"REGISTER\"");
                None
            }
        },
    };
    let target = t.req_str("target").and_then(|s| match parse_target(&s.value) {
        Ok(target) => {
            if cx.mode == Mode::Session
                && target.transport == Transport::Udp
                && method != Some(Method::Register)
            {
                t.error(
                    s.span,
                    "an OPTIONS session needs a connection: use `;transport=tcp`, `tls`, `ws` or `wss` (or mode = \"probe\")",
                );
                return None;
            }
            Some(target)
        }
        Err(e) => {
            t.error(s.span, format!("`target`: {e}"));
            None
        }
    });
    let from = match t.str("from") {
        None => Some(None),
        Some(f) => {
            let v = f.value.trim();
            if plain_uri(v) {
                Some(Some(v.to_string()))
            } else {
                t.error(f.span, "`from` must be a plain sip: or sips: URI");
                None
            }
        }
    };
    let auth = parse_auth(t, method);
    let expires = parse_expires(t);
    let ws_path = match t.str("ws_path") {
        None => Some("/".to_string()),
        Some(p) if p.value.starts_with('/') && !p.value.contains(char::is_whitespace) => {
            Some(p.value)
        }
        Some(p) => {
            t.error(
                p.span,
                "`ws_path` must start with `/` and contain no spaces",
            );
            None
        }
    };
    if method == Some(Method::Register)
        && let Some(v) = t.raw("accept_codes")
    {
        t.error(
            v.span(),
            "`accept_codes` applies to OPTIONS; a REGISTER succeeds on 2xx only",
        );
        return None;
    }
    let accept_ok = !t.has("accept_codes");
    let accept_codes = t.status_ranges("accept_codes");
    let maint_ok = !t.has("maintenance_codes");
    let maintenance_codes = t.status_ranges("maintenance_codes");
    if (accept_codes.is_none() && !accept_ok) || (maintenance_codes.is_none() && !maint_ok) {
        return None;
    }
    let tls = t.tls_options();
    let tls_expiry_warning = t.tls_expiry_warning();
    Some(Arc::new(SipSpec {
        target: target?,
        method: method?,
        from: from?,
        auth: auth?,
        expires: expires?,
        ws_path: ws_path?,
        accept_codes: accept_codes.unwrap_or_else(|| vec![200..=299]),
        maintenance_codes: maintenance_codes.unwrap_or_else(|| vec![503..=503]),
        tls,
        tls_expiry_warning,
    }))
}

/// `username`, `password`, `realm`: all or none of username/password; REGISTER needs a
/// username.
fn parse_auth(t: &Table<'_, '_>, method: Option<Method>) -> Option<Option<Auth>> {
    let username = t.str("username");
    let password = t.secret("password");
    let realm = t.str("realm");
    if let Some(u) = &username
        && (u.value.is_empty()
            || u.value
                .contains(|c: char| c.is_whitespace() || "<>@:;\"\\,?".contains(c)))
    {
        t.error(
            u.span.clone(),
            "`username` must be a non-empty SIP user name (no spaces, <>@:;\"\\,?)",
        );
        return None;
    }
    if let Some(r) = &realm
        && r.value.contains(['"', '\\', '\r', '\n'])
    {
        t.error(
            r.span.clone(),
            "`realm` must not contain quotes, backslashes or line breaks",
        );
        return None;
    }
    match (username, password) {
        (Some(u), Some(p)) => Some(Some(Auth {
            username: u.value,
            password: p,
            realm: realm.map(|r| r.value),
        })),
        (None, None) => {
            if method == Some(Method::Register) {
                t.missing("username");
                return None;
            }
            if let Some(r) = realm {
                t.error(r.span, "`realm` needs `username` and `password`");
                return None;
            }
            Some(None)
        }
        (Some(_), None) => {
            if !t.has("password") {
                t.missing("password");
            }
            None
        }
        (None, Some(_)) => {
            t.missing("username");
            None
        }
    }
}

/// `expires`: seconds (an integer) or a duration (`"5m"`), 1 s to 1 day.
fn parse_expires(t: &Table<'_, '_>) -> Option<u32> {
    const MAX: i64 = 86_400;
    let Some(v) = t.raw("expires") else {
        return Some(DEFAULT_EXPIRES);
    };
    if matches!(v.get_ref(), toml::de::DeValue::Integer(_)) {
        return t.int("expires", 1..=MAX).map(|n| n as u32);
    }
    let d = t.duration("expires")?;
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 || secs > MAX as u64 {
        t.error(
            v.span(),
            "`expires` must be whole seconds between 1s and 1d",
        );
        return None;
    }
    Some(secs as u32)
}

impl KindSpec for SipSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let tls = match self.target.transport {
            Transport::Tls | Transport::Wss => Some(tls::client_config(&self.tls)?),
            _ => None,
        };
        Ok(Arc::new(SipCheck {
            spec: Arc::new(self.clone()),
            tls,
        }))
    }

    fn session_key(&self) -> Option<String> {
        let auth = self
            .auth
            .as_ref()
            .map(|a| (&a.username, a.password.expose(), &a.realm));
        Some(format!(
            "{}|{:?}|{:?}|{:?}|{}|{}|{:?}|{:?}|{:?}",
            self.target.uri,
            self.method,
            self.from,
            auth,
            self.expires,
            self.ws_path,
            self.accept_codes,
            self.maintenance_codes,
            self.tls
        ))
    }
}

/// A built `sip` check.
pub struct SipCheck {
    spec: Arc<SipSpec>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The part of the attempt budget the check uses itself, so that a timeout is reported
/// by the check (with its retransmission count) just before the supervisor's cut-off.
pub fn own_budget(timeout: Duration) -> Duration {
    timeout.saturating_sub((timeout / 20).min(Duration::from_millis(100)))
}

/// `SIP 200 OK`: the status line of a response, for messages.
pub(crate) fn status_line(m: &Message) -> String {
    let code = m.code().unwrap_or(0);
    let reason = match &m.start {
        message::StartLine::Response { reason, .. } => clip(reason, 100),
        message::StartLine::Request { .. } => String::new(),
    };
    format!("SIP {code} {reason}").trim_end().to_string()
}

/// What every verdict reports: status code, transport, server, perfdata.
fn with_facts(mut o: Outcome, m: &Message, ex: &Exchange, spec: &SipSpec) -> Outcome {
    let transport = spec.target.transport;
    let code = m.code().unwrap_or(0);
    o = o
        .with_detail("status_code", code)
        .with_detail("transport", transport.as_str());
    if let Some(s) = m.server() {
        o = o.with_detail("server", clip(s, 200));
    }
    if let Some(a) = ex.algorithm {
        o = o.with_detail("auth", a);
    }
    o.perfdata.push(Perf {
        label: "status_code".into(),
        value: f64::from(code),
    });
    if let Some(n) = ex.retransmits {
        o = with_retransmits(o, n);
    }
    o.phases.auth = ex.auth_leg;
    o.phases.exchange = Some(ex.latency);
    o.with_peer_cert(ex.cert.clone(), spec.tls_expiry_warning)
}

impl SipSpec {
    /// Turns the final response to an OPTIONS into an outcome.
    fn judge_options(&self, ex: &Exchange) -> Outcome {
        let m = &ex.response;
        let code = m.code().unwrap_or(0);
        let line = status_line(m);
        let o = if self.accept_codes.iter().any(|r| r.contains(&code)) {
            Outcome::up(ex.latency).with_message(line)
        } else if code == 503 || self.maintenance_codes.iter().any(|r| r.contains(&code)) {
            let mut o = Outcome::up(ex.latency)
                .with_message(format!("{line} (server shedding load or in maintenance)"));
            o.verdict = Verdict::Warn(Some(ErrorKind::Rejected));
            o
        } else {
            Outcome::down(
                CheckError::new(ErrorKind::Rejected, format!("OPTIONS answered {line}")),
                ex.latency,
            )
        };
        with_facts(o, m, ex, self)
    }
}

fn with_retransmits(mut o: Outcome, n: u32) -> Outcome {
    o.perfdata.push(Perf {
        label: "retransmissions".into(),
        value: f64::from(n),
    });
    o.with_detail("retransmissions", n)
}

/// At most `max` characters of `s`.
pub(crate) fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A failed transaction as an outcome: a timeout says how long and how many
/// retransmissions were made.
fn failed(
    method: Method,
    e: CheckError,
    retransmits: Option<u32>,
    budget: Duration,
    start: Instant,
    phases: Phases,
) -> Outcome {
    let e = if e.kind == ErrorKind::Timeout {
        let mut m = format!(
            "no final response to {} within {}",
            method.as_str(),
            crate::time::fmt_duration(budget)
        );
        if let Some(n) = retransmits {
            m.push_str(&format!(" after {n} retransmissions"));
        }
        CheckError::new(ErrorKind::Timeout, m)
    } else {
        e
    };
    let o = Outcome::down(e, start.elapsed()).with_phases(phases);
    match retransmits {
        Some(n) => with_retransmits(o, n),
        None => o,
    }
}

/// A link, its caller and the phases of opening it.
struct Opened {
    link: Link,
    caller: Caller,
    phases: Phases,
}

impl SipCheck {
    /// Opens the transport within `deadline`.
    async fn open(
        &self,
        start: Instant,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Opened, Outcome> {
        let mut phases = Phases::default();
        let r = tokio::time::timeout_at(
            deadline,
            transport::open(&self.spec, self.tls.as_ref(), &mut phases),
        )
        .await;
        match r {
            Ok(Ok((link, local, cert))) => {
                let mut caller = Caller::new(self.spec.clone(), local);
                caller.cert = cert;
                Ok(Opened {
                    link,
                    caller,
                    phases,
                })
            }
            Ok(Err(e)) => Err(Outcome::down(e, start.elapsed()).with_phases(phases)),
            Err(_) => Err(failed(
                self.spec.method,
                CheckError::new(ErrorKind::Timeout, "connect"),
                None,
                budget,
                start,
                phases,
            )),
        }
    }

    /// Opens the transport and runs the first request (OPTIONS, or REGISTER with its
    /// challenge and a 423 retry); the link stays open for a session.
    async fn first(&self, start: Instant, budget: Duration) -> Result<(Opened, Outcome), Outcome> {
        let deadline = start + budget;
        let mut opened = self.open(start, deadline, budget).await?;
        let tx_deadline = deadline.min(Instant::now() + TIMER_F);
        let outcome = match self.spec.method {
            Method::Options => {
                match opened
                    .caller
                    .transaction(&mut opened.link, None, tx_deadline)
                    .await
                {
                    Ok(ex) => self.spec.judge_options(&ex),
                    Err((e, n)) => {
                        failed(Method::Options, e, n, budget, start, opened.phases.clone())
                    }
                }
            }
            Method::Register => register::register(
                &self.spec,
                &mut opened.caller,
                &mut opened.link,
                tx_deadline,
            )
            .await
            .map(|r| r.outcome)
            .unwrap_or_else(|(e, n)| {
                failed(Method::Register, e, n, budget, start, opened.phases.clone())
            }),
        };
        let mut phases = opened.phases.clone();
        phases.auth = outcome.phases.auth;
        phases.exchange = outcome.phases.exchange;
        Ok((opened, outcome.with_phases(phases)))
    }
}

impl Check for SipCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            let budget = own_budget(at.timeout);
            let (mut opened, mut o) = match self.first(start, budget).await {
                Ok(x) => x,
                Err(o) => return o,
            };
            if self.spec.method == Method::Register && o.is_success() {
                // A probe leaves nothing behind: remove the binding it just made.
                let left = (start + budget).saturating_duration_since(Instant::now());
                let gone = register::unregister(
                    &mut opened.caller,
                    &mut opened.link,
                    Instant::now() + left.min(register::UNREGISTER_WITHIN),
                )
                .await;
                o = o.with_detail("unregistered", gone.is_ok());
            }
            opened.link.close(Duration::from_millis(200)).await;
            o
        })
    }

    fn connect<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move {
            let start = Instant::now();
            let budget = own_budget(at.timeout);
            if self.spec.target.transport == Transport::Udp && self.spec.method == Method::Options {
                return Err(Outcome::down(
                    CheckError::new(
                        ErrorKind::Internal,
                        "an OPTIONS session needs transport=tcp, tls, ws or wss",
                    ),
                    Duration::ZERO,
                ));
            }
            let (opened, outcome) = self.first(start, budget).await?;
            if !outcome.is_success() {
                return Err(outcome);
            }
            let session =
                session::SipSession::new(self.spec.clone(), opened.link, opened.caller, &outcome);
            Ok(Connected {
                session: Box::new(session),
                outcome,
            })
        })
    }
}

#[cfg(test)]
mod tests;
