//! The HTTP plumbing every Ferry server shares (feature `http`): bearer tokens and roles
//! ([`auth`]), request ids ([`request_id`]), the layers each process wraps its routes in once
//! ([`layers`]), request metrics with the `/metrics` exposition ([`metrics`]), and what a server
//! without tokens refuses so that web pages cannot drive it ([`open_mode`]).

pub mod auth;
pub mod layers;
pub mod metrics;
pub mod open_mode;
pub mod request_id;

pub use auth::{Principal, Role, Tokens};
pub use layers::{REQUEST_ID, common};
pub use metrics::{HttpMetrics, expose};
