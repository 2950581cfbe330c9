//! Server settings: serde defaults, then the config file, then `FERRY_*` environment variables
//! and flags (clap gives flags precedence over the environment), validated once into the typed
//! configuration the services take.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cli::{CommonArgs, RuntimeArgs, ServerArgs, ServingCommand};

/// The config file: the same settings as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    header_read_timeout: Option<String>,
    max_connections: Option<usize>,
    shutdown_delay: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    blob_url: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_allow_http: Option<bool>,
    #[serde(default)]
    blob_options: std::collections::BTreeMap<String, String>,
    blob_retry_timeout: Option<String>,
    max_upload_size: Option<String>,
    require_lineage: Option<bool>,
    #[serde(default)]
    tokens: Vec<String>,
    tokens_file: Option<PathBuf>,
    upload_idle_timeout: Option<u64>,
    auto_migrate: Option<bool>,
    report_retention: Option<String>,
    drift_interval: Option<String>,
    amqp_url: Option<String>,
    webhook_max_attempts: Option<u32>,
    webhook_timeout: Option<String>,
    // Serving.
    onnxruntime: Option<PathBuf>,
    max_batch_size: Option<usize>,
    max_queue_delay_ms: Option<u64>,
    queue_capacity: Option<usize>,
    workers: Option<usize>,
    intra_op_threads: Option<usize>,
    inter_op_threads: Option<usize>,
    request_timeout_ms: Option<u64>,
    max_request_size: Option<String>,
    #[serde(default)]
    model_options: std::collections::BTreeMap<String, ModelOptionsFile>,
    #[serde(default)]
    models: Vec<String>,
    registry: Option<String>,
    cache_dir: Option<PathBuf>,
    prediction_log: Option<String>,
    log_inputs: Option<bool>,
    feedback_capacity: Option<usize>,
    feedback_ttl: Option<String>,
    load_timeout: Option<String>,
    report_interval: Option<String>,
}

/// `[model_options.NAME]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelOptionsFile {
    max_batch_size: Option<usize>,
    max_queue_delay_ms: Option<u64>,
    queue_capacity: Option<usize>,
    workers: Option<usize>,
    intra_op_threads: Option<usize>,
    inter_op_threads: Option<usize>,
}

fn load_file(path: Option<&Path>) -> Result<FileConfig> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("config file {} is invalid", path.display()))
        }
        None => Ok(FileConfig::default()),
    }
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
}

/// Resolves the settings of a server process.
///
/// # Errors
/// Names the setting that is invalid and why.
pub fn resolve(args: &ServerArgs) -> Result<ServerSettings> {
    let file = load_file(args.common.config.as_deref())?;
    let listen = args
        .common
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("ferry-data"));
    let database_url = match args.database_url.clone().or(file.database_url.clone()) {
        Some(url) => url,
        None => format!("sqlite://{}", data_dir.join("ferry.db").display()),
    };
    let blob_url = match args.blob_url.clone().or(file.blob_url.clone()) {
        Some(url) => url,
        None => data_dir.join("blobs").display().to_string(),
    };
    let mut blob_options: Vec<(String, String)> = file.blob_options.clone().into_iter().collect();
    for option in &args.blob_options {
        let (k, v) = option
            .split_once('=')
            .with_context(|| format!("--blob-option `{option}` is not KEY=VALUE"))?;
        blob_options.push((k.trim().to_string(), v.trim().to_string()));
    }
    if let Some(endpoint) = args.s3_endpoint.clone().or(file.s3_endpoint.clone()) {
        blob_options.push(("aws_endpoint".into(), endpoint));
    }
    if let Some(region) = args.s3_region.clone().or(file.s3_region.clone()) {
        blob_options.push(("aws_region".into(), region));
    }
    if let Some(allow) = args.s3_allow_http.or(file.s3_allow_http) {
        blob_options.push(("aws_allow_http".into(), allow.to_string()));
    }
    let blob_retry_timeout = match args
        .blob_retry_timeout
        .clone()
        .or(file.blob_retry_timeout.clone())
    {
        Some(text) => {
            parse_duration(&text).with_context(|| format!("blob retry timeout `{text}`"))?
        }
        None => ferry_registry::blob_store::DEFAULT_RETRY_TIMEOUT,
    };

    let mut registry = ferry_registry::Config::default();
    if let Some(size) = args
        .max_upload_size
        .clone()
        .or(file.max_upload_size.clone())
    {
        registry.upload.max_model_bytes =
            parse_size(&size).with_context(|| format!("max upload size `{size}`"))?;
    }
    registry.upload.require_lineage = args
        .require_lineage
        .or(file.require_lineage)
        .unwrap_or(false);
    if let Some(secs) = args.upload_idle_timeout.or(file.upload_idle_timeout) {
        if secs == 0 {
            bail!("upload idle timeout must be at least 1 second");
        }
        registry.upload.idle_timeout = Duration::from_secs(secs);
    }
    if let Some(url) = args.amqp_url.clone().or(file.amqp_url.clone()) {
        registry.relay = Some(
            ferry_registry::relay::RelayConfig::new(&url)
                .map_err(anyhow::Error::msg)
                .context("--amqp-url")?,
        );
    }
    if let Some(n) = args.webhook_max_attempts.or(file.webhook_max_attempts) {
        if n == 0 {
            bail!("webhook max attempts must be at least 1");
        }
        registry.webhooks.max_attempts = n;
    }
    if let Some(text) = args
        .webhook_timeout
        .clone()
        .or(file.webhook_timeout.clone())
    {
        registry.webhooks.request_timeout =
            parse_duration(&text).with_context(|| format!("webhook timeout `{text}`"))?;
    }
    if let Some(text) = args.drift_interval.clone().or(file.drift_interval.clone()) {
        registry.drift_interval =
            parse_duration(&text).with_context(|| format!("drift interval `{text}`"))?;
    }
    if let Some(text) = args
        .report_retention
        .clone()
        .or(file.report_retention.clone())
    {
        registry.report_retention =
            parse_duration(&text).with_context(|| format!("report retention `{text}`"))?;
    }
    registry.tokens = tokens(
        &args.common.tokens,
        args.common.tokens_file.as_deref(),
        &file,
    )?;

    Ok(ServerSettings {
        listen,
        connections: connection_limits(&args.common, &file)?,
        data_dir,
        database_url,
        blob_url,
        blob_options,
        blob_retry_timeout,
        auto_migrate: args.auto_migrate.or(file.auto_migrate).unwrap_or(false),
        registry,
    })
}

/// How a server treats client connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest time to receive a request line and headers.
    pub header_read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long to keep accepting after a shutdown signal, readiness failing, before draining.
    pub shutdown_delay: Duration,
}

fn connection_limits(common: &CommonArgs, file: &FileConfig) -> Result<ConnectionLimits> {
    let header_read_timeout = match common
        .header_read_timeout
        .clone()
        .or(file.header_read_timeout.clone())
    {
        Some(text) => {
            parse_duration(&text).with_context(|| format!("header read timeout `{text}`"))?
        }
        None => Duration::from_secs(10),
    };
    if header_read_timeout.is_zero() {
        bail!("header read timeout must be longer than zero");
    }
    let max_connections = common
        .max_connections
        .or(file.max_connections)
        .unwrap_or(10_000);
    if max_connections == 0 {
        bail!("max connections must be at least 1");
    }
    let shutdown_delay = match common
        .shutdown_delay
        .clone()
        .or(file.shutdown_delay.clone())
    {
        // `0s` is a valid delay (the default): stop accepting at once.
        Some(text)
            if text
                .trim()
                .trim_end_matches(char::is_alphabetic)
                .trim_matches('0')
                .is_empty() =>
        {
            Duration::ZERO
        }
        Some(text) => parse_duration(&text).with_context(|| format!("shutdown delay `{text}`"))?,
        None => Duration::ZERO,
    };
    if shutdown_delay > Duration::from_secs(300) {
        bail!(
            "shutdown delay must be at most 5m; Kubernetes kills the pod after its grace period anyway"
        );
    }
    Ok(ConnectionLimits {
        header_read_timeout,
        max_connections,
        shutdown_delay,
    })
}

fn tokens(
    flags: &[String],
    tokens_file: Option<&Path>,
    file: &FileConfig,
) -> Result<ferry_api::http::auth::Tokens> {
    let mut specs: Vec<String> = if flags.is_empty() {
        file.tokens.clone()
    } else {
        flags.to_vec()
    };
    if let Some(path) = tokens_file.or(file.tokens_file.as_deref()) {
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
    runtime_settings(args, &file)
}

fn runtime_settings(args: &RuntimeArgs, file: &FileConfig) -> Result<RuntimeSettings> {
    let mut serving = ferry_serving::ServingConfig::default();
    let defaults = &mut serving.runtime;
    apply(
        defaults,
        &ModelOptionsFile {
            max_batch_size: args.max_batch_size.or(file.max_batch_size),
            max_queue_delay_ms: args.max_queue_delay_ms.or(file.max_queue_delay_ms),
            queue_capacity: args.queue_capacity.or(file.queue_capacity),
            workers: args.workers.or(file.workers),
            intra_op_threads: args.intra_op_threads.or(file.intra_op_threads),
            inter_op_threads: args.inter_op_threads.or(file.inter_op_threads),
        },
    );
    defaults
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("invalid runtime options")?;
    if let Some(ms) = args.request_timeout_ms.or(file.request_timeout_ms) {
        if ms == 0 {
            bail!("request timeout must be at least 1 ms");
        }
        serving.request_timeout = Duration::from_millis(ms);
    }
    if let Some(size) = args
        .max_request_size
        .clone()
        .or(file.max_request_size.clone())
    {
        serving.max_request_bytes = usize::try_from(
            parse_size(&size).with_context(|| format!("max request size `{size}`"))?,
        )
        .context("max request size is too large")?;
    }
    if let Some(n) = args.feedback_capacity.or(file.feedback_capacity) {
        serving.feedback_capacity = n;
    }
    if let Some(text) = args.feedback_ttl.clone().or(file.feedback_ttl.clone()) {
        serving.feedback_ttl =
            parse_duration(&text).with_context(|| format!("feedback TTL `{text}`"))?;
    }
    if let Some(text) = args.load_timeout.clone().or(file.load_timeout.clone()) {
        serving.load_timeout =
            parse_duration(&text).with_context(|| format!("load timeout `{text}`"))?;
        if serving.load_timeout.is_zero() {
            bail!("load timeout must be longer than zero");
        }
    }
    if let Some(text) = args
        .report_interval
        .clone()
        .or(file.report_interval.clone())
    {
        serving.report_interval =
            parse_duration(&text).with_context(|| format!("report interval `{text}`"))?;
        if serving.report_interval < std::time::Duration::from_millis(100) {
            bail!("report interval must be at least 100ms");
        }
    }
    let mut per_model: std::collections::BTreeMap<String, ModelOptionsFile> =
        std::collections::BTreeMap::new();
    for (name, options) in &file.model_options {
        per_model.insert(
            name.clone(),
            ModelOptionsFile {
                max_batch_size: options.max_batch_size,
                max_queue_delay_ms: options.max_queue_delay_ms,
                queue_capacity: options.queue_capacity,
                workers: options.workers,
                intra_op_threads: options.intra_op_threads,
                inter_op_threads: options.inter_op_threads,
            },
        );
    }
    for spec in &args.model_options {
        let (name, kv) = spec
            .split_once(':')
            .with_context(|| format!("--model-option `{spec}` is not NAME:KEY=VALUE"))?;
        let (key, value) = kv
            .split_once('=')
            .with_context(|| format!("--model-option `{spec}` is not NAME:KEY=VALUE"))?;
        let entry = per_model.entry(name.to_string()).or_default();
        let number = |v: &str| -> Result<u64> {
            v.trim()
                .parse::<u64>()
                .with_context(|| format!("--model-option `{spec}`: `{v}` is not a number"))
        };
        match key.trim() {
            "max_batch_size" => entry.max_batch_size = Some(number(value)? as usize),
            "max_queue_delay_ms" => entry.max_queue_delay_ms = Some(number(value)?),
            "queue_capacity" => entry.queue_capacity = Some(number(value)? as usize),
            "workers" => entry.workers = Some(number(value)? as usize),
            "intra_op_threads" => entry.intra_op_threads = Some(number(value)? as usize),
            "inter_op_threads" => entry.inter_op_threads = Some(number(value)? as usize),
            other => bail!(
                "--model-option `{spec}`: unknown key `{other}`; use max_batch_size, \
                 max_queue_delay_ms, queue_capacity, workers, intra_op_threads or inter_op_threads"
            ),
        }
    }
    for (name, overrides) in per_model {
        let mut options = serving.runtime.clone();
        apply(&mut options, &overrides);
        options
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("invalid runtime options for model `{name}`"))?;
        serving.model_options.insert(name, options);
    }
    Ok(RuntimeSettings {
        onnxruntime: args.onnxruntime.clone().or(file.onnxruntime.clone()),
        serving,
        prediction_log: args.prediction_log.clone().or(file.prediction_log.clone()),
        log_inputs: args.log_inputs || file.log_inputs.unwrap_or(false),
    })
}

fn apply(options: &mut ferry_serving::runtime::RuntimeOptions, o: &ModelOptionsFile) {
    if let Some(v) = o.max_batch_size {
        options.max_batch_size = v;
    }
    if let Some(v) = o.max_queue_delay_ms {
        options.max_queue_delay = Duration::from_millis(v);
    }
    if let Some(v) = o.queue_capacity {
        options.queue_capacity = v;
    }
    if let Some(v) = o.workers {
        options.workers = v;
    }
    if let Some(v) = o.intra_op_threads {
        options.intra_op_threads = v;
    }
    if let Some(v) = o.inter_op_threads {
        options.inter_op_threads = v;
    }
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
    let specs: Vec<String> = if cmd.models.is_empty() {
        file.models.clone()
    } else {
        cmd.models.clone()
    };
    let mut models = Vec::new();
    for spec in &specs {
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
    if cmd.registry.is_none()
        && file.registry.is_none()
        && !matches!(&endpoints, EndpointSpec::Named(e) if e.is_empty())
    {
        bail!("endpoints come from a registry: pass --registry URL");
    }
    let registry = cmd.registry.clone().or(file.registry.clone());
    if registry.is_none()
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
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081))),
        connections: connection_limits(&cmd.common, &file)?,
        tokens: tokens(&cmd.common.tokens, cmd.common.tokens_file.as_deref(), &file)?,
        models,
        endpoints,
        registry,
        registry_token: cmd.registry_token.clone(),
        cache_dir: cmd
            .cache_dir
            .clone()
            .or(file.cache_dir.clone())
            .unwrap_or_else(|| PathBuf::from("ferry-cache")),
        runtime: runtime_settings(&cmd.runtime, &file)?,
    })
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
        let settings = runtime_settings(&args, &FileConfig::default()).unwrap();
        assert_eq!(settings.serving.options_for("other").max_batch_size, 32);
        assert_eq!(settings.serving.options_for("big").max_batch_size, 8);
        assert_eq!(settings.serving.options_for("big").workers, 2);
        let bad = RuntimeArgs {
            model_options: vec!["big:speed=11".into()],
            ..RuntimeArgs::default()
        };
        assert!(
            format!(
                "{:#}",
                runtime_settings(&bad, &FileConfig::default()).unwrap_err()
            )
            .contains("unknown key")
        );
        let zero = RuntimeArgs {
            workers: Some(0),
            ..RuntimeArgs::default()
        };
        assert!(runtime_settings(&zero, &FileConfig::default()).is_err());
    }

    #[test]
    fn the_report_interval_defaults_to_five_seconds_and_takes_sub_second_values() {
        let settings = runtime_settings(&RuntimeArgs::default(), &FileConfig::default()).unwrap();
        assert_eq!(settings.serving.report_interval, Duration::from_secs(5));
        let fast = RuntimeArgs {
            report_interval: Some("500ms".into()),
            ..RuntimeArgs::default()
        };
        let settings = runtime_settings(&fast, &FileConfig::default()).unwrap();
        assert_eq!(settings.serving.report_interval, Duration::from_millis(500));
        let too_fast = RuntimeArgs {
            report_interval: Some("10ms".into()),
            ..RuntimeArgs::default()
        };
        let err = format!(
            "{:#}",
            runtime_settings(&too_fast, &FileConfig::default()).unwrap_err()
        );
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
}
