//! Ferry's Kubernetes operator: the `ModelDeployment` resource and its progressive rollouts.
//!
//! - [`crd`]: the resource's types (spec, status), validation into a [`rollout::RolloutConfig`],
//!   and the status conditions;
//! - [`crdgen`]: the CRD YAML generated from those types;
//! - [`rollout`] and [`analysis`]: the rollout engine and the verdict on each analysis, pure
//!   functions over plain data (no kube types, no I/O), tested exhaustively;
//! - [`duration`]: `30s`/`1m`/`1h30m` durations as written in the spec.
//!
//! The reconcile loop (Deployment, Service, registry endpoint, status by server-side apply)
//! wraps these.

pub mod analysis;
pub mod crd;
pub mod crdgen;
pub mod duration;
pub mod rollout;

pub use crd::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
