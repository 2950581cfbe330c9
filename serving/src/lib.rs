//! Ferry serving: ONNX inference over the Open Inference Protocol v2 (see issue 3; not built yet).
