//! Fuzz target `nagios_output`: feeds the input to `lifeline::fuzzing::nagios_output`, which calls the
//! agent's own entry point and checks its invariants; `cargo test` replays the corpus
//! through the same function (`tests/fuzz_corpus`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeline::fuzzing::nagios_output(data));
