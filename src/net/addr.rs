//! Addresses: `host:port` parsing and formatting (IPv6 in brackets), percent-decoding of
//! URL components, and the TCP connect every TCP-based kind starts with (resolved by
//! [`super::dns`], several addresses raced by [`happy_eyeballs`], each one opened by
//! [`connect_one`]).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use crate::check::{CheckError, ErrorKind, Phases};

/// Splits `host:port` (`[v6]:port` too); the host comes back without brackets.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = unbracket(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// `host:port`, with an IPv6 host in brackets (`[::1]:80`). `host` may already carry
/// brackets (as `url::Url::host_str` gives them).
pub fn join_host_port(host: &str, port: u16) -> String {
    let host = unbracket(host);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host` without the brackets of an IPv6 literal (`[::1]` → `::1`).
pub fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A percent-decoded URL component that is not text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("URL component is not UTF-8 after percent-decoding")]
pub struct NotUtf8;

/// Percent-decodes a URL component (user, password, path).
pub fn percent_decode(s: &str) -> Result<String, NotUtf8> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| NotUtf8)
}

/// Delay before the next address is tried while earlier ones are still connecting
/// (RFC 8305 "Connection Attempt Delay").
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Bound on a connect made outside an attempt ([`super::deadline`]).
pub const DEFAULT_CONNECT_BUDGET: Duration = Duration::from_secs(10);

/// Resolves `address` (`host:port`) through [`super::dns`] and connects, timing
/// `phases.dns` and `phases.connect`. Several addresses are raced happy-eyeballs style
/// ([`happy_eyeballs`]). The stream has `TCP_NODELAY` set: every caller talks a
/// request/response protocol over it.
pub async fn connect(address: &str, phases: &mut Phases) -> Result<TcpStream, CheckError> {
    let s = connect_first(address, phases)
        .await?
        .0
        .into_stream()
        .map_err(|e| CheckError::io(&format!("connect {address}"), &e))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// [`connect`] as a [`Connected`] socket (not yet handed to the runtime when the kernel
/// finished the handshake at once), also telling whether the first address tried is the
/// one that answered (false when happy eyeballs had to move on: the wait for the others
/// was real).
pub async fn connect_first(
    address: &str,
    phases: &mut Phases,
) -> Result<(Connected, bool), CheckError> {
    let t0 = Instant::now();
    let addrs: Vec<SocketAddr> = match address.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => {
            let (host, port) = split_host_port(address).ok_or_else(|| {
                CheckError::new(ErrorKind::Dns, format!("`{address}` is not HOST:PORT"))
            })?;
            super::dns::resolve(host, port).await?
        }
    };
    phases.dns = Some(t0.elapsed());
    let t1 = Instant::now();
    let deadline = super::deadline::current().unwrap_or(t1 + DEFAULT_CONNECT_BUDGET);
    let s = happy_eyeballs(&addrs, deadline).await?;
    phases.connect = Some(t1.elapsed());
    // One address needs no `getpeername` to know which one answered.
    let first = addrs.len() == 1 || s.peer_addr().ok() == addrs.first().copied();
    Ok((s, first))
}

/// A TCP connection that has been made: still a plain socket when the kernel finished
/// the handshake inside `connect(2)` itself, or a runtime stream when it had to be
/// waited for.
#[derive(Debug)]
pub enum Connected {
    /// Established by the time `connect(2)` returned (a loopback peer: the kernel runs
    /// the whole handshake in the call), so never registered with the runtime: a probe
    /// that only wanted to know the port answers closes it without an `epoll_ctl`,
    /// a wake-up or a timer.
    Now(std::net::TcpStream),
    /// Waited for on the runtime's reactor.
    Waited(TcpStream),
}

impl Connected {
    /// The connection as a runtime stream (registering it with the reactor if it is
    /// not yet).
    pub fn into_stream(self) -> io::Result<TcpStream> {
        match self {
            Connected::Now(s) => TcpStream::from_std(s),
            Connected::Waited(s) => Ok(s),
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Connected::Now(s) => s.peer_addr(),
            Connected::Waited(s) => s.peer_addr(),
        }
    }
}

impl AsRawFd for Connected {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Connected::Now(s) => s.as_raw_fd(),
            Connected::Waited(s) => s.as_raw_fd(),
        }
    }
}

/// Opens a TCP connection to `a`: a non-blocking `connect(2)`, then — before anything
/// is registered with the runtime — a second `connect(2)`, which reports the outcome
/// when the kernel already has it. Against a loopback peer it always does (the SYN,
/// SYN-ACK and ACK all run inside the first call), so the connection, or its refusal,
/// costs no reactor registration, no `epoll_wait` round trip and no task wake-up; a
/// remote peer costs one extra syscall (`EALREADY`), then the reactor waits as usual.
pub async fn connect_one(a: SocketAddr) -> io::Result<Connected> {
    let sock = Socket::new(Domain::for_address(a), Type::STREAM.nonblocking(), None)?;
    let to = SockAddr::from(a);
    let pending = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::EINPROGRESS | libc::EALREADY | libc::EINTR)
        )
    };
    // The first call starts the handshake, the second asks how it went.
    for _ in 0..2 {
        match sock.connect(&to) {
            Ok(()) => return Ok(Connected::Now(sock.into())),
            // Linux answers 0 once established; other systems say "already connected".
            Err(e) if e.raw_os_error() == Some(libc::EISCONN) => {
                return Ok(Connected::Now(sock.into()));
            }
            Err(e) if pending(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let s = TcpStream::from_std(sock.into())?;
    s.writable().await?;
    match s.take_error()? {
        Some(e) => Err(e),
        None => Ok(Connected::Waited(s)),
    }
}

/// Connects to the first of `addrs` that answers before `deadline` (RFC 8305 style):
/// the next address starts when the previous one fails, or after [`ATTEMPT_DELAY`] —
/// shortened to an equal share of the time left when more addresses wait than fit —
/// while earlier attempts keep running. The first to connect wins; the others are
/// dropped (their sockets closed).
pub async fn happy_eyeballs(
    addrs: &[SocketAddr],
    deadline: Instant,
) -> Result<Connected, CheckError> {
    if let [a] = addrs {
        // One address: nothing to race, so no set of attempts to keep.
        return match tokio::time::timeout_at(deadline, connect_one(*a)).await {
            Ok(r) => r.map_err(|e| CheckError::io(&format!("connect {a}"), &e)),
            Err(_) => Err(CheckError::new(
                ErrorKind::Timeout,
                format!("connect {a}: no answer in time"),
            )),
        };
    }
    let mut pending = FuturesUnordered::new();
    let mut waiting = addrs.iter().copied();
    let mut last: Option<CheckError> = None;
    let start = |a: SocketAddr| async move { (a, connect_one(a).await) };
    let mut started_at = Instant::now();
    if let Some(a) = waiting.next() {
        pending.push(start(a));
    }
    loop {
        let left = waiting.len();
        if pending.is_empty() && left == 0 {
            return Err(last
                .unwrap_or_else(|| CheckError::new(ErrorKind::Dns, "no addresses to connect to")));
        }
        let next_at = if left == 0 {
            deadline
        } else {
            let share = deadline.saturating_duration_since(started_at) / (left as u32 + 1);
            started_at + ATTEMPT_DELAY.min(share)
        };
        tokio::select! {
            Some((a, r)) = pending.next(), if !pending.is_empty() => match r {
                Ok(s) => return Ok(s),
                Err(e) => {
                    last = Some(CheckError::io(&format!("connect {a}"), &e));
                    if let Some(a) = waiting.next() {
                        started_at = Instant::now();
                        pending.push(start(a));
                    }
                }
            },
            _ = sleep_until(next_at) => {
                if let Some(a) = waiting.next() {
                    started_at = Instant::now();
                    pending.push(start(a));
                } else {
                    let tried = addrs.iter().map(ToString::to_string).collect::<Vec<_>>();
                    return Err(CheckError::new(
                        ErrorKind::Timeout,
                        format!("connect {}: no answer in time", tried.join(", ")),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("db:5432"), Some(("db", 5432)));
        assert_eq!(split_host_port("[::1]:80"), Some(("::1", 80)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":80"), None);
    }

    #[test]
    fn joins_with_brackets_for_v6() {
        assert_eq!(join_host_port("db", 5432), "db:5432");
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert_eq!(join_host_port("[::1]", 80), "[::1]:80");
    }

    async fn closed_port() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_refused_address_hands_over_at_once() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = [closed_port().await, open.local_addr().unwrap()];
        let t = Instant::now();
        let deadline = t + Duration::from_secs(5);
        let s = happy_eyeballs(&addrs, deadline)
            .await
            .expect("second address");
        assert_eq!(s.peer_addr().unwrap(), addrs[1]);
        assert!(t.elapsed() < ATTEMPT_DELAY, "waited {:?}", t.elapsed());
    }

    #[tokio::test]
    async fn every_address_refused_is_refused() {
        let addrs = [closed_port().await, closed_port().await];
        let deadline = Instant::now() + Duration::from_secs(5);
        let e = happy_eyeballs(&addrs, deadline).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused, "{e:?}");
        let e = happy_eyeballs(&[], deadline).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Dns);
    }

    #[tokio::test]
    async fn a_loopback_connect_is_done_before_the_reactor_is_involved() {
        use futures_util::FutureExt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        // Ready on its first poll: nothing was left for the runtime to wait on.
        let c = connect_one(a)
            .now_or_never()
            .expect("ready at once")
            .unwrap();
        assert!(matches!(c, Connected::Now(_)), "{c:?}");
        assert!(super::super::tcp_info::rtt(&c).is_some());
        let (peer, _) = l.accept().unwrap();
        assert_eq!(
            peer.peer_addr().unwrap(),
            c.into_stream().unwrap().local_addr().unwrap()
        );
        let closed = closed_port().await;
        let e = connect_one(closed)
            .now_or_never()
            .expect("refused at once")
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn a_handshake_the_kernel_has_not_finished_is_waited_for() {
        use futures_util::FutureExt;
        // A listener whose accept queue is full drops SYNs: the connect stays in
        // progress until a retransmitted SYN (after about a second) finds room.
        let l = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        l.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0))))
            .unwrap();
        l.listen(1).unwrap();
        let l: std::net::TcpListener = l.into();
        let a = l.local_addr().unwrap();
        let mut queued = Vec::new();
        loop {
            match connect_one(a).now_or_never() {
                Some(Ok(c)) => queued.push(c),
                Some(Err(e)) => panic!("{e}"),
                None => break,
            }
            assert!(queued.len() < 64, "the accept queue never filled");
        }
        let mut waiting = Box::pin(connect_one(a));
        assert!((&mut waiting).now_or_never().is_none(), "the queue is full");
        // Room for one more: the retransmitted SYN is accepted.
        let _first = l.accept().unwrap();
        let c = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("the retransmitted SYN connects")
            .unwrap();
        assert!(matches!(c, Connected::Waited(_)), "{c:?}");
        assert_eq!(c.peer_addr().unwrap(), a);
    }

    #[test]
    fn decodes_components() {
        assert_eq!(percent_decode("p%40ss").unwrap(), "p@ss");
        assert!(percent_decode("%ff").is_err());
    }
}
