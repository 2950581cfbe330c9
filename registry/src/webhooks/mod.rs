//! Webhooks: the registry POSTs events to subscribed URLs, signed, retried, dead-lettered.
//!
//! Delivery is at-least-once and survives restarts because every step is a row in the database:
//!
//! 1. **Fan-out** tails the event log after each webhook's cursor and, in one write transaction,
//!    queues one delivery per matching (webhook, event) and advances the cursor — an event is
//!    never skipped or queued twice, whatever crashes when.
//! 2. **Sending** picks due deliveries, claims each with a conditional `UPDATE` (so replicas
//!    sharing a PostgreSQL database never send one concurrently), POSTs it, and records the
//!    outcome: `delivered` on a 2xx within the timeout; otherwise a retry after an exponential
//!    backoff with full jitter, and after `max_attempts` the dead-letter list, from which
//!    `POST …/dead-letters/{id}/replay` queues it again.
//!
//! Each request carries `X-Ferry-Delivery` (the same id on every attempt: receivers deduplicate
//! on it), `X-Ferry-Event` and `X-Ferry-Signature: t=…,v1=…` — see [`signature`] for how to
//! verify it and reject stale timestamps. The body is the event as `GET /api/v1/events` shows it.
//!
//! Deliveries of one webhook are sent one at a time, oldest event first; one waiting for its
//! retry does not hold back later ones, so receivers that care about order compare event ids.

pub mod backoff;
pub mod destination;
mod metrics;
pub mod signature;
mod worker;

use std::fmt;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use metrics::WebhookMetrics;
pub use worker::{RoundSummary, WebhookWorker};

use crate::error::{Error, Result};
use crate::store::MetadataStore;

/// Settings of webhook delivery.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Deliveries sent at the same time (to different webhooks).
    pub concurrency: usize,
    /// Longest a receiver may take to answer; a slower answer is a failed attempt.
    pub request_timeout: Duration,
    /// Attempts before a delivery moves to the dead-letter list.
    pub max_attempts: u32,
    /// Ceiling of the first retry's delay; each further failure doubles it.
    pub retry_base: Duration,
    /// Longest delay between two attempts.
    pub retry_cap: Duration,
    /// How often an idle sender looks for new events and due retries (events committed by this
    /// process wake it at once).
    pub poll_interval: Duration,
    /// Events matched per fan-out transaction, and deliveries looked at per round.
    pub batch: u32,
    /// Identifies this process in delivery claims.
    pub replica: String,
    /// Send to loopback, private, link-local, unique-local and CGNAT addresses too
    /// (`--webhook-allow-private`; see [`destination`]).
    pub allow_private: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            concurrency: 8,
            request_timeout: Duration::from_secs(10),
            max_attempts: 8,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            batch: 256,
            replica: default_replica(),
            allow_private: false,
        }
    }
}

/// A name for this process that is unique among replicas: host name (when known) and a random
/// suffix, since a restarted pod may keep its name while its claims belong to the dead process.
pub(crate) fn default_replica() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    if host.is_empty() {
        suffix
    } else {
        format!("{host}-{}", &suffix[..8])
    }
}

/// Builds a [`WebhookWorker`] (registering its metrics in `prometheus`) and runs it on `tasks`
/// until `stop` is cancelled; it stops between rounds. Even an abort would be safe: a delivery
/// being sent stays claimed until its claim expires, then it is sent again (at-least-once).
///
/// # Errors
/// [`Error::Internal`] when the metrics are already registered or the HTTP client cannot be
/// built.
pub fn spawn_webhooks(
    store: MetadataStore,
    config: WebhookConfig,
    prometheus: &prometheus::Registry,
    tasks: &mut JoinSet<()>,
    stop: CancellationToken,
) -> Result<()> {
    let worker = WebhookWorker::new(store, config, prometheus)?;
    tasks.spawn(worker.run(stop));
    Ok(())
}

/// A webhook's signing key. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub(crate) struct Secret(String);

/// Shortest and longest secret a caller may choose.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;

impl Secret {
    /// 32 random bytes from the thread's CSPRNG (ChaCha, seeded by the OS), hex-encoded.
    pub(crate) fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        Secret(format!("whsec_{}", hex::encode(bytes)))
    }

    pub(crate) fn from_stored(text: String) -> Self {
        Secret(text)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…redacted)")
    }
}

/// Checks a caller-chosen secret. The message never contains it.
pub(crate) fn validate_secret(given: String) -> Result<Secret> {
    let length = given.chars().count();
    if !SECRET_LEN.contains(&length) {
        return Err(Error::BadRequest(format!(
            "secret must be {} to {} characters long, got {length}; omit it to have one generated",
            SECRET_LEN.start(),
            SECRET_LEN.end()
        )));
    }
    if given.chars().any(char::is_control) {
        return Err(Error::BadRequest(
            "secret must not contain control characters".into(),
        ));
    }
    Ok(Secret(given))
}

/// Longest webhook URL accepted.
const MAX_URL_LEN: usize = 2048;

/// Checks a webhook URL: absolute `http`/`https` with a host and no credentials. Returns it as
/// it will be stored (normalized, without a fragment).
pub(crate) fn validate_url(raw: &str) -> Result<String> {
    let raw = raw.trim();
    if raw.len() > MAX_URL_LEN {
        return Err(Error::BadRequest(format!(
            "url is {} bytes long; at most {MAX_URL_LEN} are allowed",
            raw.len()
        )));
    }
    let mut url = url::Url::parse(raw)
        .map_err(|e| Error::BadRequest(format!("url is not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::BadRequest(format!(
            "url must use http or https, not `{}`",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::BadRequest("url must name a host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // They would show in every read of the webhook and in logs; receivers authenticate the
        // registry by the signature instead.
        return Err(Error::BadRequest(
            "url must not contain a user name or password; verify deliveries by their signature"
                .into(),
        ));
    }
    url.set_fragment(None);
    Ok(url.to_string())
}

pub use ferry_api::webhooks::display_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https_with_a_host_and_no_credentials() {
        assert_eq!(
            validate_url(" https://ci.example.com/hook#x ").unwrap(),
            "https://ci.example.com/hook"
        );
        assert!(validate_url("http://127.0.0.1:9000/").is_ok());
        for (bad, says) in [
            ("ftp://example.com/", "http or https"),
            ("example.com/hook", "absolute URL"),
            ("https://user:pw@example.com/", "user name or password"),
            ("file:///etc/passwd", "http or https"),
        ] {
            let err = validate_url(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(validate_url(&format!("https://e.com/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn displayed_urls_hide_query_strings() {
        assert_eq!(
            display_url("https://ci.example.com/trigger?token=abc"),
            "https://ci.example.com/trigger?…"
        );
        assert_eq!(display_url("http://h/p"), "http://h/p");
    }

    #[test]
    fn generated_secrets_are_long_random_and_never_printed() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), "whsec_".len() + 64);
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn chosen_secrets_are_length_checked_without_echoing_them() {
        let err = validate_secret("short-secret".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("16 to 256"), "{err}");
        assert!(!err.contains("short-secret"), "{err}");
        assert!(validate_secret("a-long-enough-secret".into()).is_ok());
    }
}
