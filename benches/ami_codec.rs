//! AMI codec throughput: frames decoded per second from a realistic stream (Ping replies,
//! events, CoreStatus replies), fed as one buffer and as 1460-byte TCP segments; and
//! actions encoded per second. Run: `cargo bench --bench ami_codec`.

// Benchmarks and test harnesses time whole processes and wait for peers from plain
// threads: std's clock is the right one here (clippy.toml bans it in the agent's async code).
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lifeline::check::ami::codec::{Action, AmiCodec, Frame};
use tokio_util::codec::{Decoder, Encoder};

fn stream(frames: usize) -> Vec<u8> {
    let mut out = b"Asterisk Call Manager/10.0.0\r\n".to_vec();
    for i in 0..frames {
        let f = match i % 3 {
            0 => format!("Response: Success\r\nActionID: lifeline-{i}\r\nPing: Pong\r\nTimestamp: 1795298765.628404\r\n\r\n"),
            1 => "Event: PeerStatus\r\nPrivilege: system,all\r\nChannelType: PJSIP\r\nPeer: PJSIP/100\r\nPeerStatus: Reachable\r\n\r\n".to_string(),
            _ => format!("Response: Success\r\nActionID: lifeline-{i}\r\nCoreStartupDate: 2026-11-21\r\nCoreStartupTime: 22:05:03\r\nCoreReloadDate: 2026-11-21\r\nCoreReloadTime: 22:05:03\r\nCoreCurrentCalls: 0\r\nCoreProcessedCalls: 0\r\n\r\n"),
        };
        out.extend_from_slice(f.as_bytes());
    }
    out
}

fn decode(data: &[u8], segment: usize) -> usize {
    let mut codec = AmiCodec::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut n = 0;
    for chunk in data.chunks(segment) {
        buf.extend_from_slice(chunk);
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            if let Frame::Message(m) = f {
                black_box(m.action_id());
            }
            n += 1;
        }
    }
    n
}

fn measure(name: &str, units: &str, mut f: impl FnMut() -> usize) {
    f(); // warm up
    let start = Instant::now();
    let mut total = 0usize;
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(2) || rounds < 3 {
        total += f();
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<40} {:>12.0} {units}/s  ({rounds} rounds, {total} {units})",
        total as f64 / secs
    );
}

fn main() {
    let frames = 100_000;
    let data = stream(frames);
    println!(
        "stream: {} frames, {} bytes ({:.0} bytes/frame)",
        frames + 1,
        data.len(),
        data.len() as f64 / (frames + 1) as f64
    );
    measure("decode, one buffer", "frames", || decode(&data, data.len()));
    measure("decode, 1460-byte segments", "frames", || {
        decode(&data, 1460)
    });
    measure("decode, 64-byte pieces", "frames", || decode(&data, 64));
    let mut codec = AmiCodec::new();
    let action = Action::new("Ping", "lifeline-123456");
    measure("encode Ping action", "actions", || {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        for _ in 0..10_000 {
            let _ = <AmiCodec as Encoder<&Action>>::encode(&mut codec, &action, &mut buf);
            if buf.len() > 60_000 {
                buf.clear();
            }
        }
        10_000
    });
}
