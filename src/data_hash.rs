//! `--data PATH`: content hashes of training data files and folders, streamed, with progress.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// Bytes read at a time while hashing.
const CHUNK: usize = 1024 * 1024;

/// Hashes a file, or a folder as the SHA-256 of its manifest: one `"<sha256>  <relative path>\n"`
/// line per file, sorted by path (the format of `sha256sum`), so the hash changes when any file's
/// content, name or presence changes, and not with file order or timestamps.
///
/// # Errors
/// When the path cannot be read, or a folder holds no files.
pub fn hash_path(path: &Path, progress: &ProgressBar) -> Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read training data {}", path.display()))?;
    if meta.is_file() {
        return hash_file(path, progress);
    }
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in walkdir::WalkDir::new(path).follow_links(true) {
        let entry = entry.with_context(|| format!("walking {}", path.display()))?;
        if entry.file_type().is_file() {
            let rel = entry
                .path()
                .strip_prefix(path)
                .unwrap_or(entry.path())
                .to_string_lossy()
                .replace('\\', "/");
            files.push((rel, entry.path().to_path_buf()));
        }
    }
    if files.is_empty() {
        bail!("training data folder {} holds no files", path.display());
    }
    files.sort();
    let mut manifest = Sha256::new();
    for (rel, full) in &files {
        let digest = hash_file(full, progress)?;
        manifest.update(format!("{digest}  {rel}\n").as_bytes());
    }
    Ok(hex::encode(manifest.finalize()))
}

fn hash_file(path: &Path, progress: &ProgressBar) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        progress.inc(n as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Total size of the files under `paths`, for the progress bar.
pub fn total_size(paths: &[PathBuf]) -> u64 {
    paths
        .iter()
        .flat_map(|p| walkdir::WalkDir::new(p).follow_links(true))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A byte-counting progress bar on standard error; hidden when it is not a terminal.
pub fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>12} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// A spinner with a message on standard error; hidden when it is not a terminal.
pub fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_hashes_to_its_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.csv");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(
            hash_path(&f, &ProgressBar::hidden()).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_folder_hashes_to_its_sorted_manifest_and_changes_with_any_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("b.csv"), b"2").unwrap();
        std::fs::write(d.join("sub/a.csv"), b"1").unwrap();
        let first = hash_path(d, &ProgressBar::hidden()).unwrap();
        // The manifest, computed by hand.
        let line = |content: &[u8], rel: &str| {
            format!("{}  {rel}\n", hex::encode(Sha256::digest(content)))
        };
        let manifest = line(b"2", "b.csv") + &line(b"1", "sub/a.csv");
        assert_eq!(first, hex::encode(Sha256::digest(manifest.as_bytes())));
        std::fs::write(d.join("sub/a.csv"), b"changed").unwrap();
        assert_ne!(first, hash_path(d, &ProgressBar::hidden()).unwrap());
    }

    #[test]
    fn an_empty_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(hash_path(dir.path(), &ProgressBar::hidden()).is_err());
    }
}
