//! The RabbitMQ feedback consumer on the machine's real RabbitMQ and Redis: 10,000 feedback
//! messages while the consuming process is killed with SIGKILL three times; every valid message
//! counts exactly once, every poison message ends in the dead-letter queue with its reason, and
//! nothing is left unacked. Then `ferry feedback dead-letters` lists the dead letters without
//! consuming them, `… replay` moves them back (the ones whose prediction now exists count, the
//! others return with their reason), and the feedback the registry recorded is in its log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use support::*;

fn amqp_url() -> String {
    std::env::var("FERRY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn redis_url() -> String {
    std::env::var("FERRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn reachable(port: u16) -> bool {
    let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(
        up || !in_ci(),
        "nothing listens on 127.0.0.1:{port} (CI=true)"
    );
    if !up {
        skipped(&format!(
            "nothing on 127.0.0.1:{port} (make test starts RabbitMQ and Redis)"
        ));
    }
    up
}

/// Messages waiting in `queue` (ready, not held by a consumer).
async fn waiting(channel: &lapin::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

fn rewards(dir: &std::path::Path, base: &str) -> u64 {
    let out = ferry(
        dir,
        &[
            "endpoint",
            "show",
            "fraud",
            "--window",
            "1h",
            "-o",
            "json",
            "--registry",
            base,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    shown["analysis"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["reward_count"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_through_three_sigkills_count_exactly_once() {
    if !have_onnxruntime() || !reachable(5672) || !reachable(6379) {
        return;
    }
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let queue = format!("ferry.feedback.test-{run}");
    let dir = tempfile::tempdir().unwrap();
    let (amqp, redis) = (amqp_url(), redis_url());
    let log_url = format!("file://{}/log", dir.path().display());
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    let args = [
        "up",
        "--no-demo",
        "--prediction-log",
        log_url.as_str(),
        "--feedback-store",
        redis.as_str(),
        "--feedback-queue",
        amqp.as_str(),
        "--feedback-queue-name",
        queue.as_str(),
        "--feedback-retries",
        "2",
        "--feedback-retry-delay",
        "1s",
    ];
    let mut server = Server::start(dir.path(), &args);
    let base = server.url();
    let v1 = push_model(dir.path(), &base, "fraud", &fixture("mlp.onnx"), &[], &[]);
    set_endpoint(
        dir.path(),
        &base,
        "fraud",
        "fraud",
        &["--stable", &v1.to_string()],
    );

    // 10,000 predictions, remembered in Redis.
    let inputs: Value = serde_json::from_str::<Value>(
        &std::fs::read_to_string(fixture("mlp-request.json")).unwrap(),
    )
    .unwrap()["inputs"]
        .clone();
    let client = reqwest::Client::new();
    let n = 10_000;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .post(format!("{base}/v2/models/fraud/infer"))
            .json(&json!({"id": "warm-up", "inputs": inputs}))
            .send()
            .await
            .unwrap();
        if r.status() == 200 && r.headers().contains_key("x-ferry-route") {
            break;
        }
        assert!(Instant::now() < deadline, "the endpoint was never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|i| {
                let (client, url) = (client.clone(), format!("{base}/v2/models/fraud/infer"));
                let body = json!({"id": format!("q{run}-{i}"), "inputs": inputs});
                tokio::spawn(
                    async move { client.post(url).json(&body).send().await.unwrap().status() },
                )
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
    }

    // The messages: every valid one, and 15 poison ones of three kinds.
    let connection = Connection::connect(&amqp, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // The consumer declared the queues at start.
    let deadline = Instant::now() + Duration::from_secs(30);
    while channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the consumer never declared {queue}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            serde_json::to_vec(
                &json!({"endpoint": "fraud", "id": format!("q{run}-{i}"), "reward": 1.0}),
            )
            .unwrap()
        })
        .collect();
    for i in 0..5 {
        bodies.insert(i * 1000, b"{not json".to_vec());
        bodies.insert(
            i * 1000 + 1,
            serde_json::to_vec(&json!({"endpoint": "no-such-endpoint", "id": "x", "reward": 1.0}))
                .unwrap(),
        );
        bodies.insert(
            i * 1000 + 2,
            serde_json::to_vec(
                &json!({"endpoint": "fraud", "id": format!("ghost-{run}-{i}"), "reward": 1.0}),
            )
            .unwrap(),
        );
    }
    let mut confirms = Vec::new();
    for body in &bodies {
        confirms.push(
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }

    // SIGKILL the consumer three times at moments the clock picks, restarting it each time.
    for k in 0..3u64 {
        let pause = 300 + (run as u64 / (k + 1)) % 1200;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server.kill9();
        server = Server::start(dir.path(), &args);
    }
    let base = server.url();

    let dead = format!("{queue}.dead");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let counted = rewards(dir.path(), &base);
        let left =
            waiting(&channel, &queue).await + waiting(&channel, &format!("{queue}.retry")).await;
        let dead_count = waiting(&channel, &dead).await;
        if counted >= n as u64 && dead_count >= 15 && left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counted {counted}, dead {dead_count}, still queued {left}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rewards(dir.path(), &base),
        n as u64,
        "every valid message counted exactly once"
    );

    // `ferry feedback dead-letters` lists the poison ones, each with its reason, and leaves them.
    let queue_args = ["--queue", amqp.as_str(), "--queue-name", queue.as_str()];
    // Dead letters are at least once: a kill between a dead letter's confirm and the ack of its
    // original dead-letters that message again when it is redelivered, so each of the three
    // kills may add one.
    let listed = dead_letters(dir.path(), &queue_args);
    let total = listed["total"].as_u64().unwrap();
    assert!((15..=18).contains(&total), "{listed}");
    let reasons: Vec<String> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(reasons.len() as u64, total, "{reasons:?}");
    let kinds =
        |reasons: &[String], what: &str| reasons.iter().filter(|r| r.contains(what)).count();
    for what in ["malformed", "unknown endpoint", "after 2 retries"] {
        assert!(
            (5..=8).contains(&kinds(&reasons, what)),
            "{what}: {reasons:?}"
        );
    }
    assert_eq!(
        kinds(&reasons, "malformed")
            + kinds(&reasons, "unknown endpoint")
            + kinds(&reasons, "after 2 retries"),
        reasons.len(),
        "{reasons:?}"
    );
    assert_eq!(
        waiting(&channel, &dead).await as u64,
        total,
        "listing consumed nothing"
    );
    // Without a broker to ask: a usage error (exit code 2) that names the flag.
    let missing = ferry(dir.path(), &["feedback", "dead-letters"], &[]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("--queue"), "{}", text(&missing));
    let table = ferry(
        dir.path(),
        &[
            &["feedback", "dead-letters"],
            &queue_args[..],
            &["--limit", "3"],
        ]
        .concat(),
        &[],
    );
    assert!(table.status.success(), "{}", text(&table));
    let shown = String::from_utf8_lossy(&table.stdout);
    assert!(
        shown.contains("REASON")
            && shown.contains(&format!("{total} message(s) in"))
            && shown.contains("the first 3 shown"),
        "{shown}"
    );
    let missing = ferry(
        dir.path(),
        &[
            "feedback",
            "dead-letters",
            "--queue",
            amqp.as_str(),
            "--queue-name",
            "no.such.queue",
        ],
        &[],
    );
    assert_eq!(missing.status.code(), Some(3), "{}", text(&missing));
    assert!(
        text(&missing).contains("no.such.queue.dead"),
        "{}",
        text(&missing)
    );

    // The ghosts' predictions exist now: a replay counts them; the rest come back with reasons.
    for i in 0..5 {
        let r = client
            .post(format!("{base}/v2/models/fraud/infer"))
            .json(&json!({"id": format!("ghost-{run}-{i}"), "inputs": inputs}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let replayed = ferry(
        dir.path(),
        &[
            &["feedback", "dead-letters", "replay"],
            &queue_args[..],
            &["-o", "json"],
        ]
        .concat(),
        &[],
    );
    assert!(replayed.status.success(), "{}", text(&replayed));
    let replayed: Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert_eq!(replayed["replayed"], total, "{replayed}");
    let (malformed, unknown) = (
        kinds(&reasons, "malformed"),
        kinds(&reasons, "unknown endpoint"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while rewards(dir.path(), &base) < n as u64 + 5
        || (waiting(&channel, &dead).await as usize) < malformed + unknown
    {
        assert!(
            Instant::now() < deadline,
            "the replay was not consumed\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        rewards(dir.path(), &base),
        n as u64 + 5,
        "the replayed ghosts counted once each"
    );

    // What is left: the 10 that can never count (and their duplicates), with their reasons,
    // replayed once.
    let first_reasons = reasons;
    let mut reasons = Vec::new();
    while let Some(message) = channel
        .basic_get(dead.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        let headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        let reason = match headers.inner().get("x-ferry-reason") {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("no reason header: {other:?}"),
        };
        assert!(
            matches!(
                headers.inner().get("x-ferry-replays"),
                Some(AMQPValue::LongUInt(1))
            ),
            "{headers:?}"
        );
        reasons.push(reason);
        message
            .delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(
        reasons.len(),
        malformed + unknown,
        "{reasons:?} after {first_reasons:?}"
    );
    assert_eq!(kinds(&reasons, "malformed"), malformed, "{reasons:?}");
    assert_eq!(kinds(&reasons, "unknown endpoint"), unknown, "{reasons:?}");

    // Feedback the registry recorded (from the queue, and posted to its HTTP route) is in the
    // feedback log next to serving's. (Lines batched in the seconds before a SIGKILL are lost
    // with the process, so only feedback after the last restart is checked.)
    let r = client
        .post(format!("{base}/v2/models/fraud/infer"))
        .json(&json!({"id": format!("http-{run}"), "inputs": inputs}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/api/v1/endpoints/fraud/feedback"))
        .json(&json!({"id": format!("http-{run}"), "reward": 0.5, "label": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let mut expected: Vec<String> = (0..5).map(|i| format!("ghost-{run}-{i}")).collect();
    expected.push(format!("http-{run}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logged: std::collections::HashMap<String, Value> =
            log_lines(&dir.path().join("log"), "feedback/fraud/")
                .into_iter()
                .map(|v| (v["id"].as_str().unwrap().to_string(), v))
                .collect();
        let missing: Vec<_> = expected
            .iter()
            .filter(|id| !logged.contains_key(*id))
            .collect();
        if missing.is_empty() {
            let http = &logged[&format!("http-{run}")];
            assert_eq!(http["reward"], 0.5, "{http}");
            assert_eq!(http["version"], v1, "{http}");
            assert!(http["correct"].is_boolean(), "{http}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not in the feedback log: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Stopped, nothing is left unacked: it would be back in the queue.
    server.terminate();
    assert_eq!(waiting(&channel, &queue).await, 0);
    for q in [queue.clone(), format!("{queue}.retry"), dead] {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = channel
        .exchange_delete(format!("{queue}.dlx").as_str().into(), Default::default())
        .await;
}

/// `ferry feedback dead-letters … -o json`.
fn dead_letters(dir: &std::path::Path, queue_args: &[&str]) -> Value {
    let out = ferry(
        dir,
        &[&["feedback", "dead-letters", "-o", "json"], queue_args].concat(),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}
