//! Bearer tokens on the inference routes: any valid token (the `read` role) may predict;
//! feedback needs `feedback` (it steers rollouts); the health routes stay open for probes.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use ferry_api::http::Tokens;
use ferry_api::http::auth::{Role, SERVING_FEEDBACK_ROUTE};

use crate::error::ServingError;

/// Middleware: 401 `{"error"}` without a valid token, 403 when the token's role is too low,
/// when tokens are configured; without tokens, 403 for what
/// [`ferry_api::http::open_mode::refusal`] refuses (serving has no writes).
///
/// # Errors
/// [`ServingError::Unauthorized`], [`ServingError::Forbidden`].
pub async fn require_token(
    State(tokens): State<Tokens>,
    request: Request,
    next: Next,
) -> Result<Response, ServingError> {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let needed = if route == Some(SERVING_FEEDBACK_ROUTE) {
        Role::Feedback
    } else {
        Role::Read
    };
    if let Err(refused) = authorize(
        &tokens,
        request.method(),
        request.uri(),
        request.headers(),
        needed,
    ) {
        ferry_api::http::auth::drain_refused(request).await;
        return Err(refused);
    }
    Ok(next.run(request).await)
}

/// Whether a request may go on: with tokens, a valid bearer token of at least `needed`;
/// without, what [`ferry_api::http::open_mode::refusal`] lets through (serving has no writes).
/// One rule for every protocol: REST routes go through [`require_token`], gRPC calls call this.
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
