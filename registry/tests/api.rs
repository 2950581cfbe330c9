//! The registry API over HTTP (router + oneshot), on SQLite with a local folder and on
//! PostgreSQL, with the bad inputs the issue lists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::json;

on_every_backend!(
    upload_returns_the_version_with_signature_and_lineage,
    versions_are_numbered_without_gaps_under_concurrent_uploads,
    upload_with_same_idempotency_key_returns_the_same_version,
    same_idempotency_key_with_different_bytes_is_a_conflict,
    concurrent_uploads_with_one_idempotency_key_create_one_version,
    identical_bytes_are_stored_once,
    bytes_that_are_not_onnx_are_refused_and_leave_nothing_behind,
    a_truncated_upload_is_refused_and_leaves_nothing_behind,
    a_stream_that_fails_mid_upload_leaves_nothing_behind,
    hostile_model_names_are_refused_with_the_allowed_pattern,
    malformed_and_wrong_typed_metadata_is_refused_naming_the_field,
    missing_models_versions_and_aliases_are_404,
    aliases_are_set_moved_resolved_and_deleted_with_events,
    archived_versions_cannot_be_aliased_and_aliased_versions_cannot_be_archived,
    artifacts_stream_with_etag_range_and_conditional_requests,
    listings_are_newest_first_and_paginated,
    a_consumer_resuming_from_its_last_id_sees_every_event_once_in_order_across_1000_concurrent_writes,
    a_long_poll_returns_as_soon_as_an_event_commits,
    waiters_share_one_poller_that_wakes_them_all_for_another_replicas_event,
    the_event_stream_sends_server_sent_events_and_resumes_from_last_event_id,
    a_declared_sha256_that_does_not_match_the_bytes_is_refused,
    a_profile_is_stored_with_its_version,
);

async fn upload_returns_the_version_with_signature_and_lineage(app: &TestApp) {
    let (status, v) = app.upload("fraud", MLP, Some(lineage()), None).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "fraud");
    assert_eq!(v["version"], 1);
    assert_eq!(v["size"], MLP.len());
    assert_eq!(v["status"], "active");
    let sha = hex_sha256(MLP);
    assert_eq!(v["sha256"], sha);
    assert_eq!(v["lineage"]["git_commit"], COMMIT);
    assert_eq!(v["lineage"]["data"][0]["sha256"], DATA_SHA);
    assert_eq!(v["params"]["optimizer"], "adam");
    assert_eq!(v["metrics"]["auc"], 0.93);
    assert_eq!(v["signature"]["inputs"][0]["name"], "input");
    assert_eq!(v["signature"]["inputs"][0]["datatype"], "FP32");
    assert_eq!(v["signature"]["inputs"][0]["shape"], json!(["batch", 32]));
    assert_eq!(v["signature"]["outputs"][0]["name"], "probabilities");
    assert_eq!(v["signature"]["opsets"][0]["version"], 17);
    // The bytes are published under their hash, and nothing is left in staging.
    let objects = app.objects().await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert!(
        objects[0].ends_with(&format!("blobs/sha256/{sha}")),
        "{objects:?}"
    );
    let (status, got) = app.get("/api/v1/models/fraud/versions/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["sha256"], sha);
    assert_eq!(got["lineage"], v["lineage"]);
}

async fn versions_are_numbered_without_gaps_under_concurrent_uploads(app: &TestApp) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let router = app.router.clone();
        let model = if i % 2 == 0 { MLP } else { TWO_INPUTS };
        tasks.push(tokio::spawn(async move {
            let (ctype, body) = multipart(&[("model", model.to_vec())]);
            let response = tower::ServiceExt::oneshot(
                router,
                Request::post("/api/v1/models/busy/versions")
                    .header("content-type", ctype)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            json(&body)["version"].as_i64().unwrap()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=20).collect::<Vec<i64>>());
    let (_, model) = app.get("/api/v1/models/busy").await;
    assert_eq!(model["latest_version"], 20);
    assert_eq!(model["version_count"], 20);
}

async fn upload_with_same_idempotency_key_returns_the_same_version(app: &TestApp) {
    let (s1, first) = app
        .upload("fraud", MLP, Some(lineage()), Some("key-1"))
        .await;
    assert_eq!(s1, StatusCode::CREATED);
    let events_before = app.state.store.last_event_id().await.unwrap();
    let (_, headers, body) = app
        .upload_parts(
            "fraud",
            &[
                ("metadata", lineage().to_string().into_bytes()),
                ("model", MLP.to_vec()),
            ],
            Some("key-1"),
        )
        .await;
    let second = json(&body);
    assert_eq!(second["version"], first["version"]);
    assert_eq!(second["sha256"], first["sha256"]);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    // Nothing new: no version, no event, no object.
    let (_, model) = app.get("/api/v1/models/fraud").await;
    assert_eq!(model["version_count"], 1);
    assert_eq!(
        app.state.store.last_event_id().await.unwrap(),
        events_before
    );
    assert_eq!(app.objects().await.len(), 1);
}

async fn same_idempotency_key_with_different_bytes_is_a_conflict(app: &TestApp) {
    let (s1, _) = app.upload("fraud", MLP, None, Some("key-2")).await;
    assert_eq!(s1, StatusCode::CREATED);
    let (s2, problem) = app.upload("fraud", TWO_INPUTS, None, Some("key-2")).await;
    assert_eq!(s2, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    // Same bytes but different metadata is a different request too.
    let (s3, _) = app
        .upload("fraud", MLP, Some(lineage()), Some("key-2"))
        .await;
    assert_eq!(s3, StatusCode::CONFLICT);
    let (_, model) = app.get("/api/v1/models/fraud").await;
    assert_eq!(model["version_count"], 1);
    // The conflicting bytes were not kept.
    assert_eq!(app.objects().await.len(), 1);
}

async fn concurrent_uploads_with_one_idempotency_key_create_one_version(app: &TestApp) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let router = app.router.clone();
        tasks.push(tokio::spawn(async move {
            let (ctype, body) = multipart(&[("model", MLP.to_vec())]);
            let response = tower::ServiceExt::oneshot(
                router,
                Request::post("/api/v1/models/retry/versions")
                    .header("content-type", ctype)
                    .header("idempotency-key", "same")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            json(&body)["version"].as_i64().unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    let (_, model) = app.get("/api/v1/models/retry").await;
    assert_eq!(model["version_count"], 1);
}

async fn identical_bytes_are_stored_once(app: &TestApp) {
    app.upload("a", MLP, None, None).await;
    app.upload("a", MLP, None, None).await;
    app.upload("b", MLP, None, None).await;
    let (_, v2) = app.get("/api/v1/models/a/versions/2").await;
    assert_eq!(v2["sha256"], hex_sha256(MLP));
    assert_eq!(app.objects().await.len(), 1);
}

async fn bytes_that_are_not_onnx_are_refused_and_leave_nothing_behind(app: &TestApp) {
    for bytes in [
        b"definitely not a model".to_vec(),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
        Vec::new(),
        MLP[..MLP.len() / 2].to_vec(),
    ] {
        let (status, problem) = app.upload("junk", &bytes, None, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("not a valid ONNX model"),
            "{problem}"
        );
        assert_eq!(problem["status"], 422);
    }
    assert_nothing_stored(app, "junk").await;
}

async fn a_truncated_upload_is_refused_and_leaves_nothing_behind(app: &TestApp) {
    let (ctype, body) = multipart(&[("model", MLP.to_vec())]);
    let cut = &body[..body.len() - 40_000];
    let (status, _, body) = app
        .send(
            Request::post("/api/v1/models/cut/versions")
                .header("content-type", ctype)
                .body(Body::from(cut.to_vec()))
                .unwrap(),
        )
        .await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_nothing_stored(app, "cut").await;
}

async fn a_stream_that_fails_mid_upload_leaves_nothing_behind(app: &TestApp) {
    // The body stream breaks the way a vanished client's does: some bytes, then an error.
    let (ctype, body) = multipart(&[("model", MLP.to_vec())]);
    let head = bytes::Bytes::copy_from_slice(&body[..body.len() / 2]);
    let stream = futures::stream::iter(vec![
        Ok(head),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]);
    let (status, _, _) = app
        .send(
            Request::post("/api/v1/models/gone/versions")
                .header("content-type", ctype)
                .body(Body::from_stream(stream))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_nothing_stored(app, "gone").await;
}

async fn assert_nothing_stored(app: &TestApp, name: &str) {
    let (status, _) = app.get(&format!("/api/v1/models/{name}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Give object_store's background cleanup of staging files a moment.
    for _ in 0..50 {
        if app.objects().await.is_empty() && app.files_on_disk().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.objects().await, Vec::<String>::new());
    assert_eq!(app.files_on_disk(), Vec::<String>::new());
    assert_eq!(app.state.store.last_event_id().await.unwrap(), 0);
}

async fn hostile_model_names_are_refused_with_the_allowed_pattern(app: &TestApp) {
    let long = "a".repeat(300);
    for name in [
        "a%2Fb",
        "..",
        "a..b",
        "-x",
        "a%0Ab",
        "a%00b",
        "%C3%A9",
        long.as_str(),
        "a%20b",
    ] {
        let (status, problem) = app.upload(name, MLP, None, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("must match"), "{name}: {detail}");
        assert!(!detail.contains('\n'), "{detail}");
    }
    assert_eq!(app.objects().await, Vec::<String>::new());
}

async fn malformed_and_wrong_typed_metadata_is_refused_naming_the_field(app: &TestApp) {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "metadata"),
        (br#"{"metrics":{"auc":"high"}}"#.to_vec(), "metrics.auc"),
        (br#"{"git_commit":"abc123"}"#.to_vec(), "git_commit"),
        (br#"{"data":[{"uri":"x"}]}"#.to_vec(), "data[0]"),
        (br#"{"params":{"lr":[1]}}"#.to_vec(), "params.lr"),
        (br#"{"colour":"red"}"#.to_vec(), "colour"),
        (br#"[]"#.to_vec(), "metadata"),
    ];
    for (metadata, field) in cases {
        let (status, _, body) = app
            .upload_parts(
                "meta",
                &[("metadata", metadata.clone()), ("model", MLP.to_vec())],
                None,
            )
            .await;
        let problem = json(&body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{field}: {problem}"
        );
    }
    // Parts other than `model` and `metadata`, two model parts, or no model part.
    let (status, _, body) = app
        .upload_parts("meta", &[("weights", MLP.to_vec())], None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json(&body)["detail"].as_str().unwrap().contains("weights"));
    let (status, _, _) = app
        .upload_parts(
            "meta",
            &[("model", MLP.to_vec()), ("model", MLP.to_vec())],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = app
        .upload_parts("meta", &[("metadata", b"{}".to_vec())], None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json(&body)["detail"]
            .as_str()
            .unwrap()
            .contains("no `model` part")
    );
    // Not multipart at all.
    let (status, _) = app
        .json_request("POST", "/api/v1/models/meta/versions", json!({}))
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_nothing_stored(app, "meta").await;
}

async fn missing_models_versions_and_aliases_are_404(app: &TestApp) {
    let (status, problem) = app.get("/api/v1/models/ghost").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(problem["detail"].as_str().unwrap().contains("ghost"));
    app.upload("real", MLP, None, None).await;
    for (uri, needle) in [
        ("/api/v1/models/real/versions/7", "no version 7"),
        (
            "/api/v1/models/real/versions/production",
            "no alias `production`",
        ),
        (
            "/api/v1/models/real/versions/@staging/artifact",
            "no alias `staging`",
        ),
        ("/api/v1/models/ghost/versions/1", "ghost"),
        ("/api/v1/models/real/aliases/nope", "no alias `nope`"),
    ] {
        let (status, problem) = app.get(uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{uri}: {problem}"
        );
    }
    let (status, _) = app.get("/api/v1/models/real/versions/0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .json_request(
            "PUT",
            "/api/v1/models/real/aliases/prod",
            json!({"version": 9}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = app
        .send(
            Request::delete("/api/v1/models/real/aliases/prod")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem) = app.get("/api/v2/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["status"], 404);
}

async fn aliases_are_set_moved_resolved_and_deleted_with_events(app: &TestApp) {
    app.upload("m", MLP, None, None).await;
    app.upload("m", TWO_INPUTS, None, None).await;
    let (status, a) = app
        .json_request(
            "PUT",
            "/api/v1/models/m/aliases/production",
            json!({"version": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["version"], 1);
    let (_, v) = app.get("/api/v1/models/m/versions/production").await;
    assert_eq!(v["version"], 1);
    assert_eq!(v["aliases"], json!(["production"]));
    let (_, v) = app.get("/api/v1/models/m/versions/@production").await;
    assert_eq!(v["version"], 1);
    let (_, latest) = app.get("/api/v1/models/m/versions/latest").await;
    assert_eq!(latest["version"], 2);
    // Move atomically, copying another alias by name.
    app.json_request(
        "PUT",
        "/api/v1/models/m/aliases/staging",
        json!({"version": 2}),
    )
    .await;
    let (_, moved) = app
        .json_request(
            "PUT",
            "/api/v1/models/m/aliases/production",
            json!({"version": "@staging"}),
        )
        .await;
    assert_eq!(moved["version"], 2);
    assert_eq!(moved["previous"], 1);
    let (_, model) = app.get("/api/v1/models/m").await;
    assert_eq!(model["aliases"], json!({"production": 2, "staging": 2}));
    // Setting it to where it already is changes nothing and emits nothing.
    let before = app.state.store.last_event_id().await.unwrap();
    app.json_request(
        "PUT",
        "/api/v1/models/m/aliases/production",
        json!({"version": 2}),
    )
    .await;
    assert_eq!(app.state.store.last_event_id().await.unwrap(), before);
    let (status, _, _) = app
        .send(
            Request::delete("/api/v1/models/m/aliases/staging")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, page) = app.get("/api/v1/events?after=0&limit=1000").await;
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "model.created",
            "version.created",
            "version.created",
            "alias.set",
            "alias.set",
            "alias.set",
            "alias.deleted"
        ]
    );
    let last = &page["events"][6];
    assert_eq!(
        last["data"],
        json!({"model": "m", "alias": "staging", "version": 2})
    );
    assert_eq!(page["head"], 7);
    // A consumer asks for the head before it reads the state, then follows from there.
    let (_, empty) = app.get(&format!("/api/v1/events?after={}", i64::MAX)).await;
    assert_eq!(empty["events"], json!([]));
    assert_eq!(empty["head"], 7);
    // Alias names that are numbers or `latest` are refused.
    for bad in ["123", "latest", "a%2Fb"] {
        let (status, _p) = app
            .json_request(
                "PUT",
                &format!("/api/v1/models/m/aliases/{bad}"),
                json!({"version": 1}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {_p}");
    }
    let (status, _) = app
        .json_request(
            "PUT",
            "/api/v1/models/m/aliases/x",
            json!({"version": "one"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an alias target that does not exist"
    );
    for target in [
        json!({"version": "a b"}),
        json!({"version": 1.5}),
        json!({"v": 1}),
        json!({"version": 0}),
    ] {
        let (status, _) = app
            .json_request("PUT", "/api/v1/models/m/aliases/x", target.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{target}");
    }
}

async fn archived_versions_cannot_be_aliased_and_aliased_versions_cannot_be_archived(
    app: &TestApp,
) {
    app.upload("m", MLP, None, None).await;
    app.upload("m", TWO_INPUTS, None, None).await;
    app.json_request(
        "PUT",
        "/api/v1/models/m/aliases/production",
        json!({"version": 1}),
    )
    .await;
    let (status, problem) = app
        .json_request(
            "PATCH",
            "/api/v1/models/m/versions/1",
            json!({"status": "archived"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(problem["detail"].as_str().unwrap().contains("production"));
    let (status, v) = app
        .json_request(
            "PATCH",
            "/api/v1/models/m/versions/2",
            json!({"status": "archived"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "archived");
    let (status, _) = app
        .json_request(
            "PUT",
            "/api/v1/models/m/aliases/canary",
            json!({"version": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // `latest` skips archived versions; the bytes stay downloadable.
    let (_, latest) = app.get("/api/v1/models/m/versions/latest").await;
    assert_eq!(latest["version"], 1);
    let (status, _, body) = app
        .send(
            Request::get("/api/v1/models/m/versions/2/artifact")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], TWO_INPUTS);
    let (status, v) = app
        .json_request(
            "PATCH",
            "/api/v1/models/m/versions/2",
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "active");
    let (status, _) = app
        .json_request(
            "PATCH",
            "/api/v1/models/m/versions/2",
            json!({"status": "deleted"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn artifacts_stream_with_etag_range_and_conditional_requests(app: &TestApp) {
    app.upload("m", MLP, None, None).await;
    let sha = hex_sha256(MLP);
    let (status, headers, body) = app
        .send(
            Request::get("/api/v1/models/m/versions/1/artifact")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], MLP);
    assert_eq!(headers["etag"], format!("\"{sha}\""));
    assert_eq!(headers["content-length"], MLP.len().to_string());
    assert_eq!(headers["accept-ranges"], "bytes");
    assert!(
        headers["repr-digest"]
            .to_str()
            .unwrap()
            .starts_with("sha-256=:")
    );
    let (status, headers, body) = app
        .send(
            Request::get("/api/v1/models/m/versions/1/artifact")
                .header("range", "bytes=100-199")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&body[..], &MLP[100..200]);
    assert_eq!(
        headers["content-range"],
        format!("bytes 100-199/{}", MLP.len())
    );
    let (status, _, body) = app
        .send(
            Request::get("/api/v1/models/m/versions/latest/artifact")
                .header("range", "bytes=-16")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&body[..], &MLP[MLP.len() - 16..]);
    let (status, headers, _) = app
        .send(
            Request::get("/api/v1/models/m/versions/1/artifact")
                .header("range", format!("bytes={}-", MLP.len()))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers["content-range"], format!("bytes */{}", MLP.len()));
    let (status, _, body) = app
        .send(
            Request::get("/api/v1/models/m/versions/1/artifact")
                .header("if-none-match", format!("\"{sha}\""))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    // A stale If-Range means "send it all".
    let (status, _, body) = app
        .send(
            Request::get("/api/v1/models/m/versions/1/artifact")
                .header("range", "bytes=0-9")
                .header("if-range", "\"stale\"")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), MLP.len());
}

async fn listings_are_newest_first_and_paginated(app: &TestApp) {
    for name in ["first", "second", "third"] {
        app.upload(name, FIXED, None, None).await;
    }
    for _ in 0..4 {
        app.upload("third", INT64, None, None).await;
    }
    let (_, page) = app.get("/api/v1/models?limit=2").await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["third", "second"]);
    let token = page["next_page_token"].as_str().unwrap();
    let (_, page) = app
        .get(&format!("/api/v1/models?limit=2&page_token={token}"))
        .await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first"]);
    assert!(page.get("next_page_token").is_none());
    let (_, page) = app.get("/api/v1/models/third/versions?limit=3").await;
    let versions: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [5, 4, 3]);
    let token = page["next_page_token"].as_str().unwrap();
    let (_, page) = app
        .get(&format!(
            "/api/v1/models/third/versions?limit=3&page_token={token}"
        ))
        .await;
    let versions: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);
    for bad in [
        "/api/v1/models?limit=0",
        "/api/v1/models?limit=100000",
        "/api/v1/models?page_token=x",
        "/api/v1/models?limit=abc",
    ] {
        let (status, problem) = app.get(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }
}

async fn a_consumer_resuming_from_its_last_id_sees_every_event_once_in_order_across_1000_concurrent_writes(
    app: &TestApp,
) {
    app.upload("m", MLP, None, None).await;
    app.upload("m", TWO_INPUTS, None, None).await;
    let base = app.state.store.last_event_id().await.unwrap();
    // A consumer that long-polls with small pages, resuming from its last id each time, while
    // 1,000 alias writes commit concurrently.
    let consumer = {
        let router = app.router.clone();
        tokio::spawn(async move {
            let mut seen: Vec<i64> = Vec::new();
            let mut after = base;
            while seen.len() < 1000 {
                let response = tower::ServiceExt::oneshot(
                    router.clone(),
                    Request::get(format!("/api/v1/events?after={after}&limit=37&wait=5"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                let page = json(&body);
                let events = page["events"].as_array().unwrap();
                assert!(
                    !events.is_empty(),
                    "the long-poll timed out with writes pending"
                );
                for e in events {
                    seen.push(e["id"].as_i64().unwrap());
                }
                after = page["next_after"].as_i64().unwrap();
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for w in 0..20 {
        let store = app.state.store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..50 {
                store
                    .set_alias("m", &format!("a{w}"), 1 + (i % 2))
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let seen = consumer.await.unwrap();
    let expected: Vec<i64> = (base + 1..=base + 1000).collect();
    assert_eq!(
        seen, expected,
        "events were missed, duplicated or reordered"
    );
}

async fn a_long_poll_returns_as_soon_as_an_event_commits(app: &TestApp) {
    let router = app.router.clone();
    let started = std::time::Instant::now();
    let poll = tokio::spawn(async move {
        let response = tower::ServiceExt::oneshot(
            router,
            Request::get("/api/v1/events?after=0&wait=30")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        json(&body)
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    app.upload("m", MLP, None, None).await;
    let page = poll.await.unwrap();
    assert_eq!(page["events"][0]["type"], "model.created");
    // Woken by the commit, not by the 30 s deadline.
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
    let (status, _) = app.get("/api/v1/events?wait=3600").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/api/v1/events?after=-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn the_event_stream_sends_server_sent_events_and_resumes_from_last_event_id(app: &TestApp) {
    app.upload("m", MLP, None, None).await;
    app.json_request(
        "PUT",
        "/api/v1/models/m/aliases/prod",
        json!({"version": 1}),
    )
    .await;
    let response = tower::ServiceExt::oneshot(
        app.router.clone(),
        Request::get("/api/v1/events/stream")
            .header("last-event-id", "1")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    while !text.contains("alias.set") {
        let chunk = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            futures::StreamExt::next(&mut body),
        )
        .await
        .expect("the stream stalled")
        .unwrap()
        .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !text.contains("model.created"),
        "events before Last-Event-ID were resent: {text}"
    );
    assert!(
        text.contains("id: 2\n") || text.contains("id:2\n"),
        "{text}"
    );
    assert!(
        text.contains("event: version.created") || text.contains("event:version.created"),
        "{text}"
    );
}

async fn a_declared_sha256_that_does_not_match_the_bytes_is_refused(app: &TestApp) {
    let wrong = json!({"sha256": hex_sha256(b"other bytes")});
    let (status, problem) = app.upload("m", MLP, Some(wrong), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("hash to"));
    assert_nothing_stored(app, "m").await;
    // A correct declaration is accepted, and a second one with the blob present skips the write.
    let right = json!({"sha256": hex_sha256(MLP)});
    let (status, _) = app.upload("m", MLP, Some(right.clone()), None).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, v) = app.upload("m", MLP, Some(right), None).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(v["version"], 2);
    assert_eq!(app.objects().await.len(), 1);
}

async fn a_profile_is_stored_with_its_version(app: &TestApp) {
    let profile = json!({"format": 1, "inputs": [{"input": "input", "features": [
        {"name": "f0", "column": 0, "edges": [0.0, 1.0], "counts": [1, 2, 3],
         "summary": {"count": 6, "mean": 0.5, "std": 0.5, "min": -1.0, "max": 2.0}}
    ]}]});
    let (status, v) = app
        .upload("m", MLP, Some(json!({"profile": profile})), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(v["has_profile"], true);
    let (status, got) = app.get("/api/v1/models/m/versions/1/profile").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, profile);
    app.upload("m", TWO_INPUTS, None, None).await;
    let (status, _) = app.get("/api/v1/models/m/versions/2/profile").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn waiters_share_one_poller_that_wakes_them_all_for_another_replicas_event(app: &TestApp) {
    const WAITERS: usize = 100;
    // Another registry on the same database: its commits do not wake this process directly.
    let other = app.state.store.reopen(2).await.unwrap();
    let (_, head) = app.get("/api/v1/events?after=0").await;
    let after = head["head"].as_i64().unwrap();
    let polls_before = app.state.store.event_polls();
    let started = std::time::Instant::now();
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..WAITERS {
        let router = app.router.clone();
        waiters.spawn(async move {
            let response = tower::ServiceExt::oneshot(
                router,
                Request::get(format!("/api/v1/events?after={after}&wait=30"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            json(&body)
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    other
        .create_webhook(ferry_api::webhooks::NewWebhook {
            url: "https://ci.example.com/hook".into(),
            events: vec!["*".into()],
            secret: None,
        })
        .await
        .unwrap();
    while let Some(page) = waiters.join_next().await {
        let page = page.unwrap();
        assert_eq!(page["events"][0]["type"], "webhook.created", "{page}");
    }
    let elapsed = started.elapsed();
    // Woken by the poller within its interval, not by the 30 s deadline.
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
    // One counter read per half second for all of them, not one per waiter (which would be
    // WAITERS per half second).
    let polls = app.state.store.event_polls() - polls_before;
    let bound = elapsed.as_millis() as u64 / 500 + 3;
    assert!(
        (1..=bound).contains(&polls),
        "{polls} counter reads in {elapsed:?} for {WAITERS} waiters"
    );
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_waiters_beyond_the_cap_get_a_503_and_a_closed_stream_frees_its_place() {
    let config = ferry_registry::Config {
        max_event_waiters: 2,
        ..ferry_registry::Config::default()
    };
    let Some(app) = TestApp::with_config(Db::Sqlite, Blobs::Local, config).await else {
        return;
    };
    let open = || {
        tower::ServiceExt::oneshot(
            app.router.clone(),
            Request::get("/api/v1/events/stream")
                .body(Body::empty())
                .unwrap(),
        )
    };
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK);
    let third = open().await.unwrap();
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(third.headers().contains_key("retry-after"));
    // A long-poll that waits takes a place too; one that does not wait never needs one.
    let (status, _) = app.get("/api/v1/events?after=0&wait=1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = app.get("/api/v1/events?after=0").await;
    assert_eq!(status, StatusCode::OK);
    drop(first);
    let again = open().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    drop((second, again));
    app.cleanup().await;
}
