//! The accept loop: TLS (from the web config), the connection cap, header / idle / write
//! timeouts, and `lifeline_http_connections`. Each connection is served by hyper's
//! HTTP/1.1 server with upgrades (for `/ws`); the router is [`super::app`].
//!
//! Timeouts are measured here rather than by hyper so that the two that differ can:
//! a request head must arrive within `header_timeout` of its first byte (and the first
//! request within `header_timeout` of the accept), while a keep-alive connection may sit
//! idle between requests for `idle_timeout`. A client that accepts no bytes for
//! `write_timeout` (a stalled event-stream reader) is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::AppState;
use crate::config::HttpLimits;
use crate::metrics::{HttpRejected, Metrics};

/// Facts about one connection, shared with the middleware (as a request extension).
pub struct ConnInfo {
    /// Served over TLS.
    pub tls: bool,
    /// The client's address.
    pub peer: SocketAddr,
    start: Instant,
    /// Requests whose response is not fully sent yet.
    busy: AtomicUsize,
    /// Requests seen.
    requests: AtomicU64,
    /// Milliseconds since `start` when `busy` last dropped to 0.
    idle_since: AtomicU64,
    /// 1 + milliseconds since `start` of the first byte read while not busy; 0 = none.
    head_started: AtomicU64,
    held: parking_lot::Mutex<Vec<Box<dyn Send>>>,
    /// Signalled when the last request in progress ends (the deadline moves).
    idle: tokio::sync::Notify,
}

impl ConnInfo {
    fn new(tls: bool, peer: SocketAddr) -> Self {
        Self {
            tls,
            peer,
            start: Instant::now(),
            busy: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            held: parking_lot::Mutex::new(Vec::new()),
            idle: tokio::sync::Notify::new(),
        }
    }

    /// Keeps `v` until the connection closes (a WebSocket's streaming slot).
    pub fn hold(&self, v: Box<dyn Send>) {
        self.held.lock().push(v);
    }

    fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn on_read(&self) {
        if self.busy.load(Ordering::Acquire) == 0 && self.head_started.load(Ordering::Acquire) == 0
        {
            self.head_started.store(self.ms() + 1, Ordering::Release);
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Release);
        Busy(self.clone())
    }

    /// When the connection must be cut if nothing changes, and why; `None` while busy.
    fn deadline(&self, l: &HttpLimits) -> Option<(Instant, bool)> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = Duration::from_millis;
        let head = self.head_started.load(Ordering::Acquire);
        if head > 0 {
            Some((self.start + ms(head - 1) + l.header_timeout, true))
        } else if self.requests.load(Ordering::Relaxed) == 0 {
            Some((self.start + l.header_timeout, true))
        } else {
            let idle = self.idle_since.load(Ordering::Acquire);
            Some((self.start + ms(idle) + l.idle_timeout, false))
        }
    }
}

/// One request in progress: dropped when its response body is done (or abandoned).
struct Busy(Arc<ConnInfo>);

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = self.0.ms();
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(ms, Ordering::Release);
            self.0.idle.notify_one();
        }
    }
}

/// A TCP stream that reports reads to its [`ConnInfo`], fails writes that make no
/// progress for `write_timeout`, and gives its connection slot back when dropped.
struct TrackedIo {
    inner: TcpStream,
    info: Arc<ConnInfo>,
    write_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
    slot: Arc<AtomicUsize>,
}

impl Drop for TrackedIo {
    fn drop(&mut self) {
        self.slot.fetch_sub(1, Ordering::AcqRel);
        self.metrics.http_connections.dec();
        self.info.held.lock().clear();
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.info.on_read();
        }
        r
    }
}

impl TrackedIo {
    /// A write's outcome: progress clears the stall timer, no progress runs it.
    fn progress(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stall(cx).map(Err),
        }
    }

    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let wt = self.write_timeout;
        let s = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(wt)));
        match s.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.metrics.http_rejected(HttpRejected::WriteTimeout);
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client accepted no bytes within write_timeout",
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(cx, r)
    }

    /// Vectored writes reach the socket as they are: without them hyper copies every body
    /// piece into its own buffer first (24 MB per `/metrics` scrape at 10,000 checks).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves [`super::app`] on `listener` until `shutdown` is cancelled; then stops
/// accepting, lets open connections finish their current request (1 s) and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let router = super::app(state.clone());
    let open = Arc::new(AtomicUsize::new(0));
    let tasks = TaskTracker::new();
    let metrics = state.agent.shared.metrics.clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let cfg = state.agent.config.load_full();
        let limits = cfg.agent.http.clone();
        if open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            metrics.http_rejected(HttpRejected::ConnectionLimit);
            drop(stream);
            continue;
        }
        metrics.http_connections.inc();
        let _ = stream.set_nodelay(true);
        let tls = cfg.agent.web.as_ref().and_then(|w| w.tls.clone());
        let info = Arc::new(ConnInfo::new(tls.is_some(), peer));
        let io = TrackedIo {
            inner: stream,
            info: info.clone(),
            write_timeout: limits.write_timeout,
            stalled: None,
            metrics: metrics.clone(),
            slot: open.clone(),
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        let metrics = metrics.clone();
        tasks.spawn(async move {
            match tls {
                None => connection(io, info, router, limits, shutdown, metrics).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await {
                        Ok(Ok(s)) => connection(s, info, router, limits, shutdown, metrics).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            metrics.http_rejected(HttpRejected::TlsHandshake);
                        }
                        Err(_) => metrics.http_rejected(HttpRejected::TlsHandshake),
                    }
                }
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

async fn connection<I>(
    io: I,
    info: Arc<ConnInfo>,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let svc_info = info.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let busy = svc_info.begin();
        req.extensions_mut().insert(svc_info.clone());
        let router = router.clone();
        async move {
            let res = match router.oneshot(req).await {
                Ok(r) => r,
                Err(e) => match e {},
            };
            Ok::<_, Infallible>(res.map(|b| {
                Body::new(b.map_frame(move |f| {
                    let _ = &busy;
                    f
                }))
            }))
        }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.header_read_timeout(None).max_buf_size(64 * 1024);
    let conn = b.serve_connection(TokioIo::new(io), svc).with_upgrades();
    tokio::pin!(conn);
    let recheck = limits.header_timeout.min(limits.idle_timeout);
    loop {
        let at = info
            .deadline(&limits)
            .map(|(at, _)| at)
            .unwrap_or_else(|| Instant::now() + recheck);
        tokio::select! {
            _ = &mut conn => return,
            _ = info.idle.notified() => {} // idle now: wait for the idle deadline instead
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut conn).await;
                return;
            }
            _ = tokio::time::sleep_until(at) => {
                if let Some((due, head)) = info.deadline(&limits)
                    && due <= Instant::now()
                {
                    if head {
                        metrics.http_rejected(HttpRejected::HeaderTimeout);
                    }
                    return; // dropping the connection closes it
                }
            }
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (many clients and many checks each
/// need a descriptor). Returns the new soft limit.
pub fn raise_nofile_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).ok()?;
    }
    Some(hard.max(soft))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// hyper sends a streamed body without copying it only to a stream that says it takes
    /// vectored writes; the wrapper must say so and pass every slice through in order.
    #[tokio::test]
    async fn the_connection_wrapper_passes_vectored_writes_through() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let metrics = Metrics::new();
        metrics.http_connections.inc();
        let slot = Arc::new(AtomicUsize::new(1));
        let mut io = TrackedIo {
            inner: server,
            info: Arc::new(ConnInfo::new(false, peer)),
            write_timeout: Duration::from_secs(5),
            stalled: None,
            metrics: metrics.clone(),
            slot: slot.clone(),
        };
        assert!(io.is_write_vectored());
        let parts: [&[u8]; 3] = [b"4\r\n", b"body", b"\r\n"];
        let mut sent = 0;
        while sent < 9 {
            // Skip what an earlier short write already took.
            let mut left = Vec::new();
            let mut skip = sent;
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                } else {
                    left.push(io::IoSlice::new(&p[skip..]));
                    skip = 0;
                }
            }
            sent += io.write_vectored(&left).await.unwrap();
        }
        drop(io);
        assert_eq!(slot.load(Ordering::Acquire), 0, "the slot is given back");
        let mut got = Vec::new();
        let mut client = client;
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"4\r\nbody\r\n");
    }
}
