//! Server settings in one layering: clap reads the flags and the `FERRY_*` environment variables
//! (flags first), [`overlay`] lays them over the config file's values (the same settings in
//! snake_case), defaults fill the rest, and each `resolve*` validates the result once into the
//! typed configuration the services take. A new setting is a field of the flag structs in
//! `cli.rs`: its flag, variable and file key follow from it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::{CommonArgs, RuntimeArgs, ServerArgs, ServingCommand};

/// The config file's settings by key: TOML read into JSON values, so they overlay the flags'
/// own serde form.
type FileValues = serde_json::Map<String, serde_json::Value>;

/// Settings whose file value and flags add up (the file's first) instead of the flags replacing
/// it: both are lists of `KEY=VALUE` overrides.
const ADDITIVE: &[&str] = &["blob_options", "model_options"];

/// Reads the config file, if any: every key must be a setting some command takes (the flags'
/// names in snake_case, as clap knows them), so a misspelt key is an error instead of being
/// ignored. `[blob_options]` and `[model_options.NAME]` tables become the flags' `KEY=VALUE`
/// and `NAME:KEY=VALUE` forms.
fn load_file(path: Option<&Path>) -> Result<FileValues> {
    let Some(path) = path else {
        return Ok(FileValues::new());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("config file {} is invalid", path.display()))?;
    let serde_json::Value::Object(mut values) = serde_json::to_value(table)
        .with_context(|| format!("config file {} is invalid", path.display()))?
    else {
        bail!("config file {} is not a table", path.display());
    };
    let known = known_settings();
    if let Some(unknown) = values.keys().find(|k| !known.contains(k.as_str())) {
        bail!(
            "config file {}: unknown setting `{unknown}`; settings are the flags' names in              snake_case (see --help)",
            path.display()
        );
    }
    if let Some(options) = values.remove("blob_options") {
        let serde_json::Value::Object(options) = options else {
            bail!(
                "config file {}: `blob_options` must be a table of KEY = \"VALUE\"",
                path.display()
            );
        };
        let list = options
            .iter()
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .map(serde_json::Value::String)
            .collect();
        values.insert("blob_options".into(), serde_json::Value::Array(list));
    }
    if let Some(models) = values.remove("model_options") {
        let serde_json::Value::Object(models) = models else {
            bail!(
                "config file {}: `model_options` must be tables [model_options.NAME]",
                path.display()
            );
        };
        let mut list = Vec::new();
        for (name, options) in models {
            let serde_json::Value::Object(options) = options else {
                bail!(
                    "config file {}: `model_options.{name}` must be a table",
                    path.display()
                );
            };
            for (k, v) in options {
                list.push(serde_json::Value::String(format!(
                    "{name}:{k}={}",
                    plain(&v)
                )));
            }
        }
        values.insert("model_options".into(), serde_json::Value::Array(list));
    }
    Ok(values)
}

/// A scalar as it would be typed on the command line.
fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The names of every setting any command takes: the ids clap gives its arguments (the fields'
/// names), across every subcommand.
fn known_settings() -> std::collections::BTreeSet<String> {
    fn walk(command: &clap::Command, out: &mut std::collections::BTreeSet<String>) {
        for arg in command.get_arguments() {
            out.insert(arg.get_id().as_str().to_string());
        }
        for sub in command.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(
        &<crate::cli::Cli as clap::CommandFactory>::command(),
        &mut out,
    );
    out.remove("config");
    out
}

/// The settings clap parsed (flags, then `FERRY_*` variables) over the config file's: one
/// layering for every setting. `given` is serialized without the settings nobody gave, laid
/// over the file's values, and read back, so a setting is a field of the flag struct and
/// nothing else; lists replace the file's, except the [`ADDITIVE`] ones.
///
/// # Errors
/// A file value of the wrong type, naming the setting.
fn overlay<T: serde::Serialize + serde::de::DeserializeOwned>(
    given: &T,
    file: &FileValues,
) -> Result<T> {
    let serde_json::Value::Object(flags) =
        serde_json::to_value(given).context("reading the flags")?
    else {
        bail!("the flags are not a table");
    };
    let mut merged = file.clone();
    for (key, value) in flags {
        match (merged.get_mut(&key), value) {
            (Some(serde_json::Value::Array(from_file)), serde_json::Value::Array(from_flags))
                if ADDITIVE.contains(&key.as_str()) =>
            {
                from_file.extend(from_flags);
            }
            (_, value) => {
                merged.insert(key, value);
            }
        }
    }
    let value = serde_json::Value::Object(merged.clone());
    serde_path_to_error::deserialize(&value).map_err(|e| {
        // Flattened structs lose serde's path: find the setting by reading each one alone.
        let key = merged
            .iter()
            .find(|(k, v)| {
                let alone = serde_json::json!({ k.as_str(): v });
                serde_json::from_value::<T>(alone).is_err()
            })
            .map_or_else(|| e.path().to_string(), |(k, _)| k.clone());
        anyhow::anyhow!("setting `{key}` is not valid: {}", e.inner())
    })
}

/// Everything a server process needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Limits on client connections.
    pub connections: ConnectionLimits,
    /// Folder of the embedded database, blobs and serving cache.
    pub data_dir: PathBuf,
    /// Metadata database URL.
    pub database_url: String,
    /// Blob store URL.
    pub blob_url: String,
    /// object_store options for the blob store.
    pub blob_options: Vec<(String, String)>,
    /// How long a cloud object store is retried before a request fails.
    pub blob_retry_timeout: Duration,
    /// Apply migrations at start.
    pub auto_migrate: bool,
    /// The registry's own settings.
    pub registry: ferry_registry::Config,
    /// The shared prediction index (`redis://…`), when feedback is to join at any replica.
    pub feedback_store: Option<String>,
    /// The online feature store (`redis://…`), when versions read features for named entities.
    pub feature_store: Option<String>,
    /// Object store URL of the prediction and feedback log, when enabled.
    pub prediction_log: Option<String>,
}

/// Resolves the settings of a server process.
///
/// # Errors
/// Names the setting that is invalid and why.
pub fn resolve(args: &ServerArgs) -> Result<ServerSettings> {
    let file = load_file(args.common.config.as_deref())?;
    let args = overlay(args, &file)?;
    let listen = args
        .common
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("ferry-data"));
    let database_url = match args.database_url.clone() {
        Some(url) => url,
        None => format!("sqlite://{}", data_dir.join("ferry.db").display()),
    };
    let blob_url = match args.blob_url.clone() {
        Some(url) => url,
        None => data_dir.join("blobs").display().to_string(),
    };
    let mut blob_options: Vec<(String, String)> = Vec::new();
    for option in &args.blob_options {
        let (k, v) = option
            .split_once('=')
            .with_context(|| format!("--blob-option `{option}` is not KEY=VALUE"))?;
        blob_options.push((k.trim().to_string(), v.trim().to_string()));
    }
    if let Some(endpoint) = args.s3_endpoint.clone() {
        blob_options.push(("aws_endpoint".into(), endpoint));
    }
    if let Some(region) = args.s3_region.clone() {
        blob_options.push(("aws_region".into(), region));
    }
    if let Some(allow) = args.s3_allow_http {
        blob_options.push(("aws_allow_http".into(), allow.to_string()));
    }
    let blob_retry_timeout = match &args.blob_retry_timeout {
        Some(text) => {
            parse_duration(text).with_context(|| format!("blob retry timeout `{text}`"))?
        }
        None => ferry_registry::blob_store::DEFAULT_RETRY_TIMEOUT,
    };

    let mut registry = ferry_registry::Config::default();
    if let Some(size) = &args.max_upload_size {
        registry.upload.max_model_bytes =
            parse_size(size).with_context(|| format!("max upload size `{size}`"))?;
    }
    registry.upload.require_lineage = args.require_lineage.unwrap_or(false);
    if let Some(secs) = args.upload_idle_timeout {
        if secs == 0 {
            bail!("upload idle timeout must be at least 1 second");
        }
        registry.upload.idle_timeout = Duration::from_secs(secs);
    }
    if let Some(n) = args.max_concurrent_uploads {
        if n == 0 {
            bail!("--max-concurrent-uploads must be at least 1");
        }
        registry.upload.max_concurrent = n;
    }
    if let Some(rate) = &args.upload_min_rate {
        registry.upload.min_rate =
            parse_size(rate).with_context(|| format!("--upload-min-rate `{rate}`"))?;
    }
    if let Some(url) = &args.amqp_url {
        let mut relay = ferry_registry::relay::RelayConfig::new(url)
            .map_err(anyhow::Error::msg)
            .context("--amqp-url")?;
        if let Some(name) = &args.amqp_exchange {
            relay
                .set_exchange(name)
                .map_err(anyhow::Error::msg)
                .context("--amqp-exchange")?;
        }
        if let Some(text) = &args.relay_lease {
            let lease = parse_duration(text).with_context(|| format!("--relay-lease `{text}`"))?;
            relay
                .set_lease(lease)
                .map_err(anyhow::Error::msg)
                .context("--relay-lease")?;
        }
        registry.relay = Some(relay);
    } else if args.amqp_exchange.is_some() || args.relay_lease.is_some() {
        bail!("--amqp-exchange and --relay-lease set the event relay, which needs --amqp-url");
    }
    if let Some(url) = &args.feedback_queue {
        let mut queue = ferry_registry::feedback_queue::FeedbackQueueConfig::new(url)
            .map_err(anyhow::Error::msg)
            .context("--feedback-queue")?;
        if let Some(name) = &args.feedback_queue_name {
            queue
                .set_queue(name)
                .map_err(anyhow::Error::msg)
                .context("--feedback-queue-name")?;
        }
        if let Some(n) = args.feedback_prefetch {
            if n == 0 {
                bail!("--feedback-prefetch must be at least 1");
            }
            queue.prefetch = n;
        }
        if let Some(n) = args.feedback_retries {
            queue.retries = n;
        }
        if let Some(text) = &args.feedback_retry_delay {
            queue.retry_delay =
                parse_duration(text).with_context(|| format!("--feedback-retry-delay `{text}`"))?;
        }
        registry.feedback_queue = Some(queue);
    }
    if let Some(n) = args.webhook_max_attempts {
        if n == 0 {
            bail!("webhook max attempts must be at least 1");
        }
        registry.webhooks.max_attempts = n;
    }
    if let Some(text) = &args.webhook_timeout {
        registry.webhooks.request_timeout =
            parse_duration(text).with_context(|| format!("webhook timeout `{text}`"))?;
    }
    if let Some(text) = &args.drift_interval {
        registry.drift_interval =
            parse_duration(text).with_context(|| format!("drift interval `{text}`"))?;
    }
    if let Some(text) = &args.report_retention {
        registry.report_retention =
            parse_duration(text).with_context(|| format!("report retention `{text}`"))?;
    }
    registry.tokens = tokens(&args.common)?;
    registry.metrics_require_token = args.common.metrics_require_token;
    // Without tokens the server listens on loopback only, so every caller is on this machine and
    // reaches its private addresses anyway: the webhook rule would keep nobody out.
    registry.webhooks.allow_private = args.webhook_allow_private || registry.tokens.is_open();

    Ok(ServerSettings {
        listen,
        connections: connection_limits(&args.common)?,
        data_dir,
        database_url,
        blob_url,
        blob_options,
        blob_retry_timeout,
        auto_migrate: args.auto_migrate.unwrap_or(false),
        registry,
        feedback_store: feedback_store(&args.common)?,
        feature_store: feature_store(&args.common)?,
        prediction_log: args.common.prediction_log.clone(),
    })
}

/// How a server treats client connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest time to receive a request line and headers.
    pub header_read_timeout: Duration,
    /// How long a connection may stay without a request in flight.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one client address (0: no limit).
    pub max_per_client: usize,
    /// How long to keep accepting after a shutdown signal, readiness failing, before draining.
    pub shutdown_delay: Duration,
}

fn connection_limits(common: &CommonArgs) -> Result<ConnectionLimits> {
    let header_read_timeout = match &common.header_read_timeout {
        Some(text) => {
            parse_duration(text).with_context(|| format!("header read timeout `{text}`"))?
        }
        None => Duration::from_secs(10),
    };
    let idle_timeout = match &common.idle_timeout {
        Some(text) => parse_duration(text).with_context(|| format!("idle timeout `{text}`"))?,
        None => Duration::from_secs(60),
    };
    let max_connections = common.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        bail!("max connections must be at least 1");
    }
    let shutdown_delay = match &common.shutdown_delay {
        // `0s` is a valid delay (the default): stop accepting at once.
        Some(text) => ferry_api::units::parse_duration(text)
            .with_context(|| format!("shutdown delay `{text}`"))?,
        None => Duration::ZERO,
    };
    if shutdown_delay > Duration::from_secs(300) {
        bail!(
            "shutdown delay must be at most 5m; Kubernetes kills the pod after its grace period anyway"
        );
    }
    Ok(ConnectionLimits {
        header_read_timeout,
        idle_timeout,
        max_connections,
        max_per_client: common.max_connections_per_client.unwrap_or(0),
        shutdown_delay,
    })
}

fn tokens(common: &CommonArgs) -> Result<ferry_api::http::auth::Tokens> {
    let mut specs = common.tokens.clone();
    if let Some(path) = &common.tokens_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read tokens file {}", path.display()))?;
        specs.extend(text.lines().map(str::to_string));
    }
    ferry_api::http::auth::Tokens::parse(specs.iter().map(String::as_str))
        .map_err(anyhow::Error::msg)
        .context("invalid API token configuration")
}

/// How models run, resolved.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Explicit path of the ONNX Runtime library.
    pub onnxruntime: Option<PathBuf>,
    /// The serving configuration.
    pub serving: ferry_serving::ServingConfig,
    /// Object store URL of the prediction log, when enabled.
    pub prediction_log: Option<String>,
    /// Log request bodies too.
    pub log_inputs: bool,
}

/// Resolves the runtime flags against the config file and defaults.
///
/// # Errors
/// Names the invalid setting.
pub fn resolve_runtime(args: &RuntimeArgs, config: Option<&Path>) -> Result<RuntimeSettings> {
    let file = load_file(config)?;
    runtime_settings(&overlay(args, &file)?)
}

/// The runtime options one `--model-option` (or `[model_options.NAME]` key) may override.
const MODEL_OPTION_KEYS: &str = "max_batch_size, max_queue_delay_ms, queue_capacity, workers, \
     intra_op_threads or inter_op_threads";

fn runtime_settings(args: &RuntimeArgs) -> Result<RuntimeSettings> {
    let mut serving = ferry_serving::ServingConfig::default();
    let defaults = &mut serving.runtime;
    for (key, value) in [
        ("max_batch_size", args.max_batch_size.map(|v| v as u64)),
        ("max_queue_delay_ms", args.max_queue_delay_ms),
        ("queue_capacity", args.queue_capacity.map(|v| v as u64)),
        ("workers", args.workers.map(|v| v as u64)),
        ("intra_op_threads", args.intra_op_threads.map(|v| v as u64)),
        ("inter_op_threads", args.inter_op_threads.map(|v| v as u64)),
    ] {
        if let Some(value) = value {
            set_option(defaults, key, value)?;
        }
    }
    defaults
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("invalid runtime options")?;
    if let Some(ms) = args.request_timeout_ms {
        if ms == 0 {
            bail!("request timeout must be at least 1 ms");
        }
        serving.request_timeout = Duration::from_millis(ms);
    }
    if let Some(size) = &args.max_request_size {
        serving.max_request_bytes = usize::try_from(
            parse_size(size).with_context(|| format!("max request size `{size}`"))?,
        )
        .context("max request size is too large")?;
    }
    if let Some(size) = &args.max_buffered_bodies {
        serving.max_buffered_bytes = usize::try_from(
            parse_size(size).with_context(|| format!("--max-buffered-bodies `{size}`"))?,
        )
        .context("--max-buffered-bodies is too large")?;
    }
    if let Some(n) = args.feedback_capacity {
        serving.feedback_capacity = n;
    }
    if let Some(text) = &args.feedback_ttl {
        serving.feedback_ttl =
            parse_duration(text).with_context(|| format!("feedback TTL `{text}`"))?;
    }
    if let Some(text) = &args.load_timeout {
        serving.load_timeout =
            parse_duration(text).with_context(|| format!("load timeout `{text}`"))?;
    }
    if let Some(text) = &args.report_interval {
        serving.report_interval =
            parse_duration(text).with_context(|| format!("report interval `{text}`"))?;
        if serving.report_interval < std::time::Duration::from_millis(100) {
            bail!("report interval must be at least 100ms");
        }
    }
    let mut per_model: std::collections::BTreeMap<String, ferry_serving::runtime::RuntimeOptions> =
        std::collections::BTreeMap::new();
    for spec in &args.model_options {
        let (name, kv) = spec
            .split_once(':')
            .with_context(|| format!("--model-option `{spec}` is not NAME:KEY=VALUE"))?;
        let (key, value) = kv
            .split_once('=')
            .with_context(|| format!("--model-option `{spec}` is not NAME:KEY=VALUE"))?;
        let number = value
            .trim()
            .parse::<u64>()
            .with_context(|| format!("--model-option `{spec}`: `{value}` is not a number"))?;
        let options = per_model
            .entry(name.to_string())
            .or_insert_with(|| serving.runtime.clone());
        set_option(options, key.trim(), number)
            .with_context(|| format!("--model-option `{spec}`"))?;
    }
    for (name, options) in per_model {
        options
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("invalid runtime options for model `{name}`"))?;
        serving.model_options.insert(name, options);
    }
    Ok(RuntimeSettings {
        onnxruntime: args.onnxruntime.clone(),
        serving,
        // Set from the common settings by the caller (`ferry up` shares it with the registry).
        prediction_log: None,
        log_inputs: args.log_inputs,
    })
}

/// Sets one runtime option by its key.
fn set_option(
    options: &mut ferry_serving::runtime::RuntimeOptions,
    key: &str,
    value: u64,
) -> Result<()> {
    let count = || usize::try_from(value).context("the number is too large");
    match key {
        "max_batch_size" => options.max_batch_size = count()?,
        "max_queue_delay_ms" => options.max_queue_delay = Duration::from_millis(value),
        "queue_capacity" => options.queue_capacity = count()?,
        "workers" => options.workers = count()?,
        "intra_op_threads" => options.intra_op_threads = Some(count()?),
        "inter_op_threads" => options.inter_op_threads = count()?,
        other => bail!("unknown key `{other}`; use {MODEL_OPTION_KEYS}"),
    }
    Ok(())
}

/// One `--model` of `ferry serving`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// `NAME=PATH.onnx`.
    File {
        /// The served name.
        name: String,
        /// The ONNX file.
        path: PathBuf,
    },
    /// `NAME`, `NAME@ALIAS`, `NAME:V`.
    Registry {
        /// The model (and served) name.
        name: String,
        /// Which version; `None` is the default (production, else latest).
        reference: Option<ferry_api::names::VersionRef>,
    },
}

/// Parses a `--model` value.
///
/// # Errors
/// A message naming the bad part.
pub fn parse_model_spec(spec: &str) -> Result<ModelSpec> {
    if let Some((name, path)) = spec.split_once('=') {
        ferry_api::names::validate("model", name).map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(ModelSpec::File {
            name: name.to_string(),
            path: PathBuf::from(path),
        });
    }
    let parsed = ferry_api::names::ModelRef::parse(spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let explicit = spec.contains(['@', ':']);
    Ok(ModelSpec::Registry {
        name: parsed.name,
        reference: explicit.then_some(parsed.version),
    })
}

/// `--endpoint NAME…` or `--all-endpoints`.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointSpec {
    /// These endpoints (possibly none).
    Named(Vec<String>),
    /// Every endpoint of the registry.
    All,
}

/// Everything `ferry serving` needs.
#[derive(Debug, Clone)]
pub struct ServingSettings {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Limits on client connections.
    pub connections: ConnectionLimits,
    /// Tokens clients must present.
    pub tokens: ferry_api::http::auth::Tokens,
    /// `/metrics` only for requests with a valid token.
    pub metrics_require_token: bool,
    /// What to serve.
    pub models: Vec<ModelSpec>,
    /// Which endpoints to serve.
    pub endpoints: EndpointSpec,
    /// The registry, when models come from one.
    pub registry: Option<String>,
    /// Its token.
    pub registry_token: Option<String>,
    /// The artifact cache.
    pub cache_dir: PathBuf,
    /// How models run.
    pub runtime: RuntimeSettings,
}

/// Resolves `ferry serving`'s settings.
///
/// # Errors
/// Names the invalid setting.
pub fn resolve_serving(cmd: &ServingCommand) -> Result<ServingSettings> {
    let file = load_file(cmd.common.config.as_deref())?;
    let cmd = overlay(cmd, &file)?;
    let mut models = Vec::new();
    for spec in &cmd.models {
        let parsed = parse_model_spec(spec).with_context(|| format!("--model `{spec}`"))?;
        let name = match &parsed {
            ModelSpec::File { name, .. } | ModelSpec::Registry { name, .. } => name.clone(),
        };
        if models.iter().any(|m: &ModelSpec| match m {
            ModelSpec::File { name: n, .. } | ModelSpec::Registry { name: n, .. } => *n == name,
        }) {
            bail!("model `{name}` is given twice; serve each name once");
        }
        models.push(parsed);
    }
    for name in &cmd.endpoints {
        ferry_api::names::validate("endpoint", name).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let endpoints = if cmd.all_endpoints {
        EndpointSpec::All
    } else {
        EndpointSpec::Named(cmd.endpoints.clone())
    };
    if models.is_empty() && matches!(&endpoints, EndpointSpec::Named(e) if e.is_empty()) {
        bail!(
            "nothing to serve: pass --model NAME@ALIAS or --endpoint NAME (with --registry URL), or --model NAME=PATH.onnx"
        );
    }
    if cmd.registry.is_none() && !matches!(&endpoints, EndpointSpec::Named(e) if e.is_empty()) {
        bail!("endpoints come from a registry: pass --registry URL");
    }
    if cmd.registry.is_none()
        && let Some(ModelSpec::Registry { name, .. }) = models
            .iter()
            .find(|m| matches!(m, ModelSpec::Registry { .. }))
    {
        bail!(
            "--model `{name}` comes from a registry: pass --registry URL (or use NAME=PATH.onnx)"
        );
    }
    Ok(ServingSettings {
        listen: cmd
            .common
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081))),
        connections: connection_limits(&cmd.common)?,
        tokens: tokens(&cmd.common)?,
        metrics_require_token: cmd.common.metrics_require_token,
        models,
        endpoints,
        registry: cmd.registry.clone(),
        registry_token: cmd.registry_token.clone(),
        cache_dir: cmd
            .cache_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("ferry-cache")),
        runtime: {
            let mut runtime = runtime_settings(&cmd.runtime)?;
            runtime.serving.feedback_store = feedback_store(&cmd.common)?;
            runtime.serving.feature_store = feature_store(&cmd.common)?;
            runtime.prediction_log = cmd.common.prediction_log.clone();
            runtime
        },
    })
}

/// `--feedback-store`, checked to be a Redis URL.
fn feedback_store(common: &CommonArgs) -> Result<Option<String>> {
    match &common.feedback_store {
        Some(url) if url.starts_with("redis://") => Ok(Some(url.clone())),
        Some(_) => bail!("feedback store: expected redis://[:PASSWORD@]HOST:PORT[/DB]"),
        None => Ok(None),
    }
}

/// `--feature-store`, checked to be a Redis URL.
fn feature_store(common: &CommonArgs) -> Result<Option<String>> {
    match &common.feature_store {
        Some(url) if url.starts_with("redis://") => Ok(Some(url.clone())),
        Some(_) => bail!("feature store: expected redis://[:PASSWORD@]HOST:PORT[/DB]"),
        None => Ok(None),
    }
}

/// A duration longer than zero, in the contract's grammar ([`ferry_api::units`]: `500ms`, `90s`,
/// `15m`, `1h`, `2d`, or plain seconds).
///
/// # Errors
/// When the text is not a duration, or is zero.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let duration = ferry_api::units::parse_duration(text)?;
    if duration.is_zero() {
        bail!("`{text}` must be longer than zero");
    }
    Ok(duration)
}

/// A size in the contract's grammar ([`ferry_api::units`]: `2GiB`, `500MiB`, `1.5GB`, bytes).
///
/// # Errors
/// When the text is not a size of at least a byte.
pub fn parse_size(text: &str) -> Result<u64> {
    Ok(ferry_api::units::parse_size(text)?)
}

/// Whether an address is only reachable from this machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Returns the folder of a `sqlite://` URL's file, for messages.
pub fn describe_database(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        format!(
            "SQLite {}",
            Path::new(rest.split('?').next().unwrap_or(rest)).display()
        )
    } else {
        format!("PostgreSQL {}", ferry_registry::store::redact_url(url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("500MiB").unwrap(), 500 * 1024 * 1024);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn flags_win_over_the_config_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferry.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\nmax_upload_size = \"1MiB\"\nrequire_lineage = true\n",
        )
        .unwrap();
        let args = ServerArgs {
            common: crate::cli::CommonArgs {
                config: Some(file),
                listen: Some("127.0.0.1:7777".parse().unwrap()),
                ..Default::default()
            },
            ..ServerArgs::default()
        };
        let settings = resolve(&args).unwrap();
        assert_eq!(settings.listen.port(), 7777);
        assert_eq!(settings.registry.upload.max_model_bytes, 1024 * 1024);
        assert!(settings.registry.upload.require_lineage);
        assert!(settings.database_url.starts_with("sqlite://ferry-data"));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("0ms").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn model_specs_name_files_aliases_versions_and_defaults() {
        use ferry_api::names::VersionRef;
        assert_eq!(
            parse_model_spec("mlp=tests/fixtures/mlp.onnx").unwrap(),
            ModelSpec::File {
                name: "mlp".into(),
                path: "tests/fixtures/mlp.onnx".into()
            }
        );
        assert_eq!(
            parse_model_spec("fraud@production").unwrap(),
            ModelSpec::Registry {
                name: "fraud".into(),
                reference: Some(VersionRef::Alias("production".into()))
            }
        );
        assert_eq!(
            parse_model_spec("fraud:3").unwrap(),
            ModelSpec::Registry {
                name: "fraud".into(),
                reference: Some(VersionRef::Number(3))
            }
        );
        assert_eq!(
            parse_model_spec("fraud").unwrap(),
            ModelSpec::Registry {
                name: "fraud".into(),
                reference: None
            }
        );
        assert!(parse_model_spec("../x=y").is_err());
    }

    #[test]
    fn per_model_options_override_the_defaults() {
        let args = RuntimeArgs {
            max_batch_size: Some(32),
            model_options: vec!["big:max_batch_size=8".into(), "big:workers=2".into()],
            ..RuntimeArgs::default()
        };
        let settings = runtime_settings(&args).unwrap();
        assert_eq!(settings.serving.options_for("other").max_batch_size, 32);
        assert_eq!(settings.serving.options_for("big").max_batch_size, 8);
        assert_eq!(settings.serving.options_for("big").workers, 2);
        let bad = RuntimeArgs {
            model_options: vec!["big:speed=11".into()],
            ..RuntimeArgs::default()
        };
        assert!(format!("{:#}", runtime_settings(&bad).unwrap_err()).contains("unknown key"));
        let zero = RuntimeArgs {
            workers: Some(0),
            ..RuntimeArgs::default()
        };
        assert!(runtime_settings(&zero).is_err());
    }

    #[test]
    fn the_report_interval_defaults_to_five_seconds_and_takes_sub_second_values() {
        let settings = runtime_settings(&RuntimeArgs::default()).unwrap();
        assert_eq!(settings.serving.report_interval, Duration::from_secs(5));
        let fast = RuntimeArgs {
            report_interval: Some("500ms".into()),
            ..RuntimeArgs::default()
        };
        let settings = runtime_settings(&fast).unwrap();
        assert_eq!(settings.serving.report_interval, Duration::from_millis(500));
        let too_fast = RuntimeArgs {
            report_interval: Some("10ms".into()),
            ..RuntimeArgs::default()
        };
        let err = format!("{:#}", runtime_settings(&too_fast).unwrap_err());
        assert!(err.contains("at least 100ms"), "{err}");
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferry.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let args = ServerArgs {
            common: crate::cli::CommonArgs {
                config: Some(file),
                ..Default::default()
            },
            ..ServerArgs::default()
        };
        let err = format!("{:#}", resolve(&args).unwrap_err());
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn one_layering_for_every_setting_of_every_command() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferry.toml");
        std::fs::write(
            &file,
            r#"
listen = "127.0.0.1:9001"
models = ["a=a.onnx", "b=b.onnx"]
tokens = ["read:0123456789abcdef0123"]
log_inputs = true
max_batch_size = 16
report_interval = "2s"
[blob_options]
aws_region = "eu-west-1"
[model_options.a]
workers = 3
"#,
        )
        .unwrap();
        let cmd = ServingCommand {
            models: vec!["c=c.onnx".into()],
            common: crate::cli::CommonArgs {
                config: Some(file.clone()),
                ..Default::default()
            },
            runtime: RuntimeArgs {
                max_batch_size: Some(8),
                model_options: vec!["a:max_batch_size=2".into()],
                ..RuntimeArgs::default()
            },
            ..ServingCommand::default()
        };
        let settings = resolve_serving(&cmd).unwrap();
        // A list given by flag replaces the file's; a scalar only in the file is taken from it.
        assert_eq!(settings.models.len(), 1);
        assert_eq!(settings.listen.port(), 9001);
        assert!(!settings.tokens.is_open());
        assert!(settings.runtime.log_inputs, "a switch the file turns on");
        assert_eq!(settings.runtime.serving.runtime.max_batch_size, 8);
        assert_eq!(
            settings.runtime.serving.report_interval,
            Duration::from_secs(2)
        );
        // Per-model options add up: the file's, then the flags'.
        let a = settings.runtime.serving.options_for("a");
        assert_eq!((a.workers, a.max_batch_size), (3, 2));
        // The same file serves `ferry registry` (keys of other commands are settings too).
        let server = resolve(&ServerArgs {
            common: crate::cli::CommonArgs {
                config: Some(file),
                ..Default::default()
            },
            blob_options: vec!["aws_allow_http=true".into()],
            ..ServerArgs::default()
        })
        .unwrap();
        assert_eq!(
            server.blob_options,
            vec![
                ("aws_region".to_string(), "eu-west-1".to_string()),
                ("aws_allow_http".to_string(), "true".to_string())
            ]
        );
    }

    #[test]
    fn a_file_value_of_the_wrong_type_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferry.toml");
        std::fs::write(&file, "max_connections = \"many\"\n").unwrap();
        let args = ServerArgs {
            common: crate::cli::CommonArgs {
                config: Some(file),
                ..Default::default()
            },
            ..ServerArgs::default()
        };
        let err = format!("{:#}", resolve(&args).unwrap_err());
        assert!(err.contains("max_connections"), "{err}");
    }

    #[test]
    fn every_flag_of_every_command_is_a_known_config_key() {
        let known = known_settings();
        for key in [
            "listen",
            "tokens",
            "models",
            "endpoints",
            "blob_options",
            "model_options",
            "feedback_ttl",
            "shutdown_delay",
            "amqp_url",
            "data_dir",
        ] {
            assert!(known.contains(key), "{key}");
        }
        assert!(!known.contains("config"));
    }
}
