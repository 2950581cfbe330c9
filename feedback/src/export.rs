//! A training set from the logs: each prediction that received feedback, with its logged
//! inputs (serving's `--log-inputs`), its prediction and its label, one example per labelled row.
//!
//! The prediction log (`predictions/<endpoint>/<day>/*.jsonl`) and the feedback log
//! (`feedback/<endpoint>/<day>/*.jsonl`) are written by serving; [`Join`] holds the feedback (the
//! smaller side) by prediction id and takes prediction lines one at a time, so predictions of
//! any volume stream through.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Label;

/// A line of the feedback log.
#[derive(Debug, Clone, Deserialize)]
pub struct KeptFeedback {
    /// The prediction's id.
    pub id: String,
    /// The version that answered.
    pub version: i64,
    /// `stable` or `canary`.
    pub route: String,
    /// What it predicted, when its outputs read as classes.
    #[serde(default)]
    pub classes: Option<Vec<i64>>,
    /// When it was predicted (RFC 3339).
    pub predicted_at: String,
    /// When the feedback was accepted (RFC 3339).
    pub at: String,
    /// The business reward.
    #[serde(default)]
    pub reward: Option<f64>,
    /// The label.
    #[serde(default)]
    pub label: Option<Label>,
}

/// One example of the training set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// The prediction's id.
    pub id: String,
    /// The row of the request (0 for a one-row prediction).
    pub row: usize,
    /// The version that answered.
    pub version: i64,
    /// `stable` or `canary`.
    pub route: String,
    /// When it was predicted.
    pub predicted_at: String,
    /// When its feedback arrived.
    pub feedback_at: String,
    /// The business reward of the prediction.
    pub reward: Option<f64>,
    /// The true class of this row.
    pub label: Option<i64>,
    /// The class the version predicted for this row.
    pub predicted: Option<i64>,
    /// The row's inputs, one column per element: `NAME` for a single value per row, else
    /// `NAME_0`, `NAME_1`… (empty when inputs were not logged).
    pub features: BTreeMap<String, Value>,
}

/// Why a line could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A log line is not what serving writes.
    #[error("{0}")]
    BadLine(String),
}

/// The join of feedback (held) with prediction lines (streamed).
#[derive(Debug, Default)]
pub struct Join {
    feedback: HashMap<String, KeptFeedback>,
}

impl Join {
    /// Holds one feedback-log line. A prediction gets at most one feedback; should a log hold
    /// two (it cannot by construction), the first is kept.
    ///
    /// # Errors
    /// [`ExportError::BadLine`] when the line does not parse.
    pub fn add_feedback(&mut self, line: &str) -> Result<(), ExportError> {
        let kept: KeptFeedback = serde_json::from_str(line)
            .map_err(|e| ExportError::BadLine(format!("feedback log line: {e}")))?;
        self.feedback.entry(kept.id.clone()).or_insert(kept);
        Ok(())
    }

    /// Feedback held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.feedback.len()
    }

    /// Whether no feedback is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.feedback.is_empty()
    }

    /// The examples of one prediction-log line: none when it received no feedback, else one per
    /// labelled row (one for a reward alone or a single label).
    ///
    /// # Errors
    /// [`ExportError::BadLine`] when the line does not parse or its inputs are malformed.
    pub fn examples(&self, line: &str) -> Result<Vec<Example>, ExportError> {
        #[derive(Deserialize)]
        struct Logged {
            id: String,
            #[serde(default)]
            request: Option<Value>,
        }
        let logged: Logged = serde_json::from_str(line)
            .map_err(|e| ExportError::BadLine(format!("prediction log line: {e}")))?;
        let Some(kept) = self.feedback.get(&logged.id) else {
            return Ok(Vec::new());
        };
        let labels: Vec<Option<i64>> = match &kept.label {
            Some(Label::Rows(rows)) => rows.iter().copied().map(Some).collect(),
            Some(Label::One(one)) => vec![Some(*one)],
            None => vec![None],
        };
        let inputs = match &logged.request {
            Some(request) => tensors(request, &logged.id)?,
            None => Vec::new(),
        };
        Ok(labels
            .into_iter()
            .enumerate()
            .map(|(row, label)| Example {
                id: kept.id.clone(),
                row,
                version: kept.version,
                route: kept.route.clone(),
                predicted_at: kept.predicted_at.clone(),
                feedback_at: kept.at.clone(),
                reward: kept.reward,
                label,
                predicted: kept.classes.as_ref().and_then(|c| c.get(row).copied()),
                features: features(&inputs, row),
            })
            .collect())
    }
}

/// A logged input: its name, rows and flat data.
struct Input {
    name: String,
    rows: usize,
    data: Vec<Value>,
}

fn tensors(request: &Value, id: &str) -> Result<Vec<Input>, ExportError> {
    let bad = |what: &str| ExportError::BadLine(format!("prediction `{id}`: {what}"));
    let Some(inputs) = request.get("inputs").and_then(Value::as_array) else {
        return Err(bad("the logged request has no `inputs` array"));
    };
    inputs
        .iter()
        .map(|input| {
            let name = input
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("an input has no name"))?;
            let rows = input
                .get("shape")
                .and_then(Value::as_array)
                .and_then(|s| s.first())
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(1)
                .max(1);
            let mut data = Vec::new();
            flatten(input.get("data").unwrap_or(&Value::Null), &mut data);
            Ok(Input {
                name: name.to_string(),
                rows,
                data,
            })
        })
        .collect()
}

fn flatten(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        Value::Null => {}
        other => out.push(other.clone()),
    }
}

fn features(inputs: &[Input], row: usize) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for input in inputs {
        let per_row = input.data.len() / input.rows;
        let Some(values) = input.data.get(row * per_row..(row + 1) * per_row) else {
            continue;
        };
        if per_row == 1 {
            out.insert(input.name.clone(), values[0].clone());
        } else {
            for (i, v) in values.iter().enumerate() {
                out.insert(
                    format!("{}_{i:0width$}", input.name, width = digits(per_row)),
                    v.clone(),
                );
            }
        }
    }
    out
}

/// Digits of the largest column index, so that columns sort in their order.
fn digits(n: usize) -> usize {
    n.saturating_sub(1).max(1).ilog10() as usize + 1
}

/// Writes examples as CSV: the fixed columns, then the feature columns of the first example.
pub struct CsvExamples<W: std::io::Write> {
    writer: csv::Writer<W>,
    columns: Option<Vec<String>>,
}

impl<W: std::io::Write> CsvExamples<W> {
    /// A CSV writer on `out`.
    pub fn new(out: W) -> Self {
        CsvExamples {
            writer: csv::Writer::from_writer(out),
            columns: None,
        }
    }

    /// Writes one example (the header before the first).
    ///
    /// # Errors
    /// I/O errors, and an example whose feature columns differ from the first one's.
    pub fn write(&mut self, e: &Example) -> Result<(), csv::Error> {
        let features: Vec<String> = e.features.keys().cloned().collect();
        match &self.columns {
            None => {
                let mut header: Vec<String> = [
                    "id",
                    "row",
                    "version",
                    "route",
                    "predicted_at",
                    "feedback_at",
                    "reward",
                    "label",
                    "predicted",
                ]
                .iter()
                .map(ToString::to_string)
                .collect();
                header.extend(features.iter().cloned());
                self.writer.write_record(&header)?;
                self.columns = Some(features);
            }
            Some(columns) if *columns != features => {
                return Err(csv::Error::from(std::io::Error::other(format!(
                    "prediction `{}` has inputs {features:?}, the first one had {columns:?}: export it as jsonl",
                    e.id
                ))));
            }
            Some(_) => {}
        }
        let opt = |v: Option<String>| v.unwrap_or_default();
        let mut record = vec![
            e.id.clone(),
            e.row.to_string(),
            e.version.to_string(),
            e.route.clone(),
            e.predicted_at.clone(),
            e.feedback_at.clone(),
            opt(e.reward.map(|r| r.to_string())),
            opt(e.label.map(|l| l.to_string())),
            opt(e.predicted.map(|p| p.to_string())),
        ];
        record.extend(e.features.values().map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
        self.writer.write_record(&record)
    }

    /// What was written so far, and a writer that goes on with the same columns and no second
    /// header (for writing out a large export piece by piece).
    ///
    /// # Errors
    /// I/O errors.
    pub fn split(self) -> Result<(W, CsvExamples<W>), csv::Error>
    where
        W: Default,
    {
        let written = self
            .writer
            .into_inner()
            .map_err(|e| csv::Error::from(std::io::Error::other(e.to_string())))?;
        Ok((
            written,
            CsvExamples {
                writer: csv::Writer::from_writer(W::default()),
                columns: self.columns,
            },
        ))
    }

    /// Flushes what is buffered.
    ///
    /// # Errors
    /// I/O errors.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// Examples per Parquet row group.
const ROW_GROUP: usize = 65_536;

/// Writes examples as Parquet: the fixed columns (`id`, `row`, `version`, `route`,
/// `predicted_at`, `feedback_at` required; `reward`, `label`, `predicted` optional), then one
/// optional DOUBLE column per feature of the first example (numbers, and booleans as 0/1).
pub struct ParquetExamples<W: std::io::Write + Send> {
    out: Option<W>,
    writer: Option<parquet::file::writer::SerializedFileWriter<W>>,
    columns: Option<Vec<String>>,
    buffer: Vec<Example>,
}

/// Why examples could not be written as Parquet.
#[derive(Debug, thiserror::Error)]
pub enum ParquetExportError {
    /// The Parquet writer failed (I/O included).
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// An example does not fit the columns.
    #[error("{0}")]
    Shape(String),
}

impl<W: std::io::Write + Send> ParquetExamples<W> {
    /// A Parquet writer on `out` (the schema is set by the first example).
    pub fn new(out: W) -> Self {
        ParquetExamples {
            out: Some(out),
            writer: None,
            columns: None,
            buffer: Vec::new(),
        }
    }

    /// Adds one example (row groups of 65,536 are written as they fill).
    ///
    /// # Errors
    /// An example whose features differ from the first one's or are not numbers; write errors.
    pub fn write(&mut self, e: Example) -> Result<(), ParquetExportError> {
        let features: Vec<String> = e.features.keys().cloned().collect();
        match &self.columns {
            None => self.columns = Some(features),
            Some(columns) if *columns != features => {
                return Err(ParquetExportError::Shape(format!(
                    "prediction `{}` has inputs {features:?}, the first one had {columns:?}: export it as jsonl",
                    e.id
                )));
            }
            Some(_) => {}
        }
        if let Some((name, v)) = e.features.iter().find(|(_, v)| number(v).is_none()) {
            return Err(ParquetExportError::Shape(format!(
                "input `{name}` of prediction `{}` is {v}, not a number: export it as jsonl or csv",
                e.id
            )));
        }
        self.buffer.push(e);
        if self.buffer.len() >= ROW_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what is buffered and the footer.
    ///
    /// # Errors
    /// Write errors.
    pub fn finish(mut self) -> Result<(), ParquetExportError> {
        self.flush()?;
        if self.writer.is_none() {
            self.open()?;
        }
        if let Some(writer) = self.writer.take() {
            writer.close()?;
        }
        Ok(())
    }

    fn open(&mut self) -> Result<(), ParquetExportError> {
        use parquet::basic::{ConvertedType, Repetition, Type as Physical};
        use parquet::schema::types::Type;
        let column = |name: &str, physical, repetition, utf8: bool| {
            let mut builder =
                Type::primitive_type_builder(name, physical).with_repetition(repetition);
            if utf8 {
                builder = builder.with_converted_type(ConvertedType::UTF8);
            }
            builder.build().map(std::sync::Arc::new)
        };
        let mut fields = vec![
            column("id", Physical::BYTE_ARRAY, Repetition::REQUIRED, true)?,
            column("row", Physical::INT64, Repetition::REQUIRED, false)?,
            column("version", Physical::INT64, Repetition::REQUIRED, false)?,
            column("route", Physical::BYTE_ARRAY, Repetition::REQUIRED, true)?,
            column(
                "predicted_at",
                Physical::BYTE_ARRAY,
                Repetition::REQUIRED,
                true,
            )?,
            column(
                "feedback_at",
                Physical::BYTE_ARRAY,
                Repetition::REQUIRED,
                true,
            )?,
            column("reward", Physical::DOUBLE, Repetition::OPTIONAL, false)?,
            column("label", Physical::INT64, Repetition::OPTIONAL, false)?,
            column("predicted", Physical::INT64, Repetition::OPTIONAL, false)?,
        ];
        for name in self.columns.iter().flatten() {
            fields.push(column(name, Physical::DOUBLE, Repetition::OPTIONAL, false)?);
        }
        let schema = Type::group_type_builder("example")
            .with_fields(fields)
            .build()?;
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let out = self
            .out
            .take()
            .ok_or_else(|| ParquetExportError::Shape("the writer was already closed".into()))?;
        self.writer = Some(parquet::file::writer::SerializedFileWriter::new(
            out,
            std::sync::Arc::new(schema),
            std::sync::Arc::new(properties),
        )?);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ParquetExportError> {
        use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            self.open()?;
        }
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let rows = std::mem::take(&mut self.buffer);
        let text = |f: &dyn Fn(&Example) -> &str| -> Vec<ByteArray> {
            rows.iter().map(|e| ByteArray::from(f(e))).collect()
        };
        let int = |f: &dyn Fn(&Example) -> i64| -> Vec<i64> { rows.iter().map(f).collect() };
        let mut group = writer.next_row_group()?;
        let mut index = 0usize;
        while let Some(mut column) = group.next_column()? {
            match index {
                0 => {
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&text(&|e| &e.id), None, None)?;
                }
                1 => {
                    column
                        .typed::<Int64Type>()
                        .write_batch(&int(&|e| e.row as i64), None, None)?;
                }
                2 => {
                    column
                        .typed::<Int64Type>()
                        .write_batch(&int(&|e| e.version), None, None)?;
                }
                3 => {
                    column.typed::<ByteArrayType>().write_batch(
                        &text(&|e| &e.route),
                        None,
                        None,
                    )?;
                }
                4 => {
                    column.typed::<ByteArrayType>().write_batch(
                        &text(&|e| &e.predicted_at),
                        None,
                        None,
                    )?;
                }
                5 => {
                    column.typed::<ByteArrayType>().write_batch(
                        &text(&|e| &e.feedback_at),
                        None,
                        None,
                    )?;
                }
                6 => {
                    let (values, levels) = optional(rows.iter().map(|e| e.reward));
                    column
                        .typed::<DoubleType>()
                        .write_batch(&values, Some(&levels), None)?;
                }
                7 | 8 => {
                    let (values, levels) = optional(
                        rows.iter()
                            .map(|e| if index == 7 { e.label } else { e.predicted }),
                    );
                    column
                        .typed::<Int64Type>()
                        .write_batch(&values, Some(&levels), None)?;
                }
                n => {
                    let (values, levels) = optional(
                        rows.iter()
                            .map(|e| e.features.values().nth(n - 9).and_then(number)),
                    );
                    column
                        .typed::<DoubleType>()
                        .write_batch(&values, Some(&levels), None)?;
                }
            }
            column.close()?;
            index += 1;
        }
        group.close()?;
        Ok(())
    }
}

/// The present values and the definition levels (1 present, 0 null) of an optional column.
fn optional<T>(values: impl Iterator<Item = Option<T>>) -> (Vec<T>, Vec<i16>) {
    let mut present = Vec::new();
    let mut levels = Vec::new();
    for v in values {
        levels.push(i16::from(v.is_some()));
        present.extend(v);
    }
    (present, levels)
}

/// A feature as a Parquet DOUBLE: numbers, and booleans as 0/1.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(lines: &[&str]) -> Join {
        let mut join = Join::default();
        for l in lines {
            join.add_feedback(l).unwrap();
        }
        join
    }

    #[test]
    fn a_prediction_with_feedback_becomes_an_example_with_its_inputs_as_columns() {
        let j = join(&[
            r#"{"endpoint":"fraud","id":"p-1","version":2,"route":"canary","classes":[1],"predicted_at":"2026-12-04T10:00:00Z","at":"2026-12-04T10:05:00Z","reward":1.0,"label":0,"correct":false}"#,
        ]);
        let line = r#"{"id":"p-1","endpoint":"fraud","version":"2","route":"canary","at":"2026-12-04T10:00:00Z","latency_ms":1.0,"response":{"outputs":[]},"request":{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[[0.5,1.5,2.5]]},{"name":"age","datatype":"INT64","shape":[1,1],"data":[42]}]}}"#;
        let examples = j.examples(line).unwrap();
        assert_eq!(examples.len(), 1);
        let e = &examples[0];
        assert_eq!(
            (e.version, e.label, e.predicted, e.reward),
            (2, Some(0), Some(1), Some(1.0))
        );
        assert_eq!(e.features["x_0"], serde_json::json!(0.5));
        assert_eq!(e.features["x_2"], serde_json::json!(2.5));
        assert_eq!(e.features["age"], serde_json::json!(42));
        // A prediction without feedback gives nothing.
        assert!(j.examples(&line.replace("p-1", "p-2")).unwrap().is_empty());
    }

    #[test]
    fn a_label_per_row_makes_one_example_per_row_with_that_rows_inputs() {
        let j = join(&[
            r#"{"id":"b","version":1,"route":"stable","classes":[1,0],"predicted_at":"t0","at":"t1","label":[1,1]}"#,
        ]);
        let line =
            r#"{"id":"b","request":{"inputs":[{"name":"x","shape":[2,2],"data":[1,2,3,4]}]}}"#;
        let examples = j.examples(line).unwrap();
        assert_eq!(examples.len(), 2);
        assert_eq!(examples[1].row, 1);
        assert_eq!(examples[1].predicted, Some(0));
        assert_eq!(examples[1].label, Some(1));
        assert_eq!(examples[1].features["x_0"], serde_json::json!(3));
        let mut out = Vec::new();
        let mut csv = CsvExamples::new(&mut out);
        for e in &examples {
            csv.write(e).unwrap();
        }
        csv.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            "id,row,version,route,predicted_at,feedback_at,reward,label,predicted,x_0,x_1"
        );
        assert_eq!(text.lines().nth(2).unwrap(), "b,1,1,stable,t0,t1,,1,0,3,4");
    }

    #[test]
    fn without_logged_inputs_an_example_still_has_its_prediction_and_label() {
        let j = join(&[
            r#"{"id":"c","version":1,"route":"stable","predicted_at":"t0","at":"t1","reward":0.5}"#,
        ]);
        let examples = j.examples(r#"{"id":"c","response":{}}"#).unwrap();
        assert_eq!(examples.len(), 1);
        assert!(examples[0].features.is_empty());
        assert_eq!(examples[0].reward, Some(0.5));
        assert!(j.examples("not json").is_err());
    }

    #[test]
    fn examples_written_as_parquet_read_back_with_their_columns() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        use parquet::record::RowAccessor;
        let j = join(&[
            r#"{"id":"b","version":1,"route":"stable","classes":[1,0],"predicted_at":"t0","at":"t1","label":[1,1]}"#,
            r#"{"id":"c","version":2,"route":"canary","predicted_at":"t2","at":"t3","reward":0.5}"#,
        ]);
        let mut out = Vec::new();
        let mut parquet = ParquetExamples::new(&mut out);
        for line in [
            r#"{"id":"b","request":{"inputs":[{"name":"x","shape":[2,2],"data":[1,2,3,4]}]}}"#,
            r#"{"id":"c","request":{"inputs":[{"name":"x","shape":[1,2],"data":[5.5,true]}]}}"#,
        ] {
            for e in j.examples(line).unwrap() {
                parquet.write(e).unwrap();
            }
        }
        parquet.finish().unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(out)).unwrap();
        let names: Vec<String> = reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "id",
                "row",
                "version",
                "route",
                "predicted_at",
                "feedback_at",
                "reward",
                "label",
                "predicted",
                "x_0",
                "x_1"
            ]
        );
        let rows: Vec<_> = reader
            .get_row_iter(None)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].get_string(0).unwrap(), "b");
        assert_eq!(rows[1].get_long(1).unwrap(), 1);
        assert_eq!(rows[1].get_long(8).unwrap(), 0);
        assert_eq!(rows[1].get_double(9).unwrap(), 3.0);
        assert_eq!(rows[2].get_double(6).unwrap(), 0.5);
        assert!(rows[2].get_long(7).is_err(), "no label: null");
        assert_eq!(rows[2].get_double(10).unwrap(), 1.0);
    }
}
