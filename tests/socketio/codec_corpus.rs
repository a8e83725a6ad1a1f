//! Replays every committed corpus file of the `socketio_packet` fuzz target through the same
//! checks the target runs (`fuzz/common/socketio_packet.rs`), so regressions show up in
//! stable `cargo test` without libFuzzer.

#[path = "../../fuzz/common/socketio_packet.rs"]
pub(crate) mod checks;

#[test]
fn socketio_packet_corpus_replays_through_the_fuzz_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/socketio_packet");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let data = std::fs::read(&path).expect("read corpus file");
        let run = std::panic::catch_unwind(|| checks::run(&data));
        assert!(run.is_ok(), "{}: fuzz check failed", path.display());
        n += 1;
    }
    assert!(n >= 12, "corpus has only {n} files");
}
