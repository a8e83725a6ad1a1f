//! The MySQL packet framing and every payload parser fed arbitrary bytes: nothing may
//! panic, and framing must not depend on how the bytes arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeline::check::mysql::codec::{frame_all, parse_any};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let splits = [usize::from(seed % 7) + 1, usize::from(seed / 7) + 1, 1];
    let pieces = frame_all(stream, &splits);
    let whole = frame_all(stream, &[usize::MAX]);
    assert_eq!(pieces, whole, "framing depends on how the bytes arrive");
    for p in &whole.0 {
        parse_any(&p.payload);
    }
    // Payloads need not be framed to be parsed.
    parse_any(stream);
});
