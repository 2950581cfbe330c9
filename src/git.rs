//! `--git auto`: the commit and remote of the repository the command runs in.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The training code's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitInfo {
    /// Full 40-hex commit of HEAD.
    pub commit: String,
    /// URL of the `origin` remote (or the first remote), with credentials removed.
    pub repo: Option<String>,
    /// Whether tracked files have uncommitted changes.
    pub dirty: bool,
}

/// Reads HEAD, the remote URL and whether the tree is dirty, for the repository containing `dir`.
///
/// # Errors
/// When `git` is missing or `dir` is not inside a repository with a commit.
pub fn inspect(dir: &Path) -> Result<GitInfo> {
    let commit = git(dir, &["rev-parse", "--verify", "HEAD"])
        .context("--git auto needs a git repository with at least one commit")?;
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("git rev-parse HEAD returned `{commit}`, not a SHA-1 commit");
    }
    let repo = git(dir, &["remote", "get-url", "origin"])
        .ok()
        .or_else(|| {
            git(dir, &["remote"])
                .ok()
                .and_then(|remotes| remotes.lines().next().map(str::to_string))
                .and_then(|first| git(dir, &["remote", "get-url", &first]).ok())
        })
        .map(|url| strip_credentials(&url));
    // Untracked files do not change what the commit reproduces; modified tracked files do.
    let status = git(dir, &["status", "--porcelain", "--untracked-files=no"])?;
    Ok(GitInfo {
        commit: commit.to_ascii_lowercase(),
        repo,
        dirty: !status.is_empty(),
    })
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot run `git`; is it installed?")?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Removes `user:password@` from an https remote, so a token in a remote URL never reaches the
/// registry.
pub fn strip_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn inspect_reads_head_remote_and_dirtiness() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run(d, &["init", "-q"]);
        std::fs::write(d.join("train.py"), "print(1)\n").unwrap();
        run(d, &["add", "train.py"]);
        run(d, &["commit", "-q", "-m", "init"]);
        run(
            d,
            &[
                "remote",
                "add",
                "origin",
                "https://user:tok@example.com/ml/fraud.git",
            ],
        );
        let info = inspect(d).unwrap();
        assert_eq!(info.commit.len(), 40);
        assert_eq!(
            info.repo.as_deref(),
            Some("https://example.com/ml/fraud.git")
        );
        assert!(!info.dirty);
        std::fs::write(d.join("train.py"), "print(2)\n").unwrap();
        assert!(inspect(d).unwrap().dirty);
        std::fs::write(d.join("untracked.txt"), "x").unwrap();
        run(d, &["checkout", "-q", "train.py"]);
        assert!(
            !inspect(d).unwrap().dirty,
            "untracked files do not make a tree dirty"
        );
    }

    #[test]
    fn inspect_outside_a_repository_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", inspect(dir.path()).unwrap_err());
        assert!(err.contains("git repository"), "{err}");
    }
}
