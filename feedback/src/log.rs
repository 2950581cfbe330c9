//! The prediction log: every answered prediction, appended as JSON lines to object storage under
//! `predictions/<endpoint>/<yyyy-mm-dd>/`, and every accepted feedback with what it joined under
//! `feedback/<endpoint>/<yyyy-mm-dd>/`, in batches, off the request path. This is the data the
//! next model trains on (predictions and their labels, joined by id; [`crate::export`]).
//!
//! Serving writes both kinds (`--prediction-log`); the registry writes the feedback posted to it
//! or consumed from RabbitMQ into the same folders, so every accepted feedback is in one place
//! whichever way it came.
//!
//! The request path only hands a record to a bounded queue; when the queue is full (the store is
//! slow or down) the record is dropped and counted, never waited for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use ferry_api::storage::StoreRoot;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::mpsc;

/// Records waiting to be written, at most.
const QUEUE: usize = 8192;
/// Bytes of records waiting to be written, at most (requests can be large).
const QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// A batch is written when it holds this many bytes…
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// …or when its oldest record is this old.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// One answered prediction. `response` (and `request`, with `--log-inputs`) are the JSON bodies
/// exactly as exchanged, spliced into the line without being parsed again.
pub struct PredictionRecord {
    /// The served name (endpoint or model).
    pub endpoint: String,
    /// The version that answered.
    pub version: String,
    /// `stable`, `canary` or `direct`.
    pub route: &'static str,
    /// The id feedback joins on.
    pub id: String,
    /// When the answer was sent.
    pub at: DateTime<Utc>,
    /// Time to answer, in milliseconds.
    pub latency_ms: f64,
    /// The response body (JSON).
    pub response: Bytes,
    /// The request body (JSON), when inputs are logged.
    pub request: Option<Bytes>,
}

/// One accepted feedback, with the prediction it joined: a labelled example once joined with the
/// prediction's logged inputs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedbackRecord {
    /// The served name.
    pub endpoint: String,
    /// The prediction's id.
    pub id: String,
    /// The version that answered it.
    pub version: i64,
    /// `stable` or `canary`.
    pub route: &'static str,
    /// The classes it predicted, when its outputs read as classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<i64>>,
    /// When it was predicted.
    pub predicted_at: DateTime<Utc>,
    /// When the feedback was accepted.
    pub at: DateTime<Utc>,
    /// The business reward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
    /// The true class(es).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<crate::Label>,
    /// Whether the label matched the prediction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
}

impl FeedbackRecord {
    /// The record of `feedback` on endpoint `endpoint`, joined to `prediction` and judged
    /// `correct`, accepted now.
    pub fn joined(
        endpoint: &str,
        feedback: &crate::FeedbackBody,
        prediction: &crate::Prediction,
        correct: Option<bool>,
    ) -> Self {
        FeedbackRecord {
            endpoint: endpoint.to_string(),
            id: feedback.id.clone(),
            version: prediction.version,
            route: prediction.route.as_str(),
            classes: prediction.classes.clone(),
            predicted_at: prediction.at,
            at: Utc::now(),
            reward: feedback.reward,
            label: feedback.label.clone(),
            correct,
        }
    }
}

/// What the log writes: a prediction or a feedback.
enum Record {
    Prediction(PredictionRecord),
    Feedback(FeedbackRecord),
}

impl Record {
    /// The top folder of its kind.
    fn kind(&self) -> &'static str {
        match self {
            Record::Prediction(_) => "predictions",
            Record::Feedback(_) => "feedback",
        }
    }

    fn endpoint(&self) -> &str {
        match self {
            Record::Prediction(r) => &r.endpoint,
            Record::Feedback(r) => &r.endpoint,
        }
    }

    fn at(&self) -> DateTime<Utc> {
        match self {
            Record::Prediction(r) => r.at,
            Record::Feedback(r) => r.at,
        }
    }

    fn size(&self) -> usize {
        match self {
            Record::Prediction(r) => r.size(),
            Record::Feedback(r) => {
                256 + r.id.len() + r.classes.as_ref().map_or(0, |c| 20 * c.len())
            }
        }
    }

    fn line(&self) -> Vec<u8> {
        match self {
            Record::Prediction(r) => r.line(),
            Record::Feedback(r) => {
                let mut line = serde_json::to_vec(r).unwrap_or_default();
                line.push(b'\n');
                line
            }
        }
    }
}

impl PredictionRecord {
    fn size(&self) -> usize {
        self.response.len() + self.request.as_ref().map_or(0, Bytes::len) + 256
    }

    /// The record as one JSON line.
    fn line(&self) -> Vec<u8> {
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let mut line = format!(
            "{{\"id\":{},\"endpoint\":{},\"version\":{},\"route\":{},\"at\":{},\"latency_ms\":{:.3},\"response\":",
            quote(&self.id),
            quote(&self.endpoint),
            quote(&self.version),
            quote(self.route),
            quote(&self.at.to_rfc3339_opts(SecondsFormat::Millis, true)),
            self.latency_ms
        )
        .into_bytes();
        line.extend_from_slice(&self.response);
        if let Some(request) = &self.request {
            line.extend_from_slice(b",\"request\":");
            line.extend_from_slice(request);
        }
        line.extend_from_slice(b"}\n");
        line
    }
}

/// The handle the request path uses.
#[derive(Clone)]
pub struct PredictionLog {
    queue: mpsc::Sender<Record>,
    queued_bytes: Arc<AtomicUsize>,
    outcomes: IntCounterVec,
    feedback_outcomes: IntCounterVec,
    /// Whether request bodies are logged too.
    pub log_inputs: bool,
}

impl PredictionLog {
    /// Starts the writer task on `store`; `replica` keeps object names of replicas apart, and
    /// `component` (`ferry_serving`, `ferry_registry`) prefixes the metrics' names.
    ///
    /// # Errors
    /// When the metrics cannot be registered.
    pub fn start(
        store: StoreRoot,
        replica: String,
        log_inputs: bool,
        registry: &Registry,
        component: &str,
    ) -> prometheus::Result<Self> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                format!("{component}_prediction_log_records_total"),
                "Predictions handed to the prediction log, by outcome: written, dropped (queue full), failed (store error).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        let feedback_outcomes = IntCounterVec::new(
            Opts::new(
                format!("{component}_feedback_log_records_total"),
                "Accepted feedback handed to the log (feedback/<endpoint>/<day>/), by outcome: written, dropped (queue full), failed (store error).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(feedback_outcomes.clone()))?;
        let (queue, records) = mpsc::channel(QUEUE);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_batches(
            store,
            replica,
            records,
            queued_bytes.clone(),
            [outcomes.clone(), feedback_outcomes.clone()],
        ));
        Ok(PredictionLog {
            queue,
            queued_bytes,
            outcomes,
            feedback_outcomes,
            log_inputs,
        })
    }

    /// Hands a record to the writer without waiting; drops (and counts) it when the queue is
    /// full.
    pub fn record(&self, record: PredictionRecord) {
        self.enqueue(Record::Prediction(record), &self.outcomes);
    }

    /// Hands an accepted feedback to the writer, like [`PredictionLog::record`].
    pub fn feedback(&self, record: FeedbackRecord) {
        self.enqueue(Record::Feedback(record), &self.feedback_outcomes);
    }

    fn enqueue(&self, record: Record, outcomes: &IntCounterVec) {
        let size = record.size();
        let before = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if before + size > QUEUE_BYTES || self.queue.try_send(record).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            outcomes.with_label_values(&["dropped"]).inc();
        }
    }
}

#[derive(Default)]
struct Batch {
    lines: Vec<u8>,
    records: u64,
    first_at: Option<DateTime<Utc>>,
}

async fn write_batches(
    store: StoreRoot,
    replica: String,
    mut records: mpsc::Receiver<Record>,
    queued_bytes: Arc<AtomicUsize>,
    outcomes: [IntCounterVec; 2],
) {
    // By (kind, endpoint).
    let mut batches: BTreeMap<(&'static str, String), Batch> = BTreeMap::new();
    let counter = |kind: &str| &outcomes[usize::from(kind == "feedback")];
    let mut sequence: u64 = 0;
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            record = records.recv() => {
                let Some(record) = record else { break };
                queued_bytes.fetch_sub(record.size(), Ordering::Relaxed);
                let key = (record.kind(), record.endpoint().to_string());
                let batch = batches.entry(key.clone()).or_default();
                batch.first_at.get_or_insert(record.at());
                batch.lines.extend_from_slice(&record.line());
                batch.records += 1;
                if batch.lines.len() >= BATCH_BYTES
                    && let Some(full) = batches.remove(&key)
                {
                    sequence += 1;
                    flush(&store, &replica, &key, full, sequence, counter(key.0)).await;
                }
            }
            _ = ticker.tick() => {
                for (key, batch) in std::mem::take(&mut batches) {
                    sequence += 1;
                    flush(&store, &replica, &key, batch, sequence, counter(key.0)).await;
                }
            }
        }
    }
    for (key, batch) in batches {
        sequence += 1;
        flush(&store, &replica, &key, batch, sequence, counter(key.0)).await;
    }
}

async fn flush(
    store: &StoreRoot,
    replica: &str,
    (kind, endpoint): &(&'static str, String),
    batch: Batch,
    sequence: u64,
    outcomes: &IntCounterVec,
) {
    let Some(first) = batch.first_at else {
        return;
    };
    let day = first.format("%Y-%m-%d").to_string();
    // Sortable by time, distinct per replica and batch.
    let file = format!(
        "{}-{}-{sequence:06}.jsonl",
        first.format("%H%M%S%3f"),
        replica.replace(['/', ':'], "_")
    );
    match store
        .put(&[kind, endpoint, &day, &file], Bytes::from(batch.lines))
        .await
    {
        Ok(_) => outcomes
            .with_label_values(&["written"])
            .inc_by(batch.records),
        Err(e) => {
            tracing::warn!(%endpoint, kind, records = batch.records, error = %e, "cannot write a log batch; it is lost");
            outcomes
                .with_label_values(&["failed"])
                .inc_by(batch.records);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_line_with_the_bodies_spliced_in() {
        let record = PredictionRecord {
            endpoint: "fraud".into(),
            version: "2".into(),
            route: "canary",
            id: "r\"1".into(),
            at: DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            latency_ms: 1.5,
            response: Bytes::from_static(br#"{"outputs":[]}"#),
            request: Some(Bytes::from_static(br#"{"inputs":[]}"#)),
        };
        let line = record.line();
        assert_eq!(line.last(), Some(&b'\n'));
        let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed["id"], "r\"1");
        assert_eq!(parsed["route"], "canary");
        assert_eq!(parsed["response"]["outputs"], serde_json::json!([]));
        assert_eq!(parsed["request"]["inputs"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn records_are_written_in_batches_and_a_full_queue_drops_instead_of_waiting() {
        let store = StoreRoot::in_memory();
        let registry = Registry::new();
        let log = PredictionLog::start(
            store.clone(),
            "replica-1".into(),
            false,
            &registry,
            "ferry_serving",
        )
        .unwrap();
        for i in 0..3 {
            log.record(PredictionRecord {
                endpoint: "fraud".into(),
                version: "1".into(),
                route: "stable",
                id: format!("id-{i}"),
                at: Utc::now(),
                latency_ms: 0.1,
                response: Bytes::from_static(b"{}"),
                request: None,
            });
        }
        // The ticker flushes within FLUSH_EVERY.
        let mut objects = Vec::new();
        for _ in 0..100 {
            objects = futures::TryStreamExt::try_collect(store.store.list(Some(&store.root)))
                .await
                .unwrap();
            if !objects.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(objects.len(), 1, "{objects:?}");
        let key = objects[0].location.to_string();
        assert!(key.starts_with("predictions/fraud/"), "{key}");
        let body = store
            .store
            .get(&objects[0].location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 3);
        // A record larger than the byte bound is dropped at once.
        log.record(PredictionRecord {
            endpoint: "fraud".into(),
            version: "1".into(),
            route: "stable",
            id: "huge".into(),
            at: Utc::now(),
            latency_ms: 0.1,
            response: Bytes::from(vec![b' '; QUEUE_BYTES + 1]),
            request: None,
        });
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(text.contains("outcome=\"dropped\"} 1"), "{text}");
    }
}
