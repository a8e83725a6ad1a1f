//! WebSocket client plumbing shared by the `websocket` and `socketio` kinds: open a
//! connection (TCP connect, TLS, HTTP upgrade; timed), classify tungstenite errors, and
//! the largest message a peer may send.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::addr::join_host_port;
use crate::check::{CheckError, ErrorKind, Phases};

/// Largest message or frame accepted from a peer.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// A client WebSocket over TCP, with or without TLS.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `url` with `headers`, returning the stream and the phases.
pub async fn open(
    url: &url::Url,
    headers: &[(String, String)],
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(Ws, Phases), CheckError> {
    let mut phases = Phases::default();
    let host = url
        .host_str()
        .ok_or_else(|| CheckError::new(ErrorKind::Protocol, "URL has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = super::addr::connect(&join_host_port(host, port), &mut phases).await?;
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| CheckError::new(ErrorKind::Protocol, format!("bad request: {e}")))?;
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| CheckError::new(ErrorKind::Internal, format!("invalid header {k}")))?;
        let value = http::HeaderValue::from_str(v).map_err(|_| {
            CheckError::new(ErrorKind::Internal, format!("invalid header value for {k}"))
        })?;
        req.headers_mut().insert(name, value);
    }
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let t = Instant::now();
    let connector = tls.map(Connector::Rustls).unwrap_or(Connector::Plain);
    let (ws, _resp) =
        tokio_tungstenite::client_async_tls_with_config(req, stream, Some(cfg), Some(connector))
            .await
            .map_err(|e| classify(&e))?;
    // The TLS handshake and the HTTP upgrade happen in one call; report it as `tls` for
    // wss and `exchange` otherwise.
    if url.scheme() == "wss" {
        phases.tls = Some(t.elapsed());
    } else {
        phases.exchange = Some(t.elapsed());
    }
    Ok((ws, phases))
}

/// The server's leaf certificate of a `wss://` connection (`None` for `ws://`).
pub fn peer_cert(ws: &Ws) -> Option<super::tls::PeerCert> {
    match ws.get_ref() {
        MaybeTlsStream::Rustls(s) => super::tls::stream_cert(s),
        _ => None,
    }
}

/// Classifies a tungstenite error.
pub fn classify(e: &tungstenite::Error) -> CheckError {
    use tungstenite::Error as E;
    match e {
        E::Http(resp) => {
            let code = resp.status().as_u16();
            let kind = if code == 401 || code == 403 {
                ErrorKind::AuthFailed
            } else {
                ErrorKind::Rejected
            };
            CheckError::new(kind, format!("handshake answered HTTP {code}"))
        }
        E::Io(io) => CheckError::io("websocket", io),
        E::Tls(t) => CheckError::new(ErrorKind::Tls, t.to_string()),
        E::ConnectionClosed
        | E::AlreadyClosed
        | E::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            CheckError::new(ErrorKind::Closed, "connection closed by peer")
        }
        E::Capacity(c) => CheckError::new(ErrorKind::Protocol, format!("peer sent too much: {c}")),
        other => CheckError::new(ErrorKind::Protocol, other.to_string()),
    }
}

/// The TLS config a WebSocket URL needs: a client config for `wss://`, `None` for `ws://`.
pub fn tls_for(
    url: &url::Url,
    opts: &super::tls::TlsOptions,
) -> Result<Option<Arc<rustls::ClientConfig>>, CheckError> {
    if url.scheme() == "wss" {
        super::tls::client_config(opts).map(Some)
    } else {
        Ok(None)
    }
}

/// Header names and values as one comparable list, for a shared-session key (two checks
/// share a session only when they would send the same headers). Never printed.
pub fn headers_key(
    headers: &std::collections::BTreeMap<String, crate::secret::Secret<String>>,
) -> Vec<(&String, &String)> {
    headers.iter().map(|(k, v)| (k, v.expose())).collect()
}
