//! The registry's side of authentication: the middleware that checks every API route's bearer
//! token against the configured [`Tokens`] and the default role of its method, answering
//! refusals as problem documents, and [`RequireAdmin`] for routes that need more.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use ferry_api::http::auth::{Principal, Role, Tokens, bearer, drain_refused, needed_role};
use ferry_api::http::open_mode;

use crate::error::Error;

/// Middleware: authenticates the bearer token and enforces the method's default role.
///
/// # Errors
/// 401 without a valid token, 403 when the token's role is too weak; without tokens, 403 for
/// what [`open_mode::refusal`] refuses.
pub async fn require_token(
    State(tokens): State<Tokens>,
    mut request: Request,
    next: Next,
) -> Result<Response, Error> {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let needed = needed_role(request.method(), route);
    let principal = if tokens.is_open() {
        if let Some(refused) = open_mode::refusal(
            request.method(),
            request.uri(),
            request.headers(),
            needed >= Role::Write,
        ) {
            drain_refused(request).await;
            return Err(Error::OpenModeRefused(refused));
        }
        Principal {
            role: Role::Admin,
            label: "open".into(),
        }
    } else {
        let found = bearer(request.headers()).and_then(|presented| tokens.authenticate(presented));
        match found {
            Some(principal) => principal,
            None => {
                drain_refused(request).await;
                return Err(Error::Unauthorized);
            }
        }
    };
    if principal.role < needed {
        drain_refused(request).await;
        return Err(Error::Forbidden {
            needed,
            has: principal.role,
        });
    }
    tracing::Span::current().record("principal", principal.label.as_str());
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

/// Extractor for routes that need the `admin` role.
#[derive(Debug)]
pub struct RequireAdmin;

impl<S: Send + Sync> FromRequestParts<S> for RequireAdmin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .ok_or(Error::Unauthorized)?;
        if principal.role < Role::Admin {
            return Err(Error::Forbidden {
                needed: Role::Admin,
                has: principal.role,
            });
        }
        Ok(RequireAdmin)
    }
}
