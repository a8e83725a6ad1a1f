//! Replays every committed fuzz corpus file of the `ami_codec` target through the decoder
//! (the way the fuzz target does), so regressions show up in `cargo test` without libFuzzer.

use lifeline::check::ami::codec::decode_all;

#[test]
fn ami_codec_corpus_replays_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ami_codec");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let data = std::fs::read(&path).expect("read corpus file");
        for splits in [&[usize::MAX][..], &[1], &[3, 1, 7], &[64]] {
            let (frames, _err) = decode_all(&data, splits);
            // Framing must not depend on how the bytes were split.
            let (whole, _) = decode_all(&data, &[usize::MAX]);
            assert_eq!(
                frames,
                whole,
                "{}: split {splits:?} changes framing",
                path.display()
            );
        }
        n += 1;
    }
    assert!(n >= 5, "corpus has only {n} files");
}
