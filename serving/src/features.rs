//! Online features at inference. A version whose lineage names a feature view takes, in place of
//! the input the view fills, a `BYTES` input named after the view's entity key (e.g.
//! `customer_id`, shape `[N]`): serving reads the N rows from the online store and builds the
//! `[N, features]` tensor in the view's order, converted to the input's type. A request that
//! sends the tensor itself is still answered, as before.
//!
//! An entity the store has no row for is refused (400) naming it: answering with made-up
//! defaults would hide a materialization that did not run. A missing value inside a row is NaN in
//! a floating-point tensor (what tree and imputing models take as "missing") and refused for an
//! integer or boolean one.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_api::features::{FeatureDtype, FeatureViewRecord};
use ferry_api::onnx::{Dim, ModelSignature, TensorSpec};
use ferry_api::skew::{MAX_REPORT_ROWS, ROWS_PER_REQUEST, SampledRow, ServedRows, entity_hash};
use ferry_features::{LookupError, OnlineStore, Value, as_number};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::SharedCatalog;

use crate::error::ServingError;
use crate::runtime::{RuntimeError, Tensor, TensorData};

/// Most missing entities named in an error.
const NAMED: usize = 10;

/// Most values (entities × features) one request's lookup may read: the rows read back and the
/// tensor built from them stay within a few tens of MiB whatever a small request names.
pub const MAX_LOOKUP_CELLS: usize = 1 << 20;

/// How a version's requests name entities instead of sending one of its inputs.
#[derive(Debug)]
pub struct FeatureInput {
    /// The view version the model was trained with.
    pub view: FeatureViewRecord,
    /// The position in the model's signature of the input the view fills.
    pub input: usize,
    /// What requests are decoded against: the model's signature with that input replaced by
    /// the entity key's `BYTES` input.
    pub request_signature: ModelSignature,
    /// The model input's name.
    input_name: String,
    /// Its element type.
    datatype: String,
    dtypes: Vec<FeatureDtype>,
}

impl FeatureInput {
    /// Which input of `signature` the view fills: the first of rank 2 whose second dimension
    /// is the number of features and whose type is FP32, FP64, INT32, INT64 or BOOL; else the
    /// first such input whose second dimension is not fixed.
    ///
    /// # Errors
    /// Why the view fits no input, for the log (the version then serves without lookups).
    pub fn plan(view: FeatureViewRecord, signature: &ModelSignature) -> Result<Self, String> {
        let width = view.spec.features.len() as i64;
        let typed = |spec: &TensorSpec| {
            matches!(
                spec.datatype.as_str(),
                "FP32" | "FP64" | "INT32" | "INT64" | "BOOL"
            )
        };
        let exact = |spec: &TensorSpec| {
            typed(spec) && matches!(spec.shape.as_deref(), Some([_, Dim::Fixed(w)]) if *w == width)
        };
        let open = |spec: &TensorSpec| {
            typed(spec)
                && matches!(spec.shape.as_deref(), Some([_, w]) if !matches!(w, Dim::Fixed(_)))
        };
        let found = signature
            .inputs
            .iter()
            .position(exact)
            .or_else(|| signature.inputs.iter().position(open));
        let Some(input) = found else {
            return Err(format!(
                "no input of the model is [rows, {width}] of FP32, FP64, INT32, INT64 or BOOL \
                 (feature view {}:{} has {width} features)",
                view.name, view.version
            ));
        };
        if signature.inputs.iter().any(|i| i.name == view.spec.entity) {
            return Err(format!(
                "the model already has an input named `{}`, the view's entity key",
                view.spec.entity
            ));
        }
        let mut request_signature = signature.clone();
        let spec = &mut request_signature.inputs[input];
        let input_name = std::mem::replace(&mut spec.name, view.spec.entity.clone());
        let datatype = std::mem::replace(&mut spec.datatype, "BYTES".into());
        // One entity per row: the batch dimension stays what the model says.
        let rows = spec
            .shape
            .as_ref()
            .and_then(|s| s.first().cloned())
            .unwrap_or(Dim::Unknown);
        spec.shape = Some(vec![rows]);
        Ok(FeatureInput {
            dtypes: view.spec.features.iter().map(|f| f.dtype).collect(),
            view,
            input,
            request_signature,
            input_name,
            datatype,
        })
    }

    /// Replaces the entity tensor at [`Self::input`] of `inputs` by the features of its
    /// entities read from the online store, waiting at most `timeout`. The rows of entities in
    /// the view's skew sample go to the registry's skew check (a few per request).
    ///
    /// # Errors
    /// [`ServingError::BadRequest`] for entities without a row (named) or unusable values,
    /// [`ServingError::Unavailable`] when the store cannot answer now.
    pub async fn fill(
        &self,
        online: &OnlineFeatures,
        inputs: &mut [Tensor],
        timeout: Duration,
    ) -> Result<(), ServingError> {
        let Some(TensorData::String(entities)) = inputs.get(self.input).map(Tensor::data) else {
            return Err(ServingError::BadRequest(format!(
                "input `{}` must hold the entity keys as BYTES",
                self.view.spec.entity
            )));
        };
        if timeout.is_zero() {
            return Err(ServingError::Runtime(RuntimeError::DeadlineExceeded));
        }
        let cells = entities.len().saturating_mul(self.dtypes.len());
        if cells > MAX_LOOKUP_CELLS {
            return Err(ServingError::BadRequest(format!(
                "input `{}` names {} entities of {} features each: at most {MAX_LOOKUP_CELLS} \
                 values are looked up for one request",
                self.view.spec.entity,
                entities.len(),
                self.dtypes.len()
            )));
        }
        let entities = entities.clone();
        let started = std::time::Instant::now();
        let looked_up = online
            .store
            .lookup(
                &self.view.name,
                self.view.version,
                &self.dtypes,
                &entities,
                timeout,
            )
            .await;
        online.metrics.observe(&looked_up, started.elapsed());
        let rows = looked_up.map_err(|e| match e {
            LookupError::Unavailable { retry_after, .. } => ServingError::Unavailable {
                message: e.to_string(),
                retry_after,
            },
            LookupError::Corrupt { .. } => ServingError::Unavailable {
                message: format!(
                    "{e}; materialize the view again with `ferry features materialize {}:{}`",
                    self.view.name, self.view.version
                ),
                retry_after: Duration::from_secs(60),
            },
            LookupError::BadEntities(m) => {
                ServingError::BadRequest(format!("input `{}`: {m}", self.view.spec.entity))
            }
            LookupError::DeadlineExceeded => ServingError::Runtime(RuntimeError::DeadlineExceeded),
        })?;
        if let Some(bound) = self.view.sample_bound {
            let sampled = rows
                .iter()
                .zip(&entities)
                .filter(|(_, e)| entity_hash(e) <= bound)
                .filter_map(|(r, e)| r.as_ref().map(|r| (r, e)))
                .take(ROWS_PER_REQUEST);
            for (row, entity) in sampled {
                online.offer(
                    &self.view,
                    SampledRow {
                        entity: entity.clone(),
                        values: self
                            .dtypes
                            .iter()
                            .zip(row)
                            .map(|(d, v)| as_number(*d, *v))
                            .collect(),
                    },
                );
            }
        }
        let missing = rows.iter().any(Option::is_none);
        let outcome = if missing { "missing" } else { "ok" };
        online.metrics.lookups.with_label_values(&[outcome]).inc();
        let assembled = self.assemble(&entities, rows);
        inputs[self.input] = assembled?;
        Ok(())
    }

    /// The `[rows, features]` tensor of the model's input from the rows read.
    fn assemble(
        &self,
        entities: &[String],
        rows: Vec<Option<Vec<Option<Value>>>>,
    ) -> Result<Tensor, ServingError> {
        let missing: Vec<&str> = rows
            .iter()
            .zip(entities)
            .filter(|(r, _)| r.is_none())
            .map(|(_, e)| e.as_str())
            .collect();
        if !missing.is_empty() {
            let shown: Vec<String> = missing
                .iter()
                .take(NAMED)
                .map(|e| ferry_api::names::printable(e))
                .collect();
            let more = if missing.len() > NAMED {
                format!(" and {} more", missing.len() - NAMED)
            } else {
                String::new()
            };
            return Err(ServingError::BadRequest(format!(
                "the online store has no features for {} {}{more} (feature view {}:{}; \
                 materialize them with `ferry features materialize`)",
                self.view.spec.entity,
                shown.join(", "),
                self.view.name,
                self.view.version
            )));
        }
        let width = self.dtypes.len();
        let n = rows.len();
        let missing_value = |i: usize, entity: &str| {
            ServingError::BadRequest(format!(
                "feature `{}` of {} {} has no value online, and input `{}` is {}: only \
                 floating-point inputs take a missing value (as NaN)",
                self.view.spec.features[i].name,
                self.view.spec.entity,
                ferry_api::names::printable(entity),
                self.input_name,
                self.datatype
            ))
        };
        let float = |v: &Option<Value>| match v {
            Some(Value::Float(f)) => *f,
            Some(Value::Int(i)) => *i as f64,
            Some(Value::Bool(b)) => f64::from(u8::from(*b)),
            None => f64::NAN,
        };
        let int = |v: &Option<Value>, i: usize, entity: &str| match v {
            Some(Value::Int(n)) => Ok(*n),
            Some(Value::Float(f)) => Ok(*f as i64),
            Some(Value::Bool(b)) => Ok(i64::from(*b)),
            None => Err(missing_value(i, entity)),
        };
        // Every row is present (checked above): the cells in row-major order.
        let cells = || rows.iter().flatten().flat_map(|r| r.iter());
        let data: TensorData = match self.datatype.as_str() {
            "FP32" => cells()
                .map(|v| float(v) as f32)
                .collect::<Vec<f32>>()
                .into(),
            "FP64" => cells().map(float).collect::<Vec<f64>>().into(),
            "INT32" | "INT64" | "BOOL" => {
                let mut ints = Vec::with_capacity(n * width);
                for (row, entity) in rows.iter().flatten().zip(entities) {
                    for (i, v) in row.iter().enumerate() {
                        ints.push(int(v, i, entity)?);
                    }
                }
                match self.datatype.as_str() {
                    "INT32" => ints
                        .into_iter()
                        .map(|n| n as i32)
                        .collect::<Vec<i32>>()
                        .into(),
                    "INT64" => ints.into(),
                    _ => ints
                        .into_iter()
                        .map(|n| n != 0)
                        .collect::<Vec<bool>>()
                        .into(),
                }
            }
            other => {
                return Err(ServingError::BadRequest(format!(
                    "input `{}` is {other}, which features cannot fill",
                    self.input_name
                )));
            }
        };
        Tensor::new(self.input_name.clone(), vec![n, width], data)
            .map_err(|e| ServingError::BadRequest(e.to_string()))
    }
}

/// Rows waiting to be sent to the registry.
const SAMPLE_QUEUE: usize = 4096;

/// The online store as serving uses it: the store, the queue of rows for the skew check, and
/// the metrics.
pub struct OnlineFeatures {
    /// The store.
    pub store: OnlineStore,
    queue: mpsc::Sender<(String, i64, SampledRow)>,
    metrics: FeatureMetrics,
}

/// Sends the rows read for sampled entities to the registry's skew check, off the request path:
/// the requests put them in a bounded queue (a full queue drops the row and counts it in
/// `ferry_serving_feature_skew_rows_dropped_total`), and this task posts what gathered once per report
/// interval.
pub struct SampleSender {
    queue: mpsc::Receiver<(String, i64, SampledRow)>,
}

/// `ferry_serving_feature_lookups_total{outcome}` (`ok`, `missing`: an entity had no row,
/// `unavailable`: the store failed or the breaker was open, `corrupt`, `bad_request`),
/// `ferry_serving_feature_lookup_duration_seconds` and `ferry_serving_feature_skew_rows_dropped_total`.
struct FeatureMetrics {
    lookups: prometheus::IntCounterVec,
    duration: prometheus::Histogram,
    dropped: prometheus::IntCounter,
}

impl FeatureMetrics {
    fn observe<T>(&self, result: &Result<T, LookupError>, took: Duration) {
        // A lookup that answered is counted once its rows are known to be all there.
        let outcome = match result {
            Ok(_) => None,
            Err(LookupError::Unavailable { .. }) => Some("unavailable"),
            Err(LookupError::Corrupt { .. }) => Some("corrupt"),
            Err(LookupError::BadEntities(_)) => Some("bad_request"),
            Err(LookupError::DeadlineExceeded) => Some("deadline"),
        };
        if let Some(outcome) = outcome {
            self.lookups.with_label_values(&[outcome]).inc();
        }
        self.duration.observe(took.as_secs_f64());
    }
}

impl OnlineFeatures {
    /// Serving's use of `store`, its metrics registered in `registry`, and the task that sends
    /// the skew check's rows once the catalog is known.
    ///
    /// # Errors
    /// When the metrics are already registered.
    pub fn new(
        store: OnlineStore,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<(OnlineFeatures, SampleSender)> {
        let lookups = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "ferry_serving_feature_lookups_total",
                "Lookups of requests' entities in the online feature store, by outcome (ok, missing, unavailable, corrupt, bad_request).",
            ),
            &["outcome"],
        )?;
        let duration = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "ferry_serving_feature_lookup_duration_seconds",
                "Time of one request's lookup in the online feature store.",
            )
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
        )?;
        let dropped = prometheus::IntCounter::new(
            "ferry_serving_feature_skew_rows_dropped_total",
            "Rows read for the skew check's sampled entities that were dropped because the queue to the registry was full.",
        )?;
        registry.register(Box::new(lookups.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        let (tx, rx) = mpsc::channel(SAMPLE_QUEUE);
        Ok((
            OnlineFeatures {
                store,
                queue: tx,
                metrics: FeatureMetrics {
                    lookups,
                    duration,
                    dropped,
                },
            },
            SampleSender { queue: rx },
        ))
    }

    fn offer(&self, view: &FeatureViewRecord, row: SampledRow) {
        if self
            .queue
            .try_send((view.name.clone(), view.version, row))
            .is_err()
        {
            self.metrics.dropped.inc();
        }
    }
}

impl SampleSender {
    /// Posts the gathered rows to `catalog` every `interval` until `stop`.
    pub async fn run(
        mut self,
        catalog: SharedCatalog,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut by_view: BTreeMap<(String, i64), Vec<SampledRow>> = BTreeMap::new();
            let mut taken = 0;
            while taken < SAMPLE_QUEUE {
                let Ok((name, version, row)) = self.queue.try_recv() else {
                    break;
                };
                taken += 1;
                let rows = by_view.entry((name, version)).or_default();
                if rows.len() < MAX_REPORT_ROWS {
                    rows.push(row);
                }
            }
            for ((name, version), rows) in by_view {
                let n = rows.len();
                let call = catalog.served_features(&name, version, ServedRows { rows });
                match tokio::time::timeout(Duration::from_secs(30), call).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(view = %name, version, rows = n, error = %e, "the registry did not take served feature rows for the skew check; they are dropped");
                    }
                    Err(_) => {
                        tracing::warn!(view = %name, version, rows = n, "the registry did not answer within 30s; served feature rows for the skew check are dropped");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use ferry_api::features::{FeatureField, FeatureViewSpec};

    fn view(features: &[(&str, FeatureDtype)]) -> FeatureViewRecord {
        FeatureViewRecord {
            name: "customers".into(),
            version: 3,
            sha256: "0".repeat(64),
            spec: FeatureViewSpec {
                entity: "customer_id".into(),
                features: features
                    .iter()
                    .map(|(n, d)| FeatureField {
                        name: (*n).into(),
                        dtype: *d,
                    })
                    .collect(),
                source: None,
                description: None,
            },
            created_at: chrono::Utc::now(),
            sample_bound: None,
        }
    }

    fn signature(inputs: &[(&str, &str, Vec<Dim>)]) -> ModelSignature {
        ModelSignature {
            inputs: inputs
                .iter()
                .map(|(n, t, s)| TensorSpec {
                    name: (*n).into(),
                    datatype: (*t).into(),
                    shape: Some(s.clone()),
                })
                .collect(),
            outputs: Vec::new(),
            ir_version: 8,
            opsets: Vec::new(),
            producer: None,
        }
    }

    const TWO: [(&str, FeatureDtype); 2] =
        [("age", FeatureDtype::Fp32), ("orders", FeatureDtype::Int64)];

    #[test]
    fn the_view_fills_the_first_input_of_its_width_and_requests_name_the_entity_key() {
        let sig = signature(&[
            ("ids", "BYTES", vec![Dim::Unknown]),
            ("wide", "FP32", vec![Dim::Unknown, Dim::Fixed(5)]),
            (
                "x",
                "FP32",
                vec![Dim::Symbolic("batch".into()), Dim::Fixed(2)],
            ),
        ]);
        let f = FeatureInput::plan(view(&TWO), &sig).unwrap();
        assert_eq!(f.input, 2);
        // An input of exactly the view's width wins over an earlier one of open width; the batch
        // dimension is kept.
        let sig2 = signature(&[
            (
                "tokens",
                "INT64",
                vec![Dim::Unknown, Dim::Symbolic("seq".into())],
            ),
            ("x", "FP32", vec![Dim::Fixed(1), Dim::Fixed(2)]),
        ]);
        let f2 = FeatureInput::plan(view(&TWO), &sig2).unwrap();
        assert_eq!(f2.input, 1);
        assert_eq!(
            f2.request_signature.inputs[1].shape,
            Some(vec![Dim::Fixed(1)])
        );
        let spec = &f.request_signature.inputs[2];
        assert_eq!(
            (spec.name.as_str(), spec.datatype.as_str()),
            ("customer_id", "BYTES")
        );
        assert_eq!(f.request_signature.inputs[1], sig.inputs[1]);
        // No input of the view's width, or an input already named like the entity key.
        let narrow = signature(&[("x", "FP32", vec![Dim::Unknown, Dim::Fixed(3)])]);
        assert!(FeatureInput::plan(view(&TWO), &narrow).is_err());
        let clash = signature(&[
            ("customer_id", "BYTES", vec![Dim::Unknown]),
            ("x", "FP32", vec![Dim::Unknown, Dim::Unknown]),
        ]);
        assert!(
            FeatureInput::plan(view(&TWO), &clash)
                .unwrap_err()
                .contains("entity key")
        );
    }

    #[test]
    fn rows_become_the_input_tensor_in_the_view_order_and_type() {
        let sig = signature(&[("x", "FP32", vec![Dim::Unknown, Dim::Fixed(2)])]);
        let f = FeatureInput::plan(view(&TWO), &sig).unwrap();
        let t = f
            .assemble(
                &["a".into(), "b".into()],
                vec![
                    Some(vec![Some(Value::Float(31.5)), Some(Value::Int(4))]),
                    Some(vec![None, Some(Value::Int(0))]),
                ],
            )
            .unwrap();
        assert_eq!(t.name(), "x");
        assert_eq!(t.shape(), &[2, 2]);
        let TensorData::F32(v) = t.data() else {
            panic!("{:?}", t.data())
        };
        assert_eq!(&v[..2], &[31.5, 4.0]);
        assert!(v[2].is_nan());
        assert_eq!(v[3], 0.0);
    }

    #[test]
    fn missing_entities_are_named_and_an_integer_input_refuses_a_missing_value() {
        let sig = signature(&[("x", "INT64", vec![Dim::Unknown, Dim::Unknown])]);
        let f = FeatureInput::plan(view(&TWO), &sig).unwrap();
        let e = f
            .assemble(
                &["a".into(), "ghost".into()],
                vec![Some(vec![Some(Value::Int(1)), Some(Value::Int(2))]), None],
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("no features for customer_id `ghost`"), "{e}");
        assert!(!e.contains("`a`"), "{e}");
        let e = f
            .assemble(&["a".into()], vec![Some(vec![None, Some(Value::Int(2))])])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("feature `age` of customer_id `a` has no value"),
            "{e}"
        );
        let t = f
            .assemble(
                &["a".into()],
                vec![Some(vec![Some(Value::Float(2.9)), Some(Value::Int(2))])],
            )
            .unwrap();
        assert_eq!(t.data(), &TensorData::I64(vec![2, 2]));
    }
}
