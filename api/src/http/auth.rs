//! Bearer tokens with five roles, checked in constant time: what every Ferry server accepts.
//!
//! Routes need `read` for safe methods (GET, HEAD) and `write` for the rest ([`needed_role`]),
//! unless a handler asks for more: a new route is protected by default instead of by remembering
//! to. Two exceptions are narrower: business feedback needs only `feedback`, and a serving
//! replica's reports only `serving`, so the token in pods that face traffic cannot push models
//! or move aliases. Each server's middleware
//! (the registry's, serving's) answers refusals in its own error format.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{Method, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read models, versions, artifacts and events; predict.
    Read,
    /// Also post business feedback on predictions: it steers rollouts, so a token that may
    /// only predict may not send it.
    Feedback,
    /// Also post a serving replica's reports: what serving pods hold, and nothing more.
    Serving,
    /// Also push versions, move aliases, change endpoints.
    Write,
    /// Also manage webhooks and maintenance operations.
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Feedback => "feedback",
            Role::Serving => "serving",
            Role::Write => "write",
            Role::Admin => "admin",
        })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "feedback" => Ok(Role::Feedback),
            "serving" => Ok(Role::Serving),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}`; expected read, serving, write or admin"
            )),
        }
    }
}

/// The identity a request was authenticated as, stored in the request's extensions.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's role (admin when the server runs open).
    pub role: Role,
    /// A non-secret label for logs: the first 8 hex digits of the token's SHA-256, or `open`.
    pub label: String,
}

#[derive(Clone)]
struct TokenEntry {
    digest: [u8; 32],
    role: Role,
}

/// The configured tokens. Only their SHA-256 digests are kept in memory.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Arc<Vec<TokenEntry>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print token material, not even digests.
        write!(f, "Tokens({} configured)", self.entries.len())
    }
}

impl Tokens {
    /// Parses `ROLE:SECRET` entries, as given by `--token`, `FERRY_TOKENS` (comma separated) or a
    /// tokens file (one per line, `#` comments). `ROLE:sha256:<64 hex>` gives the token by its
    /// SHA-256 instead ([`digest_entry`] writes one): a file of digests lets a server check
    /// tokens without holding any, so a pod that faces traffic has nothing worth stealing.
    ///
    /// # Errors
    /// Names the malformed entry by position, never by its secret.
    pub fn parse<'a>(specs: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (index, spec) in specs.into_iter().enumerate() {
            let spec = spec.trim();
            if spec.is_empty() || spec.starts_with('#') {
                continue;
            }
            let Some((role, secret)) = spec.split_once(':') else {
                return Err(format!(
                    "token entry {} is not of the form ROLE:SECRET",
                    index + 1
                ));
            };
            let role: Role = role.trim().parse()?;
            let secret = secret.trim();
            if let Some(digest) = secret.strip_prefix(DIGEST_PREFIX) {
                entries.push(TokenEntry {
                    digest: parse_digest(digest).ok_or_else(|| {
                        format!(
                            "token entry {} ({role}) starts with `{DIGEST_PREFIX}` but is not \
                             followed by 64 hex digits (the SHA-256 of the token)",
                            index + 1
                        )
                    })?,
                    role,
                });
                continue;
            }
            if secret.len() < 16 {
                return Err(format!(
                    "token entry {} ({role}) is shorter than 16 characters; use a long random secret",
                    index + 1
                ));
            }
            entries.push(TokenEntry {
                digest: Sha256::digest(secret.as_bytes()).into(),
                role,
            });
        }
        Ok(Tokens {
            entries: Arc::new(entries),
        })
    }

    /// True when no token is configured: the server then runs open, on loopback only.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// Finds the role of a presented secret. Compares against every entry without stopping at the
    /// first match, so the time taken does not say which entry (if any) matched.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<Role> = None;
        for entry in self.entries.iter() {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(found.map_or(entry.role, |r| r.max(entry.role)));
            }
        }
        found.map(|role| Principal {
            role,
            label: hex::encode(&digest[..4]),
        })
    }
}

/// What marks a tokens-file entry as a digest: `ROLE:sha256:<64 hex>`.
pub const DIGEST_PREFIX: &str = "sha256:";

/// The tokens-file entry that accepts `secret` for `role` without containing it:
/// `ROLE:sha256:<hex of SHA-256(secret)>` (what `printf %s SECRET | sha256sum` prints).
pub fn digest_entry(role: Role, secret: &str) -> String {
    format!(
        "{role}:{DIGEST_PREFIX}{}",
        hex::encode(Sha256::digest(secret.trim().as_bytes()))
    )
}

fn parse_digest(hex_digits: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_digits.trim()).ok()?;
    bytes.try_into().ok()
}

/// The bearer token of a request's `Authorization` header, if it has one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The role a request needs before its handler runs: `read` for safe methods, `feedback` for
/// business feedback, `serving` for a replica's reports, `write` for everything else (handlers
/// may ask for more).
pub fn needed_role(method: &Method, route: Option<&str>) -> Role {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Role::Read,
        Method::POST if route == Some(FEEDBACK_ROUTE) => Role::Feedback,
        Method::POST if route == Some(REPORTS_ROUTE) || route == Some(SERVED_FEATURES_ROUTE) => {
            Role::Serving
        }
        _ => Role::Write,
    }
}

/// The registry's route for business feedback on an endpoint's predictions.
pub const FEEDBACK_ROUTE: &str = "/api/v1/endpoints/{name}/feedback";

/// Serving's route for business feedback (the Open Inference Protocol's other routes need only
/// `read`).
pub const SERVING_FEEDBACK_ROUTE: &str = "/v2/models/{name}/feedback";

/// The route serving replicas post their reports to.
pub const REPORTS_ROUTE: &str = "/api/v1/endpoints/{name}/reports";

/// The route serving replicas post the feature rows they read to, for the skew check.
pub const SERVED_FEATURES_ROUTE: &str = "/api/v1/feature-views/{name}/versions/{version}/served";

/// Largest body of a refused request that is read (and dropped) before the answer.
pub const REFUSED_BODY_DRAIN: u64 = 1 << 20;

/// Longest the server spends reading a refused request's body.
const REFUSED_BODY_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops the body of a request about to be refused, when it is small
/// ([`REFUSED_BODY_DRAIN`], within two seconds). Answering while the client is still sending
/// makes the server close a socket with unread bytes in it, which resets the connection and can
/// destroy the answer before the client reads it: a client posting without a token would see
/// "connection reset" instead of the 401 that says why. Larger bodies are not read (that would
/// let anyone make the server swallow gigabytes); their clients may see the reset.
pub async fn drain_refused(request: Request) {
    use futures::StreamExt;
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    match length {
        Some(n) if n > 0 && n <= REFUSED_BODY_DRAIN => {}
        None if chunked => {}
        _ => return,
    }
    let mut body = request.into_body().into_data_stream();
    let _ = tokio::time::timeout(REFUSED_BODY_DRAIN_TIME, async {
        let mut read = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            read += chunk.len() as u64;
            if read >= REFUSED_BODY_DRAIN {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_read_feedback_serving_write_admin() {
        assert!(
            Role::Read < Role::Feedback
                && Role::Feedback < Role::Serving
                && Role::Serving < Role::Write
                && Role::Write < Role::Admin
        );
        assert_eq!("feedback".parse::<Role>().unwrap(), Role::Feedback);
        assert_eq!(Role::Feedback.to_string(), "feedback");
    }

    #[test]
    fn feedback_needs_the_feedback_role() {
        assert_eq!(
            needed_role(&Method::POST, Some(FEEDBACK_ROUTE)),
            Role::Feedback
        );
        assert_eq!(needed_role(&Method::GET, Some(FEEDBACK_ROUTE)), Role::Read);
    }

    #[test]
    fn reports_need_the_serving_role_and_every_other_write_needs_write() {
        assert_eq!(needed_role(&Method::GET, Some(REPORTS_ROUTE)), Role::Read);
        assert_eq!(
            needed_role(&Method::POST, Some(REPORTS_ROUTE)),
            Role::Serving
        );
        // So are the feature rows serving read, for the skew check.
        assert_eq!(
            needed_role(&Method::POST, Some(SERVED_FEATURES_ROUTE)),
            Role::Serving
        );
        for route in [
            "/api/v1/feature-views/{name}/versions/{version}/materializations",
            "/api/v1/endpoints/{name}",
            "/api/v1/endpoints/{name}/rollout-events",
            "/api/v1/models/{name}/versions",
        ] {
            assert_eq!(
                needed_role(&Method::POST, Some(route)),
                Role::Write,
                "{route}"
            );
            assert_eq!(
                needed_role(&Method::PUT, Some(route)),
                Role::Write,
                "{route}"
            );
        }
        assert_eq!(needed_role(&Method::POST, None), Role::Write);
        assert_eq!("serving".parse::<Role>().unwrap(), Role::Serving);
    }

    #[test]
    fn parse_accepts_role_secret_pairs_and_skips_comments() {
        let tokens = Tokens::parse([
            "# ops",
            "read:aaaaaaaaaaaaaaaaaaaa",
            "admin:bbbbbbbbbbbbbbbbbbbb",
        ])
        .unwrap();
        assert_eq!(
            tokens.authenticate("aaaaaaaaaaaaaaaaaaaa").unwrap().role,
            Role::Read
        );
        assert_eq!(
            tokens.authenticate("bbbbbbbbbbbbbbbbbbbb").unwrap().role,
            Role::Admin
        );
        assert!(tokens.authenticate("cccccccccccccccccccc").is_none());
    }

    #[test]
    fn digest_entries_accept_the_token_they_were_made_from() {
        let secret = "a-long-random-secret-0123456789";
        let entry = digest_entry(Role::Serving, secret);
        assert!(
            entry.starts_with("serving:sha256:") && !entry.contains(secret),
            "{entry}"
        );
        // What `printf %s SECRET | sha256sum` prints, in upper case too.
        let upper = format!(
            "read:sha256:{}",
            entry["serving:sha256:".len()..].to_uppercase()
        );
        let tokens = Tokens::parse([entry.as_str(), upper.as_str()]).unwrap();
        assert_eq!(tokens.authenticate(secret).unwrap().role, Role::Serving);
        assert!(
            tokens
                .authenticate("a-long-random-secret-0123456780")
                .is_none()
        );
        // The digest itself is not a token.
        assert!(tokens.authenticate(&entry["serving:".len()..]).is_none());
        for bad in [
            "read:sha256:abc",
            "read:sha256:",
            &format!("read:sha256:{}", "zz".repeat(32)),
        ] {
            let err = Tokens::parse([bad]).unwrap_err();
            assert!(err.contains("64 hex digits"), "{bad}: {err}");
        }
    }

    #[test]
    fn parse_rejects_short_secrets_without_echoing_them() {
        let err = Tokens::parse(["write:short"]).unwrap_err();
        assert!(err.contains("shorter than 16"));
        assert!(!err.contains("short:"), "{err}");
    }

    #[test]
    fn parse_rejects_unknown_roles() {
        assert!(
            Tokens::parse(["root:aaaaaaaaaaaaaaaaaaaa"])
                .unwrap_err()
                .contains("unknown role")
        );
    }

    #[test]
    fn debug_output_never_contains_token_material() {
        let tokens = Tokens::parse(["read:aaaaaaaaaaaaaaaaaaaa"]).unwrap();
        let printed = format!("{tokens:?}");
        assert!(!printed.contains("aaaa"));
    }
}
