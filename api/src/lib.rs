//! Ferry's contract: what the registry, serving, the operator and the CLI agree on.
//!
//! Every service depends on this crate and none on another service's crate. It holds
//!
//! - the wire types of the public API ([`records`], [`webhooks`]), names ([`names`]) and lineage
//!   ([`lineage`]), and the events with their typed payloads ([`events`]);
//! - what is read from an ONNX graph ([`onnx`]: the signature, without loading weights);
//! - the pure logic two services must compute the same way: drift ([`drift`]: profiles, binning,
//!   PSI/KL/JS), the traffic counters serving replicas report and their summary per version
//!   ([`traffic`]), the validation of policies, reports and rollout steps;
//! - one grammar for durations and sizes ([`units`]);
//! - with feature `http`, the plumbing every server wraps its routes in ([`http`]); with feature
//!   `client`, the registry's HTTP client ([`client`]); with feature `storage`, object storage
//!   opened from a URL ([`storage`]).
//!
//! Nothing here does I/O but the client. Invalid input is a [`ValidationError`], which the
//! registry maps to a 400 or 422 in one place.

pub mod catalog;
pub mod drift;
pub mod error;
pub mod events;
pub mod features;
pub mod lifecycle;
pub mod lineage;
pub mod names;
pub mod onnx;
pub mod records;
pub mod rollout;
pub mod skew;
pub mod traffic;
pub mod units;
pub mod webhooks;

#[cfg(feature = "http")]
pub mod blocking;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "storage")]
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Result, ValidationError};

/// The header Ferry's own clients send on every request (value `ferry/VERSION`). A server
/// running without tokens accepts a write sent as a form only with it (see `http::open_mode`).
pub const CLIENT_HEADER: &str = "x-ferry-client";
