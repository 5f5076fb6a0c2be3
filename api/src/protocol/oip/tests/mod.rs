//! The codec's tests: `wire` for bodies (JSON and binary round trips with hand-built bytes,
//! tritonclient's default request, every refusal with its variant), `mapping` for the
//! container JSON, `properties` for arbitrary bodies and tensors.

use serde_json::Map;

use super::{InferRequest, InferResponse, Tensor, TensorData};

mod mapping;
mod properties;
mod wire;

pub(super) fn bytes_tensor(name: &str, shape: &[usize], elements: &[&str]) -> Tensor {
    Tensor {
        name: name.into(),
        shape: shape.to_vec(),
        data: TensorData::Bytes(elements.iter().map(|e| e.as_bytes().to_vec()).collect()),
    }
}

pub(super) fn fp32_tensor(name: &str, shape: &[usize], values: &[f32]) -> Tensor {
    Tensor {
        name: name.into(),
        shape: shape.to_vec(),
        data: TensorData::Fp32(values.to_vec()),
    }
}

/// A request that names no outputs, answered in JSON or in binary.
pub(super) fn asking_all(binary_output: bool) -> InferRequest {
    InferRequest {
        id: None,
        inputs: vec![bytes_tensor("text", &[1], &["x"])],
        outputs: Vec::new(),
        binary_output,
        parameters: Map::new(),
    }
}

pub(super) fn response(outputs: Vec<Tensor>) -> InferResponse<'static> {
    InferResponse {
        model_name: "sentiment",
        model_version: Some("3"),
        id: Some("r1"),
        outputs,
    }
}

/// `json` as the header of a binary body followed by `tail`, and its header length.
pub(super) fn binary_body(json: &str, tail: &[u8]) -> (Vec<u8>, String) {
    ([json.as_bytes(), tail].concat(), json.len().to_string())
}

pub(super) fn input(fields: &str) -> String {
    format!(r#"{{"inputs":[{{"name":"text",{fields}}}]}}"#)
}
