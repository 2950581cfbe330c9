//! Webhooks and deliveries as the API shows them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/webhooks`: subscribe a URL to event types.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where deliveries are POSTed: `http://` or `https://`, without credentials in it.
    pub url: String,
    /// Event types (`version.created`), families (`drift.*`) or `*`.
    pub events: Vec<String>,
    /// The HMAC key of the signatures (16 to 256 characters). When absent the registry generates
    /// a strong random one and returns it once, in the creation response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewWebhook")
            .field("url", &display_url(&self.url))
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "…redacted"))
            .finish()
    }
}

/// A webhook as every read shows it: without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// Its id (a UUID).
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// The event type patterns it receives.
    pub events: Vec<String>,
    /// The id of the last event the registry has queued deliveries for; events after it are
    /// still to be matched.
    pub cursor: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// The answer to a creation: the webhook and, this one time only, its secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedWebhook {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: WebhookRecord,
    /// The signing secret. Store it now: no later read shows it.
    pub secret: String,
}

impl fmt::Debug for CreatedWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedWebhook")
            .field("webhook", &self.webhook)
            .field("secret", &"…redacted")
            .finish()
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    /// A receiver answered 2xx within the timeout.
    Delivered,
    /// Every attempt failed: it is in the dead-letter list until replayed.
    Dead,
}

impl DeliveryStatus {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    /// Parses the database spelling.
    pub fn from_db(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "dead" => Some(DeliveryStatus::Dead),
            _ => None,
        }
    }
}

/// One event on its way to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The delivery id, sent as `X-Ferry-Delivery` on every attempt.
    pub id: String,
    /// The webhook it goes to.
    pub webhook: String,
    /// The event it carries.
    pub event_id: i64,
    /// That event's type.
    pub event_type: String,
    /// Pending, delivered or dead.
    pub status: DeliveryStatus,
    /// Attempts made so far (reset by a replay).
    pub attempts: i64,
    /// When the next attempt may start (pending deliveries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last attempt, when the receiver answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the delivery was queued.
    pub created_at: DateTime<Utc>,
    /// When the receiver acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A webhook URL as events and logs show it: without its query string, which may carry a token.
pub fn display_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            let had_query = url.query().is_some();
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            let _ = url.set_username("");
            let mut shown = url.to_string();
            if had_query {
                shown.push_str("?…");
            }
            shown
        }
        Err(_) => "(invalid URL)".to_string(),
    }
}
