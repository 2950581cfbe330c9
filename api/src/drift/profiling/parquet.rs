//! Parquet training data for `ferry profile`: every column a numeric feature, nulls missing.
//!
//! Files are read row group by row group through the `parquet` crate's row API (no Arrow), so
//! memory stays at about one row group whatever the file's size, and the profile is built in the
//! same two passes as for CSV ([`super::profile_rows`]).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use ::parquet::basic::Type as PhysicalType;
use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::record::Field;

use super::{ProfileError, ProfileOptions, profile_rows};
use crate::drift::profile::InputProfile;

/// Whether `path` is a Parquet file: it starts with the `PAR1` magic.
pub fn is_parquet(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"PAR1")
}

/// Builds the profile of input `input` from the Parquet file at `path`.
///
/// # Errors
/// [`ProfileError::Invalid`] for a file that is not readable Parquet or has a column that is
/// not a number (strings, dates, nested groups…), naming the column; the profile's own errors
/// as [`profile_rows`].
pub fn profile_parquet_file(
    path: &Path,
    input: &str,
    options: &ProfileOptions,
) -> Result<InputProfile, ProfileError> {
    let names = numeric_columns(&open(path)?)?;
    let header = names.clone();
    profile_rows(
        || {
            let reader = open(path)?;
            let names = names.clone();
            let mut row_number: u64 = 0;
            Ok(reader.into_iter().map(move |row| {
                row_number += 1;
                let row = row.map_err(|e| {
                    ProfileError::Invalid(format!("row {row_number} cannot be read: {e}"))
                })?;
                row.get_column_iter()
                    .zip(&names)
                    .map(|((_, field), name)| number(field, name, row_number))
                    .collect()
            }))
        },
        Some(header),
        input,
        options,
    )
}

fn open(path: &Path) -> Result<SerializedFileReader<File>, ProfileError> {
    let file = File::open(path)?;
    SerializedFileReader::new(file).map_err(|e| {
        ProfileError::Invalid(format!("{} is not readable Parquet: {e}", path.display()))
    })
}

/// The names of the file's columns, all of which must be flat numbers or booleans.
fn numeric_columns(reader: &SerializedFileReader<File>) -> Result<Vec<String>, ProfileError> {
    let schema = reader.metadata().file_metadata().schema_descr();
    let root = schema.root_schema();
    let mut names = Vec::new();
    for (index, field) in root.get_fields().iter().enumerate() {
        let name = field.name();
        if field.is_group() {
            return Err(ProfileError::Invalid(format!(
                "column `{name}` ({index}) is nested; profile a file of numeric columns only"
            )));
        }
        match field.get_physical_type() {
            PhysicalType::BOOLEAN
            | PhysicalType::INT32
            | PhysicalType::INT64
            | PhysicalType::FLOAT
            | PhysicalType::DOUBLE => {}
            other => {
                return Err(ProfileError::Invalid(format!(
                    "column `{name}` ({index}) holds {other} values, not numbers; profile a file \
                     of feature columns only (drop ids, labels and text)"
                )));
            }
        }
        names.push(name.to_string());
    }
    if names.is_empty() {
        return Err(ProfileError::Invalid("the file has no columns".into()));
    }
    Ok(names)
}

/// A cell as a number: null is missing (NaN), booleans are 0 and 1.
fn number(field: &Field, column: &str, row: u64) -> Result<f64, ProfileError> {
    Ok(match field {
        Field::Null => f64::NAN,
        Field::Bool(b) => f64::from(u8::from(*b)),
        Field::Byte(x) => f64::from(*x),
        Field::Short(x) => f64::from(*x),
        Field::Int(x) => f64::from(*x),
        Field::Long(x) => *x as f64,
        Field::UByte(x) => f64::from(*x),
        Field::UShort(x) => f64::from(*x),
        Field::UInt(x) => f64::from(*x),
        Field::ULong(x) => *x as f64,
        Field::Float(x) => f64::from(*x),
        Field::Double(x) => *x,
        other => {
            return Err(ProfileError::Invalid(format!(
                "row {row}, column `{column}`: {other} is not a number"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Arc;

    use ::parquet::basic::Compression;
    use ::parquet::column::writer::ColumnWriter;
    use ::parquet::file::properties::WriterProperties;
    use ::parquet::file::writer::SerializedFileWriter;
    use ::parquet::schema::parser::parse_message_type;

    use super::super::profile_csv;

    use super::*;

    /// Columns `a` (DOUBLE), `b` (FLOAT, nullable) and `c` (INT64) with `rows` rows in row
    /// groups of 100; `b` is null where `nulls` says so.
    fn write(path: &Path, rows: usize, nulls: impl Fn(usize) -> bool, compression: Compression) {
        let schema = Arc::new(
            parse_message_type(
                "message m { REQUIRED DOUBLE a; OPTIONAL FLOAT b; REQUIRED INT64 c; }",
            )
            .unwrap(),
        );
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(compression)
                .build(),
        );
        let mut writer =
            SerializedFileWriter::new(File::create(path).unwrap(), schema, props).unwrap();
        for start in (0..rows).step_by(100) {
            let range = start..(start + 100).min(rows);
            let mut group = writer.next_row_group().unwrap();
            while let Some(mut column) = group.next_column().unwrap() {
                match column.untyped() {
                    ColumnWriter::DoubleColumnWriter(w) => {
                        let values: Vec<f64> = range.clone().map(|i| i as f64 * 0.5).collect();
                        w.write_batch(&values, None, None).unwrap();
                    }
                    ColumnWriter::FloatColumnWriter(w) => {
                        let levels: Vec<i16> =
                            range.clone().map(|i| i16::from(!nulls(i))).collect();
                        let values: Vec<f32> = range
                            .clone()
                            .filter(|i| !nulls(*i))
                            .map(|i| (i % 7) as f32)
                            .collect();
                        w.write_batch(&values, Some(&levels), None).unwrap();
                    }
                    ColumnWriter::Int64ColumnWriter(w) => {
                        let values: Vec<i64> = range.clone().map(|i| (i * i % 13) as i64).collect();
                        w.write_batch(&values, None, None).unwrap();
                    }
                    _ => unreachable!(),
                }
                column.close().unwrap();
            }
            group.close().unwrap();
        }
        writer.close().unwrap();
    }

    fn csv_of(rows: usize, nulls: impl Fn(usize) -> bool) -> String {
        let mut csv = String::from("a,b,c\n");
        for i in 0..rows {
            let b = if nulls(i) {
                "NaN".to_string()
            } else {
                ((i % 7) as f32).to_string()
            };
            csv.push_str(&format!("{},{b},{}\n", i as f64 * 0.5, i * i % 13));
        }
        csv
    }

    #[test]
    fn a_parquet_file_profiles_exactly_like_the_same_data_as_csv() {
        let dir = tempfile::tempdir().unwrap();
        let nulls = |i: usize| i % 10 == 3;
        for compression in [
            Compression::UNCOMPRESSED,
            Compression::SNAPPY,
            Compression::ZSTD(Default::default()),
            Compression::GZIP(Default::default()),
        ] {
            let path = dir.path().join("train.parquet");
            write(&path, 1050, nulls, compression);
            assert!(is_parquet(&path));
            let from_parquet =
                profile_parquet_file(&path, "input", &ProfileOptions::default()).unwrap();
            let csv = csv_of(1050, nulls);
            let from_csv =
                profile_csv(|| Ok(csv.as_bytes()), "input", &ProfileOptions::default()).unwrap();
            assert_eq!(from_parquet, from_csv, "{compression:?}");
            let names: Vec<&str> = from_parquet
                .features
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            assert_eq!(names, ["a", "b", "c"]);
            // Nulls are missing values: counted, but in no bin of the training range.
            assert_eq!(from_parquet.features[1].counts.iter().sum::<u64>(), 1050);
        }
        assert!(!is_parquet(&dir.path().join("missing.parquet")));
        std::fs::write(dir.path().join("x.csv"), "a\n1\n").unwrap();
        assert!(!is_parquet(&dir.path().join("x.csv")));
    }

    #[test]
    fn text_columns_and_broken_files_are_refused_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.parquet");
        let schema = Arc::new(
            parse_message_type(
                "message m { REQUIRED DOUBLE a; REQUIRED BYTE_ARRAY label (UTF8); }",
            )
            .unwrap(),
        );
        let mut writer =
            SerializedFileWriter::new(File::create(&path).unwrap(), schema, Default::default())
                .unwrap();
        let mut group = writer.next_row_group().unwrap();
        while let Some(mut column) = group.next_column().unwrap() {
            match column.untyped() {
                ColumnWriter::DoubleColumnWriter(w) => {
                    w.write_batch(&[1.0], None, None).unwrap();
                }
                ColumnWriter::ByteArrayColumnWriter(w) => {
                    w.write_batch(&["fraud".into()], None, None).unwrap();
                }
                _ => unreachable!(),
            }
            column.close().unwrap();
        }
        group.close().unwrap();
        writer.close().unwrap();
        let err = profile_parquet_file(&path, "input", &ProfileOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`label` (1)") && err.contains("BYTE_ARRAY"),
            "{err}"
        );

        let truncated = dir.path().join("truncated.parquet");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = profile_parquet_file(&truncated, "input", &ProfileOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not readable Parquet"), "{err}");
    }
}
