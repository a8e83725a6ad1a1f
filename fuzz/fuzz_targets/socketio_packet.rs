//! Fuzzes the Socket.IO / Engine.IO codec: no decoder panics, decode-encode-decode is
//! stable, and what the agent sends parses back (the checks live in
//! `fuzz/common/socketio_packet.rs`, shared with the corpus replay in `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../common/socketio_packet.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::run(data));
