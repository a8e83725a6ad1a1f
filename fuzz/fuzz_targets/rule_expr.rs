//! Fuzz target `rule_expr`: feeds the input to `lifeline::fuzzing::rule_expr`, which calls the
//! agent's own entry point and checks its invariants; `cargo test` replays the corpus
//! through the same function (`tests/fuzz_corpus`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeline::fuzzing::rule_expr(data));
