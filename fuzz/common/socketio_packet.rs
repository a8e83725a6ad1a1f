//! What the `socketio_packet` fuzz target checks for one input. `tests/socketio/codec_corpus.rs`
//! includes this same file, so stable `cargo test` replays the committed corpus through
//! exactly these checks.
//!
//! For any bytes (read as lossy UTF-8): no decoder panics; what decodes encodes back to
//! text that decodes to the same value; the open packet's limits hold; and what the agent
//! sends (CONNECT, DISCONNECT, EVENT with an ack id) for any event name and any valid
//! namespace parses back to what was meant.

use lifeline::check::socketio::codec::{
    EventTemplate, Frame, MAX_PING_MS, MAX_SID, PacketType, connect, connect_error_message,
    connect_sid, decode_frame, disconnect, incoming, parse_open, parse_packet, shorten,
    valid_namespace,
};
use serde_json::{Map, Value};

/// Runs every check on one input; panics on a violated invariant.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    // Engine.IO layer.
    if let Some(f) = decode_frame(text) {
        assert_eq!(decode_frame(&f.encode()), Some(f), "frame round trip");
    }
    let _ = incoming(text);
    if let Ok(h) = parse_open(text) {
        assert!(h.engine_sid.chars().count() <= MAX_SID);
        for d in [h.ping_interval, h.ping_timeout] {
            assert!(!d.is_zero() && d.as_millis() <= u128::from(MAX_PING_MS));
        }
    }

    // Socket.IO layer, on the text as a packet and as an Engine.IO message.
    let mut packets = vec![text];
    if let Some(Frame::Message(m)) = decode_frame(text) {
        packets.push(m);
    }
    for s in packets {
        if let Some(p) = parse_packet(s) {
            let again = p.encode();
            assert_eq!(
                parse_packet(&again).as_ref(),
                Some(&p),
                "packet round trip via {again:?}"
            );
            assert!(!p.data.starts_with(|c: char| c.is_ascii_digit()));
            assert!(p.namespace.starts_with('/') && !p.namespace.contains(','));
            let _ = (connect_sid(p.data), connect_error_message(p.data));
        }
    }
    assert!(shorten(text).chars().count() <= 61);

    // What the agent sends: first line the namespace, the rest the event name.
    let (ns, event) = text.split_once('\n').unwrap_or(("/", text));
    if valid_namespace(ns) {
        let id = data.len() as u64;
        let sent = EventTemplate::new(ns, event, Some(&Value::from(id))).packet(id);
        let Some(Frame::Message(m)) = decode_frame(&sent) else {
            panic!("event {sent:?} is not an Engine.IO message");
        };
        let p = parse_packet(m).expect("event parses");
        assert_eq!(
            (p.kind, p.namespace, p.id),
            (PacketType::Event, ns, Some(id))
        );
        let args: Vec<Value> = serde_json::from_str(p.data).expect("event args are JSON");
        assert_eq!(args, [Value::from(event), Value::from(id)]);

        let mut auth = Map::new();
        auth.insert("token".into(), Value::from(event));
        for (sent, kind) in [
            (connect(ns, &Map::new()), PacketType::Connect),
            (connect(ns, &auth), PacketType::Connect),
            (disconnect(ns), PacketType::Disconnect),
        ] {
            let Some(Frame::Message(m)) = decode_frame(&sent) else {
                panic!("{sent:?} is not an Engine.IO message");
            };
            let p = parse_packet(m).expect("control packet parses");
            assert_eq!((p.kind, p.namespace, p.id), (kind, ns, None), "{sent:?}");
        }
    }
}
