//! Logging setup: `tracing` to stderr, JSON lines for machines or text for a terminal.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::Writer;

use crate::cli::LogFormat;

/// Servers log at info by default; client commands only warn, so their output stays clean.
/// `FERRY_LOG` (or `RUST_LOG`) overrides the filter.
pub fn init(format: LogFormat, server: bool) {
    // lapin logs a broker's refusal (a queue that does not exist) as an error of its own; a
    // client command reports it once, itself.
    let default = if server { "info" } else { "warn,lapin=off" };
    let filter = std::env::var("FERRY_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .map(EnvFilter::new)
        .unwrap_or_else(|_| EnvFilter::new(default));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .fmt_fields(SpanJson)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// A span's fields as one JSON object, for the JSON log lines that carry the current span.
///
/// The fmt layer formats a span's fields when the span opens, whether or not anything is logged
/// inside it, and every HTTP request opens one (method, path, request id). tracing-subscriber's
/// `JsonFields` builds a map of `serde_json::Value`s, one `String` per field, and serializes it:
/// ~8 allocations per request. This writes the object in one pass into a reused per-thread
/// buffer and copies it out once.
pub struct SpanJson;

thread_local! {
    static BUFFER: RefCell<String> = RefCell::new(String::with_capacity(256));
}

impl<'w> FormatFields<'w> for SpanJson {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        BUFFER.with(|buffer| {
            let Ok(mut out) = buffer.try_borrow_mut() else {
                // Re-entered (a field's `Debug` logging while formatting): unbuffered.
                let mut out = String::new();
                write_object(&mut out, "", fields);
                return writer.write_str(&out);
            };
            out.clear();
            write_object(&mut out, "", fields);
            let result = writer.write_str(&out);
            if out.capacity() > 4096 {
                // One huge span should not keep its buffer forever.
                *out = String::with_capacity(256);
            }
            result
        })
    }

    /// Fields recorded after the span opened (`Span::record`) join the same object.
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        match current.fields.strip_suffix('}') {
            Some(open) if open.len() > 1 => {
                write_object(&mut added, open, fields);
            }
            _ => write_object(&mut added, "", fields),
        }
        current.fields = added;
        Ok(())
    }
}

/// `{"a":1,…}` into `out`: `prefix` (an object without its closing brace) extended, or a new
/// object when `prefix` is empty.
fn write_object<R: RecordFields>(out: &mut String, prefix: &str, fields: R) {
    if prefix.is_empty() {
        out.push('{');
    } else {
        out.push_str(prefix);
    }
    let mut visitor = ObjectVisitor {
        out,
        first: prefix.is_empty(),
    };
    fields.record(&mut visitor);
    visitor.out.push('}');
}

struct ObjectVisitor<'a> {
    out: &'a mut String,
    first: bool,
}

impl ObjectVisitor<'_> {
    fn key(&mut self, field: &Field) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        let name = field.name();
        push_json_string(self.out, name.strip_prefix("r#").unwrap_or(name));
        self.out.push(':');
    }
}

impl Visit for ObjectVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.out.push('"');
        // Writing to a String cannot fail.
        let _ = write!(Escaped(self.out), "{value:?}");
        self.out.push('"');
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_string(self.out, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            // JSON has no NaN or infinity; as serde_json does.
            self.out.push_str("null");
        }
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.key(field);
        self.out.push('[');
        for (i, byte) in value.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{byte}");
        }
        self.out.push(']');
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }
}

fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let _ = Escaped(out).write_str(text);
    out.push('"');
}

/// Writes into a JSON string's inside, escaping as it goes.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
            self.0.push_str(&rest[..at]);
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push_str("\\t"),
                c => write!(self.0, "\\u{:04x}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.push_str(rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    /// The JSON log line an event inside a span gives, with span fields from `fields`.
    fn log_line<N>(fields: N) -> Value
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .fmt_fields(fields)
            .with_writer(lines.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                method = %"POST",
                path = %"/v2/models/\"quoted\"\\back\nslash\u{1}é",
                request_id = %"0190-abc",
                count = 3_u64,
                delta = -2_i64,
                ratio = 0.5_f64,
                nan = f64::NAN,
                flag = true,
                r#type = "raw",
                bytes = &b"\x01\xff"[..],
                principal = tracing::field::Empty,
            );
            let _entered = span.enter();
            span.record("principal", "ci \"bot\"");
            tracing::info!(status = 200, "answered");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let mut line: Value = serde_json::from_str(text.trim()).unwrap();
        line.as_object_mut().unwrap().remove("timestamp");
        line
    }

    #[test]
    fn span_fields_log_the_same_json_as_tracing_subscribers_formatter() {
        let ours = log_line(SpanJson);
        assert_eq!(
            ours,
            log_line(tracing_subscriber::fmt::format::JsonFields::new())
        );
        assert_eq!(
            ours["span"],
            json!({
                "name": "request",
                "method": "POST",
                "path": "/v2/models/\"quoted\"\\back\nslash\u{1}é",
                "request_id": "0190-abc",
                "count": 3,
                "delta": -2,
                "ratio": 0.5,
                "nan": null,
                "flag": true,
                "type": "raw",
                "bytes": [1, 255],
                "principal": "ci \"bot\"",
            })
        );
    }
}
