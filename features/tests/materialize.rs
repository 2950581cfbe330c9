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
    LookupError, MaterializeError, OnlineStore, Value, decode, materialize, row_key,
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
    let done = materialize(&mut conn, &v, file.path(), &mut |_| {})
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
    let all: Vec<String> = (0..1000)
        .map(|c| row_key(&v.name, 1, &format!("c{c}")))
        .collect();
    let _: () = redis::cmd("DEL")
        .arg(&all)
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
    let e = materialize(&mut conn, &v, file.path(), &mut |_| {})
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
    let e = materialize(&mut conn, &v, file.path(), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 3: column `age`: `thirty` is not a number"
    );
    let file = csv(&["customer_id,age,orders,vip".into(), ",30,1,true".into()]);
    let e = materialize(&mut conn, &v, file.path(), &mut |_| {})
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
    materialize(&mut conn, &v, file.path(), &mut |_| {})
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

/// `customer_id` (UTF8 string), `age` (FLOAT, null for c7), `orders` (INT64), `vip` (BOOLEAN),
/// `rows` rows in row groups of 100; orders = `round`.
fn write_parquet(path: &std::path::Path, rows: usize, round: i64) {
    use parquet::column::writer::ColumnWriter;
    use parquet::data_type::ByteArray;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    let schema = Arc::new(
        parse_message_type(
            "message m { REQUIRED BYTE_ARRAY customer_id (UTF8); OPTIONAL FLOAT age; \
             REQUIRED INT64 orders; REQUIRED BOOLEAN vip; }",
        )
        .unwrap(),
    );
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer =
        SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    for start in (0..rows).step_by(100) {
        let range = start..(start + 100).min(rows);
        let mut group = writer.next_row_group().unwrap();
        while let Some(mut column) = group.next_column().unwrap() {
            match column.untyped() {
                ColumnWriter::ByteArrayColumnWriter(w) => {
                    let ids: Vec<ByteArray> = range
                        .clone()
                        .map(|i| ByteArray::from(format!("c{i}").as_str()))
                        .collect();
                    w.write_batch(&ids, None, None).unwrap();
                }
                ColumnWriter::FloatColumnWriter(w) => {
                    let levels: Vec<i16> = range.clone().map(|i| i16::from(i != 7)).collect();
                    let values: Vec<f32> = range
                        .clone()
                        .filter(|i| *i != 7)
                        .map(|i| 20.5 + (i % 50) as f32)
                        .collect();
                    w.write_batch(&values, Some(&levels), None).unwrap();
                }
                ColumnWriter::Int64ColumnWriter(w) => {
                    let values: Vec<i64> = range.clone().map(|_| round).collect();
                    w.write_batch(&values, None, None).unwrap();
                }
                ColumnWriter::BoolColumnWriter(w) => {
                    let values: Vec<bool> = range.clone().map(|i| i % 2 == 0).collect();
                    w.write_batch(&values, None, None).unwrap();
                }
                _ => unreachable!(),
            }
            column.close().unwrap();
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
}

#[tokio::test]
async fn a_parquet_file_materializes_like_its_csv_and_keeps_a_sample_of_the_smallest_hashes() {
    let Some(mut conn) = connect().await else {
        return;
    };
    let v = view();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.parquet");
    write_parquet(&path, 1000, 4);
    let done = materialize(&mut conn, &v, &path, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(done.rows, 1000);
    assert_eq!(done.sha256, sha256_hex(&std::fs::read(&path).unwrap()));
    let store = OnlineStore::connect(&redis_url()).unwrap();
    let dtypes: Vec<_> = v.spec.features.iter().map(|f| f.dtype).collect();
    let rows = store
        .lookup(
            &v.name,
            1,
            &dtypes,
            &["c7".into(), "c999".into()],
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(
        rows[0],
        Some(vec![None, Some(Value::Int(4)), Some(Value::Bool(false))])
    );
    assert_eq!(
        rows[1],
        Some(vec![
            Some(Value::Float(69.5)),
            Some(Value::Int(4)),
            Some(Value::Bool(false))
        ])
    );
    // The sample: the 512 entities with the smallest hashes, its bound the largest of them, and
    // every entity at or below the bound in it.
    let sample = &done.sample;
    assert_eq!(sample.rows.len(), ferry_api::skew::SAMPLE_ROWS);
    let mut hashes: Vec<u64> = (0..1000)
        .map(|i| ferry_api::skew::entity_hash(&format!("c{i}")))
        .collect();
    hashes.sort_unstable();
    assert_eq!(sample.bound, hashes[ferry_api::skew::SAMPLE_ROWS - 1]);
    assert!(
        sample
            .rows
            .iter()
            .all(|r| ferry_api::skew::entity_hash(&r.entity) <= sample.bound)
    );
    let c = sample.rows.iter().find(|r| r.entity != "c7").unwrap();
    assert_eq!(c.values[1], Some(4.0));
    // A column of the wrong type is refused naming it and the row.
    let v2 = FeatureViewRecord {
        spec: FeatureViewSpec {
            features: vec![FeatureField {
                name: "vip".into(),
                dtype: FeatureDtype::Int32,
            }],
            ..v.spec.clone()
        },
        ..v.clone()
    };
    let e = materialize(&mut conn, &v2, &path, &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "line 1: column `vip`: true is not INT32");
    let keys: Vec<String> = (0..1000)
        .map(|c| row_key(&v.name, 1, &format!("c{c}")))
        .collect();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_callers_short_deadline_is_its_own_and_never_opens_the_breaker() {
    // A "Redis" that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let store = OnlineStore::connect(&format!("redis://127.0.0.1:{port}")).unwrap();
    let dtypes = [FeatureDtype::Fp32];
    let entities = vec!["c1".to_string()];
    for _ in 0..ferry_features::online::BREAKER_FAILURES + 2 {
        let e = store
            .lookup("v", 1, &dtypes, &entities, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(e, LookupError::DeadlineExceeded), "{e}");
    }
    // The store's own timeout is a failure of the store.
    let e = store
        .lookup("v", 1, &dtypes, &entities, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(e, LookupError::Unavailable { .. }), "{e}");
    silent.abort();
}
