//! Ferry's Kubernetes operator: the `ModelDeployment` resource and its progressive rollouts.
//!
//! - [`crd`]: the resource's types (spec, status), validation into a [`rollout::RolloutConfig`],
//!   and the status conditions;
//! - [`crdgen`]: the CRD YAML generated from those types;
//! - [`rollout`] and [`analysis`]: the rollout engine and the verdict on each analysis, pure
//!   functions over plain data (no kube types, no I/O), tested exhaustively;
//! - [`duration`]: `30s`/`1m`/`1h30m` durations as written in the spec;
//! - [`reconcile`]: the controller's reconcile loop around the engine (serving Deployment and
//!   Service, registry endpoint, status by server-side apply, finalizer, events);
//! - [`registry`]: the registry calls the reconciler makes; [`aliases`]: following tracked
//!   aliases through registry events;
//! - [`run`](run()): `ferry operator`, with [`probes`] and [`metrics`].

pub mod aliases;
pub mod analysis;
pub mod crd;
pub mod crdgen;
pub mod duration;
pub mod metrics;
pub mod probes;
pub mod reconcile;
pub mod registry;
pub mod rollout;
mod run;

pub use crd::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
pub use run::{OperatorConfig, run};
