//! `grpc` (probe and session): the standard gRPC health service,
//! `grpc.health.v1.Health`, over HTTP/2 in clear text (h2c, prior knowledge) or TLS
//! (ALPN `h2`).
//!
//! A probe calls `Check` with `service` and maps the answer: `SERVING` → up,
//! `NOT_SERVING` → down (`rejected`), `SERVICE_UNKNOWN` or gRPC status `NOT_FOUND` →
//! `rejected`, `UNAUTHENTICATED`/`PERMISSION_DENIED` → `auth_failed`, any other non-OK
//! gRPC status → `rejected`. A session calls the server-streaming `Watch` and keeps it
//! open: every status the server pushes is reported at once, each heartbeat is an HTTP/2
//! PING round trip, and the stream or connection ending ends the session at once.
//!
//! HTTP/2 is the `h2` crate (already in the tree under hyper); the two one-field protobuf
//! messages are encoded by hand ([`wire`]), so no protoc or code generation is needed.
//! Reads are bounded: small HTTP/2 windows and header lists, messages capped at
//! [`wire::MAX_MESSAGE`], and the byte budget of [`crate::net::capped`] per exchange.
//! See `docs/grpc.md`.

pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{Ping, PingPong, RecvStream};
use http::{HeaderMap, Request, Response};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use self::wire::{Serving, WireError};
use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, Connected, ErrorKind, KindSpec, Outcome,
    Phases, Session, SessionIo, Verdict,
};
use crate::config::raw::Table;
use crate::net::addr::{join_host_port, split_host_port};
use crate::net::capped::{DEFAULT_BUDGET, ReadBudget};
use crate::net::stream::{self, BoxIo};
use crate::net::tls::TlsOptions;
use crate::net::tls::{CertOutcome, PeerCert};

/// `Check`'s path.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// `Watch`'s path.
pub const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";
/// HTTP/2 stream window (what the server may send before we read).
const STREAM_WINDOW: u32 = 64 * 1024;
/// Largest header list accepted (response headers and trailers).
const MAX_HEADERS: u32 = 16 * 1024;
/// How long closing may take on shutdown.
const GOODBYE: Duration = Duration::from_millis(200);

/// `grpc` settings.
#[derive(Debug, Clone)]
pub struct GrpcSpec {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Service name asked about (empty: the server as a whole).
    pub service: String,
    /// TLS (ALPN h2) instead of h2c.
    pub tls: bool,
    /// Certificate handling with `tls`.
    pub tls_options: TlsOptions,
    /// `tls_expiry_warning` with `tls` (`None`: off).
    pub tls_expiry_warning: Option<Duration>,
}

/// Reads `address`, `service`, `tls`, `ca_file`, `tls_skip_verify`, `tls_expiry_warning`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let address = t
        .req_str("address")
        .and_then(|a| match split_host_port(&a.value) {
            Some((h, p)) => Some((h.to_string(), p)),
            None => {
                t.error(
                    a.span,
                    format!("`address` must be HOST:PORT, got `{}`", a.value),
                );
                None
            }
        });
    let service = t.str("service").map(|s| s.value).unwrap_or_default();
    let tls = t.bool("tls").unwrap_or(false);
    let tls_options = t.tls_options();
    let tls_expiry_warning = t.tls_expiry_warning();
    let (host, port) = address?;
    Some(Arc::new(GrpcSpec {
        host,
        port,
        service,
        tls,
        tls_options,
        tls_expiry_warning,
    }))
}

impl GrpcSpec {
    fn authority(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

impl KindSpec for GrpcSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let tls = stream::connector_if(self.tls, &self.tls_options, &[b"h2"])?;
        Ok(Arc::new(GrpcCheck {
            spec: self.clone(),
            tls,
        }))
    }

    fn session_key(&self) -> Option<String> {
        Some(format!(
            "{}|{}|{}|{:?}",
            self.authority(),
            self.service,
            self.tls,
            self.tls_options
        ))
    }
}

struct GrpcCheck {
    spec: GrpcSpec,
    tls: Option<TlsConnector>,
}

/// Classifies an HTTP/2 error.
fn h2_error(what: &str, e: h2::Error) -> CheckError {
    if e.is_io() {
        let text = e.to_string();
        return match e.into_io() {
            Some(io) => CheckError::io(what, &io),
            None => CheckError::new(ErrorKind::Closed, format!("{what}: {text}")),
        };
    }
    if e.is_remote() && e.is_go_away() {
        return CheckError::new(
            ErrorKind::Closed,
            format!("{what}: server sent GOAWAY: {e}"),
        );
    }
    if e.is_remote() && e.is_reset() {
        return CheckError::new(
            ErrorKind::Rejected,
            format!("{what}: server reset the stream: {e}"),
        );
    }
    CheckError::new(ErrorKind::Protocol, format!("{what}: HTTP/2: {e}"))
}

fn wire_error(e: WireError) -> CheckError {
    CheckError::new(ErrorKind::Protocol, e.to_string())
}

/// The name of a gRPC status code.
fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNRECOGNIZED")
}

/// `grpc-status` (and `grpc-message`) of headers or trailers: `None` when absent,
/// `Some(Ok)` for OK, `Some(Err)` for a failure status.
fn grpc_status(h: &HeaderMap, service: &str) -> Option<Result<(), CheckError>> {
    let raw = h.get("grpc-status")?;
    let code: u32 = match raw.to_str().ok().and_then(|s| s.trim().parse().ok()) {
        Some(c) => c,
        None => {
            return Some(Err(CheckError::new(
                ErrorKind::Protocol,
                "unreadable grpc-status",
            )));
        }
    };
    if code == 0 {
        return Some(Ok(()));
    }
    let msg = h
        .get("grpc-message")
        .map(|m| wire::decode_grpc_message(m.as_bytes()))
        .unwrap_or_default();
    let kind = match code {
        7 | 16 => ErrorKind::AuthFailed,
        4 => ErrorKind::Timeout,
        _ => ErrorKind::Rejected,
    };
    let what = match code {
        5 => format!(" (service `{service}` unknown to the server)"),
        12 => " (the server has no grpc.health.v1.Health service)".to_string(),
        _ => String::new(),
    };
    Some(Err(CheckError::new(
        kind,
        format!(
            "gRPC status {code} {}{what}{}{msg}",
            code_name(code),
            if msg.is_empty() { "" } else { ": " }
        ),
    )))
}

/// The outcome a serving status means.
fn judge(s: Serving, service: &str, latency: Duration) -> Outcome {
    let shown = if service.is_empty() {
        "the server".to_string()
    } else {
        format!("service `{service}`")
    };
    let o = match s {
        Serving::Serving => Outcome::up(latency),
        other => Outcome::down(
            CheckError::new(
                ErrorKind::Rejected,
                format!("{shown} is {}", other.as_str()),
            ),
            latency,
        ),
    };
    o.with_detail("serving_status", s.as_str())
}

/// The spawned HTTP/2 connection task; aborted if dropped.
struct Driver(JoinHandle<Result<(), h2::Error>>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn driver_ended(r: Result<Result<(), h2::Error>, tokio::task::JoinError>) -> CheckError {
    match r {
        Ok(Ok(())) => CheckError::new(ErrorKind::Closed, "server closed the HTTP/2 connection"),
        Ok(Err(e)) => h2_error("connection", e),
        Err(e) => CheckError::new(ErrorKind::Internal, format!("connection task failed: {e}")),
    }
}

/// An HTTP/2 connection with a call in flight.
struct Call {
    send: SendRequest<Bytes>,
    ping: Option<PingPong>,
    driver: Driver,
    budget: Arc<ReadBudget>,
    body: Body,
    /// The server certificate (TLS).
    cert: Option<PeerCert>,
}

/// The response of a call and its unread bytes.
struct Body {
    response: Response<RecvStream>,
    buf: BytesMut,
}

impl Body {
    /// The next message of the response; `Ok(None)` at the end of the body.
    async fn next_message(&mut self) -> Result<Option<Bytes>, CheckError> {
        loop {
            if let Some(m) = wire::take_message(&mut self.buf).map_err(wire_error)? {
                return Ok(Some(m));
            }
            let body = self.response.body_mut();
            match body.data().await {
                None => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    return Err(CheckError::new(
                        ErrorKind::Protocol,
                        "response ended inside a gRPC message",
                    ));
                }
                Some(Err(e)) => return Err(h2_error("response body", e)),
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    if self.buf.len() + chunk.len() > wire::MAX_MESSAGE + 5 {
                        return Err(wire_error(WireError::TooLarge(
                            (self.buf.len() + chunk.len()) as u64,
                        )));
                    }
                    self.buf.extend_from_slice(&chunk);
                }
            }
        }
    }

    /// The trailers' verdict (after the body ended).
    async fn trailers(&mut self, service: &str) -> Result<(), CheckError> {
        let t = self
            .response
            .body_mut()
            .trailers()
            .await
            .map_err(|e| h2_error("trailers", e))?;
        match t.as_ref().and_then(|t| grpc_status(t, service)) {
            Some(r) => r,
            None => Err(CheckError::new(
                ErrorKind::Protocol,
                "response ended without grpc-status",
            )),
        }
    }

    /// The next serving status of the call, or the error that ended it.
    async fn next_status(&mut self, service: &str) -> Result<Serving, CheckError> {
        match self.next_message().await? {
            Some(m) => wire::parse_response(&m).map_err(wire_error),
            None => {
                self.trailers(service).await?;
                Err(CheckError::new(
                    ErrorKind::Closed,
                    "server ended the Watch stream",
                ))
            }
        }
    }
}

impl GrpcCheck {
    /// TCP, TLS, HTTP/2 and the request to `path`, up to the response headers.
    async fn call(
        &self,
        path: &str,
        deadline: Option<Duration>,
        phases: &mut Phases,
    ) -> Result<Call, CheckError> {
        let s = &self.spec;
        let budget = ReadBudget::new(DEFAULT_BUDGET);
        let authority = s.authority();
        let (io, cert): (BoxIo, _) = stream::open_with_cert(
            &authority,
            &s.host,
            self.tls.as_ref(),
            budget.clone(),
            phases,
        )
        .await?;
        let t = Instant::now();
        let (send, mut conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(STREAM_WINDOW * 2)
            .max_header_list_size(MAX_HEADERS)
            .max_concurrent_streams(0)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| h2_error("HTTP/2 handshake", e))?;
        let ping = conn.ping_pong();
        let driver = Driver(tokio::spawn(conn));
        let scheme = if s.tls { "https" } else { "http" };
        let mut req = Request::post(format!("{scheme}://{authority}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header(
                "user-agent",
                concat!("lifeline/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(d) = deadline {
            let ms = d.as_millis().clamp(1, 99_999_999);
            req = req.header("grpc-timeout", format!("{ms}m"));
        }
        let req = req
            .body(())
            .map_err(|e| CheckError::new(ErrorKind::Internal, format!("request: {e}")))?;
        let mut send = send
            .ready()
            .await
            .map_err(|e| h2_error("HTTP/2 connection", e))?;
        let (resp, mut body) = send
            .send_request(req, false)
            .map_err(|e| h2_error("request", e))?;
        body.send_data(wire::request(&s.service), true)
            .map_err(|e| h2_error("request body", e))?;
        let response = resp.await.map_err(|e| h2_error("response", e))?;
        phases.exchange = Some(t.elapsed());
        let call = Call {
            send,
            ping,
            driver,
            budget,
            body: Body {
                response,
                buf: BytesMut::new(),
            },
            cert,
        };
        let status = call.body.response.status();
        // Trailers-only responses carry grpc-status in the headers.
        if let Some(r) = grpc_status(call.body.response.headers(), &s.service) {
            r?;
            return Err(CheckError::new(
                ErrorKind::Protocol,
                "grpc-status OK in the headers, without a message",
            ));
        }
        if status != http::StatusCode::OK {
            return Err(CheckError::new(
                ErrorKind::Protocol,
                format!("HTTP status {status} (not a gRPC server?)"),
            ));
        }
        let ct = call
            .body
            .response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.starts_with("application/grpc") {
            return Err(CheckError::new(
                ErrorKind::Protocol,
                format!("content-type `{ct}` is not application/grpc"),
            ));
        }
        Ok(call)
    }

    async fn check(&self, at: &Attempt) -> Outcome {
        let start = Instant::now();
        let mut phases = Phases::default();
        let mut cert = None;
        let r: Result<Serving, CheckError> = async {
            let mut call = self.call(CHECK_PATH, Some(at.timeout), &mut phases).await?;
            cert = call.cert.take();
            let t = Instant::now();
            let body = &mut call.body;
            let msg = body.next_message().await?;
            let serving = msg.map(|m| wire::parse_response(&m)).transpose();
            let serving = serving.map_err(wire_error)?;
            if body.next_message().await?.is_some() {
                return Err(CheckError::new(
                    ErrorKind::Protocol,
                    "more than one response message",
                ));
            }
            body.trailers(&self.spec.service).await?;
            phases.exchange = Some(phases.exchange.unwrap_or_default() + t.elapsed());
            serving.ok_or_else(|| {
                CheckError::new(ErrorKind::Protocol, "OK without a response message")
            })
        }
        .await;
        match r {
            Ok(s) => judge(s, &self.spec.service, start.elapsed())
                .with_phases(phases)
                .with_peer_cert(cert, self.spec.tls_expiry_warning),
            Err(e) => Outcome::down(e, start.elapsed()).with_phases(phases),
        }
    }
}

impl Check for GrpcCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(self.check(at))
    }

    fn connect<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Result<Connected, Outcome>> {
        Box::pin(async move {
            let start = Instant::now();
            let mut phases = Phases::default();
            let r = async {
                // No grpc-timeout: the stream is meant to stay open.
                let mut call = self.call(WATCH_PATH, None, &mut phases).await?;
                let first = call.body.next_status(&self.spec.service).await?;
                Ok::<_, CheckError>((call, first))
            }
            .await;
            let fail = |e, phases| Outcome::down(e, start.elapsed()).with_phases(phases);
            let (mut call, first) = r.map_err(|e| fail(e, phases.clone()))?;
            let warning = self.spec.tls_expiry_warning;
            let outcome = judge(first, &self.spec.service, start.elapsed())
                .with_phases(phases)
                .with_peer_cert(call.cert.clone(), warning);
            if !outcome.is_success() {
                // Not serving yet: a failed connect, retried with backoff.
                return Err(outcome);
            }
            let Some(ping) = call.ping.take() else {
                return Err(fail(
                    CheckError::new(ErrorKind::Internal, "HTTP/2 ping handle unavailable"),
                    Phases::default(),
                ));
            };
            Ok(Connected {
                session: Box::new(GrpcSession {
                    call,
                    ping,
                    service: self.spec.service.clone(),
                    current: first,
                    warning,
                }),
                outcome,
            })
        })
    }
}

struct GrpcSession {
    call: Call,
    ping: PingPong,
    service: String,
    current: Serving,
    /// `tls_expiry_warning`, applied to the connection's certificate at every report.
    warning: Option<Duration>,
}

impl Session for GrpcSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let GrpcSession {
                call,
                mut ping,
                service,
                mut current,
                warning,
            } = *self;
            let Call {
                send,
                mut driver,
                budget,
                mut body,
                cert,
                ..
            } = call;
            let goodbye = |send: SendRequest<Bytes>, body: Body, mut driver: Driver| async move {
                // Dropping the handles cancels the stream and lets the connection close.
                drop((send, body));
                let _ = tokio::time::timeout(GOODBYE, &mut driver.0).await;
            };
            let bye = || CheckError::new(ErrorKind::Closed, "agent closed the session");
            loop {
                tokio::select! {
                    biased;
                    _ = io.shutdown.cancelled() => {
                        goodbye(send, body, driver).await;
                        return bye();
                    }
                    r = &mut driver.0 => return driver_ended(r),
                    s = body.next_status(&service) => match s {
                        Err(e) => return e,
                        Ok(s) => {
                            let changed = s != current;
                            current = s;
                            if changed {
                                let o = judge(s, &service, Duration::ZERO)
                                    .with_peer_cert(cert.clone(), warning);
                                if io.report.send(o).await.is_err() {
                                    return bye();
                                }
                            }
                        }
                    },
                    b = io.beats.recv() => {
                        if b.is_none() {
                            goodbye(send, body, driver).await;
                            return bye();
                        }
                        budget.reset();
                        let t = Instant::now();
                        // No timeout of our own: the supervisor reports a heartbeat past
                        // `timeout` and ends the session at `stale_after`; waiting for the
                        // answer keeps the connection in step.
                        let r = tokio::select! {
                            biased;
                            _ = io.shutdown.cancelled() => {
                                goodbye(send, body, driver).await;
                                return bye();
                            }
                            r = &mut driver.0 => return driver_ended(r),
                            r = ping.ping(Ping::opaque()) => r,
                        };
                        let latency = t.elapsed();
                        if let Err(e) = r {
                            return h2_error("HTTP/2 ping", e);
                        }
                        let mut o = judge(current, &service, latency);
                        if o.verdict == Verdict::Up {
                            o = o.with_phases(Phases { exchange: Some(latency), ..Phases::default() });
                        }
                        let o = o.with_peer_cert(cert.clone(), warning);
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
    fn status_headers() {
        let mut h = HeaderMap::new();
        assert!(grpc_status(&h, "").is_none());
        h.insert("grpc-status", "5".parse().unwrap());
        h.insert("grpc-message", "unknown%20service".parse().unwrap());
        let e = grpc_status(&h, "x").unwrap().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected);
        assert!(e.message.contains("NOT_FOUND"), "{}", e.message);
        assert!(e.message.ends_with("unknown service"), "{}", e.message);
        h.insert("grpc-status", "16".parse().unwrap());
        assert_eq!(
            grpc_status(&h, "").unwrap().unwrap_err().kind,
            ErrorKind::AuthFailed
        );
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(grpc_status(&h, "").unwrap().is_ok());
    }

    #[test]
    fn serving_statuses() {
        let d = Duration::ZERO;
        assert!(judge(Serving::Serving, "", d).is_success());
        let o = judge(Serving::NotServing, "a", d);
        assert_eq!(o.error_kind(), Some(ErrorKind::Rejected));
        assert_eq!(o.message, "service `a` is NOT_SERVING");
        assert_eq!(
            judge(Serving::ServiceUnknown, "a", d).error_kind(),
            Some(ErrorKind::Rejected)
        );
    }
}
