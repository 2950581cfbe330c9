//! The feature view calls of [`RegistryClient`].

use std::time::Duration;

use super::{ClientError, RegistryClient};
use crate::features::{FeatureViewRecord, FeatureViewSpec, MaterializationBody};
use crate::records::Event;
use crate::records::Page;
use crate::skew::ServedRows;

/// Timeout of a feature view call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl RegistryClient {
    /// `PUT /api/v1/feature-views/{name}`: registers the definition (a new version, or the
    /// version that already has it).
    ///
    /// # Errors
    /// [`ClientError`] (400 naming every invalid field).
    pub async fn put_feature_view(
        &self,
        name: &str,
        spec: &FeatureViewSpec,
    ) -> Result<FeatureViewRecord, ClientError> {
        let url = self.url(&["api", "v1", "feature-views", name]);
        self.send_json(
            self.request(reqwest::Method::PUT, url)
                .timeout(CALL_TIMEOUT)
                .json(spec),
        )
        .await
    }

    /// `GET /api/v1/feature-views/{name}` (the newest version) or
    /// `…/versions/{version}`.
    ///
    /// # Errors
    /// [`ClientError`] (404 when there is no such view or version).
    pub async fn get_feature_view(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<FeatureViewRecord, ClientError> {
        let version = version.map(|v| v.to_string());
        let url = match &version {
            Some(v) => self.url(&["api", "v1", "feature-views", name, "versions", v]),
            None => self.url(&["api", "v1", "feature-views", name]),
        };
        self.send_json(
            self.request(reqwest::Method::GET, url)
                .timeout(CALL_TIMEOUT),
        )
        .await
    }

    /// `POST /api/v1/feature-views/{name}/versions/{version}/materializations`: records a
    /// materialization; the `feature_view.materialized` event it wrote.
    ///
    /// # Errors
    /// [`ClientError`] (404 for a view version that does not exist).
    pub async fn record_materialization(
        &self,
        name: &str,
        version: i64,
        body: &MaterializationBody,
    ) -> Result<Event, ClientError> {
        let version = version.to_string();
        let url = self.url(&[
            "api",
            "v1",
            "feature-views",
            name,
            "versions",
            &version,
            "materializations",
        ]);
        self.send_json(
            self.request(reqwest::Method::POST, url)
                .timeout(CALL_TIMEOUT)
                .json(body),
        )
        .await
    }

    /// `POST /api/v1/feature-views/{name}/versions/{version}/served`: rows serving read online,
    /// for the skew check.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn post_served_features(
        &self,
        name: &str,
        version: i64,
        rows: &ServedRows,
    ) -> Result<(), ClientError> {
        let version = version.to_string();
        let url = self.url(&[
            "api",
            "v1",
            "feature-views",
            name,
            "versions",
            &version,
            "served",
        ]);
        self.send_json::<serde_json::Value>(
            self.request(reqwest::Method::POST, url)
                .timeout(CALL_TIMEOUT)
                .json(rows),
        )
        .await
        .map(|_| ())
    }

    /// `GET /api/v1/feature-views`: the newest version of every view, by name.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_feature_views(
        &self,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<FeatureViewRecord>, ClientError> {
        self.get_page(&["api", "v1", "feature-views"], limit, page_token, &[])
            .await
    }
}
