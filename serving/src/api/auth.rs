//! Bearer tokens on the inference routes: any valid token (the `read` role) may predict;
//! feedback needs `feedback` (it steers rollouts); the health routes stay open for probes.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use ferry_api::http::Tokens;
use ferry_api::http::auth::{Role, SERVING_FEEDBACK_ROUTE};
use futures::future::{BoxFuture, Either};
use tower::{Layer, Service};

use crate::error::ServingError;

/// The layer on the inference routes: 401 `{"error"}` without a valid token, 403 when the
/// token's role is too low, when tokens are configured; without tokens, 403 for what
/// [`ferry_api::http::open_mode::refusal`] refuses (serving has no writes).
///
/// A `tower` layer rather than `axum::middleware::from_fn`, which boxes the next service and
/// the whole request's future on every request: here an allowed request goes straight to the
/// route's own future, and only a refusal (rare, and cheap to box) allocates.
#[derive(Clone)]
pub struct RequireTokenLayer(Tokens);

impl RequireTokenLayer {
    /// Checks requests against `tokens`.
    pub fn new(tokens: Tokens) -> Self {
        RequireTokenLayer(tokens)
    }
}

impl<S> Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireToken {
            inner,
            tokens: self.0.clone(),
        }
    }
}

/// The service of [`RequireTokenLayer`].
#[derive(Clone)]
pub struct RequireToken<S> {
    inner: S,
    tokens: Tokens,
}

impl<S> Service<Request> for RequireToken<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let needed = if route == Some(SERVING_FEEDBACK_ROUTE) {
            Role::Feedback
        } else {
            Role::Read
        };
        match authorize(
            &self.tokens,
            request.method(),
            request.uri(),
            request.headers(),
            needed,
        ) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(refused) => Either::Right(Box::pin(async move {
                ferry_api::http::auth::drain_refused(request).await;
                Ok(refused.into_response())
            })),
        }
    }
}

/// Whether a request may go on: with tokens, a valid bearer token of at least `needed`;
/// without, what [`ferry_api::http::open_mode::refusal`] lets through (serving has no writes).
/// One rule for every protocol: REST routes go through [`RequireTokenLayer`], gRPC calls call this.
///
/// # Errors
/// [`ServingError::Unauthorized`], [`ServingError::Forbidden`].
pub(crate) fn authorize(
    tokens: &Tokens,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    needed: Role,
) -> Result<(), ServingError> {
    if tokens.is_open() {
        if let Some(refused) = ferry_api::http::open_mode::refusal(method, uri, headers, false) {
            return Err(ServingError::Forbidden(refused));
        }
        return Ok(());
    }
    let principal = ferry_api::http::auth::bearer(headers)
        .and_then(|presented| tokens.authenticate(presented))
        .ok_or(ServingError::Unauthorized)?;
    if principal.role < needed {
        return Err(ServingError::Forbidden(format!(
            "this route needs the `{needed}` role; the token has `{}`",
            principal.role
        )));
    }
    Ok(())
}
