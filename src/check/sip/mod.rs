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
}

/// Default `expires` for REGISTER (seconds).
pub const DEFAULT_EXPIRES: u32 = 300;

fn plain_uri(v: &str) -> bool {
    (target::strip_prefix_ci(v, "sip:").is_some() || target::strip_prefix_ci(v, "sips:").is_some())
        && !v.contains(['<', '>', '\r', '\n', ' ', '"'])
}

/// Reads `target`, `method`, `from`, `username`, `password`, `realm`, `expires`,
/// `ws_path`, `accept_codes`, `maintenance_codes`, `ca_file`, `tls_skip_verify`.
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
            t.missing("password");
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
fn with_facts(mut o: Outcome, m: &Message, ex: &Exchange, transport: Transport) -> Outcome {
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
    o
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
        with_facts(o, m, ex, self.target.transport)
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
            Ok(Ok((link, local))) => Ok(Opened {
                link,
                caller: Caller::new(self.spec.clone(), local),
                phases,
            }),
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
mod tests {
    use super::message::Framing;
    use super::*;
    use tokio::net::UdpSocket;

    #[test]
    fn budget_leaves_room_for_the_supervisor() {
        assert_eq!(
            own_budget(Duration::from_secs(2)),
            Duration::from_millis(1900)
        );
        assert_eq!(
            own_budget(Duration::from_millis(500)),
            Duration::from_millis(475)
        );
        assert_eq!(
            own_budget(Duration::from_secs(10)),
            Duration::from_millis(9900)
        );
    }

    fn spec(uri: &str) -> Arc<SipSpec> {
        Arc::new(SipSpec {
            target: parse_target(uri).expect("valid"),
            method: Method::Options,
            from: None,
            auth: None,
            expires: DEFAULT_EXPIRES,
            ws_path: "/".into(),
            accept_codes: vec![200..=299],
            maintenance_codes: vec![480..=480],
            tls: TlsOptions::default(),
        })
    }

    fn exchange(code: u16) -> Exchange {
        let raw = format!(
            "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKx\r\nUser-Agent: pbx 1.0\r\nContent-Length: 0\r\n\r\n"
        );
        Exchange {
            response: message::parse(raw.as_bytes(), Framing::Datagram)
                .expect("valid")
                .0,
            latency: Duration::from_millis(1),
            auth_leg: None,
            retransmits: Some(0),
            algorithm: None,
        }
    }

    #[test]
    fn codes_map_to_verdicts() {
        let s = spec("sip:127.0.0.1");
        let o = s.judge_options(&exchange(200));
        assert_eq!(o.verdict, Verdict::Up);
        assert_eq!(o.details["status_code"], 200);
        assert_eq!(o.details["server"], "pbx 1.0");
        assert_eq!(o.details["retransmissions"], 0);
        assert!(
            o.perfdata
                .iter()
                .any(|p| p.label == "status_code" && p.value == 200.0)
        );
        for (code, verdict) in [
            (503, Verdict::Warn(Some(ErrorKind::Rejected))),
            (480, Verdict::Warn(Some(ErrorKind::Rejected))),
            (404, Verdict::Down(ErrorKind::Rejected)),
        ] {
            assert_eq!(s.judge_options(&exchange(code)).verdict, verdict, "{code}");
        }
    }

    #[test]
    fn requests_count_up_with_fresh_ids() {
        let mut c = Caller::new(
            spec("sip:127.0.0.1"),
            transport::Local::Addr("127.0.0.1:5000".parse().expect("addr")),
        );
        let first = c.next(None);
        let second = c.next(None);
        assert_eq!((first.cseq, second.cseq), (1, 2));
        assert_ne!(second.call_id, first.call_id);
        assert_ne!(second.branch, first.branch);
        assert_eq!(first.method, "OPTIONS");
    }

    async fn probe(check: &SipCheck, budget: Duration) -> Outcome {
        match check.first(Instant::now(), budget).await {
            Ok((_, o)) | Err(o) => o,
        }
    }

    /// Timer E under paused time: sends at 0, 0.5, 1.5, 3.5, 7.5 s; a 10 s timeout (own
    /// budget 9.9 s) therefore sees exactly four retransmissions, byte-identical.
    #[tokio::test(start_paused = true)]
    async fn udp_retransmits_on_timer_e() {
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let port = peer.local_addr().expect("addr").port();
        let check = SipCheck {
            spec: spec(&format!("sip:127.0.0.1:{port}")),
            tls: None,
        };
        let start = Instant::now();
        let o = probe(&check, own_budget(Duration::from_secs(10))).await;
        assert_eq!(
            o.verdict,
            Verdict::Down(ErrorKind::Timeout),
            "{}",
            o.message
        );
        assert_eq!(o.details["retransmissions"], 4, "{}", o.message);
        assert!(start.elapsed() >= Duration::from_millis(9900));
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(10), peer.recv(&mut buf)).await
        {
            seen.push(buf[..n].to_vec());
        }
        assert_eq!(seen.len(), 5);
        assert!(seen.iter().all(|d| d == &seen[0]));
    }

    /// A provisional answer, a stray datagram and an answer to another request are all
    /// ignored; the matching final response ends the transaction.
    #[tokio::test]
    async fn udp_matches_only_its_own_final_response() {
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let port = peer.local_addr().expect("addr").port();
        let check = SipCheck {
            spec: spec(&format!("sip:127.0.0.1:{port}")),
            tls: None,
        };
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let (n, from) = peer.recv_from(&mut buf).await.expect("request");
            let (m, _) = message::parse(&buf[..n], Framing::Datagram).expect("valid request");
            let via = m.header("via").unwrap_or_default().to_string();
            let cid = m.header("call-id").unwrap_or_default().to_string();
            let send = |code: u16, via: &str, cseq: &str| {
                format!(
                    "SIP/2.0 {code} X\r\nv: {via}\r\ni: {cid}\r\nCSeq: {cseq}\r\nServer: fake\r\nl: 0\r\n\r\n"
                )
            };
            for d in [
                b"garbage".to_vec(),
                send(100, &via, "1 OPTIONS").into_bytes(),
                send(404, "SIP/2.0/UDP x;branch=z9hG4bKother", "1 OPTIONS").into_bytes(),
                send(404, &via, "2 OPTIONS").into_bytes(),
                send(200, &via, "1 OPTIONS").into_bytes(),
            ] {
                peer.send_to(&d, from).await.expect("send");
            }
        });
        let o = probe(&check, Duration::from_secs(3)).await;
        server.await.expect("server");
        assert_eq!(o.verdict, Verdict::Up, "{}", o.message);
        assert_eq!(o.details["server"], "fake");
        assert_eq!(o.details["retransmissions"], 0);
    }

    /// A server that challenges every request: the challenge is answered exactly once
    /// (the second request carries a digest `Authorization`), then `auth_failed`. A 401
    /// without any challenge header is `auth_failed` too, never a hang or panic.
    #[tokio::test]
    async fn challenges_are_answered_once_then_auth_failed() {
        for with_header in [true, false] {
            let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            let port = peer.local_addr().expect("addr").port();
            let mut sp = (*spec(&format!("sip:127.0.0.1:{port}"))).clone();
            sp.method = Method::Register;
            sp.auth = Some(Auth {
                username: "alice".into(),
                password: Secret::new("pw".into()),
                realm: None,
            });
            let check = SipCheck {
                spec: Arc::new(sp),
                tls: None,
            };
            let server = tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(Ok((n, from))) =
                    tokio::time::timeout(Duration::from_millis(500), peer.recv_from(&mut buf)).await
                {
                    let (m, _) = message::parse(&buf[..n], Framing::Datagram).expect("request");
                    let h = |n: &str| m.header(n).unwrap_or_default().to_string();
                    let challenge = if with_header {
                        "WWW-Authenticate: Digest realm=\"r\", nonce=\"n1\", qop=\"auth\"\r\n"
                    } else {
                        ""
                    };
                    let reply = format!(
                        "SIP/2.0 401 Unauthorized\r\nVia: {}\r\nCall-ID: {}\r\nCSeq: {}\r\n{challenge}Content-Length: 0\r\n\r\n",
                        h("via"),
                        h("call-id"),
                        h("cseq")
                    );
                    seen.push(m.header("authorization").map(str::to_string));
                    peer.send_to(reply.as_bytes(), from).await.expect("send");
                }
                seen
            });
            let o = probe(&check, Duration::from_secs(3)).await;
            let seen = server.await.expect("server");
            assert_eq!(
                o.verdict,
                Verdict::Down(ErrorKind::AuthFailed),
                "{}",
                o.message
            );
            if with_header {
                assert_eq!(seen.len(), 2, "{seen:?}");
                assert_eq!(seen[0], None);
                let auth = seen[1].as_deref().unwrap_or_default();
                assert!(
                    auth.starts_with("Digest username=\"alice\", realm=\"r\", nonce=\"n1\"")
                        && auth.contains("qop=auth, nc=00000001"),
                    "{auth}"
                );
                assert!(o.message.contains("credentials rejected"), "{}", o.message);
            } else {
                assert_eq!(seen.len(), 1, "{seen:?}");
                assert!(o.message.contains("no WWW-Authenticate"), "{}", o.message);
            }
        }
    }
}
