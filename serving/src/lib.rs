//! Ferry serving: runs ONNX models and answers predictions (see issue 3).
//!
//! This crate currently holds the inference [`runtime`]; the Open Inference Protocol HTTP API is
//! built on top of it.

#![warn(missing_docs)]

pub mod runtime;
