//! How a `sip` check moves bytes: name resolution, the UDP transaction with its RFC 3261
//! retransmission timers, and TCP/TLS connections read as a stream of framed messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};

use super::message::{self, Framing, Message, Options, ParseError};
use super::{Caller, Target};
use crate::check::{CheckError, ErrorKind, Phases};
use crate::net::tls::PeerCert;

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

/// The read side of a TCP/TLS connection: framed, bounded, cancel-safe.
pub(super) struct Reader {
    pub(super) io: ReadHalf<BoxIo>,
    pub(super) buf: Vec<u8>,
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

impl Reader {
    /// The next message. Cancel-safe: bytes are only added to the buffer after a read
    /// completes, and parsing is synchronous.
    pub(super) async fn next(&mut self) -> Result<Message, CheckError> {
        let mut chunk = [0u8; 8192];
        loop {
            let blank = message::leading_blank(&self.buf);
            self.buf.drain(..blank);
            if !self.buf.is_empty() {
                match message::parse(&self.buf, Framing::Stream) {
                    Ok((m, used)) => {
                        self.buf.drain(..used);
                        return Ok(m);
                    }
                    Err(ParseError::Incomplete) => {}
                    Err(e) => {
                        return Err(CheckError::new(
                            ErrorKind::Protocol,
                            format!("peer sent an invalid SIP message: {e}"),
                        ));
                    }
                }
            }
            let n = self.io.read(&mut chunk).await.map_err(|e| read_error(&e))?;
            if n == 0 {
                return Err(CheckError::new(
                    ErrorKind::Closed,
                    "peer closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
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

/// Sends `bytes` and retransmits them on Timer E until a final response to `req` arrives
/// or `deadline`. Returns the response (or the error) and the number of retransmissions.
pub(super) async fn udp_transaction(
    sock: &UdpSocket,
    req: &Options,
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

/// An open TCP/TLS connection with its caller state.
pub(super) struct Conn {
    pub(super) reader: Reader,
    pub(super) writer: WriteHalf<BoxIo>,
    pub(super) caller: Caller,
}

impl Conn {
    pub(super) async fn send(&mut self, req: &Options) -> Result<(), CheckError> {
        self.writer
            .write_all(&req.encode())
            .await
            .map_err(|e| read_error(&e))?;
        self.writer.flush().await.map_err(|e| read_error(&e))
    }

    /// Sends `req` and reads until its final response (other messages are skipped).
    pub(super) async fn exchange(&mut self, req: &Options) -> Result<Message, CheckError> {
        self.send(req).await?;
        loop {
            let m = self.reader.next().await?;
            if req.is_answered_by(&m) && m.code().is_some_and(|c| c >= 200) {
                return Ok(m);
            }
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
        Reader {
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
        assert!(r.buf.len() <= message::MAX_MESSAGE + 8192);

        let mut r = reader(b"SIP/2.0 200 OK\r\nContent-Length: 999999\r\n\r\n".to_vec());
        assert_eq!(r.next().await.map_err(|e| e.kind), Err(ErrorKind::Protocol));

        let mut r = reader(b"SIP/2.0 200 OK\r\nl: 10\r\n\r\nshort".to_vec());
        assert_eq!(r.next().await.map_err(|e| e.kind), Err(ErrorKind::Closed));
    }
}
