//! Live events: SSE at `/api/v1/events`, WebSocket at `/ws`. Both end when the agent
//! shuts down; a subscriber that falls behind is told how many events it missed.
//!
//! Each event's JSON is computed once on the bus ([`Published`]); every SSE and WebSocket
//! client writes that same text. SSE subscribers write their events in batches of up to
//! 100 ms, one socket write per batch.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::AppState;
use crate::events::{Event, Lagged, Published};

/// How long an SSE subscriber gathers events after the first one before it writes them
/// as one chunk. At 1,000 events/s and 1,000 subscribers this turns a million socket
/// writes and task wake-ups per second into 10,000, for at most 100 ms more latency.
const SSE_BATCH: Duration = Duration::from_millis(100);

/// A batch is written early once it holds this many bytes.
const SSE_BATCH_BYTES: usize = 64 * 1024;

/// With no event for this long, a comment line keeps proxies from closing the stream.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /api/v1/events`: `event: NAME` / `data: DATA` pairs, in batches of up to
/// [`SSE_BATCH`] (every event's text comes from the bus, serialised once).
pub async fn sse(State(st): State<AppState>) -> Response {
    let mut rx = st.agent.shared.bus.subscribe();
    let cancel = st.agent.cancel.clone();
    let stream = async_stream(move |tx| async move {
        let mut buf = Vec::with_capacity(4096);
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => return,
                r = tokio::time::timeout(SSE_KEEP_ALIVE, rx.recv()) => r,
            };
            match first {
                Err(_) => buf.extend_from_slice(b":\n\n"),
                Ok(Err(RecvError::Closed)) => return,
                Ok(r) => {
                    push_sse(&mut buf, r);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(SSE_BATCH) => {}
                    }
                    while buf.len() < SSE_BATCH_BYTES {
                        match rx.try_recv() {
                            Ok(e) => push_sse(&mut buf, Ok(e)),
                            Err(TryRecvError::Lagged(n)) => {
                                push_sse(&mut buf, Err(RecvError::Lagged(n)))
                            }
                            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                        }
                    }
                }
            }
            let chunk = bytes::Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(4096)));
            if tx.send(Ok::<_, Infallible>(chunk)).await.is_err() {
                return;
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Appends one event (or, for a subscriber that fell behind, `agent:lagged`) in SSE form.
fn push_sse(buf: &mut Vec<u8>, r: Result<std::sync::Arc<Published>, RecvError>) {
    let e = match r {
        Ok(e) => e,
        Err(RecvError::Lagged(n)) => lagged(n),
        Err(RecvError::Closed) => return,
    };
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(e.event.as_bytes());
    buf.push(b'\n');
    // Compact JSON has no raw newline; split anyway, as SSE requires, should one appear.
    for line in e.data.text().split('\n') {
        buf.extend_from_slice(b"data: ");
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
    buf.push(b'\n');
}

/// Turns a producer task into a stream (a bounded channel in between).
fn async_stream<T: Send + 'static, F, Fut>(f: F) -> impl Stream<Item = T>
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// `GET /ws`.
pub async fn ws(State(st): State<AppState>, up: WebSocketUpgrade) -> Response {
    up.max_message_size(64 * 1024)
        .on_upgrade(move |socket| ws_loop(st, socket))
}

async fn ws_loop(st: AppState, mut socket: WebSocket) {
    let mut rx = st.agent.shared.bus.subscribe();
    let cancel = st.agent.cancel.clone();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {} // pings are answered by axum; other input is ignored
            },
            ev = rx.recv() => {
                let e = match ev {
                    Ok(e) => e,
                    Err(RecvError::Lagged(n)) => lagged(n),
                    Err(RecvError::Closed) => return,
                };
                if socket.send(Message::Text(e.ws_text().as_ref().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `agent:lagged` for one subscriber that missed `n` events.
fn lagged(n: u64) -> std::sync::Arc<Published> {
    std::sync::Arc::new(Published::new(Event::Lagged(Lagged { missed: n })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_sse_pairs_in_order_with_lagged_for_missed_events() {
        let mut buf = Vec::new();
        push_sse(&mut buf, Err(RecvError::Lagged(4)));
        push_sse(
            &mut buf,
            Ok(std::sync::Arc::new(Published::new(Event::Lagged(Lagged {
                missed: 1,
            })))),
        );
        push_sse(&mut buf, Err(RecvError::Closed));
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "event: agent:lagged\ndata: {\"missed\":4}\n\nevent: agent:lagged\ndata: {\"missed\":1}\n\n"
        );
    }
}
