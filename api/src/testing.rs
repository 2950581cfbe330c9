//! What every crate's tests share about their environment (feature `testing`, dev-only): one
//! definition of "running in CI" and one way to report a skipped test.
//!
//! Outside CI a test whose real component (PostgreSQL, Redis, RabbitMQ, ONNX Runtime, the
//! S3 server) is missing skips itself with [`skipped`]; in CI the same absence fails it, so
//! nothing silently drops out of the suite there.

use std::io::Write;

/// Whether the tests run in CI: `CI=true` (GitHub Actions, `.ci/run`) or `CI=1` both count.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Says a test is skipped and why: on stderr (shown with `--nocapture`) and, when
/// scripts/test.sh set `FERRY_TEST_SKIP_LOG`, in that file, which it lists at the end of the run
/// (the test harness hides the output of tests that pass).
pub fn skipped(why: &str) {
    eprintln!("SKIPPED: {why}");
    if let Some(path) = std::env::var_os("FERRY_TEST_SKIP_LOG")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        // One write per line: tests running at once append without interleaving.
        let test = std::thread::current().name().unwrap_or("?").to_string();
        let _ = file.write_all(format!("{test}: {why}\n").as_bytes());
    }
}
