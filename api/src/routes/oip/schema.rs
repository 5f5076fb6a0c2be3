//! The OpenAPI schemas of the Open Inference Protocol routes. The answers of the health,
//! metadata and ready routes are served from these types; the infer request and response
//! are read and written by `crate::protocol::oip` (JSON, or the binary tensor data extension),
//! and their schemas here describe the JSON form.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::protocol::oip::TensorMetadata;

/// `GET /v2`.
#[derive(Serialize, ToSchema)]
#[schema(as = OipServerMetadata)]
pub struct ServerMetadata {
    /// `hokusai-serve`.
    #[schema(example = "hokusai-serve")]
    pub name: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// The protocol extensions served: `binary_tensor_data`.
    pub extensions: &'static [&'static str],
}

/// `GET /v2/health/live`.
#[derive(Serialize, ToSchema)]
#[schema(as = OipServerLive)]
pub struct ServerLive {
    /// Always `true`: the process answers.
    pub live: bool,
}

/// `GET /v2/health/ready`.
#[derive(Serialize, ToSchema)]
#[schema(as = OipServerReady)]
pub struct ServerReady {
    /// Whether the database answers.
    pub ready: bool,
}

/// `GET /v2/models/{model_id}`: the tensors the model's task takes and gives.
#[derive(Serialize, ToSchema)]
#[schema(as = OipModelMetadata)]
pub struct ModelMetadata {
    /// The Hokusai model id.
    #[schema(example = "fraud-detector")]
    pub name: String,
    /// The serving MLflow version (empty for an unversioned deployment).
    pub versions: Vec<String>,
    /// `hokusai-serve/<provider>`.
    #[schema(example = "hokusai-serve/huggingface")]
    pub platform: String,
    /// The input tensors (one: `text` BYTES, or `features` FP32 for tabular tasks).
    pub inputs: Vec<TensorMetadata>,
    /// The output tensors, one per field of the task's predictions.
    pub outputs: Vec<TensorMetadata>,
}

/// `GET /v2/models/{model_id}/ready`.
#[derive(Serialize, ToSchema)]
#[schema(as = OipModelReady)]
pub struct ModelReady {
    /// The Hokusai model id.
    #[schema(example = "fraud-detector")]
    pub name: String,
    /// `true` (a model that is not serving answers 404).
    pub ready: bool,
}

/// `POST /v2/models/{model_id}/infer`, JSON form. With the binary tensor data extension the
/// body is this JSON (its length in `Inference-Header-Content-Length`, the tensors'
/// `parameters.binary_data_size` set and `data` left out) followed by the raw tensor bytes:
/// FP32 little-endian, BYTES each element a 4-byte little-endian length then its bytes.
#[derive(ToSchema)]
#[schema(as = OipInferRequest)]
#[allow(dead_code)] // read by `crate::protocol::oip`, which also takes the binary form
pub struct InferRequest {
    /// Echoed in the answer.
    id: Option<String>,
    /// Request parameters: `binary_data_output` (answer every output in binary), the rest
    /// passed to the model as its `parameters`.
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    /// Exactly one input tensor.
    inputs: Vec<RequestTensor>,
    /// The outputs wanted (all when absent), each with `parameters.binary_data`.
    #[schema(value_type = Option<Vec<Object>>)]
    outputs: Option<Vec<Value>>,
}

/// An input or output tensor in JSON form.
#[derive(ToSchema)]
#[schema(as = OipTensor)]
#[allow(dead_code)] // read and written by `crate::protocol::oip`
pub struct RequestTensor {
    /// The tensor's name.
    #[schema(example = "text")]
    name: String,
    /// `BYTES` (text) or `FP32` (numbers).
    #[schema(example = "BYTES")]
    datatype: String,
    /// The dimensions; their product is the number of elements.
    #[schema(example = json!([1]))]
    shape: Vec<u64>,
    /// The elements, flat or nested by the shape (absent when the data is binary).
    #[schema(value_type = Option<Vec<Object>>, example = json!(["I love this!"]))]
    data: Option<Value>,
    /// `binary_data_size` when the data follows the JSON header.
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
}

/// The answer of `POST /v2/models/{model_id}/infer`, JSON form (binary outputs as in
/// [`InferRequest`]).
#[derive(ToSchema)]
#[schema(as = OipInferResponse)]
#[allow(dead_code)] // written by `crate::protocol::oip`
pub struct InferResponse {
    /// The Hokusai model id.
    #[schema(example = "sentiment")]
    model_name: String,
    /// The serving MLflow version.
    model_version: Option<String>,
    /// The request's `id`.
    id: Option<String>,
    /// One tensor per field of the predictions (`label` BYTES, `score` FP32, ...).
    outputs: Vec<RequestTensor>,
}
