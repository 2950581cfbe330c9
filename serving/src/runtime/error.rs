//! The runtime's one error type. The HTTP layer maps each variant to a status exactly once.

use std::time::Duration;

/// Everything that can go wrong between "load this model" and "here are its outputs".
///
/// Variants meant for API callers (`Overloaded`, `DeadlineExceeded`, `InvalidInput`,
/// `UnknownOutput`) say precisely what happened; the others carry causes for operators and logs.
/// Every field is a plain value, so one error can be cloned to every request of a failed batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No ONNX Runtime library was found where Ferry looks for it.
    #[error("ONNX Runtime is not available: {hint}")]
    LibraryMissing {
        /// Where Ferry looked and the command that fetches the library.
        hint: String,
    },
    /// A file was found but could not be loaded as ONNX Runtime (wrong file, wrong version…).
    #[error("ONNX Runtime at {path} could not be loaded: {reason}; {hint}")]
    LibraryUnusable {
        /// The file Ferry tried to load.
        path: String,
        /// What the dynamic loader or ONNX Runtime said.
        reason: String,
        /// The command that fetches a working library.
        hint: String,
    },
    /// The model could not be turned into running sessions: bad bytes, unsupported types, bad
    /// options, a signature that does not match the graph, or a failed warm-up.
    #[error("model failed to load: {reason}")]
    Load {
        /// What went wrong, naming the input, output or option concerned.
        reason: String,
    },
    /// The model's queue is full; the caller should retry later (HTTP 429 + `Retry-After`).
    #[error("the model is overloaded; retry in {retry_after:?}")]
    Overloaded {
        /// An estimate of how long the current queue takes to drain.
        retry_after: Duration,
    },
    /// The request's deadline passed before it could be answered; it was not run, or its result
    /// was discarded (HTTP 504).
    #[error("the request's deadline passed before the model answered")]
    DeadlineExceeded,
    /// An input tensor is malformed (element count vs shape, batch dimension…).
    #[error("input {input:?}: {reason}")]
    InvalidInput {
        /// The input's name.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request asked for an output the model does not have.
    #[error("the model has no output named {output:?}")]
    UnknownOutput {
        /// The requested name.
        output: String,
    },
    /// ONNX Runtime refused or failed the run, or the worker panicked while serving it. Only the
    /// requests of that run fail; the worker keeps serving.
    #[error("inference failed: {reason}")]
    Inference {
        /// ONNX Runtime's message, or what the worker was doing when it failed.
        reason: String,
    },
    /// The model is being unloaded and takes no new requests.
    #[error("the model is shutting down")]
    ShuttingDown,
}

impl RuntimeError {
    pub(crate) fn load(reason: impl Into<String>) -> Self {
        RuntimeError::Load {
            reason: reason.into(),
        }
    }

    pub(crate) fn inference(reason: impl Into<String>) -> Self {
        RuntimeError::Inference {
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_input(input: impl Into<String>, reason: impl Into<String>) -> Self {
        RuntimeError::InvalidInput {
            input: input.into(),
            reason: reason.into(),
        }
    }
}
