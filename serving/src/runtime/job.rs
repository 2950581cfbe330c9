//! A request admitted to a model's queue: its inputs, its deadline, its caller's span and the
//! channel its answer goes back on.

use std::time::Instant;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tracing::Span;

use super::error::RuntimeError;
use super::model::ModelInfo;
use super::tensor::{DataType, Tensor};

/// What a request's answer is.
pub(crate) type Answer = Result<Vec<Tensor>, RuntimeError>;

/// Identifies requests that can share a run: same input names, datatypes and dimensions after
/// the first, in name order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BatchKey(Vec<(String, DataType, Vec<usize>)>);

/// One admitted request on its way through the queue to a worker.
pub(crate) struct Job {
    pub(crate) inputs: Vec<Tensor>,
    /// Outputs to return, in this order; `None` for all of them in graph order.
    pub(crate) outputs: Option<Vec<String>>,
    pub(crate) deadline: Instant,
    pub(crate) admitted_at: Instant,
    /// `None` when the request must run alone (batching off, or inputs without a common first
    /// dimension).
    pub(crate) batch_key: Option<BatchKey>,
    /// Rows the request adds to a batch (its first dimension; 1 when it has none).
    pub(crate) rows: usize,
    pub(crate) span: Span,
    reply: oneshot::Sender<Answer>,
    admission: Admission,
}

impl Job {
    pub(crate) fn new(
        inputs: Vec<Tensor>,
        outputs: Option<Vec<String>>,
        deadline: Instant,
        model: &ModelInfo,
        reply: oneshot::Sender<Answer>,
        admission: Admission,
    ) -> Self {
        let rows = inputs.first().and_then(Tensor::rows).unwrap_or(1);
        let batch_key = if model.batching {
            batch_key(&inputs)
        } else {
            None
        };
        Job {
            inputs,
            outputs,
            deadline,
            admitted_at: Instant::now(),
            batch_key,
            rows,
            span: Span::current(),
            reply,
            admission,
        }
    }

    /// Whether the caller stopped waiting (its future was dropped or timed out).
    pub(crate) fn is_cancelled(&self) -> bool {
        self.reply.is_closed()
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// Sends the answer. The queue slot is released first, so a caller that immediately sends
    /// its next request finds room for it.
    pub(crate) fn answer(self, answer: Answer) {
        let Job {
            reply, admission, ..
        } = self;
        drop(admission);
        // The caller may have gone in the meantime; nobody is left to tell.
        let _ = reply.send(answer);
    }

    pub(crate) fn input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|tensor| tensor.name() == name)
    }
}

/// The batch key of a request whose inputs all share one first dimension.
fn batch_key(inputs: &[Tensor]) -> Option<BatchKey> {
    let rows = inputs.first()?.rows()?;
    let mut key = Vec::with_capacity(inputs.len());
    for tensor in inputs {
        let (&first, inner) = tensor.shape().split_first()?;
        if first != rows {
            return None;
        }
        key.push((tensor.name().to_owned(), tensor.datatype(), inner.to_vec()));
    }
    key.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Some(BatchKey(key))
}

/// A request's place in the queue: holds one permit of the model's admission semaphore and
/// keeps the queue-depth gauge in step with it.
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    depth: IntGauge,
}

impl Admission {
    pub(crate) fn new(permit: OwnedSemaphorePermit, depth: &IntGauge) -> Self {
        depth.inc();
        Admission {
            _permit: permit,
            depth: depth.clone(),
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.depth.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, shape: Vec<usize>) -> Tensor {
        let len = shape.iter().product();
        Tensor::new(name, shape, vec![0.0_f32; len]).unwrap()
    }

    #[test]
    fn requests_with_the_same_inner_dims_share_a_key_whatever_their_rows_or_input_order() {
        let a = batch_key(&[tensor("x", vec![1, 4]), tensor("y", vec![1, 2])]).unwrap();
        let b = batch_key(&[tensor("y", vec![3, 2]), tensor("x", vec![3, 4])]).unwrap();
        assert_eq!(a, b);
        let c = batch_key(&[tensor("x", vec![1, 5]), tensor("y", vec![1, 2])]).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn inputs_without_a_common_first_dimension_have_no_key() {
        assert_eq!(
            batch_key(&[tensor("x", vec![1, 4]), tensor("y", vec![2, 2])]),
            None
        );
        assert_eq!(batch_key(&[tensor("x", vec![])]), None);
        assert_eq!(batch_key(&[]), None);
    }
}
