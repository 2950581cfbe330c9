//! SHA-256 at every hop: bytes that do not hash to the version's `sha256` are never served nor
//! written, whether the registry's copy, serving's cache or a download went bad.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// The one file under `root` named `name`.
fn find_file(root: &Path, name: &str) -> PathBuf {
    let found: Vec<PathBuf> = files_under(root)
        .into_iter()
        .map(|relative| root.join(relative))
        .filter(|p| p.file_name().is_some_and(|n| n == name))
        .collect();
    assert_eq!(found.len(), 1, "{name} under {}: {found:?}", root.display());
    found.into_iter().next().unwrap()
}

/// Flips one byte in the middle of `path`: same size, different hash.
fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

fn request() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("mlp-request.json")).unwrap()).unwrap()
}

/// The status of one inference, retried until `want` or 30 s.
async fn wait_for_status(url: &str, want: u16, serving: &Server) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = client
            .post(format!("{url}/v2/models/fraud/infer"))
            .json(&request())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "inference answered {status}, never {want}:\n{}",
            serving.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_bytes_are_refused_by_serving_its_cache_and_ferry_model_download() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Server::start(dir.path(), &["up", "--no-demo", "--no-serving"]);
    let reg = registry.url();
    push_model(dir.path(), &reg, "fraud", &fixture("mlp.onnx"), &[], &[]);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(fixture("mlp.onnx")).unwrap(),
    ));
    let cache = dir.path().join("cache");
    let serving_args = [
        "serving",
        "--registry",
        reg.as_str(),
        "--model",
        "fraud",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];

    // 1. Serving's cache: a copy changed on disk while serving was stopped is noticed at the
    //    next start, fetched again from the registry, and the model is served.
    let mut serving = Server::start(dir.path(), &serving_args);
    wait_for_status(&serving.url(), 200, &serving).await;
    serving.terminate();
    // Each artifact alone in its own folder (external data could name nothing else).
    let cached = cache.join("models").join(&sha).join("model.onnx");
    assert_eq!(files_under(&cache.join("models")).len(), 1);
    flip_a_byte(&cached);
    let serving = Server::start(dir.path(), &serving_args);
    wait_for_status(&serving.url(), 200, &serving).await;
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read(&cached).unwrap()
        )),
        sha,
        "the cached copy was not replaced"
    );
    assert!(
        serving.logs().contains("downloading the artifact again"),
        "{}",
        serving.logs()
    );
    drop(serving);

    // 2. The registry's copy goes bad.
    let blob = find_file(&dir.path().join("ferry-data"), &sha);
    flip_a_byte(&blob);

    // `ferry model download` writes nothing and says why.
    let out = ferry(
        dir.path(),
        &["model", "download", "fraud:1", "-O", "got.onnx"],
        &[("FERRY_REGISTRY", reg.as_str())],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("hash"), "{}", text(&out));
    let left: Vec<String> = files_under(dir.path())
        .into_iter()
        .filter(|f| f.starts_with("got"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Serving without a cached copy refuses the bad bytes: the model is never served.
    std::fs::remove_dir_all(&cache).unwrap();
    let serving = Server::spawn(dir.path(), &serving_args, &[]);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut said_why = false;
    while Instant::now() < deadline {
        let status = client
            .post(format!("{}/v2/models/fraud/infer", serving.url()))
            .json(&request())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_ne!(status, 200, "a corrupted artifact was served");
        said_why = serving.logs().contains(&sha[..12]) && serving.logs().contains("hash");
        if said_why {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        said_why,
        "no log says the bytes were refused:\n{}",
        serving.logs()
    );
    let stray: Vec<String> = files_under(&cache)
        .into_iter()
        .filter(|f| f.contains(&sha))
        .collect();
    assert!(stray.is_empty(), "bad bytes left in the cache: {stray:?}");
}
