//! A typed HTTP client for the registry API, used by the CLI and by serving.

mod catalog;
mod features;
mod webhooks;

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::lineage::VersionMetadata;
use crate::names::VersionRef;
use crate::records::{
    AliasRecord, EndpointPolicy, EndpointRecord, Event, EventPage, ModelRecord, Page, RolloutStep,
    VersionRecord,
};
use crate::traffic::{EndpointAnalysis, Report};

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry answered with an error status and a problem document.
    #[error("{detail} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The problem's `detail`, or the body text.
        detail: String,
    },
    /// The registry could not be reached or the transfer broke.
    #[error("cannot reach the registry at {url}: {source}")]
    Transport {
        /// The registry's base URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The base URL is not usable.
    #[error("invalid registry URL `{0}`")]
    InvalidUrl(String),
    /// The registry answered something that is not what the API promises.
    #[error("unexpected answer from the registry: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The HTTP status, when the registry answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Problem {
    detail: Option<String>,
    title: Option<String>,
}

/// A connection to one registry; clone it freely (connections are pooled).
#[derive(Clone, Debug)]
pub struct RegistryClient {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

/// Timeout of a JSON call (not of transfers, which may run long but not stall).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl RegistryClient {
    /// A client for the registry at `base` (e.g. `http://127.0.0.1:8080`).
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`].
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = parse_base(base)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A transfer may take long, but may not stall.
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.to_string(),
                source: e,
            })?;
        Ok(RegistryClient { base, token, http })
    }

    /// A client for the registry at `base` that shares `http`'s connection pool (and its
    /// timeouts), for a process talking to many registries or many tokens.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`].
    pub fn with_http(
        base: &str,
        token: Option<String>,
        http: reqwest::Client,
    ) -> Result<Self, ClientError> {
        Ok(RegistryClient {
            base: parse_base(base)?,
            token,
            http,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// A URL under the base; `segments` are percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request with the bearer token attached.
    pub fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        // Ferry's own client: an open registry accepts writes sent as forms only with this.
        let builder = self.http.request(method, url).header(
            crate::CLIENT_HEADER,
            concat!("ferry/", env!("CARGO_PKG_VERSION")),
        );
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// `GET` one page of the collection at `segments`: `limit`, `page_token` and `filters` as
    /// query parameters.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn get_page<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        limit: u32,
        page_token: Option<&str>,
        filters: &[(&str, &str)],
    ) -> Result<Page<T>, ClientError> {
        let mut url = self.url(segments);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &limit.to_string());
            for (key, value) in filters {
                query.append_pair(key, value);
            }
            if let Some(t) = page_token {
                query.append_pair("page_token", t);
            }
        }
        self.send_json(
            self.request(reqwest::Method::GET, url)
                .timeout(CALL_TIMEOUT),
        )
        .await
    }

    /// Sends a request and decodes a JSON answer, turning error statuses into [`ClientError::Api`].
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        response
            .json::<T>()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends a request, turning error statuses into [`ClientError::Api`].
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| ClientError::Transport {
            url: self.base.to_string(),
            source: e,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<Problem>(&text)
            .ok()
            .and_then(|p| p.detail.or(p.title))
            .or_else(|| {
                // OIP routes answer {"error": …}.
                serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            })
            .unwrap_or_else(|| {
                let t = text.trim();
                if t.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_string()
                } else {
                    t.chars().take(500).collect()
                }
            });
        Err(ClientError::Api {
            status: status.as_u16(),
            detail,
        })
    }

    /// `GET /api/v1/models`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_models(
        &self,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<ModelRecord>, ClientError> {
        self.get_page(&["api", "v1", "models"], limit, page_token, &[])
            .await
    }

    /// `GET /api/v1/models/{name}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn get_model(&self, name: &str) -> Result<ModelRecord, ClientError> {
        let url = self.url(&["api", "v1", "models", name]);
        self.send_json(
            self.request(reqwest::Method::GET, url)
                .timeout(CALL_TIMEOUT),
        )
        .await
    }

    /// `GET /api/v1/models/{name}/versions`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_versions(
        &self,
        name: &str,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<VersionRecord>, ClientError> {
        self.get_page(
            &["api", "v1", "models", name, "versions"],
            limit,
            page_token,
            &[],
        )
        .await
    }

    /// `GET /api/v1/models/{name}/versions/{v}` (number, alias or `latest`).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn get_version(
        &self,
        name: &str,
        version: &VersionRef,
    ) -> Result<VersionRecord, ClientError> {
        let v = version_segment(version);
        let url = self.url(&["api", "v1", "models", name, "versions", &v]);
        self.send_json(
            self.request(reqwest::Method::GET, url)
                .timeout(CALL_TIMEOUT),
        )
        .await
    }

    /// `PUT /api/v1/models/{name}/aliases/{alias}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: &VersionRef,
    ) -> Result<AliasRecord, ClientError> {
        let url = self.url(&["api", "v1", "models", name, "aliases", alias]);
        let body = match version {
            VersionRef::Number(n) => serde_json::json!({ "version": n }),
            VersionRef::Alias(a) => serde_json::json!({ "version": format!("@{a}") }),
        };
        self.send_json(
            self.request(reqwest::Method::PUT, url)
                .timeout(CALL_TIMEOUT)
                .json(&body),
        )
        .await
    }

    /// `DELETE /api/v1/models/{name}/aliases/{alias}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<(), ClientError> {
        let url = self.url(&["api", "v1", "models", name, "aliases", alias]);
        self.send(
            self.request(reqwest::Method::DELETE, url)
                .timeout(CALL_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    /// `POST /api/v1/models/{name}/versions`: `metadata` first (so the registry can skip bytes it
    /// already holds), then the model bytes from `body`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn push(
        &self,
        name: &str,
        body: reqwest::Body,
        size: Option<u64>,
        metadata: &VersionMetadata,
        idempotency_key: Option<&str>,
    ) -> Result<VersionRecord, ClientError> {
        let url = self.url(&["api", "v1", "models", name, "versions"]);
        let metadata = serde_json::to_vec(metadata)
            .map_err(|e| ClientError::Protocol(format!("metadata: {e}")))?;
        let meta_part = reqwest::multipart::Part::bytes(metadata)
            .mime_str("application/json")
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let model_part = match size {
            Some(n) => reqwest::multipart::Part::stream_with_length(body, n),
            None => reqwest::multipart::Part::stream(body),
        }
        .file_name(format!("{name}.onnx"))
        .mime_str("application/octet-stream")
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let form = reqwest::multipart::Form::new()
            .part("metadata", meta_part)
            .part("model", model_part);
        let mut request = self.request(reqwest::Method::POST, url).multipart(form);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send_json(request).await
    }

    /// `GET …/versions/{v}/artifact`: the response, to be streamed by the caller.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn download(
        &self,
        name: &str,
        version: &VersionRef,
    ) -> Result<reqwest::Response, ClientError> {
        let v = version_segment(version);
        let url = self.url(&["api", "v1", "models", name, "versions", &v, "artifact"]);
        self.send(self.request(reqwest::Method::GET, url)).await
    }

    /// `GET /api/v1/events?after=&limit=&wait=`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn events(
        &self,
        after: i64,
        limit: u32,
        wait: Duration,
    ) -> Result<EventPage, ClientError> {
        let mut url = self.url(&["api", "v1", "events"]);
        url.query_pairs_mut()
            .append_pair("after", &after.to_string())
            .append_pair("limit", &limit.to_string())
            .append_pair("wait", &wait.as_secs_f64().to_string());
        self.send_json(
            self.request(reqwest::Method::GET, url)
                .timeout(CALL_TIMEOUT + wait),
        )
        .await
    }

    /// `GET /api/v1/endpoints`, newest first.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_endpoints(
        &self,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<EndpointRecord>, ClientError> {
        self.get_page(&["api", "v1", "endpoints"], limit, page_token, &[])
            .await
    }

    /// `GET /api/v1/endpoints/{name}`: the policy with its revision.
    ///
    /// # Errors
    /// [`ClientError`] (404 when there is no such endpoint).
    pub async fn get_endpoint(&self, name: &str) -> Result<EndpointRecord, ClientError> {
        let url = self.url(&["api", "v1", "endpoints", name]);
        self.send_json(
            self.request(reqwest::Method::GET, url)
                .timeout(CALL_TIMEOUT),
        )
        .await
    }

    /// `PUT /api/v1/endpoints/{name}`: creates or replaces the policy; with `if_match`, only
    /// while the endpoint is still at that revision.
    ///
    /// # Errors
    /// [`ClientError`] (412 when `if_match` is stale; 400, 404 or 409 for a policy the registry
    /// refuses, naming the field).
    pub async fn put_endpoint(
        &self,
        name: &str,
        policy: &EndpointPolicy,
        if_match: Option<i64>,
    ) -> Result<EndpointRecord, ClientError> {
        let url = self.url(&["api", "v1", "endpoints", name]);
        let mut request = self
            .request(reqwest::Method::PUT, url)
            .timeout(CALL_TIMEOUT)
            .json(policy);
        if let Some(revision) = if_match {
            request = request.header(reqwest::header::IF_MATCH, format!("\"{revision}\""));
        }
        self.send_json(request).await
    }

    /// `PUT /api/v1/endpoints/{name}` with `If-None-Match: *`: creates the endpoint, or fails
    /// with 412 when it already exists.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create_endpoint(
        &self,
        name: &str,
        policy: &EndpointPolicy,
    ) -> Result<EndpointRecord, ClientError> {
        let url = self.url(&["api", "v1", "endpoints", name]);
        self.send_json(
            self.request(reqwest::Method::PUT, url)
                .timeout(CALL_TIMEOUT)
                .header(reqwest::header::IF_NONE_MATCH, "*")
                .json(policy),
        )
        .await
    }

    /// `DELETE /api/v1/endpoints/{name}`; with `if_match`, only while it is at that revision.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete_endpoint(
        &self,
        name: &str,
        if_match: Option<i64>,
    ) -> Result<(), ClientError> {
        let url = self.url(&["api", "v1", "endpoints", name]);
        let mut request = self
            .request(reqwest::Method::DELETE, url)
            .timeout(CALL_TIMEOUT);
        if let Some(revision) = if_match {
            request = request.header(reqwest::header::IF_MATCH, format!("\"{revision}\""));
        }
        self.send(request).await?;
        Ok(())
    }

    /// `POST /api/v1/endpoints/{name}/reports`: a serving replica's counters for one interval.
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown endpoint, 400 for an invalid report).
    pub async fn post_report(&self, name: &str, report: &Report) -> Result<(), ClientError> {
        let url = self.url(&["api", "v1", "endpoints", name, "reports"]);
        self.send(
            self.request(reqwest::Method::POST, url)
                .timeout(CALL_TIMEOUT)
                .json(report),
        )
        .await?;
        Ok(())
    }

    /// `POST /api/v1/endpoints/{name}/rollout-events`: records a rollout step as a
    /// `rollout.step` event; returns the event.
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown endpoint, 400 for an invalid step).
    pub async fn post_rollout_step(
        &self,
        name: &str,
        step: &RolloutStep,
    ) -> Result<Event, ClientError> {
        let url = self.url(&["api", "v1", "endpoints", name, "rollout-events"]);
        self.send_json(
            self.request(reqwest::Method::POST, url)
                .timeout(CALL_TIMEOUT)
                .json(step),
        )
        .await
    }

    /// `GET /api/v1/endpoints/{name}/analysis?window=`: every replica's reports of the last
    /// `window`, summed per version.
    ///
    /// # Errors
    /// [`ClientError`] (400 when `window` is longer than the registry keeps reports).
    pub async fn endpoint_analysis(
        &self,
        name: &str,
        window: Duration,
    ) -> Result<EndpointAnalysis, ClientError> {
        let mut url = self.url(&["api", "v1", "endpoints", name, "analysis"]);
        url.query_pairs_mut()
            .append_pair("window", &window.as_secs_f64().to_string());
        self.send_json(
            self.request(reqwest::Method::GET, url)
                .timeout(CALL_TIMEOUT),
        )
        .await
    }
}

/// An http(s) base URL whose path ends with `/`, so segments append under it.
fn parse_base(base: &str) -> Result<Url, ClientError> {
    let mut url = Url::parse(base.trim()).map_err(|_| ClientError::InvalidUrl(base.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::InvalidUrl(base.to_string()));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn version_segment(version: &VersionRef) -> String {
    match version {
        VersionRef::Number(n) => n.to_string(),
        VersionRef::Alias(a) => a.clone(),
    }
}
