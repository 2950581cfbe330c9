//! The webhook calls of [`RegistryClient`] (admin token required).

use std::time::Duration;

use super::{ClientError, RegistryClient};
use crate::records::Page;
use crate::webhooks::{CreatedWebhook, DeliveryRecord, DeliveryStatus, NewWebhook, WebhookRecord};

/// Timeout of a webhook call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl RegistryClient {
    /// `POST /api/v1/webhooks`: the answer holds the signing secret, shown this once only.
    ///
    /// # Errors
    /// [`ClientError`] (400 naming an unusable URL, pattern or secret length; 403 without the
    /// admin role).
    pub async fn create_webhook(&self, new: &NewWebhook) -> Result<CreatedWebhook, ClientError> {
        let url = self.url(&["api", "v1", "webhooks"]);
        self.send_json(
            self.request(reqwest::Method::POST, url)
                .timeout(CALL_TIMEOUT)
                .json(new),
        )
        .await
    }

    /// `GET /api/v1/webhooks`, newest first.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn list_webhooks(
        &self,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<WebhookRecord>, ClientError> {
        self.get_page(&["api", "v1", "webhooks"], limit, page_token, &[])
            .await
    }

    /// `GET /api/v1/webhooks/{id}` (without the secret).
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown webhook).
    pub async fn get_webhook(&self, id: &str) -> Result<WebhookRecord, ClientError> {
        let url = self.url(&["api", "v1", "webhooks", id]);
        self.send_json(
            self.request(reqwest::Method::GET, url)
                .timeout(CALL_TIMEOUT),
        )
        .await
    }

    /// `DELETE /api/v1/webhooks/{id}`.
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown webhook).
    pub async fn delete_webhook(&self, id: &str) -> Result<(), ClientError> {
        let url = self.url(&["api", "v1", "webhooks", id]);
        self.send(
            self.request(reqwest::Method::DELETE, url)
                .timeout(CALL_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    /// `GET /api/v1/webhooks/{id}/deliveries?status=`, newest event first.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn webhook_deliveries(
        &self,
        id: &str,
        status: Option<DeliveryStatus>,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<DeliveryRecord>, ClientError> {
        let filters: Vec<(&str, &str)> = status.iter().map(|s| ("status", s.as_str())).collect();
        self.get_page(
            &["api", "v1", "webhooks", id, "deliveries"],
            limit,
            page_token,
            &filters,
        )
        .await
    }

    /// `GET /api/v1/webhooks/{id}/dead-letters`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn webhook_dead_letters(
        &self,
        id: &str,
        limit: u32,
        page_token: Option<&str>,
    ) -> Result<Page<DeliveryRecord>, ClientError> {
        self.get_page(
            &["api", "v1", "webhooks", id, "dead-letters"],
            limit,
            page_token,
            &[],
        )
        .await
    }

    /// `POST /api/v1/webhooks/{id}/dead-letters/{delivery}/replay`: queues a dead letter again.
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown delivery, 409 when it is not dead).
    pub async fn replay_dead_letter(
        &self,
        id: &str,
        delivery: &str,
    ) -> Result<DeliveryRecord, ClientError> {
        let url = self.url(&[
            "api",
            "v1",
            "webhooks",
            id,
            "dead-letters",
            delivery,
            "replay",
        ]);
        self.send_json(
            self.request(reqwest::Method::POST, url)
                .timeout(CALL_TIMEOUT),
        )
        .await
    }
}
