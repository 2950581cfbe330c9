//! Why the protocol layer refused a request.

/// A request refused before it reached the model. Every variant is the caller's mistake and is
/// answered `400 {"error": message}`; the message names what was wrong (the input, the element,
/// the field) and what was expected instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OipError {
    /// The body is not JSON, or JSON not shaped like the document (wrong types, missing or
    /// repeated fields, trailing data). The text includes serde_json's line and column.
    #[error("{0}")]
    Malformed(String),
    /// One input is wrong: unknown, missing, repeated, or its datatype, shape or data disagree
    /// with the model's signature.
    #[error("input {input:?}: {reason}")]
    Input {
        /// The input's name as the request (or, when missing, the model) spells it.
        input: String,
        /// What is wrong, with the expected and the given value.
        reason: String,
    },
    /// A requested output the model lacks, or one requested twice.
    #[error("output {output:?}: {reason}")]
    Output {
        /// The output's name as the request spells it.
        output: String,
        /// What is wrong.
        reason: String,
    },
}

/// Names longer than this are cut in messages: they come from the caller, and an error should
/// not echo a megabyte back.
const NAME_IN_MESSAGE: usize = 100;

impl OipError {
    /// The text for the `{"error": …}` body.
    #[must_use]
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The input concerned, if the error is about one.
    #[must_use]
    pub fn input(&self) -> Option<&str> {
        match self {
            OipError::Input { input, .. } => Some(input),
            _ => None,
        }
    }

    /// The `{"error": message}` body the protocol prescribes for failures.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        super::encode_error(&self.message())
    }

    pub(crate) fn input_error(input: &str, reason: impl Into<String>) -> Self {
        OipError::Input {
            input: shorten(input),
            reason: reason.into(),
        }
    }

    pub(crate) fn output_error(output: &str, reason: impl Into<String>) -> Self {
        OipError::Output {
            output: shorten(output),
            reason: reason.into(),
        }
    }
}

/// `name`, cut to [`NAME_IN_MESSAGE`] characters.
pub(crate) fn shorten(name: &str) -> String {
    match name.char_indices().nth(NAME_IN_MESSAGE) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_in_messages() {
        let long = "n".repeat(5000);
        let err = OipError::input_error(&long, "unknown");
        let input = err.input().unwrap();
        assert_eq!(input.chars().count(), NAME_IN_MESSAGE + 1);
        assert!(input.ends_with('…'));
        assert_eq!(shorten("état"), "état");
    }

    #[test]
    fn the_json_body_carries_the_message() {
        let err = OipError::input_error("x", "expected datatype FP32, got INT64");
        let body: serde_json::Value = serde_json::from_slice(&err.to_json()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "input \"x\": expected datatype FP32, got INT64"})
        );
    }
}
