//! `icmp` (probe): `count` ICMP echo requests (RFC 792; ICMPv6 RFC 4443) of
//! `payload_size` bytes to `host`, 100 ms apart, answered within the attempt's timeout.
//! Healthy when the loss is at most `max_loss` (percent, default 0), `degraded` above it
//! (`error_kind = "timeout"`), `unhealthy` when nothing came back (`timeout`). The round
//! trips are reported as perfdata (`rtt_min`, `rtt_avg`, `rtt_max`, seconds; `loss`, a
//! ratio) and the outcome's latency is the average round trip.
//!
//! Sockets: an unprivileged ICMP datagram socket where `net.ipv4.ping_group_range`
//! includes the agent's group (the kernel then owns the identifier and checksum), else a
//! raw socket (root or `CAP_NET_RAW`), else the check fails with `error_kind =
//! "internal"` and a message naming both remedies. `details.socket` says which was used.
//! A name resolves through the agent's resolver; IPv4 is preferred when it has both.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, ErrorKind, KindSpec, Outcome, Perf, Phases,
    Verdict,
};
use crate::config::raw::Table;

/// Gap between two echo requests of one attempt.
pub const SPACING: Duration = Duration::from_millis(100);

/// Largest `payload_size` (an IPv4 datagram of 65 535 bytes minus headers).
pub const MAX_PAYLOAD: i64 = 65_507;

/// `icmp` settings.
#[derive(Debug, Clone)]
pub struct IcmpSpec {
    /// Host name or IP address.
    pub host: String,
    /// Echo requests per attempt (1–100, default 3).
    pub count: u16,
    /// Bytes of payload after the 8-byte ICMP header (default 56, as `ping`).
    pub payload_size: usize,
    /// Highest loss, in percent, that is still healthy (default 0).
    pub max_loss: f64,
}

/// Reads `host`, `count`, `payload_size`, `max_loss`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let host = t.req_str("host").and_then(|h| {
        let v = crate::net::addr::unbracket(h.value.trim()).to_string();
        if v.is_empty() || v.contains(char::is_whitespace) || v.contains('/') {
            t.error(
                h.span,
                format!("`host` must be a host name or IP, got `{}`", h.value),
            );
            None
        } else {
            Some(v)
        }
    });
    let count = t.int("count", 1..=100).unwrap_or(3) as u16;
    let payload_size = t.int("payload_size", 0..=MAX_PAYLOAD).unwrap_or(56) as usize;
    let max_loss = t.float("max_loss", 0.0..=100.0).unwrap_or(0.0);
    Some(Arc::new(IcmpSpec {
        host: host?,
        count,
        payload_size,
        max_loss,
    }))
}

impl KindSpec for IcmpSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        Ok(Arc::new(IcmpCheck { spec: self.clone() }))
    }
}

struct IcmpCheck {
    spec: IcmpSpec,
}

/// Which kind of socket carries the echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `SOCK_DGRAM` + `IPPROTO_ICMP`: unprivileged, the kernel sets id and checksum.
    Dgram,
    /// `SOCK_RAW`: privileged; IPv4 replies come with their IP header.
    Raw,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Dgram => "dgram",
            Self::Raw => "raw",
        }
    }
}

/// Opens a non-blocking ICMP socket for `ip`'s family: datagram first, raw second.
fn open(ip: IpAddr) -> Result<(Socket, Kind), CheckError> {
    let (domain, proto) = match ip {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let dgram = Socket::new(domain, Type::DGRAM, Some(proto));
    let (sock, kind) = match dgram {
        Ok(s) => (s, Kind::Dgram),
        Err(de) => match Socket::new(domain, Type::RAW, Some(proto)) {
            Ok(s) => (s, Kind::Raw),
            Err(re) => {
                let gid = nix::unistd::getegid();
                return Err(CheckError::new(
                    ErrorKind::Internal,
                    format!(
                        "cannot open an ICMP socket: unprivileged ({de}) needs \
                         net.ipv4.ping_group_range to include gid {gid}, raw ({re}) needs \
                         root or CAP_NET_RAW"
                    ),
                ));
            }
        },
    };
    sock.set_nonblocking(true)
        .map_err(|e| CheckError::io("icmp socket", &e))?;
    Ok((sock, kind))
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let word = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request: type, code 0, checksum (IPv4; ICMPv6's is the kernel's), id, seq,
/// payload (the attempt's 8-byte token, then a counting pattern).
fn echo_request(v6: bool, id: u16, seq: u16, token: &[u8; 8], size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + size);
    p.extend_from_slice(&[if v6 { 128 } else { 8 }, 0, 0, 0]);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    for i in 0..size {
        p.push(token.get(i).copied().unwrap_or(i as u8));
    }
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// The sequence number of `packet` if it is an echo reply to this attempt: the reply
/// type, our id (raw sockets; datagram sockets only see their own), and our token.
fn reply_seq(
    packet: &[u8],
    v6: bool,
    kind: Kind,
    id: u16,
    token: &[u8; 8],
    size: usize,
) -> Option<u16> {
    let icmp = if !v6 && kind == Kind::Raw {
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        packet.get(ihl..)?
    } else {
        packet
    };
    let want_type = if v6 { 129 } else { 0 };
    if icmp.len() < 8 || icmp[0] != want_type || icmp[1] != 0 {
        return None;
    }
    if kind == Kind::Raw && icmp[4..6] != id.to_be_bytes() {
        return None;
    }
    let n = size.min(8);
    if icmp.get(8..8 + n)? != &token[..n] {
        return None;
    }
    Some(u16::from_be_bytes([icmp[6], icmp[7]]))
}

/// What one attempt measured.
struct Tally {
    sent: u16,
    rtts: Vec<Duration>,
    send_error: Option<CheckError>,
}

async fn ping(spec: &IcmpSpec, ip: IpAddr, budget: Duration) -> Result<(Tally, Kind), CheckError> {
    let (sock, kind) = open(ip)?;
    // A datagram socket API over the ICMP socket: send_to/recv_from are all it needs
    // (the port of the address is ignored for ICMP).
    let sock = UdpSocket::from_std(std::net::UdpSocket::from(sock))
        .map_err(|e| CheckError::io("icmp socket", &e))?;
    let v6 = ip.is_ipv6();
    let to = SocketAddr::new(ip, 0);
    let id = fastrand::u16(..);
    let token = fastrand::u64(..).to_be_bytes();
    let start = Instant::now();
    let deadline = start + budget;
    let mut sent_at: Vec<Option<Instant>> = vec![None; usize::from(spec.count)];
    let mut got = vec![false; usize::from(spec.count)];
    let mut tally = Tally {
        sent: 0,
        rtts: Vec::new(),
        send_error: None,
    };
    let mut buf = vec![0u8; spec.payload_size + 8 + 60];
    let mut next_send = start;
    loop {
        let all_sent = usize::from(tally.sent) == sent_at.len();
        if all_sent && tally.rtts.len() == usize::from(tally.sent) {
            break;
        }
        let wake = if all_sent {
            deadline
        } else {
            next_send.min(deadline)
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    break;
                }
                if !all_sent {
                    let seq = tally.sent;
                    let pkt = echo_request(v6, id, seq, &token, spec.payload_size);
                    match sock.try_send_to(&pkt, to) {
                        Ok(_) => sent_at[usize::from(seq)] = Some(Instant::now()),
                        Err(e) => {
                            // No route (blackhole: EINVAL), a local firewall (EPERM), …
                            let mut ce = CheckError::io(&format!("sending echo to {ip}"), &e);
                            if ce.kind == ErrorKind::Internal {
                                ce.kind = ErrorKind::Refused;
                            }
                            tally.send_error.get_or_insert(ce);
                        }
                    }
                    tally.sent += 1;
                    next_send = Instant::now() + SPACING;
                }
            }
            r = sock.recv_from(&mut buf) => {
                let (n, _from) = r.map_err(|e| CheckError::io("icmp receive", &e))?;
                if let Some(seq) = reply_seq(&buf[..n], v6, kind, id, &token, spec.payload_size) {
                    let i = usize::from(seq);
                    if let (Some(Some(t)), Some(false)) = (sent_at.get(i), got.get(i)) {
                        got[i] = true;
                        tally.rtts.push(t.elapsed());
                    }
                }
            }
        }
    }
    Ok((tally, kind))
}

/// The address to ping: an IP literal as is, a name through the agent's resolver
/// (IPv4 preferred).
async fn target(host: &str) -> Result<IpAddr, CheckError> {
    let ips = crate::net::dns::lookup(host).await?;
    ips.iter()
        .find(|ip| ip.is_ipv4())
        .or(ips.first())
        .copied()
        .ok_or_else(|| CheckError::new(ErrorKind::Dns, format!("resolve {host}: no addresses")))
}

impl Check for IcmpCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            let spec = &self.spec;
            let mut phases = Phases::default();
            let ip = match target(&spec.host).await {
                Ok(ip) => ip,
                Err(e) => return Outcome::down(e, start.elapsed()),
            };
            phases.dns = Some(start.elapsed());
            // Stop listening a little before the supervisor's cut-off, so the loss is
            // reported by the check.
            let left = crate::net::deadline::remaining().unwrap_or(at.timeout);
            let budget = left.mul_f64(0.9);
            let t = Instant::now();
            let (tally, kind) = match ping(spec, ip, budget).await {
                Ok(x) => x,
                Err(e) => return Outcome::down(e, start.elapsed()).with_phases(phases),
            };
            phases.exchange = Some(t.elapsed());
            judge(spec, ip, kind, &tally, start.elapsed()).with_phases(phases)
        })
    }
}

/// The outcome of an attempt's tally (see the module docs).
fn judge(spec: &IcmpSpec, ip: IpAddr, kind: Kind, tally: &Tally, wall: Duration) -> Outcome {
    let sent = u32::from(spec.count);
    let received = tally.rtts.len() as u32;
    let loss = 1.0 - f64::from(received) / f64::from(sent);
    let secs: Vec<f64> = tally.rtts.iter().map(Duration::as_secs_f64).collect();
    let (min, max) = secs.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(*v), hi.max(*v))
    });
    let avg = if secs.is_empty() {
        0.0
    } else {
        secs.iter().sum::<f64>() / secs.len() as f64
    };
    let summary = format!(
        "{received}/{sent} replies from {ip}, {:.0}% loss",
        loss * 100.0
    );
    let mut o = if received == 0 {
        let why = match &tally.send_error {
            Some(e) => format!("{summary} ({})", e.message),
            None => format!("{summary}: no echo reply"),
        };
        let kind = tally
            .send_error
            .as_ref()
            .map_or(ErrorKind::Timeout, |e| e.kind);
        Outcome::down(CheckError::new(kind, why), wall)
    } else {
        let mut o = Outcome::up(Duration::from_secs_f64(avg)).with_message(format!(
            "{summary}, rtt min/avg/max {:.3}/{:.3}/{:.3} ms",
            min * 1e3,
            avg * 1e3,
            max * 1e3
        ));
        if loss * 100.0 > spec.max_loss + 1e-9 {
            o.verdict = Verdict::Warn(Some(ErrorKind::Timeout));
            o.message = format!("{} (max_loss {}%)", o.message, spec.max_loss);
        }
        o
    };
    o = o
        .with_detail("address", ip.to_string())
        .with_detail("socket", kind.as_str())
        .with_detail("sent", sent)
        .with_detail("received", received);
    o.perfdata.push(Perf {
        label: "loss".into(),
        value: loss,
    });
    if received > 0 {
        for (label, value) in [("rtt_min", min), ("rtt_avg", avg), ("rtt_max", max)] {
            o.perfdata.push(Perf {
                label: label.into(),
                value,
            });
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc_1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2; the checksum is its complement.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // A packet with its checksum filled in sums to zero.
        let p = echo_request(false, 0x1234, 7, b"lifeline", 20);
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn replies_are_matched_by_type_id_and_token() {
        let token = *b"abcdefgh";
        let mut reply = echo_request(false, 9, 3, &token, 12);
        reply[0] = 0;
        assert_eq!(
            reply_seq(&reply, false, Kind::Dgram, 0, &token, 12),
            Some(3)
        );
        // Raw IPv4: after a 20-byte IP header, and the id must be ours.
        let mut raw = vec![0x45u8];
        raw.extend_from_slice(&[0; 19]);
        raw.extend_from_slice(&reply);
        assert_eq!(reply_seq(&raw, false, Kind::Raw, 9, &token, 12), Some(3));
        assert_eq!(reply_seq(&raw, false, Kind::Raw, 10, &token, 12), None);
        // Our own request (type 8), another token, or a short packet: not a reply.
        let req = echo_request(false, 9, 3, &token, 12);
        assert_eq!(reply_seq(&req, false, Kind::Dgram, 9, &token, 12), None);
        assert_eq!(
            reply_seq(&reply, false, Kind::Dgram, 9, b"zzzzzzzz", 12),
            None
        );
        assert_eq!(
            reply_seq(&reply[..6], false, Kind::Dgram, 9, &token, 12),
            None
        );
    }
}
