//! `ferry model …`: the registry from the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_api::client::{ClientError, RegistryClient};
use ferry_api::lineage::{DataRef, ParamValue, VersionMetadata};
use ferry_api::names::{self, ModelRef, VersionRef};
use ferry_api::records::{ModelRecord, VersionRecord, VersionStatus};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::cli::{
    AliasCommand, ClientArgs, DownloadArgs, ListArgs, ModelCommand, Output, PushArgs, ShowArgs,
    VersionTarget,
};
use crate::output::{self, Table};
use crate::{data_hash, git};

/// Attempts at an upload that fails in transit; the idempotency key makes retries safe.
const PUSH_ATTEMPTS: u32 = 3;

/// Runs a `ferry model` subcommand.
///
/// # Errors
/// Client and server errors; the caller turns them into exit codes.
pub async fn run(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Push(args) => push(args).await,
        ModelCommand::List(args) => list(args).await,
        ModelCommand::Show(args) => show(args).await,
        ModelCommand::Download(args) => download(args).await,
        ModelCommand::Alias(AliasCommand::Set {
            name,
            alias,
            target,
            client,
        }) => alias_set(&name, &alias, &target, &client).await,
        ModelCommand::Alias(AliasCommand::Rm {
            name,
            alias,
            client,
        }) => {
            let api = connect(&client)?;
            api.delete_alias(&name, &alias).await?;
            if client.output == Output::Json {
                output::json(
                    &serde_json::json!({ "name": name, "alias": alias, "deleted": true }),
                )?;
            } else {
                crate::say!("removed alias {name}@{alias}");
            }
            Ok(())
        }
        ModelCommand::Archive(target) => set_status(target, VersionStatus::Archived).await,
        ModelCommand::Restore(target) => set_status(target, VersionStatus::Active).await,
    }
}

/// A client for the registry the flags name.
///
/// # Errors
/// An invalid URL.
pub fn connect(client: &ClientArgs) -> Result<RegistryClient> {
    Ok(RegistryClient::new(&client.registry, client.token.clone())?)
}

async fn push(args: PushArgs) -> Result<()> {
    names::validate("model", &args.name)?;
    if let Some(alias) = &args.alias {
        names::validate_alias(alias)?;
    }
    let file_meta = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    if !file_meta.is_file() {
        bail!("{} is not a file", args.file.display());
    }
    let mut metadata = build_metadata(&args).await?;
    let api = connect(&args.client)?;
    if let Some(view) = &args.feature_view {
        let (name, version) = crate::commands::features::parse_view(view)
            .with_context(|| format!("--feature-view `{view}`"))?;
        let record = api
            .get_feature_view(name, version)
            .await
            .with_context(|| format!("--feature-view `{view}`"))?;
        metadata.feature_view = Some(record.reference());
    }

    // Hash first: the registry then checks the bytes end to end, and skips storing bytes it has.
    let size = file_meta.len();
    let sha256 = {
        let path = args.file.clone();
        let bar = data_hash::bar(size, "hashing");

        tokio::task::spawn_blocking(move || {
            let digest = data_hash::hash_path(&path, &bar);
            bar.finish_and_clear();
            digest
        })
        .await??
    };
    let metadata = VersionMetadata {
        sha256: Some(sha256),
        ..metadata
    };
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());

    let mut attempt = 1;
    let record = loop {
        let bar = data_hash::bar(size, "uploading");
        let body = upload_body(&args.file, bar.clone()).await?;
        let result = api
            .push(&args.name, body, Some(size), &metadata, Some(&key))
            .await;
        bar.finish_and_clear();
        match result {
            Ok(record) => break record,
            Err(e) if attempt < PUSH_ATTEMPTS && is_transient(&e) => {
                let pause = Duration::from_secs(1 << attempt);
                eprintln!(
                    "upload failed ({e}); retrying in {} s with the same idempotency key",
                    pause.as_secs()
                );
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut record = record;
    if let Some(alias) = &args.alias {
        api.set_alias(&args.name, alias, &VersionRef::Number(record.version))
            .await?;
        if !record.aliases.contains(alias) {
            record.aliases.push(alias.clone());
        }
    }
    if args.client.output == Output::Json {
        output::json(&record)?;
    } else {
        crate::say!(
            "pushed {}:{}  sha256:{}  {}",
            record.name,
            record.version,
            output::short_hash(&record.sha256),
            output::bytes(record.size)
        );
        if let Some(alias) = &args.alias {
            crate::say!("alias {}@{alias} -> {}", record.name, record.version);
        }
    }
    Ok(())
}

async fn build_metadata(args: &PushArgs) -> Result<VersionMetadata> {
    let mut metadata = VersionMetadata {
        description: args.description.clone(),
        git_repo: args.git_repo.clone(),
        ..VersionMetadata::default()
    };
    match args.git.as_deref() {
        None => {}
        Some("auto") => {
            let cwd = std::env::current_dir().context("reading the current folder")?;
            let info = git::inspect(&cwd)?;
            if info.dirty && !args.allow_dirty {
                bail!(
                    "the git working tree has uncommitted changes, so commit {} would not reproduce \
                     this model; commit them, or pass --allow-dirty to push anyway",
                    &info.commit[..12]
                );
            }
            if info.dirty {
                metadata
                    .tags
                    .insert("git_dirty".to_string(), "true".to_string());
            }
            metadata.git_commit = Some(info.commit);
            if metadata.git_repo.is_none() {
                metadata.git_repo = info.repo;
            }
        }
        Some(sha) => {
            let sha = sha.to_ascii_lowercase();
            if !ferry_api::lineage::is_hex_of_len(&sha, 40) {
                bail!("--git takes `auto` or a full 40-character commit SHA, got `{sha}`");
            }
            metadata.git_commit = Some(sha);
        }
    }
    if !args.data.is_empty() {
        let paths = args.data.clone();
        let data = tokio::task::spawn_blocking(move || -> Result<Vec<DataRef>> {
            let bar = data_hash::bar(data_hash::total_size(&paths), "hashing data");
            let mut out = Vec::new();
            for path in &paths {
                let sha256 = data_hash::hash_path(path, &bar)?;
                let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                let uri = url::Url::from_file_path(&absolute)
                    .map(|u| u.to_string())
                    .unwrap_or_else(|()| absolute.display().to_string());
                out.push(DataRef {
                    uri,
                    sha256,
                    as_of: None,
                });
            }
            bar.finish_and_clear();
            Ok(out)
        })
        .await??;
        metadata.data.extend(data);
    }
    for spec in &args.data_uris {
        let (uri, sha) = spec
            .rsplit_once('=')
            .with_context(|| format!("--data-uri `{spec}` is not URI=SHA256"))?;
        metadata.data.push(DataRef {
            uri: uri.to_string(),
            sha256: sha.to_ascii_lowercase(),
            as_of: None,
        });
    }
    if let Some(text) = &args.data_as_of {
        if metadata.data.is_empty() {
            bail!("--data-as-of dates the training data: give it with --data or --data-uri");
        }
        let as_of = parse_time(text).with_context(|| format!("--data-as-of `{text}`"))?;
        for data in &mut metadata.data {
            data.as_of = Some(as_of);
        }
    }
    for spec in &args.params {
        let (k, v) = key_value("--param", spec)?;
        metadata.params.insert(k, param_value(&v));
    }
    for spec in &args.metrics {
        let (k, v) = key_value("--metric", spec)?;
        let number: f64 = v
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite())
            .with_context(|| format!("--metric {k}: `{v}` is not a finite number"))?;
        metadata.metrics.insert(k, number);
    }
    for spec in &args.tags {
        let (k, v) = key_value("--tag", spec)?;
        metadata.tags.insert(k, v);
    }
    if let Some(data) = &args.profile_data {
        let profile = crate::commands::profile::build(
            data,
            Some(&args.file),
            args.profile_input.as_deref(),
            None,
            None,
            false,
        )
        .await
        .context("--profile-data")?;
        metadata.profile = Some(profile.to_metadata());
    }
    // The registry would refuse it too, but naming the flag is more helpful than naming JSON.
    metadata
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("invalid push options")?;
    Ok(metadata)
}

fn key_value(flag: &str, spec: &str) -> Result<(String, String)> {
    let (k, v) = spec
        .split_once('=')
        .with_context(|| format!("{flag} `{spec}` is not KEY=VALUE"))?;
    if k.trim().is_empty() {
        bail!("{flag} `{spec}` has an empty key");
    }
    Ok((k.trim().to_string(), v.to_string()))
}

/// Numbers and booleans keep their type; anything else is text.
fn param_value(text: &str) -> ParamValue {
    if let Ok(b) = text.parse::<bool>() {
        return ParamValue::Bool(b);
    }
    if let Ok(n) = serde_json::from_str::<serde_json::Number>(text) {
        return ParamValue::Number(n);
    }
    ParamValue::Text(text.to_string())
}

async fn upload_body(path: &Path, bar: indicatif::ProgressBar) -> Result<reqwest::Body> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let stream =
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                bar.inc(bytes.len() as u64);
            }
        });
    Ok(reqwest::Body::wrap_stream(stream))
}

fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        ClientError::Api { status, .. } => matches!(status, 502..=504),
        _ => false,
    }
}

async fn list(args: ListArgs) -> Result<()> {
    let api = connect(&args.client)?;
    let page = api.list_models(args.limit.clamp(1, 500), None).await?;
    if args.client.output == Output::Json {
        return output::json(&page);
    }
    if page.items.is_empty() {
        crate::say!("no models yet; push one with `ferry model push FILE --name NAME`");
        return Ok(());
    }
    let mut table = Table::new(&["NAME", "LATEST", "VERSIONS", "ALIASES", "UPDATED"]);
    for m in &page.items {
        table.row(vec![
            m.name.clone(),
            m.latest_version.to_string(),
            m.version_count.to_string(),
            aliases(m),
            output::time(&m.updated_at),
        ]);
    }
    table.print();
    Ok(())
}

fn aliases(model: &ModelRecord) -> String {
    if model.aliases.is_empty() {
        return "-".into();
    }
    model
        .aliases
        .iter()
        .map(|(a, v)| format!("{a}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn show(args: ShowArgs) -> Result<()> {
    let api = connect(&args.client)?;
    if !args.target.contains(['@', ':']) {
        names::validate("model", &args.target)?;
        let model = api.get_model(&args.target).await?;
        let versions = api.list_versions(&args.target, 20, None).await?;
        if args.client.output == Output::Json {
            return output::json(
                &serde_json::json!({ "model": model, "versions": versions.items }),
            );
        }
        crate::say!("model:    {}", model.name);
        crate::say!(
            "versions: {} (latest {})",
            model.version_count,
            model.latest_version
        );
        crate::say!("aliases:  {}", aliases(&model));
        crate::say!("created:  {}", output::time(&model.created_at));
        crate::say!();
        let mut table = Table::new(&[
            "VERSION", "STATUS", "SHA256", "SIZE", "GIT", "ALIASES", "CREATED",
        ]);
        for v in &versions.items {
            table.row(vec![
                v.version.to_string(),
                status(v.status).into(),
                output::short_hash(&v.sha256),
                output::bytes(v.size),
                v.lineage
                    .git_commit
                    .as_deref()
                    .map_or("-".into(), |c| c.chars().take(12).collect()),
                if v.aliases.is_empty() {
                    "-".into()
                } else {
                    v.aliases.join(",")
                },
                output::time(&v.created_at),
            ]);
        }
        table.print();
        return Ok(());
    }
    let target = ModelRef::parse(&args.target)?;
    let record = api.get_version(&target.name, &target.version).await?;
    if args.client.output == Output::Json {
        return output::json(&record);
    }
    print_version(&record);
    Ok(())
}

fn status(s: VersionStatus) -> &'static str {
    s.as_str()
}

fn print_version(v: &VersionRecord) {
    crate::say!("model:       {}", v.name);
    crate::say!("version:     {}", v.version);
    crate::say!("status:      {}", status(v.status));
    crate::say!(
        "aliases:     {}",
        if v.aliases.is_empty() {
            "-".to_string()
        } else {
            v.aliases.join(", ")
        }
    );
    crate::say!("sha256:      {}", v.sha256);
    crate::say!("size:        {}", output::bytes(v.size));
    crate::say!("created:     {}", output::time(&v.created_at));
    if let Some(d) = &v.description {
        crate::say!("description: {d}");
    }
    crate::say!("lineage:");
    crate::say!(
        "  git commit: {}",
        v.lineage.git_commit.as_deref().unwrap_or("-")
    );
    crate::say!(
        "  git repo:   {}",
        v.lineage.git_repo.as_deref().unwrap_or("-")
    );
    if let Some(view) = &v.lineage.feature_view {
        crate::say!(
            "  features:   {}:{}  sha256:{}",
            view.name,
            view.version,
            output::short_hash(&view.sha256)
        );
    }
    if v.lineage.data.is_empty() {
        crate::say!("  data:       -");
    }
    for d in &v.lineage.data {
        crate::say!(
            "  data:       {}  sha256:{}{}",
            d.uri,
            output::short_hash(&d.sha256),
            d.as_of
                .map(|t| format!("  as of {}", output::time(&t)))
                .unwrap_or_default()
        );
    }
    print_map(
        "params",
        v.params.iter().map(|(k, p)| {
            (
                k,
                match p {
                    ParamValue::Bool(b) => b.to_string(),
                    ParamValue::Number(n) => n.to_string(),
                    ParamValue::Text(t) => t.clone(),
                },
            )
        }),
    );
    print_map("metrics", v.metrics.iter().map(|(k, m)| (k, m.to_string())));
    print_map("tags", v.tags.iter().map(|(k, t)| (k, t.clone())));
    crate::say!(
        "signature:   ir {} · opsets {}",
        v.signature.ir_version,
        v.signature
            .opsets
            .iter()
            .map(|o| format!("{}={}", o.domain, o.version))
            .collect::<Vec<_>>()
            .join(",")
    );
    for i in &v.signature.inputs {
        crate::say!("  input:      {}", output::tensor(i));
    }
    for o in &v.signature.outputs {
        crate::say!("  output:     {}", output::tensor(o));
    }
}

fn print_map<'a>(title: &str, entries: impl Iterator<Item = (&'a String, String)>) {
    let entries: BTreeMap<&String, String> = entries.collect();
    if entries.is_empty() {
        return;
    }
    crate::say!(
        "{title}:{}{}",
        " ".repeat(12usize.saturating_sub(title.len() + 1)),
        entries
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("  ")
    );
}

async fn alias_set(name: &str, alias: &str, version: &str, client: &ClientArgs) -> Result<()> {
    names::validate("model", name)?;
    names::validate_alias(alias)?;
    let version = VersionRef::parse(version)?;
    let api = connect(client)?;
    let record = api.set_alias(name, alias, &version).await?;
    if client.output == Output::Json {
        return output::json(&record);
    }
    match record.previous {
        Some(prev) if prev != record.version => {
            crate::say!("moved alias {name}@{alias}: {prev} -> {}", record.version)
        }
        Some(_) => crate::say!("alias {name}@{alias} already points at {}", record.version),
        None => crate::say!("set alias {name}@{alias} -> {}", record.version),
    }
    Ok(())
}

async fn set_status(target: VersionTarget, status: VersionStatus) -> Result<()> {
    let parsed = ModelRef::parse(&target.target)?;
    if !target.target.contains(['@', ':']) {
        bail!(
            "name a version: `{}:V` or `{}@ALIAS`",
            parsed.name,
            parsed.name
        );
    }
    let api = connect(&target.client)?;
    let version = api.get_version(&parsed.name, &parsed.version).await?;
    let url = api.url(&[
        "api",
        "v1",
        "models",
        &parsed.name,
        "versions",
        &version.version.to_string(),
    ]);
    let record: VersionRecord = api
        .send_json(
            api.request(reqwest::Method::PATCH, url)
                .json(&serde_json::json!({ "status": status })),
        )
        .await?;
    if target.client.output == Output::Json {
        return output::json(&record);
    }
    crate::say!(
        "{}:{} is now {}",
        record.name,
        record.version,
        status.as_str()
    );
    Ok(())
}

/// `NAME-vN.onnx` in the current folder, from what the registry answered: a name that is not a
/// valid model name (a path, `..`, a control character) is refused rather than written to.
fn default_download_name(name: &str, version: i64) -> Result<PathBuf> {
    names::validate("model", name).map_err(|e| {
        anyhow::anyhow!("the registry answered with an unusable model name: {e}; pass -O FILE")
    })?;
    Ok(PathBuf::from(format!("{name}-v{version}.onnx")))
}

async fn download(args: DownloadArgs) -> Result<()> {
    let target = ModelRef::parse(&args.target)?;
    let api = connect(&args.client)?;
    let record = api.get_version(&target.name, &target.version).await?;
    // Download the exact version resolved above, even if an alias moves meanwhile.
    let response = api
        .download(&record.name, &VersionRef::Number(record.version))
        .await?;
    let to_stdout = args.output_file.as_deref() == Some(Path::new("-"));
    let path = match args.output_file.clone() {
        Some(path) => path,
        None => default_download_name(&record.name, record.version)?,
    };
    let size = u64::try_from(record.size).unwrap_or(0);
    let bar = if to_stdout {
        indicatif::ProgressBar::hidden()
    } else {
        data_hash::bar(size, "downloading")
    };
    let mut hasher = Sha256::new();
    let mut stream = response.bytes_stream();
    // Write next to the target and rename once verified: never leave a partial model behind.
    let partial = path.with_extension("onnx.partial");
    let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if to_stdout {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::File::create(&partial)
                .await
                .with_context(|| format!("cannot create {}", partial.display()))?,
        )
    };
    let outcome: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.context("the download was interrupted")?;
            hasher.update(&chunk);
            bar.inc(chunk.len() as u64);
            sink.write_all(&chunk).await.context("writing the model")?;
        }
        sink.flush().await.context("writing the model")?;
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    drop(sink);
    let digest = hex::encode(hasher.finalize());
    if let Err(e) = outcome {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    if digest != record.sha256 {
        let _ = tokio::fs::remove_file(&partial).await;
        bail!(
            "downloaded bytes hash to {digest}, but version {} has sha256 {}; nothing was written",
            record.version,
            record.sha256
        );
    }
    if to_stdout {
        return Ok(());
    }
    tokio::fs::rename(&partial, &path)
        .await
        .with_context(|| format!("cannot move the download to {}", path.display()))?;
    if args.client.output == Output::Json {
        return output::json(&serde_json::json!({
            "name": record.name, "version": record.version, "sha256": record.sha256,
            "size": record.size, "path": path,
        }));
    }
    crate::say!(
        "downloaded {}:{} to {} ({}, sha256 verified)",
        record.name,
        record.version,
        path.display(),
        output::bytes(record.size)
    );
    Ok(())
}

/// An RFC 3339 time (`2026-11-01T06:00:00Z`) or a date (`2026-11-01`, midnight UTC).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_utc());
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .context("not an RFC 3339 time (2026-11-01T06:00:00Z) or a date (2026-11-01)")?;
    Ok(date.and_time(chrono::NaiveTime::MIN).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_download_name_refuses_paths_from_the_registry() {
        assert_eq!(
            default_download_name("fraud", 3).unwrap(),
            PathBuf::from("fraud-v3.onnx")
        );
        for hostile in ["../../.bashrc", "/etc/passwd", "a/b", "..", "a\nb", ""] {
            let err = default_download_name(hostile, 1).unwrap_err().to_string();
            assert!(err.contains("-O FILE"), "{hostile}: {err}");
        }
    }

    #[test]
    fn params_keep_numbers_and_booleans() {
        assert_eq!(param_value("true"), ParamValue::Bool(true));
        assert!(matches!(param_value("0.01"), ParamValue::Number(_)));
        assert_eq!(param_value("adam"), ParamValue::Text("adam".into()));
    }

    #[test]
    fn key_values_need_an_equals_sign_and_a_key() {
        assert!(key_value("--tag", "team").is_err());
        assert!(key_value("--tag", "=x").is_err());
        assert_eq!(
            key_value("--tag", "team=risk=a").unwrap(),
            ("team".to_string(), "risk=a".to_string())
        );
    }
}
