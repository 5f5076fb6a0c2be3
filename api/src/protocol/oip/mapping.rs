//! Tensors ↔ the JSON of HuggingFace inference containers: the one input tensor becomes the
//! container's `inputs`, its `predictions` (always a list, the gateway's normalised form)
//! become output tensors, and [`metadata_for_task`] declares what a task's model takes and
//! gives in those terms.
//!
//! Predictions become tensors by their shape, first rule that fits:
//! (a) a list of records with the same keys, every value a string or a number: one tensor per
//! key (BYTES or FP32, shape `[len]`), in the first record's key order, which is alphabetical
//! while serde_json is built without `preserve_order`; (b) a regular nesting of numbers: one
//! FP32 tensor `output` with that shape; (c) anything else: one BYTES tensor `output` of shape
//! `[len]` holding each element's compact JSON (a string stays itself).

use serde::Serialize;
use serde_json::{Map, Number, Value};

use super::{
    Datatype, InferRequest, MAX_DIMENSIONS, OipError, Tensor, TensorData, check_count,
    element_count,
};

/// A tensor a model declares in its OIP metadata; `-1` is a dimension of any size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = OipTensorMetadata)]
pub struct TensorMetadata {
    /// The tensor's name.
    pub name: &'static str,
    /// `"BYTES"` or `"FP32"`.
    #[schema(example = "BYTES")]
    pub datatype: &'static str,
    /// The dimensions, `-1` for variable ones.
    pub shape: Vec<i64>,
}

/// The most empty rows a tensor without elements may describe (`[n, 0]` nests `n` empty arrays
/// that no data accounts for).
const MAX_EMPTY_ROWS: usize = 1024;

/// The container's `inputs` for `request`'s one input tensor: text as a string (one element
/// of shape `[1]` or `[]`) or a flat list of strings; numbers as arrays nested by the shape.
pub fn provider_inputs(request: &InferRequest) -> Result<Value, OipError> {
    let [input] = request.inputs.as_slice() else {
        return Err(OipError::Invalid(format!(
            "exactly one input tensor is supported; the request has {}",
            request.inputs.len()
        )));
    };
    let who = format!("input \"{}\"", input.name);
    check_count(&who, input)?;
    match &input.data {
        TensorData::Bytes(elements) => {
            let texts = (elements.iter().enumerate())
                .map(|(i, e)| {
                    let text = std::str::from_utf8(e).map_err(|_| {
                        OipError::Invalid(format!("{who}: element {i} is not valid UTF-8 text"))
                    })?;
                    Ok(Value::String(text.to_owned()))
                })
                .collect::<Result<Vec<_>, OipError>>()?;
            match <[Value; 1]>::try_from(texts) {
                Ok([text]) if input.shape.len() <= 1 => Ok(text),
                Ok(one) => Ok(Value::Array(one.into())),
                Err(texts) => Ok(Value::Array(texts)),
            }
        }
        TensorData::Fp32(values) => {
            if input.shape.len() > MAX_DIMENSIONS {
                return Err(OipError::Invalid(format!(
                    "{who}: {} dimensions; at most {MAX_DIMENSIONS} are supported",
                    input.shape.len()
                )));
            }
            if values.is_empty() && empty_rows(&input.shape).is_none_or(|n| n > MAX_EMPTY_ROWS) {
                return Err(OipError::Invalid(format!(
                    "{who}: shape {:?} has no elements but more than {MAX_EMPTY_ROWS} rows",
                    input.shape
                )));
            }
            Ok(nest(values, &input.shape))
        }
    }
}

/// The product of the dimensions before the first zero: the arrays a shape without elements
/// nests.
fn empty_rows(shape: &[usize]) -> Option<usize> {
    let leading = shape.iter().position(|&d| d == 0).unwrap_or(shape.len());
    element_count(shape.get(..leading).unwrap_or_default())
}

/// `values` as arrays nested by `shape` (row-major); their counts agree (checked by the caller).
fn nest(values: &[f32], shape: &[usize]) -> Value {
    let Some((&rows, inner)) = shape.split_first() else {
        return values.first().map_or(Value::Null, |&v| number(v));
    };
    let width = element_count(inner).unwrap_or(0);
    (0..rows)
        .map(|row| {
            let start = row.saturating_mul(width);
            let part = values
                .get(start..start.saturating_add(width))
                .unwrap_or_default();
            nest(part, inner)
        })
        .collect()
}

fn number(value: f32) -> Value {
    Number::from_f64(f64::from(value)).map_or(Value::Null, Value::Number)
}

/// Output tensors for the container's `predictions` (a list; anything else is taken as a
/// one-element list), by rules (a), (b), (c) of the module doc. An empty list gives a BYTES
/// `output` of shape `[0]`.
pub fn outputs_from_predictions(predictions: &Value) -> Vec<Tensor> {
    let items = match predictions {
        Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    if items.is_empty() {
        return vec![text_output(items)];
    }
    (records(items).or_else(|| numbers(items))).unwrap_or_else(|| vec![text_output(items)])
}

/// Rule (a): records with the same keys and scalar values, one tensor per key.
fn records(items: &[Value]) -> Option<Vec<Tensor>> {
    let first: &Map<String, Value> = items.first()?.as_object()?;
    let rows = items.len();
    let mut tensors = (first.iter())
        .map(|(key, value)| {
            let data = match value {
                Value::String(_) => TensorData::Bytes(Vec::with_capacity(rows)),
                Value::Number(_) => TensorData::Fp32(Vec::with_capacity(rows)),
                _ => return None,
            };
            Some(Tensor {
                name: key.clone(),
                shape: vec![rows],
                data,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    if tensors.is_empty() {
        return None;
    }
    for item in items {
        let record = item.as_object().filter(|r| r.len() == first.len())?;
        for tensor in &mut tensors {
            match (&mut tensor.data, record.get(&tensor.name)?) {
                (TensorData::Bytes(column), Value::String(s)) => column.push(s.as_bytes().to_vec()),
                (TensorData::Fp32(column), Value::Number(n)) => column.push(fp32(n)?),
                _ => return None,
            }
        }
    }
    Some(tensors)
}

/// Rule (b): numbers nested regularly, one FP32 tensor with their shape.
fn numbers(items: &[Value]) -> Option<Vec<Tensor>> {
    let mut shape = vec![items.len()];
    shape.extend(common_shape(items, 1)?);
    let mut values = Vec::new();
    items
        .iter()
        .try_for_each(|item| collect_numbers(item, &mut values))?;
    Some(vec![Tensor {
        name: "output".into(),
        shape,
        data: TensorData::Fp32(values),
    }])
}

/// The shape every element of `items` has (`[]` for numbers), if they agree.
fn common_shape(items: &[Value], depth: usize) -> Option<Vec<usize>> {
    let mut shapes = items.iter().map(|item| match item {
        Value::Number(_) => Some(Vec::new()),
        Value::Array(inner) if depth < MAX_DIMENSIONS => {
            let mut shape = vec![inner.len()];
            shape.extend(common_shape(inner, depth + 1)?);
            Some(shape)
        }
        _ => None,
    });
    let Some(first) = shapes.next() else {
        return Some(Vec::new());
    };
    let first = first?;
    shapes
        .all(|shape| shape.as_ref() == Some(&first))
        .then_some(first)
}

fn collect_numbers(value: &Value, out: &mut Vec<f32>) -> Option<()> {
    match value {
        Value::Number(n) => out.push(fp32(n)?),
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| collect_numbers(item, out))?,
        _ => return None,
    }
    Some(())
}

/// A JSON number as a finite FP32, if it is one (a number beyond FP32's range is not).
fn fp32(number: &Number) -> Option<f32> {
    number.as_f64().map(|v| v as f32).filter(|v| v.is_finite())
}

/// Rule (c): each element's text, raw for strings and compact JSON otherwise.
fn text_output(items: &[Value]) -> Tensor {
    let elements = (items.iter())
        .map(|item| match item {
            Value::String(s) => s.as_bytes().to_vec(),
            other => other.to_string().into_bytes(),
        })
        .collect();
    Tensor {
        name: "output".into(),
        shape: vec![items.len()],
        data: TensorData::Bytes(elements),
    }
}

/// The (inputs, outputs) a model of `task` declares: what [`provider_inputs`] accepts and what
/// [`outputs_from_predictions`] makes of the container's usual answer (the shapes of
/// docs/supported-models.md). Records list their keys alphabetically, as rule (a) gives them.
pub fn metadata_for_task(task: Option<&str>) -> (Vec<TensorMetadata>, Vec<TensorMetadata>) {
    use Datatype::{Bytes, Fp32};
    let inputs = match task {
        Some("tabular-classification" | "tabular-regression") => {
            vec![meta("features", Fp32, &[-1, -1])]
        }
        _ => vec![meta("text", Bytes, &[-1])],
    };
    let columns = |columns: &[(&'static str, Datatype)]| -> Vec<TensorMetadata> {
        (columns.iter())
            .map(|&(name, datatype)| meta(name, datatype, &[-1]))
            .collect()
    };
    let outputs = match task {
        Some("text-classification" | "image-classification") => {
            columns(&[("label", Bytes), ("score", Fp32)])
        }
        Some("token-classification") => columns(&[
            ("end", Fp32),
            ("entity", Bytes),
            ("index", Fp32),
            ("score", Fp32),
            ("start", Fp32),
            ("word", Bytes),
        ]),
        Some("fill-mask") => columns(&[
            ("score", Fp32),
            ("sequence", Bytes),
            ("token", Fp32),
            ("token_str", Bytes),
        ]),
        Some("question-answering") => columns(&[
            ("answer", Bytes),
            ("end", Fp32),
            ("score", Fp32),
            ("start", Fp32),
        ]),
        Some("text-generation") => columns(&[("generated_text", Bytes)]),
        Some("summarization") => columns(&[("summary_text", Bytes)]),
        Some("translation") => columns(&[("translation_text", Bytes)]),
        Some("feature-extraction") => vec![meta("output", Fp32, &[-1, -1])],
        Some("tabular-regression") => vec![meta("output", Fp32, &[-1])],
        _ => vec![meta("output", Bytes, &[-1])],
    };
    (inputs, outputs)
}

fn meta(name: &'static str, datatype: Datatype, shape: &[i64]) -> TensorMetadata {
    TensorMetadata {
        name,
        datatype: datatype.as_str(),
        shape: shape.to_vec(),
    }
}
