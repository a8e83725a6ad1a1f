//! The Asterisk Manager Interface wire format: a [`Decoder`] for what the server sends and
//! an [`Encoder`] for actions.
//!
//! What the server sends (see `docs/ami.md` and the recorded transcript of a real
//! Asterisk 21):
//!
//! * first, one banner line `Asterisk Call Manager/<version>\r\n` with **no** blank line
//!   after it;
//! * then messages: `Key: Value` lines ended by an empty line. Keys are case-insensitive
//!   and may repeat;
//! * legacy `Response: Follows` messages carry raw command output after their headers,
//!   ended by a `--END COMMAND--` line (the output may contain empty lines).
//!
//! Bare `\n` line ends are accepted as well as `\r\n`. Every message is capped at
//! [`MAX_FRAME`] bytes and [`MAX_HEADERS`] lines; past that the decoder fails instead of
//! buffering more. The decoder never panics, whatever the input (it is fuzzed).

use std::fmt;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Largest message (or banner) accepted, in bytes.
pub const MAX_FRAME: usize = 64 * 1024;
/// Most header lines in one message.
pub const MAX_HEADERS: usize = 512;
/// The line that ends a `Response: Follows` body.
pub const END_COMMAND: &str = "--END COMMAND--";

/// Why the byte stream cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A message (or the banner) grew past [`MAX_FRAME`] without ending.
    #[error("AMI message larger than {MAX_FRAME} bytes")]
    TooLarge,
    /// A message has more than [`MAX_HEADERS`] lines.
    #[error("AMI message with more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    /// The stream ended inside a message.
    #[error("connection closed in the middle of an AMI message")]
    Truncated,
    /// An action to send contains a line break or an empty key.
    #[error("invalid AMI action field `{0}`")]
    BadField(String),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One thing the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The greeting line, without its line end (`Asterisk Call Manager/10.0.0`).
    Banner(String),
    /// A response or an event.
    Message(Message),
}

/// A response or event: ordered `Key: Value` headers, plus the raw output of a
/// `Response: Follows` message.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Headers in arrival order (keys as sent; compare them case-insensitively).
    pub headers: Vec<(String, String)>,
    /// Output lines of a `Response: Follows` message (without the end marker).
    pub body: Option<String>,
}

/// Header keys whose values are credentials and never printed.
const SENSITIVE: [&str; 2] = ["secret", "key"];

fn is_sensitive(key: &str) -> bool {
    SENSITIVE.iter().any(|s| key.eq_ignore_ascii_case(s))
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.headers {
            if is_sensitive(k) {
                m.entry(k, &"***");
            } else {
                m.entry(k, v);
            }
        }
        if let Some(b) = &self.body {
            m.entry(&"(body)", b);
        }
        m.finish()
    }
}

impl Message {
    /// The first value of `key` (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// True if `key` equals `value`, both compared case-insensitively.
    pub fn is(&self, key: &str, value: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case(value))
    }

    /// The `Response` value, if this is a response.
    pub fn response(&self) -> Option<&str> {
        self.get("Response")
    }

    /// The `Event` name, if this is an event.
    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// The `ActionID` it answers.
    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID")
    }
}

/// An action to send. Values are written as given: build it only from checked text (no
/// CR/LF); the encoder refuses line breaks rather than let one inject a header.
#[derive(Clone, PartialEq, Eq)]
pub struct Action {
    /// The `Action` name (`Login`, `Ping`, …).
    pub name: String,
    /// The `ActionID` used to correlate the reply.
    pub id: String,
    /// Further headers, in order.
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        m.entry(&"Action", &self.name);
        m.entry(&"ActionID", &self.id);
        for (k, v) in &self.headers {
            if is_sensitive(k) {
                m.entry(k, &"***");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

impl Action {
    /// An action with no headers besides `Action` and `ActionID`.
    pub fn new(name: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            id: id.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = BytesMut::new();
        <AmiCodec as Encoder<&Action>>::encode(&mut AmiCodec::new(), self, &mut out)?;
        Ok(out.to_vec())
    }
}

/// True if `s` can be sent as a header value (no line breaks).
pub fn is_safe_value(s: &str) -> bool {
    !s.contains(['\r', '\n'])
}

/// Stateful codec: the first line decoded is the banner, everything after is messages.
#[derive(Debug, Default, Clone)]
pub struct AmiCodec {
    banner_done: bool,
    /// Bytes before this offset were already searched for a line end (banner) or an
    /// empty line (messages): a peer trickling bytes costs linear, not quadratic, time.
    scanned: usize,
    /// Set while a `Response: Follows` message is incomplete: where to search for its
    /// `--END COMMAND--` marker in the bytes that arrive next.
    follows_from: Option<usize>,
}

impl AmiCodec {
    /// A codec expecting the banner first.
    pub fn new() -> Self {
        Self {
            banner_done: false,
            scanned: 0,
            follows_from: None,
        }
    }
}

/// Finds the end of the line starting at `from`: (index of `\n`, length of the content
/// without the line end).
fn line_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let nl = buf[from..].iter().position(|&b| b == b'\n')? + from;
    let content = if nl > from && buf[nl - 1] == b'\r' {
        nl - 1 - from
    } else {
        nl - from
    };
    Some((nl, content))
}

/// [`line_end`] inside a message: `None` while the line is incomplete, an error once the
/// message (buffered or up to this line) is past [`MAX_FRAME`].
fn frame_line(buf: &[u8], from: usize) -> Result<Option<(usize, usize)>, CodecError> {
    match line_end(buf, from) {
        None if buf.len() > MAX_FRAME => Err(CodecError::TooLarge),
        None => Ok(None),
        Some((nl, _)) if nl + 1 > MAX_FRAME => Err(CodecError::TooLarge),
        Some(line) => Ok(Some(line)),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Splits `Key: Value` (value with leading spaces dropped). A line without a colon is kept
/// whole as a key with an empty value: a monitor must not die on one odd event line.
fn split_header(line: &[u8]) -> (String, String) {
    match line.iter().position(|&b| b == b':') {
        Some(i) => {
            let key = text(&line[..i]).trim().to_string();
            let mut v = &line[i + 1..];
            while let [b' ' | b'\t', rest @ ..] = v {
                v = rest;
            }
            (key, text(v))
        }
        None => (text(line), String::new()),
    }
}

/// True for a line that looks like a header (`Key: value`, key without spaces).
fn looks_like_header(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(i) if i > 0 => line[..i]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'),
        _ => false,
    }
}

impl AmiCodec {
    fn decode_banner(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match line_end(src, 0) {
            // Past the cap whether its end arrived in the same read or not (found by the
            // `ami_codec` fuzz target: one big read used to accept what pieces refused).
            Some((nl, _)) if nl + 1 > MAX_FRAME => Err(CodecError::TooLarge),
            Some((nl, len)) => {
                let banner = text(&src[..len]);
                src.advance(nl + 1);
                self.banner_done = true;
                Ok(Some(Frame::Banner(banner)))
            }
            None if src.len() > MAX_FRAME => Err(CodecError::TooLarge),
            None => Ok(None),
        }
    }

    /// Parses one complete message from the front of `src`, or `None` if more bytes are
    /// needed. Nothing is consumed until a whole message is there.
    fn decode_message(src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        // Blank lines between messages carry nothing; drop them.
        while let Some((nl, 0)) = line_end(src, 0) {
            src.advance(nl + 1);
        }
        if src.is_empty() {
            return Ok(None);
        }
        let mut pos = 0;
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut follows = false;
        loop {
            let Some((nl, len)) = frame_line(src, pos)? else {
                return Ok(None);
            };
            let line = &src[pos..pos + len];
            if len == 0 {
                let msg = Message {
                    headers,
                    body: None,
                };
                src.advance(nl + 1);
                return Ok(Some(Frame::Message(msg)));
            }
            if follows && !looks_like_header(line) {
                // Raw command output from here to the end marker.
                return Self::decode_follows_body(src, pos, headers);
            }
            if headers.len() >= MAX_HEADERS {
                return Err(CodecError::TooManyHeaders);
            }
            let (k, v) = split_header(line);
            if headers.is_empty()
                && k.eq_ignore_ascii_case("Response")
                && v.eq_ignore_ascii_case("Follows")
            {
                follows = true;
            }
            headers.push((k, v));
            pos = nl + 1;
        }
    }

    /// The body of a `Response: Follows` message starts at `start`; it ends at a line
    /// that ends with `--END COMMAND--`, followed by an empty line.
    fn decode_follows_body(
        src: &mut BytesMut,
        start: usize,
        headers: Vec<(String, String)>,
    ) -> Result<Option<Frame>, CodecError> {
        let mut pos = start;
        let mut lines = 0usize;
        loop {
            let Some((nl, len)) = frame_line(src, pos)? else {
                return Ok(None);
            };
            lines += 1;
            if headers.len() + lines > MAX_HEADERS * 8 {
                return Err(CodecError::TooManyHeaders);
            }
            let line = &src[pos..pos + len];
            if line.ends_with(END_COMMAND.as_bytes()) {
                let body_end = pos + len - END_COMMAND.len();
                let mut body = text(&src[start..body_end]);
                if body.ends_with('\n') {
                    body.pop();
                    if body.ends_with('\r') {
                        body.pop();
                    }
                }
                // The empty line that ends the message.
                let mut end = nl + 1;
                match line_end(src, end) {
                    Some((nl2, 0)) => end = nl2 + 1,
                    Some(_) => {}
                    None if src.len() - end < 2 => return Ok(None),
                    None => {}
                }
                src.advance(end);
                return Ok(Some(Frame::Message(Message {
                    headers,
                    body: Some(body),
                })));
            }
            pos = nl + 1;
        }
    }
}

/// True if the buffer starts with a complete `Response: Follows` line.
fn starts_follows(src: &[u8]) -> bool {
    line_end(src, 0).is_some_and(|(_, len)| {
        let (k, v) = split_header(&src[..len]);
        k.eq_ignore_ascii_case("Response") && v.eq_ignore_ascii_case("Follows")
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// True if `b` contains `\n\n` or `\n\r\n`.
fn has_empty_line(b: &[u8]) -> bool {
    b.windows(2).enumerate().any(|(i, w)| {
        w[0] == b'\n' && (w[1] == b'\n' || (w[1] == b'\r' && b.get(i + 2) == Some(&b'\n')))
    })
}

impl Decoder for AmiCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if !self.banner_done {
            let from = self.scanned.min(src.len());
            if !src[from..].contains(&b'\n') {
                self.scanned = src.len();
                return if src.len() > MAX_FRAME {
                    Err(CodecError::TooLarge)
                } else {
                    Ok(None)
                };
            }
            self.scanned = 0;
            return self.decode_banner(src);
        }
        let too_large = |src: &BytesMut| {
            if src.len() > MAX_FRAME {
                Err(CodecError::TooLarge)
            } else {
                Ok(None)
            }
        };
        if let Some(ff) = self.follows_from {
            // An open `Follows` message ends at a marker, which new bytes must bring.
            let from = ff.min(src.len());
            // (Or, while still in its headers, at an empty line.)
            if !contains(&src[from..], END_COMMAND.as_bytes()) && !has_empty_line(&src[from..]) {
                self.follows_from = Some(src.len().saturating_sub(END_COMMAND.len() + 4));
                return too_large(src);
            }
        } else {
            // Otherwise a message is complete only once an empty line ("\n\n" or
            // "\n\r\n") is there (leading empty lines are dropped by `decode_message`).
            let from = self.scanned.min(src.len());
            let starts_blank = src.first() == Some(&b'\n') || src.starts_with(b"\r\n");
            if !starts_blank && !has_empty_line(&src[from..]) {
                self.scanned = src.len().saturating_sub(2);
                return too_large(src);
            }
        }
        match Self::decode_message(src)? {
            Some(f) => {
                self.scanned = 0;
                self.follows_from = None;
                Ok(Some(f))
            }
            None => {
                // Leading empty lines were dropped; what is left has no empty line unless
                // it is an open `Follows` body, which only its marker can end.
                if starts_follows(src) {
                    self.follows_from = Some(src.len().saturating_sub(END_COMMAND.len() + 4));
                } else {
                    self.follows_from = None;
                    self.scanned = src.len().saturating_sub(2);
                }
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(f) => Ok(Some(f)),
            None => {
                // Trailing blank lines are harmless; anything else is a cut message.
                if src.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    src.clear();
                    Ok(None)
                } else {
                    Err(CodecError::Truncated)
                }
            }
        }
    }
}

impl Encoder<&Action> for AmiCodec {
    type Error = CodecError;

    fn encode(&mut self, a: &Action, dst: &mut BytesMut) -> Result<(), CodecError> {
        let fields = [("Action", a.name.as_str()), ("ActionID", a.id.as_str())];
        let all = fields
            .iter()
            .map(|(k, v)| (*k, *v))
            .chain(a.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (k, v) in all.clone() {
            if k.is_empty() || !is_safe_value(k) || k.contains(':') {
                return Err(CodecError::BadField(k.to_string()));
            }
            if !is_safe_value(v) {
                return Err(CodecError::BadField(k.to_string()));
            }
        }
        for (k, v) in all {
            // Asterisk omits an empty ActionID; so do we.
            if k == "ActionID" && v.is_empty() {
                continue;
            }
            dst.extend_from_slice(k.as_bytes());
            dst.extend_from_slice(b": ");
            dst.extend_from_slice(v.as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
        dst.extend_from_slice(b"\r\n");
        Ok(())
    }
}

impl Encoder<Action> for AmiCodec {
    type Error = CodecError;

    fn encode(&mut self, a: Action, dst: &mut BytesMut) -> Result<(), CodecError> {
        <Self as Encoder<&Action>>::encode(self, &a, dst)
    }
}

/// Feeds `data` to a fresh codec in pieces of the given sizes (cycled), then as EOF, and
/// returns what came out. Used by the fuzz target, the corpus replay test and the bench;
/// never panics.
pub fn decode_all(data: &[u8], splits: &[usize]) -> (Vec<Frame>, Option<CodecError>) {
    let mut codec = AmiCodec::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    if let Err(e) =
        crate::check::pieces::decode_in_pieces(&mut codec, &mut buf, data, splits, &mut frames)
    {
        return (frames, Some(e));
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(frames: &[Frame], i: usize) -> &Message {
        match &frames[i] {
            Frame::Message(m) => m,
            f => panic!("frame {i} is {f:?}"),
        }
    }

    const LOGIN_OK: &[u8] = b"Asterisk Call Manager/10.0.0\r\nResponse: Success\r\nActionID: login-1\r\nMessage: Authentication accepted\r\n\r\nEvent: FullyBooted\r\nPrivilege: system,all\r\nUptime: 61\r\nLastReload: 61\r\nStatus: Fully Booted\r\n\r\n";

    #[test]
    fn banner_then_messages_in_any_split() {
        for split in [1, 2, 3, 7, 64, 4096] {
            let (frames, err) = decode_all(LOGIN_OK, &[split]);
            assert!(err.is_none(), "split {split}: {err:?}");
            assert_eq!(frames.len(), 3);
            assert_eq!(
                frames[0],
                Frame::Banner("Asterisk Call Manager/10.0.0".into())
            );
            let m = msg(&frames, 1);
            assert_eq!(m.response(), Some("Success"));
            assert_eq!(m.action_id(), Some("login-1"));
            assert_eq!(msg(&frames, 2).event(), Some("FullyBooted"));
            assert_eq!(msg(&frames, 2).get("status"), Some("Fully Booted"));
        }
    }

    #[test]
    fn keys_are_case_insensitive_and_bare_lf_is_accepted() {
        let (frames, err) = decode_all(
            b"Asterisk Call Manager/2.10.4\nresponse: success\nACTIONID: x\nPing: Pong\n\n",
            &[5],
        );
        assert!(err.is_none());
        let m = msg(&frames, 1);
        assert!(m.is("Response", "Success"));
        assert_eq!(m.action_id(), Some("x"));
        assert_eq!(m.get("PING"), Some("Pong"));
    }

    #[test]
    fn follows_body_may_contain_blank_lines() {
        let data = b"Asterisk Call Manager/1.1\r\nResponse: Follows\r\nPrivilege: Command\r\nActionID: c1\r\nline one\n\nName: looks like a header\n--END COMMAND--\r\n\r\nResponse: Success\r\nActionID: p\r\nPing: Pong\r\n\r\n";
        for split in [1, 3, 1000] {
            let (frames, err) = decode_all(data, &[split]);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(frames.len(), 3);
            let m = msg(&frames, 1);
            assert_eq!(m.action_id(), Some("c1"));
            assert_eq!(
                m.body.as_deref(),
                Some("line one\n\nName: looks like a header")
            );
            assert_eq!(msg(&frames, 2).action_id(), Some("p"));
        }
    }

    #[test]
    fn follows_marker_glued_to_output() {
        let data = b"B\r\nResponse: Follows\r\nActionID: c\r\nout--END COMMAND--\r\n\r\n";
        let (frames, err) = decode_all(data, &[100]);
        assert!(err.is_none());
        assert_eq!(msg(&frames, 1).body.as_deref(), Some("out"));
    }

    #[test]
    fn frames_and_header_counts_are_capped() {
        let mut big = b"Asterisk Call Manager/1\r\nResponse: Success\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_FRAME + 10));
        let (_, err) = decode_all(&big, &[4096]);
        assert!(matches!(err, Some(CodecError::TooLarge)));

        let mut many = b"Asterisk Call Manager/1\r\n".to_vec();
        for i in 0..(MAX_HEADERS + 1) {
            many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let (_, err) = decode_all(&many, &[4096]);
        assert!(matches!(err, Some(CodecError::TooManyHeaders)));

        let mut long_banner = vec![b'A'; MAX_FRAME + 1];
        long_banner.extend_from_slice(b"\r\nResponse: Success\r\n\r\n");
        for splits in [&[usize::MAX][..], &[1000][..]] {
            let (frames, err) = decode_all(&long_banner, splits);
            assert!(frames.is_empty(), "{splits:?}: {frames:?}");
            assert!(
                matches!(err, Some(CodecError::TooLarge)),
                "{splits:?}: {err:?}"
            );
        }
        let endless_banner = vec![b'A'; MAX_FRAME + 1];
        let (_, err) = decode_all(&endless_banner, &[1000]);
        assert!(matches!(err, Some(CodecError::TooLarge)));
    }

    #[test]
    fn error_frame_right_before_eof_is_delivered() {
        let data = b"Asterisk Call Manager/10.0.0\r\nResponse: Error\r\nActionID: l\r\nMessage: Authentication failed\r\n\r\n";
        let (frames, err) = decode_all(data, &[data.len()]);
        assert!(err.is_none());
        assert_eq!(
            msg(&frames, 1).get("Message"),
            Some("Authentication failed")
        );
    }

    #[test]
    fn cut_message_at_eof_is_truncated() {
        let (frames, err) = decode_all(b"Asterisk Call Manager/1\r\nResponse: Succ", &[3]);
        assert_eq!(frames.len(), 1);
        assert!(matches!(err, Some(CodecError::Truncated)));
    }

    #[test]
    fn encodes_actions_like_the_transcript() {
        let a = Action::new("Login", "login-2")
            .header("Username", "monitor")
            .header("Secret", "amisecret")
            .header("Events", "off");
        assert_eq!(
            a.to_bytes().unwrap(),
            b"Action: Login\r\nActionID: login-2\r\nUsername: monitor\r\nSecret: amisecret\r\nEvents: off\r\n\r\n"
        );
        assert_eq!(
            Action::new("Ping", "").to_bytes().unwrap(),
            b"Action: Ping\r\n\r\n"
        );
        assert!(
            Action::new("Ping", "x\r\nAction: Logoff")
                .to_bytes()
                .is_err()
        );
        let dbg = format!("{a:?}");
        assert!(!dbg.contains("amisecret"), "{dbg}");
        let m = Message {
            headers: vec![
                ("Secret".into(), "s3cr3t".into()),
                ("Key".into(), "k3y".into()),
            ],
            body: None,
        };
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("k3y"), "{dbg}");
    }
}
