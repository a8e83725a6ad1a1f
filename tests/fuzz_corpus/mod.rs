//! Replays every committed corpus file of every fuzz target (`fuzz/corpus/<target>/`)
//! through the same function the target runs (`lifeline::fuzzing`, and
//! `fuzz/common/socketio_packet.rs`), on stable: no panic, and each input done within
//! [`PER_INPUT`] (measured with a deadline around the call).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::socketio::codec_corpus::checks as socketio_checks;

/// Longest one corpus input may take in a debug build (the fuzz campaign's hang limit is
/// 1 s in release; debug code is several times slower, the inputs are small).
const PER_INPUT: Duration = Duration::from_secs(5);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every target with its function.
fn targets() -> Vec<(&'static str, lifeline::fuzzing::Target)> {
    let mut t = lifeline::fuzzing::TARGETS.to_vec();
    t.push(("socketio_packet", socketio_checks::run));
    t
}

fn replay(name: &str, f: lifeline::fuzzing::Target, failures: &mut Vec<String>) -> usize {
    let dir = root().join("corpus").join(name);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let data = std::fs::read(&path).expect("read corpus file");
        let start = Instant::now();
        let run = std::panic::catch_unwind(|| f(&data));
        let took = start.elapsed();
        if run.is_err() {
            failures.push(format!("{}: fuzz check panicked", path.display()));
        }
        if took > PER_INPUT {
            failures.push(format!(
                "{}: took {took:?} (limit {PER_INPUT:?})",
                path.display()
            ));
        }
        n += 1;
    }
    n
}

#[test]
fn every_corpus_file_of_every_target_replays_without_panic() {
    let mut counts = Vec::new();
    let mut failures = Vec::new();
    for (name, f) in targets() {
        let n = replay(name, f, &mut failures);
        assert!(n >= 5, "corpus of {name} has only {n} files");
        counts.push((name, n));
    }
    eprintln!("replayed: {counts:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fuzz_target_has_a_replayed_corpus() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let names: Vec<&str> = targets().iter().map(|t| t.0).collect();
    let mut bins = 0;
    for line in manifest.lines() {
        let Some(v) = line.strip_prefix("name = \"") else {
            continue;
        };
        let bin = v.trim_end_matches('"');
        if bin == "lifeline-fuzz" {
            continue;
        }
        bins += 1;
        assert!(names.contains(&bin), "fuzz target {bin} is not replayed");
        let src = root().join("fuzz_targets").join(format!("{bin}.rs"));
        assert!(src.exists(), "{} missing", src.display());
    }
    assert_eq!(bins, names.len(), "replayed targets without a fuzz target");
}
