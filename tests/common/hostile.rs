//! Hostile peers for the wire-protocol kinds: a listener that writes fixed bytes to every
//! connection at once (whatever the client sends) and then keeps the connection open, so a
//! client that waits for more instead of failing would hang until its timeout.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// Listens on 127.0.0.1:<free port>; each connection gets `bytes`, then is held open
/// (what the client sends is read and discarded). Abort the task to stop listening.
pub async fn sends(bytes: &'static [u8]) -> (SocketAddr, JoinHandle<()>) {
    super::accept_each(move |mut s| {
        tokio::spawn(async move {
            let _ = s.write_all(bytes).await;
            let mut sink = [0u8; 4096];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        });
    })
    .await
}

/// An HTTP/1.1 error page, longer than any frame header: what a web server says to a
/// client speaking another protocol.
pub const HTTP_GARBAGE: &[u8] = b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 150\r\nConnection: keep-alive\r\n\r\n<html><head><title>400 Bad Request</title></head><body><center><h1>400 Bad Request</h1></center><hr><center>nginx</center></body></html>\r\n";
