//! The bytes of the standard gRPC health protocol (`grpc/health/v1/health.proto`), hand
//! encoded: the protobuf messages are one field each, so no code generator is needed.
//!
//! * `HealthCheckRequest { string service = 1; }`
//! * `HealthCheckResponse { ServingStatus status = 1; }` with `UNKNOWN = 0`, `SERVING = 1`,
//!   `NOT_SERVING = 2`, `SERVICE_UNKNOWN = 3` (the last only from `Watch`).
//!
//! gRPC frames each message as a 1-byte compressed flag, a 4-byte big-endian length and
//! the message ([`take_message`]); the length is checked against a cap before anything
//! is buffered. Nothing here panics on any input.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest gRPC message accepted from the server (a health response is 2 bytes).
pub const MAX_MESSAGE: usize = 16 * 1024;

/// `HealthCheckResponse.ServingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// `UNKNOWN` (0).
    Unknown,
    /// `SERVING` (1).
    Serving,
    /// `NOT_SERVING` (2).
    NotServing,
    /// `SERVICE_UNKNOWN` (3).
    ServiceUnknown,
    /// A value this client does not know.
    Other(u64),
}

impl Serving {
    fn from_u64(v: u64) -> Self {
        match v {
            0 => Self::Unknown,
            1 => Self::Serving,
            2 => Self::NotServing,
            3 => Self::ServiceUnknown,
            n => Self::Other(n),
        }
    }

    /// The proto enum name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::Serving => "SERVING",
            Self::NotServing => "NOT_SERVING",
            Self::ServiceUnknown => "SERVICE_UNKNOWN",
            Self::Other(_) => "UNRECOGNIZED",
        }
    }
}

/// Why a server's message cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The announced message is larger than [`MAX_MESSAGE`].
    #[error("gRPC message of {0} bytes is larger than the {MAX_MESSAGE}-byte limit")]
    TooLarge(u64),
    /// The compressed flag is set (the client accepts no encoding).
    #[error("compressed gRPC message (no grpc-accept-encoding was offered)")]
    Compressed,
    /// The protobuf bytes are broken.
    #[error("malformed HealthCheckResponse: {0}")]
    Malformed(&'static str),
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn varint(b: &mut &[u8]) -> Result<u64, WireError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&byte, rest) = b
            .split_first()
            .ok_or(WireError::Malformed("truncated varint"))?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(WireError::Malformed("varint longer than 10 bytes"))
}

/// A framed `HealthCheckRequest` for `service` (empty: the server as a whole).
pub fn request(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        msg.put_u8(0x0a);
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.put_u8(0);
    out.put_u32(msg.len() as u32);
    out.extend_from_slice(&msg);
    out.freeze()
}

/// Decodes a `HealthCheckResponse` (unknown fields skipped, as protobuf requires).
pub fn parse_response(mut b: &[u8]) -> Result<Serving, WireError> {
    let mut status = 0;
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut b)?,
            (_, 0) => {
                varint(&mut b)?;
            }
            (_, 1) => {
                b = b
                    .get(8..)
                    .ok_or(WireError::Malformed("truncated fixed64"))?
            }
            (_, 5) => {
                b = b
                    .get(4..)
                    .ok_or(WireError::Malformed("truncated fixed32"))?
            }
            (_, 2) => {
                let n = usize::try_from(varint(&mut b)?)
                    .map_err(|_| WireError::Malformed("huge field"))?;
                b = b.get(n..).ok_or(WireError::Malformed("truncated field"))?;
            }
            _ => return Err(WireError::Malformed("unknown wire type")),
        }
    }
    Ok(Serving::from_u64(status))
}

/// Takes one framed message off the front of `buf`: `Ok(None)` while it is incomplete.
/// Fails as soon as the 5-byte prefix announces more than [`MAX_MESSAGE`].
pub fn take_message(buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u64::from(u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]));
    if len > MAX_MESSAGE as u64 {
        return Err(WireError::TooLarge(len));
    }
    if buf[0] != 0 {
        return Err(WireError::Compressed);
    }
    let len = len as usize;
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
pub fn decode_grpc_message(raw: &[u8]) -> String {
    percent_encoding::percent_decode(raw)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        assert_eq!(&request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&request("ab")[..], &[0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']);
    }

    #[test]
    fn responses() {
        assert_eq!(parse_response(&[0x08, 0x01]), Ok(Serving::Serving));
        assert_eq!(parse_response(&[]), Ok(Serving::Unknown));
        // Unknown fields are skipped.
        assert_eq!(
            parse_response(&[0x12, 0x01, b'x', 0x08, 0x02]),
            Ok(Serving::NotServing)
        );
        assert!(parse_response(&[0x08]).is_err());
        assert!(parse_response(&[0x12, 0x05]).is_err());
    }

    #[test]
    fn framing() {
        let mut b = BytesMut::from(&[0, 0, 0, 0, 2, 0x08, 0x03, 0][..]);
        assert_eq!(
            take_message(&mut b).unwrap().as_deref(),
            Some(&[0x08, 0x03][..])
        );
        assert_eq!(take_message(&mut b), Ok(None));
        let mut huge = BytesMut::from(&[0, 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            take_message(&mut huge),
            Err(WireError::TooLarge(0xffff_ffff))
        );
        assert_eq!(decode_grpc_message(b"a%20b"), "a b");
    }
}
