//! Materialization: a feature view's rows from a CSV or Parquet file into the online store, streaming (a
//! bounded queue of batches between the reading thread and the Redis writer: memory stays flat
//! whatever the file's size). The last row of an entity wins.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_api::features::{FeatureDtype, FeatureViewRecord};
use ferry_api::skew::{OfflineSample, SAMPLE_ROWS, SampledRow, entity_hash};
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::encoding::{MAX_ENTITY_LEN, Value, as_number, encode, parse_cell, row_key};

/// Rows per Redis pipeline.
pub const BATCH_ROWS: usize = 1000;

/// Batches read ahead of the writer.
const QUEUE_BATCHES: usize = 4;

/// How long one pipeline may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a materialization did.
#[derive(Debug, Clone, PartialEq)]
pub struct Materialized {
    /// Rows read and written.
    pub rows: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// SHA-256 of the file's bytes (lowercase hex), computed while reading.
    pub sha256: String,
    /// The rows of the entities with the smallest hashes, for the skew check.
    pub sample: OfflineSample,
    /// How long it took.
    pub seconds: f64,
}

/// Why a materialization stopped.
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    /// The file cannot be read, or is not CSV.
    #[error("{0}")]
    Read(String),
    /// A column the view needs is not in the header.
    #[error("the header has no column `{0}` (the view needs its entity key and every feature)")]
    MissingColumn(String),
    /// A cell that is not its feature's type, or an unusable entity key.
    #[error("line {line}: {problem}")]
    Row {
        /// The line in the file (the header is line 1).
        line: u64,
        /// What is wrong, naming the column.
        problem: String,
    },
    /// Redis refused or did not answer.
    #[error("the online store: {0}")]
    Store(String),
}

/// Writes the rows of the file at `path` (Parquet, known by its magic bytes, else CSV with a
/// header row) into the online store under `view`'s version:
/// one value per entity ([`crate::encoding`]), pipelined [`BATCH_ROWS`] at a time. Rows written
/// before an error stay written (the next materialization of the same version overwrites them).
/// `progress` hears the rows written so far after each batch.
///
/// # Errors
/// [`MaterializeError`] naming the line and the column.
pub async fn materialize(
    conn: &mut ConnectionManager,
    view: &FeatureViewRecord,
    path: &Path,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Materialized, MaterializeError> {
    let started = Instant::now();
    let bytes = std::fs::metadata(path)
        .map_err(|e| MaterializeError::Read(format!("{}: {e}", path.display())))?
        .len();
    let (tx, mut rx) = mpsc::channel::<Vec<(String, Vec<u8>)>>(QUEUE_BATCHES);
    let reader = {
        let view = view.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || read_batches(&view, &path, &tx))
    };
    let mut rows = 0u64;
    while let Some(batch) = rx.recv().await {
        let mut pipe = redis::pipe();
        for (key, value) in &batch {
            pipe.set(key, value.as_slice()).ignore();
        }
        match tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(conn)).await {
            Ok(Ok(())) => {
                rows += batch.len() as u64;
                progress(rows);
            }
            Ok(Err(e)) => return Err(MaterializeError::Store(e.to_string())),
            Err(_) => {
                return Err(MaterializeError::Store(format!(
                    "no answer within {CALL_TIMEOUT:?}"
                )));
            }
        }
    }
    let (sha256, sample) = reader
        .await
        .map_err(|e| MaterializeError::Read(format!("the reading task failed: {e}")))??;
    Ok(Materialized {
        rows,
        bytes,
        sha256,
        sample,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The bottom-k sample of entities by hash, the last row of an entity winning.
#[derive(Default)]
struct Sampler {
    rows: BTreeMap<(u64, String), Vec<Option<f64>>>,
}

impl Sampler {
    fn offer(&mut self, entity: &str, dtypes: &[FeatureDtype], values: &[Option<Value>]) {
        let hash = entity_hash(entity);
        if self.rows.len() == SAMPLE_ROWS
            && self
                .rows
                .last_key_value()
                .is_some_and(|((top, _), _)| hash > *top)
        {
            return;
        }
        let numbers = dtypes
            .iter()
            .zip(values)
            .map(|(d, v)| as_number(*d, *v))
            .collect();
        self.rows.insert((hash, entity.to_string()), numbers);
        if self.rows.len() > SAMPLE_ROWS {
            self.rows.pop_last();
        }
    }

    fn finish(self) -> OfflineSample {
        let bound = if self.rows.len() == SAMPLE_ROWS {
            self.rows
                .last_key_value()
                .map_or(u64::MAX, |((h, _), _)| *h)
        } else {
            u64::MAX
        };
        OfflineSample {
            bound,
            rows: self
                .rows
                .into_iter()
                .map(|((_, entity), values)| SampledRow { entity, values })
                .collect(),
        }
    }
}

/// Where read rows go: encoded into batches for the writer, and offered to the sample.
pub(crate) struct Sink<'a> {
    view: &'a FeatureViewRecord,
    dtypes: Vec<FeatureDtype>,
    batch: Vec<(String, Vec<u8>)>,
    sampler: Sampler,
    tx: &'a mpsc::Sender<Vec<(String, Vec<u8>)>>,
}

impl Sink<'_> {
    /// The view's feature types, in its order.
    pub(crate) fn dtypes(&self) -> &[FeatureDtype] {
        &self.dtypes
    }

    /// Takes row `line`; `false` when the writer stopped (on an error it reports).
    pub(crate) fn push(
        &mut self,
        line: u64,
        key: &str,
        values: &[Option<Value>],
    ) -> Result<bool, MaterializeError> {
        if key.is_empty() || key.len() > MAX_ENTITY_LEN {
            return Err(MaterializeError::Row {
                line,
                problem: format!(
                    "the entity key `{}` must be 1 to {MAX_ENTITY_LEN} bytes",
                    self.view.spec.entity
                ),
            });
        }
        self.sampler.offer(key, &self.dtypes, values);
        self.batch.push((
            row_key(&self.view.name, self.view.version, key),
            encode(&self.dtypes, values),
        ));
        if self.batch.len() == BATCH_ROWS {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_ROWS));
            return Ok(self.tx.blocking_send(full).is_ok());
        }
        Ok(true)
    }

    pub(crate) fn finish(self) -> OfflineSample {
        if !self.batch.is_empty() {
            let _ = self.tx.blocking_send(self.batch);
        }
        self.sampler.finish()
    }
}

/// Reads the file on a blocking thread, sending batches of encoded rows; the file's SHA-256
/// and the sample when it was read to its end. Parquet (by its `PAR1` magic) or CSV.
fn read_batches(
    view: &FeatureViewRecord,
    path: &Path,
    tx: &mpsc::Sender<Vec<(String, Vec<u8>)>>,
) -> Result<(String, OfflineSample), MaterializeError> {
    let sink = Sink {
        view,
        dtypes: view.spec.features.iter().map(|f| f.dtype).collect(),
        batch: Vec::with_capacity(BATCH_ROWS),
        sampler: Sampler::default(),
        tx,
    };
    if crate::parquet::is_parquet(path) {
        // The reader seeks; the file is hashed in a pass of its own.
        let sample = crate::parquet::read(view, path, sink)?;
        let mut hashing = Hashing {
            inner: std::fs::File::open(path)
                .map_err(|e| MaterializeError::Read(format!("{}: {e}", path.display())))?,
            hasher: Sha256::new(),
        };
        std::io::copy(&mut hashing, &mut std::io::sink())
            .map_err(|e| MaterializeError::Read(e.to_string()))?;
        return Ok((hex::encode(hashing.hasher.finalize()), sample));
    }
    read_csv(view, path, sink)
}

/// Where the view's entity key and each of its features are among the file's column `names`.
pub(crate) fn view_columns<'a>(
    view: &FeatureViewRecord,
    names: impl Iterator<Item = &'a str>,
) -> Result<(usize, Vec<usize>), MaterializeError> {
    let names: Vec<&str> = names.collect();
    let column = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| MaterializeError::MissingColumn(name.to_string()))
    };
    let entity = column(&view.spec.entity)?;
    let columns = view
        .spec
        .features
        .iter()
        .map(|f| column(&f.name))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((entity, columns))
}

fn read_csv(
    view: &FeatureViewRecord,
    path: &Path,
    mut sink: Sink<'_>,
) -> Result<(String, OfflineSample), MaterializeError> {
    let file = std::fs::File::open(path)
        .map_err(|e| MaterializeError::Read(format!("{}: {e}", path.display())))?;
    let mut reader = csv::Reader::from_reader(Hashing {
        inner: std::io::BufReader::with_capacity(256 * 1024, file),
        hasher: Sha256::new(),
    });
    let header = reader
        .headers()
        .map_err(|e| MaterializeError::Read(e.to_string()))?
        .clone();
    let (entity, columns) = view_columns(view, header.iter().map(str::trim))?;
    let mut record = csv::StringRecord::new();
    let mut line = 1u64;
    let mut values = Vec::with_capacity(columns.len());
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(MaterializeError::Read(e.to_string())),
        }
        // The line the record starts on (a quoted field may span lines).
        line = record.position().map_or(line + 1, csv::Position::line);
        let key = record.get(entity).unwrap_or("").trim();
        values.clear();
        for (i, col) in columns.iter().enumerate() {
            let cell = record.get(*col).unwrap_or("");
            let value = parse_cell(sink.dtypes[i], cell).map_err(|e| MaterializeError::Row {
                line,
                problem: format!("column `{}`: {e}", view.spec.features[i].name),
            })?;
            values.push(value);
        }
        if !sink.push(line, key, &values)? {
            return Ok((String::new(), OfflineSample::default()));
        }
    }
    let sample = sink.finish();
    // The reader may have stopped short of trailing bytes the parser did not need.
    let mut hashing = reader.into_inner();
    std::io::copy(&mut hashing, &mut std::io::sink())
        .map_err(|e| MaterializeError::Read(e.to_string()))?;
    Ok((hex::encode(hashing.hasher.finalize()), sample))
}
