//! What the runtime knows about a model before running it: where its bytes are, and what its
//! signature allows (supported types, whether requests may be batched).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_api::onnx::{ModelSignature, TensorSpec};

use super::error::RuntimeError;
use super::options::RuntimeOptions;
use super::tensor::DataType;

/// Where a model's ONNX bytes come from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A file on disk (for example the serving cache); each worker reads it while loading.
    File(PathBuf),
    /// Bytes in memory, shared by the workers while they load and dropped afterwards.
    Bytes(Arc<[u8]>),
}

impl ModelSource {
    /// The size of the model's ONNX bytes.
    ///
    /// # Errors
    /// [`RuntimeError::Load`] when the file cannot be read.
    pub(crate) async fn byte_len(&self) -> Result<u64, RuntimeError> {
        match self {
            ModelSource::File(path) => tokio::fs::metadata(path)
                .await
                .map(|meta| meta.len())
                .map_err(|e| RuntimeError::load(format!("cannot read {}: {e}", path.display()))),
            ModelSource::Bytes(bytes) => Ok(bytes.len() as u64),
        }
    }
}

impl From<PathBuf> for ModelSource {
    fn from(path: PathBuf) -> Self {
        ModelSource::File(path)
    }
}

impl From<&Path> for ModelSource {
    fn from(path: &Path) -> Self {
        ModelSource::File(path.to_path_buf())
    }
}

impl From<Vec<u8>> for ModelSource {
    fn from(bytes: Vec<u8>) -> Self {
        ModelSource::Bytes(bytes.into())
    }
}

impl From<Arc<[u8]>> for ModelSource {
    fn from(bytes: Arc<[u8]>) -> Self {
        ModelSource::Bytes(bytes)
    }
}

/// The signature, checked for what the runtime can serve, and the decisions drawn from it.
#[derive(Debug)]
pub(crate) struct ModelInfo {
    pub(crate) signature: ModelSignature,
    /// Requests may be stacked along the first axis.
    pub(crate) batching: bool,
    /// Most rows per run (1 without batching).
    pub(crate) max_batch_rows: usize,
    /// `"name:version"`, for logs, errors and thread names.
    pub(crate) label: String,
}

impl ModelInfo {
    /// Checks that every input and output is a tensor of a supported datatype.
    pub(crate) fn new(
        signature: ModelSignature,
        options: &RuntimeOptions,
        label: String,
    ) -> Result<Self, RuntimeError> {
        if signature.outputs.is_empty() {
            return Err(RuntimeError::load("the model has no outputs"));
        }
        for (role, spec) in signature
            .inputs
            .iter()
            .map(|spec| ("input", spec))
            .chain(signature.outputs.iter().map(|spec| ("output", spec)))
        {
            servable_datatype(role, spec)?;
        }
        // Stacking is only sound when every output grows with the batch too; a model that, say,
        // averages over its batch would mix requests. Workers also check each run's outputs.
        let batching = options.max_batch_size > 1
            && !signature.inputs.is_empty()
            && signature.inputs.iter().all(TensorSpec::is_dynamic_batch)
            && signature.outputs.iter().all(TensorSpec::is_dynamic_batch);
        Ok(ModelInfo {
            signature,
            batching,
            max_batch_rows: if batching { options.max_batch_size } else { 1 },
            label,
        })
    }

    pub(crate) fn has_output(&self, name: &str) -> bool {
        self.signature.outputs.iter().any(|spec| spec.name == name)
    }
}

/// The datatype of a signature entry, if the runtime can carry it.
pub(crate) fn servable_datatype(role: &str, spec: &TensorSpec) -> Result<DataType, RuntimeError> {
    let name = &spec.name;
    let datatype = &spec.datatype;
    match DataType::from_oip(datatype) {
        Some(dt) => Ok(dt),
        None if datatype.contains('(') => Err(RuntimeError::load(format!(
            "{role} {name:?} is {datatype}; Ferry serves tensors only (for scikit-learn \
             classifiers, convert with zipmap=False)"
        ))),
        None => Err(RuntimeError::load(format!(
            "{role} {name:?} has element type {datatype}, which Ferry cannot serve"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use ferry_api::onnx::Dim;

    use super::*;

    fn spec(name: &str, datatype: &str, shape: Option<Vec<Dim>>) -> TensorSpec {
        TensorSpec {
            name: name.to_owned(),
            datatype: datatype.to_owned(),
            shape,
        }
    }

    fn batch(inner: i64) -> Option<Vec<Dim>> {
        Some(vec![Dim::Symbolic("batch".to_owned()), Dim::Fixed(inner)])
    }

    fn signature(inputs: Vec<TensorSpec>, outputs: Vec<TensorSpec>) -> ModelSignature {
        ModelSignature {
            inputs,
            outputs,
            ir_version: 8,
            opsets: vec![],
            producer: None,
        }
    }

    fn info(signature: ModelSignature, max_batch_size: usize) -> Result<ModelInfo, RuntimeError> {
        let options = RuntimeOptions {
            max_batch_size,
            ..RuntimeOptions::default()
        };
        ModelInfo::new(signature, &options, "m:1".to_owned())
    }

    #[test]
    fn batching_needs_a_dynamic_first_dim_on_every_input_and_output() {
        let mlp = signature(
            vec![spec("input", "FP32", batch(32))],
            vec![spec("probabilities", "FP32", batch(2))],
        );
        assert!(info(mlp.clone(), 8).unwrap().batching);
        assert!(
            !info(mlp, 1).unwrap().batching,
            "max_batch_size 1 disables batching"
        );

        let fixed = signature(
            vec![spec(
                "image",
                "FP32",
                Some(vec![Dim::Fixed(1), Dim::Fixed(3)]),
            )],
            vec![spec(
                "pooled",
                "FP32",
                Some(vec![Dim::Fixed(1), Dim::Fixed(3)]),
            )],
        );
        assert!(!info(fixed, 8).unwrap().batching);

        let pooled_over_batch = signature(
            vec![spec("x", "FP32", batch(4))],
            vec![spec("mean", "FP32", Some(vec![Dim::Fixed(4)]))],
        );
        assert!(!info(pooled_over_batch, 8).unwrap().batching);
    }

    #[test]
    fn half_precision_is_served_and_non_tensor_types_are_refused_by_name() {
        let half = signature(
            vec![spec("x", "FP16", batch(4))],
            vec![spec("y", "BF16", batch(4))],
        );
        assert!(info(half, 8).unwrap().batching);

        let zipmap = signature(
            vec![spec("x", "FP32", batch(4))],
            vec![spec("output_probability", "seq(map(INT64,FP32))", None)],
        );
        let err = info(zipmap, 8).unwrap_err().to_string();
        assert!(err.contains("zipmap=False"), "{err}");

        let complex = signature(
            vec![spec("x", "COMPLEX64", batch(4))],
            vec![spec("y", "FP32", batch(4))],
        );
        assert!(
            info(complex, 8)
                .unwrap_err()
                .to_string()
                .contains("COMPLEX64")
        );
    }
}
