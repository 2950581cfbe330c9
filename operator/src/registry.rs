//! What the reconciler asks of a Ferry registry, behind a small trait so reconcile tests run
//! against a fake, and its implementation over HTTP ([`HttpRegistry`]).
//!
//! Every `ModelDeployment` names its own registry and token, so each call takes a
//! [`RegistryAt`]; the HTTP implementation shares one connection pool across all of them.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use ferry_api::client::{ClientError, RegistryClient};
use ferry_api::names::VersionRef;
use ferry_api::records::{EndpointPolicy, EndpointRecord, EventPage, RolloutStep};
use ferry_api::traffic::EndpointAnalysis;

use crate::crd::TargetRef;

/// A registry and the token to call it with.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RegistryAt {
    /// Base URL, e.g. `http://ferry-registry.ferry.svc:8080`.
    pub url: String,
    /// Bearer token, if the registry needs one.
    pub token: Option<String>,
}

impl fmt::Debug for RegistryAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("RegistryAt")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an error, or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The registry did not answer in time.
    #[error("the registry did not answer within {0:?}")]
    Timeout(Duration),
}

impl RegistryError {
    /// The HTTP status, when the registry answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Client(e) => e.status(),
            RegistryError::Timeout(_) => None,
        }
    }

    /// True for a 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// The registry calls the reconciler makes. Implementations must be cheap to call concurrently.
pub trait Registry: Send + Sync + 'static {
    /// The version number `target` names in `model` (an alias is resolved now).
    fn resolve(
        &self,
        at: &RegistryAt,
        model: &str,
        target: &TargetRef,
    ) -> impl Future<Output = Result<i64, RegistryError>> + Send;

    /// The endpoint, or `None` when it does not exist.
    fn get_endpoint(
        &self,
        at: &RegistryAt,
        name: &str,
    ) -> impl Future<Output = Result<Option<EndpointRecord>, RegistryError>> + Send;

    /// Creates or replaces the endpoint's policy.
    fn put_endpoint(
        &self,
        at: &RegistryAt,
        name: &str,
        policy: &EndpointPolicy,
    ) -> impl Future<Output = Result<EndpointRecord, RegistryError>> + Send;

    /// Deletes the endpoint; `false` when it did not exist.
    fn delete_endpoint(
        &self,
        at: &RegistryAt,
        name: &str,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;

    /// The endpoint's analysis over the last `window`.
    fn analysis(
        &self,
        at: &RegistryAt,
        name: &str,
        window: Duration,
    ) -> impl Future<Output = Result<EndpointAnalysis, RegistryError>> + Send;

    /// Records a rollout step as the endpoint's `rollout.step` event.
    fn record_step(
        &self,
        at: &RegistryAt,
        name: &str,
        step: &RolloutStep,
    ) -> impl Future<Output = Result<(), RegistryError>> + Send;

    /// Events after `after`, waiting up to `wait` for the first one.
    fn events(
        &self,
        at: &RegistryAt,
        after: i64,
        limit: u32,
        wait: Duration,
    ) -> impl Future<Output = Result<EventPage, RegistryError>> + Send;
}

/// [`Registry`] over HTTP: one connection pool for every registry and token, and a deadline
/// on every call.
#[derive(Clone, Debug)]
pub struct HttpRegistry {
    http: reqwest::Client,
    timeout: Duration,
}

impl HttpRegistry {
    /// A client whose calls each get `timeout` (long-polls get it on top of their wait).
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS roots).
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("ferry-operator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpRegistry { http, timeout })
    }

    fn client(&self, at: &RegistryAt) -> Result<RegistryClient, RegistryError> {
        Ok(RegistryClient::with_http(
            &at.url,
            at.token.clone(),
            self.http.clone(),
        )?)
    }

    async fn bounded<T>(
        &self,
        extra: Duration,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, RegistryError> {
        let limit = self.timeout + extra;
        match tokio::time::timeout(limit, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RegistryError::Timeout(limit)),
        }
    }
}

impl Registry for HttpRegistry {
    async fn resolve(
        &self,
        at: &RegistryAt,
        model: &str,
        target: &TargetRef,
    ) -> Result<i64, RegistryError> {
        let client = self.client(at)?;
        let version = match target {
            TargetRef::Version(v) => VersionRef::Number(*v),
            TargetRef::Alias(a) => VersionRef::Alias(a.clone()),
        };
        let record = self
            .bounded(Duration::ZERO, client.get_version(model, &version))
            .await?;
        Ok(record.version)
    }

    async fn get_endpoint(
        &self,
        at: &RegistryAt,
        name: &str,
    ) -> Result<Option<EndpointRecord>, RegistryError> {
        let client = self.client(at)?;
        match self
            .bounded(Duration::ZERO, client.get_endpoint(name))
            .await
        {
            Ok(record) => Ok(Some(record)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put_endpoint(
        &self,
        at: &RegistryAt,
        name: &str,
        policy: &EndpointPolicy,
    ) -> Result<EndpointRecord, RegistryError> {
        let client = self.client(at)?;
        self.bounded(Duration::ZERO, client.put_endpoint(name, policy, None))
            .await
    }

    async fn delete_endpoint(&self, at: &RegistryAt, name: &str) -> Result<bool, RegistryError> {
        let client = self.client(at)?;
        match self
            .bounded(Duration::ZERO, client.delete_endpoint(name, None))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn analysis(
        &self,
        at: &RegistryAt,
        name: &str,
        window: Duration,
    ) -> Result<EndpointAnalysis, RegistryError> {
        let client = self.client(at)?;
        self.bounded(Duration::ZERO, client.endpoint_analysis(name, window))
            .await
    }

    async fn record_step(
        &self,
        at: &RegistryAt,
        name: &str,
        step: &RolloutStep,
    ) -> Result<(), RegistryError> {
        let client = self.client(at)?;
        self.bounded(Duration::ZERO, client.post_rollout_step(name, step))
            .await
            .map(|_| ())
    }

    async fn events(
        &self,
        at: &RegistryAt,
        after: i64,
        limit: u32,
        wait: Duration,
    ) -> Result<EventPage, RegistryError> {
        let client = self.client(at)?;
        self.bounded(wait, client.events(after, limit, wait)).await
    }
}
