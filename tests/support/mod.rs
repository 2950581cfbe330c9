//! Running the real `ferry` binary in tests: on a free port, in a temporary folder, stopped on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod onnx_bytes;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: `FERRY_BIN` (e.g. a release build installed by CI) or Cargo's build.
pub fn ferry_bin() -> PathBuf {
    std::env::var_os("FERRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ferry")))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

pub use ferry_api::testing::in_ci;

/// The ONNX Runtime library for the processes under test: `ORT_DYLIB_PATH`, else the
/// repository's `.ort/` (fetched by `make ort`).
pub fn onnxruntime() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(path));
    }
    let local = repo_root().join(".ort/libonnxruntime.so");
    local.exists().then_some(local)
}

/// Returns false (and says why) when ONNX Runtime is missing outside CI; fails inside CI.
pub fn have_onnxruntime() -> bool {
    if onnxruntime().is_some() {
        return true;
    }
    assert!(
        !in_ci(),
        "ONNX Runtime is required when CI=true: run `make ort`"
    );
    skipped("no ONNX Runtime (run `make ort`)");
    false
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `ferry` server process.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Server {
    /// Starts `ferry <args…> --listen 127.0.0.1:<port>` in `dir` and waits for `/readyz`.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        Self::start_with_env(dir, args, &[])
    }

    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut server = Self::spawn(dir, args, env);
        server.wait_ready();
        server
    }

    /// Starts the process without waiting for it to be ready.
    pub fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn_on(dir, args, free_port(), env)
    }

    /// [`Server::spawn`] on a chosen port (to restart a server where its clients expect it);
    /// each start logs to its own file.
    pub fn spawn_on(dir: &Path, args: &[&str], port: u16, env: &[(&str, &str)]) -> Server {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let log = dir.join(format!("ferry-{port}-{started}.log"));
        let mut command = Command::new(ferry_bin());
        if let Some(lib) = onnxruntime() {
            command.env("ORT_DYLIB_PATH", lib);
        }
        let child = command
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir)
            .envs(env.iter().copied())
            .env("FERRY_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Server {
            child,
            port,
            dir: dir.to_path_buf(),
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("ferry exited early with {status}:\n{}", self.logs());
            }
            if let Ok(200) = reqwest::blocking_get(&format!("{}/readyz", self.url())) {
                return;
            }
            if Instant::now() > deadline {
                panic!("ferry did not become ready:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!("ferry did not stop after SIGTERM:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resident memory of the process, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap()
            * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ferry <args>` to completion.
pub fn ferry(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(ferry_bin());
    if let Some(lib) = onnxruntime() {
        command.env("ORT_DYLIB_PATH", lib);
    }
    command
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `ferry model push FILE --name NAME -o json EXTRA…` against `registry` (`env` added, e.g. a
/// token); the new version number.
pub fn push_model(
    dir: &Path,
    registry: &str,
    name: &str,
    file: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> i64 {
    let mut args = vec![
        "model",
        "push",
        file.to_str().unwrap(),
        "--name",
        name,
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let mut all_env = vec![("FERRY_REGISTRY", registry)];
    all_env.extend_from_slice(env);
    let out = ferry(dir, &args, &all_env);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["version"]
        .as_i64()
        .unwrap()
}

/// `ferry endpoint set ENDPOINT --model MODEL ARGS…` against `registry`.
pub fn set_endpoint(dir: &Path, registry: &str, endpoint: &str, model: &str, args: &[&str]) {
    let mut all = vec!["endpoint", "set", endpoint, "--model", model];
    all.extend_from_slice(args);
    let out = ferry(dir, &all, &[("FERRY_REGISTRY", registry)]);
    assert!(out.status.success(), "{}", text(&out));
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Files under `root`, relative, sorted.
pub fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Every JSON line of the log files under `root` whose path starts with `prefix` (e.g.
/// `feedback/fraud/` of a `--prediction-log file://…` folder), oldest file first.
pub fn log_lines(root: &Path, prefix: &str) -> Vec<serde_json::Value> {
    files_under(root)
        .iter()
        .filter(|f| f.starts_with(prefix))
        .flat_map(|f| {
            std::fs::read_to_string(root.join(f))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

mod reqwest {
    /// A minimal blocking GET returning the status, without pulling a blocking HTTP client in.
    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        let mut stream = std::net::TcpStream::connect(host)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        stream.read_to_string(&mut buf)?;
        buf.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))
    }
}

pub use ferry_api::testing::skipped;
