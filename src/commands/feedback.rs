//! `ferry feedback export`: a training set from the logs serving writes (`--prediction-log`):
//! every prediction of an endpoint that received feedback in the last `--since`, with its logged
//! inputs, its prediction and its label (see [`ferry_feedback::export`]).
//!
//! `ferry feedback dead-letters [replay]`: the messages the RabbitMQ consumer gave up on (see
//! [`ferry_registry::feedback_queue::dead_letters`]).

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use ferry_api::storage::{DEFAULT_RETRY_TIMEOUT, StoreRoot};
use ferry_feedback::export::{CsvExamples, Join, ParquetExamples};
use futures::TryStreamExt;
use object_store::ObjectStore;

use crate::cli::{DeadLettersArgs, ExportFormat, FeedbackExportArgs, Output};
use crate::output::Table;
use ferry_registry::feedback_queue::{FeedbackQueueConfig, dead_letters};

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

fn queue_config(args: &DeadLettersArgs) -> Result<FeedbackQueueConfig> {
    // Optional in clap only: a required flag shared by `dead-letters` and its `replay` trips
    // clap's subcommand validation.
    let Some(url) = &args.queue else {
        return Err(crate::cli::UsageError(
            "which broker? pass --queue amqp://USER:PASS@HOST:5672/VHOST (or set FERRY_FEEDBACK_QUEUE)"
                .into(),
        )
        .into());
    };
    let mut config = FeedbackQueueConfig::new(url).map_err(anyhow::Error::msg)?;
    config
        .set_queue(&args.queue_name)
        .map_err(anyhow::Error::msg)
        .context("--queue-name")?;
    Ok(config)
}

/// Lists the dead-letter queue without consuming it.
///
/// # Errors
/// An invalid URL, an unreachable broker, a queue that does not exist (exit code 4).
pub async fn dead_letters(args: DeadLettersArgs) -> Result<()> {
    let config = queue_config(&args)?;
    let listed = dead_letters::list(&config, args.limit)
        .await
        .with_context(|| format!("listing the dead letters at {}", config.redacted_url()))?;
    if args.output == Output::Json {
        return crate::output::json(&listed);
    }
    let mut table = Table::new(&["#", "REASON", "RETRIES", "REPLAYS", "MESSAGE"]);
    for (i, m) in listed.messages.iter().enumerate() {
        table.row(vec![
            (i + 1).to_string(),
            m.reason.clone().unwrap_or_else(|| "-".into()),
            m.retries.to_string(),
            m.replays.to_string(),
            m.body
                .chars()
                .take(120)
                .collect::<String>()
                .replace(['\n', '\r'], " "),
        ]);
    }
    table.print();
    crate::say!(
        "{} message(s) in {}{}",
        listed.total,
        listed.queue,
        if (listed.messages.len() as u64) < u64::from(listed.total) {
            format!(", the first {} shown (--limit)", listed.messages.len())
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Moves dead letters back to the feedback queue.
///
/// # Errors
/// As [`dead_letters`].
pub async fn replay(args: DeadLettersArgs) -> Result<()> {
    let config = queue_config(&args)?;
    let moved = dead_letters::replay(&config, args.limit)
        .await
        .with_context(|| format!("replaying the dead letters at {}", config.redacted_url()))?;
    if args.output == Output::Json {
        return crate::output::json(&serde_json::json!({
            "replayed": moved,
            "from": config.dead_queue(),
            "to": config.queue,
        }));
    }
    crate::say!(
        "replayed {moved} message(s) from {} to {}",
        config.dead_queue(),
        config.queue
    );
    Ok(())
}
