//! The webhook worker: fan-out and sending rounds, and the loop that repeats them.

use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use reqwest::header::{CONTENT_TYPE, HeaderValue};

use super::backoff::random_retry_delay;
use super::destination::{DestinationError, GuardedResolver, refused_literal};
use super::metrics::WebhookMetrics;
use super::signature::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign};
use super::{WebhookConfig, display_url};
use crate::error::{Error, Result};
use crate::store::MetadataStore;
use crate::store::webhooks::{ClaimedDelivery, DueDelivery, Outcome};

/// Deliveries of one webhook looked at per round: enough to drain a backlog quickly, few enough
/// that a backlog of one webhook does not starve the others.
const PER_WEBHOOK: u32 = 16;

/// How long past the request timeout a claim holds: covers recording the outcome.
const CLAIM_GRACE: Duration = Duration::from_secs(30);

/// The longest `last_error` kept.
const MAX_ERROR_LEN: usize = 300;

/// How often the loop refreshes the pending and dead-letter gauges.
const GAUGE_EVERY: Duration = Duration::from_secs(10);

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundSummary {
    /// Deliveries queued by the fan-out.
    pub queued: u64,
    /// Requests sent.
    pub attempted: usize,
    /// Requests answered 2xx in time.
    pub delivered: usize,
    /// Requests that failed and will be retried.
    pub retrying: usize,
    /// Requests that failed for the last time: their deliveries are now dead letters.
    pub dead: usize,
}

impl RoundSummary {
    fn add(&mut self, other: RoundSummary) {
        self.queued += other.queued;
        self.attempted += other.attempted;
        self.delivered += other.delivered;
        self.retrying += other.retrying;
        self.dead += other.dead;
    }
}

/// Fans events out to webhooks and sends due deliveries. Cheap to share by reference; one per
/// process is enough, and several replicas may run one each against the same database.
pub struct WebhookWorker {
    store: MetadataStore,
    config: WebhookConfig,
    http: reqwest::Client,
    metrics: WebhookMetrics,
}

impl std::fmt::Debug for WebhookWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookWorker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WebhookWorker {
    /// A worker over `store`, registering its metrics in `prometheus`.
    ///
    /// # Errors
    /// [`Error::Internal`] when the metrics are already registered or the HTTP client cannot be
    /// built.
    pub fn new(
        store: MetadataStore,
        config: WebhookConfig,
        prometheus: &prometheus::Registry,
    ) -> Result<Self> {
        let metrics = WebhookMetrics::register(prometheus)
            .map_err(|e| Error::Internal(format!("registering webhook metrics: {e}")))?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)));
        if !config.allow_private {
            http = http.dns_resolver(GuardedResolver::new(
                config.request_timeout.min(Duration::from_secs(10)),
            ));
        }
        let http = http
            // A redirect is not an acknowledgement; following it could also carry the signed
            // body somewhere the subscriber did not name.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ferry-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("building the webhook HTTP client: {e}")))?;
        Ok(WebhookWorker {
            store,
            config,
            http,
            metrics,
        })
    }

    /// The settings.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Queues deliveries for events committed since the last fan-out (up to `batch` events).
    /// Returns how many were queued.
    ///
    /// # Errors
    /// [`Error::Database`] and friends; nothing is queued then, and the next call retries.
    pub async fn fan_out_once(&self) -> Result<u64> {
        let queued = self.store.fan_out_webhooks(self.config.batch).await?;
        self.metrics.queued.inc_by(queued);
        Ok(queued)
    }

    /// Sends the deliveries due at `now`, `concurrency` webhooks at a time, each webhook's in
    /// event order. A webhook whose attempt fails gets no more attempts this round.
    ///
    /// `now` decides what is due and when retries are scheduled (tests pass a clock of their
    /// own, so they never sleep through a backoff); signatures always carry the real time,
    /// since receivers compare it with their clock.
    ///
    /// # Errors
    /// [`Error::Database`] when the due deliveries cannot be read. A failure to record one
    /// outcome is logged and leaves that delivery claimed until the claim expires.
    pub async fn send_due_once(&self, now: DateTime<Utc>) -> Result<RoundSummary> {
        let due = self
            .store
            .due_deliveries(now, PER_WEBHOOK, self.config.batch)
            .await?;
        let started = Instant::now();
        let summaries: Vec<RoundSummary> = futures::stream::iter(group_by_webhook(due))
            .map(|ids| self.send_group(ids, now, started))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut total = RoundSummary::default();
        for s in summaries {
            total.add(s);
        }
        Ok(total)
    }

    /// One fan-out and one sending round, then a refresh of the gauges.
    ///
    /// # Errors
    /// As [`WebhookWorker::fan_out_once`] and [`WebhookWorker::send_due_once`].
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<RoundSummary> {
        let queued = self.fan_out_once().await?;
        let mut summary = self.send_due_once(now).await?;
        summary.queued = queued;
        self.refresh_gauges().await?;
        Ok(summary)
    }

    /// Sets the pending and dead-letter gauges from the database.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn refresh_gauges(&self) -> Result<()> {
        let (pending, dead) = self.store.delivery_counts().await?;
        self.metrics.pending.set(pending);
        self.metrics.dead_letters.set(dead);
        Ok(())
    }

    /// Runs rounds forever: at once while there is work, otherwise when this process commits an
    /// event or after `poll_interval` (for retries coming due and other replicas' events).
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(
            replica = %self.config.replica,
            concurrency = self.config.concurrency,
            max_attempts = self.config.max_attempts,
            "webhook delivery started"
        );
        let mut wake = self.store.subscribe();
        let mut gauges_at: Option<Instant> = None;
        // A round (fan-out, then sending what is due) always completes: stopping happens between
        // rounds, so no delivery is left claimed mid-send.
        while !stop.is_cancelled() {
            let busy = match self.fan_out_once().await {
                Ok(queued) => queued > 0,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "webhook fan-out failed; retrying");
                    false
                }
            };
            let busy = match self.send_due_once(Utc::now()).await {
                // Failures alone do not count as progress: a receiver that is down is not
                // hammered in a tight loop.
                Ok(s) => busy || s.delivered > 0,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "webhook sending failed; retrying");
                    busy
                }
            };
            if gauges_at.is_none_or(|at| at.elapsed() >= GAUGE_EVERY) {
                gauges_at = Some(Instant::now());
                if let Err(e) = self.refresh_gauges().await {
                    tracing::debug!(error = %error_chain(&e), "refreshing webhook gauges failed");
                }
            }
            if !busy {
                wake.borrow_and_update();
                tokio::select! {
                    () = stop.cancelled() => {}
                    changed = tokio::time::timeout(self.config.poll_interval, wake.changed()) => {
                        if changed.is_ok_and(|changed| changed.is_err()) {
                            // The store is gone (cannot happen while we hold it); never spin.
                            tokio::time::sleep(self.config.poll_interval).await;
                        }
                    }
                }
            }
        }
        tracing::info!("webhook delivery stopped");
    }

    async fn send_group(
        &self,
        ids: Vec<String>,
        now: DateTime<Utc>,
        started: Instant,
    ) -> RoundSummary {
        let mut summary = RoundSummary::default();
        for id in ids {
            let at = now + elapsed(started);
            let until = at + delta(self.config.request_timeout + CLAIM_GRACE);
            let claimed = match self
                .store
                .claim_delivery(&id, &self.config.replica, at, until)
                .await
            {
                Ok(Some(claimed)) => claimed,
                // Another replica has it, or it was already handled.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(delivery = %id, error = %error_chain(&e), "claiming a webhook delivery failed");
                    break;
                }
            };
            summary.attempted += 1;
            let result = self.attempt(&claimed).await;
            let finished_at = now + elapsed(started);
            let succeeded = result.is_ok();
            let outcome = self.outcome(&claimed, result, finished_at);
            match &outcome {
                Outcome::Delivered { .. } => summary.delivered += 1,
                Outcome::Failed { dead: true, .. } => summary.dead += 1,
                Outcome::Failed { .. } => summary.retrying += 1,
            }
            match self
                .store
                .finish_delivery(&claimed, &self.config.replica, finished_at, &outcome)
                .await
            {
                Ok(true) => self.log_outcome(&claimed, &outcome, finished_at),
                Ok(false) => tracing::warn!(
                    webhook = %claimed.webhook,
                    delivery = %claimed.id,
                    "the claim on a webhook delivery expired before its outcome was recorded; \
                     the replica that took it over decides"
                ),
                Err(e) => tracing::warn!(
                    webhook = %claimed.webhook,
                    delivery = %claimed.id,
                    error = %error_chain(&e),
                    "recording a webhook delivery's outcome failed; it is retried when its claim expires"
                ),
            }
            if !succeeded {
                break;
            }
        }
        summary
    }

    /// Sends one attempt: `Ok(status)` on a 2xx within the timeout.
    async fn attempt(&self, claimed: &ClaimedDelivery) -> std::result::Result<u16, Failure> {
        let body = serde_json::to_vec(&claimed.event).map_err(|e| Failure {
            status: None,
            error: format!("the event could not be serialized: {e}"),
            kind: "transport_error",
        })?;
        if !self.config.allow_private
            && let Some(refused) = url::Url::parse(&claimed.url)
                .ok()
                .and_then(|u| refused_literal(&u))
        {
            // Created while private destinations were allowed; not sent now that they are not.
            self.metrics
                .attempts
                .with_label_values(&["transport_error"])
                .inc();
            return Err(Failure {
                status: None,
                error: refused,
                kind: "transport_error",
            });
        }
        let signature = sign(claimed.secret.expose(), Utc::now().timestamp(), &body);
        let started = Instant::now();
        let sent = self
            .http
            .post(&claimed.url)
            .timeout(self.config.request_timeout)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(DELIVERY_HEADER, &claimed.id)
            .header(EVENT_HEADER, &claimed.event.kind)
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        let result = match sent {
            Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
            Ok(response) => {
                let status = response.status();
                Err(Failure {
                    status: Some(status.as_u16()),
                    error: format!("the receiver answered HTTP {status}"),
                    kind: "http_error",
                })
            }
            Err(e) if e.is_timeout() => Err(Failure {
                status: None,
                error: format!(
                    "no answer within {} s",
                    self.config.request_timeout.as_secs_f64()
                ),
                kind: "timeout",
            }),
            Err(e) => {
                // The full cause goes to the log; the deliveries API (which an admin reads, and
                // which must not turn the registry into a port scanner) gets its category.
                let error = coarse_transport_error(&e);
                tracing::info!(
                    webhook = %claimed.webhook, delivery = %claimed.id,
                    url = %display_url(&claimed.url), cause = %transport_error(e),
                    "webhook attempt failed before an answer"
                );
                Err(Failure {
                    status: None,
                    error,
                    kind: "transport_error",
                })
            }
        };
        let kind = match &result {
            Ok(_) => "success",
            Err(f) => f.kind,
        };
        self.metrics.attempts.with_label_values(&[kind]).inc();
        self.metrics
            .duration
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    fn outcome(
        &self,
        claimed: &ClaimedDelivery,
        result: std::result::Result<u16, Failure>,
        now: DateTime<Utc>,
    ) -> Outcome {
        match result {
            Ok(status) => Outcome::Delivered { status },
            Err(failure) => {
                let attempts = u32::try_from(claimed.attempts + 1).unwrap_or(u32::MAX);
                let delay =
                    random_retry_delay(self.config.retry_base, self.config.retry_cap, attempts);
                Outcome::Failed {
                    status: failure.status,
                    error: truncate(failure.error, MAX_ERROR_LEN),
                    next_attempt_at: now + delta(delay),
                    dead: attempts >= self.config.max_attempts,
                }
            }
        }
    }

    fn log_outcome(&self, claimed: &ClaimedDelivery, outcome: &Outcome, now: DateTime<Utc>) {
        let attempt = claimed.attempts + 1;
        let url = display_url(&claimed.url);
        match outcome {
            Outcome::Delivered { status } => {
                self.metrics
                    .deliveries
                    .with_label_values(&["delivered"])
                    .inc();
                tracing::info!(
                    webhook = %claimed.webhook, delivery = %claimed.id, event = claimed.event.id,
                    event_type = %claimed.event.kind, %url, status, attempt,
                    "webhook delivered"
                );
            }
            Outcome::Failed {
                error, dead: true, ..
            } => {
                self.metrics.deliveries.with_label_values(&["dead"]).inc();
                tracing::warn!(
                    webhook = %claimed.webhook, delivery = %claimed.id, event = claimed.event.id,
                    event_type = %claimed.event.kind, %url, attempt, %error,
                    "webhook delivery failed for the last time; moved to the dead-letter list"
                );
            }
            Outcome::Failed {
                error,
                next_attempt_at,
                ..
            } => {
                let retry_in_ms = (*next_attempt_at - now).num_milliseconds();
                tracing::warn!(
                    webhook = %claimed.webhook, delivery = %claimed.id, event = claimed.event.id,
                    event_type = %claimed.event.kind, %url, attempt, %error, retry_in_ms,
                    "webhook delivery failed; will retry"
                );
            }
        }
    }
}

/// Why an attempt failed, for `last_error` and the metrics.
struct Failure {
    status: Option<u16>,
    error: String,
    kind: &'static str,
}

/// The due deliveries per webhook, each webhook's in event order, webhooks in the order of
/// their oldest due event.
fn group_by_webhook(due: Vec<DueDelivery>) -> Vec<Vec<String>> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for d in due {
        match groups.iter_mut().find(|(hook, _)| *hook == d.webhook) {
            Some((_, ids)) => ids.push(d.id),
            None => groups.push((d.webhook, vec![d.id])),
        }
    }
    groups.into_iter().map(|(_, ids)| ids).collect()
}

/// What `last_error` says about a transport error: its category, or the destination rule that
/// refused it, never the network's own words (which say which ports are open where).
fn coarse_transport_error(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<DestinationError>() {
            return refused.to_string();
        }
        source = cause.source();
    }
    if e.is_connect() {
        "could not connect to the receiver".into()
    } else {
        "the request failed before the receiver answered".into()
    }
}

/// A transport error without the URL (it may carry a token in its query) and with its causes,
/// which say what actually happened ("connection refused").
fn transport_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn error_chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn elapsed(started: Instant) -> TimeDelta {
    delta(started.elapsed())
}

/// A duration as a [`TimeDelta`], at most a year: no delay here is longer, and the cap keeps
/// `DateTime + TimeDelta` from overflowing.
fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d.min(Duration::from_secs(365 * 24 * 3600))).unwrap_or(TimeDelta::zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_deliveries_are_grouped_per_webhook_in_order() {
        let due = [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("b", "5")]
            .into_iter()
            .map(|(w, id)| DueDelivery {
                id: id.into(),
                webhook: w.into(),
            })
            .collect();
        assert_eq!(
            group_by_webhook(due),
            vec![vec!["1", "3"], vec!["2", "5"], vec!["4"]]
        );
    }

    #[test]
    fn long_errors_are_truncated_on_a_character_boundary() {
        let t = truncate("é".repeat(200), 5);
        assert_eq!(t, "éé…");
    }
}
