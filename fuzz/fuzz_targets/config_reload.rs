//! Fuzz target `config_reload`: feeds the input to `lifeline::fuzzing::config_reload`, which
//! loads a running file and then a new one both by taking checks over and in full, and
//! asserts they agree; `cargo test` replays the corpus through the same function
//! (`tests/fuzz_corpus`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeline::fuzzing::config_reload(data));
