//! Feature views on SQLite and on PostgreSQL: registering a definition (a new version only when
//! the definition changes), reading and listing them, and a model version's lineage naming the
//! view version it was trained with, checked by the registry; a materialization recorded with its
//! sample, and the skew check comparing served rows with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

on_every_backend!(
    a_definition_is_one_version_and_a_change_is_the_next,
    a_model_version_names_the_view_it_was_trained_with_and_the_registry_checks_it,
    a_feature_served_in_another_unit_raises_skew_once_naming_it,
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

fn events_of(events: &[ferry_api::records::Event], kind: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.data.clone())
        .collect()
}

/// Rows of customers c0…c{n-1}: age = i, income = 1000 + i (× `factor`).
fn rows(n: usize, factor: f64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let i = i as f64;
            json!({"entity": format!("c{i}"), "values": [i, (1000.0 + i) * factor]})
        })
        .collect()
}

async fn a_feature_served_in_another_unit_raises_skew_once_naming_it(app: &TestApp) {
    let two = [("age", "FP32"), ("income", "FP64")];
    let (status, _) = app
        .json_request(
            "PUT",
            "/api/v1/feature-views/accounts",
            definition(&two, ""),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let start = app.state.store.last_event_id().await.unwrap();
    let report = json!({
        "source": "accounts.csv", "source_sha256": "c".repeat(64), "rows": 60, "bytes": 1234,
        "store": "redis://127.0.0.1:6379/", "seconds": 0.25,
    });
    // Served rows before any materialization: nothing to compare with.
    let (status, body) = app
        .json_request(
            "POST",
            "/api/v1/feature-views/accounts/versions/1/served",
            json!({"rows": rows(5, 1.0)}),
        )
        .await;
    assert_eq!(
        (status, body["compared"].clone()),
        (StatusCode::OK, json!(0))
    );
    // A sample that does not fit the view, credentials in the store URL, an unknown version.
    let mut bad = report.clone();
    bad["sample"] = json!({"bound": u64::MAX, "rows": [{"entity": "c1", "values": [1.0]}]});
    let (status, body) = app
        .json_request(
            "POST",
            "/api/v1/feature-views/accounts/versions/1/materializations",
            bad,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("the view has 2 features"),
        "{body}"
    );
    let mut bad = report.clone();
    bad["store"] = json!("redis://:secret@cache:6379");
    let (status, body) = app
        .json_request(
            "POST",
            "/api/v1/feature-views/accounts/versions/1/materializations",
            bad,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"].as_str().unwrap().contains("credentials"),
        "{body}"
    );
    let (status, _) = app
        .json_request(
            "POST",
            "/api/v1/feature-views/accounts/versions/9/materializations",
            report.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let mut body = report.clone();
    body["sample"] = json!({"bound": u64::MAX, "rows": rows(60, 1.0)});
    let (status, event) = app
        .json_request(
            "POST",
            "/api/v1/feature-views/accounts/versions/1/materializations",
            body,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    assert_eq!(event["type"], "feature_view.materialized");
    assert_eq!(event["data"]["rows"], 60);
    // The sample stays out of the event; serving learns its bound from the view.
    assert!(event["data"].get("sample").is_none(), "{event}");
    let (_, view) = app.get("/api/v1/feature-views/accounts/versions/1").await;
    assert_eq!(view["sample_bound"], json!(u64::MAX));

    // Served as materialized: a window, no skew. Unknown entities are not compared.
    let post = |rows: Vec<Value>| {
        app.json_request(
            "POST",
            "/api/v1/feature-views/accounts/versions/1/served",
            json!({ "rows": rows }),
        )
    };
    let mut unknown = rows(50, 1.0);
    unknown.push(json!({"entity": "stranger", "values": [1.0, 2.0]}));
    let (status, body) = post(unknown).await;
    assert_eq!(
        (status, body["compared"].clone()),
        (StatusCode::OK, json!(50))
    );
    // Income served in thousands: one skew.detected naming income, with an example, however
    // many windows stay skewed.
    for _ in 0..3 {
        let (status, _) = post(rows(50, 0.001)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let events = app.state.store.events_after(start, 1000).await.unwrap();
    assert!(events_of(&events, "skew.recovered").is_empty());
    let detected = events_of(&events, "skew.detected");
    assert_eq!(detected.len(), 1, "{detected:?}");
    let d = &detected[0];
    assert_eq!(
        (d["name"].clone(), d["version"].clone()),
        (json!("accounts"), json!(1))
    );
    assert_eq!(d["window_rows"], 50);
    let features = d["features"].as_array().unwrap();
    assert_eq!(features.len(), 1, "{d}");
    assert_eq!(features[0]["feature"], "income");
    assert_eq!(features[0]["mismatched"], 50);
    assert_eq!(features[0]["entity"], "c0");
    assert_eq!(features[0]["offline"], 1000.0);
    assert_eq!(features[0]["served"], 1.0);
    let detected_id = events
        .iter()
        .find(|e| e.kind == "skew.detected")
        .unwrap()
        .id;

    // Fixed online: the next window closes the incident.
    let (status, _) = post(rows(50, 1.0)).await;
    assert_eq!(status, StatusCode::OK);
    let events = app.state.store.events_after(start, 1000).await.unwrap();
    let recovered = events_of(&events, "skew.recovered");
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0]["detected_event"], detected_id);
    // Rows that do not fit the view are refused naming the problem.
    let (status, body) = post(vec![json!({"entity": "c1", "values": [1.0]})]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("rows[0] has 1 values"),
        "{body}"
    );
}
