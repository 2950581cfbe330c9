//! Keeps the README true: runs every command of its ```console blocks, in order, in a fresh
//! clone of this repository against a fresh `ferry up`, and compares the output line by line.
//! Hashes, UUIDs, times and the checkout path are masked; everything else must match.
//!
//! `FERRY_README_PRINT=1 cargo test --test readme -- --nocapture` prints what the commands
//! really answer, for updating the README.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use regex::Regex;
use support::*;

/// How often the server under test reports its serving counters to its registry.
const REPORT_INTERVAL: &str = "500ms";
/// Three report intervals.
const REPORT_SETTLE: std::time::Duration = std::time::Duration::from_millis(1500);

struct Step {
    command: String,
    expected: Vec<String>,
}

fn console_steps(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_console = !in_console && line.trim() == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: cmd.to_string(),
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_string());
        }
    }
    steps
}

fn normalize(text: &str, checkout: &str, port: u16) -> Vec<String> {
    let uuid = Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    let hex = Regex::new(r"\b[0-9a-f]{8,}\b").unwrap();
    let time = Regex::new(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC").unwrap();
    // Model outputs differ in their last digits between CPUs (AVX2 vs AVX-512 kernels).
    let float = Regex::new(r"-?\d+\.\d{4,}(e-?\d+)?").unwrap();
    // Latencies and rates change from run to run; counts and versions do not.
    let decimal = Regex::new(r"\b\d+\.\d+").unwrap();
    let spaces = Regex::new(r" {2,}").unwrap();
    let date = Regex::new(r"^date: .*$").unwrap();
    // A model's age grows while the walk-through runs.
    let age = Regex::new(r"\b\d+[smhd] old\b").unwrap();
    let mut lines: Vec<String> = text
        .replace('\r', "")
        .replace(checkout, "/home/you/ferry")
        .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:8080")
        .lines()
        .map(|l| {
            let l = float.replace_all(l, "<float>");
            let l = decimal.replace_all(&l, "<n>");
            // Column widths follow the masked values: compare the cells, not the padding.
            let l = spaces.replace_all(&l, "  ");
            let l = uuid.replace_all(&l, "<uuid>");
            let l = hex.replace_all(&l, "<hex>");
            let l = time.replace_all(&l, "<time>");
            let l = date.replace_all(&l, "date: <date>");
            let l = age.replace_all(&l, "<age> old");
            l.trim_end().to_string()
        })
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

#[test]
fn every_console_command_in_the_readme_works_as_shown() {
    let root = repo_root();
    if !root.join(".git").exists() {
        assert!(!in_ci(), "the README test needs a git checkout");
        skipped("not a git checkout");
        return;
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let steps = console_steps(&readme);
    assert!(steps.len() >= 8, "the README lost its walk-through");

    // A fresh clone, as a new user has it; its remote named like the public repository.
    let dir = tempfile::tempdir().unwrap();
    let checkout = dir.path().join("ferry");
    let ok = Command::new("git")
        .args([
            "clone",
            "-q",
            root.to_str().unwrap(),
            checkout.to_str().unwrap(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let ok = Command::new("git")
        .args([
            "remote",
            "set-url",
            "origin",
            "https://github.com/ferry-ml/ferry.git",
        ])
        .current_dir(&checkout)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // The drift monitor judges every 2 s instead of every minute, so the drift walk-through's
    // wait is short; serving reports its counters every 500 ms instead of every 5 s.
    let server = Server::start_with_env(
        &checkout,
        &["up"],
        &[
            ("FERRY_REPLICA_ID", "laptop:8080"),
            ("FERRY_DRIFT_INTERVAL", "2s"),
            ("FERRY_REPORT_INTERVAL", REPORT_INTERVAL),
            // As the online features section says to start it.
            ("FERRY_FEATURE_STORE", "redis://127.0.0.1:6379"),
        ],
    );
    let bin_dir = ferry_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let print = std::env::var("FERRY_README_PRINT").is_ok();
    let checkout_text = checkout.display().to_string();
    let mut failures = Vec::new();
    for step in &steps {
        let command = step
            .command
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", server.port));
        // The analysis sums the replicas' reports, which arrive one report interval late: like a
        // reader between two commands, give the last requests' report time to land.
        if step.command.starts_with("ferry endpoint show") {
            std::thread::sleep(REPORT_SETTLE);
        }
        // A command that waits for something that never comes fails instead of hanging.
        let output = Command::new("timeout")
            .args(["120", "bash", "-c", &command])
            .current_dir(&checkout)
            .env("PATH", &path)
            .env("FERRY_REGISTRY", server.url())
            .env("FERRY_SERVING", server.url())
            .env_remove("FERRY_TOKEN")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        if print {
            println!("$ {}\n{stdout}", step.command);
        }
        if !output.status.success() {
            failures.push(format!(
                "`{}` exited with {}:\n{stdout}{}",
                step.command,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
            continue;
        }
        let got = normalize(&stdout, &checkout_text, server.port);
        let want = normalize(&step.expected.join("\n"), &checkout_text, server.port);
        if got != want {
            failures.push(format!(
                "`{}` printed:\n{}\nbut the README shows:\n{}",
                step.command,
                got.join("\n"),
                want.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
