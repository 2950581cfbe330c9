//! The Redis prediction index against the machine's real Redis (`FERRY_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`): several indexes on one Redis act as several replicas.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::Utc;
use ferry_api::traffic::Route;
use ferry_feedback::{JoinError, Prediction, PredictionIndex, RedisIndex};
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(60);

fn redis_url() -> String {
    std::env::var("FERRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether the test Redis answers; outside CI a missing one skips the test (with a note), in
/// CI (`CI=true`) it fails it.
async fn have_redis() -> bool {
    let up = match redis::Client::open(redis_url()) {
        Ok(client) => tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        .is_ok_and(|c| c.is_ok()),
        Err(_) => false,
    };
    assert!(
        up || !ferry_api::testing::in_ci(),
        "Redis is not reachable at {} (CI is set)",
        redis_url()
    );
    if !up {
        ferry_api::testing::skipped(&format!(
            "no Redis at {} (make test starts one)",
            redis_url()
        ));
    }
    up
}

/// A unique endpoint name, so tests running at once (and earlier runs) do not meet.
fn endpoint(what: &str) -> String {
    format!("{what}-{}", uuid_like())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn replica(stop: &CancellationToken) -> RedisIndex {
    let (index, writer) = RedisIndex::connect(&redis_url(), TTL).unwrap();
    tokio::spawn(writer.run(stop.clone()));
    index
}

fn prediction(version: i64, classes: Vec<i64>) -> Prediction {
    Prediction {
        version,
        route: Route::Canary,
        classes: Some(classes),
        at: Utc::now(),
    }
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Waits until `n` predictions of `endpoint` are in Redis.
async fn written(endpoint: &str, n: usize) {
    let mut conn = raw().await;
    for _ in 0..200 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("ferry:p:{{{endpoint}/*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if keys.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{n} predictions of {endpoint} were never written");
}

#[tokio::test]
async fn a_prediction_remembered_by_one_replica_joins_at_another_once() {
    if !have_redis().await {
        return;
    }
    let stop = CancellationToken::new();
    let (a, b, c) = (replica(&stop), replica(&stop), replica(&stop));
    let ep = endpoint("join");
    a.remember(&ep, "p-1", prediction(7, vec![1, 0]));
    written(&ep, 1).await;

    let taken = b.take(&ep, "p-1").await.unwrap();
    assert_eq!(
        (taken.version, taken.route, taken.classes),
        (7, Route::Canary, Some(vec![1, 0]))
    );
    assert!((Utc::now() - taken.at).num_seconds() < 60);
    // A second feedback is refused at every replica, the first one included.
    assert_eq!(c.take(&ep, "p-1").await, Err(JoinError::AlreadyGiven));
    assert_eq!(a.take(&ep, "p-1").await, Err(JoinError::AlreadyGiven));
    assert_eq!(b.take(&ep, "never").await, Err(JoinError::Unknown));
    // The same id on another endpoint is another prediction.
    assert_eq!(
        b.take(&endpoint("other"), "p-1").await,
        Err(JoinError::Unknown)
    );
    assert!(a.health().up && a.health().dropped == 0);
    stop.cancel();
}

#[tokio::test]
async fn a_prediction_and_its_consumed_mark_expire_with_the_time_to_live() {
    if !have_redis().await {
        return;
    }
    let stop = CancellationToken::new();
    let (index, writer) = RedisIndex::connect(&redis_url(), Duration::from_millis(300)).unwrap();
    tokio::spawn(writer.run(stop.clone()));
    let ep = endpoint("ttl");
    index.remember(&ep, "taken", prediction(1, vec![1]));
    index.remember(&ep, "left", prediction(1, vec![1]));
    written(&ep, 2).await;
    assert!(index.take(&ep, "taken").await.is_ok());
    let mut conn = raw().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("ferry:c:{{{ep}/taken}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (1..=300).contains(&ttl),
        "the consumed mark lives out the prediction's TTL: {ttl}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(index.take(&ep, "left").await, Err(JoinError::Unknown));
    assert_eq!(index.take(&ep, "taken").await, Err(JoinError::Unknown));
    stop.cancel();
}

#[tokio::test]
async fn concurrent_feedback_on_one_id_at_many_replicas_joins_exactly_once() {
    if !have_redis().await {
        return;
    }
    let stop = CancellationToken::new();
    let replicas: Vec<_> = (0..4)
        .map(|_| std::sync::Arc::new(replica(&stop)))
        .collect();
    let ep = endpoint("race");
    for i in 0..200 {
        replicas[i % 4].remember(&ep, &format!("p-{i}"), prediction(1, vec![1]));
    }
    written(&ep, 200).await;
    let mut tasks = tokio::task::JoinSet::new();
    for r in &replicas {
        let (r, ep) = (r.clone(), ep.clone());
        tasks.spawn(async move {
            let mut joined = 0;
            for i in 0..200 {
                joined += usize::from(r.take(&ep, &format!("p-{i}")).await.is_ok());
            }
            joined
        });
    }
    let joined: usize = tasks.join_all().await.into_iter().sum();
    assert_eq!(joined, 200);
    stop.cancel();
}

#[tokio::test]
async fn with_redis_down_predictions_are_dropped_and_counted_and_feedback_is_unavailable() {
    // Nothing listens on port 1.
    let (index, writer) = RedisIndex::connect("redis://127.0.0.1:1", TTL).unwrap();
    let stop = CancellationToken::new();
    let writing = tokio::spawn(writer.run(stop.clone()));
    let started = std::time::Instant::now();
    for i in 0..10 {
        index.remember("down", &format!("p-{i}"), prediction(1, vec![1]));
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "remembering never waits"
    );
    let taken = index.take("down", "p-0").await;
    assert!(matches!(taken, Err(JoinError::Unavailable(_))), "{taken:?}");
    let health = index.health();
    assert!(!health.up);
    assert!(health.error.is_some());
    stop.cancel();
    writing.await.unwrap();
    assert_eq!(index.health().dropped, 10);
}

#[tokio::test]
async fn one_prediction_costs_redis_about_200_bytes() {
    if !have_redis().await {
        return;
    }
    let stop = CancellationToken::new();
    let index = replica(&stop);
    let ep = endpoint("memory");
    let mut conn = raw().await;
    let used = |info: String| -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let before = used(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .unwrap(),
    );
    let n = 20_000;
    for i in 0..n {
        // A request id as serving makes them (a UUID), a one-row class.
        let id = format!("{:08x}-1c2d-4e5f-8a9b-{i:012x}", i);
        index.remember(&ep, &id, prediction(3, vec![1]));
        // Far below the write queue's capacity between waits: nothing is dropped.
        if (i + 1) % 2000 == 0 {
            written(&ep, i + 1).await;
        }
    }
    assert_eq!(index.health().dropped, 0);
    let after = used(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .unwrap(),
    );
    let per = (after - before) / n as i64;
    eprintln!("one prediction (UUID id, 1 class, endpoint `{ep}`): {per} bytes in Redis");
    assert!((60..=300).contains(&per), "{per} bytes per prediction");
    let _: () = redis::cmd("EVAL")
        .arg("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end")
        .arg(0)
        .arg(format!("ferry:p:{{{ep}/*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    stop.cancel();
}
