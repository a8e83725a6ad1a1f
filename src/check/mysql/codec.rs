//! The MySQL / MariaDB client/server protocol, as far as a monitoring client needs it:
//! packet framing ([`PacketCodec`]: 3-byte length + sequence id, capped at [`MAX_PACKET`]
//! before anything is buffered), the initial handshake (protocol v10), the client's
//! `SSLRequest` and `HandshakeResponse41`, OK/ERR/EOF packets, auth switch / more-data
//! packets, and walking a text result set. Parsing never panics, whatever the input (it is
//! fuzzed: `fuzz/fuzz_targets/mysql_packet.rs`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio_util::codec::{Decoder, Encoder};

/// Largest packet accepted from the server (payload), in bytes.
pub const MAX_PACKET: usize = 1024 * 1024;

/// `CLIENT_LONG_PASSWORD`.
pub const LONG_PASSWORD: u32 = 0x1;
/// `CLIENT_LONG_FLAG`.
pub const LONG_FLAG: u32 = 0x4;
/// `CLIENT_CONNECT_WITH_DB`.
pub const CONNECT_WITH_DB: u32 = 0x8;
/// `CLIENT_PROTOCOL_41`.
pub const PROTOCOL_41: u32 = 0x200;
/// `CLIENT_SSL`.
pub const SSL: u32 = 0x800;
/// `CLIENT_TRANSACTIONS`.
pub const TRANSACTIONS: u32 = 0x2000;
/// `CLIENT_SECURE_CONNECTION` (4.1 authentication).
pub const SECURE_CONNECTION: u32 = 0x8000;
/// `CLIENT_MULTI_RESULTS`.
pub const MULTI_RESULTS: u32 = 0x20000;
/// `CLIENT_PLUGIN_AUTH`.
pub const PLUGIN_AUTH: u32 = 0x80000;
/// `CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA`.
pub const PLUGIN_AUTH_LENENC: u32 = 0x200000;
/// `SERVER_MORE_RESULTS_EXISTS` status flag.
pub const MORE_RESULTS: u16 = 0x0008;
/// `utf8mb4_general_ci`.
pub const CHARSET_UTF8MB4: u8 = 45;

/// Why bytes from the server cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A packet announced more than [`MAX_PACKET`] bytes.
    #[error("MySQL packet of {0} bytes is larger than the {MAX_PACKET}-byte limit")]
    TooLarge(usize),
    /// The bytes break the protocol.
    #[error("malformed MySQL packet: {0}")]
    Malformed(&'static str),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One packet: its sequence id and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Sequence id.
    pub seq: u8,
    /// Payload.
    pub payload: Bytes,
}

/// Frames packets (both directions).
#[derive(Debug, Clone, Default)]
pub struct PacketCodec;

impl Decoder for PacketCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = usize::from(src[0]) | usize::from(src[1]) << 8 | usize::from(src[2]) << 16;
        if len > MAX_PACKET {
            return Err(CodecError::TooLarge(len));
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        let seq = src[3];
        src.advance(4);
        Ok(Some(Packet {
            seq,
            payload: src.split_to(len).freeze(),
        }))
    }
}

impl Encoder<Packet> for PacketCodec {
    type Error = CodecError;

    fn encode(&mut self, p: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        let len = p.payload.len();
        if len >= 0xff_ffff {
            return Err(CodecError::TooLarge(len));
        }
        dst.reserve(4 + len);
        dst.put_uint_le(len as u64, 3);
        dst.put_u8(p.seq);
        dst.extend_from_slice(&p.payload);
        Ok(())
    }
}

/// A cursor over a payload that fails instead of panicking.
#[derive(Debug)]
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self
            .0
            .split_first()
            .ok_or(CodecError::Malformed("packet ends early"))?;
        self.0 = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from(self.u16()?) | u32::from(self.u16()?) << 16)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Malformed("field longer than its packet"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn nul_str(&mut self) -> Result<&'a [u8], CodecError> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or(CodecError::Malformed("string without its NUL"))?;
        let s = self.take(end)?;
        self.take(1)?;
        Ok(s)
    }

    /// A length-encoded integer; `None` for the NULL marker 0xFB.
    pub fn lenenc(&mut self) -> Result<Option<u64>, CodecError> {
        Ok(Some(match self.u8()? {
            n @ 0..=0xfa => u64::from(n),
            0xfb => return Ok(None),
            0xfc => u64::from(self.u16()?),
            0xfd => {
                let b = self.take(3)?;
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16
            }
            0xfe => u64::from(self.u32()?) | u64::from(self.u32()?) << 32,
            0xff => return Err(CodecError::Malformed("0xff is not a length")),
        }))
    }

    /// A length-encoded string; `None` for NULL.
    pub fn lenenc_bytes(&mut self) -> Result<Option<&'a [u8]>, CodecError> {
        match self.lenenc()? {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| CodecError::Malformed("huge string"))?;
                self.take(n).map(Some)
            }
        }
    }
}

/// The server's initial handshake (protocol v10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// `server_version` (e.g. `11.8.3-MariaDB-0+deb13u1`).
    pub server_version: String,
    /// Connection (thread) id.
    pub connection_id: u32,
    /// Capability flags.
    pub capabilities: u32,
    /// The 20-byte nonce.
    pub scramble: Vec<u8>,
    /// Default authentication plugin (`mysql_native_password` when not named).
    pub auth_plugin: String,
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// Error number (1045 …).
    pub code: u16,
    /// SQLSTATE, when sent.
    pub state: Option<String>,
    /// Message text.
    pub message: String,
}

/// Parses an ERR packet (first byte 0xFF).
pub fn parse_err(p: &[u8]) -> Result<ServerError, CodecError> {
    let mut r = Reader(p);
    if r.u8()? != 0xff {
        return Err(CodecError::Malformed("not an ERR packet"));
    }
    let code = r.u16()?;
    let state = if r.0.first() == Some(&b'#') && r.0.len() >= 6 {
        let s = r.take(6)?;
        Some(String::from_utf8_lossy(&s[1..]).into_owned())
    } else {
        None
    };
    Ok(ServerError {
        code,
        state,
        message: String::from_utf8_lossy(r.0).into_owned(),
    })
}

/// What the first packet from the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// A v10 handshake.
    Handshake(Handshake),
    /// The server refused at once (too many connections, host blocked).
    Error(ServerError),
}

/// Parses the server's first packet.
pub fn parse_greeting(p: &[u8]) -> Result<Greeting, CodecError> {
    if p.first() == Some(&0xff) {
        return parse_err(p).map(Greeting::Error);
    }
    let mut r = Reader(p);
    if r.u8()? != 10 {
        return Err(CodecError::Malformed(
            "not a protocol v10 handshake (is this a MySQL server?)",
        ));
    }
    let server_version = String::from_utf8_lossy(r.nul_str()?).into_owned();
    let connection_id = r.u32()?;
    let mut scramble = r.take(8)?.to_vec();
    r.take(1)?;
    let mut capabilities = u32::from(r.u16()?);
    let mut auth_plugin = String::from("mysql_native_password");
    if !r.0.is_empty() {
        let _charset = r.u8()?;
        let _status = r.u16()?;
        capabilities |= u32::from(r.u16()?) << 16;
        let data_len = usize::from(r.u8()?);
        r.take(10)?;
        if capabilities & SECURE_CONNECTION != 0 {
            let n = data_len.saturating_sub(8).max(13);
            let part2 = r.take(n.min(r.0.len()))?;
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            scramble.extend_from_slice(part2);
        }
        if capabilities & PLUGIN_AUTH != 0 && !r.0.is_empty() {
            let name = match r.0.iter().position(|&b| b == 0) {
                Some(_) => r.nul_str()?,
                None => r.0,
            };
            auth_plugin = String::from_utf8_lossy(name).into_owned();
        }
    }
    Ok(Greeting::Handshake(Handshake {
        server_version,
        connection_id,
        capabilities,
        scramble,
        auth_plugin,
    }))
}

/// `SSLRequest`: the first 32 bytes of a handshake response.
pub fn ssl_request(capabilities: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(32);
    b.put_u32_le(capabilities);
    b.put_u32_le(MAX_PACKET as u32);
    b.put_u8(CHARSET_UTF8MB4);
    b.put_bytes(0, 23);
    b.freeze()
}

/// What `HandshakeResponse41` carries.
#[derive(Debug, Clone)]
pub struct Response<'a> {
    /// Client capabilities.
    pub capabilities: u32,
    /// User name.
    pub username: &'a str,
    /// Auth plugin data (the scrambled password).
    pub auth: &'a [u8],
    /// Default schema.
    pub database: Option<&'a str>,
    /// Plugin that produced `auth`.
    pub plugin: &'a str,
}

/// `HandshakeResponse41`.
pub fn handshake_response(r: &Response<'_>) -> Bytes {
    let mut b = BytesMut::from(&ssl_request(r.capabilities)[..]);
    b.extend_from_slice(r.username.as_bytes());
    b.put_u8(0);
    if r.capabilities & PLUGIN_AUTH_LENENC != 0 {
        b.put_u8(r.auth.len().min(250) as u8);
    } else {
        b.put_u8(r.auth.len().min(255) as u8);
    }
    b.extend_from_slice(&r.auth[..r.auth.len().min(250)]);
    if let Some(db) = r.database {
        b.extend_from_slice(db.as_bytes());
        b.put_u8(0);
    }
    if r.capabilities & PLUGIN_AUTH != 0 {
        b.extend_from_slice(r.plugin.as_bytes());
        b.put_u8(0);
    }
    b.freeze()
}

/// `mysql_native_password`: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))); empty for no password.
pub fn native_password(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha1::digest(password);
    let h2 = Sha1::digest(h1);
    let mut h = Sha1::new();
    h.update(&nonce[..nonce.len().min(20)]);
    h.update(h2);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// `caching_sha2_password` fast path: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce).
pub fn caching_sha2(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha256::digest(password);
    let h2 = Sha256::digest(h1);
    let mut h = Sha256::new();
    h.update(h2);
    h.update(&nonce[..nonce.len().min(20)]);
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// What the server answered during authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReply {
    /// OK: logged in.
    Ok,
    /// ERR.
    Error(ServerError),
    /// Switch to another plugin with a new nonce.
    Switch {
        /// Plugin name.
        plugin: String,
        /// Its data (nonce), without the trailing NUL.
        data: Vec<u8>,
    },
    /// Plugin-specific data (`caching_sha2_password`: 3 = fast auth OK, 4 = full auth).
    More(Vec<u8>),
}

/// Parses a packet received while authenticating.
pub fn parse_auth_reply(p: &[u8]) -> Result<AuthReply, CodecError> {
    match p.first() {
        Some(0x00) => Ok(AuthReply::Ok),
        Some(0xff) => parse_err(p).map(AuthReply::Error),
        Some(0xfe) => {
            let mut r = Reader(&p[1..]);
            if r.0.is_empty() {
                return Err(CodecError::Malformed(
                    "old-style auth switch (mysql_old_password) is not supported",
                ));
            }
            let plugin = String::from_utf8_lossy(r.nul_str()?).into_owned();
            let data = r.0.strip_suffix(&[0]).unwrap_or(r.0).to_vec();
            Ok(AuthReply::Switch { plugin, data })
        }
        Some(0x01) => Ok(AuthReply::More(p[1..].to_vec())),
        _ => Err(CodecError::Malformed(
            "unexpected packet during authentication",
        )),
    }
}

/// `COM_QUERY`.
pub fn com_query(sql: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + sql.len());
    b.put_u8(0x03);
    b.extend_from_slice(sql.as_bytes());
    b.freeze()
}

/// `COM_QUIT`.
pub fn com_quit() -> Bytes {
    Bytes::from_static(&[0x01])
}

/// Status flags of an OK packet (first byte 0x00 or 0xFE).
pub fn ok_status(p: &[u8]) -> Result<u16, CodecError> {
    let mut r = Reader(p.get(1..).unwrap_or_default());
    r.lenenc()?;
    r.lenenc()?;
    r.u16()
}

/// True for an EOF packet (0xFE, shorter than 9 bytes).
pub fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xfe) && p.len() < 9
}

/// Status flags of an EOF packet.
pub fn eof_status(p: &[u8]) -> u16 {
    match p {
        [_, _, _, a, b, ..] => u16::from_le_bytes([*a, *b]),
        _ => 0,
    }
}

/// The first column of a text result row, as text (`None` for NULL).
pub fn first_column(row: &[u8]) -> Result<Option<String>, CodecError> {
    Ok(Reader(row)
        .lenenc_bytes()?
        .map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// Frames `stream` fed in pieces of the sizes in `splits` (cycled): the packets, and
/// whether framing stopped at an error. For tests and the fuzz target.
pub fn frame_all(stream: &[u8], splits: &[usize]) -> (Vec<Packet>, bool) {
    let mut out = Vec::new();
    let r = crate::check::pieces::decode_in_pieces(
        &mut PacketCodec,
        &mut BytesMut::new(),
        stream,
        splits,
        &mut out,
    );
    (out, r.is_err())
}

/// Runs every payload parser on `p`, ignoring the results (the fuzz target's body).
pub fn parse_any(p: &[u8]) {
    let _ = parse_greeting(p);
    let _ = parse_err(p);
    let _ = parse_auth_reply(p);
    let _ = ok_status(p);
    let _ = eof_status(p);
    let _ = first_column(p);
    let mut r = Reader(p);
    while let Ok(Some(_)) = r.lenenc_bytes() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrambles_match_reference_values() {
        let nonce: Vec<u8> = (1..=20).collect();
        assert_eq!(
            hex::encode(native_password(b"secret", &nonce)),
            "b32bb3a583e1340c0a1108d58b1be49781ad8c2f"
        );
        assert_eq!(
            hex::encode(caching_sha2(b"secret", &nonce)),
            "746ebe205d56a0707acb3e796e834e0dd7b1d61743b26bd5202c7a623230c7c9"
        );
        assert!(native_password(b"", &nonce).is_empty());
    }

    fn greeting() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"11.8.3-MariaDB\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        let caps = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | SSL;
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn parses_a_v10_greeting() {
        let Greeting::Handshake(h) = parse_greeting(&greeting()).unwrap() else {
            panic!("handshake");
        };
        assert_eq!(h.server_version, "11.8.3-MariaDB");
        assert_eq!(h.connection_id, 7);
        assert_eq!(h.scramble, b"abcdefghijklmnopqrst");
        assert_eq!(h.auth_plugin, "mysql_native_password");
        assert!(h.capabilities & SSL != 0);
        // Every truncation fails cleanly.
        let g = greeting();
        for n in 0..g.len() - 1 {
            let _ = parse_greeting(&g[..n]);
        }
        let err = [0xff, 0x10, 0x04, b'T', b'o', b'o'];
        assert_eq!(
            parse_greeting(&err).unwrap(),
            Greeting::Error(ServerError {
                code: 1040,
                state: None,
                message: "Too".into()
            })
        );
    }

    #[test]
    fn framing_caps_before_buffering() {
        let mut c = PacketCodec;
        let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0x00][..]);
        assert!(matches!(c.decode(&mut b), Err(CodecError::TooLarge(_))));
        let mut b = BytesMut::from(&[0x01, 0x00, 0x00, 0x03, 0x00, 0x02][..]);
        let p = c.decode(&mut b).unwrap().unwrap();
        assert_eq!((p.seq, &p.payload[..]), (3, &[0u8][..]));
        assert_eq!(c.decode(&mut b).unwrap(), None);
    }

    #[test]
    fn framing_does_not_depend_on_the_split() {
        let mut stream = vec![3, 0, 0, 0, 1, 2, 3, 0, 0, 0, 1];
        stream.extend_from_slice(&[0xfe, 0xff, 0xff, 0x02]);
        let whole = frame_all(&stream, &[usize::MAX]);
        assert_eq!(whole.0.len(), 2);
        assert!(whole.1, "the last header is over the cap");
        for s in 1..6 {
            assert_eq!(frame_all(&stream, &[s]), whole);
        }
        parse_any(&stream);
    }

    #[test]
    fn auth_replies() {
        assert_eq!(
            parse_auth_reply(b"\xfecaching_sha2_password\0nonce\0").unwrap(),
            AuthReply::Switch {
                plugin: "caching_sha2_password".into(),
                data: b"nonce".to_vec()
            }
        );
        assert_eq!(parse_auth_reply(&[1, 3]).unwrap(), AuthReply::More(vec![3]));
        let e = parse_err(b"\xff\x15\x04#28000Access denied").unwrap();
        assert_eq!((e.code, e.state.as_deref()), (1045, Some("28000")));
        assert!(parse_auth_reply(&[0x42]).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..64);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if rng.bool() && bytes.len() > 3 {
                bytes[..3].copy_from_slice(&[(len - 4) as u8, 0, 0]);
            }
            let split = rng.usize(1..8);
            assert_eq!(
                frame_all(&bytes, &[split]),
                frame_all(&bytes, &[usize::MAX])
            );
            parse_any(&bytes);
        }
    }
}
