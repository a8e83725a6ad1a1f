//! The SIP wire format, as much of it as an OPTIONS ping and a REGISTER need: a builder
//! for the request and a bounded parser for whatever comes back. Pure functions, no I/O, never panics.
//!
//! Limits: a message (head + body) is at most [`MAX_MESSAGE`] bytes and carries at most
//! [`MAX_HEADERS`] header fields. Compact header names (`v`, `i`, `l`, `f`, `t`, `m`, …)
//! are expanded to their long forms, folded header lines are joined, names compare
//! case-insensitively.

use std::fmt::Write as _;

/// Largest message (start line, headers and body) accepted from a peer.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most header fields accepted in one message.
pub const MAX_HEADERS: usize = 128;
/// The RFC 3261 magic cookie every branch we create starts with.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// How message boundaries are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One message per datagram (UDP): a missing `Content-Length` means "the rest".
    Datagram,
    /// A byte stream (TCP/TLS): `Content-Length` is required (RFC 3261 §18.3).
    Stream,
}

/// Why bytes could not be read as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// More bytes are needed (stream framing only).
    #[error("incomplete message")]
    Incomplete,
    /// The message exceeds [`MAX_MESSAGE`].
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// The message has more than [`MAX_HEADERS`] header fields.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// The bytes are not a SIP message.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `SIP/2.0 200 OK`.
    Response {
        /// Status code (100–699).
        code: u16,
        /// Reason phrase (may be empty).
        reason: String,
    },
    /// `OPTIONS sip:x SIP/2.0`.
    Request {
        /// Method token.
        method: String,
        /// Request-URI.
        uri: String,
    },
}

/// A parsed message. Header names are stored lowercase in their long form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Status or request line.
    pub start: StartLine,
    /// Header fields in order: (lowercase long name, trimmed value).
    pub headers: Vec<(String, String)>,
    /// Body length in bytes (the body itself is not kept).
    pub body_len: usize,
}

impl Message {
    /// The status code, for responses.
    pub fn code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The first value of header `name` (any case, long or compact form).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = long_name(name);
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (any case, long or compact form), in order.
    pub fn headers_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = long_name(name);
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.as_str())
    }

    /// The topmost Via value (the first entry of the first `Via` header).
    pub fn top_via(&self) -> Option<&str> {
        let v = self.header("via")?;
        Some(v.split(',').next().unwrap_or(v).trim())
    }

    /// The `branch` parameter of the topmost Via.
    pub fn via_branch(&self) -> Option<&str> {
        param(self.top_via()?, "branch")
    }

    /// `CSeq` as (number, method).
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("cseq")?;
        let mut it = v.split_ascii_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?;
        it.next().is_none().then_some((n, m))
    }

    /// `Server`, or else `User-Agent`: what the peer says it runs.
    pub fn server(&self) -> Option<&str> {
        self.header("server").or_else(|| self.header("user-agent"))
    }
}

/// A `;name=value` parameter of a header value (name compared case-insensitively).
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Expands a compact header name (RFC 3261 §7.3.3 and later RFCs) and lowercases it.
pub fn long_name(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    let long = match n.as_str() {
        "v" => "via",
        "i" => "call-id",
        "l" => "content-length",
        "f" => "from",
        "t" => "to",
        "m" => "contact",
        "c" => "content-type",
        "e" => "content-encoding",
        "k" => "supported",
        "s" => "subject",
        _ => return n,
    };
    long.to_string()
}

/// Skips CRLFs sent between messages on a stream (RFC 5626 keep-alives). Returns how many
/// leading bytes are line breaks.
pub fn leading_blank(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

/// Parses one message from the start of `buf`; returns it and the bytes it used.
///
/// With [`Framing::Stream`] an unfinished message gives [`ParseError::Incomplete`]; with
/// [`Framing::Datagram`] `buf` is the whole datagram.
pub fn parse(buf: &[u8], framing: Framing) -> Result<(Message, usize), ParseError> {
    let window = &buf[..buf.len().min(MAX_MESSAGE)];
    let head_end = match find(window, b"\r\n\r\n") {
        Some(i) => i,
        None => {
            return Err(if buf.len() >= MAX_MESSAGE {
                ParseError::TooLarge
            } else if framing == Framing::Stream {
                ParseError::Incomplete
            } else {
                ParseError::Malformed("no end of headers")
            });
        }
    };
    if head_end + 4 > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| ParseError::Malformed("not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let start = parse_start(lines.next().unwrap_or(""))?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // A folded continuation of the previous header.
            let Some(last) = headers.last_mut() else {
                return Err(ParseError::Malformed("continuation before any header"));
            };
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError::Malformed("header without colon"))?;
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(ParseError::Malformed("invalid header name"));
        }
        if headers.len() == MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        headers.push((long_name(name), value.trim().to_string()));
    }
    let declared = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| {
            v.parse::<usize>()
                .map_err(|_| ParseError::Malformed("bad Content-Length"))
        })
        .transpose()?;
    let body_start = head_end + 4;
    let body_len = match (declared, framing) {
        (Some(n), _) => n,
        (None, Framing::Datagram) => buf.len() - body_start,
        (None, Framing::Stream) => {
            return Err(ParseError::Malformed("no Content-Length on a stream"));
        }
    };
    let total = body_start
        .checked_add(body_len)
        .ok_or(ParseError::TooLarge)?;
    if total > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    if total > buf.len() {
        return Err(match framing {
            Framing::Stream => ParseError::Incomplete,
            Framing::Datagram => ParseError::Malformed("body shorter than Content-Length"),
        });
    }
    let used = match framing {
        Framing::Stream => total,
        Framing::Datagram => buf.len(),
    };
    Ok((
        Message {
            start,
            headers,
            body_len,
        },
        used,
    ))
}

fn parse_start(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = match code.parse() {
            Ok(c) if code.len() == 3 && (100..=699).contains(&c) => c,
            _ => return Err(ParseError::Malformed("bad status code")),
        };
        return Ok(StartLine::Response {
            code,
            reason: reason.trim().to_string(),
        });
    }
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(uri), Some("SIP/2.0"), None)
            if !method.is_empty() && method.bytes().all(is_token_char) && !uri.is_empty() =>
        {
            Ok(StartLine::Request {
                method: method.to_string(),
                uri: uri.to_string(),
            })
        }
        _ => Err(ParseError::Malformed("bad start line")),
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Transport names as they appear in a Via header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// SIP over WebSocket (RFC 7118).
    Ws,
    /// SIP over secure WebSocket (RFC 7118).
    Wss,
}

impl Transport {
    /// Whether messages travel as WebSocket messages.
    pub fn is_ws(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }

    /// Lowercase name (`udp`, `tcp`, `tls`, `ws`, `wss`), as in URI `transport=` parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    /// Uppercase name for the Via sent-protocol.
    fn via(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Ws => "WS",
            Self::Wss => "WSS",
        }
    }
}

/// Everything that goes into one request (OPTIONS or REGISTER), outside any dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `OPTIONS` or `REGISTER`.
    pub method: &'static str,
    /// Request-URI.
    pub uri: String,
    /// To URI (the target for OPTIONS, the address of record for REGISTER).
    pub to: String,
    /// From URI.
    pub from: String,
    /// From tag.
    pub tag: String,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// Via branch (starts with [`BRANCH_COOKIE`]).
    pub branch: String,
    /// Transport (Via sent-protocol, Contact `transport=`).
    pub transport: Transport,
    /// Our address as the peer should see it (`ip:port`, IPv6 bracketed; a random
    /// `*.invalid` name over WebSocket, RFC 7118 §5.2).
    pub local: String,
    /// Contact URI (without angle brackets).
    pub contact: String,
    /// `Expires` header (REGISTER).
    pub expires: Option<u32>,
    /// `Authorization` / `Proxy-Authorization` (name, value), answering a challenge.
    pub auth: Option<(&'static str, String)>,
    /// User-Agent value.
    pub user_agent: String,
}

impl Request {
    /// The request bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::with_capacity(640);
        // Writing into a String cannot fail.
        let _ = write!(
            s,
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{proto} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{from}>;tag={tag}\r\n\
             To: <{to}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <{contact}>\r\n",
            method = self.method,
            uri = self.uri,
            proto = self.transport.via(),
            local = self.local,
            branch = self.branch,
            from = self.from,
            tag = self.tag,
            to = self.to,
            call_id = self.call_id,
            cseq = self.cseq,
            contact = self.contact,
        );
        if let Some(e) = self.expires {
            let _ = write!(s, "Expires: {e}\r\n");
        }
        if let Some((name, value)) = &self.auth {
            let _ = write!(s, "{name}: {value}\r\n");
        }
        if self.method == "OPTIONS" {
            s.push_str("Accept: application/sdp\r\n");
        }
        let _ = write!(
            s,
            "User-Agent: {}\r\nContent-Length: 0\r\n\r\n",
            self.user_agent
        );
        s.into_bytes()
    }

    /// True if `m` is a response to this request: same top Via branch, Call-ID and CSeq.
    pub fn is_answered_by(&self, m: &Message) -> bool {
        m.code().is_some()
            && m.via_branch() == Some(self.branch.as_str())
            && m.header("call-id") == Some(self.call_id.as_str())
            && m.cseq() == Some((self.cseq, self.method))
    }
}

/// `len` random lowercase hex digits.
pub fn random_hex(len: usize) -> String {
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        let d = fastrand::u8(0..16);
        s.push(char::from_digit(u32::from(d), 16).unwrap_or('0'));
    }
    s
}

/// A fresh RFC 3261 branch: the magic cookie and 20 random hex digits.
pub fn new_branch() -> String {
    format!("{BRANCH_COOKIE}{}", random_hex(20))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Request {
        Request {
            method: "OPTIONS",
            uri: "sip:127.0.0.1:5060".into(),
            to: "sip:127.0.0.1:5060".into(),
            from: "sip:lifeline@127.0.0.1".into(),
            tag: "abc".into(),
            call_id: "cid@127.0.0.1".into(),
            cseq: 7,
            branch: "z9hG4bKdeadbeef".into(),
            transport: Transport::Udp,
            local: "127.0.0.1:40000".into(),
            contact: "sip:lifeline@127.0.0.1:40000;transport=udp".into(),
            expires: None,
            auth: None,
            user_agent: "lifeline/test".into(),
        }
    }

    #[test]
    fn request_has_every_required_header() {
        let req = options().encode();
        let (m, used) = parse(&req, Framing::Stream).expect("own request parses");
        assert_eq!(used, req.len());
        assert_eq!(
            m.start,
            StartLine::Request {
                method: "OPTIONS".into(),
                uri: "sip:127.0.0.1:5060".into()
            }
        );
        assert_eq!(m.via_branch(), Some("z9hG4bKdeadbeef"));
        assert!(param(m.top_via().unwrap_or(""), "rport").is_some());
        assert_eq!(m.header("max-forwards"), Some("70"));
        assert_eq!(m.header("From"), Some("<sip:lifeline@127.0.0.1>;tag=abc"));
        assert_eq!(m.header("to"), Some("<sip:127.0.0.1:5060>"));
        assert_eq!(m.header("call-id"), Some("cid@127.0.0.1"));
        assert_eq!(m.cseq(), Some((7, "OPTIONS")));
        assert_eq!(m.header("accept"), Some("application/sdp"));
        assert!(m.header("contact").is_some());
        assert_eq!(m.header("user-agent"), Some("lifeline/test"));
        assert_eq!(m.header("content-length"), Some("0"));
    }

    #[test]
    fn compact_forms_and_folding() {
        let raw = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1:40000;BRANCH=z9hG4bKdeadbeef;rport=40000, SIP/2.0/UDP other;branch=z9hG4bKx\r\n\
f: <sip:lifeline@127.0.0.1>;tag=abc\r\nt: <sip:127.0.0.1:5060>;tag=srv\r\ni: cid@127.0.0.1\r\nCSeq: 7\r\n  OPTIONS\r\n\
Server: kamailio\r\nl: 0\r\n\r\n";
        let (m, used) = parse(raw, Framing::Stream).expect("parses");
        assert_eq!(used, raw.len());
        assert_eq!(m.code(), Some(200));
        assert_eq!(m.via_branch(), Some("z9hG4bKdeadbeef"));
        assert_eq!(m.cseq(), Some((7, "OPTIONS")));
        assert_eq!(m.server(), Some("kamailio"));
        assert!(options().is_answered_by(&m));
        let mut other = options();
        other.cseq = 8;
        assert!(!other.is_answered_by(&m));
        other = options();
        other.branch = "z9hG4bKx".into();
        assert!(!other.is_answered_by(&m));
    }

    #[test]
    fn stream_framing_uses_content_length() {
        let one = b"SIP/2.0 100 Trying\r\nContent-Length: 4\r\n\r\nabcd";
        let mut two = one.to_vec();
        two.extend_from_slice(b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n");
        let (m, used) = parse(&two, Framing::Stream).expect("first");
        assert_eq!((m.code(), m.body_len, used), (Some(100), 4, one.len()));
        let (m, _) = parse(&two[used..], Framing::Stream).expect("second");
        assert_eq!(m.code(), Some(200));
        assert_eq!(
            parse(&one[..one.len() - 1], Framing::Stream),
            Err(ParseError::Incomplete)
        );
        assert_eq!(
            parse(&one[..10], Framing::Stream),
            Err(ParseError::Incomplete)
        );
        assert!(matches!(
            parse(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", Framing::Stream),
            Err(ParseError::Malformed(_))
        ));
        // A datagram may omit Content-Length.
        assert!(parse(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", Framing::Datagram).is_ok());
    }

    #[test]
    fn limits_hold() {
        let mut many = b"SIP/2.0 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse(&many, Framing::Datagram),
            Err(ParseError::TooManyHeaders)
        );
        let big = format!("SIP/2.0 200 OK\r\nl: {}\r\n\r\n", MAX_MESSAGE);
        assert_eq!(
            parse(big.as_bytes(), Framing::Stream),
            Err(ParseError::TooLarge)
        );
        let huge = format!("SIP/2.0 200 OK\r\nl: {}\r\n\r\n", usize::MAX);
        assert_eq!(
            parse(huge.as_bytes(), Framing::Stream),
            Err(ParseError::TooLarge)
        );
        let endless = vec![b'a'; MAX_MESSAGE];
        assert_eq!(parse(&endless, Framing::Stream), Err(ParseError::TooLarge));
        for bad in [
            &b"SIP/2.0 2000 OK\r\n\r\n"[..],
            b"SIP/2.0 099 x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"SIP/2.0 200 OK\r\n no header\r\n\r\n",
            b"SIP/2.0 200 OK\r\nbad name: x\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\xff: x\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, Framing::Datagram), Err(ParseError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn branches_are_fresh_and_marked() {
        let (a, b) = (new_branch(), new_branch());
        assert!(a.starts_with(BRANCH_COOKIE) && a.len() == 27);
        assert_ne!(a, b);
    }

    /// Replays the committed fuzz corpus (`fuzz/corpus/sip_response`) so `cargo test`
    /// catches parser regressions without libFuzzer; the same checks as the fuzz target.
    #[test]
    fn fuzz_corpus_replays_cleanly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sip_response");
        let entries = std::fs::read_dir(&dir).expect("fuzz corpus directory");
        let mut n = 0;
        let mut parsed = 0;
        for e in entries {
            let data = std::fs::read(e.expect("corpus entry").path()).expect("corpus file");
            n += 1;
            for framing in [Framing::Datagram, Framing::Stream] {
                let Ok((m, used)) = parse(&data, framing) else {
                    continue;
                };
                parsed += 1;
                assert!(used <= data.len() && m.headers.len() <= MAX_HEADERS);
                let _ = (m.code(), m.via_branch(), m.cseq(), m.server());
                if framing == Framing::Stream {
                    assert_eq!(parse(&data[..used], Framing::Stream), Ok((m, used)));
                }
            }
        }
        assert!(
            n >= 3 && parsed >= 3,
            "corpus too small: {n} files, {parsed} parsed"
        );
    }
}
