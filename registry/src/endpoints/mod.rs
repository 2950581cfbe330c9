//! Endpoints' HTTP preconditions: evaluating `If-Match` / `If-None-Match` against a revision,
//! and the `ETag` of a revision. Validating policies and reports and summing reports are the
//! contract's ([`ferry_api::traffic`]); the store runs them inside its transactions.
//! [`feedback`]: business feedback posted to the registry, joined and stored as a report.

pub mod feedback;
mod preconditions;

pub use preconditions::{Preconditions, Tags, etag};
