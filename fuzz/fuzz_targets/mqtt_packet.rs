//! The MQTT decoder (both protocol levels) fed arbitrary bytes in arbitrary pieces: it
//! must never panic, and how the bytes are split must not change the packets it produces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeline::check::mqtt::codec::{Version, decode_all};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the protocol level and the split pattern; the rest is the stream.
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let version = if seed & 1 == 0 { Version::V311 } else { Version::V5 };
    let splits = [usize::from(seed % 11) + 1, usize::from(seed / 11) + 1, 1];
    let pieces = decode_all(version, stream, &splits);
    let whole = decode_all(version, stream, &[usize::MAX]);
    assert_eq!(pieces, whole, "framing depends on how the bytes arrive");
});
