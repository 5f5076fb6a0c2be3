//! The Open Inference Protocol V2 (KServe V2 / Triton HTTP) inference request and response,
//! with Triton's binary tensor data extension, and their mapping to the JSON of HuggingFace
//! inference containers. Pure: bytes in, bytes out; the routes do the HTTP.
//!
//! The format (KServe V2 inference protocol, REST; Triton binary tensor data extension): a
//! request is a JSON object whose `inputs` are tensors (`name`, `shape`, `datatype`, `data`
//! as a row-major array, flat or nested) and whose optional `outputs` name the wanted outputs;
//! the response lists `outputs` the same way. In the binary extension, which the official
//! `tritonclient[http]` uses by default, the body is the JSON header followed by raw tensor
//! bytes: the `Inference-Header-Content-Length` header gives the JSON's length, and each
//! tensor whose `parameters.binary_data_size` is set takes that many bytes, in tensor order
//! (little-endian; FP32 is 4 bytes an element, a BYTES element is a u32 length then its
//! bytes). Outputs come back binary when asked one by one (`binary_data`) or all at once
//! (request-level `binary_data_output`, which a per-output `binary_data` overrides).
//!
//! Why only BYTES and FP32: the models behind the gateway are HuggingFace inference containers,
//! which take JSON `inputs` and answer JSON `predictions`. Text maps to BYTES and numbers to
//! FP32 without loss; other datatypes have no container to receive them, so they are refused
//! by name rather than converted silently.
//!
//! Layout:
//! - `wire.rs`: [`parse_request`] and [`encode_response`] (plus the client side,
//!   [`encode_request`] and [`parse_response`], which the tests and a Rust client use).
//! - `tensor.rs`: one tensor's JSON or binary data, decoded and checked, and encoded.
//! - `mapping.rs`: [`provider_inputs`] (tensor → container `inputs`),
//!   [`outputs_from_predictions`] (container `predictions` → tensors) and
//!   [`metadata_for_task`] (the tensors a task's model declares).
//!
//! Errors: [`OipError::Malformed`] when the body cannot be read (the route answers it as
//! `ApiError::BadRequest`), [`OipError::Invalid`] when it reads but its content is not
//! acceptable (`ApiError::Validation`). Nothing here panics on any input: sizes use checked
//! arithmetic and slices are taken with `get`.

mod mapping;
mod tensor;
#[cfg(test)]
mod tests;
mod wire;

pub use mapping::{TensorMetadata, metadata_for_task, outputs_from_predictions, provider_inputs};
pub use wire::{DecodedResponse, encode_request, encode_response, parse_request, parse_response};

/// The HTTP header giving the length of the JSON header of a binary request or response.
pub const HEADER_LENGTH_HEADER: &str = "Inference-Header-Content-Length";

/// The most dimensions a tensor may have (numpy's limit is 32 too). Bounds the recursion of
/// the nested JSON arrays built from a shape.
pub const MAX_DIMENSIONS: usize = 32;

/// The datatypes accepted, for error messages.
const SUPPORTED: &str = "BYTES, FP32";

/// OIP datatypes we support (others are refused with a clear message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    /// `"BYTES"`: byte strings (text for the containers).
    Bytes,
    /// `"FP32"`: 32-bit floats.
    Fp32,
}

impl Datatype {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bytes => "BYTES",
            Self::Fp32 => "FP32",
        }
    }

    /// The datatype named `name` on the wire, if supported.
    pub fn from_wire(name: &str) -> Option<Self> {
        match name {
            "BYTES" => Some(Self::Bytes),
            "FP32" => Some(Self::Fp32),
            _ => None,
        }
    }
}

/// A tensor's elements, flat, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// One byte string per element.
    Bytes(Vec<Vec<u8>>),
    /// One float per element.
    Fp32(Vec<f32>),
}

impl TensorData {
    /// The datatype of these elements.
    pub fn datatype(&self) -> Datatype {
        match self {
            Self::Bytes(_) => Datatype::Bytes,
            Self::Fp32(_) => Datatype::Fp32,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::Bytes(elements) => elements.len(),
            Self::Fp32(elements) => elements.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A named tensor: an input of a request or an output of a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The tensor's name (`"text"`, `"label"`, …).
    pub name: String,
    /// The dimensions; their product is the number of elements (`[]` is a scalar).
    pub shape: Vec<usize>,
    /// The elements.
    pub data: TensorData,
}

/// An output named in the request's `outputs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    /// The output's name.
    pub name: String,
    /// Whether it goes back as binary data: its own `binary_data`, else the request-level
    /// `binary_data_output` (resolved when parsing, as the extension says).
    pub binary: bool,
}

/// A parsed inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// The client's request id, echoed in the response.
    pub id: Option<String>,
    /// The input tensors, in request order, names unique.
    pub inputs: Vec<Tensor>,
    /// The outputs asked for, in the order to answer them; empty means all outputs.
    pub outputs: Vec<RequestedOutput>,
    /// Request-level `parameters.binary_data_output`.
    pub binary_output: bool,
    /// Request-level `parameters` minus the binary extension's own.
    pub parameters: serde_json::Map<String, serde_json::Value>,
}

/// What to answer: the model's outputs, before the request's selection.
#[derive(Debug, Clone)]
pub struct InferResponse<'a> {
    /// The model's name as the client addressed it.
    pub model_name: &'a str,
    /// The model's version, if it has one.
    pub model_version: Option<&'a str>,
    /// The request's id.
    pub id: Option<&'a str>,
    /// Every output the model produced.
    pub outputs: Vec<Tensor>,
}

/// An encoded body and the headers that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The HTTP body.
    pub body: Vec<u8>,
    /// The value of `Inference-Header-Content-Length` when binary data follows the JSON.
    pub header_length: Option<usize>,
    /// `application/octet-stream` with binary data, else `application/json`.
    pub content_type: &'static str,
}

/// Why a body was refused.
#[derive(Debug, thiserror::Error)]
pub enum OipError {
    /// The framing is unreadable: JSON that does not parse or has the wrong types, a bad
    /// header length, truncated or leftover binary data.
    #[error("{0}")]
    Malformed(String),
    /// The body reads but its content is not acceptable: unsupported datatype, element count
    /// not matching the shape, duplicate names, non-finite numbers, …
    #[error("{0}")]
    Invalid(String),
}

/// The number of elements of `shape`, `None` if it overflows.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |count, &d| count.checked_mul(d))
}

/// `Ok` when `tensor`'s data has as many elements as its shape says; `who` names it.
fn check_count(who: &str, tensor: &Tensor) -> Result<(), OipError> {
    let n = tensor.data.len();
    if element_count(&tensor.shape) == Some(n) {
        Ok(())
    } else {
        Err(count_mismatch(who, n, &tensor.shape))
    }
}

fn count_mismatch(who: &str, n: usize, shape: &[usize]) -> OipError {
    OipError::Invalid(format!("{who}: {n} elements for shape {shape:?}"))
}
