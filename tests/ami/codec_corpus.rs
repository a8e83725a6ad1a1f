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
        // As the fuzz target reads it: first byte picks the split pattern.
        let mut cases: Vec<(&[u8], Vec<usize>)> = Vec::new();
        if let Some((&seed, stream)) = data.split_first() {
            let s = [usize::from(seed % 13) + 1, usize::from(seed / 13) + 1, 1];
            cases.push((stream, s.to_vec()));
        }
        // And the whole file as a stream, in a few fixed patterns.
        for s in [vec![1], vec![3, 1, 7], vec![64]] {
            cases.push((&data, s));
        }
        for (stream, splits) in cases {
            let (frames, err) = decode_all(stream, &splits);
            // Framing must not depend on how the bytes were split.
            let (whole, whole_err) = decode_all(stream, &[usize::MAX]);
            assert_eq!(
                frames,
                whole,
                "{}: split {splits:?} changes framing",
                path.display()
            );
            assert_eq!(
                err.is_some(),
                whole_err.is_some(),
                "{}: split {splits:?}",
                path.display()
            );
        }
        n += 1;
    }
    assert!(n >= 5, "corpus has only {n} files");
}
