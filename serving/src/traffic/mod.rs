//! The traffic layer's pure, in-memory building blocks: which version answers a request, how a
//! shadow's answer compares, which prediction a feedback is about, and what was counted.
//!
//! How a request flows through them (the HTTP handlers in [`crate::api`] are the thin shell):
//!
//! 1. [`split`]: the endpoint's sticky key (or the request id) hashes to a stable bucket in
//!    `[0, 1)`; below the canary weight the canary answers, else the stable version
//!    ([`route`], [`Route`]). The same hash, in another domain, decides whether each shadow
//!    gets a copy ([`sampled`]).
//! 2. [`compare`](mod@compare): when a shadow has answered, its outputs are compared with the primary's
//!    ([`compare()`](compare::compare)) and the [`Comparison`] lands in the shadow version's
//!    [`ShadowCounters`](ferry_api::traffic::ShadowCounters): agreement rate and
//!    difference distribution.
//! 3. Feedback: each primary prediction is remembered under its request id, with its predicted
//!    classes ([`predicted_classes`]), in the prediction index of the `ferry-feedback` crate
//!    (in memory, or shared by every replica in Redis); feedback takes it back exactly once
//!    and becomes reward and accuracy of the version that answered.
//! 4. [`stats`]: every request, comparison and feedback is counted per version
//!    ([`EndpointStats`]); a sliding window answers `/stats?window=`, and the counts since the
//!    last report go to the registry, which sums replicas into the analysis rollouts are judged
//!    on.
//!
//! Nothing here does I/O or reads the clock: callers pass `now`, which keeps every piece
//! testable without sleeping.

pub mod compare;
pub mod split;
pub mod stats;

pub use compare::{Comparison, compare, predicted_classes};
pub use split::{Route, bucket, route, route_policy, sampled};
pub use stats::{EndpointStats, IntervalCounters};
