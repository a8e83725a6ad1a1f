//! How a `sip` check moves bytes: name resolution, the UDP transaction with its RFC 3261
//! retransmission timers, TCP/TLS connections read as a stream of framed messages, and
//! SIP over WebSocket (RFC 7118: one SIP message per WebSocket message).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::Target;
use super::message::{self, Framing, Message, ParseError, Request, Transport};
use crate::check::{CheckError, ErrorKind, Phases};
use crate::net::tls::PeerCert;
use crate::net::ws::Ws;

/// RFC 3261 T1: the first retransmission interval.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: the longest retransmission interval.
pub const T2: Duration = Duration::from_secs(4);
/// RFC 3261 Timer F (64·T1): a non-INVITE transaction never lasts longer.
pub const TIMER_F: Duration = Duration::from_secs(32);

/// The target's address: its IP, or the first routable one the agent's resolver returns
/// (timed as `dns`).
pub(super) async fn resolve(
    target: &Target,
    phases: &mut Phases,
) -> Result<SocketAddr, CheckError> {
    let t = Instant::now();
    let addrs = crate::net::dns::resolve(&target.host, target.port).await?;
    let mut addr = None;
    for a in &addrs {
        if routable(*a).await {
            addr = Some(*a);
            break;
        }
    }
    let addr = addr
        .or(addrs.first().copied())
        .ok_or_else(|| CheckError::new(ErrorKind::Dns, format!("{}: no addresses", target.host)))?;
    phases.dns = Some(t.elapsed());
    Ok(addr)
}

/// Whether this host has a route to `a` (a UDP `connect` sends nothing), so a name with
/// IPv6 and IPv4 addresses is not sent over a family the host cannot reach.
async fn routable(a: SocketAddr) -> bool {
    let any: SocketAddr = if a.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    match UdpSocket::bind(any).await {
        Ok(s) => s.connect(a).await.is_ok(),
        Err(_) => false,
    }
}

/// Bytes a TCP/TLS connection can carry.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(super) type BoxIo = Box<dyn Io>;

/// The read side of a connection: framed, bounded, cancel-safe.
pub(super) enum Reader {
    /// TCP/TLS: messages framed by `Content-Length` in a byte stream.
    Stream {
        /// The read half.
        io: ReadHalf<BoxIo>,
        /// Bytes read and not yet parsed.
        buf: Vec<u8>,
    },
    /// WebSocket (RFC 7118): one SIP message per WebSocket message.
    Ws(SplitStream<Ws>),
}

/// The write side of a connection.
pub(super) enum Writer {
    /// TCP/TLS.
    Stream(WriteHalf<BoxIo>),
    /// WebSocket: each request is one text message.
    Ws(SplitSink<Ws, WsMessage>),
}

/// An I/O error on an open connection: a lost connection is `closed`.
fn read_error(e: &std::io::Error) -> CheckError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            CheckError::new(ErrorKind::Closed, format!("connection lost: {e}"))
        }
        _ => CheckError::io("read", e),
    }
}

fn invalid(e: &ParseError) -> CheckError {
    CheckError::new(
        ErrorKind::Protocol,
        format!("peer sent an invalid SIP message: {e}"),
    )
}

impl Reader {
    /// The next message. Cancel-safe: bytes are only added to the buffer after a read
    /// completes, parsing is synchronous, and a WebSocket stream yields whole messages.
    pub(super) async fn next(&mut self) -> Result<Message, CheckError> {
        match self {
            Self::Stream { io, buf } => next_in_stream(io, buf).await,
            Self::Ws(ws) => loop {
                let m = match ws.next().await {
                    None => {
                        return Err(CheckError::new(
                            ErrorKind::Closed,
                            "peer closed the connection",
                        ));
                    }
                    Some(Err(e)) => return Err(crate::net::ws::classify(&e)),
                    Some(Ok(m)) => m,
                };
                let data: &[u8] = match &m {
                    WsMessage::Text(t) => t.as_bytes(),
                    WsMessage::Binary(b) => b,
                    WsMessage::Close(_) => {
                        return Err(CheckError::new(
                            ErrorKind::Closed,
                            "peer closed the WebSocket",
                        ));
                    }
                    _ => continue, // ping/pong: tungstenite answers pings itself
                };
                if message::leading_blank(data) == data.len() {
                    continue; // a keep-alive
                }
                return message::parse(data, Framing::Datagram)
                    .map(|(m, _)| m)
                    .map_err(|e| invalid(&e));
            },
        }
    }
}

async fn next_in_stream(
    io: &mut ReadHalf<BoxIo>,
    buf: &mut Vec<u8>,
) -> Result<Message, CheckError> {
    let mut chunk = [0u8; 8192];
    loop {
        let blank = message::leading_blank(buf);
        buf.drain(..blank);
        if !buf.is_empty() {
            match message::parse(buf, Framing::Stream) {
                Ok((m, used)) => {
                    buf.drain(..used);
                    return Ok(m);
                }
                Err(ParseError::Incomplete) => {}
                Err(e) => return Err(invalid(&e)),
            }
        }
        let n = io.read(&mut chunk).await.map_err(|e| read_error(&e))?;
        if n == 0 {
            return Err(CheckError::new(
                ErrorKind::Closed,
                "peer closed the connection",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl Writer {
    /// Writes one request.
    pub(super) async fn send(&mut self, bytes: Vec<u8>) -> Result<(), CheckError> {
        match self {
            Self::Stream(w) => {
                w.write_all(&bytes).await.map_err(|e| read_error(&e))?;
                w.flush().await.map_err(|e| read_error(&e))
            }
            Self::Ws(w) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| CheckError::new(ErrorKind::Internal, "request is not UTF-8"))?;
                w.send(WsMessage::text(text))
                    .await
                    .map_err(|e| crate::net::ws::classify(&e))
            }
        }
    }

    /// Closes politely (TCP FIN / TLS close_notify / WebSocket close), within `within`.
    pub(super) async fn close(&mut self, within: Duration) {
        let _ = match self {
            Self::Stream(w) => tokio::time::timeout(within, w.shutdown()).await.map(|_| ()),
            Self::Ws(w) => tokio::time::timeout(within, w.close()).await.map(|_| ()),
        };
    }
}

/// Connects to `target` over TCP, then TLS when `tls` is given; returns the stream, the
/// local address and (TLS) the server certificate.
pub(super) async fn open_stream(
    target: &Target,
    tls: Option<&Arc<rustls::ClientConfig>>,
    phases: &mut Phases,
) -> Result<(BoxIo, SocketAddr, Option<PeerCert>), CheckError> {
    let tcp = crate::net::addr::connect(&target.address(), phases).await?;
    let local = tcp
        .local_addr()
        .map_err(|e| CheckError::new(ErrorKind::Internal, format!("local address: {e}")))?;
    let Some(cfg) = tls else {
        return Ok((Box::new(tcp), local, None));
    };
    let stream = crate::net::tls::handshake(tcp, &target.host, cfg, phases).await?;
    let cert = crate::net::tls::stream_cert(&stream);
    Ok((Box::new(stream), local, cert))
}

/// Opens a SIP WebSocket (RFC 7118): `ws://` or `wss://` `host:port` + `path`, asking for
/// the `sip` subprotocol (a server that does not agree fails the handshake).
pub(super) async fn open_ws(
    target: &Target,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    phases: &mut Phases,
) -> Result<Ws, CheckError> {
    let scheme = if target.transport == Transport::Wss {
        "wss"
    } else {
        "ws"
    };
    let url = url::Url::parse(&format!("{scheme}://{}{path}", target.address()))
        .map_err(|e| CheckError::new(ErrorKind::Internal, format!("WebSocket URL: {e}")))?;
    let headers = [("Sec-WebSocket-Protocol".to_string(), "sip".to_string())];
    let (ws, p) = crate::net::ws::open(&url, &headers, tls.cloned()).await?;
    phases.dns = p.dns;
    phases.connect = p.connect;
    phases.tls = p.tls;
    Ok(ws)
}

/// Sends `bytes` and retransmits them on Timer E until a final response to `req` arrives
/// or `deadline`. Returns the response (or the error) and the number of retransmissions.
pub(super) async fn udp_transaction(
    sock: &UdpSocket,
    req: &Request,
    bytes: &[u8],
    deadline: Instant,
) -> (Result<Message, CheckError>, u32) {
    let mut retransmits = 0u32;
    if let Err(e) = sock.send(bytes).await {
        return (Err(CheckError::io("send", &e)), 0);
    }
    let mut interval = T1;
    let mut next = Instant::now() + interval;
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            r = sock.recv(&mut buf) => match r {
                Ok(n) => {
                    let Ok((m, _)) = message::parse(&buf[..n], Framing::Datagram) else {
                        continue; // not SIP: a stray datagram
                    };
                    if !req.is_answered_by(&m) {
                        continue;
                    }
                    if m.code().is_some_and(|c| c < 200) {
                        // Proceeding: from now on retransmit every T2 (RFC 3261 §17.1.2.2).
                        interval = T2;
                        continue;
                    }
                    return (Ok(m), retransmits);
                }
                Err(e) => return (Err(CheckError::io("receive", &e)), retransmits),
            },
            _ = sleep_until(next.min(deadline)) => {
                if Instant::now() >= deadline {
                    return (Err(CheckError::new(ErrorKind::Timeout, "no final response")), retransmits);
                }
                if let Err(e) = sock.send(bytes).await {
                    return (Err(CheckError::io("send", &e)), retransmits);
                }
                retransmits += 1;
                interval = (interval * 2).min(T2);
                next += interval;
            }
        }
    }
}

/// How requests reach the server: a connected UDP socket, or a connection (TCP, TLS,
/// WebSocket) read as a stream of messages.
pub(super) enum Link {
    /// UDP: each request is a transaction with retransmissions.
    Udp(UdpSocket),
    /// TCP, TLS or WebSocket.
    Conn {
        /// Read side.
        reader: Reader,
        /// Write side.
        writer: Writer,
    },
}

impl Link {
    /// Sends `req` and waits (until `deadline`) for its final response; other messages
    /// are skipped. Also returns the UDP retransmission count (`None` on connections).
    pub(super) async fn transact(
        &mut self,
        req: &Request,
        deadline: Instant,
    ) -> (Result<Message, CheckError>, Option<u32>) {
        match self {
            Self::Udp(sock) => {
                let (r, n) = udp_transaction(sock, req, &req.encode(), deadline).await;
                (r, Some(n))
            }
            Self::Conn { reader, writer } => {
                let exchange = async {
                    writer.send(req.encode()).await?;
                    loop {
                        let m = reader.next().await?;
                        if req.is_answered_by(&m) && m.code().is_some_and(|c| c >= 200) {
                            return Ok(m);
                        }
                    }
                };
                let r = match tokio::time::timeout_at(deadline, exchange).await {
                    Ok(r) => r,
                    Err(_) => Err(CheckError::new(ErrorKind::Timeout, "no final response")),
                };
                (r, None)
            }
        }
    }

    /// The next message the server sends while nothing is pending: on a connection this
    /// returns the error as soon as the server closes; over UDP it never returns (there
    /// is no connection to lose), stray datagrams are dropped.
    pub(super) async fn idle(&mut self) -> CheckError {
        match self {
            Self::Udp(sock) => {
                let mut buf = vec![0u8; 2048];
                loop {
                    // A connected socket can report an ICMP error here; keep waiting
                    // (the next request reports it).
                    let _ = sock.recv(&mut buf).await;
                }
            }
            Self::Conn { reader, .. } => loop {
                if let Err(e) = reader.next().await {
                    return e;
                }
            },
        }
    }

    /// Closes the connection politely, within `within`.
    pub(super) async fn close(&mut self, within: Duration) {
        if let Self::Conn { writer, .. } = self {
            writer.close(within).await;
        }
    }
}

/// How we name ourselves in Via and Contact.
pub(super) enum Local {
    /// The socket's local address.
    Addr(SocketAddr),
    /// A made-up `*.invalid` host (WebSocket, RFC 7118 §5.2).
    Name(String),
}

/// Opens the transport `spec.target` asks for: a UDP socket connected to the target (so
/// only its datagrams arrive, and an ICMP port-unreachable is reported as `refused`), a
/// TCP or TLS connection, or a WebSocket with the `sip` subprotocol. Over TLS it also
/// returns the server certificate (for `tls_expiry_warning`).
pub(super) async fn open(
    spec: &super::SipSpec,
    tls: Option<&Arc<rustls::ClientConfig>>,
    phases: &mut Phases,
) -> Result<(Link, Local, Option<PeerCert>), CheckError> {
    let target = &spec.target;
    match target.transport {
        Transport::Udp => {
            let addr = resolve(target, phases).await?;
            let bind: SocketAddr = if addr.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let sock = UdpSocket::bind(bind)
                .await
                .map_err(|e| CheckError::new(ErrorKind::Internal, format!("bind UDP: {e}")))?;
            sock.connect(addr)
                .await
                .map_err(|e| CheckError::io(&format!("connect {addr}"), &e))?;
            let local = sock
                .local_addr()
                .map_err(|e| CheckError::new(ErrorKind::Internal, format!("local address: {e}")))?;
            Ok((Link::Udp(sock), Local::Addr(local), None))
        }
        Transport::Tcp | Transport::Tls => {
            let (io, local, cert) = open_stream(target, tls, phases).await?;
            let (r, w) = tokio::io::split(io);
            Ok((
                Link::Conn {
                    reader: Reader::Stream {
                        io: r,
                        buf: Vec::new(),
                    },
                    writer: Writer::Stream(w),
                },
                Local::Addr(local),
                cert,
            ))
        }
        Transport::Ws | Transport::Wss => {
            let ws = open_ws(target, &spec.ws_path, tls, phases).await?;
            let (w, r) = ws.split();
            Ok((
                Link::Conn {
                    reader: Reader::Ws(r),
                    writer: Writer::Ws(w),
                },
                Local::Name(format!("{}.invalid", message::random_hex(12))),
                None,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(peer_sends: Vec<u8>) -> Reader {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let _ = theirs.write_all(&peer_sends).await;
            // Dropping `theirs` closes the stream.
        });
        let io: BoxIo = Box::new(ours);
        Reader::Stream {
            io: tokio::io::split(io).0,
            buf: Vec::new(),
        }
    }

    #[tokio::test]
    async fn stream_reader_frames_skips_keepalives_and_bounds_hostile_peers() {
        let mut r = reader(
            b"\r\n\r\nSIP/2.0 100 Trying\r\nl: 0\r\n\r\nSIP/2.0 200 OK\r\nl: 2\r\n\r\nhi".to_vec(),
        );
        assert_eq!(r.next().await.map(|m| m.code()), Ok(Some(100)));
        assert_eq!(r.next().await.map(|m| m.code()), Ok(Some(200)));
        assert_eq!(r.next().await.map_err(|e| e.kind), Err(ErrorKind::Closed));

        let mut r = reader(vec![b'x'; 3 * message::MAX_MESSAGE]);
        assert_eq!(r.next().await.map_err(|e| e.kind), Err(ErrorKind::Protocol));
        let Reader::Stream { buf, .. } = &r else {
            panic!("a stream reader")
        };
        assert!(buf.len() <= message::MAX_MESSAGE + 8192);

        let mut r = reader(b"SIP/2.0 200 OK\r\nContent-Length: 999999\r\n\r\n".to_vec());
        assert_eq!(r.next().await.map_err(|e| e.kind), Err(ErrorKind::Protocol));

        let mut r = reader(b"SIP/2.0 200 OK\r\nl: 10\r\n\r\nshort".to_vec());
        assert_eq!(r.next().await.map_err(|e| e.kind), Err(ErrorKind::Closed));
    }
}
