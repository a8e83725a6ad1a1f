//! Fuzzes the SIP message parser: it must never panic, never claim more bytes than it was
//! given, and agree with itself when a stream-framed message is parsed again on its own.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/check/sip/message.rs"]
mod message;

use message::{Framing, Options, Transport, parse};

fuzz_target!(|data: &[u8]| {
    for framing in [Framing::Datagram, Framing::Stream] {
        let Ok((m, used)) = parse(data, framing) else {
            continue;
        };
        assert!(used <= data.len() && used <= message::MAX_MESSAGE);
        assert!(m.headers.len() <= message::MAX_HEADERS);
        // Every accessor on whatever was parsed.
        let _ = (m.code(), m.top_via(), m.via_branch(), m.cseq(), m.server());
        let _ = (
            m.header("v"),
            m.header("i"),
            m.header("l"),
            m.header("f"),
            m.header("t"),
        );
        let req = Options {
            uri: "sip:127.0.0.1".into(),
            from: "sip:lifeline@127.0.0.1".into(),
            tag: "t".into(),
            call_id: m.header("call-id").unwrap_or("x").into(),
            cseq: m.cseq().map_or(1, |c| c.0),
            branch: m.via_branch().unwrap_or("z9hG4bK").into(),
            transport: Transport::Udp,
            local: "127.0.0.1:5060".into(),
            user_agent: "fuzz".into(),
        };
        let _ = req.is_answered_by(&m);
        if framing == Framing::Stream {
            let again = parse(&data[..used], Framing::Stream);
            assert_eq!(again, Ok((m, used)));
        }
    }
});
