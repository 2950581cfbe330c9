//! Feature views on SQLite and on PostgreSQL: registering a definition (a new version only when
//! the definition changes), reading and listing them, and a model version's lineage naming the
//! view version it was trained with, checked by the registry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

on_every_backend!(
    a_definition_is_one_version_and_a_change_is_the_next,
    a_model_version_names_the_view_it_was_trained_with_and_the_registry_checks_it,
);

fn definition(features: &[(&str, &str)], description: &str) -> Value {
    json!({
        "entity": "customer_id",
        "features": features.iter().map(|(n, d)| json!({"name": n, "dtype": d})).collect::<Vec<_>>(),
        "source": {"uri": "s3://lake/customers.parquet", "sha256": "b".repeat(64)},
        "description": description,
    })
}

async fn views_registered(app: &TestApp, after: i64) -> Vec<Value> {
    app.state
        .store
        .events_after(after, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "feature_view.registered")
        .map(|e| e.data)
        .collect()
}

async fn a_definition_is_one_version_and_a_change_is_the_next(app: &TestApp) {
    let start = app.state.store.last_event_id().await.unwrap();
    let two = [("age", "FP32"), ("orders_30d", "INT64")];
    let (status, v1) = app
        .json_request(
            "PUT",
            "/api/v1/feature-views/customers",
            definition(&two, "first"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["entity"], "customer_id");
    assert_eq!(
        v1["features"][1],
        json!({"name": "orders_30d", "dtype": "INT64"})
    );
    let sha = v1["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);

    // The same definition (a new description is not a new definition): the same version.
    let (status, again) = app
        .json_request(
            "PUT",
            "/api/v1/feature-views/customers",
            definition(&two, "reworded"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (again["version"].clone(), again["sha256"].clone()),
        (json!(1), json!(sha))
    );

    // Another order is another definition.
    let swapped = [("orders_30d", "INT64"), ("age", "FP32")];
    let (status, v2) = app
        .json_request(
            "PUT",
            "/api/v1/feature-views/customers",
            definition(&swapped, "swapped"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v2}");
    assert_eq!(v2["version"], 2);
    assert_ne!(v2["sha256"], json!(sha));

    let (status, newest) = app.get("/api/v1/feature-views/customers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(newest["version"], 2);
    let (_, first) = app.get("/api/v1/feature-views/customers/versions/1").await;
    assert_eq!(first["sha256"], json!(sha));
    let (status, missing) = app.get("/api/v1/feature-views/customers/versions/3").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        missing.to_string().contains("has no version 3"),
        "{missing}"
    );
    let (status, _) = app.get("/api/v1/feature-views/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The listing has each view once, at its newest version, by name.
    app.json_request(
        "PUT",
        "/api/v1/feature-views/accounts",
        definition(&[("balance", "FP64")], ""),
    )
    .await;
    let (_, page) = app.get("/api/v1/feature-views?limit=1").await;
    assert_eq!(page["items"][0]["name"], "accounts");
    let token = page["next_page_token"].as_str().unwrap().to_string();
    let (_, page) = app
        .get(&format!("/api/v1/feature-views?limit=1&page_token={token}"))
        .await;
    assert_eq!(page["items"][0]["name"], "customers");
    assert_eq!(page["items"][0]["version"], 2);
    assert!(page["next_page_token"].is_null(), "{page}");

    // Every problem named, nothing registered.
    let (status, refused) = app
        .json_request(
            "PUT",
            "/api/v1/feature-views/customers",
            json!({"entity": "customer_id", "features": [
                {"name": "age", "dtype": "FP32"}, {"name": "age", "dtype": "FP32"},
                {"name": "customer_id", "dtype": "INT64"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let text = refused.to_string();
    assert!(
        text.contains("features[1].name: `age` is listed more than once"),
        "{text}"
    );
    assert!(
        text.contains("features[2].name: `customer_id` is the entity key"),
        "{text}"
    );
    let (status, refused) = app
        .json_request(
            "PUT",
            "/api/v1/feature-views/customers",
            json!({"entity": "customer_id", "features": [{"name": "city", "dtype": "STRING"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    let events = views_registered(app, start).await;
    let versions: Vec<(String, i64)> = events
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("customers".to_string(), 1),
            ("customers".to_string(), 2),
            ("accounts".to_string(), 1)
        ]
    );
    assert_eq!(events[0]["features"], 2);
}

async fn a_model_version_names_the_view_it_was_trained_with_and_the_registry_checks_it(
    app: &TestApp,
) {
    let (_, view) = app
        .json_request(
            "PUT",
            "/api/v1/feature-views/customers",
            definition(&[("age", "FP32")], ""),
        )
        .await;
    let sha = view["sha256"].as_str().unwrap().to_string();
    let reference = json!({"name": "customers", "version": 1, "sha256": sha});
    let (status, v) = app
        .upload("churn", MLP, Some(json!({"feature_view": reference})), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["lineage"]["feature_view"], reference);
    let (_, shown) = app.get("/api/v1/models/churn/versions/1").await;
    assert_eq!(shown["lineage"]["feature_view"], reference);

    // A view version that is not registered, a hash that is not the version's: refused, and no
    // version is recorded.
    let (status, refused) = app
        .upload(
            "churn",
            MLP,
            Some(json!({"feature_view": {"name": "customers", "version": 2, "sha256": sha}})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("feature view `customers` version 2, which is not registered"),
        "{refused}"
    );
    let (status, refused) = app
        .upload(
            "churn",
            MLP,
            Some(json!({"feature_view": {"name": "customers", "version": 1, "sha256": "c".repeat(64)}})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused.to_string().contains("feature_view.sha256"),
        "{refused}"
    );
    let (_, versions) = app.get("/api/v1/models/churn/versions").await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 1, "{versions}");
}
