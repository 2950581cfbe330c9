//! The registry in the same process as a [`Catalog`]: what `ferry up`'s serving reads from,
//! straight from the stores, without HTTP.

use std::time::Duration;

use ferry_api::catalog::{ByteStream, Catalog, CatalogError};
use ferry_api::names::VersionRef;
use ferry_api::records::{EndpointRecord, EventPage, Page, VersionRecord};
use ferry_api::traffic::Report;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use crate::blob_store::BlobStore;
use crate::error::Error;
use crate::store::MetadataStore;

/// Names read per page.
const PAGE: u32 = 500;

/// The registry's stores, read directly.
#[derive(Clone, Debug)]
pub struct LocalCatalog {
    /// Its metadata.
    pub store: MetadataStore,
    /// Its blobs.
    pub blobs: BlobStore,
}

fn catalog_error(e: Error) -> CatalogError {
    match e {
        Error::NotFound(m) => CatalogError::NotFound(m),
        other => CatalogError::Unavailable(other.to_string()),
    }
}

fn names<T>(page: Page<T>, name: impl Fn(T) -> String) -> Page<String> {
    Page {
        items: page.items.into_iter().map(name).collect(),
        next_page_token: page.next_page_token,
    }
}

impl Catalog for LocalCatalog {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        reference: &'a VersionRef,
    ) -> BoxFuture<'a, Result<VersionRecord, CatalogError>> {
        async move {
            self.store
                .get_version(name, reference)
                .await
                .map_err(catalog_error)
        }
        .boxed()
    }

    fn model_names_page<'a>(
        &'a self,
        page_token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page<String>, CatalogError>> {
        async move {
            let page = self
                .store
                .list_models(PAGE, page_token)
                .await
                .map_err(catalog_error)?;
            Ok(names(page, |m| m.name))
        }
        .boxed()
    }

    fn endpoint<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<EndpointRecord, CatalogError>> {
        async move { self.store.get_endpoint(name).await.map_err(catalog_error) }.boxed()
    }

    fn endpoint_names_page<'a>(
        &'a self,
        page_token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page<String>, CatalogError>> {
        async move {
            let page = self
                .store
                .list_endpoints(PAGE, page_token)
                .await
                .map_err(catalog_error)?;
            Ok(names(page, |e| e.name))
        }
        .boxed()
    }

    fn profile_json<'a>(
        &'a self,
        name: &'a str,
        version: i64,
    ) -> BoxFuture<'a, Result<serde_json::Value, CatalogError>> {
        async move {
            self.store
                .get_profile(name, &VersionRef::Number(version))
                .await
                .map_err(catalog_error)
        }
        .boxed()
    }

    fn feature_view<'a>(
        &'a self,
        name: &'a str,
        version: i64,
    ) -> BoxFuture<'a, Result<ferry_api::features::FeatureViewRecord, CatalogError>> {
        async move {
            self.store
                .get_feature_view(name, Some(version))
                .await
                .map_err(catalog_error)
        }
        .boxed()
    }

    fn served_features<'a>(
        &'a self,
        name: &'a str,
        version: i64,
        rows: ferry_api::skew::ServedRows,
    ) -> BoxFuture<'a, Result<(), CatalogError>> {
        async move {
            self.store
                .record_served_features(name, version, rows)
                .await
                .map(|_| ())
                .map_err(catalog_error)
        }
        .boxed()
    }

    fn report<'a>(
        &'a self,
        endpoint: &'a str,
        report: Report,
    ) -> BoxFuture<'a, Result<(), CatalogError>> {
        async move {
            self.store
                .record_report(endpoint, report)
                .await
                .map(|_| ())
                .map_err(catalog_error)
        }
        .boxed()
    }

    fn events(&self, after: i64, wait: Duration) -> BoxFuture<'_, Result<EventPage, CatalogError>> {
        async move {
            self.store
                .wait_for_events(after, PAGE, wait)
                .await
                .map_err(|e| CatalogError::Unavailable(e.to_string()))
        }
        .boxed()
    }

    fn artifact<'a>(
        &'a self,
        record: &'a VersionRecord,
    ) -> BoxFuture<'a, Result<ByteStream, CatalogError>> {
        async move {
            let read = self
                .blobs
                .read(&record.sha256, None)
                .await
                .map_err(|e| CatalogError::Unavailable(e.to_string()))?;
            let stream: ByteStream = read
                .stream
                .map(|r| r.map_err(|e| CatalogError::Unavailable(e.to_string())))
                .boxed();
            Ok(stream)
        }
        .boxed()
    }
}
