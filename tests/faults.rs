//! Faults around serving, with the real binaries: the registry killed for a minute under load,
//! the object store down while a new table loads, downloads trickling in slower than the load
//! timeout, and slow clients. Each test keeps traffic flowing through the whole fault and
//! counts every answer: the promise is zero failed requests and convergence afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use support::*;

fn request_body() -> Value {
    let request: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("mlp-request.json")).unwrap())
            .unwrap();
    json!({"inputs": request["inputs"]})
}

/// `mlp.onnx` with a different `doc_string` of `pad` bytes appended: the same graph (so the same
/// answers and signature) under another sha256, so serving has to download it.
fn variant(dir: &Path, tag: &str, pad: usize) -> PathBuf {
    let mut bytes = std::fs::read(fixture("mlp.onnx")).unwrap();
    let doc: Vec<u8> = format!("{tag} ")
        .bytes()
        .chain(std::iter::repeat(b'.'))
        .take(pad)
        .collect();
    // ModelProto field 6 (doc_string), length-delimited; a later singular field wins.
    bytes.push(0x32);
    let mut len = doc.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            bytes.push(byte);
            break;
        }
        bytes.push(byte | 0x80);
    }
    bytes.extend_from_slice(&doc);
    let path = dir.join(format!("mlp-{tag}.onnx"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn push(dir: &Path, registry: &str, file: &Path) -> i64 {
    push_model(dir, registry, "fraud", file, &[], &[])
}

fn endpoint_set(dir: &Path, registry: &str, args: &[&str]) {
    set_endpoint(dir, registry, "fraud", "fraud", args);
}

/// Every answer of the background load, by status and version, and the first failures.
#[derive(Default)]
struct Tally {
    answers: BTreeMap<(u16, String), u64>,
    failures: Vec<String>,
}

impl Tally {
    fn failed(&self) -> u64 {
        self.answers
            .iter()
            .filter(|((status, _), _)| *status != 200)
            .map(|(_, n)| n)
            .sum()
    }

    fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.answers.keys().map(|(_, v)| v.clone()).collect();
        v.dedup();
        v
    }
}

/// `clients` loops posting inferences back to back until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let tasks = (0..clients)
            .map(|_| {
                let (stop, tally, client, url) =
                    (stop.clone(), tally.clone(), client.clone(), url.to_string());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let (status, version, detail) =
                            match client.post(&url).json(&request_body()).send().await {
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    let body: Value = r.json().await.unwrap_or(Value::Null);
                                    let version =
                                        body["model_version"].as_str().unwrap_or("").to_string();
                                    (status, version, body.to_string())
                                }
                                Err(e) => (0, String::new(), e.to_string()),
                            };
                        {
                            let mut t = tally.lock().unwrap();
                            *t.answers.entry((status, version)).or_default() += 1;
                            if status != 200 && t.failures.len() < 10 {
                                t.failures.push(format!("{status}: {detail}"));
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Load { stop, tally, tasks }
    }

    fn snapshot(&self) -> (BTreeMap<(u16, String), u64>, Vec<String>, u64) {
        let t = self.tally.lock().unwrap();
        (t.answers.clone(), t.failures.clone(), t.failed())
    }

    /// Waits until the load has been answered by `version`.
    async fn wait_for_version(&self, version: i64, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            let seen = self
                .tally
                .lock()
                .unwrap()
                .answers
                .contains_key(&(200, version.to_string()));
            if seen {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: version {version} never answered; so far {:?}",
                self.snapshot().0
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.tally)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

fn assert_no_failures(tally: &Tally, serving: &Server) {
    let total: u64 = tally.answers.values().sum();
    assert!(total > 100, "too little load to prove anything: {total}");
    assert_eq!(
        tally.failed(),
        0,
        "failed requests: {:?}, first ones {:?}\nserving log:\n{}",
        tally.answers,
        tally.failures,
        serving.logs()
    );
}

/// What serving's repository index says about `fraud`.
async fn index_reason(serving: &str) -> String {
    let index: Value = reqwest::Client::new()
        .post(format!("{serving}/v2/repository/index"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    index
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "fraud")
        .and_then(|e| e["reason"].as_str())
        .unwrap_or("")
        .to_string()
}

async fn wait_for_reason(serving: &str, contains: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reason = index_reason(serving).await;
        if reason.contains(contains) {
            return reason;
        }
        assert!(
            Instant::now() < deadline,
            "serving never reported a reason containing `{contains}`; last: `{reason}`"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_registry_down_for_a_minute_no_request_fails_and_serving_converges_after() {
    if !have_onnxruntime() {
        return;
    }
    let down_for = Duration::from_secs(
        std::env::var("FERRY_FAULT_REGISTRY_DOWN_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let dir = tempfile::tempdir().unwrap();
    let registry_args = ["up", "--no-demo", "--no-serving"];
    let mut registry = Server::start(dir.path(), &registry_args);
    let reg = registry.url();
    let v1 = push(dir.path(), &reg, &fixture("mlp.onnx"));
    let v2 = push(dir.path(), &reg, &variant(dir.path(), "v2", 4096));
    endpoint_set(dir.path(), &reg, &["--stable", &v1.to_string()]);
    let cache = dir.path().join("cache");
    let serving = Server::start(
        dir.path(),
        &[
            "serving",
            "--registry",
            &reg,
            "--endpoint",
            "fraud",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    let url = format!("{}/v2/models/fraud/infer", serving.url());
    let load = Load::start(&url, 2);
    load.wait_for_version(v1, Duration::from_secs(30), "start")
        .await;

    registry.kill9();
    tokio::time::sleep(down_for).await;
    let (during, failures, failed) = load.snapshot();
    assert_eq!(
        failed, 0,
        "requests failed while the registry was down: {during:?} {failures:?}"
    );

    // Back on the same port with the same data; a policy change made now reaches serving.
    let mut registry = Server::spawn_on(dir.path(), &registry_args, registry.port, &[]);
    registry.wait_ready();
    endpoint_set(dir.path(), &reg, &["--stable", &v2.to_string()]);
    load.wait_for_version(v2, Duration::from_secs(90), "after the registry returned")
        .await;
    let tally = load.finish().await;
    assert_no_failures(&tally, &serving);
    assert_eq!(tally.versions(), vec![v1.to_string(), v2.to_string()]);
    drop(registry);
}

/// `s3s-fs` on a fixed port and folder, so it can be stopped and started again.
struct S3 {
    child: Option<Child>,
    port: u16,
    root: PathBuf,
}

const S3_KEY: &str = "ferryfaults";
const S3_SECRET: &str = "ferryfaultssecret";

impl S3 {
    fn start(root: &Path) -> Option<S3> {
        let found = Command::new("s3s-fs")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            assert!(
                !in_ci(),
                "s3s-fs is required in CI (scripts/test.sh installs it)"
            );
            skipped("s3s-fs is not installed (scripts/test.sh installs it)");
            return None;
        }
        std::fs::create_dir_all(root.join("faults")).unwrap();
        let mut s3 = S3 {
            child: None,
            port: free_port(),
            root: root.to_path_buf(),
        };
        s3.resume();
        Some(s3)
    }

    fn resume(&mut self) {
        let child = Command::new("s3s-fs")
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                S3_KEY,
                "--secret-key",
                S3_SECRET,
            ])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A reverse proxy in front of the registry that can make artifact downloads trickle.
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    trickle: AtomicBool,
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let method = request.method().clone();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let mut upstream = proxy
        .client
        .request(method, format!("{}{path}", proxy.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != axum::http::header::HOST {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(a) => a,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let trickle = proxy.trickle.load(Ordering::Relaxed)
        && path.split('?').next().unwrap().ends_with("/artifact");
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    let stream = answer.bytes_stream();
    let body = if trickle {
        // 256 bytes every 200 ms: about 1.3 KB/s, a store that answers but is far too slow.
        Body::from_stream(
            stream
                .flat_map(|chunk| {
                    let chunk: Bytes = chunk.unwrap_or_default();
                    futures::stream::iter(
                        (0..chunk.len())
                            .step_by(256)
                            .map(move |i| chunk.slice(i..(i + 256).min(chunk.len())))
                            .collect::<Vec<_>>(),
                    )
                })
                .then(|piece| async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, std::io::Error>(piece)
                }),
        )
    } else {
        Body::from_stream(stream)
    };
    response.body(body).unwrap()
}

async fn start_proxy(upstream: &str) -> (String, Arc<Proxy>) {
    let proxy = Arc::new(Proxy {
        upstream: upstream.to_string(),
        client: reqwest::Client::new(),
        trickle: AtomicBool::new(false),
    });
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_errors_and_trickling_downloads_fail_the_load_cleanly_and_keep_the_last_table()
{
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(mut s3) = S3::start(&dir.path().join("s3")) else {
        return;
    };
    let s3_endpoint = format!("http://127.0.0.1:{}", s3.port);
    let credentials = [
        ("AWS_ACCESS_KEY_ID", S3_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
    ];
    let registry = Server::start_with_env(
        dir.path(),
        &[
            "registry",
            "--auto-migrate",
            "true",
            "--blob-url",
            "s3://faults/registry",
            "--s3-endpoint",
            &s3_endpoint,
            "--s3-region",
            "us-east-1",
            "--s3-allow-http",
            "true",
            "--blob-retry-timeout",
            "2s",
        ],
        &credentials,
    );
    let reg = registry.url();
    let v1 = push(dir.path(), &reg, &fixture("mlp.onnx"));
    let v2 = push(dir.path(), &reg, &variant(dir.path(), "v2", 4096));
    // Large enough that trickling it takes far longer than the load timeout below.
    let v3 = push(dir.path(), &reg, &variant(dir.path(), "v3", 64 * 1024));
    endpoint_set(dir.path(), &reg, &["--stable", &v1.to_string()]);

    let (proxied, proxy) = start_proxy(&reg).await;
    let cache = dir.path().join("cache");
    let serving = Server::start(
        dir.path(),
        &[
            "serving",
            "--registry",
            &proxied,
            "--endpoint",
            "fraud",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--load-timeout",
            "3s",
        ],
    );
    let base = serving.url();
    let load = Load::start(&format!("{base}/v2/models/fraud/infer"), 2);
    load.wait_for_version(v1, Duration::from_secs(30), "start")
        .await;

    // The object store goes away; a new table naming version 2 cannot be loaded.
    s3.kill();
    endpoint_set(
        dir.path(),
        &reg,
        &[
            "--stable",
            &v1.to_string(),
            "--canary",
            &v2.to_string(),
            "--weight",
            "0.5",
        ],
    );
    // The registry answers 503 (or its S3 client is still retrying when the load timeout
    // strikes): either way the reason names the version that could not be loaded.
    let reason = wait_for_reason(&base, &format!("version {v2} failed to load")).await;
    // Asked directly, the registry says its object store is unavailable once its retries (2 s
    // here) are spent, and when to ask again; it does not hang for object_store's 3 minutes.
    let asked = Instant::now();
    let direct = reqwest::Client::new()
        .get(format!("{reg}/api/v1/models/fraud/versions/{v2}/artifact"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let waited = asked.elapsed();
    assert_eq!(direct.status(), 503, "after {waited:?}");
    assert_eq!(direct.headers()["retry-after"], "5");
    let problem: Value = direct.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://ferry.dev/problems/object-store-unavailable"
    );
    assert!(
        waited < Duration::from_secs(30),
        "answered after {waited:?}"
    );
    assert!(!reason.contains("secret"), "{reason}");
    let (answers, _, failed) = load.snapshot();
    assert_eq!(failed, 0, "{answers:?}");
    assert!(
        answers.keys().all(|(_, v)| *v == v1.to_string()),
        "only the last good table answers while the new one cannot load: {answers:?}"
    );

    // The store returns: the failed load is retried on its own and the new table goes live.
    s3.resume();
    load.wait_for_version(v2, Duration::from_secs(60), "after the store returned")
        .await;

    // Downloads now trickle in: past the load timeout the load fails, nothing half-written
    // stays in the cache, and versions 1 and 2 keep answering.
    proxy.trickle.store(true, Ordering::Relaxed);
    endpoint_set(
        dir.path(),
        &reg,
        &[
            "--stable",
            &v1.to_string(),
            "--canary",
            &v3.to_string(),
            "--weight",
            "0.5",
        ],
    );
    let reason = wait_for_reason(&base, "load timeout").await;
    assert!(reason.contains(&format!("fraud:{v3}")), "{reason}");
    let (answers, _, failed) = load.snapshot();
    assert_eq!(failed, 0, "{answers:?}");
    assert!(!answers.contains_key(&(200, v3.to_string())), "{answers:?}");
    // The timed-out download's file goes (its writer removes it when the download is dropped,
    // on its own thread, a moment after the timeout). A retry may be downloading meanwhile, so
    // what is checked is that `tmp/` empties between attempts: a leaked file never would.
    let tmp = cache.join("tmp");
    let list = || -> Vec<PathBuf> {
        std::fs::read_dir(&tmp)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut leftovers = list();
    while !leftovers.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        leftovers = list();
    }
    assert!(
        leftovers.is_empty(),
        "partial downloads left: {leftovers:?}"
    );

    // At full speed again, the retry brings version 3 in.
    proxy.trickle.store(false, Ordering::Relaxed);
    load.wait_for_version(v3, Duration::from_secs(60), "at full speed")
        .await;
    let tally = load.finish().await;
    assert_no_failures(&tally, &serving);
    assert_eq!(index_reason(&base).await, "", "the last error clears");
}

/// Opens a connection and sends `prefix`, then nothing more.
fn stall(port: u16, prefix: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(prefix.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// Whether the server closed the connection (EOF, or reset, after an optional answer).
fn closed_by_server(mut stream: TcpStream) -> (bool, String) {
    let mut answer = Vec::new();
    let result = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    match result {
        Ok(_) => (true, text),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => (true, text),
        Err(_) => (false, text),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_do_not_starve_the_others() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &[
            "serving",
            "--model",
            &format!("mlp={}", fixture("mlp.onnx").display()),
            "--request-timeout-ms",
            "2000",
        ],
        &[("FERRY_HEADER_READ_TIMEOUT", "2s")],
    );
    let port = server.port;
    let started = Instant::now();
    // Half a request line, headers that never end, and a body that never comes, many times.
    let mut stalled = Vec::new();
    for _ in 0..100 {
        stalled.push(stall(port, "POST /v2/models/ml"));
        stalled.push(stall(
            port,
            "POST /v2/models/mlp/infer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n",
        ));
        stalled.push(stall(
            port,
            "POST /v2/models/mlp/infer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 100000\r\n\r\n{\"inputs\": [",
        ));
    }
    // Meanwhile everyone else is served.
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let r = client
            .post(format!("{}/v2/models/mlp/infer", server.url()))
            .json(&request_body())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // And every stalled connection is closed by the server within its timeouts.
    let results = tokio::task::spawn_blocking(move || {
        stalled
            .into_iter()
            .map(closed_by_server)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let held = results.iter().filter(|(closed, _)| !closed).count();
    assert_eq!(held, 0, "connections still held open by slow clients");
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "closing took {:?}",
        started.elapsed()
    );
    // A body that never arrives is answered, not silently dropped.
    let body_answers: Vec<&String> = results
        .iter()
        .skip(2)
        .step_by(3)
        .map(|(_, text)| text)
        .collect();
    assert!(
        body_answers.iter().all(|t| t.starts_with("HTTP/1.1 408")),
        "{:?}",
        &body_answers[..3]
    );
}

/// Sends a request's head and `body`, then reads the status line (or `None` while it has none).
fn send_head(port: u16, head: &str, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

fn status_of(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_past_the_buffering_budget_are_refused_before_they_are_read() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "serving",
            "--model",
            &format!("mlp={}", fixture("mlp.onnx").display()),
            "--max-request-size",
            "64KiB",
            "--max-buffered-bodies",
            "64KiB",
        ],
    );
    let port = server.port;
    let post = |length: &str| {
        format!(
            "POST /v2/models/mlp/infer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{length}\r\n"
        )
    };
    // One client declares 60 KiB and sends a little: the budget is nearly spent.
    let holder = send_head(port, &post("content-length: 61440\r\n"), b"{\"inputs\": [");
    std::thread::sleep(Duration::from_millis(300));
    // A declared 10 KiB no longer fits: refused before its body is read.
    let mut declared = send_head(port, &post("content-length: 10240\r\n"), b"");
    let head = status_of(&mut declared);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    // A chunked body is refused as soon as its bytes pass the budget.
    let chunk = vec![b' '; 8192];
    let mut chunked = send_head(port, &post("transfer-encoding: chunked\r\n"), b"");
    for _ in 0..2 {
        // The server may answer and close as soon as the first chunk passes the budget; a
        // write after that fails (broken pipe), and the answer is still there to read.
        let sent = chunked
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|()| chunked.write_all(&chunk))
            .and_then(|()| chunked.write_all(b"\r\n"));
        if sent.is_err() {
            break;
        }
    }
    let head = status_of(&mut chunked);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // The holder gives up; its share returns, and a real request is served.
    holder.shutdown(std::net::Shutdown::Both).unwrap();
    drop(holder);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .post(format!("{}/v2/models/mlp/infer", server.url()))
            .json(&request_body())
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
        assert!(
            Instant::now() < deadline,
            "the holder's share never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP connection to the server from `source` (any 127.0.0.0/8 address is this machine).
async fn connect_from(source: &str, port: u16) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap()
}

/// Whether the server closes `stream` within two seconds without answering.
async fn closed_at_once(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// The status of `GET /v2/health/ready` sent from `source` on a new connection.
async fn status_from(source: &str, port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = connect_from(source, port).await;
    stream
        .write_all(b"GET /v2/health/ready HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("closed without an answer")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_caps_new_connections_are_closed_at_once_and_a_freed_slot_serves() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "serving",
            "--model",
            &format!("mlp={}", fixture("mlp.onnx").display()),
            "--max-connections",
            "4",
            "--max-connections-per-client",
            "2",
            "--header-read-timeout",
            "60s",
        ],
    );
    let port = server.port;
    // Two silent connections from one client fill its share.
    let mut a1 = connect_from("127.0.0.1", port).await;
    let _a2 = connect_from("127.0.0.1", port).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut a3 = connect_from("127.0.0.1", port).await;
    assert!(
        closed_at_once(&mut a3).await,
        "a third connection from one client was kept"
    );
    // Another client is served.
    assert_eq!(status_from("127.0.0.2", port).await, "HTTP/1.1 200 OK");
    // Two more silent clients fill --max-connections: a newcomer is closed at once.
    let _b = connect_from("127.0.0.2", port).await;
    let _c = connect_from("127.0.0.3", port).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut d = connect_from("127.0.0.4", port).await;
    assert!(
        closed_at_once(&mut d).await,
        "a connection past --max-connections was kept"
    );
    // The silent ones are still open (nothing closed them early)…
    assert!(
        !closed_at_once(&mut a1).await,
        "a silent connection was closed before its timeout"
    );
    // …and when one goes, its place serves again.
    drop(a1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_from("127.0.0.4", port).await, "HTTP/1.1 200 OK");
}

/// An HTTP/2 client preface and an empty SETTINGS frame: a connection is set up, no stream ever
/// opened.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_preface_and_idle_connections_are_closed_within_their_timeouts() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &[
            "serving",
            "--model",
            &format!("mlp={}", fixture("mlp.onnx").display()),
            "--idle-timeout",
            "3s",
        ],
        &[("FERRY_HEADER_READ_TIMEOUT", "2s")],
    );
    let port = server.port;
    let started = Instant::now();
    let open = |bytes: &[u8]| {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(bytes).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    };
    let mut kinds: Vec<(&str, TcpStream)> = Vec::new();
    for _ in 0..20 {
        // Sockets that never send a byte: protocol detection has nothing to read.
        kinds.push(("silent", open(b"")));
        // Half of the HTTP/2 preface.
        kinds.push(("half preface", open(b"PRI * HTTP/2.0\r\n")));
        // HTTP/2 set up, no stream ever opened.
        kinds.push(("idle HTTP/2", open(H2_PREFACE_AND_SETTINGS)));
    }
    // HTTP/1 keep-alive connections after one answered request.
    for _ in 0..5 {
        kinds.push((
            "idle keep-alive",
            open(b"GET /v2/health/live HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"),
        ));
    }
    // Meanwhile everyone else is served, over HTTP/1 and HTTP/2.
    let client = reqwest::Client::new();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for c in [&client, &h2, &client, &h2] {
        let r = c
            .post(format!("{}/v2/models/mlp/infer", server.url()))
            .json(&request_body())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Each read on its own thread: every socket waits at most its 30 s read timeout, together.
    let results = tokio::task::spawn_blocking(move || {
        let readers: Vec<_> = kinds
            .into_iter()
            .map(|(kind, stream)| {
                std::thread::spawn(move || {
                    let (closed, text) = closed_by_server(stream);
                    (kind, closed, text, started.elapsed())
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let held: Vec<_> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
    assert!(held.is_empty(), "still open after 30 s: {held:?}");
    for (kind, _, text, at) in &results {
        // Within the timeout (2 s to the first request, 3 s idle) and a little scheduling.
        assert!(*at < Duration::from_secs(12), "{kind} closed after {at:?}");
        if *kind == "idle keep-alive" {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        }
    }
    // A connection whose requests keep coming is not cut: one request a second for longer than
    // both timeouts on one HTTP/2 connection.
    for _ in 0..6 {
        let r = h2
            .post(format!("{}/v2/models/mlp/infer", server.url()))
            .json(&request_body())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
}

/// One HTTP/2 frame as it goes on the wire.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The header block of a POST, HPACK-encoded as literals without indexing (no table, no
/// Huffman: every decoder accepts them).
fn h2_post_headers(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "127.0.0.1"),
        ("content-type", "application/json"),
    ] {
        block.push(0);
        block.push(u8::try_from(name.len()).unwrap());
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// Reads one frame: (type, flags, stream, payload).
fn h2_read_frame(stream: &mut TcpStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok((head[3], head[4], id, payload))
}

/// HTTP/2 streams per connection are bounded: the server announces 128 in its SETTINGS and
/// refuses a 129th stream opened at once (RST_STREAM REFUSED_STREAM) instead of running it,
/// while the 128 before it and other clients go on being served. Without the limit a single
/// connection could open thousands of requests, each buffering its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_gets_at_most_128_streams_at_once() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "serving",
            "--model",
            &format!("mlp={}", fixture("mlp.onnx").display()),
        ],
    );
    let port = server.port;
    let (announced, refused) = tokio::task::spawn_blocking(move || {
        const SETTINGS: u8 = 0x4;
        const HEADERS: u8 = 0x1;
        const RST_STREAM: u8 = 0x3;
        const GOAWAY: u8 = 0x7;
        const END_HEADERS: u8 = 0x4;
        const ACK: u8 = 0x1;
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(H2_PREFACE_AND_SETTINGS).unwrap();
        // The server's SETTINGS: 6-byte entries of (id, value); MAX_CONCURRENT_STREAMS is 0x3.
        let mut announced = None;
        loop {
            let (kind, flags, _, payload) = h2_read_frame(&mut stream).unwrap();
            if kind == SETTINGS && flags & ACK == 0 {
                for entry in payload.chunks_exact(6) {
                    if entry[..2] == [0, 3] {
                        announced =
                            Some(u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]));
                    }
                }
                stream.write_all(&h2_frame(SETTINGS, ACK, 0, &[])).unwrap();
                break;
            }
        }
        // 130 requests at once, none finishing its body: streams 1, 3, … 259.
        let headers = h2_post_headers("/v2/models/mlp/infer");
        let mut burst = Vec::new();
        for i in 0..130u32 {
            burst.extend(h2_frame(HEADERS, END_HEADERS, 2 * i + 1, &headers));
        }
        stream.write_all(&burst).unwrap();
        // Every REFUSED_STREAM (error code 7) reset until the reads fall quiet.
        let mut refused = Vec::new();
        while let Ok((kind, _, id, payload)) = h2_read_frame(&mut stream) {
            assert_ne!(
                kind, GOAWAY,
                "the server gave up the connection: {payload:?}"
            );
            if kind == RST_STREAM && payload == [0, 0, 0, 7] {
                refused.push(id);
            }
            if refused.len() == 2 {
                break;
            }
        }
        (announced, refused)
    })
    .await
    .unwrap();
    assert_eq!(
        announced,
        Some(128),
        "MAX_CONCURRENT_STREAMS in the server's SETTINGS"
    );
    assert_eq!(refused, [257, 259], "only the streams past 128 are refused");
    // Everyone else is still served.
    let r = reqwest::Client::new()
        .post(format!("{}/v2/models/mlp/infer", server.url()))
        .json(&request_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
