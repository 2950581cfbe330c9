//! CSV training data: one column per feature, a header row or not, every cell a number (an
//! empty cell is missing).

use std::io::Read;
use std::path::Path;

use super::{
    FirstPass, Header, ProfileError, ProfileOptions, check_options, count_row, feature_names,
    finish,
};
use crate::drift::profile::InputProfile;

/// Builds the profile of input `input` from the CSV file at `path`, read twice (see
/// [`profile_csv`]).
///
/// # Errors
/// As [`profile_csv`].
pub fn profile_csv_file(
    path: &Path,
    input: &str,
    options: &ProfileOptions,
) -> std::result::Result<InputProfile, ProfileError> {
    profile_csv(|| std::fs::File::open(path), input, options)
}

/// Builds the profile of tabular input `input` from CSV data (one column per feature) in two
/// streaming passes, calling `open` once per pass: the first keeps a bounded reservoir sample
/// of each column (for the quantile edges) and its exact summary, the second counts every row
/// into the bins. Memory is `columns × reservoir_size × 8` bytes, whatever the file's size.
///
/// # Errors
/// [`ProfileError::Cell`] naming the line and column of a cell that is empty or not a number,
/// [`ProfileError::Invalid`] for bad options, no data rows, rows of different widths, a column
/// without a finite value, or data that changed between the passes; I/O and CSV errors as such.
pub fn profile_csv<R: Read>(
    mut open: impl FnMut() -> std::io::Result<R>,
    input: &str,
    options: &ProfileOptions,
) -> std::result::Result<InputProfile, ProfileError> {
    check_options(input, options)?;

    // Pass 1: the header, the width, per column a summary and a sample.
    let mut reader = csv_reader(open()?, options.delimiter);
    let mut record = csv::StringRecord::new();
    let mut names: Option<Vec<String>> = None;
    let mut width = 0;
    let mut pass: Option<FirstPass> = None;
    let mut values: Vec<f64> = Vec::new();
    let mut first = true;
    while reader
        .read_record(&mut record)
        .map_err(|e| ProfileError::Csv(e.to_string()))?
    {
        if first {
            first = false;
            width = record.len();
            let is_header = match options.header {
                Header::Present => true,
                Header::Absent => false,
                Header::Auto => record.iter().any(|cell| cell.parse::<f64>().is_err()),
            };
            if is_header {
                names = Some(record.iter().map(str::to_string).collect());
                continue;
            }
        }
        parse_row(
            &record,
            width,
            names.as_deref(),
            options.round_to_f32,
            &mut values,
        )?;
        pass.get_or_insert_with(|| FirstPass::new(width, options))
            .push(&values);
    }
    let Some(pass) = pass else {
        return Err(ProfileError::Invalid(
            "the data has no rows to profile".into(),
        ));
    };
    let rows = pass.rows;
    let names = feature_names(options, names, width)?;
    let mut features = pass.features(names, options.bins)?;

    // Pass 2: every row into the bins, by the same rule serving uses.
    let mut reader = csv_reader(open()?, options.delimiter);
    let mut seen: u64 = 0;
    let mut first = true;
    let header_names: Vec<String> = features.iter().map(|f| f.name.clone()).collect();
    while reader
        .read_record(&mut record)
        .map_err(|e| ProfileError::Csv(e.to_string()))?
    {
        if first {
            first = false;
            let is_header = match options.header {
                Header::Present => true,
                Header::Absent => false,
                Header::Auto => record.iter().any(|cell| cell.parse::<f64>().is_err()),
            };
            if is_header {
                continue;
            }
        }
        parse_row(
            &record,
            width,
            Some(&header_names),
            options.round_to_f32,
            &mut values,
        )?;
        count_row(&mut features, &values);
        seen += 1;
    }
    finish(input, features, rows, seen)
}

fn csv_reader<R: Read>(source: R, delimiter: u8) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .trim(csv::Trim::All)
        // Width is checked here, to name the line and both widths.
        .flexible(true)
        .from_reader(source)
}

/// Parses a data row into `out`, naming the line and column of the first bad cell.
fn parse_row(
    record: &csv::StringRecord,
    width: usize,
    names: Option<&[String]>,
    round_to_f32: bool,
    out: &mut Vec<f64>,
) -> std::result::Result<(), ProfileError> {
    let line = record.position().map_or(0, csv::Position::line);
    if record.len() != width {
        return Err(ProfileError::Invalid(format!(
            "line {line} has {} columns; the first row has {width}",
            record.len()
        )));
    }
    out.clear();
    for (column, cell) in record.iter().enumerate() {
        let describe = || match names.and_then(|n| n.get(column)) {
            Some(name) => format!("`{name}` ({column})"),
            None => format!("{column}"),
        };
        if cell.is_empty() {
            return Err(ProfileError::Cell {
                line,
                column: describe(),
                message: "the cell is empty; missing values are not supported (write NaN to count them as missing)".into(),
            });
        }
        match cell.parse::<f64>() {
            // Out-of-range values become ±∞ as f32, as they would in the tensor.
            Ok(x) if round_to_f32 => out.push(f64::from(x as f32)),
            Ok(x) => out.push(x),
            Err(_) => {
                return Err(ProfileError::Cell {
                    line,
                    column: describe(),
                    message: format!("{} is not a number", crate::names::printable(cell)),
                });
            }
        }
    }
    Ok(())
}
