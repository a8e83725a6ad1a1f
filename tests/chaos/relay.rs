//! A delaying relay written for the slow-link tests (this kernel has no `netem`): it
//! listens on 127.0.0.1, forwards to the peer at once, and hands every chunk the peer
//! sends back to the client [`DELAY`] after it arrived (order kept). TCP: one upstream
//! connection per accepted client. UDP: one upstream socket per client address.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How late every reply is.
pub const DELAY: Duration = Duration::from_millis(1500);

/// A running relay; stops (with every connection) on drop.
pub struct Relay {
    pub addr: SocketAddrV4,
    _tasks: JoinSet<()>,
}

/// Copies `from` → `to`, each chunk `delay` after it was read.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    tokio::join!(writer, reader);
}

impl Relay {
    /// A TCP relay to `upstream`.
    pub async fn tcp(upstream: SocketAddrV4) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let SocketAddr::V4(addr) = l.local_addr().expect("addr") else {
            unreachable!("bound on IPv4")
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((client, _)) = l.accept().await {
                conns.spawn(async move {
                    let Ok(Ok(up)) =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream))
                            .await
                    else {
                        return;
                    };
                    let _ = (client.set_nodelay(true), up.set_nodelay(true));
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::join!(
                        delayed_copy(cr, uw, Duration::ZERO),
                        delayed_copy(ur, cw, DELAY)
                    );
                });
            }
        });
        Self {
            addr,
            _tasks: tasks,
        }
    }

    /// A UDP relay to `upstream`.
    pub async fn udp(upstream: SocketAddrV4) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let SocketAddr::V4(addr) = front.local_addr().expect("addr") else {
            unreachable!("bound on IPv4")
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut ups: std::collections::HashMap<SocketAddr, Arc<UdpSocket>> =
                std::collections::HashMap::new();
            let mut readers = JoinSet::new();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok((n, client)) = front.recv_from(&mut buf).await {
                let up = match ups.get(&client) {
                    Some(u) => u.clone(),
                    None => {
                        let u =
                            Arc::new(UdpSocket::bind("0.0.0.0:0").await.expect("bind upstream"));
                        u.connect(upstream).await.expect("connect upstream");
                        let (u2, f2) = (u.clone(), front.clone());
                        readers.spawn(async move {
                            let mut b = vec![0u8; 64 * 1024];
                            while let Ok(n) = u2.recv(&mut b).await {
                                let (f3, pkt) = (f2.clone(), b[..n].to_vec());
                                tokio::spawn(async move {
                                    tokio::time::sleep(DELAY).await;
                                    let _ = f3.send_to(&pkt, client).await;
                                });
                            }
                        });
                        ups.insert(client, u.clone());
                        u
                    }
                };
                let _ = up.send(&buf[..n]).await;
            }
        });
        Self {
            addr,
            _tasks: tasks,
        }
    }
}
