//! Fuzz target `token_answer`: feeds the input to `lifeline::fuzzing::token_answer`, which calls the
//! agent's own entry point and checks its invariants; `cargo test` replays the corpus
//! through the same function (`tests/fuzz_corpus`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeline::fuzzing::token_answer(data));
