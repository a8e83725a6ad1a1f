//! A byte budget on what a peer may send: kinds whose drivers buffer whole messages
//! (PostgreSQL, Redis) read through a [`Capped`] stream, so a hostile or broken server that
//! announces a gigantic reply fails the attempt (`protocol`) instead of exhausting memory.
//! The budget covers one exchange; sessions [`ReadBudget::reset`] it after each answer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
}
