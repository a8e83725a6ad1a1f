//! Live events: SSE at `/api/v1/events`, WebSocket at `/ws`. Both end when the agent
//! shuts down; a subscriber that falls behind is told how many events it missed.
//!
//! Each event's JSON is computed once on the bus ([`Published`]); every SSE and WebSocket
//! client writes that same text.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::events::{Event, Lagged, Published};

/// `GET /api/v1/events`.
pub async fn sse(
    State(st): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut rx = st.agent.shared.bus.subscribe();
    let cancel = st.agent.cancel.clone();
    let stream = async_stream(move |tx| async move {
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                r = rx.recv() => r,
            };
            let e = match ev {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => lagged(n),
                Err(RecvError::Closed) => return,
            };
            let out = SseEvent::default()
                .event(e.event)
                .data(e.data.text().as_ref());
            if tx.send(Ok(out)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
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
