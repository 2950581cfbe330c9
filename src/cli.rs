//! The command line: every flag, its environment variable and its help.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Ferry: push ONNX models with their lineage, serve them, release new versions safely.
#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    propagate_version = true,
    after_help = "Start everything on this machine:  ferry up\n\
                  Push a model:                      ferry model push model.onnx --name fraud --git auto --data train.csv\n\
                  Docs: README.md, or `ferry <command> --help`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format: `text` for people, `json` for log collectors; `auto` picks text on a terminal.
    #[arg(
        long,
        global = true,
        env = "FERRY_LOG_FORMAT",
        value_enum,
        default_value = "auto"
    )]
    pub log_format: LogFormat,

    /// Threads of the async runtime, which answers HTTP and gRPC; inference runs on its own
    /// threads (`--workers`, `--intra-op-threads`) [default: half the CPUs available, at least
    /// 1].
    #[arg(long, global = true, env = "FERRY_HTTP_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub http_threads: Option<u16>,
}

/// The async runtime's threads when `--http-threads` is not given: half the CPUs, at least one.
///
/// The other half is for inference. One runtime thread per CPU (Tokio's default) left the two
/// kinds of thread competing: on 2 CPUs with the load generator alongside, one runtime thread
/// instead of two cut p99 at 64 connections from ~6.2 to ~3.7 ms at the same or lower CPU per
/// request (bench/README.md, "Two binaries side by side").
pub fn default_http_threads(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole platform in one process on one port: registry (SQLite + a local folder by
    /// default) with a demo model.
    Up(UpArgs),
    /// Run the model registry service, or manage its database.
    Registry(RegistryCommand),
    /// Serve ONNX models over the Open Inference Protocol v2, from the registry or from files.
    #[command(
        after_help = "Examples:\n  ferry serving --registry http://registry:8080 --model fraud@production --model churn:3\n  ferry serving --model mlp=tests/fixtures/mlp.onnx"
    )]
    Serving(ServingCommand),
    /// Push, list, inspect, alias and download model versions.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Create, change, inspect and remove endpoints: the traffic policy serving follows.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Subscribe URLs to events (signed deliveries, retried, dead-lettered): how a retraining
    /// pipeline is triggered.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Feature views: one definition of a model's features (entity key, ordered features with
    /// their types, the data they come from) for training and serving.
    #[command(
        subcommand,
        after_help = "Examples:\n  ferry features register customers --entity customer_id --feature age:FP32 --feature orders_30d:INT64 --source customers.csv\n  ferry model push model.onnx --name churn --feature-view customers"
    )]
    Features(FeaturesCommand),
    /// Send one prediction to a served model or endpoint.
    #[command(
        after_help = "Examples:\n  ferry predict fraud --input 'input=[[0.1, 0.2, …]]'\n  ferry predict fraud --json request.json"
    )]
    Predict(PredictArgs),
    /// Send business feedback on a prediction (by its id): a reward, a label, or both.
    #[command(
        after_help = "Examples:\n  ferry feedback fraud 3f2c…-request-id --reward 1 --label 0\n  ferry feedback export fraud --log file:///var/lib/ferry/log --since 24h -o csv > train.csv\n  ferry feedback dead-letters --queue amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    Feedback(FeedbackCommand),
    /// Compute the training-data profile drift is measured against (from a CSV, streaming).
    #[command(
        after_help = "Examples:\n  ferry profile train.csv --model model.onnx -o json > profile.json\n  ferry model push model.onnx --name fraud --profile-data train.csv"
    )]
    Profile(ProfileArgs),
    /// Read the registry's event log.
    Events(EventsArgs),
    /// Run the Kubernetes operator: each ModelDeployment gets serving pods, a registry endpoint
    /// and progressive rollouts of new versions (shadow, canary steps, promote or roll back).
    #[command(
        after_help = "The Kubernetes client is configured from KUBECONFIG (or ~/.kube/config), else the pod's service account.\n\
                      Install first:  kubectl apply -f deploy/crds/ -f deploy/rbac/operator.yaml\n\
                      Example:        ferry operator --namespace ml --serving-image ghcr.io/ferry-ml/ferry:0.1.0"
    )]
    Operator(OperatorArgs),
    /// Write the ModelDeployment CRD (deploy/crds/ and the Helm chart's copy) from the Rust
    /// types, or check that the checked-in files are current.
    #[command(
        after_help = "Examples:\n  ferry crdgen             # in the repository root\n  ferry crdgen --check     # CI: fails when the YAML is stale\n  ferry crdgen --stdout | kubectl apply -f -"
    )]
    Crdgen(CrdgenArgs),
}

/// `ferry operator`.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Watch ModelDeployments in this namespace only [default: every namespace].
    #[arg(long, env = "FERRY_OPERATOR_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,
    /// Address of the operator's /healthz, /readyz and /metrics (0.0.0.0:8081 in a pod).
    #[arg(
        long,
        env = "FERRY_OPERATOR_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    /// The serving image of ModelDeployments whose spec names none.
    #[arg(
        long,
        env = "FERRY_SERVING_IMAGE",
        value_name = "IMAGE",
        default_value = ferry_operator::crd::DEFAULT_IMAGE
    )]
    pub serving_image: String,
    /// The Redis every serving pod shares for joining feedback (redis://HOST:PORT[/DB]): set it
    /// when a ModelDeployment runs more than one replica, or feedback joins only at the pod
    /// that answered. Passed to the pods as FERRY_FEEDBACK_STORE.
    #[arg(
        long,
        env = "FERRY_FEEDBACK_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub feedback_store: Option<String>,
    /// The online feature store the serving pods read features from when a request names
    /// entities (redis://HOST:PORT[/DB]). Passed to the pods as FERRY_FEATURE_STORE.
    #[arg(
        long,
        env = "FERRY_FEATURE_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub feature_store: Option<String>,
    /// Deadline of each registry call, e.g. 10s.
    #[arg(
        long,
        env = "FERRY_REGISTRY_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_operator_duration
    )]
    pub registry_timeout: std::time::Duration,
    /// Reconcile every ModelDeployment at least this often, even when nothing changed (repairs
    /// an endpoint policy changed behind the operator's back).
    #[arg(
        long,
        env = "FERRY_OPERATOR_RESYNC",
        value_name = "DURATION",
        default_value = "5m",
        value_parser = parse_operator_duration
    )]
    pub resync: std::time::Duration,
    /// Resolve tracked aliases (`alias: production`) at least this often; registry events
    /// usually trigger it sooner.
    #[arg(
        long,
        env = "FERRY_OPERATOR_ALIAS_RESYNC",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_operator_duration
    )]
    pub alias_resync: std::time::Duration,
    /// A registry URL ModelDeployments may name in spec.registry.url (repeatable; the URL or a
    /// path under it). Without any, every URL is accepted, and a ModelDeployment's author may
    /// have the operator send the namespace's labelled registry tokens anywhere.
    #[arg(
        long = "allowed-registry",
        env = "FERRY_OPERATOR_ALLOWED_REGISTRIES",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub allowed_registries: Vec<String>,
    /// A prefix of the images ModelDeployments may run in spec.image (repeatable; the default
    /// serving image always runs). Without any, every image is accepted.
    #[arg(
        long = "allowed-image",
        env = "FERRY_OPERATOR_ALLOWED_IMAGES",
        value_name = "PREFIX",
        value_delimiter = ','
    )]
    pub allowed_images: Vec<String>,
}

fn parse_operator_duration(text: &str) -> Result<std::time::Duration, String> {
    match ferry_api::units::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be longer than 0s".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// `ferry crdgen`.
#[derive(Debug, Args)]
pub struct CrdgenArgs {
    /// Write nothing; fail when a checked-in file differs from the Rust types.
    #[arg(long, conflicts_with = "stdout")]
    pub check: bool,
    /// Print the CRD instead of writing files.
    #[arg(long)]
    pub stdout: bool,
    /// The repository root to write under.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub root: PathBuf,
}

/// `ferry up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Do not push the demo model into an empty registry.
    #[arg(long, env = "FERRY_NO_DEMO")]
    pub no_demo: bool,
    /// Run the registry alone, without serving (no ONNX Runtime needed).
    #[arg(long, env = "FERRY_NO_SERVING")]
    pub no_serving: bool,
}

/// `ferry serving`.
#[derive(Debug, Args, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServingCommand {
    /// A model to serve (repeatable): NAME (its `production` alias, else its newest version),
    /// NAME@ALIAS or NAME:VERSION from the registry, or NAME=PATH.onnx from a file.
    #[arg(long = "model", value_name = "SPEC")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// An endpoint to serve by its traffic policy (repeatable): canary split, shadows, feedback.
    #[arg(long = "endpoint", value_name = "NAME")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Serve every endpoint of the registry, following new ones as they appear.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub all_endpoints: bool,
    /// Registry to load models from and follow.
    #[arg(long, env = "FERRY_REGISTRY", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Bearer token for the registry (the `read` role is enough).
    #[arg(long, env = "FERRY_REGISTRY_TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_token: Option<String>,
    /// Where downloaded models are kept, by SHA-256, for restarts without the registry
    /// [default: ./ferry-cache].
    #[arg(long, env = "FERRY_CACHE_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub runtime: RuntimeArgs,
}

/// What every server process takes: where to listen, who may call it, and a config file.
/// `--listen` defaults to 127.0.0.1:8080 for `ferry up` and `ferry registry`, 127.0.0.1:8081 for
/// `ferry serving`.
#[derive(Debug, Args, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CommonArgs {
    /// TOML config file with any of these settings (snake_case keys).
    #[arg(long, env = "FERRY_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080; 127.0.0.1:8081 for `ferry serving`].
    #[arg(long, env = "FERRY_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// API token ROLE:SECRET, role read, feedback, serving, write or admin (repeatable; FERRY_TOKENS takes a
    /// comma-separated list).
    #[arg(
        long = "token",
        env = "FERRY_TOKENS",
        value_name = "ROLE:SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
    /// File with one ROLE:SECRET per line.
    #[arg(long, env = "FERRY_TOKENS_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
    /// Answer /metrics only to requests with a valid token (any role), when tokens are
    /// configured: its labels name models, endpoints and features. Off by default so that
    /// Prometheus scrapes without credentials.
    #[arg(long, env = "FERRY_METRICS_REQUIRE_TOKEN")]
    #[serde(skip_serializing_if = "is_false")]
    pub metrics_require_token: bool,
    /// A client must send its request line and headers within this time or its connection is
    /// closed (slow-client protection), e.g. 10s [default: 10s].
    #[arg(long, env = "FERRY_HEADER_READ_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_timeout: Option<String>,
    /// A connection with no request in flight is closed after this long without one (HTTP/1
    /// keep-alive and HTTP/2 alike); a new connection must send its first request within
    /// --header-read-timeout, e.g. 60s [default: 60s].
    #[arg(long, env = "FERRY_IDLE_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Open connections accepted at once; past it new connections are closed at once instead
    /// of queueing [default: 10000].
    #[arg(long, env = "FERRY_MAX_CONNECTIONS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Connections open at once from one client address; past it its new ones are closed on
    /// arrival. For a server clients reach directly: behind a proxy or an ingress every
    /// connection comes from the proxy's address [default: no limit].
    #[arg(long, env = "FERRY_MAX_CONNECTIONS_PER_CLIENT", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<usize>,
    /// After SIGTERM, keep accepting requests this long (readiness already failing) before
    /// draining, so load balancers and kube-proxy stop sending first, e.g. 5s [default: 0s].
    #[arg(long, env = "FERRY_SHUTDOWN_DELAY", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_delay: Option<String>,
    /// Where predictions wait for their business feedback: redis://[:PASSWORD@]HOST:PORT[/DB]
    /// shares them between every serving replica (and the registry), so feedback joins at any
    /// of them; without it they stay in this process's memory (one replica).
    #[arg(
        long,
        env = "FERRY_FEEDBACK_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_store: Option<String>,
    /// The online feature store, redis://[:PASSWORD@]HOST:PORT[/DB]: a version trained with a
    /// feature view (`ferry model push --feature-view`) then takes requests that name entities
    /// (a BYTES input named after the view's entity key) and reads their features from it, as
    /// `ferry features materialize` wrote them.
    #[arg(
        long,
        env = "FERRY_FEATURE_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_store: Option<String>,
    /// Append every prediction (serving) and every accepted feedback (serving and the registry)
    /// as JSON lines to this object store (file:///DIR, s3://BUCKET/PREFIX, …) under
    /// predictions/<endpoint>/<day>/ and feedback/<endpoint>/<day>/, batched and off the request
    /// path; `ferry feedback export` joins them into a training set.
    #[arg(long, env = "FERRY_PREDICTION_LOG", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction_log: Option<String>,
}

/// How models run. Each applies to every model; `--model-option` overrides one model.
#[derive(Debug, Args, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RuntimeArgs {
    /// The ONNX Runtime library [default: $ORT_DYLIB_PATH, else .ort/libonnxruntime.so next to
    /// the current folder or the binary; `make ort` fetches it].
    #[arg(long, env = "FERRY_ONNXRUNTIME", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime: Option<PathBuf>,
    /// Most rows per run when batching requests; 1 disables dynamic batching [default: 64].
    #[arg(long, env = "FERRY_MAX_BATCH_SIZE", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<usize>,
    /// How long a request may wait for others to fill a batch [default: 0: batch only what is
    /// already waiting].
    #[arg(long, env = "FERRY_MAX_QUEUE_DELAY_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue_delay_ms: Option<u64>,
    /// Requests a model admits (queued or running) before answering 429 [default: 256].
    #[arg(long, env = "FERRY_QUEUE_CAPACITY", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<usize>,
    /// Worker threads per model, each with its own session [default: 1].
    #[arg(long, env = "FERRY_WORKERS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// ONNX Runtime intra-op threads per session [default: 1 for a model file under 8 MiB,
    /// else the CPUs available].
    #[arg(long, env = "FERRY_INTRA_OP_THREADS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intra_op_threads: Option<usize>,
    /// ONNX Runtime inter-op threads per session [default: 1].
    #[arg(long, env = "FERRY_INTER_OP_THREADS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inter_op_threads: Option<usize>,
    /// Deadline of an inference request, queueing included; past it the answer is 504
    /// [default: 10000].
    #[arg(long, env = "FERRY_REQUEST_TIMEOUT_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// Largest inference request body, e.g. 64MiB [default: 64MiB].
    #[arg(long, env = "FERRY_MAX_REQUEST_SIZE", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_size: Option<String>,
    /// Bytes of inference request bodies held at once, all requests together, e.g. 256MiB;
    /// a body past it is answered 503 with Retry-After [default: 256MiB].
    #[arg(long, env = "FERRY_MAX_BUFFERED_BODIES", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_buffered_bodies: Option<String>,
    /// Predictions remembered per endpoint for joining feedback [default: 100000].
    #[arg(long, env = "FERRY_FEEDBACK_CAPACITY", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_capacity: Option<usize>,
    /// How long a prediction accepts feedback, e.g. 1h, 30m [default: 1h].
    #[arg(long, env = "FERRY_FEEDBACK_TTL", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_ttl: Option<String>,
    /// Longest a model download from the registry may take before the load fails (the last
    /// good routing table stays and the load is retried), e.g. 10m [default: 10m].
    #[arg(long, env = "FERRY_LOAD_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_timeout: Option<String>,
    /// How often this replica sends its counters (requests, latency, feedback, drift histograms)
    /// to the registry; the analysis and drift monitor see traffic at most this late, e.g. 1s
    /// [default: 5s].
    #[arg(long, env = "FERRY_REPORT_INTERVAL", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_interval: Option<String>,
    /// Log the request bodies (model inputs) too, not only the answers.
    #[arg(long, env = "FERRY_LOG_INPUTS")]
    #[serde(skip_serializing_if = "is_false")]
    pub log_inputs: bool,
    /// Per-model override NAME:KEY=VALUE (repeatable), KEY one of max_batch_size,
    /// max_queue_delay_ms, queue_capacity, workers, intra_op_threads, inter_op_threads.
    #[arg(long = "model-option", value_name = "NAME:KEY=VALUE")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_options: Vec<String>,
}

/// `ferry registry [serve|migrate]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RegistryCommand {
    #[command(subcommand)]
    pub action: Option<RegistryAction>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum RegistryAction {
    /// Serve the registry API (the default when no subcommand is given).
    Serve(ServerArgs),
    /// Apply the database migrations this binary carries, then exit.
    Migrate(ServerArgs),
    /// Delete blobs no version references and staging objects left by uploads that died; safe
    /// while the registry runs.
    #[command(
        after_help = "Examples:\n  ferry registry gc --dry-run\n  ferry registry gc --min-age 24h -o json"
    )]
    Gc(GcArgs),
}

/// `ferry registry gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep garbage younger than this (uploads in flight are younger), e.g. 30m, 24h, 0s.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub min_age: String,
    /// Output format: a table and a summary for people, or JSON for scripts.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Settings of a server process. Precedence: flags, then `FERRY_*` environment variables, then
/// the config file, then defaults.
#[derive(Debug, Args, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServerArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
    /// Folder for the embedded database and blobs [default: ./ferry-data].
    #[arg(long, env = "FERRY_DATA_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Metadata database: sqlite://PATH or postgres://USER@HOST/DB [default: sqlite://<data-dir>/ferry.db].
    #[arg(
        long,
        env = "FERRY_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Blob store: file:///DIR, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX
    /// [default: file://<data-dir>/blobs]. Cloud credentials come from the usual AWS_*, GOOGLE_*,
    /// AZURE_* variables.
    #[arg(long, env = "FERRY_BLOB_URL", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_url: Option<String>,
    /// S3 endpoint for S3-compatible servers (MinIO, Ceph, …).
    #[arg(long, env = "FERRY_S3_ENDPOINT", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "FERRY_S3_REGION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    /// Allow plain-HTTP S3 endpoints.
    #[arg(long, env = "FERRY_S3_ALLOW_HTTP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_allow_http: Option<bool>,
    /// Extra object_store option KEY=VALUE (repeatable), e.g. aws_virtual_hosted_style_request=false.
    #[arg(long = "blob-option", value_name = "KEY=VALUE")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blob_options: Vec<String>,
    /// How long a failing or unreachable cloud object store (S3, GCS, Azure) is retried before
    /// the request that needed it fails with 503, e.g. 30s, 2m [default: 30s].
    #[arg(long, env = "FERRY_BLOB_RETRY_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_retry_timeout: Option<String>,
    /// Largest model accepted, e.g. 2GiB, 500MiB [default: 2GiB].
    #[arg(long, env = "FERRY_MAX_UPLOAD_SIZE", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_size: Option<String>,
    /// Refuse versions without a git commit and at least one hashed dataset.
    #[arg(long, env = "FERRY_REQUIRE_LINEAGE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_lineage: Option<bool>,
    /// Seconds a client may pause mid-upload before it is dropped [default: 60].
    #[arg(long, env = "FERRY_UPLOAD_IDLE_TIMEOUT", value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_idle_timeout: Option<u64>,
    /// Uploads received at once; one more is answered 429 [default: 32].
    #[arg(long, env = "FERRY_MAX_CONCURRENT_UPLOADS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_uploads: Option<usize>,
    /// Slowest average rate an upload may keep after its first minute, e.g. 16KiB (per second);
    /// slower is dropped with 408 [default: 16KiB].
    #[arg(long, env = "FERRY_UPLOAD_MIN_RATE", value_name = "SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_min_rate: Option<String>,
    /// Relay every event to this RabbitMQ (amqp://USER:PASS@HOST:5672/VHOST): exchange
    /// `ferry.events`, persistent messages, publisher confirms.
    #[arg(
        long,
        env = "FERRY_AMQP_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amqp_url: Option<String>,
    /// The relay's topic exchange; `NAME.dlx` and the queues `NAME` and `NAME.dead` go with it
    /// [default: ferry.events].
    #[arg(long, env = "FERRY_AMQP_EXCHANGE", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amqp_exchange: Option<String>,
    /// With several registries on one database, one relays at a time under a lease it renews
    /// every round; when it dies, another takes over once the lease runs out, e.g. 15s
    /// [default: 15s].
    #[arg(long, env = "FERRY_RELAY_LEASE", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_lease: Option<String>,
    /// Consume business feedback from this RabbitMQ (amqp://USER:PASS@HOST:5672/VHOST): messages
    /// {"endpoint", "id", "reward"?, "label"?} on a durable queue, acked once recorded, joined
    /// through the prediction index (ferry up's own, or --feedback-store).
    #[arg(
        long,
        env = "FERRY_FEEDBACK_QUEUE",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_queue: Option<String>,
    /// The feedback queue's name; `NAME.retry`, `NAME.dead` and the exchange `NAME.dlx` go with
    /// it [default: ferry.feedback].
    #[arg(long, env = "FERRY_FEEDBACK_QUEUE_NAME", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_queue_name: Option<String>,
    /// Feedback messages in flight to the consumer at most (basic.qos) [default: 64].
    #[arg(long, env = "FERRY_FEEDBACK_PREFETCH", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_prefetch: Option<u16>,
    /// Delayed retries of a feedback whose prediction id is not known yet, before it is
    /// dead-lettered [default: 5].
    #[arg(long, env = "FERRY_FEEDBACK_RETRIES", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_retries: Option<u32>,
    /// How long a retried feedback message waits, e.g. 10s [default: 10s].
    #[arg(long, env = "FERRY_FEEDBACK_RETRY_DELAY", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_retry_delay: Option<String>,
    /// Attempts before a webhook delivery moves to the dead-letter list [default: 8].
    #[arg(long, env = "FERRY_WEBHOOK_MAX_ATTEMPTS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_max_attempts: Option<u32>,
    /// Longest a webhook receiver may take to answer, e.g. 10s [default: 10s].
    #[arg(long, env = "FERRY_WEBHOOK_TIMEOUT", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_timeout: Option<String>,
    /// Let webhooks deliver to loopback, private, link-local, unique-local and CGNAT addresses
    /// (by default refused: a webhook could otherwise reach the cloud metadata service or this
    /// machine's own ports). For a receiver on the same machine or network. Always on without
    /// tokens: such a server is loopback-only and every caller is already on this machine.
    #[arg(long, env = "FERRY_WEBHOOK_ALLOW_PRIVATE")]
    #[serde(skip_serializing_if = "is_false")]
    pub webhook_allow_private: bool,
    /// How often endpoints' drift policies are judged, and over what window, e.g. 60s, 5m
    /// [default: 60s].
    #[arg(long, env = "FERRY_DRIFT_INTERVAL", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_interval: Option<String>,
    /// How long serving replicas' reports are kept, e.g. 1h; also the longest analysis window
    /// [default: 1h].
    #[arg(long, env = "FERRY_REPORT_RETENTION", value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_retention: Option<String>,
    /// Apply pending migrations at start instead of refusing a database that is behind.
    #[arg(long, env = "FERRY_AUTO_MIGRATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_migrate: Option<bool>,
}

/// Where the client commands find the registry.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Registry URL.
    #[arg(long, env = "FERRY_REGISTRY", default_value = "http://127.0.0.1:8080")]
    pub registry: String,
    /// Bearer token.
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format: a table for people, or JSON for scripts.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Output format of client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Push an ONNX file as a new version, with the code and data it came from.
    #[command(
        after_help = "Example:\n  ferry model push model.onnx --name fraud --git auto --data data/train.csv --metric auc=0.93 --alias staging"
    )]
    Push(PushArgs),
    /// List models, newest first.
    List(ListArgs),
    /// Show a model (`NAME`) or one version (`NAME:V`, `NAME@ALIAS`, `NAME@latest`).
    Show(ShowArgs),
    /// Download a version's ONNX file, verifying its SHA-256.
    Download(DownloadArgs),
    /// Set or remove aliases (e.g. `production`).
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Archive a version: kept for lineage and rollback, but no alias may point at it.
    Archive(VersionTarget),
    /// Restore an archived version.
    Restore(VersionTarget),
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The .onnx file.
    pub file: PathBuf,
    /// Model name.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Training code commit: `auto` reads HEAD and the remote of the repository you are in, or a
    /// full 40-hex SHA.
    #[arg(long, value_name = "auto|SHA")]
    pub git: Option<String>,
    /// Repository URL (with `--git SHA`; `--git auto` finds it).
    #[arg(long, value_name = "URL")]
    pub git_repo: Option<String>,
    /// With `--git auto`, accept uncommitted changes (the commit then does not reproduce the model).
    #[arg(long)]
    pub allow_dirty: bool,
    /// Training data file or folder to hash (repeatable).
    #[arg(long = "data", value_name = "PATH")]
    pub data: Vec<PathBuf>,
    /// Training data already hashed, as URI=SHA256 (repeatable), e.g. s3://bucket/train.parquet=ab12…
    #[arg(long = "data-uri", value_name = "URI=SHA256")]
    pub data_uris: Vec<String>,
    /// When the training data was taken (RFC 3339, or a date like 2026-11-01), recorded on every
    /// dataset of this push: a perishable model's age counts from it.
    #[arg(long, value_name = "TIME")]
    pub data_as_of: Option<String>,
    /// The feature view the model was trained with, NAME or NAME:VERSION (the newest by
    /// default): recorded in its lineage with the view's hash.
    #[arg(long, value_name = "VIEW")]
    pub feature_view: Option<String>,
    /// Hyper-parameter KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Evaluation metric KEY=NUMBER (repeatable).
    #[arg(long = "metric", value_name = "KEY=NUMBER")]
    pub metrics: Vec<String>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Description of the version.
    #[arg(long)]
    pub description: Option<String>,
    /// Training data (CSV or Parquet) to profile and attach, for drift monitoring.
    #[arg(long, value_name = "DATA.csv|DATA.parquet")]
    pub profile_data: Option<PathBuf>,
    /// The input the profile data feeds [default: the model's first [rows, features] input].
    #[arg(long, value_name = "NAME", requires = "profile_data")]
    pub profile_input: Option<String>,
    /// Point this alias at the new version once it is pushed.
    #[arg(long)]
    pub alias: Option<String>,
    /// Make retries safe: the same key returns the same version [default: a fresh key per run,
    /// so the CLI's own retries never create two versions].
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Most models to show.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// `NAME`, `NAME:V`, `NAME@ALIAS`.
    pub target: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// `NAME` (its newest version), `NAME:V` or `NAME@ALIAS`.
    pub target: String,
    /// Where to write the file [default: NAME-vV.onnx]; `-` for standard output.
    #[arg(long, short = 'O', value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct VersionTarget {
    /// `NAME:V` or `NAME@ALIAS`.
    pub target: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Point ALIAS at VERSION (a number, or `@other-alias`), creating or moving it atomically.
    Set {
        /// Model name.
        name: String,
        /// Alias, e.g. `production`.
        alias: String,
        /// Version number, or `@alias` to copy another alias.
        #[arg(value_name = "VERSION")]
        target: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove an alias.
    Rm {
        /// Model name.
        name: String,
        /// Alias.
        alias: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Create or replace an endpoint's policy.
    #[command(
        after_help = "Examples:\n  ferry endpoint set fraud --model fraud --stable 1 --canary 2 --weight 0.05 --shadow 3:0.5 --sticky-header x-user-id\n  ferry endpoint set fraud --model fraud --stable 4 --max-age 30d --decay accuracy:0.05"
    )]
    Set(Box<EndpointSetArgs>),
    /// Show an endpoint's policy and its live analysis across serving replicas.
    Show(EndpointShowArgs),
    /// List endpoints, newest first.
    List(ListArgs),
    /// Remove an endpoint (serving stops routing it).
    Rm {
        /// Endpoint name.
        name: String,
        /// Only if the endpoint is still at this revision.
        #[arg(long, value_name = "REVISION")]
        if_match: Option<i64>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct EndpointSetArgs {
    /// Endpoint name (what clients call: /v2/models/NAME/infer).
    pub name: String,
    /// The model whose versions it routes between.
    #[arg(long)]
    pub model: String,
    /// The version answering by default.
    #[arg(long)]
    pub stable: i64,
    /// A candidate version answering a share of requests.
    #[arg(long, requires = "weight")]
    pub canary: Option<i64>,
    /// The canary's share of requests, 0 to 1 (e.g. 0.05).
    #[arg(long, requires = "canary")]
    pub weight: Option<f64>,
    /// A shadow version with its sample rate, V or V:RATE (repeatable; rate defaults to 1).
    #[arg(long = "shadow", value_name = "V[:RATE]")]
    pub shadows: Vec<String>,
    /// Route by this request header (the same user always sees the same version).
    #[arg(long)]
    pub sticky_header: Option<String>,
    /// Watch live inputs for drift: METRIC:THRESHOLD with METRIC psi, kl or js (e.g. psi:0.2);
    /// a breach is a `drift.detected` event.
    #[arg(long, value_name = "METRIC:THRESHOLD")]
    pub drift: Option<String>,
    /// Fewer live samples than this in a window are not judged [default: 100].
    #[arg(long, requires = "drift")]
    pub drift_min_samples: Option<u64>,
    /// Windows in a row above the threshold before an incident is raised [default: 1].
    #[arg(long, requires = "drift")]
    pub drift_windows: Option<u32>,
    /// Judge the newest N live rows (a sliding window by count) instead of the rows of the
    /// last drift interval: for endpoints with little traffic per interval.
    #[arg(long, value_name = "N", requires = "drift")]
    pub drift_window_samples: Option<u64>,
    /// A perishable model: the stable version is stale once older than this (e.g. 30d, 12h),
    /// counted from its training data's `as_of` (`model push --data-as-of`), else from its
    /// creation; a `model.stale` event fires once per incident. `off` removes it.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Watch the stable version's performance: METRIC:MAX_DROP with METRIC accuracy (from
    /// labels) or reward (mean reward), e.g. accuracy:0.05; a drop past it from the reference is
    /// a `performance.degraded` event. `off` removes it.
    #[arg(long, value_name = "METRIC:MAX_DROP")]
    pub decay: Option<String>,
    /// The rolling window: the newest N labels (or rewards) [default: 200].
    #[arg(long, value_name = "N", requires = "decay")]
    pub decay_window: Option<u64>,
    /// The value to compare with [default: the version's `--metric` of the same name, else its
    /// first full window in production].
    #[arg(long, value_name = "VALUE", requires = "decay")]
    pub decay_reference: Option<f64>,
    /// Only if the endpoint is still at this revision (optimistic concurrency).
    #[arg(long, value_name = "REVISION")]
    pub if_match: Option<i64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum FeaturesCommand {
    /// Register a feature view's definition: a new version, or the version that already has it.
    Register(FeaturesRegisterArgs),
    /// Show a view (`NAME` for the newest version, `NAME:V` for one).
    Show {
        /// `NAME` or `NAME:VERSION`.
        view: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List views (their newest versions), by name.
    List(ListArgs),
    /// Write a view's rows from a CSV or Parquet file into the online store (Redis), one per
    /// entity (an entity's last row wins), streaming; recorded as a feature_view.materialized
    /// event.
    #[command(
        after_help = "The file's columns (a CSV header, or Parquet column names) include the entity key and every feature of the view; other columns are ignored, an empty cell or a null is a missing value.\n\nExamples:\n  ferry features materialize customers customers.csv\n  ferry features materialize customers:2 customers.csv --store redis://cache:6379/1"
    )]
    Materialize(FeaturesMaterializeArgs),
}

#[derive(Debug, Args)]
pub struct FeaturesMaterializeArgs {
    /// `NAME` (the newest version) or `NAME:VERSION`.
    pub view: String,
    /// The CSV file (header row) or Parquet file (known by its magic bytes).
    pub file: PathBuf,
    /// The online store, redis://[:PASSWORD@]HOST:PORT[/DB] (what serving's --feature-store
    /// reads).
    #[arg(
        long,
        env = "FERRY_FEATURE_STORE",
        value_name = "URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub store: String,
    /// The entity key column, checked against the view's (the view defines it).
    #[arg(long)]
    pub entity: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct FeaturesRegisterArgs {
    /// The view's name.
    pub name: String,
    /// The entity key column (e.g. customer_id).
    #[arg(long)]
    pub entity: String,
    /// A feature NAME:DTYPE with DTYPE one of FP32, FP64, INT32, INT64, BOOL (repeatable, in the
    /// order the model takes them).
    #[arg(long = "feature", value_name = "NAME:DTYPE", required = true)]
    pub features: Vec<String>,
    /// The data the view is materialized from: a file or folder, hashed (SHA-256).
    #[arg(long, value_name = "PATH", conflicts_with = "source_uri")]
    pub source: Option<PathBuf>,
    /// The data by URI and hash, URI=SHA256, when it is not a local file.
    #[arg(long, value_name = "URI=SHA256")]
    pub source_uri: Option<String>,
    /// A description.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Subscribe a URL to event types (e.g. drift.detected, version.*, *); prints the signing
    /// secret once.
    Create {
        /// Where deliveries are POSTed.
        url: String,
        /// Event types to deliver (repeatable).
        #[arg(long = "event", value_name = "TYPE", required = true)]
        events: Vec<String>,
        /// The signing secret [default: generated].
        #[arg(long, env = "FERRY_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List webhooks.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a webhook.
    Rm {
        /// Webhook id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deliveries of a webhook (`--status dead` for the dead-letter list).
    Deliveries {
        /// Webhook id.
        id: String,
        /// pending, delivered or dead.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a dead-lettered delivery again.
    Replay {
        /// Webhook id.
        id: String,
        /// Delivery id.
        delivery: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct EndpointShowArgs {
    /// Endpoint name.
    pub name: String,
    /// How far back the analysis looks, e.g. 60s, 5m, 1h.
    #[arg(long, default_value = "5m")]
    pub window: String,
    /// Only the policy and its conditions (stale, performance, drift), without the traffic
    /// analysis.
    #[arg(long, conflicts_with = "window")]
    pub no_analysis: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The endpoint or model name.
    pub name: String,
    /// An input as NAME=JSON array, flat or nested (repeatable); datatype and shape come from
    /// the model's metadata.
    #[arg(long = "input", value_name = "NAME=JSON")]
    pub inputs: Vec<String>,
    /// A whole Open Inference Protocol request body from a file (`-` for standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "inputs")]
    pub json: Option<PathBuf>,
    /// Ask this version directly, bypassing the endpoint's split.
    #[arg(long = "model-version", value_name = "V")]
    pub model_version: Option<String>,
    /// A value for the endpoint's sticky header, to see what that user would get.
    #[arg(long, value_name = "HEADER=VALUE")]
    pub header: Vec<String>,
    /// Serving URL.
    #[arg(long, env = "FERRY_SERVING", default_value = "http://127.0.0.1:8080")]
    pub serving: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct FeedbackCommand {
    #[command(subcommand)]
    pub action: Option<FeedbackAction>,
    #[command(flatten)]
    pub send: FeedbackArgs,
}

#[derive(Debug, Subcommand)]
pub enum FeedbackAction {
    /// Join the prediction log and the feedback log into a training set: one example per
    /// labelled prediction (per row for per-row labels), with its logged inputs as columns.
    Export(FeedbackExportArgs),
    /// The feedback messages the RabbitMQ consumer gave up on (`<queue>.dead`), with the reason
    /// of each; `replay` moves them back to the queue once the cause is fixed.
    #[command(
        name = "dead-letters",
        after_help = "Examples:\n  ferry feedback dead-letters --queue amqp://guest:guest@127.0.0.1:5672/%2f\n  ferry feedback dead-letters -o json --limit 1000\n  ferry feedback dead-letters replay --limit 100"
    )]
    DeadLetters(DeadLettersCommand),
}

/// `ferry feedback dead-letters [replay]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DeadLettersCommand {
    #[command(subcommand)]
    pub action: Option<DeadLettersAction>,
    #[command(flatten)]
    pub list: DeadLettersArgs,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersAction {
    /// Move dead-lettered messages back to the feedback queue (their retries start again; a
    /// feedback already counted is not counted twice).
    Replay(DeadLettersArgs),
}

/// The feedback queue's broker and name.
#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    /// The RabbitMQ the registry consumes feedback from (its --feedback-queue); required.
    #[arg(
        long,
        env = "FERRY_FEEDBACK_QUEUE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub queue: Option<String>,
    /// The feedback queue's name (its --feedback-queue-name); the dead letters are in NAME.dead.
    #[arg(
        long,
        env = "FERRY_FEEDBACK_QUEUE_NAME",
        value_name = "NAME",
        default_value = "ferry.feedback"
    )]
    pub queue_name: String,
    /// Messages shown (or replayed) at most, oldest first.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `ferry feedback export`.
#[derive(Debug, Args)]
pub struct FeedbackExportArgs {
    /// The endpoint.
    pub endpoint: String,
    /// The object store serving logs to (its `--prediction-log`).
    #[arg(long, env = "FERRY_PREDICTION_LOG", value_name = "URL")]
    pub log: String,
    /// Feedback received in this last stretch of time, e.g. 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// jsonl: one JSON object per example; csv: a header, then one row per example; parquet:
    /// one column per field and per input element (DOUBLE), to a file (csv and parquet need
    /// inputs of the same shape in every prediction).
    #[arg(short = 'o', long, value_enum, default_value = "jsonl")]
    pub output: ExportFormat,
}

/// `ferry feedback export -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
    Parquet,
}

#[derive(Debug, Args)]
pub struct FeedbackArgs {
    /// The endpoint or model name.
    #[arg(required = true)]
    pub name: Option<String>,
    /// The prediction's id: the request's `id`, else the `x-request-id` it was answered with.
    #[arg(required = true)]
    pub id: Option<String>,
    /// A business reward for the prediction (any number; higher is better).
    #[arg(long)]
    pub reward: Option<f64>,
    /// The true class (for accuracy).
    #[arg(long)]
    pub label: Option<i64>,
    /// Serving URL.
    #[arg(long, env = "FERRY_SERVING", default_value = "http://127.0.0.1:8080")]
    pub serving: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Training data, one column per feature: CSV (a header row is detected) or Parquet
    /// (recognized by its content; numeric and boolean columns, nulls count as missing).
    pub data: PathBuf,
    /// The model, to pick its tabular input and check the number of features.
    #[arg(long, value_name = "FILE.onnx")]
    pub model: Option<PathBuf>,
    /// The model input the data feeds [default: the model's first [rows, features] input].
    #[arg(long)]
    pub input: Option<String>,
    /// Feature names, comma-separated, overriding the header.
    #[arg(long, value_name = "A,B,…")]
    pub feature_names: Option<String>,
    /// Quantile bins per feature, 2 to 50 [default: 10].
    #[arg(long)]
    pub bins: Option<usize>,
    /// The first row is data, not a header.
    #[arg(long)]
    pub no_header: bool,
    /// Also write the profile (JSON) to this file.
    #[arg(long = "out", short = 'O', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Output: a summary table, or the profile as JSON.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show events after this id.
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    /// Most events to show.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Keep waiting for new events (Ctrl-C to stop). The table cuts long data; `-o json`
    /// prints each event whole, one per line.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only events of this type: exact (`drift.detected`), a family (`drift.*`) or `*`
    /// (repeatable).
    #[arg(long = "type", value_name = "PATTERN")]
    pub types: Vec<String>,
    /// Exit after this many (matching) events, e.g. `--follow --type drift.detected --count 1`
    /// waits for the next drift incident.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// For serde: settings that are off are not written, so a config file may turn them on.
// serde's skip_serializing_if passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(value: &bool) -> bool {
    !value
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn the_runtime_gets_half_the_cpus_and_at_least_one_thread() {
        let threads: Vec<usize> = [1, 2, 3, 4, 16]
            .into_iter()
            .map(super::default_http_threads)
            .collect();
        assert_eq!(threads, [1, 1, 1, 2, 8]);
    }
}

/// A command line clap accepts but the command cannot use (a flag clap could not make required
/// there): exit code 2, like clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A service the command needs (other than the registry) cannot be reached: exit code 7, like
/// an unavailable registry.
#[derive(Debug)]
pub struct UnavailableError(pub String);

impl std::fmt::Display for UnavailableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnavailableError {}
