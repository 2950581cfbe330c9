//! End-to-end tests of `ferry registry` / `ferry up` as a process: memory under a 1 GiB upload,
//! clients that vanish, crashes mid-upload, start-up refusals, and the real S3 + PostgreSQL flags.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::*;

const BOUNDARY: &str = "e2e-boundary-91c2";

fn multipart_head() -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"big.onnx\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes()
}

fn multipart_tail() -> Vec<u8> {
    format!("\r\n--{BOUNDARY}--\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_upload_keeps_the_registry_memory_flat() {
    const WEIGHTS: usize = 1024 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    // The registry alone: `ferry up`'s serving half would (rightly) download and load the model.
    let server = Server::start(dir.path(), &["up", "--no-demo", "--no-serving"]);
    let (prefix, suffix) = onnx_bytes::identity_model_parts(WEIGHTS);
    let head = multipart_head();
    let tail = multipart_tail();
    let model_len = prefix.len() + WEIGHTS + suffix.len();
    let total = head.len() + model_len + tail.len();

    // The expected hash, computed the same streaming way.
    let mut hasher = Sha256::new();
    hasher.update(&prefix);
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..WEIGHTS / zeros.len() {
        hasher.update(&zeros);
    }
    hasher.update(&suffix);
    let expected_sha = hex::encode(hasher.finalize());

    let baseline = server.rss();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), server.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kb) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next())
                        .and_then(|kb| kb.parse::<u64>().ok())
                {
                    peak.fetch_max(kb * 1024, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let chunks = std::iter::once(bytes::Bytes::from([head, prefix].concat()))
        .chain((0..WEIGHTS / zeros.len()).map(|_| bytes::Bytes::from(vec![0u8; 1024 * 1024])))
        .chain(std::iter::once(bytes::Bytes::from([suffix, tail].concat())))
        .map(Ok::<_, std::io::Error>);
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/models/big/versions", server.url()))
        .header("x-ferry-client", "test")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("content-length", total.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let status = response.status();
    let version: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{version}");
    assert_eq!(version["size"], model_len);
    assert_eq!(version["sha256"], expected_sha);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!(
        "1 GiB upload: baseline RSS {} MiB, peak growth {} MiB",
        baseline >> 20,
        growth >> 20
    );
    assert!(
        growth < 64 * 1024 * 1024,
        "the registry grew by {} MiB during a 1 GiB upload",
        growth >> 20
    );
}

#[test]
fn a_client_that_disconnects_mid_upload_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["up", "--no-demo"]);
    let model = std::fs::read(fixture("mlp.onnx")).unwrap();
    let mut body = multipart_head();
    body.extend_from_slice(&model);
    body.extend_from_slice(&multipart_tail());
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "POST /api/v1/models/vanished/versions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         X-Ferry-Client: test\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..body.len() / 2]).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    let blobs = dir.path().join("ferry-data/blobs");
    let mut leftovers = files_under(&blobs);
    for _ in 0..100 {
        if leftovers.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        leftovers = files_under(&blobs);
    }
    assert_eq!(
        leftovers,
        Vec::<String>::new(),
        "a partial upload stayed on disk"
    );
    let list = ferry(
        dir.path(),
        &["model", "list", "-o", "json", "--registry", &server.url()],
        &[],
    );
    let page: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(page["items"], serde_json::json!([]));
}

#[test]
fn a_crash_in_the_middle_of_an_upload_leaves_no_partial_model_visible() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["up", "--no-demo"]);
    let model = std::fs::read(fixture("mlp.onnx")).unwrap();
    let mut body = multipart_head();
    body.extend_from_slice(&model);
    body.extend_from_slice(&multipart_tail());
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "POST /api/v1/models/crash/versions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         X-Ferry-Client: test\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..body.len() * 3 / 4]).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.kill9();
    let server = Server::start(dir.path(), &["up", "--no-demo"]);
    let show = ferry(
        dir.path(),
        &["model", "show", "crash", "--registry", &server.url()],
        &[],
    );
    assert_eq!(show.status.code(), Some(3), "{}", text(&show));
    // Nothing at a published key; a staging file may remain for `gc`, but never under blobs/sha256.
    let published = files_under(&dir.path().join("ferry-data/blobs/blobs/sha256"));
    assert!(
        published.iter().all(|f| f.contains('#')),
        "a partial blob was published: {published:?}"
    );
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["up", "--no-demo"]);
    let status = server.terminate();
    assert!(status.success(), "{status}\n{}", server.logs());
    assert!(server.logs().contains("stopped"), "{}", server.logs());
}

#[test]
fn the_registry_refuses_to_listen_beyond_loopback_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(dir.path(), &["up", "--listen", "0.0.0.0:0"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let msg = text(&out);
    assert!(
        msg.contains("refusing to listen on 0.0.0.0:0 without API tokens"),
        "{msg}"
    );
    // With a token it starts (stopped right away by the test).
    let port = free_port();
    let mut command = std::process::Command::new(ferry_bin());
    if let Some(lib) = onnxruntime() {
        command.env("ORT_DYLIB_PATH", lib);
    }
    let mut child = command
        .args(["up", "--no-demo", "--listen", &format!("0.0.0.0:{port}")])
        .env("FERRY_TOKENS", "admin:0123456789abcdef0123")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    assert!(up, "{}", String::from_utf8_lossy(&output.stderr));
    // The token never appears in the logs.
    assert!(!String::from_utf8_lossy(&output.stderr).contains("0123456789abcdef0123"));
}

#[test]
fn the_registry_refuses_a_database_that_is_behind_until_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(dir.path(), &["registry", "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("run `ferry registry migrate`"),
        "{}",
        text(&out)
    );
    let out = ferry(dir.path(), &["registry", "migrate"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let migrations = std::fs::read_dir(repo_root().join("registry/migrations"))
        .unwrap()
        .count();
    assert!(
        text(&out).contains(&format!("applied {migrations} migration(s)")),
        "{}",
        text(&out)
    );
    let out = ferry(dir.path(), &["registry", "migrate"], &[]);
    assert!(text(&out).contains("up to date"), "{}", text(&out));
    let server = Server::start(dir.path(), &["registry"]);
    let list = ferry(
        dir.path(),
        &["model", "list", "--registry", &server.url()],
        &[],
    );
    assert!(list.status.success(), "{}", text(&list));
}

/// SQLite is single-replica: a second registry on the same database file is refused, naming
/// the process that serves it, while `ferry registry gc` and `migrate` still run beside it;
/// once the first one stops, the file can be served again.
#[test]
fn a_second_registry_on_the_same_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::start(dir.path(), &["up", "--no-demo", "--no-serving"]);
    let started = std::time::Instant::now();
    let second = ferry(dir.path(), &["registry", "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(
        text(&second).contains(&format!(
            "another process (pid {}) already serves the SQLite database",
            first.pid()
        )) && text(&second).contains("PostgreSQL"),
        "{}",
        text(&second)
    );
    // It waited a little for a registry that might be exiting, not forever.
    assert!(started.elapsed() < Duration::from_secs(30));
    let up = ferry(
        dir.path(),
        &["up", "--no-demo", "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(up.status.code(), Some(1), "{}", text(&up));
    for maintenance in [&["registry", "gc"][..], &["registry", "migrate"]] {
        let out = ferry(dir.path(), maintenance, &[]);
        assert!(out.status.success(), "{maintenance:?}: {}", text(&out));
    }
    first.terminate();
    let again = Server::start(dir.path(), &["registry"]);
    let list = ferry(
        dir.path(),
        &["model", "list", "--registry", &again.url()],
        &[],
    );
    assert!(list.status.success(), "{}", text(&list));
}

#[test]
fn the_cli_exit_codes_tell_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let token = "write:ferry-e2e-write-token-1";
    let server =
        Server::start_with_env(dir.path(), &["up", "--no-demo"], &[("FERRY_TOKENS", token)]);
    let url = server.url();
    let good = [
        ("FERRY_TOKEN", "ferry-e2e-write-token-1"),
        ("FERRY_REGISTRY", url.as_str()),
    ];
    let mlp = fixture("mlp.onnx");
    let mlp = mlp.to_str().unwrap();
    let out = ferry(dir.path(), &["model", "push", mlp, "--name", "m"], &good);
    assert!(out.status.success(), "{}", text(&out));
    let out = ferry(dir.path(), &["model", "show", "ghost"], &good);
    assert_eq!(out.status.code(), Some(3), "not found: {}", text(&out));
    let out = ferry(
        dir.path(),
        &["model", "show", "m:1"],
        &[("FERRY_REGISTRY", url.as_str())],
    );
    assert_eq!(out.status.code(), Some(5), "no token: {}", text(&out));
    let out = ferry(
        dir.path(),
        &[
            "model",
            "push",
            mlp,
            "--name",
            "m",
            "--idempotency-key",
            "k",
        ],
        &good,
    );
    assert!(out.status.success(), "{}", text(&out));
    let other = fixture("two_inputs.onnx");
    let out = ferry(
        dir.path(),
        &[
            "model",
            "push",
            other.to_str().unwrap(),
            "--name",
            "m",
            "--idempotency-key",
            "k",
        ],
        &good,
    );
    assert_eq!(out.status.code(), Some(4), "conflict: {}", text(&out));
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let out = ferry(
        dir.path(),
        &["model", "push", junk.to_str().unwrap(), "--name", "m"],
        &good,
    );
    assert_eq!(out.status.code(), Some(6), "rejected: {}", text(&out));
    assert!(
        text(&out).contains("not a valid ONNX model"),
        "{}",
        text(&out)
    );
    let out = ferry(
        dir.path(),
        &["model", "list"],
        &[("FERRY_REGISTRY", "http://127.0.0.1:1")],
    );
    assert_eq!(out.status.code(), Some(7), "unreachable: {}", text(&out));
    let out = ferry(dir.path(), &["model", "push"], &good);
    assert_eq!(out.status.code(), Some(2), "usage: {}", text(&out));
    let out = ferry(dir.path(), &["model", "show", "m:1", "-o", "json"], &good);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 1);
    // The token never shows up in the server's logs.
    assert!(!server.logs().contains("ferry-e2e-write-token-1"));
}

#[test]
fn git_auto_records_the_commit_and_refuses_a_dirty_tree() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["up", "--no-demo"]);
    let repo = dir.path().join("training");
    std::fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("train.py"), "fit()\n").unwrap();
    std::fs::write(repo.join("train.csv"), "a,b\n1,2\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "train"]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://example.com/ml/fraud.git",
    ]);
    let registry = [("FERRY_REGISTRY", server.url())];
    let env: Vec<(&str, &str)> = registry.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mlp = fixture("mlp.onnx");
    let out = ferry(
        &repo,
        &[
            "model",
            "push",
            mlp.to_str().unwrap(),
            "--name",
            "fraud",
            "--git",
            "auto",
            "--data",
            "train.csv",
            "--data-as-of",
            "2026-11-01",
            "-o",
            "json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The data's time is recorded (a perishable model's age counts from it) and shown.
    assert_eq!(v["lineage"]["data"][0]["as_of"], "2026-11-01T00:00:00Z");
    let shown = ferry(&repo, &["model", "show", "fraud:1"], &env);
    assert!(
        text(&shown).contains("as of 2026-11-01 00:00:00 UTC"),
        "{}",
        text(&shown)
    );
    let refused = ferry(
        &repo,
        &[
            "model",
            "push",
            mlp.to_str().unwrap(),
            "--name",
            "fraud",
            "--data-as-of",
            "2026-11-01",
        ],
        &env,
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("--data-as-of dates the training data"),
        "{}",
        text(&refused)
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert_eq!(
        v["lineage"]["git_commit"],
        String::from_utf8_lossy(&head.stdout).trim()
    );
    assert_eq!(v["lineage"]["git_repo"], "https://example.com/ml/fraud.git");
    assert_eq!(
        v["lineage"]["data"][0]["sha256"],
        hex::encode(Sha256::digest(b"a,b\n1,2\n"))
    );
    std::fs::write(repo.join("train.py"), "fit(lr=2)\n").unwrap();
    let out = ferry(
        &repo,
        &[
            "model",
            "push",
            mlp.to_str().unwrap(),
            "--name",
            "fraud",
            "--git",
            "auto",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--allow-dirty"), "{}", text(&out));
    let out = ferry(
        &repo,
        &[
            "model",
            "push",
            mlp.to_str().unwrap(),
            "--name",
            "fraud",
            "--git",
            "auto",
            "--allow-dirty",
            "-o",
            "json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tags"]["git_dirty"], "true");
}

#[test]
fn the_registry_runs_on_postgresql_and_s3_from_its_flags() {
    let Some(endpoint) = std::env::var("FERRY_TEST_S3_ENDPOINT").ok() else {
        assert!(!in_ci(), "FERRY_TEST_S3_ENDPOINT must be set in CI");
        skipped("no S3 server (scripts/test.sh starts one)");
        return;
    };
    let bucket = std::env::var("FERRY_TEST_S3_BUCKET").unwrap();
    let admin = std::env::var("FERRY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("ferry_e2e_{}", std::process::id());
    let psql = |sql: &str| {
        std::process::Command::new("psql")
            .args([admin.as_str(), "-qc", sql])
            .output()
            .unwrap()
    };
    let created = psql(&format!("CREATE DATABASE {db}"));
    if !created.status.success() {
        assert!(!in_ci(), "PostgreSQL unavailable in CI: {}", text(&created));
        skipped("PostgreSQL unavailable");
        return;
    }
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{db}"));
    let dir = tempfile::tempdir().unwrap();
    let blob_url = format!("s3://{bucket}/e2e-{}", std::process::id());
    let args = [
        "--database-url",
        url.as_str(),
        "--blob-url",
        blob_url.as_str(),
        "--s3-endpoint",
        endpoint.as_str(),
        "--s3-region",
        "us-east-1",
        "--s3-allow-http",
        "true",
    ];
    let migrate: Vec<&str> = ["registry", "migrate"]
        .iter()
        .copied()
        .chain(args)
        .collect();
    let out = ferry(dir.path(), &migrate, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("PostgreSQL"), "{}", text(&out));
    assert!(!text(&out).contains("hunter"), "{}", text(&out));
    let serve: Vec<&str> = ["registry"].iter().copied().chain(args).collect();
    let server = Server::start(dir.path(), &serve);
    let registry = server.url();
    let env = [("FERRY_REGISTRY", registry.as_str())];
    let mlp = fixture("mlp.onnx");
    let out = ferry(
        dir.path(),
        &[
            "model",
            "push",
            mlp.to_str().unwrap(),
            "--name",
            "pg",
            "--alias",
            "production",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = ferry(
        dir.path(),
        &["model", "download", "pg@production", "-O", "back.onnx"],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(dir.path().join("back.onnx")).unwrap(),
        std::fs::read(&mlp).unwrap()
    );
    drop(server);
    let _ = psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

#[test]
fn a_feature_view_is_registered_and_a_push_records_it_in_the_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["up", "--no-demo"]);
    let registry = server.url();
    let env = [("FERRY_REGISTRY", registry.as_str())];
    let d = dir.path();
    std::fs::write(
        d.join("customers.csv"),
        "customer_id,age,orders_30d\nc1,34,2\n",
    )
    .unwrap();
    let register = |extra: &[&str]| {
        let mut args = vec![
            "features",
            "register",
            "customers",
            "--entity",
            "customer_id",
            "--feature",
            "age:FP32",
            "--feature",
            "orders_30d:int64",
            "--source",
            "customers.csv",
        ];
        args.extend_from_slice(extra);
        ferry(d, &args, &env)
    };
    let out = register(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("feature view customers:1  sha256:"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("2 feature(s) by customer_id"),
        "{}",
        text(&out)
    );
    // Registering it again is the same version.
    let again = register(&["-o", "json"]);
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["version"], 1);
    assert_eq!(
        again["source"]["sha256"],
        hex::encode(Sha256::digest(b"customer_id,age,orders_30d\nc1,34,2\n"))
    );
    // A type the view cannot hold is refused before anything is sent.
    let bad = ferry(
        d,
        &[
            "features",
            "register",
            "customers",
            "--entity",
            "customer_id",
            "--feature",
            "city:STRING",
        ],
        &env,
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("`STRING` is not one of FP32"),
        "{}",
        text(&bad)
    );

    let shown = ferry(d, &["features", "show", "customers:1"], &env);
    assert!(
        text(&shown).contains("entity:       customer_id"),
        "{}",
        text(&shown)
    );
    assert!(text(&shown).contains("orders_30d"), "{}", text(&shown));
    let listed = ferry(d, &["features", "list"], &env);
    assert!(text(&listed).contains("customers"), "{}", text(&listed));

    let mlp = fixture("mlp.onnx");
    let pushed = ferry(
        d,
        &[
            "model",
            "push",
            mlp.to_str().unwrap(),
            "--name",
            "churn",
            "--feature-view",
            "customers",
            "-o",
            "json",
        ],
        &env,
    );
    assert!(pushed.status.success(), "{}", text(&pushed));
    let v: serde_json::Value = serde_json::from_slice(&pushed.stdout).unwrap();
    assert_eq!(v["lineage"]["feature_view"]["name"], "customers");
    assert_eq!(v["lineage"]["feature_view"]["version"], 1);
    assert_eq!(v["lineage"]["feature_view"]["sha256"], again["sha256"]);
    let show = ferry(d, &["model", "show", "churn:1"], &env);
    assert!(
        text(&show).contains("features:   customers:1  sha256:"),
        "{}",
        text(&show)
    );
    // A view that does not exist stops the push with the registry's 404.
    let missing = ferry(
        d,
        &[
            "model",
            "push",
            mlp.to_str().unwrap(),
            "--name",
            "churn",
            "--feature-view",
            "nobody:3",
        ],
        &env,
    );
    assert_eq!(missing.status.code(), Some(3), "{}", text(&missing));
}
