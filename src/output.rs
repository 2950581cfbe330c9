//! Printing results: aligned tables for people, JSON for scripts.
//!
//! Everything goes through [`write_out`]: when the reader of standard output has gone (`ferry …
//! | head`), the command ends quietly instead of panicking on a broken pipe.

/// Prints a line on standard output through [`write_out`].
#[macro_export]
macro_rules! say {
    () => {
        $crate::output::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

use std::fmt::Write as _;
use std::io::Write as _;

use chrono::{DateTime, Utc};
use ferry_api::onnx::{Dim, TensorSpec};
use serde::Serialize;

/// Writes to standard output; exits with success when the reader has gone away (the command's
/// output is no longer wanted, which is not an error of the command).
pub fn write_out(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Prints `value` as pretty JSON on standard output.
///
/// # Errors
/// When the value cannot be serialized (never for the API's records).
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    crate::say!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A table with a header row, printed with columns padded to their widest cell.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders the table; the last column is not padded.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}   ", width = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on standard output.
    pub fn print(&self) {
        write_out(format_args!("{}", self.render()));
    }
}

/// `2026-11-29 18:57:02 UTC`.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `12.4 MiB`.
pub fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `input FP32[batch,32]`.
pub fn tensor(spec: &TensorSpec) -> String {
    let shape = match &spec.shape {
        None => "[?]".to_string(),
        Some(dims) => format!(
            "[{}]",
            dims.iter()
                .map(|d| match d {
                    Dim::Fixed(n) => n.to_string(),
                    Dim::Symbolic(s) => s.clone(),
                    Dim::Unknown => "?".to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    format!("{} {}{shape}", spec.name, spec.datatype)
}

/// The first 12 hex digits of a hash, as shown in tables.
pub fn short_hash(sha256: &str) -> String {
    sha256.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["NAME", "V"]);
        t.row(vec!["fraud-detector".into(), "3".into()]);
        t.row(vec!["x".into(), "12".into()]);
        assert_eq!(
            t.render(),
            "NAME             V\nfraud-detector   3\nx                12\n"
        );
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(13_002_342), "12.4 MiB");
    }
}
