//! The MQTT wire format (3.1.1 and 5.0) for the packets a monitoring client needs: a
//! [`Decoder`] for what the broker sends (CONNACK, SUBACK, PUBLISH, PINGRESP, DISCONNECT)
//! and builders for CONNECT, SUBSCRIBE, PUBLISH, PINGREQ and DISCONNECT.
//!
//! The fixed header's remaining length is read first and checked against the decoder's cap
//! before anything is buffered, so a broker announcing a 256 MB packet fails at once. The
//! decoder never panics, whatever the input (it is fuzzed: `fuzz/fuzz_targets/mqtt_packet.rs`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default cap on one packet from the broker, in bytes (fixed header included).
pub const MAX_PACKET: usize = 64 * 1024;

/// The protocol level of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    /// The config name (`"3.1.1"`, `"5"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V311 => "3.1.1",
            Self::V5 => "5",
        }
    }

    fn level(self) -> u8 {
        match self {
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }
}

/// Why the broker's bytes cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The announced packet is larger than the cap.
    #[error("MQTT packet of {0} bytes is larger than the {MAX_PACKET}-byte limit")]
    TooLarge(usize),
    /// The bytes break the MQTT format.
    #[error("malformed MQTT packet: {0}")]
    Malformed(&'static str),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One packet from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNACK: session-present flag and the return / reason code.
    ConnAck {
        /// The broker kept a session for this client id.
        session_present: bool,
        /// 0 = accepted.
        code: u8,
    },
    /// SUBACK: one return / reason code per topic filter.
    SubAck {
        /// The SUBSCRIBE's packet identifier.
        id: u16,
        /// Granted QoS (0–2) or a failure code (≥ 0x80).
        codes: Vec<u8>,
    },
    /// An application message.
    Publish {
        /// Topic name.
        topic: String,
        /// Payload.
        payload: Bytes,
    },
    /// PINGRESP.
    PingResp,
    /// DISCONNECT from the broker (MQTT 5 carries a reason code).
    Disconnect {
        /// Reason code (MQTT 5), if sent.
        reason: Option<u8>,
    },
    /// Any other packet type (kept so the client can skip it).
    Other(u8),
}

/// Decodes broker packets for one [`Version`], capped at `max` bytes per packet.
#[derive(Debug, Clone)]
pub struct MqttCodec {
    version: Version,
    max: usize,
}

impl MqttCodec {
    /// A decoder for `version` with the default [`MAX_PACKET`] cap.
    pub fn new(version: Version) -> Self {
        Self {
            version,
            max: MAX_PACKET,
        }
    }
}

/// Reads a variable byte integer from `b` at `pos`: `Ok(None)` if more bytes are needed.
fn varint(b: &[u8], pos: usize) -> Result<Option<(usize, usize)>, CodecError> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&byte) = b.get(pos + i) else {
            return Ok(None);
        };
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(CodecError::Malformed(
        "variable length integer longer than 4 bytes",
    ))
}

/// A cursor over one packet body that fails instead of panicking.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn u8(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self
            .0
            .split_first()
            .ok_or(CodecError::Malformed("packet ends early"))?;
        self.0 = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Malformed("field longer than its packet"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let n = usize::from(self.u16()?);
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| CodecError::Malformed("string is not UTF-8"))
    }

    /// Skips MQTT 5 properties.
    fn properties(&mut self) -> Result<(), CodecError> {
        let (n, used) = varint(self.0, 0)?.ok_or(CodecError::Malformed("packet ends early"))?;
        self.take(used)?;
        self.take(n)?;
        Ok(())
    }
}

impl Decoder for MqttCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let Some((len, used)) = varint(src, 1)? else {
            return Ok(None);
        };
        let total = 1 + used + len;
        if total > self.max {
            return Err(CodecError::TooLarge(total));
        }
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let first = src[0];
        src.advance(1 + used);
        let body = src.split_to(len).freeze();
        decode_body(self.version, first, &body).map(Some)
    }
}

fn decode_body(version: Version, first: u8, raw: &Bytes) -> Result<Packet, CodecError> {
    let v5 = version == Version::V5;
    let mut b = Body(raw);
    Ok(match first >> 4 {
        2 => {
            let flags = b.u8()?;
            let code = b.u8()?;
            if v5 && !b.0.is_empty() {
                b.properties()?;
            }
            Packet::ConnAck {
                session_present: flags & 1 == 1,
                code,
            }
        }
        3 => {
            let qos = (first >> 1) & 3;
            if qos == 3 {
                return Err(CodecError::Malformed("PUBLISH with QoS 3"));
            }
            let topic = b.string()?;
            if qos > 0 {
                b.u16()?;
            }
            if v5 {
                b.properties()?;
            }
            let start = raw.len() - b.0.len();
            Packet::Publish {
                topic,
                payload: raw.slice(start..),
            }
        }
        9 => {
            let id = b.u16()?;
            if v5 {
                b.properties()?;
            }
            if b.0.is_empty() {
                return Err(CodecError::Malformed("SUBACK without return codes"));
            }
            Packet::SubAck {
                id,
                codes: b.0.to_vec(),
            }
        }
        13 => Packet::PingResp,
        14 => Packet::Disconnect {
            reason: b.0.first().copied(),
        },
        0 => return Err(CodecError::Malformed("reserved packet type 0")),
        15 if !v5 => return Err(CodecError::Malformed("reserved packet type 15")),
        t => Packet::Other(t),
    })
}

/// Outgoing packets are built as bytes by the functions below.
impl Encoder<Bytes> for MqttCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

fn put_varint(out: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if n == 0 {
            break;
        }
    }
}

fn put_bin(out: &mut BytesMut, s: &[u8]) {
    let n = s.len().min(usize::from(u16::MAX));
    out.put_u16(n as u16);
    out.extend_from_slice(&s[..n]);
}

fn packet(first: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(first);
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out.freeze()
}

/// What CONNECT carries.
#[derive(Debug, Clone)]
pub struct Connect<'a> {
    /// Protocol level.
    pub version: Version,
    /// Client identifier.
    pub client_id: &'a str,
    /// Keep-alive in seconds (0 = off).
    pub keep_alive: u16,
    /// User name.
    pub username: Option<&'a str>,
    /// Password.
    pub password: Option<&'a str>,
}

/// CONNECT with a clean session (3.1.1 clean session, 5.0 clean start).
pub fn connect(c: &Connect<'_>) -> Bytes {
    let mut b = BytesMut::new();
    put_bin(&mut b, b"MQTT");
    b.put_u8(c.version.level());
    let mut flags = 0x02;
    if c.username.is_some() {
        flags |= 0x80;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    b.put_u8(flags);
    b.put_u16(c.keep_alive);
    if c.version == Version::V5 {
        put_varint(&mut b, 0);
    }
    put_bin(&mut b, c.client_id.as_bytes());
    if let Some(u) = c.username {
        put_bin(&mut b, u.as_bytes());
    }
    if let Some(p) = c.password {
        put_bin(&mut b, p.as_bytes());
    }
    packet(0x10, &b)
}

/// SUBSCRIBE to one topic filter at QoS 0.
pub fn subscribe(version: Version, id: u16, topic: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u16(id);
    if version == Version::V5 {
        put_varint(&mut b, 0);
    }
    put_bin(&mut b, topic.as_bytes());
    b.put_u8(0);
    packet(0x82, &b)
}

/// PUBLISH at QoS 0, not retained.
pub fn publish(version: Version, topic: &str, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    put_bin(&mut b, topic.as_bytes());
    if version == Version::V5 {
        put_varint(&mut b, 0);
    }
    b.extend_from_slice(payload);
    packet(0x30, &b)
}

/// PINGREQ.
pub fn pingreq() -> Bytes {
    Bytes::from_static(&[0xc0, 0x00])
}

/// DISCONNECT (normal disconnection).
pub fn disconnect() -> Bytes {
    Bytes::from_static(&[0xe0, 0x00])
}

/// Decodes `stream` fed in pieces of the sizes in `splits` (cycled): the packets and the
/// error that stopped decoding, if any. For tests and the fuzz target.
pub fn decode_all(version: Version, stream: &[u8], splits: &[usize]) -> (Vec<Packet>, bool) {
    let mut out = Vec::new();
    let r = crate::check::pieces::decode_in_pieces(
        &mut MqttCodec::new(version),
        &mut BytesMut::new(),
        stream,
        splits,
        &mut out,
    );
    (out, r.is_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_broker_packets_split_anywhere() {
        let mut stream = vec![0x20, 0x02, 0x01, 0x00]; // CONNACK, session present
        stream.extend_from_slice(&[0x90, 0x03, 0x00, 0x07, 0x00]); // SUBACK id 7, QoS 0
        stream.extend_from_slice(&publish(Version::V311, "a/b", b"hi"));
        stream.extend_from_slice(&[0xd0, 0x00]);
        let want = vec![
            Packet::ConnAck {
                session_present: true,
                code: 0,
            },
            Packet::SubAck {
                id: 7,
                codes: vec![0],
            },
            Packet::Publish {
                topic: "a/b".into(),
                payload: Bytes::from_static(b"hi"),
            },
            Packet::PingResp,
        ];
        for split in [1, 2, 3, 7, usize::MAX] {
            assert_eq!(
                decode_all(Version::V311, &stream, &[split]),
                (want.clone(), false)
            );
        }
    }

    #[test]
    fn v5_properties_are_skipped() {
        // CONNACK with a 3-byte property block (Receive Maximum = 10).
        let connack = [0x20, 0x06, 0x00, 0x86, 0x03, 0x21, 0x00, 0x0a];
        let (p, err) = decode_all(Version::V5, &connack, &[usize::MAX]);
        assert!(!err);
        assert_eq!(
            p,
            vec![Packet::ConnAck {
                session_present: false,
                code: 0x86
            }]
        );
        let mut pubv5 = publish(Version::V5, "t", b"x").to_vec();
        pubv5.extend_from_slice(&[0xe0, 0x01, 0x8e]);
        let (p, _) = decode_all(Version::V5, &pubv5, &[usize::MAX]);
        assert_eq!(p[1], Packet::Disconnect { reason: Some(0x8e) });
    }

    #[test]
    fn oversized_and_broken_lengths_fail_at_once() {
        let mut c = MqttCodec::new(Version::V311);
        let mut b = BytesMut::from(&[0x20u8, 0xff, 0xff, 0xff, 0x7f][..]);
        assert!(matches!(c.decode(&mut b), Err(CodecError::TooLarge(_))));
        let mut b = BytesMut::from(&[0x20u8, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(matches!(c.decode(&mut b), Err(CodecError::Malformed(_))));
        let mut b = BytesMut::from(&[0x30u8, 0x02, 0x00, 0x09][..]);
        assert!(matches!(c.decode(&mut b), Err(CodecError::Malformed(_))));
    }

    #[test]
    fn connect_layout() {
        let c = connect(&Connect {
            version: Version::V311,
            client_id: "id",
            keep_alive: 60,
            username: Some("u"),
            password: Some("p"),
        });
        assert_eq!(
            &c[..],
            &[
                0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 60, 0, 2, b'i', b'd', 0, 1,
                b'u', 0, 1, b'p'
            ]
        );
        let c5 = connect(&Connect {
            version: Version::V5,
            client_id: "",
            keep_alive: 0,
            username: None,
            password: None,
        });
        assert_eq!(
            &c5[..],
            &[
                0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..20_000 {
            let len = rng.usize(0..48);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if len > 2 {
                // Mostly plausible lengths, so bodies get parsed too.
                bytes[1] = rng.u8(0..(len as u8 - 1));
            }
            for v in [Version::V311, Version::V5] {
                let split = rng.usize(1..8);
                assert_eq!(
                    decode_all(v, &bytes, &[split]),
                    decode_all(v, &bytes, &[usize::MAX])
                );
            }
        }
    }
}
