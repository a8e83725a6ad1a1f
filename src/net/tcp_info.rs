//! The kernel's own measurement of a TCP connection (`TCP_INFO`): the round-trip time of
//! the handshake, taken by the kernel when the SYN-ACK arrived. A probe reports it as its
//! latency because it measures the exchange with the peer alone — never the time the
//! agent's runtime took to get round to the finished connect, which under load would
//! make a healthy peer look slow (and the agent's own queueing a peer's fault).

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::time::Duration;

/// The smoothed round-trip time the kernel holds for `s` (right after connecting: the
/// handshake's SYN → SYN-ACK time), or `None` when anything was retransmitted (then the
/// handshake's real cost is the retransmission wait), the kernel has no sample, or the
/// call fails.
pub fn rtt(s: &impl AsRawFd) -> Option<Duration> {
    // SAFETY: `tcp_info` is plain old data, so all-zero bytes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the descriptor is open for the duration of the call (borrowed from `s`);
    // `info` and `len` are valid for writes and `len` holds the size of `info`, so the
    // kernel writes at most that many bytes.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    // A retransmitted SYN means the handshake really took the retransmission timeout
    // (1 s and up): the smoothed RTT (from TCP timestamps) would hide that loss, so the
    // caller's elapsed time is the honest figure then.
    let retransmitted = info.tcpi_total_retrans > 0 || info.tcpi_retransmits > 0;
    (rc == 0 && info.tcpi_rtt > 0 && !retransmitted)
        .then(|| Duration::from_micros(u64::from(info.tcpi_rtt)))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_loopback_handshake_has_a_kernel_rtt() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let rtt = super::rtt(&s).expect("loopback connections are timed");
        assert!(rtt < std::time::Duration::from_secs(1), "{rtt:?}");
        let not_a_socket = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(super::rtt(&not_a_socket), None);
    }
}
