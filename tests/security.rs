//! Access control of the whole `ferry up` process, route by route and role by role, and secrets
//! that never leak into logs, errors, events or metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;

const READ: &str = "read-token-0123456789abcdef";
const FEEDBACK: &str = "feedback-token-0123456789abcdef";
const SERVING: &str = "serving-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";
const WEBHOOK_SECRET: &str = "webhook-secret-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Anonymous,
    BadToken,
    Read,
    Feedback,
    Serving,
    Write,
    Admin,
}

impl Who {
    fn token(self) -> Option<&'static str> {
        match self {
            Who::Anonymous => None,
            Who::BadToken => Some("not-a-token-of-this-server"),
            Who::Read => Some(READ),
            Who::Feedback => Some(FEEDBACK),
            Who::Serving => Some(SERVING),
            Who::Write => Some(WRITE),
            Who::Admin => Some(ADMIN),
        }
    }
}

/// Who a route lets in.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// Probes and scrapes: everyone.
    Open,
    /// Any valid token.
    Read,
    /// Business feedback: role `feedback` or stronger (an inference-only token may not steer
    /// a rollout).
    Feedback,
    /// A serving replica's token (role `serving`) or stronger.
    Serving,
    Write,
    Admin,
}

/// The status a caller gets: refused (401 without a valid token, 403 with too weak a one), or
/// let in and answered with one of `allowed`.
fn expected(need: Need, who: Who, allowed: &[u16]) -> Vec<u16> {
    let rank = |w: Who| match w {
        Who::Anonymous | Who::BadToken => 0,
        Who::Read => 1,
        Who::Feedback => 2,
        Who::Serving => 3,
        Who::Write => 4,
        Who::Admin => 5,
    };
    let needed = match need {
        Need::Open => 0,
        Need::Read => 1,
        Need::Feedback => 2,
        Need::Serving => 3,
        Need::Write => 4,
        Need::Admin => 5,
    };
    if rank(who) >= needed {
        allowed.to_vec()
    } else if rank(who) == 0 {
        vec![401]
    } else {
        vec![403]
    }
}

/// One row of the matrix: the route as written in the router, a concrete request for it, who
/// it needs, and what an admitted caller gets.
struct Row {
    route: &'static str,
    method: Method,
    path: String,
    body: Body,
    need: Need,
    allowed: &'static [u16],
}

enum Body {
    None,
    Json(Value),
    Upload,
}

fn row(
    route: &'static str,
    method: Method,
    path: &str,
    body: Body,
    need: Need,
    allowed: &'static [u16],
) -> Row {
    Row {
        route,
        method,
        path: path.to_string(),
        body,
        need,
        allowed,
    }
}

fn upload_form() -> reqwest::multipart::Form {
    let bytes = std::fs::read(fixture("mlp.onnx")).unwrap();
    reqwest::multipart::Form::new().part(
        "model",
        reqwest::multipart::Part::bytes(bytes).file_name("mlp.onnx"),
    )
}

fn request_body() -> Value {
    let body: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("mlp-request.json")).unwrap())
            .unwrap();
    json!({"inputs": body["inputs"]})
}

async fn send(client: &reqwest::Client, base: &str, row: &Row, who: Who) -> (u16, String) {
    let mut request = client.request(row.method.clone(), format!("{base}{}", row.path));
    if let Some(token) = who.token() {
        request = request.bearer_auth(token);
    }
    request = match &row.body {
        Body::None => request,
        Body::Json(v) => request.json(v),
        Body::Upload => request.multipart(upload_form()),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    // SSE never ends: the status is all there is to read.
    let text = if row.route.ends_with("/stream") && status == 200 {
        String::new()
    } else {
        response.text().await.unwrap_or_default()
    };
    (status, text)
}

fn matrix(webhook: &str) -> Vec<Row> {
    use Body::{Json, None as NoBody, Upload};
    let m = "/api/v1/models/fraud";
    let e = "/api/v1/endpoints/fraud";
    let w = format!("/api/v1/webhooks/{webhook}");
    let ok: &[u16] = &[200];
    vec![
        // Open: probes and scrapes.
        row("/healthz", Method::GET, "/healthz", NoBody, Need::Open, ok),
        // Open: the web UI's files (they hold no data; every call they make needs a token).
        // `/` sends browsers to the UI; an API client gets a 404.
        row("/", Method::GET, "/", NoBody, Need::Open, &[404]),
        row("/ui", Method::GET, "/ui", NoBody, Need::Open, ok),
        row("/ui/", Method::GET, "/ui/", NoBody, Need::Open, ok),
        row(
            "/ui/assets/{file}",
            Method::GET,
            "/ui/assets/app.js",
            NoBody,
            Need::Open,
            ok,
        ),
        row(
            "/ui/{*path}",
            Method::GET,
            "/ui/models/fraud",
            NoBody,
            Need::Open,
            ok,
        ),
        row("/readyz", Method::GET, "/readyz", NoBody, Need::Open, ok),
        row("/metrics", Method::GET, "/metrics", NoBody, Need::Open, ok),
        row(
            "/v2/health/live",
            Method::GET,
            "/v2/health/live",
            NoBody,
            Need::Open,
            ok,
        ),
        row(
            "/v2/health/ready",
            Method::GET,
            "/v2/health/ready",
            NoBody,
            Need::Open,
            ok,
        ),
        // Registry reads.
        row(
            "/api/v1/models",
            Method::GET,
            "/api/v1/models",
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/models/{name}",
            Method::GET,
            m,
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/models/{name}/versions",
            Method::GET,
            &format!("{m}/versions"),
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/models/{name}/versions/{version}",
            Method::GET,
            &format!("{m}/versions/1"),
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/models/{name}/versions/{version}/profile",
            Method::GET,
            &format!("{m}/versions/1/profile"),
            NoBody,
            Need::Read,
            &[404],
        ),
        row(
            "/api/v1/models/{name}/versions/{version}/artifact",
            Method::GET,
            &format!("{m}/versions/1/artifact"),
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/models/{name}/aliases/{alias}",
            Method::GET,
            &format!("{m}/aliases/production"),
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/endpoints",
            Method::GET,
            "/api/v1/endpoints",
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/endpoints/{name}",
            Method::GET,
            e,
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/endpoints/{name}/analysis",
            Method::GET,
            &format!("{e}/analysis"),
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/endpoints/{name}/analysis/series",
            Method::GET,
            &format!("{e}/analysis/series?window=5m&step=30s"),
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/endpoints/{name}/histograms",
            Method::GET,
            &format!("{e}/histograms"),
            NoBody,
            Need::Read,
            &[404],
        ),
        row(
            "/api/v1/whoami",
            Method::GET,
            "/api/v1/whoami",
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/events",
            Method::GET,
            "/api/v1/events",
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/api/v1/events/stream",
            Method::GET,
            "/api/v1/events/stream",
            NoBody,
            Need::Read,
            ok,
        ),
        // Registry writes.
        row(
            "/api/v1/models/{name}/versions",
            Method::POST,
            &format!("{m}/versions"),
            Upload,
            Need::Write,
            &[201],
        ),
        row(
            "/api/v1/models/{name}/versions/{version}",
            Method::PATCH,
            &format!("{m}/versions/1"),
            Json(json!({"status": "active"})),
            Need::Write,
            ok,
        ),
        row(
            "/api/v1/models/{name}/aliases/{alias}",
            Method::PUT,
            &format!("{m}/aliases/production"),
            Json(json!({"version": 1})),
            Need::Write,
            ok,
        ),
        row(
            "/api/v1/models/{name}/aliases/{alias}",
            Method::DELETE,
            &format!("{m}/aliases/never-set"),
            NoBody,
            Need::Write,
            &[404],
        ),
        row(
            "/api/v1/endpoints/{name}",
            Method::PUT,
            e,
            Json(json!({"model": "fraud", "stable": 1})),
            Need::Write,
            ok,
        ),
        row(
            "/api/v1/endpoints/{name}",
            Method::DELETE,
            "/api/v1/endpoints/never-made",
            NoBody,
            Need::Write,
            &[404],
        ),
        row(
            "/api/v1/endpoints/{name}/reports",
            Method::POST,
            &format!("{e}/reports"),
            Json(json!({"replica": "test", "interval_seconds": 5.0, "versions": {}})),
            Need::Serving,
            &[202, 204],
        ),
        row(
            "/api/v1/endpoints/{name}/feedback",
            Method::POST,
            &format!("{e}/feedback"),
            Json(json!({"id": "never-predicted", "reward": 1.0})),
            Need::Feedback,
            &[404],
        ),
        row(
            "/api/v1/endpoints/{name}/rollout-events",
            Method::POST,
            &format!("{e}/rollout-events"),
            Json(
                json!({"reason": "RolloutStarted", "message": "matrix", "phase": "Progressing", "weight": 0.0}),
            ),
            Need::Write,
            &[201, 202, 204],
        ),
        // Registry administration.
        row(
            "/api/v1/webhooks",
            Method::GET,
            "/api/v1/webhooks",
            NoBody,
            Need::Admin,
            ok,
        ),
        row(
            "/api/v1/webhooks",
            Method::POST,
            "/api/v1/webhooks",
            Json(json!({"url": "http://127.0.0.1:9/hook", "events": ["drift.*"]})),
            Need::Admin,
            &[201],
        ),
        row(
            "/api/v1/webhooks/{id}",
            Method::GET,
            &w,
            NoBody,
            Need::Admin,
            ok,
        ),
        row(
            "/api/v1/webhooks/{id}",
            Method::DELETE,
            "/api/v1/webhooks/00000000-0000-4000-8000-000000000000",
            NoBody,
            Need::Admin,
            &[404],
        ),
        row(
            "/api/v1/webhooks/{id}/deliveries",
            Method::GET,
            &format!("{w}/deliveries"),
            NoBody,
            Need::Admin,
            ok,
        ),
        row(
            "/api/v1/webhooks/{id}/dead-letters",
            Method::GET,
            &format!("{w}/dead-letters"),
            NoBody,
            Need::Admin,
            ok,
        ),
        row(
            "/api/v1/webhooks/{id}/dead-letters/{delivery}/replay",
            Method::POST,
            &format!("{w}/dead-letters/00000000-0000-4000-8000-000000000000/replay"),
            NoBody,
            Need::Admin,
            &[404],
        ),
        // Serving: any valid token may predict and read.
        row("/v2", Method::GET, "/v2", NoBody, Need::Read, ok),
        row(
            "/v2/models/{name}",
            Method::GET,
            "/v2/models/fraud",
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/v2/models/{name}/ready",
            Method::GET,
            "/v2/models/fraud/ready",
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/v2/models/{name}/config",
            Method::GET,
            "/v2/models/fraud/config",
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/v2/models/{name}/infer",
            Method::POST,
            "/v2/models/fraud/infer",
            Json(request_body()),
            Need::Read,
            ok,
        ),
        row(
            "/v2/models/{name}/feedback",
            Method::POST,
            "/v2/models/fraud/feedback",
            Json(json!({"id": "never-predicted", "reward": 1.0})),
            Need::Feedback,
            &[404],
        ),
        row(
            "/v2/models/{name}/stats",
            Method::GET,
            "/v2/models/fraud/stats",
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/v2/models/{name}/versions/{version}",
            Method::GET,
            "/v2/models/fraud/versions/1",
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/v2/models/{name}/versions/{version}/ready",
            Method::GET,
            "/v2/models/fraud/versions/1/ready",
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/v2/models/{name}/versions/{version}/config",
            Method::GET,
            "/v2/models/fraud/versions/1/config",
            NoBody,
            Need::Read,
            ok,
        ),
        row(
            "/v2/models/{name}/versions/{version}/infer",
            Method::POST,
            "/v2/models/fraud/versions/1/infer",
            Json(request_body()),
            Need::Read,
            ok,
        ),
        row(
            "/v2/repository/index",
            Method::POST,
            "/v2/repository/index",
            NoBody,
            Need::Read,
            ok,
        ),
    ]
}

/// Every route string the routers register, read from their source: a route added without a
/// row in the matrix fails the matrix test.
fn routes_in_source() -> BTreeSet<String> {
    let files = [
        "registry/src/api/mod.rs",
        "registry/src/api/webhooks.rs",
        "registry/src/ui.rs",
        "serving/src/api/mod.rs",
    ];
    let quoted =
        regex::Regex::new(r#""(/(?:api/v1|v2|healthz|readyz|metrics|ui)?[^"]*)""#).unwrap();
    let mut routes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        // Only the first argument of `.route(`, which may be on the next line.
        let compact: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for piece in compact.split(".route(").skip(1) {
            if let Some(c) = quoted.captures(piece.trim_start())
                && piece.trim_start().starts_with('"')
            {
                routes.insert(c[1].to_string());
            }
        }
    }
    routes
}

async fn start_with_tokens(dir: &std::path::Path) -> Server {
    Server::start(
        dir,
        &[
            "up",
            "--no-demo",
            "--token",
            &format!("read:{READ}"),
            "--token",
            &format!("feedback:{FEEDBACK}"),
            "--token",
            &format!("serving:{SERVING}"),
            "--token",
            &format!("write:{WRITE}"),
            "--token",
            &format!("admin:{ADMIN}"),
            // The matrix's webhook points at a port on this machine.
            "--webhook-allow-private",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_role_exactly_as_intended() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path()).await;
    let base = server.url();
    let client = reqwest::Client::new();

    // The things the routes talk about: a model, an alias, an endpoint being served, a webhook.
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(ADMIN);
    let up = admin(client.post(format!("{base}/api/v1/models/fraud/versions")))
        .multipart(upload_form())
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), StatusCode::CREATED);
    let r = admin(client.put(format!("{base}/api/v1/models/fraud/aliases/production")))
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = admin(client.put(format!("{base}/api/v1/endpoints/fraud")))
        .json(&json!({"model": "fraud", "stable": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let hook: Value = admin(client.post(format!("{base}/api/v1/webhooks")))
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["drift.*"], "secret": WEBHOOK_SECRET}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let webhook = hook["id"].as_str().unwrap().to_string();
    // Serving picks the endpoint up from the event stream.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = admin(client.get(format!("{base}/v2/models/fraud/ready")))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fraud never became ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let rows = matrix(&webhook);
    let covered: BTreeSet<String> = rows.iter().map(|r| r.route.to_string()).collect();
    let in_source = routes_in_source();
    assert!(in_source.len() >= 25, "route scan broke: {in_source:?}");
    let missing: Vec<&String> = in_source.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in the matrix: {missing:?}"
    );

    let mut wrong = Vec::new();
    for row in &rows {
        for who in [
            Who::Anonymous,
            Who::BadToken,
            Who::Read,
            Who::Feedback,
            Who::Serving,
            Who::Write,
            Who::Admin,
        ] {
            let want = expected(row.need, who, row.allowed);
            let (status, body) = send(&client, &base, row, who).await;
            if !want.contains(&status) {
                wrong.push(format!(
                    "{} {} as {who:?}: {status} (want {want:?}) {}",
                    row.method,
                    row.path,
                    body.chars().take(200).collect::<String>()
                ));
            }
            if status == 401 {
                assert!(
                    body.to_lowercase().contains("token"),
                    "a 401 should say a token is needed: {body}"
                );
            }
            if status == 403 {
                assert!(
                    ["feedback", "serving", "write", "admin"]
                        .iter()
                        .any(|role| body.contains(&format!("the `{role}` role"))),
                    "a 403 should name the role needed: {body}"
                );
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_errors_events_or_metrics() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A database URL with a password (PostgreSQL's trust auth ignores it) when PostgreSQL is
    // here, so the URL goes through every log line that mentions the database.
    let db_password = "db-password-0123456789abcdef";
    let mut args: Vec<String> = Vec::new();
    if let Ok(url) = std::env::var("FERRY_TEST_POSTGRES_URL") {
        let name = format!("ferry_test_secrets_{}", std::process::id());
        let admin = sqlx_free_create_database(&url, &name);
        if admin {
            let mut parsed = url::Url::parse(&url).unwrap();
            parsed.set_path(&format!("/{name}"));
            parsed.set_password(Some(db_password)).unwrap();
            args.extend(["--database-url".to_string(), parsed.to_string()]);
        }
    } else {
        assert!(!in_ci(), "FERRY_TEST_POSTGRES_URL is required when CI=true");
    }
    let mut all: Vec<&str> = vec![
        "up",
        "--no-demo",
        "--token",
        "read:read-token-0123456789abcdef",
        "--token",
        "write:write-token-0123456789abcdef",
        "--token",
        "admin:admin-token-0123456789abcdef",
        "--webhook-allow-private",
    ];
    all.extend(args.iter().map(String::as_str));
    let server = Server::start_with_env(dir.path(), &all, &[("FERRY_LOG", "debug")]);
    let base = server.url();
    let client = reqwest::Client::new();
    let mut answers = String::new();

    // Wrong and weak tokens, a webhook with a secret, a failing delivery, bad requests.
    for token in [READ, "admin-token-0123456789abcdeX", WRITE] {
        let r = client
            .post(format!("{base}/api/v1/webhooks"))
            .bearer_auth(token)
            .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["*"], "secret": WEBHOOK_SECRET}))
            .send()
            .await
            .unwrap();
        answers.push_str(&r.text().await.unwrap());
    }
    let r = client
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(ADMIN)
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["*"], "secret": WEBHOOK_SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = r.text().await.unwrap();
    // The creation answer is the one place the secret is shown; nothing after it.
    assert!(created.contains(WEBHOOK_SECRET));
    let r = client
        .post(format!("{base}/api/v1/models/fraud/versions"))
        .bearer_auth(WRITE)
        .multipart(upload_form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for path in [
        "/api/v1/webhooks",
        "/api/v1/events",
        "/api/v1/models/fraud/versions/1",
        "/api/v1/models/nope",
        "/metrics",
        "/v2/models/fraud",
    ] {
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        answers.push_str(&r.text().await.unwrap());
    }
    // The webhook fails to deliver (nothing listens on port 9): its errors get logged.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let out = ferry(
        dir.path(),
        &["webhook", "list"],
        &[("FERRY_REGISTRY", &base), ("FERRY_TOKEN", ADMIN)],
    );
    assert!(out.status.success(), "{}", text(&out));
    let cli = text(&out);
    drop(server);
    let logs = std::fs::read_to_string(
        dir.path().join(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(Result::ok)
                .find(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .unwrap()
                .file_name(),
        ),
    )
    .unwrap();
    assert!(logs.len() > 1000, "too little was logged to judge: {logs}");
    for secret in [READ, WRITE, ADMIN, WEBHOOK_SECRET, db_password] {
        assert!(!logs.contains(secret), "the logs carry {secret}");
        assert!(!answers.contains(secret), "an answer carries {secret}");
        assert!(!cli.contains(secret), "the CLI prints {secret}");
    }
}

/// Creates database `name` with `psql` (no SQL client in this test crate); false when that fails.
fn sqlx_free_create_database(url: &str, name: &str) -> bool {
    std::process::Command::new("psql")
        .args([url, "-qc", &format!("CREATE DATABASE {name}")])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_server_refuses_rebound_hosts_cross_site_writes_and_form_posts_without_the_client_header()
 {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["up"]);
    let base = server.url();
    let client = reqwest::Client::new();
    let upload = |origin: Option<&str>, ferry_client: bool| {
        let mut r = client
            .post(format!("{base}/api/v1/models/fraud/versions"))
            .multipart(upload_form());
        if let Some(origin) = origin {
            r = r.header("origin", origin);
        }
        if ferry_client {
            r = r.header("x-ferry-client", "test");
        }
        r
    };

    // DNS rebinding: the attacker's name, now pointing at 127.0.0.1, arrives as the Host.
    for path in ["/api/v1/models", "/v2/models/demo", "/v2/models/demo/ready"] {
        let r = client
            .get(format!("{base}{path}"))
            .header("host", "rebind.attacker.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains("DNS rebinding"), "{path}: {body}");
    }
    for host in [
        format!("127.0.0.1:{}", server.port),
        format!("localhost:{}", server.port),
    ] {
        let r = client
            .get(format!("{base}/api/v1/models"))
            .header("host", host.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{host}");
    }

    // A page on another site posting a form: refused with or without the client header, and
    // inference from it too.
    for origin in ["https://evil.example", "null"] {
        let r = upload(Some(origin), true).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{origin}");
        assert!(r.text().await.unwrap().contains("another web site"));
        let r = client
            .post(format!("{base}/v2/models/demo/infer"))
            .header("origin", origin)
            .json(&request_body())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "infer from {origin}");
    }
    // A browser that sends no Origin on a form post: the form cannot carry the client header.
    let r = upload(None, false).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("x-ferry-client"));
    let r = client
        .get(format!("{base}/api/v1/models/fraud/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a refused upload created the model"
    );

    // What Ferry's own clients send passes: the client header, or JSON, from the same origin.
    let r = upload(Some(&base), true).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = client
        .post(format!("{base}/v2/models/demo/infer"))
        .json(&request_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let pushed = ferry(
        dir.path(),
        &[
            "model",
            "push",
            fixture("mlp.onnx").to_str().unwrap(),
            "--name",
            "fraud",
        ],
        &[("FERRY_REGISTRY", base.as_str())],
    );
    assert!(pushed.status.success(), "{}", text(&pushed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_cannot_reach_private_addresses_unless_the_registry_allows_them() {
    if !have_onnxruntime() {
        return;
    }
    // A name of this machine that resolves to loopback (Debian lists the host name in
    // /etc/hosts): checked at connect time, since a name can be re-pointed after creation.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let resolved: Vec<std::net::SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(hostname.as_str(), 80))
            .map(Iterator::collect)
            .unwrap_or_default();
    assert!(
        !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()),
        "this test needs the host name `{hostname}` to resolve to loopback only (got {resolved:?})"
    );
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = receiver.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["up", "--no-demo", "--token", &format!("admin:{ADMIN}")],
    );
    let base = server.url();
    let client = reqwest::Client::new();
    let create = |url: String| {
        client
            .post(format!("{base}/api/v1/webhooks"))
            .bearer_auth(ADMIN)
            .json(&json!({"url": url, "events": ["*"]}))
            .send()
    };
    for (url, range) in [
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "link-local",
        ),
        (format!("http://127.0.0.1:{port}/hook"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{port}/hook"), "loopback"),
        ("http://10.0.0.1/hook".to_string(), "private"),
        ("http://100.64.0.1/hook".to_string(), "carrier-grade NAT"),
        ("http://[fd00::1]/hook".to_string(), "unique-local"),
        (format!("http://localhost:{port}/hook"), "loopback"),
    ] {
        let r = create(url.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{url}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(range) && body.contains("--webhook-allow-private"),
            "{url}: {body}"
        );
    }

    // A name: accepted, and every attempt refused at connect time.
    let r = create(format!("http://{hostname}:{port}/hook"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let hook: Value = r.json().await.unwrap();
    let id = hook["id"].as_str().unwrap();
    // An event for it to deliver.
    let r = create("https://ci.example.com/other".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let error = loop {
        let page: Value = client
            .get(format!("{base}/api/v1/webhooks/{id}/deliveries"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(error) = page["items"]
            .as_array()
            .and_then(|items| items.iter().find_map(|d| d["last_error"].as_str()))
        {
            break error.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt was made: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        error.contains("non-public") && error.contains("loopback"),
        "{error}"
    );
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the registry connected to a loopback receiver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_file_of_digests_accepts_the_tokens_it_was_made_from() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The recipe of docs/security.md, run by a shell.
    let mut file = String::from("# digests only\n");
    for (role, token) in [("read", READ), ("admin", ADMIN)] {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                r#"echo "{role}:sha256:$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)""#
            ))
            .env("TOKEN", token)
            .output()
            .unwrap();
        assert!(out.status.success());
        file.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    assert!(!file.contains(READ) && !file.contains(ADMIN), "{file}");
    let path = dir.path().join("tokens");
    std::fs::write(&path, &file).unwrap();
    let server = Server::start(
        dir.path(),
        &["up", "--no-demo", "--tokens-file", path.to_str().unwrap()],
    );
    let base = server.url();
    let client = reqwest::Client::new();
    let status = |token: &'static str, method: Method| {
        client
            .request(method, format!("{base}/api/v1/webhooks"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        status(READ, Method::GET).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(ADMIN, Method::GET).await.unwrap().status(),
        StatusCode::OK
    );
    // The digest is not a token.
    let digest = file
        .lines()
        .nth(2)
        .unwrap()
        .trim_start_matches("admin:")
        .to_string();
    let r = client
        .get(format!("{base}/api/v1/models"))
        .bearer_auth(digest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_token_on_the_registry_and_on_serving() {
    if !have_onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = format!("read:{READ}");
    let registry = Server::start(
        dir.path(),
        &[
            "up",
            "--no-demo",
            "--token",
            &token,
            "--metrics-require-token",
        ],
    );
    let model = format!("mlp={}", fixture("mlp.onnx").display());
    let serving = Server::start(
        dir.path(),
        &[
            "serving",
            "--model",
            &model,
            "--token",
            &token,
            "--metrics-require-token",
        ],
    );
    let client = reqwest::Client::new();
    for base in [registry.url(), serving.url()] {
        let r = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{base}");
        assert!(r.headers().contains_key("www-authenticate"));
        assert!(r.text().await.unwrap().contains("--metrics-require-token"));
        let r = client
            .get(format!("{base}/metrics"))
            .bearer_auth("not-a-token-of-this-server")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{base}");
        let r = client
            .get(format!("{base}/metrics"))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{base}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("ferry_http_requests_total"),
            "{base}"
        );
        // Probes stay open.
        let r = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{base}");
    }
}
