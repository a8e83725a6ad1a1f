//! `sip` (probe; session over TCP/TLS): an OPTIONS request to `target`; healthy when the
//! final response code is in `accept_codes` (default 200–299). A `503` or a code in
//! `maintenance_codes` is a warning with `error_kind = rejected` (the server is alive and
//! shedding load); any other code is a `rejected` failure.
//!
//! Over UDP the request is retransmitted per RFC 3261 §17.1.2 (Timer E: 500 ms doubling up
//! to 4 s) until a final response arrives or the attempt's budget runs out; the number of
//! retransmissions is reported. Responses are matched to the request by top-Via branch,
//! Call-ID and CSeq; provisional responses and stray datagrams are ignored. Over TCP/TLS
//! messages are framed by `Content-Length` with the caps of [`message`].
//!
//! This file is the kind (config, verdicts, probe and session); `target` reads the URI,
//! `transport` moves the bytes (UDP transaction, TCP/TLS streams) and [`message`] is the
//! wire format.

pub mod message;
mod target;
mod transport;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

use self::message::{Message, Options, Transport};
use self::target::strip_prefix_ci;
pub use self::target::{Target, TargetError, parse_target};
use self::transport::{Conn, Reader, resolve, udp_transaction};
pub use self::transport::{T1, T2, TIMER_F};
use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, KindSpec, Mode, Outcome,
    Perf, Phases, Session, SessionIo, Verdict,
};
use crate::config::raw::Table;
use crate::net::tls::CertOutcome;
use crate::net::tls::{self, TlsOptions};

const USER_AGENT: &str = concat!("lifeline/", env!("CARGO_PKG_VERSION"));

/// `sip` settings.
#[derive(Debug, Clone)]
pub struct SipSpec {
    /// Where to send OPTIONS.
    pub target: Target,
    /// From URI; default `sip:lifeline@<local address>`.
    pub from: Option<String>,
    /// Final codes that mean healthy.
    pub accept_codes: Vec<RangeInclusive<u16>>,
    /// Codes (besides 503) that mean "alive but in maintenance": degraded.
    pub maintenance_codes: Vec<RangeInclusive<u16>>,
    /// Certificate handling (TLS).
    pub tls: TlsOptions,
    /// `tls_expiry_warning` for `transport=tls` (`None`: off).
    pub tls_expiry_warning: Option<Duration>,
}

/// Reads `target`, `from`, `accept_codes`, `maintenance_codes`, `ca_file`, `tls_skip_verify`,
/// `tls_expiry_warning`.
pub fn parse(t: &Table<'_, '_>, cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let target = t.req_str("target").and_then(|s| match parse_target(&s.value) {
        Ok(target) => {
            if cx.mode == Mode::Session && target.transport == Transport::Udp {
                t.error(
                    s.span,
                    "session mode needs a connection: use `;transport=tcp` or `;transport=tls` (or mode = \"probe\")",
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
            if (strip_prefix_ci(v, "sip:").is_some() || strip_prefix_ci(v, "sips:").is_some())
                && !v.contains(['<', '>', '\r', '\n', ' '])
            {
                Some(Some(v.to_string()))
            } else {
                t.error(f.span, "`from` must be a plain sip: or sips: URI");
                None
            }
        }
    };
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
        from: from?,
        accept_codes: accept_codes.unwrap_or_else(|| vec![200..=299]),
        maintenance_codes: maintenance_codes.unwrap_or_else(|| vec![503..=503]),
        tls,
        tls_expiry_warning,
    }))
}

impl KindSpec for SipSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let tls = match self.target.transport {
            Transport::Tls => Some(tls::client_config(&self.tls)?),
            _ => None,
        };
        Ok(Arc::new(SipCheck {
            spec: Arc::new(self.clone()),
            tls,
        }))
    }

    fn session_key(&self) -> Option<String> {
        Some(format!(
            "{}|{:?}|{:?}|{:?}|{:?}",
            self.target.uri, self.from, self.accept_codes, self.maintenance_codes, self.tls
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

fn host_of(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => v.ip().to_string(),
        SocketAddr::V6(v) => format!("[{}]", v.ip()),
    }
}

/// What every request of one probe or session shares. Each OPTIONS is a new request
/// outside any dialog, so it gets a new Call-ID, From tag and branch (RFC 3261 §8.1.1);
/// the CSeq number keeps counting up over a session.
struct Caller {
    spec: Arc<SipSpec>,
    transport: Transport,
    local: SocketAddr,
    host: String,
    from: String,
    cseq: u32,
    /// The server certificate (TLS), re-checked against the warning at every answer.
    cert: Option<tls::PeerCert>,
}

impl Caller {
    fn new(spec: Arc<SipSpec>, local: SocketAddr) -> Self {
        let host = host_of(local);
        Self {
            transport: spec.target.transport,
            from: spec
                .from
                .clone()
                .unwrap_or_else(|| format!("sip:lifeline@{host}")),
            host,
            cseq: 0,
            local,
            spec,
            cert: None,
        }
    }

    /// The next request: CSeq + 1, fresh Call-ID, tag and branch.
    fn next(&mut self) -> Options {
        self.cseq = self.cseq.wrapping_add(1).max(1);
        Options {
            uri: self.spec.target.uri.clone(),
            from: self.from.clone(),
            tag: message::random_hex(12),
            call_id: format!("{}@{}", message::random_hex(24), self.host),
            cseq: self.cseq,
            branch: message::new_branch(),
            transport: self.transport,
            local: self.local.to_string(),
            user_agent: USER_AGENT.to_string(),
        }
    }

    /// Turns a final response into an outcome.
    fn judge(&self, m: &Message, latency: Duration, retransmits: Option<u32>) -> Outcome {
        let code = m.code().unwrap_or(0);
        let reason = match &m.start {
            message::StartLine::Response { reason, .. } => reason.as_str(),
            message::StartLine::Request { .. } => "",
        };
        let line = format!("SIP {code} {reason}").trim_end().to_string();
        let spec = &self.spec;
        let mut o = if spec.accept_codes.iter().any(|r| r.contains(&code)) {
            Outcome::up(latency).with_message(line)
        } else if code == 503 || spec.maintenance_codes.iter().any(|r| r.contains(&code)) {
            let mut o = Outcome::up(latency)
                .with_message(format!("{line} (server shedding load or in maintenance)"));
            o.verdict = Verdict::Warn(Some(ErrorKind::Rejected));
            o
        } else {
            Outcome::down(
                CheckError::new(ErrorKind::Rejected, format!("OPTIONS answered {line}")),
                latency,
            )
        };
        o = o
            .with_detail("status_code", code)
            .with_detail("transport", self.transport.as_str());
        if let Some(s) = m.server() {
            o = o.with_detail("server", clip(s, 200));
        }
        o.perfdata.push(Perf {
            label: "status_code".into(),
            value: f64::from(code),
        });
        if let Some(n) = retransmits {
            o = with_retransmits(o, n);
        }
        o.with_peer_cert(self.cert.clone(), spec.tls_expiry_warning)
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

fn no_answer(budget: Duration) -> CheckError {
    CheckError::new(
        ErrorKind::Timeout,
        format!(
            "no final response to OPTIONS within {}",
            crate::time::fmt_duration(budget)
        ),
    )
}

impl SipCheck {
    async fn probe_udp(&self, start: Instant, budget: Duration) -> Outcome {
        let deadline = start + budget.min(TIMER_F);
        let mut phases = Phases::default();
        let addr = match resolve(&self.spec.target, &mut phases).await {
            Ok(a) => a,
            Err(e) => return Outcome::down(e, start.elapsed()).with_phases(phases),
        };
        let bind: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = match UdpSocket::bind(bind).await {
            Ok(s) => s,
            Err(e) => {
                return Outcome::down(
                    CheckError::new(ErrorKind::Internal, format!("bind UDP: {e}")),
                    start.elapsed(),
                );
            }
        };
        // A connected socket only receives datagrams from the target, and reports an ICMP
        // port-unreachable as a refused connection.
        if let Err(e) = sock.connect(addr).await {
            return Outcome::down(
                CheckError::io(&format!("connect {addr}"), &e),
                start.elapsed(),
            )
            .with_phases(phases);
        }
        let local = match sock.local_addr() {
            Ok(a) => a,
            Err(e) => {
                return Outcome::down(
                    CheckError::new(ErrorKind::Internal, format!("local address: {e}")),
                    start.elapsed(),
                );
            }
        };
        let mut caller = Caller::new(self.spec.clone(), local);
        let req = caller.next();
        let bytes = req.encode();
        let sent = Instant::now();
        let (result, retransmits) = udp_transaction(&sock, &req, &bytes, deadline).await;
        phases.exchange = Some(sent.elapsed());
        match result {
            Ok(m) => caller
                .judge(&m, sent.elapsed(), Some(retransmits))
                .with_phases(phases),
            Err(e) => {
                let e = if e.kind == ErrorKind::Timeout {
                    CheckError::new(
                        ErrorKind::Timeout,
                        format!(
                            "{} after {retransmits} retransmissions",
                            no_answer(budget).message
                        ),
                    )
                } else {
                    e
                };
                with_retransmits(Outcome::down(e, start.elapsed()), retransmits).with_phases(phases)
            }
        }
    }

    /// Connects and runs one OPTIONS exchange; the connection stays open for a session.
    async fn stream_exchange(
        &self,
        start: Instant,
        deadline: Instant,
        budget: Duration,
    ) -> Result<(Conn, Outcome), Outcome> {
        let mut phases = Phases::default();
        let opened = timeout_at(
            deadline,
            transport::open_stream(&self.spec.target, self.tls.as_ref(), &mut phases),
        )
        .await;
        let (io, local, cert) = match opened {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(Outcome::down(e, start.elapsed()).with_phases(phases)),
            Err(_) => {
                return Err(Outcome::down(no_answer(budget), start.elapsed()).with_phases(phases));
            }
        };
        let (r, w) = tokio::io::split(io);
        let mut conn = Conn {
            reader: Reader {
                io: r,
                buf: Vec::new(),
            },
            writer: w,
            caller: Caller::new(self.spec.clone(), local),
        };
        conn.caller.cert = cert;
        let req = conn.caller.next();
        let sent = Instant::now();
        let r = timeout_at(deadline, conn.exchange(&req)).await;
        phases.exchange = Some(sent.elapsed());
        match r {
            Ok(Ok(m)) => {
                let o = conn
                    .caller
                    .judge(&m, sent.elapsed(), None)
                    .with_phases(phases);
                Ok((conn, o))
            }
            Ok(Err(e)) => Err(Outcome::down(e, start.elapsed()).with_phases(phases)),
            Err(_) => Err(Outcome::down(no_answer(budget), start.elapsed()).with_phases(phases)),
        }
    }
}
impl Check for SipCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            let budget = own_budget(at.timeout);
            match self.spec.target.transport {
                Transport::Udp => self.probe_udp(start, budget).await,
                Transport::Tcp | Transport::Tls => {
                    match self.stream_exchange(start, start + budget, budget).await {
                        Ok((mut conn, o)) => {
                            let _ = tokio::time::timeout(
                                Duration::from_millis(200),
                                conn.writer.shutdown(),
                            )
                            .await;
                            o
                        }
                        Err(o) => o,
                    }
                }
            }
        })
    }

    fn connect<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move {
            let start = Instant::now();
            let budget = own_budget(at.timeout);
            if self.spec.target.transport == Transport::Udp {
                return Err(Outcome::down(
                    CheckError::new(
                        ErrorKind::Internal,
                        "session mode needs transport=tcp or tls",
                    ),
                    Duration::ZERO,
                ));
            }
            let (conn, outcome) = self.stream_exchange(start, start + budget, budget).await?;
            if !outcome.is_success() {
                return Err(outcome);
            }
            Ok(Connected {
                session: Box::new(SipSession { conn }),
                outcome,
            })
        })
    }
}

/// A session: OPTIONS on one connection at every heartbeat.
struct SipSession {
    conn: Conn,
}

impl Session for SipSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let mut conn = self.conn;
            let mut pending: Option<(Options, Instant)> = None;
            let closed = || CheckError::new(ErrorKind::Closed, "agent closed the session");
            loop {
                tokio::select! {
                    _ = io.shutdown.cancelled() => {
                        let _ = tokio::time::timeout(Duration::from_millis(500), conn.writer.shutdown()).await;
                        return closed();
                    }
                    b = io.beats.recv() => {
                        if b.is_none() {
                            let _ = tokio::time::timeout(Duration::from_millis(500), conn.writer.shutdown()).await;
                            return closed();
                        }
                        let req = conn.caller.next();
                        match tokio::time::timeout(io.timeout, conn.send(&req)).await {
                            Ok(Ok(())) => pending = Some((req, Instant::now())),
                            Ok(Err(e)) => return e,
                            Err(_) => return CheckError::new(ErrorKind::Timeout, "writing OPTIONS timed out"),
                        }
                    }
                    m = conn.reader.next() => {
                        let m = match m {
                            Ok(m) => m,
                            Err(e) => return e,
                        };
                        let Some((req, sent)) = &pending else { continue };
                        if req.is_answered_by(&m) && m.code().is_some_and(|c| c >= 200) {
                            let o = conn.caller.judge(&m, sent.elapsed(), None);
                            pending = None;
                            if io.report.send(o).await.is_err() {
                                return closed();
                            }
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::message::Framing;
    use super::*;

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
            from: None,
            accept_codes: vec![200..=299],
            maintenance_codes: vec![480..=480],
            tls: TlsOptions::default(),
            tls_expiry_warning: None,
        })
    }

    fn response(code: u16, req: &Options) -> Message {
        let raw = format!(
            "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP {};branch={};rport=1\r\nCall-ID: {}\r\nCSeq: {} OPTIONS\r\nUser-Agent: pbx 1.0\r\nContent-Length: 0\r\n\r\n",
            req.local, req.branch, req.call_id, req.cseq
        );
        message::parse(raw.as_bytes(), Framing::Datagram)
            .expect("valid")
            .0
    }

    #[test]
    fn codes_map_to_verdicts() {
        let mut c = Caller::new(
            spec("sip:127.0.0.1"),
            "127.0.0.1:5000".parse().expect("addr"),
        );
        let req = c.next();
        let ms = Duration::from_millis(1);
        let o = c.judge(&response(200, &req), ms, Some(0));
        assert_eq!(o.verdict, Verdict::Up);
        assert_eq!(o.details["status_code"], 200);
        assert_eq!(o.details["server"], "pbx 1.0");
        assert!(
            o.perfdata
                .iter()
                .any(|p| p.label == "status_code" && p.value == 200.0)
        );
        assert_eq!(
            c.judge(&response(503, &req), ms, None).verdict,
            Verdict::Warn(Some(ErrorKind::Rejected))
        );
        assert_eq!(
            c.judge(&response(480, &req), ms, None).verdict,
            Verdict::Warn(Some(ErrorKind::Rejected))
        );
        assert_eq!(
            c.judge(&response(404, &req), ms, None).verdict,
            Verdict::Down(ErrorKind::Rejected)
        );
        let second = c.next();
        assert_eq!((second.cseq, second.call_id == req.call_id), (2, false));
        assert_ne!(second.branch, req.branch);
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
        let o = check
            .probe_udp(start, own_budget(Duration::from_secs(10)))
            .await;
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
        let o = check
            .probe_udp(Instant::now(), Duration::from_secs(3))
            .await;
        server.await.expect("server");
        assert_eq!(o.verdict, Verdict::Up, "{}", o.message);
        assert_eq!(o.details["server"], "fake");
        assert_eq!(o.details["retransmissions"], 0);
    }
}
