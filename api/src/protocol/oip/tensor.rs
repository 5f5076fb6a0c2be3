//! One tensor's data on the wire: JSON `data` (flat or nested, row-major) or binary data
//! (little-endian; FP32 4 bytes an element, BYTES a u32 length then the bytes), decoded with
//! the checks that make a [`Tensor`] consistent, and encoded back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::wire::Binary;
use super::{Datatype, MAX_DIMENSIONS, OipError, SUPPORTED, Tensor, TensorData};
use super::{check_count, count_mismatch, element_count};

/// A tensor object as it comes: a request's input or a response's output.
#[derive(Deserialize)]
pub(super) struct RawTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    parameters: Option<Map<String, Value>>,
    data: Option<Value>,
}

/// `raw` as a tensor whose element count matches its shape, its binary data taken from
/// `binary`; `kind` ("input", "output") names it in errors.
pub(super) fn decode(
    kind: &str,
    raw: RawTensor,
    binary: &mut Binary<'_>,
) -> Result<Tensor, OipError> {
    let who = format!("{kind} \"{}\"", raw.name);
    let invalid = |detail: String| OipError::Invalid(format!("{who}{detail}"));
    let datatype = Datatype::from_wire(&raw.datatype).ok_or_else(|| {
        invalid(format!(
            ": datatype \"{}\" is not supported; supported: {SUPPORTED}",
            raw.datatype
        ))
    })?;
    if raw.shape.len() > MAX_DIMENSIONS {
        return Err(invalid(format!(
            ": {} dimensions; at most {MAX_DIMENSIONS} are supported",
            raw.shape.len()
        )));
    }
    let shape = (raw.shape.iter())
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid(format!(": shape {:?} has a negative dimension", raw.shape)))?;
    let count = element_count(&shape)
        .ok_or_else(|| invalid(format!(": shape {shape:?} has too many elements")))?;
    let data = match (raw.data, binary_data_size(&who, raw.parameters.as_ref())?) {
        (Some(data), None) => json_data(&who, datatype, &data, count, &shape)?,
        (None, Some(size)) => binary_data(&who, datatype, binary.take(&who, size)?, count, &shape)?,
        (Some(_), Some(_)) => {
            return Err(invalid(" has both data and binary_data_size".into()));
        }
        (None, None) => {
            return Err(invalid(" has neither data nor binary_data_size".into()));
        }
    };
    Ok(Tensor {
        name: raw.name,
        shape,
        data,
    })
}

fn binary_data_size(
    who: &str,
    parameters: Option<&Map<String, Value>>,
) -> Result<Option<usize>, OipError> {
    match parameters.and_then(|p| p.get("binary_data_size")) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => (value.as_u64())
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                OipError::Malformed(format!(
                    "{who}: parameters.binary_data_size must be a non-negative integer"
                ))
            }),
    }
}

fn json_data(
    who: &str,
    datatype: Datatype,
    data: &Value,
    count: usize,
    shape: &[usize],
) -> Result<TensorData, OipError> {
    if !data.is_array() {
        return Err(OipError::Malformed(format!("{who}: data must be an array")));
    }
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    if flat.len() != count {
        return Err(count_mismatch(who, flat.len(), shape));
    }
    let wrong_type = || {
        OipError::Malformed(format!(
            "{who}: {} data must be {}",
            datatype.as_str(),
            if datatype == Datatype::Bytes {
                "strings"
            } else {
                "numbers"
            }
        ))
    };
    Ok(match datatype {
        Datatype::Bytes => TensorData::Bytes(
            (flat.iter())
                .map(|v| {
                    v.as_str()
                        .map(|s| s.as_bytes().to_vec())
                        .ok_or_else(wrong_type)
                })
                .collect::<Result<_, _>>()?,
        ),
        Datatype::Fp32 => TensorData::Fp32(
            (flat.iter().enumerate())
                .map(|(i, v)| finite(who, i, v.as_f64().ok_or_else(wrong_type)? as f32))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Row-major elements of flat or nested arrays (depth is bounded by serde_json's parser).
fn flatten<'v>(value: &'v Value, out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        element => out.push(element),
    }
}

fn finite(who: &str, index: usize, value: f32) -> Result<f32, OipError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(OipError::Invalid(format!(
            "{who}: element {index} is not a finite FP32 number"
        )))
    }
}

fn binary_data(
    who: &str,
    datatype: Datatype,
    bytes: &[u8],
    count: usize,
    shape: &[usize],
) -> Result<TensorData, OipError> {
    let invalid = |detail: String| OipError::Invalid(format!("{who}: {detail}"));
    let mut rest = bytes;
    match datatype {
        Datatype::Fp32 => {
            if count.checked_mul(4) != Some(bytes.len()) {
                let size = bytes.len();
                return Err(invalid(format!(
                    "binary_data_size is {size} but shape {shape:?} needs 4 bytes for each of \
                     {count} FP32 elements"
                )));
            }
            let mut values = Vec::with_capacity(count);
            while let Some((element, tail)) = rest.split_first_chunk::<4>() {
                values.push(finite(who, values.len(), f32::from_le_bytes(*element))?);
                rest = tail;
            }
            Ok(TensorData::Fp32(values))
        }
        Datatype::Bytes => {
            // Each element is at least its 4-byte length: no capacity beyond what the body holds.
            let mut elements = Vec::with_capacity(count.min(bytes.len() / 4));
            while let Some((length, tail)) = rest.split_first_chunk::<4>() {
                if elements.len() == count {
                    return Err(invalid(format!(
                        "binary data holds more than the {count} BYTES elements of shape {shape:?}"
                    )));
                }
                let length = usize::try_from(u32::from_le_bytes(*length)).unwrap_or(usize::MAX);
                let (element, tail) = tail.split_at_checked(length).ok_or_else(|| {
                    invalid(format!(
                        "BYTES element {} runs past binary_data_size",
                        elements.len()
                    ))
                })?;
                elements.push(element.to_vec());
                rest = tail;
            }
            if !rest.is_empty() {
                return Err(invalid(
                    "binary_data_size ends inside a BYTES length".into(),
                ));
            }
            if elements.len() != count {
                return Err(count_mismatch(who, elements.len(), shape));
            }
            Ok(TensorData::Bytes(elements))
        }
    }
}

/// A tensor in a JSON header, with its `data` or the size of its binary data.
#[derive(Serialize)]
pub(super) struct TensorOut<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataOut<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DataOut<'a> {
    Bytes(Vec<&'a str>),
    Fp32(&'a [f32]),
}

/// `tensor` for a JSON header: with its `data`, or, when `binary`, with the size of the
/// bytes appended to `tail`.
pub(super) fn encode<'a>(
    kind: &str,
    tensor: &'a Tensor,
    binary: bool,
    tail: &mut Vec<u8>,
) -> Result<TensorOut<'a>, OipError> {
    let who = format!("{kind} \"{}\"", tensor.name);
    check_count(&who, tensor)?;
    let (parameters, data) = if binary {
        let start = tail.len();
        append_binary(&who, &tensor.data, tail)?;
        let binary_data_size = tail.len().saturating_sub(start);
        (Some(BinarySize { binary_data_size }), None)
    } else {
        (None, Some(json_out(&who, &tensor.data)?))
    };
    Ok(TensorOut {
        name: &tensor.name,
        datatype: tensor.data.datatype().as_str(),
        shape: &tensor.shape,
        parameters,
        data,
    })
}

fn json_out<'a>(who: &str, data: &'a TensorData) -> Result<DataOut<'a>, OipError> {
    let refuse = |index: usize, what: &str| {
        OipError::Invalid(format!(
            "{who}: element {index} is {what}, which JSON cannot carry; ask for binary data"
        ))
    };
    match data {
        TensorData::Bytes(elements) => (elements.iter().enumerate())
            .map(|(i, e)| std::str::from_utf8(e).map_err(|_| refuse(i, "not UTF-8 text")))
            .collect::<Result<_, _>>()
            .map(DataOut::Bytes),
        TensorData::Fp32(values) => match values.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(refuse(i, "not finite")),
            None => Ok(DataOut::Fp32(values)),
        },
    }
}

fn append_binary(who: &str, data: &TensorData, tail: &mut Vec<u8>) -> Result<(), OipError> {
    match data {
        TensorData::Fp32(values) => values.iter().for_each(|v| tail.extend(v.to_le_bytes())),
        TensorData::Bytes(elements) => {
            for (i, element) in elements.iter().enumerate() {
                let length = u32::try_from(element.len()).map_err(|_| {
                    OipError::Invalid(format!("{who}: element {i} is longer than 4 GiB"))
                })?;
                tail.extend(length.to_le_bytes());
                tail.extend_from_slice(element);
            }
        }
    }
    Ok(())
}
