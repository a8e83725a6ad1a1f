//! Byte caps on what a peer may send.
//!
//! * [`Capped`]: a stream with a byte budget. Kinds whose drivers buffer whole messages
//!   (PostgreSQL, Redis) read through it, so a hostile or broken server that announces a
//!   gigantic reply fails the attempt (`protocol`) instead of exhausting memory. The budget
//!   covers one exchange; sessions [`ReadBudget::reset`] it after each answer.
//! * [`CappedBuf`]: the one reader that keeps at most N bytes of a body or pipe (HTTP
//!   bodies, token answers, notifier error bodies, exec output), either stopping at the
//!   cap or draining the rest ([`AtCap`]).

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Bytes a peer may send for one exchange (connect + login count as one).
pub const DEFAULT_BUDGET: usize = 1024 * 1024;

/// A shared, resettable count of bytes read.
#[derive(Debug)]
pub struct ReadBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ReadBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Starts a new exchange.
    pub fn reset(&self) {
        self.used.store(0, Ordering::Relaxed);
    }

    /// Bytes read since the last reset.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// A stream that fails with `InvalidData` once the peer exceeds the budget.
#[derive(Debug)]
pub struct Capped<S> {
    inner: S,
    budget: Arc<ReadBudget>,
}

impl<S> Capped<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, budget: Arc<ReadBudget>) -> Self {
        Self { inner, budget }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.budget.used() > this.budget.limit {
            return Poll::Ready(Err(over(this.budget.limit)));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = buf.filled().len() - before;
            let used = this.budget.used.fetch_add(n, Ordering::Relaxed) + n;
            if used > this.budget.limit {
                return Poll::Ready(Err(over(this.budget.limit)));
            }
        }
        r
    }
}

fn over(limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("peer sent more than {limit} bytes in one exchange"),
    )
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Where a [`CappedBuf`] takes its bytes from, chunk by chunk.
pub trait ChunkSource {
    /// What a failed read reports.
    type Error;

    /// The next chunk, `None` at the end.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, Self::Error>> + Send;
}

impl ChunkSource for reqwest::Response {
    type Error = reqwest::Error;

    async fn next_chunk(&mut self) -> Result<Option<Bytes>, reqwest::Error> {
        self.chunk().await
    }
}

/// An [`AsyncRead`] (a child's pipe, a socket) as a [`ChunkSource`].
#[derive(Debug)]
pub struct Pipe<R> {
    inner: R,
    buf: BytesMut,
}

/// Bytes asked of a [`Pipe`] per read.
const PIPE_CHUNK: usize = 16 * 1024;

impl<R> Pipe<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
        }
    }
}

impl<R: AsyncRead + Unpin + Send> ChunkSource for Pipe<R> {
    type Error = io::Error;

    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        self.buf.reserve(PIPE_CHUNK);
        match self.inner.read_buf(&mut self.buf).await? {
            0 => Ok(None),
            _ => Ok(Some(self.buf.split().freeze())),
        }
    }
}

/// What a [`CappedBuf`] does once it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtCap {
    /// Stop reading (HTTP bodies: the rest is never transferred).
    Stop,
    /// Keep reading to the end and discard the rest (pipes: the writer must never block).
    Drain,
}

/// The first `cap` bytes of a body or pipe.
#[derive(Debug, Clone)]
pub struct CappedBuf {
    bytes: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl CappedBuf {
    /// An empty buffer that keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            bytes: Vec::new(),
            cap,
            truncated: false,
        }
    }

    /// Reads `src` until its end or, with [`AtCap::Stop`], until the buffer is full. On an
    /// error, what arrived before it stays in the buffer.
    pub async fn fill<S: ChunkSource>(
        &mut self,
        src: &mut S,
        at_cap: AtCap,
    ) -> Result<(), S::Error> {
        while let Some(chunk) = src.next_chunk().await? {
            if !self.push(&chunk, at_cap) {
                break;
            }
        }
        Ok(())
    }

    /// Keeps what fits of `chunk`; false when reading should stop.
    fn push(&mut self, chunk: &[u8], at_cap: AtCap) -> bool {
        let room = self.cap.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room {
            self.truncated = true;
        }
        if at_cap == AtCap::Stop && self.bytes.len() >= self.cap {
            // Stopped before the end: whatever followed is not here.
            self.truncated = true;
            return false;
        }
        true
    }

    /// True if bytes were discarded, or (with [`AtCap::Stop`]) reading stopped at the cap.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The bytes kept.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of bytes kept.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True if nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes kept, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }

    /// The bytes kept.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// At most `cap` bytes of a response body as text, for error messages: a body that breaks
/// off yields what arrived.
pub async fn body_text(mut resp: reqwest::Response, cap: usize) -> String {
    let mut buf = CappedBuf::new(cap);
    let _ = buf.fill(&mut resp, AtCap::Stop).await;
    buf.text().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn stops_a_peer_that_sends_too_much() {
        let (mut a, b) = tokio::io::duplex(64);
        let budget = ReadBudget::new(10);
        let mut capped = Capped::new(b, budget.clone());
        a.write_all(b"12345").await.unwrap();
        let mut buf = [0u8; 32];
        assert_eq!(capped.read(&mut buf).await.unwrap(), 5);
        budget.reset();
        a.write_all(b"0123456789AB").await.unwrap();
        let e = capped.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn drain_keeps_the_head_and_reads_to_the_end() {
        let (mut a, b) = tokio::io::duplex(8);
        let writer = tokio::spawn(async move {
            a.write_all(&[b'x'; 100]).await.unwrap();
        });
        let mut buf = CappedBuf::new(10);
        buf.fill(&mut Pipe::new(b), AtCap::Drain).await.unwrap();
        writer.await.unwrap();
        assert_eq!(buf.bytes(), &[b'x'; 10]);
        assert!(buf.truncated());
    }

    #[tokio::test]
    async fn what_fits_is_not_truncated_when_drained() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"0123456789").await.unwrap();
        drop(a);
        let mut buf = CappedBuf::new(10);
        buf.fill(&mut Pipe::new(b), AtCap::Drain).await.unwrap();
        assert_eq!(buf.text(), "0123456789");
        assert!(!buf.truncated());
    }

    #[test]
    fn stop_marks_a_full_buffer_truncated() {
        let mut buf = CappedBuf::new(4);
        assert!(buf.push(b"ab", AtCap::Stop));
        assert!(!buf.push(b"cdef", AtCap::Stop));
        assert_eq!(buf.bytes(), b"abcd");
        assert!(buf.truncated());
    }
}
