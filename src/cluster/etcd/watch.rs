//! A prefix watch: one streamed `POST /v3/watch`, answered with one JSON message per line.
//!
//! Liveness. etcd 3.4's gateway cannot take more requests on an open watch over
//! HTTP/1.1 (Go's server drains the request body before it sends the response headers,
//! so a body kept open for `progress_request`s holds back the whole response), and the
//! server's `progress_notify` (asked for anyway) comes every 10 minutes by default. So
//! after [`IDLE`] without a byte the watch asks the same endpoint for `GET /version`
//! (local to the member: no raft, no auth) on a separate connection; a probe that fails
//! or gets no answer within [`IDLE`] is repeated at once, and after [`SILENT_LIMIT`]
//! failed probes in a row (≈40 s of silence by default) [`Watch::next`] fails with
//! [`EtcdError::Unreachable`]. A stopped or partitioned member is caught that way; a
//! connection that died under a live member is caught by TCP keepalive (the client sets
//! it) or by the next read error.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use super::wire::{self, WatchMessage};
use super::{EtcdError, Failure, WatchEvent};

/// Silence after which the watch probes its endpoint (and the probe's timeout).
pub const IDLE: Duration = Duration::from_secs(10);
/// Failed probes in a row after which the stream is dead.
pub const SILENT_LIMIT: u32 = 3;
/// Largest single watch message (etcd fragments bigger responses at about 1.5 MiB of
/// protobuf, ~2 MiB as JSON).
const LINE_CAP: usize = 4 << 20;
/// Largest response reassembled from fragments.
const BATCH_CAP: usize = 16 << 20;
/// Largest error body read when the watch is refused, or `/version` answer read.
const SMALL_CAP: usize = 64 << 10;

type Probe = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A running prefix watch (from [`super::Etcd::watch_prefix`]).
pub struct Watch {
    resp: reqwest::Response,
    /// For liveness probes.
    client: reqwest::Client,
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
        let mut req = client
            .post(format!("{ep}/v3/watch"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Bytes::from(create.to_string()));
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
                let text = crate::net::capped::body_text(resp, SMALL_CAP).await;
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
                client: client.clone(),
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

    /// Changes how long the stream may stay silent before the watch probes its endpoint,
    /// and how long a probe may take (default 10 s); 3 failed probes in a row end it.
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

    /// The next message of the stream, probing the endpoint while it is silent.
    async fn message(&mut self) -> Result<WatchMessage, EtcdError> {
        let mut failed = 0u32;
        let mut probe: Option<Probe> = None;
        let mut quiet_until = tokio::time::Instant::now() + self.idle;
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
            tokio::select! {
                chunk = self.resp.chunk() => match chunk {
                    Ok(Some(chunk)) => {
                        failed = 0;
                        probe = None;
                        quiet_until = tokio::time::Instant::now() + self.idle;
                        self.buf.extend_from_slice(&chunk);
                    }
                    Ok(None) => {
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
                    Err(e) => {
                        return Err(EtcdError::Unreachable(format!(
                            "{}: watch stream broke: {}",
                            self.endpoint,
                            crate::net::http_client::describe(&e)
                        )));
                    }
                },
                _ = tokio::time::sleep_until(quiet_until), if probe.is_none() => {
                    probe = Some(self.probe());
                }
                r = async {
                    match probe.as_mut() {
                        Some(p) => p.await,
                        None => std::future::pending().await,
                    }
                } => {
                    probe = None;
                    match r {
                        Ok(()) => {
                            failed = 0;
                            quiet_until = tokio::time::Instant::now() + self.idle;
                        }
                        Err(why) => {
                            failed += 1;
                            if failed >= SILENT_LIMIT {
                                return Err(EtcdError::Unreachable(format!(
                                    "{}: watch stream silent and {SILENT_LIMIT} probes failed \
                                     (last: {why})",
                                    self.endpoint
                                )));
                            }
                            // Probe again at once.
                            quiet_until = tokio::time::Instant::now();
                        }
                    }
                }
            }
        }
    }

    /// `GET /version` on the watch's endpoint within `idle`: is the member answering?
    fn probe(&self) -> Probe {
        let req = self
            .client
            .get(format!("{}/version", self.endpoint))
            .timeout(self.idle);
        let idle = self.idle;
        Box::pin(async move {
            let ask = async {
                let resp = req
                    .send()
                    .await
                    .map_err(|e| crate::net::http_client::describe(&e))?;
                let status = resp.status();
                let _ = crate::net::capped::body_text(resp, SMALL_CAP).await;
                if status.is_server_error() {
                    return Err(format!("/version: HTTP {}", status.as_u16()));
                }
                Ok(())
            };
            tokio::time::timeout(idle, ask)
                .await
                .map_err(|_| format!("/version: no answer within {idle:?}"))?
        })
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
