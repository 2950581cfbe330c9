//! Ferry's Kubernetes operator: the `ModelDeployment` resource and its progressive rollouts.
//!
//! - [`crd`]: the resource's types (spec, status), validation into a [`rollout::RolloutConfig`],
//!   and the status conditions;
//! - [`crdgen`]: the CRD YAML generated from those types;
//! - [`rollout`] and [`verdict`]: the rollout engine and the verdict on each of the registry's
//!   analyses of a step, pure functions over plain data (no kube types, no I/O), tested
//!   exhaustively (durations in the spec are the contract's, [`ferry_api::units`]);
//! - [`reconcile`]: the controller's reconcile loop around the engine (serving Deployment and
//!   Service, registry endpoint, status by server-side apply, finalizer, events);
//! - [`registry`]: the registry calls the reconciler makes; [`follow`]: reconciling promptly
//!   on registry events (a tracked alias moved, the stable version was judged stale, degraded
//!   or drifted);
//! - [`trust`]: what a ModelDeployment's author may make the operator do (labelled token
//!   Secrets, registry and image allow-lists);
//! - [`run`](run()): `ferry operator`, with [`probes`] and [`metrics`].

pub mod crd;
pub mod crdgen;
pub mod follow;
pub mod metrics;
pub mod probes;
pub mod reconcile;
pub mod registry;
pub mod rollout;
mod run;
pub mod trust;
pub mod verdict;

pub use crd::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
pub use run::{OperatorConfig, run};
