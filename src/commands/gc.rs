//! `ferry registry gc`: deletes blobs no version references and staging objects left by uploads
//! that died. It talks to the database and the blob store directly (the same settings as
//! `ferry registry`), and is safe while registries serve: see `ferry_registry::gc`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_registry::gc::{GarbageKind, GcReport};
use ferry_registry::store::SchemaState;
use ferry_registry::{BlobStore, MetadataStore};

use crate::cli::{GcArgs, Output};
use crate::config::{self, describe_database};
use crate::output::{self, Table};

/// Runs `ferry registry gc`.
///
/// # Errors
/// Configuration and connection failures, a schema that is not current, and deletions that
/// failed (after the report is printed).
pub async fn run(args: GcArgs) -> Result<()> {
    let min_age = parse_min_age(&args.min_age).context("--min-age")?;
    let settings = config::resolve(&args.server)?;
    // A few connections: gc is one sequential pass.
    let store = MetadataStore::connect(&settings.database_url, 2)
        .await
        .map_err(anyhow::Error::msg)?;
    match store.schema_state().await.context("reading the schema")? {
        SchemaState::Current => {}
        SchemaState::Behind(_) => bail!(
            "{} is behind this binary's migrations; run `ferry registry migrate` first",
            describe_database(&settings.database_url)
        ),
        SchemaState::Ahead(_) => bail!(
            "{} was migrated by a newer Ferry; run gc with that version",
            describe_database(&settings.database_url)
        ),
    }
    let blobs = BlobStore::open_with_retry(
        &settings.blob_url,
        &settings.blob_options,
        settings.blob_retry_timeout,
    )
    .map_err(anyhow::Error::msg)
    .context("opening the blob store")?;
    let report = ferry_registry::gc::collect(&store, &blobs, min_age, args.dry_run)
        .await
        .context("collecting garbage")?;
    store.close().await;
    match args.output {
        Output::Json => output::json(&report)?,
        Output::Table => print_table(&report, blobs.display()),
    }
    if !report.failed.is_empty() {
        bail!(
            "{} object(s) could not be deleted; they stay for the next run",
            report.failed.len()
        );
    }
    Ok(())
}

/// Like `config::parse_duration`, but zero is allowed: `--min-age 0s` collects everything
/// unreferenced now (uploads in flight may then fail and need a retry; none is corrupted).
fn parse_min_age(text: &str) -> Result<Duration> {
    let digits = text.trim().trim_end_matches(['s', 'm', 'h', 'd']);
    if !digits.is_empty() && digits.bytes().all(|b| b == b'0') {
        return Ok(Duration::ZERO);
    }
    config::parse_duration(text)
}

fn print_table(report: &GcReport, store: &str) {
    if !report.garbage.is_empty() {
        let mut table = Table::new(&["KIND", "SIZE", "MODIFIED", "KEY"]);
        for item in &report.garbage {
            let kind = match item.kind {
                GarbageKind::Unreferenced => "unreferenced",
                GarbageKind::Staging => "staging",
                GarbageKind::Partial => "partial",
            };
            table.row(vec![
                kind.to_string(),
                output::bytes(size(item.size)),
                output::time(&item.last_modified),
                item.key.clone(),
            ]);
        }
        table.print();
        crate::say!();
    }
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    crate::say!(
        "{verb} {} object(s), {} from {store}",
        report.collected.count,
        output::bytes(size(report.collected.bytes))
    );
    crate::say!(
        "kept {} blob(s) that versions reference ({})",
        report.referenced.count,
        output::bytes(size(report.referenced.bytes))
    );
    if report.kept_young.count > 0 {
        crate::say!(
            "kept {} object(s) younger than {} s ({}): a later run collects them if they stay unused",
            report.kept_young.count,
            report.min_age_seconds,
            output::bytes(size(report.kept_young.bytes))
        );
    }
    if !report.kept_now_referenced.is_empty() {
        crate::say!(
            "kept {} blob(s) that a version started referencing during the run",
            report.kept_now_referenced.len()
        );
    }
    for key in &report.unknown {
        crate::say!("left alone (not a sha256 name): {key}");
    }
    for failure in &report.failed {
        crate::say!("failed: {}: {}", failure.key, failure.error);
    }
}

fn size(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_age_takes_zero_and_units() {
        assert_eq!(parse_min_age("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_min_age("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_min_age("90m").unwrap(), Duration::from_secs(5400));
        assert!(parse_min_age("soon").is_err());
        assert!(parse_min_age("").is_err());
    }
}
