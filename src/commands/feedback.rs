//! `ferry feedback export`: a training set from the logs serving writes (`--prediction-log`):
//! every prediction of an endpoint that received feedback in the last `--since`, with its logged
//! inputs, its prediction and its label (see [`ferry_feedback::export`]).

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use ferry_api::storage::{DEFAULT_RETRY_TIMEOUT, StoreRoot};
use ferry_feedback::export::{CsvExamples, Join, ParquetExamples};
use futures::TryStreamExt;
use object_store::ObjectStore;

use crate::cli::{ExportFormat, FeedbackExportArgs};

/// Runs the export, writing examples to stdout and a summary to stderr.
///
/// # Errors
/// A bad endpoint name or duration, an unreadable store, a log line serving did not write.
pub async fn export(args: FeedbackExportArgs) -> Result<()> {
    ferry_api::names::validate("endpoint", &args.endpoint).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.output == ExportFormat::Parquet && std::io::stdout().is_terminal() {
        anyhow::bail!("Parquet is binary: redirect it to a file (… -o parquet > train.parquet)");
    }
    let since = Utc::now()
        - crate::config::parse_duration(&args.since)
            .with_context(|| format!("--since `{}`", args.since))?;
    let store = StoreRoot::open(&args.log, &[], DEFAULT_RETRY_TIMEOUT)
        .map_err(anyhow::Error::msg)
        .context("opening the log store")?;

    // The feedback of the window, held by prediction id.
    let mut join = Join::default();
    let mut earliest_prediction = since;
    for path in day_files(&store, "feedback", &args.endpoint, since).await? {
        for line in read_lines(&store, &path).await? {
            let kept: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("a line of {path} is not JSON"))?;
            let at = kept["at"]
                .as_str()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok());
            if at.is_none_or(|at| at < since) {
                continue;
            }
            if let Some(p) = kept["predicted_at"]
                .as_str()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            {
                earliest_prediction = earliest_prediction.min(p);
            }
            join.add_feedback(&line)
                .with_context(|| format!("in {path}"))?;
        }
    }

    // The predictions they are about: streamed file by file.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut csv = (args.output == ExportFormat::Csv).then(|| CsvExamples::new(Vec::new()));
    let mut parquet = (args.output == ExportFormat::Parquet)
        .then(|| ParquetExamples::new(std::io::BufWriter::new(std::io::stdout())));
    let mut examples = 0usize;
    let mut files = 0usize;
    for path in day_files(&store, "predictions", &args.endpoint, earliest_prediction).await? {
        files += 1;
        for line in read_lines(&store, &path).await? {
            for example in join.examples(&line).with_context(|| format!("in {path}"))? {
                examples += 1;
                match (&mut csv, &mut parquet) {
                    (Some(csv), _) => csv.write(&example).context("writing CSV")?,
                    (_, Some(parquet)) => parquet.write(example).context("writing Parquet")?,
                    (None, None) => {
                        serde_json::to_writer(&mut out, &example)?;
                        out.write_all(b"\n")?;
                    }
                }
            }
        }
        if let Some(writer) = csv.take() {
            // CSV goes out file by file too: the writer buffers only one file's rows.
            let (rows, next) = drain(writer)?;
            out.write_all(&rows)?;
            csv = Some(next);
        }
    }
    out.flush()?;
    drop(out);
    if let Some(parquet) = parquet {
        parquet.finish().context("writing Parquet")?;
    }
    eprintln!(
        "{examples} example(s) from {} feedback and {files} prediction file(s) of `{}`",
        join.len(),
        args.endpoint
    );
    Ok(())
}

/// The CSV bytes written so far, and a writer that continues without a second header.
fn drain(csv: CsvExamples<Vec<u8>>) -> Result<(Vec<u8>, CsvExamples<Vec<u8>>)> {
    let (rows, next) = csv.split().context("writing CSV")?;
    Ok((rows, next))
}

/// The objects under `KIND/ENDPOINT/DAY/` for days from `since`'s on, in name order (which is
/// time order).
async fn day_files(
    store: &StoreRoot,
    kind: &str,
    endpoint: &str,
    since: DateTime<Utc>,
) -> Result<Vec<String>> {
    let prefix = store.root.child(kind).child(endpoint);
    let first_day = since.format("%Y-%m-%d").to_string();
    let objects: Vec<object_store::ObjectMeta> = store
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .with_context(|| format!("listing {}/{kind}/{endpoint}/", store.display))?;
    let mut paths: Vec<String> = objects
        .into_iter()
        .map(|o| o.location.to_string())
        .filter(|p| {
            p.rsplit('/')
                .nth(1)
                .is_some_and(|day| day >= first_day.as_str())
        })
        .collect();
    paths.sort();
    Ok(paths)
}

async fn read_lines(store: &StoreRoot, path: &str) -> Result<Vec<String>> {
    let bytes = store
        .store
        .get(&object_store::path::Path::from(path))
        .await
        .with_context(|| format!("reading {path}"))?
        .bytes()
        .await
        .with_context(|| format!("reading {path}"))?;
    let text = String::from_utf8(bytes.to_vec()).with_context(|| format!("{path} is not UTF-8"))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}
