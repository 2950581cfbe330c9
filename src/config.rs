//! Server settings: serde defaults, then the config file, then `FERRY_*` environment variables
//! and flags (clap gives flags precedence over the environment), validated once into the typed
//! configuration the services take.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cli::ServerArgs;

/// The config file: the same settings as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    blob_url: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_allow_http: Option<bool>,
    #[serde(default)]
    blob_options: std::collections::BTreeMap<String, String>,
    max_upload_size: Option<String>,
    require_lineage: Option<bool>,
    #[serde(default)]
    tokens: Vec<String>,
    tokens_file: Option<PathBuf>,
    upload_idle_timeout: Option<u64>,
    auto_migrate: Option<bool>,
}

/// Everything a server process needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Metadata database URL.
    pub database_url: String,
    /// Blob store URL.
    pub blob_url: String,
    /// object_store options for the blob store.
    pub blob_options: Vec<(String, String)>,
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
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("config file {} is invalid", path.display()))?
        }
        None => FileConfig::default(),
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("ferry-data"));
    let database_url = match args.database_url.clone().or(file.database_url) {
        Some(url) => url,
        None => format!("sqlite://{}", data_dir.join("ferry.db").display()),
    };
    let blob_url = match args.blob_url.clone().or(file.blob_url) {
        Some(url) => url,
        None => data_dir.join("blobs").display().to_string(),
    };
    let mut blob_options: Vec<(String, String)> = file.blob_options.into_iter().collect();
    for option in &args.blob_options {
        let (k, v) = option
            .split_once('=')
            .with_context(|| format!("--blob-option `{option}` is not KEY=VALUE"))?;
        blob_options.push((k.trim().to_string(), v.trim().to_string()));
    }
    if let Some(endpoint) = args.s3_endpoint.clone().or(file.s3_endpoint) {
        blob_options.push(("aws_endpoint".into(), endpoint));
    }
    if let Some(region) = args.s3_region.clone().or(file.s3_region) {
        blob_options.push(("aws_region".into(), region));
    }
    if let Some(allow) = args.s3_allow_http.or(file.s3_allow_http) {
        blob_options.push(("aws_allow_http".into(), allow.to_string()));
    }

    let mut registry = ferry_registry::Config::default();
    if let Some(size) = args.max_upload_size.clone().or(file.max_upload_size) {
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
    let mut token_specs: Vec<String> = if args.tokens.is_empty() {
        file.tokens
    } else {
        args.tokens.clone()
    };
    if let Some(path) = args.tokens_file.clone().or(file.tokens_file) {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read tokens file {}", path.display()))?;
        token_specs.extend(text.lines().map(str::to_string));
    }
    registry.tokens = ferry_registry::Tokens::parse(token_specs.iter().map(String::as_str))
        .map_err(anyhow::Error::msg)
        .context("invalid API token configuration")?;

    Ok(ServerSettings {
        listen,
        database_url,
        blob_url,
        blob_options,
        auto_migrate: args.auto_migrate.or(file.auto_migrate).unwrap_or(false),
        registry,
    })
}

/// Parses sizes like `2GiB`, `500MiB`, `1.5GB`, `1048576`.
///
/// # Errors
/// When the text is not a number with an optional unit.
pub fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("`{text}` does not start with a number"))?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0_f64.powi(4),
        other => bail!("unknown size unit `{other}`; use B, KiB, MiB, GiB, KB, MB or GB"),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes < 1.0 {
        bail!("size `{text}` must be at least 1 byte");
    }
    Ok(bytes as u64)
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
            config: Some(file),
            listen: Some("127.0.0.1:7777".parse().unwrap()),
            ..ServerArgs::default()
        };
        let settings = resolve(&args).unwrap();
        assert_eq!(settings.listen.port(), 7777);
        assert_eq!(settings.registry.upload.max_model_bytes, 1024 * 1024);
        assert!(settings.registry.upload.require_lineage);
        assert!(settings.database_url.starts_with("sqlite://ferry-data"));
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferry.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let args = ServerArgs {
            config: Some(file),
            ..ServerArgs::default()
        };
        let err = format!("{:#}", resolve(&args).unwrap_err());
        assert!(err.contains("lisen"), "{err}");
    }
}
