//! Whole bodies: the JSON header of a request or response, the optional binary section after
//! it, and which tensors go where. One tensor's own data is `tensor.rs`'s: a request's input
//! and a response's output are the same JSON object, so both directions share it.

use std::collections::HashSet;
use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::tensor::{self, RawTensor, TensorOut};
use super::{Encoded, HEADER_LENGTH_HEADER, InferRequest, InferResponse, OipError};
use super::{RequestedOutput, Tensor};

const JSON: &str = "application/json";
const OCTET_STREAM: &str = "application/octet-stream";
/// Request-level parameters of the binary extension itself; the rest are the model's.
const BINARY_PARAMETERS: [&str; 3] = ["binary_data_output", "binary_data", "binary_data_size"];

#[derive(Deserialize)]
struct RawRequest {
    id: Option<String>,
    parameters: Option<Map<String, Value>>,
    inputs: Vec<RawTensor>,
    outputs: Option<Vec<RawOutput>>,
}

#[derive(Deserialize)]
struct RawOutput {
    name: String,
    parameters: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct RawResponse {
    model_name: String,
    model_version: Option<String>,
    id: Option<String>,
    outputs: Vec<RawTensor>,
}

/// A response read back by [`parse_response`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedResponse {
    /// `model_name`.
    pub model_name: String,
    /// `model_version`, if present.
    pub model_version: Option<String>,
    /// `id`, if present.
    pub id: Option<String>,
    /// The outputs, in response order.
    pub outputs: Vec<Tensor>,
}

/// Parses an inference request. `header_length` is the `Inference-Header-Content-Length`
/// header: when present the body is that many bytes of JSON followed by binary tensor data.
pub fn parse_request(body: &[u8], header_length: Option<&str>) -> Result<InferRequest, OipError> {
    let (header, mut binary) = split_body(body, header_length)?;
    let raw: RawRequest = parse_header(header, "inference request")?;
    let mut parameters = raw.parameters.unwrap_or_default();
    let binary_output = flag(
        parameters.get("binary_data_output"),
        "parameters.binary_data_output",
    )?
    .unwrap_or(false);
    parameters.retain(|key, _| !BINARY_PARAMETERS.contains(&key.as_str()));
    if raw.inputs.is_empty() {
        return Err(OipError::Invalid("the request has no inputs".into()));
    }
    let inputs = decode_tensors("input", raw.inputs, &mut binary)?;
    binary.finish()?;
    let outputs = requested_outputs(raw.outputs.unwrap_or_default(), binary_output)?;
    Ok(InferRequest {
        id: raw.id,
        inputs,
        outputs,
        binary_output,
        parameters,
    })
}

/// Encodes the answer to `request`: its requested outputs in its order (all outputs when it
/// names none), each as JSON `data` or as binary data after the JSON header.
pub fn encode_response(
    response: &InferResponse<'_>,
    request: &InferRequest,
) -> Result<Encoded, OipError> {
    #[derive(Serialize)]
    struct Header<'a> {
        model_name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        model_version: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        outputs: Vec<TensorOut<'a>>,
    }
    let mut writer = Writer::default();
    let outputs = select_outputs(&response.outputs, request)?
        .into_iter()
        .map(|(tensor, binary)| writer.tensor("output", tensor, binary))
        .collect::<Result<_, _>>()?;
    writer.finish(&Header {
        model_name: response.model_name,
        model_version: response.model_version,
        id: response.id,
        outputs,
    })
}

/// Encodes `request` as a client sends it: inputs as binary data when `binary_inputs` (what
/// `tritonclient[http]` does by default), else as JSON `data`.
pub fn encode_request(request: &InferRequest, binary_inputs: bool) -> Result<Encoded, OipError> {
    #[derive(Serialize)]
    struct Header<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Map::is_empty")]
        parameters: Map<String, Value>,
        inputs: Vec<TensorOut<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        outputs: Vec<Value>,
    }
    let mut parameters = request.parameters.clone();
    if request.binary_output {
        parameters.insert("binary_data_output".into(), Value::Bool(true));
    }
    let mut writer = Writer::default();
    let inputs = (request.inputs.iter())
        .map(|tensor| writer.tensor("input", tensor, binary_inputs))
        .collect::<Result<_, _>>()?;
    let outputs = (request.outputs.iter())
        .map(|o| serde_json::json!({"name": o.name, "parameters": {"binary_data": o.binary}}))
        .collect();
    writer.finish(&Header {
        id: request.id.as_deref(),
        parameters,
        inputs,
        outputs,
    })
}

/// Parses an inference response (the client side of [`encode_response`]).
pub fn parse_response(
    body: &[u8],
    header_length: Option<&str>,
) -> Result<DecodedResponse, OipError> {
    let (header, mut binary) = split_body(body, header_length)?;
    let raw: RawResponse = parse_header(header, "inference response")?;
    let outputs = decode_tensors("output", raw.outputs, &mut binary)?;
    binary.finish()?;
    Ok(DecodedResponse {
        model_name: raw.model_name,
        model_version: raw.model_version,
        id: raw.id,
        outputs,
    })
}

/// The JSON header and the binary section, which is `None` without a header length.
fn split_body<'a>(
    body: &'a [u8],
    header_length: Option<&str>,
) -> Result<(&'a [u8], Binary<'a>), OipError> {
    let Some(value) = header_length else {
        return Ok((body, Binary { rest: None }));
    };
    let length: usize = value.trim().parse().map_err(|_| {
        OipError::Malformed(format!(
            "the {HEADER_LENGTH_HEADER} header is not a length in bytes"
        ))
    })?;
    let (header, rest) = body.split_at_checked(length).ok_or_else(|| {
        OipError::Malformed(format!(
            "the {HEADER_LENGTH_HEADER} header says {length} bytes but the body has {}",
            body.len()
        ))
    })?;
    Ok((header, Binary { rest: Some(rest) }))
}

fn parse_header<T: DeserializeOwned>(header: &[u8], what: &str) -> Result<T, OipError> {
    let malformed = |e: &dyn Display| OipError::Malformed(format!("not a valid {what}: {e}"));
    let mut deserializer = serde_json::Deserializer::from_slice(header);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| malformed(&e))?;
    deserializer.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

/// A boolean parameter; `null` counts as absent.
fn flag(value: Option<&Value>, what: &str) -> Result<Option<bool>, OipError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(OipError::Malformed(format!("{what} must be a boolean"))),
    }
}

fn requested_outputs(
    raw: Vec<RawOutput>,
    binary_output: bool,
) -> Result<Vec<RequestedOutput>, OipError> {
    let mut seen = HashSet::new();
    raw.into_iter()
        .map(|output| {
            let who = format!("output \"{}\"", output.name);
            let own = flag(
                output
                    .parameters
                    .as_ref()
                    .and_then(|p| p.get("binary_data")),
                &format!("{who}: parameters.binary_data"),
            )?;
            if !seen.insert(output.name.clone()) {
                return Err(OipError::Invalid(format!("{who} is requested twice")));
            }
            Ok(RequestedOutput {
                name: output.name,
                binary: own.unwrap_or(binary_output),
            })
        })
        .collect()
}

/// The bytes after the JSON header, taken tensor by tensor in order.
pub(super) struct Binary<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Binary<'a> {
    pub(super) fn take(&mut self, who: &str, size: usize) -> Result<&'a [u8], OipError> {
        let Some(rest) = self.rest else {
            return Err(OipError::Malformed(format!(
                "{who} has binary_data_size but there is no {HEADER_LENGTH_HEADER} header"
            )));
        };
        let (taken, rest) = rest.split_at_checked(size).ok_or_else(|| {
            OipError::Malformed(format!(
                "{who}: binary_data_size is {size} but only {} bytes of binary data remain",
                rest.len()
            ))
        })?;
        self.rest = Some(rest);
        Ok(taken)
    }

    fn finish(self) -> Result<(), OipError> {
        match self.rest {
            Some(rest) if !rest.is_empty() => Err(OipError::Malformed(format!(
                "{} bytes of binary data follow the last binary tensor",
                rest.len()
            ))),
            _ => Ok(()),
        }
    }
}

fn decode_tensors(
    kind: &str,
    raw: Vec<RawTensor>,
    binary: &mut Binary<'_>,
) -> Result<Vec<Tensor>, OipError> {
    let mut seen = HashSet::new();
    raw.into_iter()
        .map(|raw| {
            let tensor = tensor::decode(kind, raw, binary)?;
            if seen.insert(tensor.name.clone()) {
                Ok(tensor)
            } else {
                Err(OipError::Invalid(format!(
                    "{kind} \"{}\" appears twice",
                    tensor.name
                )))
            }
        })
        .collect()
}

fn select_outputs<'t>(
    outputs: &'t [Tensor],
    request: &InferRequest,
) -> Result<Vec<(&'t Tensor, bool)>, OipError> {
    if request.outputs.is_empty() {
        return Ok(outputs.iter().map(|t| (t, request.binary_output)).collect());
    }
    (request.outputs.iter())
        .map(|wanted| {
            (outputs.iter())
                .find(|t| t.name == wanted.name)
                .map(|t| (t, wanted.binary))
                .ok_or_else(|| {
                    let available: Vec<&str> = outputs.iter().map(|t| t.name.as_str()).collect();
                    OipError::Invalid(format!(
                        "output \"{}\" does not exist; available: {}",
                        wanted.name,
                        available.join(", ")
                    ))
                })
        })
        .collect()
}

/// Collects the binary section while the JSON header's tensors are built.
#[derive(Default)]
struct Writer {
    tail: Vec<u8>,
    binary: bool,
}

impl Writer {
    fn tensor<'a>(
        &mut self,
        kind: &str,
        tensor: &'a Tensor,
        binary: bool,
    ) -> Result<TensorOut<'a>, OipError> {
        self.binary |= binary;
        tensor::encode(kind, tensor, binary, &mut self.tail)
    }

    fn finish(self, header: &impl Serialize) -> Result<Encoded, OipError> {
        let mut body = serde_json::to_vec(header)
            .map_err(|e| OipError::Invalid(format!("the JSON header cannot be written: {e}")))?;
        if !self.binary {
            return Ok(Encoded {
                body,
                header_length: None,
                content_type: JSON,
            });
        }
        let header_length = body.len();
        body.extend_from_slice(&self.tail);
        Ok(Encoded {
            body,
            header_length: Some(header_length),
            content_type: OCTET_STREAM,
        })
    }
}
