//! The contract's one error: input that breaks it, with a message meant for the user.
//!
//! Everything here validates without I/O (names, lineage, policies, reports, profiles), so the
//! only failure is bad input. The registry maps it into its HTTP error in one place
//! (`ferry_registry::Error: From<ValidationError>`): 400 or 422, the message kept.

/// Input that breaks the contract; the message says exactly what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Malformed input: a bad name, field, number or combination (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed input a rule refuses, e.g. lineage required and missing (HTTP 422).
    #[error("{0}")]
    Unprocessable(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = ValidationError> = std::result::Result<T, E>;
