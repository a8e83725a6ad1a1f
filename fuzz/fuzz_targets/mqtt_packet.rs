//! Fuzz target `mqtt_packet` (the MQTT decoder): feeds the input to `lifeline::fuzzing::mqtt_packet`,
//! which calls the agent's own entry points and checks their invariants; `cargo test`
//! replays the corpus through the same function (`tests/fuzz_corpus`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeline::fuzzing::mqtt_packet(data));
