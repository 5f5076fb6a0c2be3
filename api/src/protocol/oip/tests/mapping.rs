//! Container JSON: the input tensor as `inputs`, `predictions` as output tensors, and the
//! metadata that declares them.

use serde_json::{Map, Value, json};

use super::super::*;
use super::bytes_tensor;

fn request(input: Tensor) -> InferRequest {
    InferRequest {
        id: None,
        inputs: vec![input],
        outputs: Vec::new(),
        binary_output: false,
        parameters: Map::new(),
    }
}

fn text(shape: &[usize], elements: &[&str]) -> Tensor {
    bytes_tensor("text", shape, elements)
}

fn invalid(result: Result<Value, OipError>) -> String {
    match result {
        Err(OipError::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn bytes_inputs_become_a_string_or_a_list_of_strings() {
    assert_eq!(
        provider_inputs(&request(text(&[1], &["hi"]))).unwrap(),
        json!("hi")
    );
    assert_eq!(
        provider_inputs(&request(text(&[], &["hi"]))).unwrap(),
        json!("hi")
    );
    assert_eq!(
        provider_inputs(&request(text(&[1, 1], &["hi"]))).unwrap(),
        json!(["hi"])
    );
    let batch = request(text(&[2], &["a", "b"]));
    assert_eq!(provider_inputs(&batch).unwrap(), json!(["a", "b"]));
}

#[test]
fn fp32_inputs_nest_by_their_shape() {
    let features = Tensor {
        name: "features".into(),
        shape: vec![2, 3],
        data: TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]),
    };
    let inputs = provider_inputs(&request(features)).unwrap();
    assert_eq!(inputs, json!([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]]));
    let empty = Tensor {
        name: "features".into(),
        shape: vec![2, 0],
        data: TensorData::Fp32(Vec::new()),
    };
    assert_eq!(provider_inputs(&request(empty)).unwrap(), json!([[], []]));
}

#[test]
fn provider_inputs_refusals() {
    let mut two = request(text(&[1], &["a"]));
    two.inputs.push(text(&[1], &["b"]));
    assert!(invalid(provider_inputs(&two)).contains("exactly one input tensor"));
    let mut latin1 = request(text(&[1], &["x"]));
    latin1.inputs[0].data = TensorData::Bytes(vec![vec![0xe9]]);
    let message = invalid(provider_inputs(&latin1));
    assert_eq!(message, "input \"text\": element 0 is not valid UTF-8 text");
    let short = request(text(&[3], &["a"]));
    assert_eq!(
        invalid(provider_inputs(&short)),
        "input \"text\": 1 elements for shape [3]"
    );
    let vast = Tensor {
        name: "x".into(),
        shape: vec![usize::MAX, 0],
        data: TensorData::Fp32(Vec::new()),
    };
    assert!(invalid(provider_inputs(&request(vast))).contains("no elements"));
}

fn names_and_types(tensors: &[Tensor]) -> Vec<(String, &'static str, Vec<usize>)> {
    (tensors.iter())
        .map(|t| (t.name.clone(), t.data.datatype().as_str(), t.shape.clone()))
        .collect()
}

#[test]
fn classification_records_become_one_tensor_per_key() {
    let predictions =
        json!([{"label": "POSITIVE", "score": 0.5}, {"label": "NEGATIVE", "score": 0.25}]);
    let outputs = outputs_from_predictions(&predictions);
    assert_eq!(
        outputs,
        vec![
            bytes_tensor("label", &[2], &["POSITIVE", "NEGATIVE"]),
            Tensor {
                name: "score".into(),
                shape: vec![2],
                data: TensorData::Fp32(vec![0.5, 0.25]),
            },
        ]
    );
}

#[test]
fn embeddings_become_one_fp32_tensor_with_their_shape() {
    let outputs = outputs_from_predictions(&json!([[0.5, -1.0], [2.0, 0.0], [1.0, 1.0]]));
    assert_eq!(
        outputs,
        vec![Tensor {
            name: "output".into(),
            shape: vec![3, 2],
            data: TensorData::Fp32(vec![0.5, -1.0, 2.0, 0.0, 1.0, 1.0]),
        }]
    );
    let cube = outputs_from_predictions(&json!([[[1], [2]], [[3], [4]]]));
    assert_eq!(
        names_and_types(&cube),
        [("output".into(), "FP32", vec![2, 2, 1])]
    );
    let flat = outputs_from_predictions(&json!([1, 2.5]));
    assert_eq!(names_and_types(&flat), [("output".into(), "FP32", vec![2])]);
}

#[test]
fn anything_else_becomes_json_text() {
    let mixed = json!(["plain", {"labels": ["a"], "scores": [0.5]}, 3, [1, [2]]]);
    let expected = [
        "plain",
        r#"{"labels":["a"],"scores":[0.5]}"#,
        "3",
        "[1,[2]]",
    ];
    assert_eq!(
        outputs_from_predictions(&mixed),
        vec![bytes_tensor("output", &[4], &expected)]
    );
    let ragged = outputs_from_predictions(&json!([[1, 2], [3]]));
    assert_eq!(
        names_and_types(&ragged),
        [("output".into(), "BYTES", vec![2])]
    );
    let differing_keys = outputs_from_predictions(&json!([{"a": 1}, {"b": 1}]));
    assert_eq!(
        names_and_types(&differing_keys),
        [("output".into(), "BYTES", vec![2])]
    );
    let beyond_fp32 = outputs_from_predictions(&json!([1e300]));
    assert_eq!(
        names_and_types(&beyond_fp32),
        [("output".into(), "BYTES", vec![1])]
    );
    let empty = outputs_from_predictions(&json!([]));
    assert_eq!(empty, vec![bytes_tensor("output", &[0], &[])]);
}

#[test]
fn metadata_matches_what_the_containers_answers_become() {
    let answers = [
        (
            "text-classification",
            json!([{"label": "POSITIVE", "score": 0.9}]),
        ),
        (
            "image-classification",
            json!([{"score": 0.9, "label": "tabby cat"}]),
        ),
        (
            "token-classification",
            json!([{"entity": "I-PER", "score": 0.9, "index": 2, "word": "Ada",
                    "start": 6, "end": 9}]),
        ),
        (
            "fill-mask",
            json!([{"score": 0.9, "token": 3007, "token_str": "capital",
                    "sequence": "Paris is the capital"}]),
        ),
        (
            "question-answering",
            json!([{"score": 0.7, "start": 33, "end": 38, "answer": "Paris"}]),
        ),
        ("text-generation", json!([{"generated_text": "and the"}])),
        ("summarization", json!([{"summary_text": "short"}])),
        (
            "translation",
            json!([{"translation_text": "[translated] x"}]),
        ),
        ("feature-extraction", json!([[0.1, 0.2], [0.3, 0.4]])),
        (
            "zero-shot-classification",
            json!([{"sequence": "x", "labels": ["a"], "scores": [1.0]}]),
        ),
        ("sentence-embeddings", json!([{"embeddings": [[0.1]]}])),
        ("tabular-regression", json!([1.5, 2.5])),
    ];
    for (task, predictions) in answers {
        let (_, declared) = metadata_for_task(Some(task));
        let produced = outputs_from_predictions(&predictions);
        let declared: Vec<_> = declared
            .iter()
            .map(|m| (m.name, m.datatype, m.shape.len()))
            .collect();
        let produced: Vec<_> = (produced.iter())
            .map(|t| (t.name.as_str(), t.data.datatype().as_str(), t.shape.len()))
            .collect();
        assert_eq!(declared, produced, "{task}");
    }
    let (inputs, _) = metadata_for_task(None);
    assert_eq!(
        serde_json::to_value(&inputs).unwrap(),
        json!([{"name": "text", "datatype": "BYTES", "shape": [-1]}])
    );
    let (inputs, _) = metadata_for_task(Some("tabular-classification"));
    let features = TensorMetadata {
        name: "features",
        datatype: "FP32",
        shape: vec![-1, -1],
    };
    assert_eq!(inputs, vec![features]);
}
