//! Fuzz target `mysql_packet` (MySQL packet framing and payload parsers): feeds the input to `lifeline::fuzzing::mysql_packet`,
//! which calls the agent's own entry points and checks their invariants; `cargo test`
//! replays the corpus through the same function (`tests/fuzz_corpus`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeline::fuzzing::mysql_packet(data));
