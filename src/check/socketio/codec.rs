//! The Socket.IO v5 / Engine.IO v4 text wire format, with no I/O (it is fuzzed: the
//! `socketio_packet` target, replayed by `tests/socketio/codec_corpus.rs`).
//!
//! Two layers share one WebSocket text frame:
//!
//! * Engine.IO: one digit for the [`Frame`] type (`0` open, `1` close, `2` ping, `3` pong,
//!   `4` message, `5` upgrade, `6` noop), then a payload. The open packet carries the
//!   [`Handshake`] JSON;
//! * Socket.IO, inside an Engine.IO message: `<type>[<attachments>-][<nsp>,][<ack id>][json]`
//!   ([`Packet`]), e.g. `40` (CONNECT `/`), `40/admin,{"token":"…"}`, `42["ev",{…}]`,
//!   `431[…]` (ACK of id 1), `44{"message":"…"}` (CONNECT_ERROR).
//!
//! Decoding never panics, whatever the input, and what decodes encodes back to text that
//! decodes to the same value.

use std::time::Duration;

use serde_json::{Map, Value};

/// Longest session id kept from a handshake or CONNECT reply, in characters.
pub const MAX_SID: usize = 128;
/// Longest ping interval or timeout accepted from the open packet, in milliseconds (a day).
pub const MAX_PING_MS: u64 = 86_400_000;
/// The Engine.IO pong we answer each ping with.
pub const PONG: &str = "3";

/// One Engine.IO v4 packet (a whole WebSocket text frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `0` + handshake JSON.
    Open(&'a str),
    /// `1`: the server ends the Engine.IO session (any payload is ignored).
    Close,
    /// `2` + optional payload (`probe` only during transport upgrades).
    Ping(&'a str),
    /// `3` + optional payload.
    Pong(&'a str),
    /// `4` + a Socket.IO packet.
    Message(&'a str),
    /// `5` + optional payload.
    Upgrade(&'a str),
    /// `6`: no operation (any payload is ignored).
    Noop,
}

/// Splits an Engine.IO packet into its type and payload; `None` when the first character
/// is not a known type.
pub fn decode_frame(text: &str) -> Option<Frame<'_>> {
    let body = text.get(1..).unwrap_or("");
    Some(match text.as_bytes().first()? {
        b'0' => Frame::Open(body),
        b'1' => Frame::Close,
        b'2' => Frame::Ping(body),
        b'3' => Frame::Pong(body),
        b'4' => Frame::Message(body),
        b'5' => Frame::Upgrade(body),
        b'6' => Frame::Noop,
        _ => return None,
    })
}

impl Frame<'_> {
    /// The frame's text.
    pub fn encode(&self) -> String {
        match self {
            Frame::Open(b) => format!("0{b}"),
            Frame::Close => "1".into(),
            Frame::Ping(b) => format!("2{b}"),
            Frame::Pong(b) => format!("3{b}"),
            Frame::Message(b) => format!("4{b}"),
            Frame::Upgrade(b) => format!("5{b}"),
            Frame::Noop => "6".into(),
        }
    }
}

/// What one text frame means to a connected WebSocket-only client.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming<'a> {
    /// A bare `2`: answer with [`PONG`].
    Ping,
    /// `1`: the Engine.IO session is over.
    Close,
    /// A Socket.IO packet that parsed.
    Packet(Packet<'a>),
    /// Anything else (pongs, noops, probes, unparsable messages): ignored.
    Other,
}

/// Classifies a text frame received after the handshake.
pub fn incoming(text: &str) -> Incoming<'_> {
    match decode_frame(text) {
        Some(Frame::Ping("")) => Incoming::Ping,
        Some(Frame::Close) => Incoming::Close,
        Some(Frame::Message(m)) => parse_packet(m).map_or(Incoming::Other, Incoming::Packet),
        _ => Incoming::Other,
    }
}

/// The Engine.IO open packet's fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Engine.IO session id (at most [`MAX_SID`] characters; empty when absent).
    pub engine_sid: String,
    /// Server ping cadence.
    pub ping_interval: Duration,
    /// How long the server waits for a pong (and we add to the interval).
    pub ping_timeout: Duration,
}

/// Why a frame is not a usable open packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The frame is not of type `0` (the text is shortened).
    #[error("expected the Engine.IO open packet, got `{0}`")]
    NotOpen(String),
    /// The payload is not JSON.
    #[error("open packet is not JSON: {0}")]
    NotJson(String),
    /// `pingInterval` or `pingTimeout` is missing, zero or over a day.
    #[error("open packet has no valid `{0}`")]
    BadField(&'static str),
}

/// Parses `0{"sid":…,"pingInterval":…,"pingTimeout":…}`.
pub fn parse_open(text: &str) -> Result<Handshake, OpenError> {
    let Some(Frame::Open(body)) = decode_frame(text) else {
        return Err(OpenError::NotOpen(shorten(text)));
    };
    let v: Value = serde_json::from_str(body).map_err(|e| OpenError::NotJson(e.to_string()))?;
    let ms = |k: &'static str| {
        v.get(k)
            .and_then(Value::as_u64)
            .filter(|n| *n > 0 && *n <= MAX_PING_MS)
            .map(Duration::from_millis)
            .ok_or(OpenError::BadField(k))
    };
    Ok(Handshake {
        engine_sid: sid_of(&v),
        ping_interval: ms("pingInterval")?,
        ping_timeout: ms("pingTimeout")?,
    })
}

fn sid_of(v: &Value) -> String {
    v.get("sid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(MAX_SID)
        .collect()
}

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// `0`: namespace connect (client) / accepted (server, with `{"sid"}`).
    Connect,
    /// `1`: namespace disconnect.
    Disconnect,
    /// `2`: event (`["name", args…]`).
    Event,
    /// `3`: acknowledgement of an event with an ack id.
    Ack,
    /// `4`: namespace connect refused (`{"message"}`).
    ConnectError,
    /// `5`: event with binary attachments.
    BinaryEvent,
    /// `6`: ack with binary attachments.
    BinaryAck,
}

impl PacketType {
    /// The type's digit on the wire.
    pub fn digit(self) -> char {
        match self {
            PacketType::Connect => '0',
            PacketType::Disconnect => '1',
            PacketType::Event => '2',
            PacketType::Ack => '3',
            PacketType::ConnectError => '4',
            PacketType::BinaryEvent => '5',
            PacketType::BinaryAck => '6',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => PacketType::Connect,
            b'1' => PacketType::Disconnect,
            b'2' => PacketType::Event,
            b'3' => PacketType::Ack,
            b'4' => PacketType::ConnectError,
            b'5' => PacketType::BinaryEvent,
            b'6' => PacketType::BinaryAck,
            _ => return None,
        })
    }

    fn is_binary(self) -> bool {
        matches!(self, PacketType::BinaryEvent | PacketType::BinaryAck)
    }
}

/// A Socket.IO packet (the payload of an Engine.IO `4` message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The packet type.
    pub kind: PacketType,
    /// Number of binary attachments (binary types only).
    pub attachments: Option<u64>,
    /// Namespace (`/` when absent).
    pub namespace: &'a str,
    /// Ack id.
    pub id: Option<u64>,
    /// JSON payload text (may be empty; never starts with a digit).
    pub data: &'a str,
}

/// Parses a Socket.IO packet: `<type>[<n>-][<nsp>,][<id>][json]`. `None` for an unknown
/// type, a binary type without its `<n>-`, or a number past `u64`.
pub fn parse_packet(s: &str) -> Option<Packet<'_>> {
    let kind = PacketType::from_byte(*s.as_bytes().first()?)?;
    let mut rest = &s[1..];
    let mut attachments = None;
    if kind.is_binary() {
        let dash = rest.find('-')?;
        if dash == 0 || !rest[..dash].bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        attachments = Some(rest[..dash].parse::<u64>().ok()?);
        rest = &rest[dash + 1..];
    }
    let mut namespace = "/";
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(i) => {
                namespace = &rest[..i];
                rest = &rest[i + 1..];
            }
            None => {
                namespace = rest;
                rest = "";
            }
        }
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 {
        Some(rest[..digits].parse::<u64>().ok()?)
    } else {
        None
    };
    Some(Packet {
        kind,
        attachments,
        namespace,
        id,
        data: &rest[digits..],
    })
}

impl Packet<'_> {
    /// The packet's text (without the Engine.IO `4`).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.data.len() + self.namespace.len() + 24);
        out.push(self.kind.digit());
        if self.kind.is_binary() {
            out.push_str(&format!("{}-", self.attachments.unwrap_or(0)));
        }
        // The root namespace is implicit, unless the payload would read as one.
        if self.namespace != "/" || (self.id.is_none() && self.data.starts_with('/')) {
            out.push_str(self.namespace);
            out.push(',');
        }
        if let Some(id) = self.id {
            out.push_str(&id.to_string());
        }
        out.push_str(self.data);
        out
    }
}

/// Whether `ns` can be sent as a namespace: starts with `/`, no `,`, `?`, `#` or spaces.
pub fn valid_namespace(ns: &str) -> bool {
    ns.starts_with('/') && !ns.contains([',', '?', '#']) && !ns.chars().any(char::is_whitespace)
}

/// What goes between the packet type and the payload for `namespace`: nothing for `/`,
/// `<nsp>,` otherwise.
pub fn ns_prefix(namespace: &str) -> String {
    if namespace == "/" {
        String::new()
    } else {
        format!("{namespace},")
    }
}

/// The Engine.IO message carrying a namespace CONNECT, with `auth` when not empty.
pub fn connect(namespace: &str, auth: &Map<String, Value>) -> String {
    let mut out = format!("40{}", ns_prefix(namespace));
    if !auth.is_empty() {
        out.push_str(&Value::Object(auth.clone()).to_string());
    }
    out
}

/// The Engine.IO message carrying a namespace DISCONNECT.
pub fn disconnect(namespace: &str) -> String {
    format!("41{}", ns_prefix(namespace))
}

/// The session id in a CONNECT reply's payload (`{"sid":…}`); empty when absent.
pub fn connect_sid(data: &str) -> String {
    serde_json::from_str::<Value>(data)
        .map(|v| sid_of(&v))
        .unwrap_or_default()
}

/// The reason in a CONNECT_ERROR payload (`{"message":…}` in v5), else the shortened
/// payload.
pub fn connect_error_message(data: &str) -> String {
    serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| shorten(data))
}

/// An EVENT message with an ack id, built once and stamped with each id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTemplate {
    head: String,
    args: String,
}

impl EventTemplate {
    /// `42[<nsp>,]<id>["event", data]` for any id.
    pub fn new(namespace: &str, event: &str, data: Option<&Value>) -> Self {
        let mut args = vec![Value::String(event.to_string())];
        if let Some(d) = data {
            args.push(d.clone());
        }
        EventTemplate {
            head: format!("42{}", ns_prefix(namespace)),
            args: Value::Array(args).to_string(),
        }
    }

    /// The message for ack id `id`.
    pub fn packet(&self, id: u64) -> String {
        format!("{}{id}{}", self.head, self.args)
    }
}

/// `s` cut to 60 characters (with `…` when cut), for error messages.
pub fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> Option<(PacketType, &str, Option<u64>, &str)> {
        parse_packet(s).map(|p| (p.kind, p.namespace, p.id, p.data))
    }

    #[test]
    fn packets_parse() {
        use PacketType::*;
        assert_eq!(
            parts("0{\"sid\":\"abc\"}"),
            Some((Connect, "/", None, "{\"sid\":\"abc\"}"))
        );
        assert_eq!(
            parts("3/admin,12[{\"ok\":true}]"),
            Some((Ack, "/admin", Some(12), "[{\"ok\":true}]"))
        );
        assert_eq!(parts("1/admin,"), Some((Disconnect, "/admin", None, "")));
        assert_eq!(parts("1/admin"), Some((Disconnect, "/admin", None, "")));
        let p = parse_packet("51-/x,7[\"e\",{\"_placeholder\":true,\"num\":0}]").unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.namespace, p.id),
            (BinaryEvent, Some(1), "/x", Some(7))
        );
        assert_eq!(
            parts("4{\"message\":\"x\"}"),
            Some((ConnectError, "/", None, "{\"message\":\"x\"}"))
        );
        assert!(parse_packet("").is_none());
        assert!(parse_packet("9").is_none());
        assert!(parse_packet("5x").is_none());
        assert!(parse_packet("5-[]").is_none());
        assert!(parse_packet("3").is_some());
        assert!(parse_packet("399999999999999999999999[]").is_none());
        assert!(parse_packet("5999999999999999999999-[]").is_none());
        // A multi-byte first character is not a type (and does not panic).
        assert!(parse_packet("é2").is_none());
    }

    #[test]
    fn packets_encode_back() {
        for s in [
            "0{\"sid\":\"abc\"}",
            "3/admin,12[{\"ok\":true}]",
            "1/admin,",
            "2[\"ev\",1]",
            "4{\"message\":\"x\"}",
            "51-/x,7[\"e\",{\"_placeholder\":true,\"num\":0}]",
            "612-3[]",
        ] {
            assert_eq!(parse_packet(s).unwrap().encode(), s);
        }
        // Equivalent spellings come back canonical, and still mean the same packet.
        for (s, canon) in [
            ("1/admin", "1/admin,"),
            ("2/,[1]", "2[1]"),
            ("2007[]", "27[]"),
        ] {
            let p = parse_packet(s).unwrap();
            assert_eq!(p.encode(), canon);
            assert_eq!(parse_packet(canon), Some(p));
        }
        // A root-namespace payload that looks like a namespace keeps its `/,`.
        let p = parse_packet("2/,/b").unwrap();
        assert_eq!((p.namespace, p.data), ("/", "/b"));
        assert_eq!(parse_packet(&p.encode()), Some(p));
    }

    #[test]
    fn frames_decode_and_encode() {
        assert_eq!(decode_frame("2"), Some(Frame::Ping("")));
        assert_eq!(decode_frame("2probe"), Some(Frame::Ping("probe")));
        assert_eq!(decode_frame("1bye"), Some(Frame::Close));
        assert_eq!(decode_frame("6"), Some(Frame::Noop));
        assert_eq!(decode_frame("40"), Some(Frame::Message("0")));
        assert_eq!(decode_frame(""), None);
        assert_eq!(decode_frame("7"), None);
        assert_eq!(decode_frame("ü"), None);
        for s in ["0{}", "1", "2", "3probe", "42[\"a\"]", "5", "6"] {
            assert_eq!(decode_frame(s).unwrap().encode(), s);
        }
        assert_eq!(incoming("2"), Incoming::Ping);
        assert_eq!(incoming("2probe"), Incoming::Other);
        assert_eq!(incoming("1"), Incoming::Close);
        assert_eq!(incoming("3"), Incoming::Other);
        assert_eq!(incoming("4x"), Incoming::Other);
        assert!(matches!(incoming("431[]"), Incoming::Packet(p) if p.id == Some(1)));
    }

    #[test]
    fn open_packet_parses_and_rejects_garbage() {
        let h = parse_open(r#"0{"sid":"s1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#).unwrap();
        assert_eq!(h.engine_sid, "s1");
        assert_eq!(h.ping_interval, Duration::from_millis(25000));
        assert_eq!(h.ping_timeout, Duration::from_millis(20000));
        assert_eq!(
            parse_open("40").unwrap_err().to_string(),
            "expected the Engine.IO open packet, got `40`"
        );
        assert!(matches!(parse_open("0{"), Err(OpenError::NotJson(_))));
        assert_eq!(
            parse_open(r#"0{"sid":"s"}"#).unwrap_err(),
            OpenError::BadField("pingInterval")
        );
        assert_eq!(
            parse_open(r#"0{"pingInterval":0,"pingTimeout":1}"#).unwrap_err(),
            OpenError::BadField("pingInterval")
        );
        assert_eq!(
            parse_open(r#"0{"pingInterval":1,"pingTimeout":86400001}"#).unwrap_err(),
            OpenError::BadField("pingTimeout")
        );
        let long = format!(
            r#"0{{"sid":"{}","pingInterval":1,"pingTimeout":1}}"#,
            "x".repeat(500)
        );
        assert_eq!(parse_open(&long).unwrap().engine_sid.len(), MAX_SID);
    }

    #[test]
    fn builders_make_what_the_parser_reads() {
        let mut auth = Map::new();
        assert_eq!(connect("/", &auth), "40");
        auth.insert("token".into(), Value::String("t".into()));
        assert_eq!(connect("/admin", &auth), r#"40/admin,{"token":"t"}"#);
        assert_eq!(disconnect("/"), "41");
        assert_eq!(disconnect("/admin"), "41/admin,");
        let t = EventTemplate::new("/admin", "ping", Some(&serde_json::json!({"n": 1})));
        let text = t.packet(17);
        assert_eq!(text, r#"42/admin,17["ping",{"n":1}]"#);
        let p = parse_packet(&text[1..]).unwrap();
        assert_eq!(
            (p.kind, p.namespace, p.id),
            (PacketType::Event, "/admin", Some(17))
        );
        assert_eq!(EventTemplate::new("/", "e", None).packet(0), r#"420["e"]"#);
        assert_eq!(connect_sid(r#"{"sid":"abc"}"#), "abc");
        assert_eq!(connect_sid("garbage"), "");
        assert_eq!(
            connect_error_message(r#"{"message":"unauthorized","data":{"reason":"x"}}"#),
            "unauthorized"
        );
        assert_eq!(connect_error_message("nope"), "nope");
        assert!(valid_namespace("/admin") && valid_namespace("/"));
        assert!(!valid_namespace("admin") && !valid_namespace("/a,b") && !valid_namespace("/a b"));
        assert_eq!(shorten(&"é".repeat(61)), format!("{}…", "é".repeat(60)));
    }
}
