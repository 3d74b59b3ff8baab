//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz
//! targets' bodies on stable Rust: every input the fuzzer kept, and every
//! crash it once found and we added as a seed, stays fixed.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "{target} has a seed corpus");
}

#[test]
fn manifest_corpus() {
    replay("manifest", stackyard_core::fuzzing::manifest);
}

#[test]
fn package_corpus() {
    replay("package", stackyard_core::fuzzing::package);
}

#[test]
fn plan_corpus() {
    replay("plan", stackyard_core::fuzzing::plan);
}

#[test]
fn names_corpus() {
    replay("names", stackyard_core::fuzzing::names);
}
