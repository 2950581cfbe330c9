//! The registry's HTTP client as a [`Catalog`]: what `ferry serving --registry URL` reads from.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use super::{ClientError, RegistryClient};
use crate::catalog::{ByteStream, Catalog, CatalogError};
use crate::names::VersionRef;
use crate::records::{EndpointRecord, EventPage, Page, VersionRecord};
use crate::traffic::Report;

/// Names asked for per page.
const PAGE: u32 = 500;

impl From<ClientError> for CatalogError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api {
                status: 404,
                detail,
            } => CatalogError::NotFound(detail),
            other => CatalogError::Unavailable(other.to_string()),
        }
    }
}

fn names<T>(page: Page<T>, name: impl Fn(T) -> String) -> Page<String> {
    Page {
        items: page.items.into_iter().map(name).collect(),
        next_page_token: page.next_page_token,
    }
}

impl Catalog for RegistryClient {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        reference: &'a VersionRef,
    ) -> BoxFuture<'a, Result<VersionRecord, CatalogError>> {
        async move { Ok(self.get_version(name, reference).await?) }.boxed()
    }

    fn model_names_page<'a>(
        &'a self,
        page_token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page<String>, CatalogError>> {
        async move { Ok(names(self.list_models(PAGE, page_token).await?, |m| m.name)) }.boxed()
    }

    fn endpoint<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<EndpointRecord, CatalogError>> {
        async move { Ok(self.get_endpoint(name).await?) }.boxed()
    }

    fn endpoint_names_page<'a>(
        &'a self,
        page_token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page<String>, CatalogError>> {
        async move {
            Ok(names(self.list_endpoints(PAGE, page_token).await?, |e| {
                e.name
            }))
        }
        .boxed()
    }

    fn profile_json<'a>(
        &'a self,
        name: &'a str,
        version: i64,
    ) -> BoxFuture<'a, Result<serde_json::Value, CatalogError>> {
        async move {
            let v = version.to_string();
            let url = self.url(&["api", "v1", "models", name, "versions", &v, "profile"]);
            Ok(self
                .send_json::<serde_json::Value>(self.request(reqwest::Method::GET, url))
                .await?)
        }
        .boxed()
    }

    fn feature_view<'a>(
        &'a self,
        name: &'a str,
        version: i64,
    ) -> BoxFuture<'a, Result<crate::features::FeatureViewRecord, CatalogError>> {
        async move { Ok(self.get_feature_view(name, Some(version)).await?) }.boxed()
    }

    fn served_features<'a>(
        &'a self,
        name: &'a str,
        version: i64,
        rows: crate::skew::ServedRows,
    ) -> BoxFuture<'a, Result<(), CatalogError>> {
        async move { Ok(self.post_served_features(name, version, &rows).await?) }.boxed()
    }

    fn report<'a>(
        &'a self,
        endpoint: &'a str,
        report: Report,
    ) -> BoxFuture<'a, Result<(), CatalogError>> {
        async move { Ok(self.post_report(endpoint, &report).await?) }.boxed()
    }

    fn events(&self, after: i64, wait: Duration) -> BoxFuture<'_, Result<EventPage, CatalogError>> {
        async move { Ok(RegistryClient::events(self, after, PAGE, wait).await?) }.boxed()
    }

    fn artifact<'a>(
        &'a self,
        record: &'a VersionRecord,
    ) -> BoxFuture<'a, Result<ByteStream, CatalogError>> {
        async move {
            let response = self
                .download(&record.name, &VersionRef::Number(record.version))
                .await?;
            let stream: ByteStream = response
                .bytes_stream()
                .map(|r| r.map_err(|e| CatalogError::Unavailable(e.to_string())))
                .boxed();
            Ok(stream)
        }
        .boxed()
    }
}
