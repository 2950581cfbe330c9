//! Bearer tokens on the inference routes: any valid token (the `read` role) may predict; the
//! health routes stay open for probes.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ferry_api::http::Tokens;

use crate::error::ServingError;

/// Middleware: 401 `{"error"}` without a valid token, when tokens are configured.
///
/// # Errors
/// [`ServingError::Unauthorized`].
pub async fn require_token(
    State(tokens): State<Tokens>,
    request: Request,
    next: Next,
) -> Result<Response, ServingError> {
    if !tokens.is_open() {
        let known = ferry_api::http::auth::bearer(request.headers())
            .is_some_and(|presented| tokens.authenticate(presented).is_some());
        if !known {
            ferry_api::http::auth::drain_refused(request).await;
            return Err(ServingError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}
