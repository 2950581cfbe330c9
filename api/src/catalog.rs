//! Where a serving process reads models, endpoints and the change log from: the [`Catalog`]
//! trait. Two implementations: the registry's HTTP client (`ferry serving --registry URL`,
//! [`crate::client::RegistryClient`]), and the registry in the same process (`ferry up`,
//! `ferry_registry::catalog::LocalCatalog`). Serving knows only the trait.

use std::fmt;
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;

use crate::names::VersionRef;
use crate::records::{EndpointRecord, EventPage, Page, VersionRecord};
use crate::traffic::Report;

/// Why the catalog could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The model, version, alias or endpoint does not exist (the registry said so).
    #[error("{0}")]
    NotFound(String),
    /// The registry could not be reached or failed: serve what is cached and retry later.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// The bytes or a stored document are not what the registry recorded.
    #[error("{0}")]
    Corrupt(String),
    /// Writing a local copy failed.
    #[error("{0}")]
    Io(String),
}

/// The bytes of an artifact as they arrive.
pub type ByteStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<bytes::Bytes, CatalogError>> + Send + 'static>>;

/// A source of model versions, their bytes, endpoints and the change log.
///
/// Methods return boxed futures so a catalog can be shared as `Arc<dyn Catalog>`.
pub trait Catalog: Send + Sync + fmt::Debug {
    /// The version `reference` names.
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        reference: &'a VersionRef,
    ) -> BoxFuture<'a, Result<VersionRecord, CatalogError>>;

    /// A page of model names, newest first, 500 at most.
    fn model_names_page<'a>(
        &'a self,
        page_token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page<String>, CatalogError>>;

    /// The endpoint named `name` ([`CatalogError::NotFound`] when there is none).
    fn endpoint<'a>(&'a self, name: &'a str)
    -> BoxFuture<'a, Result<EndpointRecord, CatalogError>>;

    /// A page of endpoint names.
    fn endpoint_names_page<'a>(
        &'a self,
        page_token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page<String>, CatalogError>>;

    /// The training profile stored with a version, as stored (validated by the caller).
    fn profile_json<'a>(
        &'a self,
        name: &'a str,
        version: i64,
    ) -> BoxFuture<'a, Result<serde_json::Value, CatalogError>>;

    /// Version `version` of feature view `name` (what a version trained with it is served
    /// with: its entity key and features, in order).
    fn feature_view<'a>(
        &'a self,
        name: &'a str,
        version: i64,
    ) -> BoxFuture<'a, Result<crate::features::FeatureViewRecord, CatalogError>>;

    /// Sends rows read online for entities in a view version's skew sample.
    fn served_features<'a>(
        &'a self,
        name: &'a str,
        version: i64,
        rows: crate::skew::ServedRows,
    ) -> BoxFuture<'a, Result<(), CatalogError>>;

    /// Records a replica's counters for an endpoint.
    fn report<'a>(
        &'a self,
        endpoint: &'a str,
        report: Report,
    ) -> BoxFuture<'a, Result<(), CatalogError>>;

    /// Events after `after`, waiting up to `wait` for the first.
    fn events(&self, after: i64, wait: Duration) -> BoxFuture<'_, Result<EventPage, CatalogError>>;

    /// The bytes of a version's artifact (not yet checked against its SHA-256).
    fn artifact<'a>(
        &'a self,
        record: &'a VersionRecord,
    ) -> BoxFuture<'a, Result<ByteStream, CatalogError>>;
}
