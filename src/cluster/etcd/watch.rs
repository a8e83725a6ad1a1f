//! A prefix watch: one streamed `POST /v3/watch` whose request body stays open, so the
//! client can ask for progress while the server streams one JSON message per line.
//!
//! Liveness: after [`IDLE`] without a byte, the watch sends a `progress_request` (etcd
//! 3.4+ answers it at once with a header-only message); after [`SILENT_LIMIT`] silent
//! periods in a row (30 s by default) the stream counts as dead and [`Watch::next`] fails
//! with [`EtcdError::Unreachable`]. The server's own `progress_notify` (also asked for)
//! comes only every 10 minutes by default, far too rarely to rely on.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::wire::{self, WatchMessage};
use super::{EtcdError, Failure, WatchEvent};

/// Silence after which the watch asks the server for progress.
pub const IDLE: Duration = Duration::from_secs(10);
/// Silent periods in a row after which the stream is dead.
pub const SILENT_LIMIT: u32 = 3;
/// Largest single watch message (etcd fragments bigger responses at about 1.5 MiB of
/// protobuf, ~2 MiB as JSON).
const LINE_CAP: usize = 4 << 20;
/// Largest response reassembled from fragments.
const BATCH_CAP: usize = 16 << 20;
/// Largest error body read when the watch is refused.
const ERROR_CAP: usize = 64 << 10;

type BodyFrame = Result<Frame<Bytes>, Infallible>;

/// A running prefix watch (from [`super::Etcd::watch_prefix`]).
pub struct Watch {
    resp: reqwest::Response,
    /// The open request body: progress requests go here.
    probe: mpsc::Sender<BodyFrame>,
    /// Bytes after the last complete line.
    buf: Vec<u8>,
    /// Events of a fragmented response, until its last fragment.
    batch: Vec<WatchEvent>,
    batch_bytes: usize,
    endpoint: String,
    idle: Duration,
    /// Set once `next` has failed: the watch is over.
    closed: bool,
}

impl Watch {
    /// Starts the watch on `ep` and waits (within `budget`) for the server's `created`.
    pub(super) async fn open(
        client: &reqwest::Client,
        ep: &str,
        token: Option<&str>,
        create: &str,
        budget: Duration,
    ) -> Result<Watch, Failure> {
        let (probe, rx) = mpsc::channel::<BodyFrame>(4);
        let _ = probe.try_send(Ok(Frame::data(Bytes::from(format!("{create}\n")))));
        let body = reqwest::Body::wrap(StreamBody::new(ReceiverStream::new(rx)));
        let mut req = client
            .post(format!("{ep}/v3/watch"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, t);
        }
        let start = async {
            let resp = req
                .send()
                .await
                .map_err(|e| Failure::Next(crate::net::http_client::describe(&e)))?;
            let status = resp.status();
            if !status.is_success() {
                let text = crate::net::capped::body_text(resp, ERROR_CAP).await;
                return Err(match super::answer("/v3/watch", status, text.as_bytes()) {
                    Err(f) => f,
                    Ok(_) => Failure::Stop(EtcdError::Protocol(format!(
                        "/v3/watch: HTTP {}",
                        status.as_u16()
                    ))),
                });
            }
            let mut w = Watch {
                resp,
                probe,
                buf: Vec::new(),
                batch: Vec::new(),
                batch_bytes: 0,
                endpoint: ep.to_string(),
                idle: IDLE,
                closed: false,
            };
            match w.message().await {
                Ok(WatchMessage::Created) => Ok(w),
                Ok(WatchMessage::Canceled {
                    compact_revision,
                    reason,
                }) => Err(Failure::from(cancel_error(compact_revision, reason))),
                Ok(other) => Err(Failure::Stop(EtcdError::Protocol(format!(
                    "watch answered {other:?} before `created`"
                )))),
                Err(EtcdError::Unreachable(why)) => Err(Failure::Next(why)),
                Err(e) => Err(Failure::from(e)),
            }
        };
        tokio::time::timeout(budget, start)
            .await
            .map_err(|_| Failure::Next(format!("watch not created within {budget:?}")))?
    }

    /// Changes how long the stream may stay silent before the watch asks for progress
    /// (default [`IDLE`]); it is dead after [`SILENT_LIMIT`] such periods.
    pub fn set_idle_probe(&mut self, every: Duration) {
        self.idle = every.max(Duration::from_millis(10));
    }

    /// The endpoint this watch streams from.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next batch of events (never empty), in revision order. Fails when the stream
    /// ends or goes silent ([`EtcdError::Unreachable`]), when the server cancels the watch
    /// ([`EtcdError::Status`]) or when its start revision was compacted
    /// ([`EtcdError::Compacted`]); the watch is over then (every later call fails too) and
    /// the caller re-lists. Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>, EtcdError> {
        if self.closed {
            return Err(EtcdError::Unreachable(format!(
                "{}: watch already ended",
                self.endpoint
            )));
        }
        let r = self.next_batch().await;
        if r.is_err() {
            self.closed = true;
        }
        r
    }

    async fn next_batch(&mut self) -> Result<Vec<WatchEvent>, EtcdError> {
        loop {
            match self.message().await? {
                WatchMessage::Created | WatchMessage::Progress { .. } => {
                    if self.batch.is_empty() {
                        self.batch_bytes = 0;
                    }
                }
                WatchMessage::Events { events, more } => {
                    self.batch.extend(events);
                    if more {
                        if self.batch_bytes > BATCH_CAP {
                            return Err(EtcdError::Protocol(format!(
                                "fragmented watch response over {BATCH_CAP} bytes"
                            )));
                        }
                        continue;
                    }
                    self.batch_bytes = 0;
                    if !self.batch.is_empty() {
                        return Ok(std::mem::take(&mut self.batch));
                    }
                }
                WatchMessage::Canceled {
                    compact_revision,
                    reason,
                } => return Err(cancel_error(compact_revision, reason)),
            }
        }
    }

    /// The next message of the stream, probing a silent server for progress.
    async fn message(&mut self) -> Result<WatchMessage, EtcdError> {
        let mut silent = 0u32;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.trim_ascii().is_empty() {
                    continue;
                }
                self.batch_bytes += line.len();
                return wire::parse_watch_line(&line);
            }
            if self.buf.len() > LINE_CAP {
                return Err(EtcdError::Protocol(format!(
                    "watch message over {LINE_CAP} bytes"
                )));
            }
            match tokio::time::timeout(self.idle, self.resp.chunk()).await {
                Err(_) => {
                    silent += 1;
                    if silent >= SILENT_LIMIT {
                        return Err(EtcdError::Unreachable(format!(
                            "{}: watch stream silent for {:?}",
                            self.endpoint,
                            self.idle * SILENT_LIMIT
                        )));
                    }
                    let ask = Bytes::from_static(wire::WATCH_PROGRESS_REQUEST.as_bytes());
                    let _ = self.probe.try_send(Ok(Frame::data(ask)));
                }
                Ok(Ok(Some(chunk))) => {
                    silent = 0;
                    self.buf.extend_from_slice(&chunk);
                }
                Ok(Ok(None)) => {
                    // A last message without its newline (an error object) still counts.
                    if !self.buf.trim_ascii().is_empty() {
                        let line = std::mem::take(&mut self.buf);
                        return wire::parse_watch_line(&line);
                    }
                    return Err(EtcdError::Unreachable(format!(
                        "{}: watch stream ended",
                        self.endpoint
                    )));
                }
                Ok(Err(e)) => {
                    return Err(EtcdError::Unreachable(format!(
                        "{}: watch stream broke: {}",
                        self.endpoint,
                        crate::net::http_client::describe(&e)
                    )));
                }
            }
        }
    }
}

/// The error for a cancelled watch: [`EtcdError::Compacted`] or the server's reason.
fn cancel_error(compact_revision: i64, reason: String) -> EtcdError {
    if compact_revision > 0 {
        return EtcdError::Compacted(compact_revision);
    }
    EtcdError::Status {
        code: grpc_code_in(&reason),
        message: format!("watch canceled: {reason}"),
    }
}

/// The gRPC code named in a cancel reason (`rpc error: code = Unauthenticated desc = …`);
/// 1 (cancelled) when it names none.
pub(super) fn grpc_code_in(reason: &str) -> i64 {
    let Some(rest) = reason.split("code = ").nth(1) else {
        return 1;
    };
    let name = rest.split_whitespace().next().unwrap_or("");
    match name {
        "Canceled" => 1,
        "Unknown" => 2,
        "InvalidArgument" => 3,
        "DeadlineExceeded" => 4,
        "NotFound" => 5,
        "AlreadyExists" => 6,
        "PermissionDenied" => 7,
        "ResourceExhausted" => 8,
        "FailedPrecondition" => 9,
        "Aborted" => 10,
        "OutOfRange" => 11,
        "Unimplemented" => 12,
        "Internal" => 13,
        "Unavailable" => 14,
        "DataLoss" => 15,
        "Unauthenticated" => 16,
        _ => 1,
    }
}
