//! Every input under `fuzz/regressions/<target>/` (findings once fixed, kept so they stay fixed)
//! runs through its target without a panic or a broken invariant; and a short fuzzing run of
//! every target finds nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

#[test]
fn committed_regressions_stay_fixed() {
    ferry_fuzz::quiet_panics();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut ran = 0;
    let mut failures = Vec::new();
    for mut target in ferry_fuzz::targets::all() {
        let dir = root.join(target.name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            if let Err(message) = ferry_fuzz::run_one(target.as_mut(), &input) {
                failures.push(format!("{}: {message}", path.display()));
            }
            ran += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{ran} regression inputs replayed");
}

#[test]
fn a_short_run_of_every_target_finds_nothing() {
    ferry_fuzz::quiet_panics();
    // Longer runs: `cargo run --release -p ferry-fuzz -- --seconds 60` (CI runs one).
    let seconds = std::env::var("FERRY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let mut found = Vec::new();
    for mut target in ferry_fuzz::targets::all() {
        let summary = ferry_fuzz::fuzz(target.as_mut(), Duration::from_secs(seconds), u64::MAX, 42);
        assert!(summary.iterations > 20, "{summary:?}");
        assert!(
            summary.outcomes > 1,
            "the target answers everything the same: {summary:?}"
        );
        for f in summary.findings {
            found.push(format!(
                "{}: {} (input {:?})",
                summary.target,
                f.message,
                String::from_utf8_lossy(&f.input)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
