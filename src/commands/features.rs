//! `ferry features …`: register, show and list feature views, and materialize them into the
//! online store.

use anyhow::{Context, Result, bail};
use ferry_api::features::{FeatureDtype, FeatureField, FeatureViewRecord, FeatureViewSpec};
use ferry_api::lineage::DataRef;

use crate::cli::{
    FeaturesCommand, FeaturesMaterializeArgs, FeaturesRegisterArgs, Output, UnavailableError,
    UsageError,
};
use crate::commands::model::connect;
use crate::data_hash;
use crate::output::{self, Table};

/// Runs a `ferry features` subcommand.
///
/// # Errors
/// Client and server errors, and definitions that do not parse.
pub async fn run(command: FeaturesCommand) -> Result<()> {
    match command {
        FeaturesCommand::Register(args) => register(args).await,
        FeaturesCommand::Show { view, client } => {
            let (name, version) = parse_view(&view)?;
            let api = connect(&client)?;
            let record = api.get_feature_view(name, version).await?;
            if client.output == Output::Json {
                return output::json(&record);
            }
            print_view(&record);
            Ok(())
        }
        FeaturesCommand::Materialize(args) => materialize(args).await,
        FeaturesCommand::List(args) => {
            let api = connect(&args.client)?;
            let page = api
                .list_feature_views(args.limit.clamp(1, 500), None)
                .await?;
            if args.client.output == Output::Json {
                return output::json(&page);
            }
            if page.items.is_empty() {
                crate::say!(
                    "no feature views yet; register one with `ferry features register NAME --entity KEY --feature NAME:DTYPE…`"
                );
                return Ok(());
            }
            let mut table =
                Table::new(&["NAME", "VERSION", "ENTITY", "FEATURES", "SHA256", "CREATED"]);
            for v in &page.items {
                table.row(vec![
                    v.name.clone(),
                    v.version.to_string(),
                    v.spec.entity.clone(),
                    v.spec.features.len().to_string(),
                    output::short_hash(&v.sha256).to_string(),
                    output::time(&v.created_at),
                ]);
            }
            table.print();
            Ok(())
        }
    }
}

/// `NAME` or `NAME:VERSION`.
pub fn parse_view(text: &str) -> Result<(&str, Option<i64>)> {
    match text.rsplit_once(':') {
        Some((name, version)) => {
            let version: i64 = version
                .parse()
                .ok()
                .filter(|v| *v >= 1)
                .with_context(|| format!("`{text}`: `{version}` is not a version number"))?;
            Ok((name, Some(version)))
        }
        None => Ok((text, None)),
    }
}

async fn register(args: FeaturesRegisterArgs) -> Result<()> {
    let mut features = Vec::with_capacity(args.features.len());
    for spec in &args.features {
        let (name, dtype) = spec
            .rsplit_once(':')
            .with_context(|| format!("--feature `{spec}` is not NAME:DTYPE"))?;
        let Some(dtype) = FeatureDtype::parse(dtype) else {
            bail!("--feature `{spec}`: `{dtype}` is not one of FP32, FP64, INT32, INT64, BOOL");
        };
        features.push(FeatureField {
            name: name.to_string(),
            dtype,
        });
    }
    let source = match (&args.source, &args.source_uri) {
        (Some(path), _) => {
            let path = path.clone();
            Some(
                tokio::task::spawn_blocking(move || -> Result<DataRef> {
                    let bar = data_hash::bar(
                        data_hash::total_size(std::slice::from_ref(&path)),
                        "hashing the source",
                    );
                    let sha256 = data_hash::hash_path(&path, &bar)?;
                    bar.finish_and_clear();
                    let absolute = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
                    let uri = url::Url::from_file_path(&absolute)
                        .map(|u| u.to_string())
                        .unwrap_or_else(|()| absolute.display().to_string());
                    Ok(DataRef {
                        uri,
                        sha256,
                        as_of: None,
                    })
                })
                .await??,
            )
        }
        (None, Some(spec)) => {
            let (uri, sha) = spec
                .rsplit_once('=')
                .with_context(|| format!("--source-uri `{spec}` is not URI=SHA256"))?;
            Some(DataRef {
                uri: uri.to_string(),
                sha256: sha.to_ascii_lowercase(),
                as_of: None,
            })
        }
        (None, None) => None,
    };
    let spec = FeatureViewSpec {
        entity: args.entity.clone(),
        features,
        source,
        description: args.description.clone(),
    };
    let api = connect(&args.client)?;
    let record = api.put_feature_view(&args.name, &spec).await?;
    if args.client.output == Output::Json {
        return output::json(&record);
    }
    crate::say!(
        "feature view {}:{}  sha256:{}  {} feature(s) by {}",
        record.name,
        record.version,
        output::short_hash(&record.sha256),
        record.spec.features.len(),
        record.spec.entity
    );
    Ok(())
}

/// How long connecting to the online store may take.
const STORE_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn materialize(args: FeaturesMaterializeArgs) -> Result<()> {
    let (name, version) = parse_view(&args.view)?;
    let api = connect(&args.client)?;
    let view = api.get_feature_view(name, version).await?;
    if let Some(entity) = &args.entity
        && *entity != view.spec.entity
    {
        return Err(UsageError(format!(
            "--entity {entity}: feature view {}:{} is keyed by `{}`",
            view.name, view.version, view.spec.entity
        ))
        .into());
    }
    if !args.store.starts_with("redis://") {
        return Err(
            UsageError("--store: expected redis://[:PASSWORD@]HOST:PORT[/DB]".into()).into(),
        );
    }
    let client = redis::Client::open(args.store.as_str()).context("--store")?;
    let display = ferry_features::online::display_url(&args.store);
    let mut conn = match tokio::time::timeout(
        STORE_CONNECT_TIMEOUT,
        redis::aio::ConnectionManager::new(client),
    )
    .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            return Err(UnavailableError(format!("the online store {display}: {e}")).into());
        }
        Err(_) => {
            return Err(UnavailableError(format!(
                "the online store {display} did not answer within {STORE_CONNECT_TIMEOUT:?}"
            ))
            .into());
        }
    };
    let bar = crate::data_hash::spinner(&format!(
        "materializing {}:{} into {display}",
        view.name, view.version
    ));
    let done = ferry_features::materialize(&mut conn, &view, &args.file, &mut |rows| {
        bar.set_message(format!("{rows} rows written"));
    })
    .await;
    bar.finish_and_clear();
    let done = done.map_err(|e| match e {
        ferry_features::MaterializeError::Store(_) => {
            anyhow::Error::new(UnavailableError(e.to_string()))
        }
        other => anyhow::anyhow!(other),
    })?;
    let body = ferry_api::features::MaterializationBody {
        report: ferry_api::features::Materialization {
            source: args.file.display().to_string(),
            source_sha256: done.sha256.clone(),
            rows: done.rows,
            bytes: done.bytes,
            store: display.clone(),
            seconds: done.seconds,
        },
        sample: Some(done.sample),
    };
    let event = api
        .record_materialization(&view.name, view.version, &body)
        .await?;
    if args.client.output == Output::Json {
        return output::json(&event);
    }
    let rate = if done.seconds > 0.0 {
        done.rows as f64 / done.seconds / 1000.0
    } else {
        0.0
    };
    crate::say!(
        "materialized {}:{}: {} rows ({}) in {:.1}s ({:.1}k rows/s) into {display}; event {}",
        view.name,
        view.version,
        done.rows,
        output::bytes(i64::try_from(done.bytes).unwrap_or(i64::MAX)),
        done.seconds,
        rate,
        event.id
    );
    Ok(())
}

fn print_view(v: &FeatureViewRecord) {
    crate::say!("feature view: {}:{}", v.name, v.version);
    crate::say!("sha256:       {}", v.sha256);
    crate::say!("entity:       {}", v.spec.entity);
    if let Some(s) = &v.spec.source {
        crate::say!(
            "source:       {}  sha256:{}",
            s.uri,
            output::short_hash(&s.sha256)
        );
    }
    if let Some(d) = &v.spec.description {
        crate::say!("description:  {d}");
    }
    crate::say!("created:      {}", output::time(&v.created_at));
    let mut table = Table::new(&["#", "FEATURE", "DTYPE"]);
    for (i, f) in v.spec.features.iter().enumerate() {
        table.row(vec![
            i.to_string(),
            f.name.clone(),
            f.dtype.as_str().to_string(),
        ]);
    }
    table.print();
}
