//! `ferry-fuzz`: runs the fuzz targets for a while and writes what it finds.
//!
//! ```text
//! cargo run --release -p ferry-fuzz -- --seconds 60            # every target, a minute each
//! cargo run --release -p ferry-fuzz -- oip onnx --seconds 600  # two targets, longer
//! ```
//! Exit status 1 when something was found; each finding is written to `--out` (default
//! `fuzz/findings/`) as `<target>-<sha256 prefix>`, ready to be moved to
//! `fuzz/regressions/<target>/` once fixed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sha2::{Digest, Sha256};

#[derive(Debug, Parser)]
#[command(about = "Mutation fuzzing of Ferry's parsers and validators")]
struct Args {
    /// Targets to run (oip, grpc, onnx, policy, profile, upload, multipart) [default: all].
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seed of the mutations [default: the current time, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Where findings are written.
    #[arg(long, default_value = "fuzz/findings")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    ferry_fuzz::quiet_panics();
    let mut targets = ferry_fuzz::targets::all();
    let names: Vec<&str> = targets.iter().map(|t| t.name()).collect();
    if let Some(unknown) = args.targets.iter().find(|t| !names.contains(&t.as_str())) {
        eprintln!(
            "error: unknown target `{unknown}`; targets: {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    }
    let mut found = 0;
    for target in &mut targets {
        if !args.targets.is_empty() && !args.targets.iter().any(|t| t == target.name()) {
            continue;
        }
        let summary = ferry_fuzz::fuzz(
            target.as_mut(),
            Duration::from_secs(args.seconds),
            u64::MAX,
            seed,
        );
        println!(
            "{:<8} seed {seed}: {} inputs, {} distinct outcomes, corpus {}, {} finding(s)",
            summary.target,
            summary.iterations,
            summary.outcomes,
            summary.corpus,
            summary.findings.len()
        );
        for finding in &summary.findings {
            found += 1;
            let name = format!(
                "{}-{}",
                summary.target,
                &hex::encode(Sha256::digest(&finding.input))[..16]
            );
            let path = args.out.join(&name);
            if let Err(e) = std::fs::create_dir_all(&args.out)
                .and_then(|()| std::fs::write(&path, &finding.input))
            {
                eprintln!("error: cannot write {}: {e}", path.display());
            }
            println!("  FOUND {}: {}", path.display(), finding.message);
        }
    }
    if found > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
