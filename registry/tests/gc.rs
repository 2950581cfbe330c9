//! Garbage collection of the blob store (`ferry_registry::gc`): it removes unreferenced blobs and
//! dead uploads' leftovers only, never a referenced blob, and never one a version is about to
//! reference, whatever the interleaving with uploads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../tests/support/onnx_bytes.rs"]
mod onnx_bytes;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use common::*;
use ferry_registry::gc::{self, GarbageKind};
use ferry_registry::upload::UploadSession;
use futures::TryStreamExt;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sha2::{Digest, Sha256};

const NOW: Duration = Duration::ZERO;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A valid ONNX model whose bytes differ from every other one the generator makes.
fn distinct_model(rng: &mut impl Rng, weights: usize) -> Vec<u8> {
    let (prefix, suffix) = onnx_bytes::identity_model_parts(weights);
    let mut noise = vec![0u8; weights];
    rng.fill(&mut noise[..]);
    [prefix, noise, suffix].concat()
}

/// Publishes `bytes` at their final key without recording a version: what an upload that died
/// between publishing and committing leaves.
///
/// A gc racing it may take the staged object first; then it starts again, like a client would.
async fn publish_orphan(app: &TestApp, bytes: &[u8]) -> String {
    let blobs = &app.state.blobs;
    let hash = sha(bytes);
    for _ in 0..100 {
        let mut writer = blobs.stage().await.unwrap();
        writer.put(Bytes::copy_from_slice(bytes)).await.unwrap();
        let Ok(staged) = writer.complete().await else {
            continue;
        };
        if blobs.publish(&staged, &hash).await.is_ok() {
            return hash;
        }
    }
    panic!("could not publish an orphan in 100 attempts");
}

/// The bytes of a version, read back through the API.
async fn artifact(app: &TestApp, model: &str, version: i64) -> (StatusCode, Vec<u8>) {
    let (status, _, body) = app
        .send(
            axum::http::Request::get(format!(
                "/api/v1/models/{model}/versions/{version}/artifact"
            ))
            .body(axum::body::Body::empty())
            .unwrap(),
        )
        .await;
    (status, body.to_vec())
}

async fn read_blob(app: &TestApp, hash: &str) -> Option<Vec<u8>> {
    let read = app.state.blobs.read(hash, None).await.ok()?;
    let chunks: Vec<Bytes> = read.stream.try_collect().await.ok()?;
    Some(chunks.concat())
}

async fn gc_removes_orphans_and_stale_staging_but_never_a_referenced_blob(app: &TestApp) {
    let (status, v1) = app.upload("kept", MLP, None, None).await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    let referenced = v1["sha256"].as_str().unwrap().to_string();
    let orphan = publish_orphan(app, TWO_INPUTS).await;
    // A staging object an upload completed but never published (it died before the rename).
    let mut writer = app.state.blobs.stage().await.unwrap();
    writer.put(Bytes::from_static(b"staged")).await.unwrap();
    let staged = writer.complete().await.unwrap().to_string();
    // A key under blobs/sha256 that is not a hash: not ours to judge.
    app.state
        .blobs
        .put(&["blobs", "sha256", "README"], Bytes::from_static(b"?"))
        .await
        .unwrap();
    // Half-written files of uploads that died, which a local folder holds beside the objects.
    let mut partials = Vec::new();
    if let Some(dir) = app.state.blobs.local_dir() {
        for key in [
            "tmp/1b4e28ba-2fa1-11d2-883f-0016d3cca427#1".to_string(),
            format!("blobs/sha256/{}#1", "c".repeat(64)),
        ] {
            std::fs::write(dir.join(&key), b"half").unwrap();
            partials.push(key);
        }
    }
    let before = app.objects().await;

    // Young garbage is left alone.
    let young = gc::collect(
        &app.state.store,
        &app.state.blobs,
        Duration::from_secs(3600),
        false,
    )
    .await
    .unwrap();
    assert!(young.garbage.is_empty(), "{young:?}");
    assert_eq!(
        young.kept_young.count,
        2 + partials.len() as u64,
        "{young:?}"
    );
    assert_eq!(app.objects().await, before);

    // A dry run lists exactly the garbage and deletes nothing.
    let dry = gc::collect(&app.state.store, &app.state.blobs, NOW, true)
        .await
        .unwrap();
    let mut listed: Vec<(GarbageKind, String)> = dry
        .garbage
        .iter()
        .map(|g| (g.kind, g.key.clone()))
        .collect();
    listed.sort();
    let mut expected = vec![
        (
            GarbageKind::Unreferenced,
            app.state.blobs.blob_path(&orphan).to_string(),
        ),
        (GarbageKind::Staging, staged.clone()),
    ];
    expected.extend(partials.iter().map(|k| (GarbageKind::Partial, k.clone())));
    expected.sort();
    assert_eq!(listed, expected);
    let orphan_item = dry
        .garbage
        .iter()
        .find(|g| g.kind == GarbageKind::Unreferenced)
        .unwrap();
    assert_eq!(orphan_item.sha256.as_deref(), Some(orphan.as_str()));
    assert_eq!(orphan_item.size, TWO_INPUTS.len() as u64);
    assert_eq!(dry.referenced.count, 1);
    assert_eq!(dry.referenced.bytes, MLP.len() as u64);
    assert_eq!(dry.unknown.len(), 1, "{dry:?}");
    assert_eq!(app.objects().await, before, "a dry run deleted something");

    let done = gc::collect(&app.state.store, &app.state.blobs, NOW, false)
        .await
        .unwrap();
    assert_eq!(done.collected, dry.collected);
    assert!(done.failed.is_empty(), "{:?}", done.failed);
    let mut after = app.objects().await;
    after.sort();
    let mut left = vec![
        app.state.blobs.blob_path(&referenced).to_string(),
        app.state.blobs.blob_path("README").to_string(),
    ];
    left.sort();
    assert_eq!(after, left);
    if let Some(dir) = app.state.blobs.local_dir() {
        for key in &partials {
            assert!(!dir.join(key).exists(), "{key} was not collected");
        }
    }
    let (status, bytes) = artifact(app, "kept", 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha(&bytes), referenced);

    // Nothing left to do.
    let again = gc::collect(&app.state.store, &app.state.blobs, NOW, false)
        .await
        .unwrap();
    assert!(again.garbage.is_empty(), "{again:?}");
}

async fn a_version_recorded_between_scan_and_sweep_keeps_its_blob(app: &TestApp) {
    let orphan = publish_orphan(app, TWO_INPUTS).await;
    let plan = gc::scan(&app.state.store, &app.state.blobs, NOW)
        .await
        .unwrap();
    assert_eq!(plan.candidates.len(), 1, "{plan:?}");
    // An upload of the same bytes reuses the blob without writing it, and commits.
    let (status, v) = app
        .upload("late", TWO_INPUTS, Some(json!({"sha256": orphan})), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let report = gc::sweep(&app.state.store, &app.state.blobs, plan)
        .await
        .unwrap();
    assert_eq!(report.kept_now_referenced, vec![orphan.clone()]);
    assert!(report.garbage.is_empty(), "{report:?}");
    let (status, bytes) = artifact(app, "late", 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, TWO_INPUTS);
}

async fn an_upload_whose_blob_gc_took_before_its_commit_fails_with_503_and_records_nothing(
    app: &TestApp,
) {
    let orphan = publish_orphan(app, TWO_INPUTS).await;
    let mut session = UploadSession::new(
        app.state.store.clone(),
        app.state.blobs.clone(),
        app.state.config.upload.clone(),
        "raced".into(),
        Some("k1".into()),
    )
    .unwrap();
    session
        .set_metadata(json!({"sha256": orphan}).to_string().into_bytes())
        .await
        .unwrap();
    // The bytes are already stored: the upload only hashes them, then will record a version.
    session
        .receive_model(futures::stream::iter([Ok::<_, ferry_registry::Error>(
            Bytes::from_static(TWO_INPUTS),
        )]))
        .await
        .unwrap();
    // gc runs in between and takes the (still unreferenced) blob.
    let report = gc::collect(&app.state.store, &app.state.blobs, NOW, false)
        .await
        .unwrap();
    assert_eq!(report.collected.count, 1, "{report:?}");
    let err = session.finish().await.unwrap_err();
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err}");
    let (status, _) = app.get("/api/v1/models/raced").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a version without bytes was recorded"
    );
    // The client's retry (same key) stores the bytes again and succeeds.
    let (status, v) = app.upload("raced", TWO_INPUTS, None, Some("k1")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, bytes) = artifact(app, "raced", 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, TWO_INPUTS);
}

/// Uploads (new bytes, and bytes of orphans that gc is about to take) race a gc that runs in a
/// loop with no minimum age: every acknowledged version keeps its bytes.
async fn gc_racing_concurrent_uploads_never_breaks_an_acknowledged_version(app: &TestApp) {
    let seed: u64 = std::env::var("FERRY_GC_RACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("gc race seed: FERRY_GC_RACE_SEED={seed}");
    let app = Arc::new(app);
    let stop = Arc::new(AtomicBool::new(false));
    let collected = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let acked: Arc<tokio::sync::Mutex<Vec<(String, i64, String)>>> = Arc::default();
    let gc_loop = {
        let (stop, collected) = (stop.clone(), collected.clone());
        let state = app.state.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let report = gc::collect(&state.store, &state.blobs, NOW, false)
                    .await
                    .unwrap();
                assert!(report.failed.is_empty(), "{:?}", report.failed);
                collected.fetch_add(report.collected.count, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let uploads = (0..4u64).map(|task| {
        let (app, acked, retried) = (app.clone(), acked.clone(), retried.clone());
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ task);
            for i in 0..25 {
                let weights = 4 * rng.random_range(256..4096);
                let model = distinct_model(&mut rng, weights);
                let hash = sha(&model);
                // Half the time the bytes are already stored, unreferenced: the upload reuses
                // that blob without writing it, while gc may be deleting it.
                let reuse = rng.random_bool(0.5);
                if reuse {
                    publish_orphan(&app, &model).await;
                }
                let name = format!("race-{task}");
                let key = format!("{task}-{i}");
                let metadata = reuse.then(|| json!({"sha256": hash}));
                loop {
                    let (status, v) = app
                        .upload(&name, &model, metadata.clone(), Some(&key))
                        .await;
                    match status {
                        StatusCode::CREATED => {
                            assert_eq!(v["sha256"], hash.as_str());
                            let version = v["version"].as_i64().unwrap();
                            acked
                                .lock()
                                .await
                                .push((name.clone(), version, hash.clone()));
                            break;
                        }
                        StatusCode::SERVICE_UNAVAILABLE => {
                            retried.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("upload answered {other}: {v}"),
                    }
                }
            }
        }
    });
    futures::future::join_all(uploads).await;
    stop.store(true, Ordering::Relaxed);
    gc_loop.await.unwrap();
    let acked = acked.lock().await.clone();
    assert_eq!(acked.len(), 100);
    for (name, version, hash) in &acked {
        let (status, bytes) = artifact(&app, name, *version).await;
        assert_eq!(status, StatusCode::OK, "{name} v{version} lost its bytes");
        assert_eq!(&sha(&bytes), hash, "{name} v{version} has other bytes");
        assert_eq!(
            read_blob(&app, hash).await.map(|b| sha(&b)).as_ref(),
            Some(hash)
        );
    }
    eprintln!(
        "gc race: {} acknowledged versions intact; gc collected {} objects; {} uploads answered 503 (blob collected before commit) and were retried",
        acked.len(),
        collected.load(Ordering::Relaxed),
        retried.load(Ordering::Relaxed)
    );
    // Nothing unreferenced is left once the racing stops.
    let last = gc::collect(&app.state.store, &app.state.blobs, NOW, true)
        .await
        .unwrap();
    assert_eq!(
        last.garbage
            .iter()
            .filter(|g| g.kind == GarbageKind::Unreferenced)
            .count(),
        0,
        "{last:?}"
    );
}

/// One test per check on SQLite + a local folder, PostgreSQL + a local folder, and SQLite + the
/// S3 server.
macro_rules! on_gc_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(app) = super::TestApp::new(super::Db::Sqlite, super::Blobs::Local).await {
                        super::$check(&app).await;
                        app.cleanup().await;
                    }
                }
            )*
        }
        mod postgres_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(app) = super::TestApp::new(super::Db::Postgres, super::Blobs::Local).await {
                        super::$check(&app).await;
                        app.cleanup().await;
                    }
                }
            )*
        }
        mod sqlite_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(app) = super::TestApp::new(super::Db::Sqlite, super::Blobs::S3).await {
                        super::$check(&app).await;
                        app.cleanup().await;
                    }
                }
            )*
        }
    };
}

on_gc_backends!(
    gc_removes_orphans_and_stale_staging_but_never_a_referenced_blob,
    a_version_recorded_between_scan_and_sweep_keeps_its_blob,
    an_upload_whose_blob_gc_took_before_its_commit_fails_with_503_and_records_nothing,
    gc_racing_concurrent_uploads_never_breaks_an_acknowledged_version,
);
