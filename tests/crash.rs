//! Crash consistency of the registry: the real `ferry registry` binary under concurrent uploads
//! (with Idempotency-Keys), alias moves, endpoint writes, an event consumer and, every other
//! round, a `ferry registry gc --min-age 0s` racing the uploads, is killed with SIGKILL at a
//! random moment, restarted, and checked, round after round, on SQLite and PostgreSQL, with a
//! local folder and with the S3 server:
//!
//! - every acknowledged version is there, under its number, and its bytes hash to its sha256;
//! - nothing unacknowledged is half-visible: every version the registry shows (acknowledged or
//!   not) has complete bytes, came from one upload we sent, and numbers are gapless;
//! - a retried Idempotency-Key (immediately, and after the crash) gives exactly one version;
//! - aliases and endpoints hold the last acknowledged write, or one whose answer the crash lost;
//!   they point at versions that exist;
//! - the event log has ids 1..=head with no gap or duplicate, every event a consumer read before
//!   the crash is still there unchanged, and the log agrees with the state (one
//!   `version.created` per version, aliases and endpoint revisions replay to what is stored);
//! - every object in the store is a blob a version references or is on the garbage list
//!   `ferry registry gc --dry-run` reports; after the last round gc removes exactly that list.
//!
//! `FERRY_CRASH_ROUNDS` (default 6) sets the rounds per store combination, `FERRY_CRASH_SEED`
//! replays a run (the seed is printed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::*;

const MODELS: [&str; 3] = ["crash-a", "crash-b", "crash-c"];
const ALIASES: [&str; 2] = ["production", "staging"];
const ENDPOINTS: [(&str, &str); 2] = [("ep-a", "crash-a"), ("ep-b", "crash-b")];
const UPLOADERS: u64 = 4;
/// The replicated test's drift incident: a model with a training profile behind an endpoint
/// with a drift policy, set up once before the load (its endpoint is not one the writers move).
const DRIFT_MODEL: &str = "crash-drift";
const DRIFT_ENDPOINT: &str = "ep-drift";
/// How long the drift reporter's inputs look like the training data, then like nothing in it.
const DRIFT_PHASE: Duration = Duration::from_secs(3);

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// splitmix64: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A valid ONNX model unlike any other: mostly small, sometimes 1–3 MiB so that kills land
/// in the middle of the stream.
fn model_bytes(rng: &mut Rng) -> Vec<u8> {
    let weights = if rng.chance(0.15) {
        4 * rng.range(256 * 1024, 768 * 1024)
    } else {
        4 * rng.range(256, 16 * 1024)
    } as usize;
    let (prefix, suffix) = onnx_bytes::identity_model_parts(weights);
    let mut noise = vec![0u8; weights];
    for chunk in noise.chunks_mut(8) {
        let r = rng.next().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    [prefix, noise, suffix].concat()
}

// ---------------------------------------------------------------------------------------------
// The deployment under test

#[derive(Clone, Copy, Debug, PartialEq)]
enum Db {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    Local,
    S3,
}

struct Deployment {
    label: String,
    dir: tempfile::TempDir,
    /// Store flags of `ferry registry` and `ferry registry gc`.
    flags: Vec<String>,
    /// Flags only the servers get (the relay, the drift interval).
    serve_flags: Vec<String>,
    /// S3 only: the store, for an independent listing.
    s3: Option<(String, Vec<(String, String)>)>,
    postgres: Option<(String, String)>,
}

fn psql(admin: &str, sql: &str) -> Output {
    std::process::Command::new("psql")
        .args([admin, "-qc", sql])
        .output()
        .unwrap()
}

impl Deployment {
    /// Waits until PostgreSQL has no session left for the killed registry's database. A process
    /// killed with SIGKILL leaves its server-side backends behind for a moment, and a COMMIT
    /// they had already received still completes: checking before they are gone would see a
    /// version appear between two reads of the check (a race of the harness, not of the
    /// registry, whose commits are atomic). SQLite needs nothing: it lives in the process.
    fn wait_for_the_killed_sessions(&self) {
        let Some((admin, name)) = &self.postgres else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = std::process::Command::new("psql")
                .args([
                    admin.as_str(),
                    "-Atqc",
                    &format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                    ),
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == "0" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the killed registry's sessions never ended: {}",
                text(&out)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `None` (and a SKIPPED line) when PostgreSQL or the S3 server is missing outside CI.
    fn new(db: Db, store: Store, replicas: usize) -> Option<Deployment> {
        let label = format!("{db:?}_{store:?}_x{replicas}").to_lowercase();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut flags = vec!["--data-dir".to_string(), data.display().to_string()];
        let mut postgres = None;
        if db == Db::Postgres {
            let admin = std::env::var("FERRY_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let name = format!("ferry_e2e_crash_{}_{label}", std::process::id());
            let created = psql(&admin, &format!("CREATE DATABASE {name}"));
            if !created.status.success() {
                assert!(!in_ci(), "PostgreSQL unavailable in CI: {}", text(&created));
                skipped("PostgreSQL unavailable");
                return None;
            }
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path(&format!("/{name}"));
            flags.extend(["--database-url".to_string(), url.to_string()]);
            postgres = Some((admin, name));
        }
        let mut s3 = None;
        if store == Store::S3 {
            let Ok(endpoint) = std::env::var("FERRY_TEST_S3_ENDPOINT") else {
                assert!(!in_ci(), "FERRY_TEST_S3_ENDPOINT must be set in CI");
                skipped("no S3 server (scripts/test.sh starts one)");
                return None;
            };
            let bucket = std::env::var("FERRY_TEST_S3_BUCKET").unwrap();
            let url = format!("s3://{bucket}/crash-{}-{label}", std::process::id());
            flags.extend(
                [
                    "--blob-url",
                    &url,
                    "--s3-endpoint",
                    &endpoint,
                    "--s3-region",
                    "us-east-1",
                    "--s3-allow-http",
                    "true",
                ]
                .map(String::from),
            );
            let options = vec![
                ("aws_endpoint".to_string(), endpoint),
                ("aws_region".to_string(), "us-east-1".to_string()),
                ("aws_allow_http".to_string(), "true".to_string()),
            ];
            s3 = Some((url, options));
        }
        let deployment = Deployment {
            label,
            dir,
            flags,
            serve_flags: Vec::new(),
            s3,
            postgres,
        };
        let out = deployment.registry(&["migrate"]);
        assert!(out.status.success(), "{}", text(&out));
        Some(deployment)
    }

    fn registry(&self, sub: &[&str]) -> Output {
        let mut args = vec!["registry"];
        args.extend(sub);
        args.extend(self.flags.iter().map(String::as_str));
        ferry(self.dir.path(), &args, &[])
    }

    fn serve(&self) -> Server {
        let mut args = vec!["registry"];
        args.extend(self.flags.iter().map(String::as_str));
        args.extend(self.serve_flags.iter().map(String::as_str));
        // A short webhook timeout keeps the claims of a killed replica short (timeout + 30 s).
        Server::start_with_env(self.dir.path(), &args, &[("FERRY_WEBHOOK_TIMEOUT", "2s")])
    }

    fn local_root(&self) -> Option<PathBuf> {
        self.s3
            .is_none()
            .then(|| self.dir.path().join("data/blobs"))
    }

    /// The key prefix of `blobs/sha256/` as gc reports keys.
    fn blob_key(&self, sha256: &str) -> String {
        match &self.s3 {
            None => format!("blobs/sha256/{sha256}"),
            Some((url, _)) => {
                let prefix = url.split_once("//").unwrap().1.split_once('/').unwrap().1;
                format!("{prefix}/blobs/sha256/{sha256}")
            }
        }
    }

    /// Every object in the store, listed without the registry's code: the folder's files
    /// (including half-written ones), or the bucket's listing.
    async fn objects(&self) -> BTreeSet<String> {
        match (&self.s3, self.local_root()) {
            (None, Some(root)) => files_under(&root).into_iter().collect(),
            (Some((url, options)), _) => {
                let store = ferry_registry::BlobStore::open(url, options).unwrap();
                store
                    .list(store.root())
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| m.location.to_string())
                    .collect()
            }
            (None, None) => unreachable!(),
        }
    }

    fn gc(&self, extra: &[&str]) -> Value {
        let mut sub = vec!["gc", "--min-age", "0s", "-o", "json"];
        sub.extend(extra);
        let out = self.registry(&sub);
        assert!(out.status.success(), "gc failed: {}", text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("gc printed no JSON ({e}): {}", text(&out)))
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.postgres {
            let _ = psql(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// The registries the clients spread their requests over (one, or several replicas).
type Bases = Arc<Vec<String>>;

/// What a webhook receiver got: every (event id, `X-Ferry-Delivery`) POSTed to it, in order.
type Deliveries = Arc<Mutex<Vec<(i64, String)>>>;

/// A webhook receiver on a local port that answers 204 to everything and remembers it.
async fn start_receiver() -> (String, Deliveries) {
    let received: Deliveries = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let store = store.clone();
                async move {
                    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let delivery = headers
                        .get("x-ferry-delivery")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    store
                        .lock()
                        .unwrap()
                        .push((event["id"].as_i64().unwrap_or(-1), delivery));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// Waits until the receiver holds every event after `cursor` up to `head`, then checks each
/// event came with one delivery id (a repeat is a retry of the same delivery: at least once,
/// never two deliveries of one event). Returns (deliveries, repeats, seconds waited).
async fn check_webhook_deliveries(
    received: &Deliveries,
    cursor: i64,
    head: i64,
) -> Result<(usize, usize, f64), String> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    loop {
        let got: BTreeSet<i64> = received.lock().unwrap().iter().map(|(id, _)| *id).collect();
        let missing: Vec<i64> = (cursor + 1..=head).filter(|id| !got.contains(id)).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} events never reached the webhook in 180 s, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = received.lock().unwrap().clone();
    let mut ids: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for (event, delivery) in &all {
        ids.entry(*event).or_default().insert(delivery.clone());
    }
    if let Some((event, deliveries)) = ids.iter().find(|(_, d)| d.len() > 1) {
        return Err(format!(
            "event {event} was sent as {} different deliveries: {deliveries:?}",
            deliveries.len()
        ));
    }
    if let Some(stray) = ids.keys().find(|id| **id <= cursor || **id > head) {
        return Err(format!(
            "the webhook got event {stray}, outside ({cursor}, {head}]"
        ));
    }
    Ok((
        all.len(),
        all.len() - ids.len(),
        started.elapsed().as_secs_f64(),
    ))
}

// ---------------------------------------------------------------------------------------------
// What the clients know

struct Upload {
    model: String,
    bytes: Arc<Vec<u8>>,
    sha256: String,
    /// The version an answer acknowledged.
    acked: Option<i64>,
}

/// A value written by a single sequential writer: what was acknowledged last, and the writes
/// since whose answers were lost (each may or may not have committed).
#[derive(Default)]
struct Slot<T> {
    acked: Option<T>,
    maybe: Vec<T>,
}

impl<T: PartialEq> Slot<T> {
    fn allows(&self, actual: Option<&T>) -> bool {
        match actual {
            None => self.acked.is_none(),
            Some(v) => self.acked.as_ref() == Some(v) || self.maybe.contains(v),
        }
    }
}

/// `(model, stable, canary)` of a policy, as JSON values.
type Policy = (Value, Value, Value);

fn policy_of(v: &Value) -> Policy {
    (v["model"].clone(), v["stable"].clone(), v["canary"].clone())
}

#[derive(Default)]
struct Stats {
    acked: u64,
    replays: u64,
    retried_503: u64,
    alias_moves: u64,
    endpoint_writes: u64,
    events_read: u64,
    gc_runs: u64,
    max_garbage: u64,
}

#[derive(Default)]
struct Truth {
    uploads: BTreeMap<String, Upload>,
    /// Keys sent whose answer was lost: retried by the next round's uploaders.
    pending: VecDeque<String>,
    aliases: BTreeMap<(String, String), Slot<i64>>,
    /// `(revision, policy)` per endpoint.
    endpoints: BTreeMap<String, Slot<(i64, Policy)>>,
    /// Every event a consumer has read, by id.
    events: BTreeMap<i64, Value>,
    cursor: i64,
    violations: Vec<String>,
    stats: Stats,
    /// Versions whose bytes a check has read back whole.
    verified: BTreeSet<(String, i64)>,
}

type Shared = Arc<Mutex<Truth>>;

fn violation(truth: &Shared, text: String) {
    eprintln!("VIOLATION: {text}");
    truth.lock().unwrap().violations.push(text);
}

fn acked_versions(truth: &Shared, model: &str) -> Vec<i64> {
    let t = truth.lock().unwrap();
    t.uploads
        .values()
        .filter(|u| u.model == model)
        .filter_map(|u| u.acked)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// Status, body (JSON or null) and whether the answer replayed an idempotency key; `Err` when
/// no answer came (the server is gone).
async fn upload(
    client: &reqwest::Client,
    base: &str,
    model: &str,
    key: &str,
    bytes: &Arc<Vec<u8>>,
) -> Result<(u16, Value, bool), String> {
    let form = reqwest::multipart::Form::new()
        .part(
            "metadata",
            reqwest::multipart::Part::text(json!({"tags": {"key": key}}).to_string()),
        )
        .part(
            "model",
            reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("model.onnx"),
        );
    let response = client
        .post(format!("{base}/api/v1/models/{model}/versions"))
        .header("Idempotency-Key", key)
        .header("x-ferry-client", "test")
        .multipart(form)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        replayed,
    ))
}

async fn send_json(
    request: reqwest::RequestBuilder,
) -> Result<(u16, Value, reqwest::header::HeaderMap), String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
    ))
}

async fn get_json(client: &reqwest::Client, url: String) -> (u16, Value) {
    let (status, body, _) = send_json(client.get(&url))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (status, body)
}

// ---------------------------------------------------------------------------------------------
// The load

async fn uploader(
    client: reqwest::Client,
    bases: Bases,
    truth: Shared,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
    tag: String,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        // Half the time, first retry a key whose answer an earlier crash lost.
        let retry = rng
            .chance(0.5)
            .then(|| truth.lock().unwrap().pending.pop_front())
            .flatten();
        let key = match retry {
            Some(key) => key,
            None => {
                n += 1;
                let key = format!("{tag}-{n}");
                let bytes = model_bytes(&mut rng);
                let upload = Upload {
                    model: rng.pick(&MODELS).to_string(),
                    sha256: sha(&bytes),
                    bytes: Arc::new(bytes),
                    acked: None,
                };
                truth.lock().unwrap().uploads.insert(key.clone(), upload);
                key
            }
        };
        let (model, bytes, sha256) = {
            let t = truth.lock().unwrap();
            let u = &t.uploads[&key];
            (u.model.clone(), u.bytes.clone(), u.sha256.clone())
        };
        // Any replica; once acknowledged, sometimes sent again at once: the same version must
        // come back.
        let base = rng.pick(&bases).clone();
        let mut sends = if rng.chance(0.25) { 2 } else { 1 };
        while sends > 0 {
            match upload(&client, &base, &model, &key, &bytes).await {
                Err(_) => {
                    // No answer: the server is gone; a later round, or another replica, retries
                    // the key.
                    truth.lock().unwrap().pending.push_back(key);
                    if bases.len() > 1 {
                        break;
                    }
                    return;
                }
                Ok((503, _, _)) => {
                    truth.lock().unwrap().stats.retried_503 += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok((201, body, replayed)) => {
                    sends -= 1;
                    let mut t = truth.lock().unwrap();
                    let version = body["version"].as_i64().unwrap_or(-1);
                    if body["sha256"] != sha256.as_str() || body["name"] != model.as_str() {
                        drop(t);
                        violation(
                            &truth,
                            format!("upload {key} acknowledged with other content: {body}"),
                        );
                        break;
                    }
                    if replayed {
                        t.stats.replays += 1;
                    }
                    let u = t.uploads.get_mut(&key).unwrap();
                    match u.acked {
                        Some(v) if v != version => {
                            drop(t);
                            violation(
                                &truth,
                                format!(
                                    "Idempotency-Key {key}: acknowledged as {model} v{v}, then as v{version}"
                                ),
                            );
                        }
                        Some(_) => {}
                        None => {
                            u.acked = Some(version);
                            t.stats.acked += 1;
                        }
                    }
                }
                Ok((status, body, _)) => {
                    violation(&truth, format!("upload {key} answered {status}: {body}"));
                    break;
                }
            }
        }
    }
}

async fn alias_mover(
    client: reqwest::Client,
    bases: Bases,
    truth: Shared,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
    model: &'static str,
) {
    while !stop.load(Ordering::Relaxed) {
        let versions = acked_versions(&truth, model);
        if versions.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let base = rng.pick(&bases).clone();
        let alias = *rng.pick(&ALIASES);
        let version = *rng.pick(&versions);
        let slot_key = (model.to_string(), alias.to_string());
        let answer = send_json(
            client
                .put(format!("{base}/api/v1/models/{model}/aliases/{alias}"))
                .json(&json!({ "version": version })),
        )
        .await;
        let mut t = truth.lock().unwrap();
        match answer {
            Ok((200, body, _)) if body["version"] == version => {
                t.stats.alias_moves += 1;
                let slot = t.aliases.entry(slot_key).or_default();
                slot.acked = Some(version);
                slot.maybe.clear();
            }
            Ok((503, _, _)) => t.aliases.entry(slot_key).or_default().maybe.push(version),
            Ok((status, body, _)) => {
                drop(t);
                violation(
                    &truth,
                    format!("alias {model}@{alias} -> v{version} answered {status}: {body}"),
                );
            }
            Err(_) => {
                t.aliases.entry(slot_key).or_default().maybe.push(version);
                return;
            }
        }
    }
}

async fn endpoint_writer(
    client: reqwest::Client,
    bases: Bases,
    truth: Shared,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
    name: &'static str,
    model: &'static str,
) {
    while !stop.load(Ordering::Relaxed) {
        let versions = acked_versions(&truth, model);
        if versions.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let base = rng.pick(&bases).clone();
        let stable = *rng.pick(&versions);
        let mut policy = json!({ "model": model, "stable": stable });
        let candidates: Vec<i64> = versions.iter().copied().filter(|v| *v != stable).collect();
        if !candidates.is_empty() && rng.chance(0.6) {
            let weight = rng.range(1, 10) as f64 / 10.0;
            policy["canary"] = json!({ "version": *rng.pick(&candidates), "weight": weight });
        }
        let wanted = policy_of(&policy);
        let acked_revision = {
            let t = truth.lock().unwrap();
            t.endpoints
                .get(name)
                .and_then(|s| s.acked.as_ref().map(|(r, _)| *r))
        };
        let request = client
            .put(format!("{base}/api/v1/endpoints/{name}"))
            .json(&policy);
        let request = match acked_revision {
            Some(r) => request.header("If-Match", format!("\"{r}\"")),
            None => request.header("If-None-Match", "*"),
        };
        let answer = send_json(request).await;
        if let Ok((412, _, _)) = answer {
            // Legitimate only when an earlier write whose answer was lost did commit.
            let lost = truth
                .lock()
                .unwrap()
                .endpoints
                .get(name)
                .is_some_and(|s| !s.maybe.is_empty());
            if !lost {
                violation(
                    &truth,
                    format!("endpoint {name}: 412 with no write unanswered"),
                );
                continue;
            }
            let Ok((200, body, _)) =
                send_json(client.get(format!("{base}/api/v1/endpoints/{name}"))).await
            else {
                return;
            };
            let actual = (body["revision"].as_i64().unwrap(), policy_of(&body));
            let mut t = truth.lock().unwrap();
            let slot = t.endpoints.entry(name.to_string()).or_default();
            let after_acked = slot.acked.as_ref().map_or(0, |(r, _)| *r) + 1;
            if actual.0 == after_acked && slot.maybe.iter().any(|(_, p)| *p == actual.1) {
                slot.acked = Some(actual);
                slot.maybe.clear();
            } else {
                drop(t);
                violation(
                    &truth,
                    format!(
                        "endpoint {name}: 412, and revision {} is none of our writes: {body}",
                        actual.0
                    ),
                );
            }
            continue;
        }
        let mut t = truth.lock().unwrap();
        match answer {
            Ok((200 | 201, body, _)) if policy_of(&body) == wanted => {
                t.stats.endpoint_writes += 1;
                let slot = t.endpoints.entry(name.to_string()).or_default();
                slot.acked = Some((body["revision"].as_i64().unwrap(), wanted));
                slot.maybe.clear();
            }
            Ok((503, _, _)) => {
                let next = acked_revision.unwrap_or(0) + 1;
                t.endpoints
                    .entry(name.to_string())
                    .or_default()
                    .maybe
                    .push((next, wanted));
            }
            Ok((status, body, _)) => {
                drop(t);
                violation(
                    &truth,
                    format!("endpoint {name} write answered {status}: {body}"),
                );
            }
            Err(_) => {
                let next = acked_revision.unwrap_or(0) + 1;
                t.endpoints
                    .entry(name.to_string())
                    .or_default()
                    .maybe
                    .push((next, wanted));
                return;
            }
        }
    }
}

/// A consumer following the log from its cursor: ids must come one by one, and an id read
/// before must read the same.
async fn consumer(client: reqwest::Client, bases: Bases, truth: Shared, stop: Arc<AtomicBool>) {
    // Long-polls one replica; when it dies, goes on from another, at the same cursor.
    let mut replica = 0;
    while !stop.load(Ordering::Relaxed) {
        let after = truth.lock().unwrap().cursor;
        let base = &bases[replica % bases.len()];
        let Ok((200, page, _)) = send_json(client.get(format!(
            "{base}/api/v1/events?after={after}&limit=1000&wait=1"
        )))
        .await
        else {
            replica += 1;
            if replica >= bases.len() * 4 {
                return;
            }
            continue;
        };
        let mut t = truth.lock().unwrap();
        for event in page["events"].as_array().unwrap() {
            let id = event["id"].as_i64().unwrap();
            if id != t.cursor + 1 {
                let text = format!("consumer after {} got event {id}", t.cursor);
                t.violations.push(text);
            }
            if let Some(seen) = t.events.get(&id)
                && seen != event
            {
                let text = format!("event {id} changed: {seen} became {event}");
                t.violations.push(text);
            }
            t.events.insert(id, event.clone());
            t.cursor = t.cursor.max(id);
            t.stats.events_read += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks

async fn all_events(client: &reqwest::Client, base: &str) -> (Vec<Value>, i64) {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = get_json(
            client,
            format!("{base}/api/v1/events?after={after}&limit=1000"),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let batch = page["events"].as_array().unwrap();
        if batch.is_empty() {
            return (events, page["head"].as_i64().unwrap());
        }
        events.extend(batch.iter().cloned());
        after = page["next_after"].as_i64().unwrap();
    }
}

async fn paged(client: &reqwest::Client, url: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page_url = match &token {
            Some(t) => format!("{url}?limit=500&page_token={t}"),
            None => format!("{url}?limit=500"),
        };
        let (status, page) = get_json(client, page_url).await;
        assert_eq!(status, 200, "{url}: {page}");
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return items,
        }
    }
}

/// What a check found: the versions by `(model, version)` with their sha256, and the garbage.
struct Seen {
    versions: BTreeMap<(String, i64), String>,
    garbage: Vec<Value>,
}

/// Checks the registry against what the clients know; returns the violations (empty when
/// consistent) and resynchronises aliases and endpoints to what survived.
/// With `full`, every version's bytes are read back; otherwise those not read before plus a
/// random sample of the others (bytes once verified cannot change without a bug elsewhere being
/// caught by the full check at the end).
async fn check(
    deployment: &Deployment,
    base: &str,
    truth: &Shared,
    full: bool,
) -> (Vec<String>, Seen) {
    let client = reqwest::Client::new();
    let mut bad = Vec::new();
    let by_sha: BTreeMap<String, String> = {
        let t = truth.lock().unwrap();
        t.uploads
            .iter()
            .map(|(k, u)| (u.sha256.clone(), k.clone()))
            .collect()
    };

    // Versions: complete, ours, gapless, one per key.
    let models = paged(&client, &format!("{base}/api/v1/models")).await;
    let mut versions: BTreeMap<(String, i64), String> = BTreeMap::new();
    let mut aliases_now: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut key_versions: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for model in &models {
        let name = model["name"].as_str().unwrap().to_string();
        for (alias, v) in model["aliases"].as_object().unwrap() {
            aliases_now.insert((name.clone(), alias.clone()), v.as_i64().unwrap());
        }
        let listed = paged(&client, &format!("{base}/api/v1/models/{name}/versions")).await;
        let mut numbers: Vec<i64> = listed
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect();
        numbers.sort_unstable();
        if numbers != (1..=numbers.len() as i64).collect::<Vec<_>>() {
            bad.push(format!(
                "{name}: version numbers are not 1..=n: {numbers:?}"
            ));
        }
        if model["latest_version"].as_i64() != numbers.last().copied() {
            bad.push(format!(
                "{name}: latest_version {} but versions {numbers:?}",
                model["latest_version"]
            ));
        }
        for v in &listed {
            let version = v["version"].as_i64().unwrap();
            let hash = v["sha256"].as_str().unwrap().to_string();
            match by_sha.get(&hash) {
                None => bad.push(format!(
                    "{name} v{version}: sha256 {hash} is no upload we sent"
                )),
                Some(key) => {
                    key_versions
                        .entry(key.clone())
                        .or_default()
                        .push((name.clone(), version));
                    let t = truth.lock().unwrap();
                    if t.uploads[key].model != name {
                        bad.push(format!(
                            "{name} v{version}: the bytes of {key}, sent to {}",
                            t.uploads[key].model
                        ));
                    }
                }
            }
            versions.insert((name.clone(), version), hash);
        }
    }
    for (key, found) in &key_versions {
        if found.len() > 1 {
            bad.push(format!(
                "Idempotency-Key {key} produced {} versions: {found:?}",
                found.len()
            ));
        }
    }
    {
        let t = truth.lock().unwrap();
        for (key, u) in &t.uploads {
            if let Some(v) = u.acked
                && versions.get(&(u.model.clone(), v)) != Some(&u.sha256)
            {
                bad.push(format!(
                    "acknowledged {} v{v} ({key}) is missing or holds other bytes: {:?}",
                    u.model,
                    versions.get(&(u.model.clone(), v))
                ));
            }
        }
    }
    // Every visible version's bytes, acknowledged or not.
    let to_read: Vec<(&(String, i64), &String)> = {
        let t = truth.lock().unwrap();
        let mut sample = Rng(versions.len() as u64 ^ 0x5eed);
        versions
            .iter()
            .filter(|(k, _)| full || !t.verified.contains(*k) || sample.chance(0.1))
            .collect()
    };
    for ((name, version), hash) in to_read {
        truth
            .lock()
            .unwrap()
            .verified
            .insert((name.clone(), *version));
        let url = format!("{base}/api/v1/models/{name}/versions/{version}/artifact");
        match client.get(&url).send().await {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(bytes) if sha(&bytes) == *hash => {}
                Ok(bytes) => bad.push(format!(
                    "{name} v{version}: artifact hashes to {} not {hash} ({} bytes)",
                    sha(&bytes),
                    bytes.len()
                )),
                Err(e) => bad.push(format!("{name} v{version}: artifact broke off: {e}")),
            },
            Ok(r) => bad.push(format!(
                "{name} v{version}: artifact answered {}",
                r.status()
            )),
            Err(e) => bad.push(format!("{name} v{version}: artifact: {e}")),
        }
    }

    // Aliases point at versions, and hold an acknowledged or a lost write.
    for ((model, alias), v) in &aliases_now {
        if !versions.contains_key(&(model.clone(), *v)) {
            bad.push(format!("alias {model}@{alias} points at missing v{v}"));
        }
    }
    {
        let mut t = truth.lock().unwrap();
        let keys: BTreeSet<(String, String)> = t
            .aliases
            .keys()
            .cloned()
            .chain(aliases_now.keys().cloned())
            .collect();
        for key in keys {
            let actual = aliases_now.get(&key).copied();
            let slot = t.aliases.entry(key.clone()).or_default();
            if !slot.allows(actual.as_ref()) {
                bad.push(format!(
                    "alias {}@{} is {actual:?}; acknowledged {:?}, unanswered {:?}",
                    key.0, key.1, slot.acked, slot.maybe
                ));
            }
            slot.acked = actual;
            slot.maybe.clear();
        }
    }

    // Endpoints likewise.
    let mut endpoints_now: BTreeMap<String, (i64, Policy)> = BTreeMap::new();
    for (name, _) in ENDPOINTS {
        let (status, body) = get_json(&client, format!("{base}/api/v1/endpoints/{name}")).await;
        match status {
            200 => {
                let policy = policy_of(&body);
                for v in [&body["stable"], &body["canary"]["version"]] {
                    if let Some(v) = v.as_i64()
                        && !versions.contains_key(&(body["model"].as_str().unwrap().to_string(), v))
                    {
                        bad.push(format!("endpoint {name} routes to missing v{v}"));
                    }
                }
                endpoints_now.insert(
                    name.to_string(),
                    (body["revision"].as_i64().unwrap(), policy),
                );
            }
            404 => {}
            other => bad.push(format!("endpoint {name} answered {other}: {body}")),
        }
        let mut t = truth.lock().unwrap();
        let slot = t.endpoints.entry(name.to_string()).or_default();
        let actual = endpoints_now.get(name);
        let ok = match actual {
            None => slot.acked.is_none(),
            Some((rev, p)) => {
                slot.acked.as_ref() == Some(&(*rev, p.clone()))
                    || (slot.maybe.iter().any(|(_, m)| m == p)
                        && *rev == slot.acked.as_ref().map_or(0, |(r, _)| *r) + 1)
                    // A lost write identical to the acknowledged policy changes nothing.
                    || slot.acked.as_ref().is_some_and(|(r, ap)| r == rev && ap == p)
            }
        };
        if !ok {
            bad.push(format!(
                "endpoint {name} is {actual:?}; acknowledged {:?}, unanswered {:?}",
                slot.acked, slot.maybe
            ));
        }
        slot.acked = actual.cloned();
        slot.maybe.clear();
    }

    // The event log: gapless, unchanged, and in agreement with the state.
    let (events, head) = all_events(&client, base).await;
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    if ids != (1..=ids.len() as i64).collect::<Vec<_>>() {
        let dup = ids.windows(2).find(|w| w[1] != w[0] + 1);
        bad.push(format!(
            "event ids are not 1..=n (first break {dup:?}, {} events)",
            ids.len()
        ));
    }
    if ids.last().copied().unwrap_or(0) != head {
        bad.push(format!(
            "event head {head} but the last event is {:?}",
            ids.last()
        ));
    }
    {
        let t = truth.lock().unwrap();
        for (id, seen) in &t.events {
            match events.get((*id - 1) as usize) {
                Some(now) if now == seen => {}
                now => bad.push(format!("event {id} was read as {seen}, now {now:?}")),
            }
        }
        if t.cursor > head {
            bad.push(format!(
                "a consumer read up to event {} but the log ends at {head}",
                t.cursor
            ));
        }
    }
    let mut created: BTreeMap<(String, i64), String> = BTreeMap::new();
    let mut model_created: BTreeMap<String, u32> = BTreeMap::new();
    let mut alias_replay: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut endpoint_replay: BTreeMap<String, (Vec<i64>, Policy)> = BTreeMap::new();
    for e in &events {
        let d = &e["data"];
        match e["type"].as_str().unwrap() {
            "model.created" => {
                *model_created
                    .entry(d["model"].as_str().unwrap().into())
                    .or_default() += 1
            }
            "version.created" => {
                let key = (
                    d["model"].as_str().unwrap().to_string(),
                    d["version"].as_i64().unwrap(),
                );
                if created
                    .insert(key.clone(), d["sha256"].as_str().unwrap().into())
                    .is_some()
                {
                    bad.push(format!("two version.created events for {key:?}"));
                }
            }
            "alias.set" => {
                alias_replay.insert(
                    (
                        d["model"].as_str().unwrap().into(),
                        d["alias"].as_str().unwrap().into(),
                    ),
                    d["version"].as_i64().unwrap(),
                );
            }
            "alias.deleted" => {
                alias_replay.remove(&(
                    d["model"].as_str().unwrap().into(),
                    d["alias"].as_str().unwrap().into(),
                ));
            }
            // The drift endpoint is set once before the load; its incidents are checked by
            // `check_drift_incidents`.
            "endpoint.updated" if d["endpoint"] == DRIFT_ENDPOINT => {}
            "drift.detected" | "drift.recovered" if d["endpoint"] == DRIFT_ENDPOINT => {}
            "endpoint.updated" => {
                let entry = endpoint_replay
                    .entry(d["endpoint"].as_str().unwrap().into())
                    .or_insert_with(|| (Vec::new(), (Value::Null, Value::Null, Value::Null)));
                entry.0.push(d["revision"].as_i64().unwrap());
                entry.1 = policy_of(&d["policy"]);
            }
            // The harness's own webhook (the replicated test), made before the load.
            "webhook.created" => {}
            other => bad.push(format!("unexpected event type {other}: {e}")),
        }
    }
    if created != versions {
        let missing: Vec<_> = versions
            .keys()
            .filter(|k| !created.contains_key(k))
            .collect();
        let extra: Vec<_> = created
            .keys()
            .filter(|k| !versions.contains_key(k))
            .collect();
        bad.push(format!(
            "version.created events disagree with the versions: no event for {missing:?}, events without a version {extra:?}"
        ));
    }
    let model_names: BTreeSet<String> = models
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    if model_created.keys().cloned().collect::<BTreeSet<_>>() != model_names
        || model_created.values().any(|n| *n != 1)
    {
        bad.push(format!(
            "model.created events {model_created:?} for models {model_names:?}"
        ));
    }
    if alias_replay != aliases_now {
        bad.push(format!(
            "alias events replay to {alias_replay:?}, aliases are {aliases_now:?}"
        ));
    }
    for (name, (revs, policy)) in &endpoint_replay {
        if *revs != (1..=revs.len() as i64).collect::<Vec<_>>() {
            bad.push(format!("endpoint {name}: event revisions {revs:?}"));
        }
        match endpoints_now.get(name) {
            Some((rev, p)) if Some(rev) == revs.last() && p == policy => {}
            now => bad.push(format!(
                "endpoint {name}: events replay to r{:?} {policy:?}, it is {now:?}",
                revs.last()
            )),
        }
    }
    for name in endpoints_now.keys() {
        if !endpoint_replay.contains_key(name) {
            bad.push(format!("endpoint {name} has no endpoint.updated event"));
        }
    }

    // Objects: a referenced blob or on gc's garbage list, nothing else.
    let report = deployment.gc(&["--dry-run"]);
    let garbage = report["garbage"].as_array().unwrap().clone();
    let garbage_keys: BTreeSet<String> = garbage
        .iter()
        .map(|g| g["key"].as_str().unwrap().to_string())
        .collect();
    let referenced: BTreeSet<String> = versions.values().map(|h| deployment.blob_key(h)).collect();
    let unknown: BTreeSet<String> = report["unknown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for object in deployment.objects().await {
        if !referenced.contains(&object) && !garbage_keys.contains(&object) {
            bad.push(format!(
                "object {object} is neither referenced nor on gc's garbage list"
            ));
        }
    }
    if !unknown.is_empty() {
        bad.push(format!("gc found objects that are not ours: {unknown:?}"));
    }
    if report["referenced"]["count"].as_u64() != Some(referenced.len() as u64) {
        bad.push(format!(
            "gc counts {} referenced blobs, versions use {}",
            report["referenced"]["count"],
            referenced.len()
        ));
    }
    for g in &garbage {
        if let Some(hash) = g["sha256"].as_str() {
            if versions.values().any(|h| h == hash) {
                bad.push(format!("gc lists the blob of a version as garbage: {g}"));
            }
            if !by_sha.contains_key(hash) {
                bad.push(format!("unreferenced blob {hash} is no upload we sent"));
            }
        }
    }
    (bad, Seen { versions, garbage })
}

fn garbage_summary(garbage: &[Value]) -> String {
    let mut kinds: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for g in garbage {
        let e = kinds
            .entry(g["kind"].as_str().unwrap().to_string())
            .or_default();
        e.0 += 1;
        e.1 += g["size"].as_u64().unwrap();
    }
    if kinds.is_empty() {
        return "none".into();
    }
    kinds
        .iter()
        .map(|(k, (n, b))| format!("{n} {k} ({b} B)"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fail(deployment: &Deployment, server: &Server, seed: u64, when: &str, bad: &[String]) -> ! {
    let logs = server.logs();
    let tail: Vec<&str> = logs.lines().rev().take(30).collect();
    panic!(
        "[{}] {} violation(s) {when} (replay with FERRY_CRASH_SEED={seed}):\n  {}\n--- registry log (last lines, newest first) ---\n{}",
        deployment.label,
        bad.len(),
        bad.join("\n  "),
        tail.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The replicated test's background jobs: the RabbitMQ relay and the drift monitor

/// The test's own queue on the relay's exchange, bound with `#`: every message the relays of all
/// replicas publish lands in it.
struct RelayWatch {
    connection: lapin::Connection,
    channel: lapin::Channel,
    exchange: String,
    queue: String,
    /// Message ids taken from the queue so far, in arrival order.
    received: Vec<i64>,
}

impl RelayWatch {
    /// Declares an exchange of its own (the relay declares it the same way) and binds a private
    /// queue; `None` (and a SKIPPED line) when RabbitMQ is unreachable outside CI.
    async fn start(label: &str) -> Option<RelayWatch> {
        use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let url = amqp_url();
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            lapin::Connection::connect(&url, lapin::ConnectionProperties::default()),
        )
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let connection = match connected {
            Ok(c) => c,
            Err(e) => {
                assert!(!in_ci(), "RabbitMQ is required when CI=true: {e}");
                skipped(&format!(
                    "RabbitMQ unreachable ({e}): the relay is not part of this run"
                ));
                return None;
            }
        };
        let channel = connection.create_channel().await.unwrap();
        let exchange = format!("ferry.crash.{}.{label}", std::process::id());
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .name()
            .to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Some(RelayWatch {
            connection,
            channel,
            exchange,
            queue,
            received: Vec::new(),
        })
    }

    /// The registry flags that relay to this exchange, with a short lease so that a survivor
    /// takes over from a killed relay within seconds.
    fn flags(&self) -> Vec<String> {
        [
            "--amqp-url",
            &amqp_url(),
            "--amqp-exchange",
            &self.exchange,
            "--relay-lease",
            "3s",
        ]
        .map(String::from)
        .to_vec()
    }

    async fn drain(&mut self) {
        use lapin::options::BasicGetOptions;
        while let Some(message) = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let id = message
                .delivery
                .properties
                .message_id()
                .as_ref()
                .and_then(|id| id.as_str().parse().ok())
                .unwrap_or(-1);
            self.received.push(id);
        }
    }

    /// Waits until every event up to `head` has been relayed, then checks that the first
    /// arrival of each id is in order 1..=head (a repeat is a re-publication after a kill,
    /// which consumers drop by `message_id`). Returns (messages, repeats, seconds waited).
    async fn check(&mut self, head: i64) -> Result<(usize, usize, f64), String> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        loop {
            self.drain().await;
            let seen: BTreeSet<i64> = self.received.iter().copied().collect();
            if (1..=head).all(|id| seen.contains(&id)) {
                break;
            }
            if Instant::now() > deadline {
                let missing: Vec<i64> = (1..=head).filter(|id| !seen.contains(id)).collect();
                return Err(format!(
                    "{} events were never relayed in 120 s, e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut seen = BTreeSet::new();
        let first: Vec<i64> = self
            .received
            .iter()
            .copied()
            .filter(|id| seen.insert(*id))
            .collect();
        if first != (1..=head).collect::<Vec<_>>() {
            let break_at = first.windows(2).find(|w| w[1] != w[0] + 1);
            return Err(format!(
                "events were first relayed out of order or outside 1..={head} (first break {break_at:?})"
            ));
        }
        Ok((
            self.received.len(),
            self.received.len() - first.len(),
            started.elapsed().as_secs_f64(),
        ))
    }

    async fn cleanup(self) {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        for queue in [self.exchange.clone(), format!("{}.dead", self.exchange)] {
            let _ = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [self.exchange.clone(), format!("{}.dlx", self.exchange)] {
            let _ = self
                .channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "test done".into()).await;
    }
}

fn amqp_url() -> String {
    std::env::var("FERRY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// Pushes the drift model with a training profile (recorded as an acknowledged upload, so the
/// checks hold it to the same rules) and sets its endpoint's drift policy; returns the profile.
async fn drift_setup(deployment: &Deployment, base: &str, truth: &Shared) -> Value {
    let dir = deployment.dir.path();
    let out = std::process::Command::new("python3")
        .arg(repo_root().join("scripts/drift_demo.py"))
        .args(["train", "2000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let train = dir.join("train.csv");
    std::fs::write(&train, &out.stdout).unwrap();
    let model = fixture("mlp.onnx");
    let pushed = ferry(
        dir,
        &[
            "model",
            "push",
            model.to_str().unwrap(),
            "--name",
            DRIFT_MODEL,
            "--profile-data",
            train.to_str().unwrap(),
        ],
        &[("FERRY_REGISTRY", base)],
    );
    assert!(pushed.status.success(), "{}", text(&pushed));
    let bytes = std::fs::read(&model).unwrap();
    truth.lock().unwrap().uploads.insert(
        "drift-model".into(),
        Upload {
            model: DRIFT_MODEL.into(),
            sha256: sha(&bytes),
            bytes: Arc::new(bytes),
            acked: Some(1),
        },
    );
    let set = ferry(
        dir,
        &[
            "endpoint",
            "set",
            DRIFT_ENDPOINT,
            "--model",
            DRIFT_MODEL,
            "--stable",
            "1",
            "--drift",
            "psi:0.2",
            "--drift-min-samples",
            "100",
        ],
        &[("FERRY_REGISTRY", base)],
    );
    assert!(set.status.success(), "{}", text(&set));
    let (status, profile) = get_json(
        &reqwest::Client::new(),
        format!("{base}/api/v1/models/{DRIFT_MODEL}/versions/1/profile"),
    )
    .await;
    assert_eq!(status, 200, "{profile}");
    profile
}

/// A serving replica's report of `rows` rows of version 1 of the drift endpoint: distributed
/// like the training data, or (`shifted`) every value past the last bin.
fn drift_report(profile: &Value, rows: u64, shifted: bool) -> Value {
    let mut inputs = serde_json::Map::new();
    for input in profile["inputs"].as_array().unwrap() {
        let histograms: Vec<Vec<u64>> = input["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let counts: Vec<u64> = f["counts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_u64().unwrap())
                    .collect();
                let total: u64 = counts.iter().sum::<u64>().max(1);
                let mut live: Vec<u64> = counts.iter().map(|c| c * rows / total).collect();
                if shifted {
                    live.iter_mut().for_each(|c| *c = 0);
                    *live.last_mut().unwrap() = rows;
                }
                live
            })
            .collect();
        inputs.insert(input["input"].as_str().unwrap().into(), json!(histograms));
    }
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "replica": "crash-reporter",
        "interval_seconds": 0.1,
        "versions": { "1": { "requests": rows, "drift": { "samples": rows, "inputs": inputs } } }
    })
}

/// Sends reports of the drift endpoint to any live replica every 100 ms until `stop`; the
/// inputs alternate every [`DRIFT_PHASE`] between the training distribution and a shifted one
/// (on a clock shared by all rounds), so incidents open and close while replicas die.
async fn drift_reporter(
    client: reqwest::Client,
    bases: Bases,
    profile: Arc<Value>,
    clock: Instant,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) {
    while !stop.load(Ordering::Relaxed) {
        let shifted = (clock.elapsed().as_millis() / DRIFT_PHASE.as_millis()) % 2 == 1;
        let report = drift_report(&profile, 100, shifted);
        let base = rng.pick(&bases);
        // A dead replica's refusal loses a report: the monitor then judges a smaller window.
        let _ = client
            .post(format!("{base}/api/v1/endpoints/{DRIFT_ENDPOINT}/reports"))
            .json(&report)
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `drift.detected` per incident however many monitors judged it: on the drift endpoint's
/// log, detected and recovered alternate (starting with detected), and each recovery names the
/// detection it closes. Returns (incidents, recoveries).
fn check_drift_incidents(events: &[Value]) -> Result<(u32, u32), String> {
    let mut open: Option<i64> = None;
    let (mut detected, mut recovered) = (0, 0);
    for e in events {
        let d = &e["data"];
        if d["endpoint"] != DRIFT_ENDPOINT {
            continue;
        }
        let id = e["id"].as_i64().unwrap();
        match e["type"].as_str().unwrap() {
            "drift.detected" => {
                if let Some(before) = open {
                    return Err(format!(
                        "drift.detected {id} while incident {before} is still open: {e}"
                    ));
                }
                open = Some(id);
                detected += 1;
            }
            "drift.recovered" => {
                let Some(before) = open.take() else {
                    return Err(format!(
                        "drift.recovered {id} without an open incident: {e}"
                    ));
                };
                if d["detected_event"].as_i64() != Some(before) {
                    return Err(format!(
                        "drift.recovered {id} closes {} but the open incident is {before}",
                        d["detected_event"]
                    ));
                }
                recovered += 1;
            }
            _ => {}
        }
    }
    if detected == 0 {
        return Err("the shifted inputs never raised a drift incident".into());
    }
    Ok((detected, recovered))
}

// ---------------------------------------------------------------------------------------------
// The rounds

/// Rounds of load and SIGKILL against `replicas` registries on one database and object store:
/// with several, the clients spread every request over all of them, one replica is killed at a
/// random moment while the load goes on through the others, then the rest are killed.
async fn crash_rounds(db: Db, store: Store, replicas: usize) {
    let Some(mut deployment) = Deployment::new(db, store, replicas) else {
        return;
    };
    let rounds: u32 = std::env::var("FERRY_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("FERRY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                ^ u64::from(std::process::id())
        });
    let label = deployment.label.clone();
    eprintln!("[{label}] {rounds} rounds, FERRY_CRASH_SEED={seed}");
    let started = Instant::now();
    let mut rng = Rng(seed);
    let truth: Shared = Arc::default();
    let gc_collected = Arc::new(AtomicU64::new(0));
    // With replicas, the background jobs too: a webhook for every event, the RabbitMQ relay
    // (to an exchange of the test's own) and a drift incident that opens and closes; all three
    // are checked at the end.
    let mut webhook = None;
    let mut relay = None;
    let mut drift_profile = None;
    if replicas > 1 {
        relay = RelayWatch::start(&deployment.label).await;
        if let Some(watch) = &relay {
            deployment.serve_flags.extend(watch.flags());
        }
        deployment
            .serve_flags
            .extend(["--drift-interval".to_string(), "1s".to_string()]);
        let (url, received) = start_receiver().await;
        let mut server = deployment.serve();
        let (status, created, _) = send_json(
            reqwest::Client::new()
                .post(format!("{}/api/v1/webhooks", server.url()))
                .json(&json!({ "url": url, "events": ["*"] })),
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{created}");
        let cursor = created["cursor"]
            .as_i64()
            .unwrap_or_else(|| panic!("no cursor in {created}"));
        drift_profile = Some(Arc::new(
            drift_setup(&deployment, &server.url(), &truth).await,
        ));
        server.kill9();
        webhook = Some((received, cursor));
    }
    let drift_clock = Instant::now();

    for round in 1..=rounds {
        let mut servers: Vec<Server> = (0..replicas).map(|_| deployment.serve()).collect();
        let bases: Bases = Arc::new(servers.iter().map(Server::url).collect());
        let base = bases[0].clone();
        let (bad, seen) = check(&deployment, &base, &truth, false).await;
        if !bad.is_empty() {
            fail(
                &deployment,
                &servers[0],
                seed,
                &format!("after crash {}", round - 1),
                &bad,
            );
        }
        {
            let mut t = truth.lock().unwrap();
            t.stats.max_garbage = t.stats.max_garbage.max(seen.garbage.len() as u64);
            eprintln!(
                "[{label}] round {round}: {} versions ({} acknowledged, {} answers lost), garbage: {}",
                seen.versions.len(),
                t.uploads.values().filter(|u| u.acked.is_some()).count(),
                t.pending.len(),
                garbage_summary(&seen.garbage)
            );
        }

        // Load, then SIGKILL at a random moment.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..UPLOADERS {
            tasks.push(tokio::spawn(uploader(
                client.clone(),
                bases.clone(),
                truth.clone(),
                stop.clone(),
                rng.fork(),
                format!("r{round}w{w}"),
            )));
        }
        for model in MODELS {
            tasks.push(tokio::spawn(alias_mover(
                client.clone(),
                bases.clone(),
                truth.clone(),
                stop.clone(),
                rng.fork(),
                model,
            )));
        }
        for (name, model) in ENDPOINTS {
            tasks.push(tokio::spawn(endpoint_writer(
                client.clone(),
                bases.clone(),
                truth.clone(),
                stop.clone(),
                rng.fork(),
                name,
                model,
            )));
        }
        tasks.push(tokio::spawn(consumer(
            client.clone(),
            bases.clone(),
            truth.clone(),
            stop.clone(),
        )));
        if let Some(profile) = &drift_profile {
            tasks.push(tokio::spawn(drift_reporter(
                client.clone(),
                bases.clone(),
                profile.clone(),
                drift_clock,
                stop.clone(),
                rng.fork(),
            )));
        }
        let load = Duration::from_millis(rng.range(400, 1600));
        // Every other round a gc with no minimum age races the uploads.
        let gc = (round % 2 == 0).then(|| {
            let delay = Duration::from_millis(rng.range(0, load.as_millis() as u64));
            let flags = deployment.flags.clone();
            let dir = deployment.dir.path().to_path_buf();
            let collected = gc_collected.clone();
            tokio::task::spawn_blocking(move || {
                std::thread::sleep(delay);
                let mut args = vec!["registry", "gc", "--min-age", "0s", "-o", "json"];
                args.extend(flags.iter().map(String::as_str));
                let out = ferry(&dir, &args, &[]);
                assert!(
                    out.status.success(),
                    "gc during load failed: {}",
                    text(&out)
                );
                let report: Value = serde_json::from_slice(&out.stdout).unwrap();
                collected.fetch_add(
                    report["collected"]["count"].as_u64().unwrap(),
                    Ordering::Relaxed,
                );
            })
        });
        tokio::time::sleep(load).await;
        if replicas > 1 {
            // One replica dies; the others carry the load (and the retries of what it lost)
            // for a while before they die too.
            let victim = rng.below(replicas as u64) as usize;
            servers[victim].kill9();
            tokio::time::sleep(Duration::from_millis(rng.range(300, 1200))).await;
        }
        for server in &mut servers {
            server.kill9();
        }
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        if let Some(gc) = gc {
            gc.await.unwrap();
            truth.lock().unwrap().stats.gc_runs += 1;
        }
        deployment.wait_for_the_killed_sessions();
        let bad = std::mem::take(&mut truth.lock().unwrap().violations);
        if !bad.is_empty() {
            fail(
                &deployment,
                &servers[0],
                seed,
                &format!("during round {round}"),
                &bad,
            );
        }
    }

    // The last restart: retry every key whose answer was lost, check, collect, check again.
    let server = deployment.serve();
    let base = server.url();
    let client = reqwest::Client::new();
    let pending: Vec<String> = truth.lock().unwrap().pending.drain(..).collect();
    for key in &pending {
        let (model, bytes, hash) = {
            let t = truth.lock().unwrap();
            let u = &t.uploads[key];
            (u.model.clone(), u.bytes.clone(), u.sha256.clone())
        };
        let (status, body, _) = upload(&client, &base, &model, key, &bytes).await.unwrap();
        assert_eq!(status, 201, "retry of {key}: {body}");
        assert_eq!(body["sha256"], hash.as_str());
        let mut t = truth.lock().unwrap();
        t.uploads.get_mut(key).unwrap().acked = Some(body["version"].as_i64().unwrap());
    }
    let (bad, seen) = check(&deployment, &base, &truth, true).await;
    if !bad.is_empty() {
        fail(&deployment, &server, seed, "after the last crash", &bad);
    }
    let sent = truth.lock().unwrap().uploads.len();
    assert_eq!(
        seen.versions.len(),
        sent,
        "every key sent, retried until answered, is exactly one version"
    );
    let garbage_before = garbage_summary(&seen.garbage);
    let report = deployment.gc(&[]);
    assert_eq!(report["failed"], json!([]), "{report}");
    let expected: BTreeSet<String> = seen
        .versions
        .values()
        .map(|h| deployment.blob_key(h))
        .collect();
    let left = deployment.objects().await;
    assert_eq!(
        left, expected,
        "after gc the store holds exactly the referenced blobs"
    );
    let (bad, _) = check(&deployment, &base, &truth, true).await;
    if !bad.is_empty() {
        fail(&deployment, &server, seed, "after gc", &bad);
    }
    if let Some((received, cursor)) = &webhook {
        let (_, head) = all_events(&client, &base).await;
        match check_webhook_deliveries(received, *cursor, head).await {
            Ok((sent, repeats, waited)) => eprintln!(
                "[{label}] webhook: every one of {} events delivered ({sent} requests, {repeats} retries of a delivery a kill interrupted), all in {waited:.1} s after the final checks",
                head - cursor
            ),
            Err(why) => fail(&deployment, &server, seed, "webhook deliveries", &[why]),
        }
    }
    if let Some(mut watch) = relay {
        let (_, head) = all_events(&client, &base).await;
        let relayed = watch.check(head).await;
        watch.cleanup().await;
        match relayed {
            Ok((messages, repeats, waited)) => eprintln!(
                "[{label}] relay: every one of {head} events published in order ({messages} messages, {repeats} re-published after a kill), all in {waited:.1} s after the final checks"
            ),
            Err(why) => fail(&deployment, &server, seed, "the RabbitMQ relay", &[why]),
        }
    }
    if drift_profile.is_some() {
        let (events, _) = all_events(&client, &base).await;
        match check_drift_incidents(&events) {
            Ok((detected, recovered)) => eprintln!(
                "[{label}] drift: {detected} incidents raised once each by three monitors, {recovered} recovered"
            ),
            Err(why) => fail(&deployment, &server, seed, "drift incidents", &[why]),
        }
    }

    // The harness can fail: a corrupted blob is reported.
    if let Some(root) = deployment.local_root() {
        let (_, hash) = seen.versions.iter().next().unwrap();
        let path = root.join("blobs/sha256").join(hash);
        let good = std::fs::read(&path).unwrap();
        let mut bad_bytes = good.clone();
        let middle = bad_bytes.len() / 2;
        bad_bytes[middle] ^= 0xff;
        std::fs::write(&path, &bad_bytes).unwrap();
        let (bad, _) = check(&deployment, &base, &truth, true).await;
        assert!(
            bad.iter().any(|b| b.contains("artifact")),
            "a corrupted blob went unnoticed: {bad:?}"
        );
        std::fs::write(&path, &good).unwrap();
    }

    let t = truth.lock().unwrap();
    let s = &t.stats;
    eprintln!(
        "[{label}] {rounds} crashes in {:.1} s: {} versions, {} acknowledged, {} lost answers retried, {} idempotent replays, {} 503 retries, {} alias moves, {} endpoint writes, {} events read live, {} gc runs under load collected {} objects; garbage before the last gc: {garbage_before}",
        started.elapsed().as_secs_f64(),
        seen.versions.len(),
        s.acked,
        pending.len(),
        s.replays,
        s.retried_503,
        s.alias_moves,
        s.endpoint_writes,
        s.events_read,
        s.gc_runs,
        gc_collected.load(Ordering::Relaxed),
    );
    assert!(
        s.acked > 0 && s.alias_moves > 0 && s.endpoint_writes > 0,
        "the load did too little to prove anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_a_local_folder_survive_kill_9() {
    crash_rounds(Db::Sqlite, Store::Local, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_a_local_folder_survive_kill_9() {
    crash_rounds(Db::Postgres, Store::Local, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_s3_survive_kill_9() {
    crash_rounds(Db::Sqlite, Store::S3, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_s3_survive_kill_9() {
    crash_rounds(Db::Postgres, Store::S3, 1).await;
}

/// Issue 15's configuration: three registries on one PostgreSQL and one S3 bucket behind no
/// load balancer at all (every client request goes to any of them), one killed mid-load, then
/// the others: no acknowledged write lost, one version per Idempotency-Key even when its retry
/// lands on another replica, the event log gapless for a consumer that moves between replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_registries_on_postgres_and_s3_survive_kill_9_of_any() {
    crash_rounds(Db::Postgres, Store::S3, 3).await;
}
