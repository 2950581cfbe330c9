//! Materialization into the machine's real Redis (`FERRY_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`): the last row of an entity wins, values read back as written,
//! missing columns and bad cells are refused naming the line and the column; the lookup serving
//! does reads them back in the request's order, says which entities have no row, and answers
//! "unavailable" at once when the store is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::time::Duration;

use ferry_api::features::{FeatureDtype, FeatureField, FeatureViewRecord, FeatureViewSpec};
use ferry_features::{
    LookupError, MaterializeError, OnlineStore, Value, decode, materialize_csv, row_key,
};
use redis::aio::ConnectionManager;

fn redis_url() -> String {
    std::env::var("FERRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn connect() -> Option<ConnectionManager> {
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(2), ConnectionManager::new(client))
        .await
        .ok()
        .and_then(Result::ok);
    assert!(
        conn.is_some() || !ferry_api::testing::in_ci(),
        "Redis is not reachable at {} (CI is set)",
        redis_url()
    );
    if conn.is_none() {
        ferry_api::testing::skipped(&format!("no Redis at {}", redis_url()));
    }
    conn
}

/// A view with a name of its own, so runs do not meet.
fn view() -> FeatureViewRecord {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    FeatureViewRecord {
        name: format!("customers-{unique}"),
        version: 1,
        sha256: "0".repeat(64),
        spec: FeatureViewSpec {
            entity: "customer_id".into(),
            features: vec![
                FeatureField {
                    name: "age".into(),
                    dtype: FeatureDtype::Fp32,
                },
                FeatureField {
                    name: "orders".into(),
                    dtype: FeatureDtype::Int64,
                },
                FeatureField {
                    name: "vip".into(),
                    dtype: FeatureDtype::Bool,
                },
            ],
            source: None,
            description: None,
        },
        created_at: chrono::Utc::now(),
        sample_bound: None,
    }
}

fn csv(lines: &[String]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    file
}

#[tokio::test]
async fn the_last_row_of_each_entity_is_what_is_read_back() {
    let Some(mut conn) = connect().await else {
        return;
    };
    let v = view();
    // 3,000 rows over 1,000 customers, columns in another order than the view's and one extra;
    // round r writes orders = r, so the last round wins. Customer 7's age is missing.
    let mut lines = vec!["vip,ignored,orders,customer_id,age".to_string()];
    for round in 0..3 {
        for c in 0..1000 {
            let age = if c == 7 {
                String::new()
            } else {
                format!("{}.5", 20 + c % 50)
            };
            lines.push(format!("{},x,{round},c{c},{age}", c % 2 == 0));
        }
    }
    let file = csv(&lines);
    let done = materialize_csv(&mut conn, &v, file.path(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(done.rows, 3000);
    let bytes = std::fs::read(file.path()).unwrap();
    assert_eq!(done.bytes, bytes.len() as u64);
    assert_eq!(done.sha256, sha256_hex(&bytes));
    let dtypes: Vec<_> = v.spec.features.iter().map(|f| f.dtype).collect();
    let keys: Vec<String> = ["c0", "c7", "c999"]
        .iter()
        .map(|c| row_key(&v.name, 1, c))
        .collect();
    let rows: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    let read: Vec<_> = rows
        .into_iter()
        .map(|r| decode(&dtypes, &r.unwrap()).unwrap())
        .collect();
    assert_eq!(
        read[0],
        [
            Some(Value::Float(20.5)),
            Some(Value::Int(2)),
            Some(Value::Bool(true))
        ]
    );
    assert_eq!(
        read[1],
        [None, Some(Value::Int(2)), Some(Value::Bool(false))]
    );
    assert_eq!(
        read[2],
        [
            Some(Value::Float(69.5)),
            Some(Value::Int(2)),
            Some(Value::Bool(false))
        ]
    );
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_column_or_a_bad_cell_is_refused_naming_it() {
    let Some(mut conn) = connect().await else {
        return;
    };
    let v = view();
    let file = csv(&["customer_id,age,vip".into(), "c1,30,true".into()]);
    let e = materialize_csv(&mut conn, &v, file.path(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(e, MaterializeError::MissingColumn(ref c) if c == "orders"),
        "{e}"
    );
    let file = csv(&[
        "customer_id,age,orders,vip".into(),
        "c1,30,1,true".into(),
        "c2,thirty,1,true".into(),
    ]);
    let e = materialize_csv(&mut conn, &v, file.path(), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 3: column `age`: `thirty` is not a number"
    );
    let file = csv(&["customer_id,age,orders,vip".into(), ",30,1,true".into()]);
    let e = materialize_csv(&mut conn, &v, file.path(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("line 2: the entity key `customer_id`"),
        "{e}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn a_lookup_reads_rows_in_the_request_order_and_names_none_for_missing_entities() {
    let Some(mut conn) = connect().await else {
        return;
    };
    let v = view();
    let file = csv(&[
        "customer_id,age,orders,vip".into(),
        "c1,30.5,1,true".into(),
        "c2,,2,false".into(),
    ]);
    materialize_csv(&mut conn, &v, file.path(), &mut |_| {})
        .await
        .unwrap();
    let store = OnlineStore::connect(&redis_url()).unwrap();
    let dtypes: Vec<_> = v.spec.features.iter().map(|f| f.dtype).collect();
    let entities = vec!["c2".to_string(), "nobody".to_string(), "c1".to_string()];
    let rows = store
        .lookup(&v.name, 1, &dtypes, &entities, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            Some(vec![None, Some(Value::Int(2)), Some(Value::Bool(false))]),
            None,
            Some(vec![
                Some(Value::Float(30.5)),
                Some(Value::Int(1)),
                Some(Value::Bool(true))
            ]),
        ]
    );
    // Another version of the view has no rows yet.
    let rows = store
        .lookup(&v.name, 2, &dtypes, &entities, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(rows.iter().all(Option::is_none));
    // A row written for another definition is refused, naming the entity.
    let e = store
        .lookup(
            &v.name,
            1,
            &dtypes[..2],
            &entities[2..],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, LookupError::Corrupt { ref entity, .. } if entity == "c1"),
        "{e}"
    );
    let keys: Vec<String> = ["c1", "c2"]
        .iter()
        .map(|c| row_key(&v.name, 1, c))
        .collect();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_store_that_is_down_answers_unavailable_quickly_and_then_at_once() {
    // Nothing listens on port 1: the connection is refused.
    let store = OnlineStore::connect("redis://127.0.0.1:1").unwrap();
    let dtypes = [FeatureDtype::Fp32];
    let entities = vec!["c1".to_string()];
    for _ in 0..ferry_features::online::BREAKER_FAILURES {
        let started = std::time::Instant::now();
        let e = store
            .lookup("v", 1, &dtypes, &entities, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(e, LookupError::Unavailable { .. }), "{e}");
        // Bounded by the lookup timeout, not by the request's 10 s.
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // The breaker is open: refused without asking, with the time left as Retry-After.
    let e = store
        .lookup("v", 1, &dtypes, &entities, Duration::from_secs(10))
        .await
        .unwrap_err();
    match e {
        LookupError::Unavailable {
            reason,
            retry_after,
            ..
        } => {
            assert!(reason.contains("paused"), "{reason}");
            assert!(retry_after <= ferry_features::online::BREAKER_COOLDOWN);
        }
        other => panic!("{other}"),
    }
}
