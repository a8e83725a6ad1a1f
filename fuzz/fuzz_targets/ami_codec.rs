//! The AMI decoder fed arbitrary bytes in arbitrary pieces: it must never panic, and
//! how the bytes are split must not change the frames it produces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeline::check::ami::codec::decode_all;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the split pattern; the rest is the stream.
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let splits = [usize::from(seed % 13) + 1, usize::from(seed / 13) + 1, 1];
    let (pieces, _) = decode_all(stream, &splits);
    let (whole, _) = decode_all(stream, &[usize::MAX]);
    assert_eq!(pieces, whole, "framing depends on how the bytes arrive");
});
