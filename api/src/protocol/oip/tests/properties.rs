//! Properties: no body makes the parser panic, and encoded tensors decode to themselves.

use proptest::prelude::*;
use serde_json::json;

use super::super::*;
use super::{asking_all, input, response};

/// Finite floats, the only ones the wire accepts.
fn finite_f32() -> impl Strategy<Value = f32> {
    prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO
}

fn tensor(name: String) -> impl Strategy<Value = Tensor> {
    (prop::collection::vec(0usize..4, 0..4), any::<bool>()).prop_flat_map(move |(shape, text)| {
        let n = element_count(&shape).unwrap_or(0);
        let data = if text {
            let element = prop::collection::vec(any::<u8>(), 0..6);
            prop::collection::vec(element, n)
                .prop_map(TensorData::Bytes)
                .boxed()
        } else {
            prop::collection::vec(finite_f32(), n)
                .prop_map(TensorData::Fp32)
                .boxed()
        };
        let name = name.clone();
        data.prop_map(move |data| Tensor {
            name: name.clone(),
            shape: shape.clone(),
            data,
        })
    })
}

fn tensors() -> impl Strategy<Value = Vec<Tensor>> {
    (1usize..4).prop_flat_map(|n| (0..n).map(|i| tensor(format!("t{i}"))).collect::<Vec<_>>())
}

fn is_text(tensor: &Tensor) -> bool {
    match &tensor.data {
        TensorData::Bytes(elements) => elements.iter().all(|e| std::str::from_utf8(e).is_ok()),
        TensorData::Fp32(_) => true,
    }
}

/// A header that looks like tritonclient's, with small or arbitrary dimensions and sizes, a
/// random binary section and a header length near the truth.
fn near_miss() -> impl Strategy<Value = (Vec<u8>, Option<String>)> {
    let datatype = prop::sample::select(vec!["BYTES", "FP32", "INT8", ""]);
    (
        prop_oneof![0i64..4, any::<i64>()],
        datatype,
        prop_oneof![0u64..80, any::<u64>()],
        prop::collection::vec(any::<u8>(), 0..64),
        any::<i8>(),
    )
        .prop_map(|(dim, datatype, size, tail, offset)| {
            let parameters = format!(r#""parameters":{{"binary_data_size":{size}}}"#);
            let json = input(&format!(
                r#""shape":[{dim}],"datatype":"{datatype}",{parameters}"#
            ));
            let length = json.len().saturating_add_signed(isize::from(offset));
            ([json.as_bytes(), &tail].concat(), Some(length.to_string()))
        })
}

/// Header lengths, mostly numbers near the body's size, sometimes not numbers at all.
fn header_length() -> impl Strategy<Value = String> {
    prop_oneof![(0usize..300).prop_map(|n| n.to_string()), ".{0,6}"]
}

proptest! {
    #[test]
    fn parse_request_never_panics(
        body in prop::collection::vec(any::<u8>(), 0..256),
        length in prop::option::of(header_length()),
    ) {
        let _ = parse_request(&body, length.as_deref());
        let _ = parse_response(&body, length.as_deref());
    }

    #[test]
    fn parse_request_never_panics_on_near_misses((body, length) in near_miss()) {
        let _ = parse_request(&body, length.as_deref());
    }

    #[test]
    fn requests_round_trip(
        inputs in tensors(),
        binary in any::<bool>(),
        binary_output in any::<bool>(),
    ) {
        let request = InferRequest {
            id: Some("id".into()),
            outputs: vec![RequestedOutput { name: "o".into(), binary: binary_output }],
            binary_output,
            parameters: json!({"top_k": 1}).as_object().unwrap().clone(),
            inputs,
        };
        let encoded = encode_request(&request, binary);
        if !binary && !request.inputs.iter().all(is_text) {
            prop_assert!(matches!(encoded, Err(OipError::Invalid(_))));
            return Ok(());
        }
        let encoded = encoded.unwrap();
        let length = encoded.header_length.map(|n| n.to_string());
        prop_assert_eq!(parse_request(&encoded.body, length.as_deref()).unwrap(), request);
    }

    #[test]
    fn responses_round_trip(outputs in tensors(), binary in any::<bool>()) {
        let encoded = encode_response(&response(outputs.clone()), &asking_all(binary));
        if !binary && !outputs.iter().all(is_text) {
            prop_assert!(matches!(encoded, Err(OipError::Invalid(_))));
            return Ok(());
        }
        let encoded = encoded.unwrap();
        prop_assert_eq!(encoded.header_length.is_some(), binary);
        let length = encoded.header_length.map(|n| n.to_string());
        let decoded = parse_response(&encoded.body, length.as_deref()).unwrap();
        prop_assert_eq!(decoded.outputs, outputs);
        prop_assert_eq!(decoded.model_name.as_str(), "sentiment");
        prop_assert_eq!(decoded.id.as_deref(), Some("r1"));
    }
}
