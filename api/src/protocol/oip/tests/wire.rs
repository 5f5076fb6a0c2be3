//! Bodies: JSON and binary round trips with hand-built bytes, tritonclient's default
//! request, and every refusal with its variant.

use serde_json::{Value, json};

use super::super::*;
use super::{asking_all, binary_body, bytes_tensor, fp32_tensor, input, response};

#[test]
fn json_request_and_response_round_trip() {
    let body = br#"{"id": "r1", "parameters": {"top_k": 2},
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hi", "you"]},
                   {"name": "f", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3.5, -4]]}],
        "outputs": [{"name": "score"}, {"name": "label", "parameters": {"binary_data": false}}]}"#;

    let request = parse_request(body, None).unwrap();

    assert_eq!(request.id.as_deref(), Some("r1"));
    assert_eq!(
        request.parameters,
        json!({"top_k": 2}).as_object().unwrap().clone()
    );
    let f = fp32_tensor("f", &[2, 2], &[1.0, 2.0, 3.5, -4.0]);
    assert_eq!(
        request.inputs,
        [bytes_tensor("text", &[2], &["hi", "you"]), f]
    );
    let names: Vec<_> = request
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.binary))
        .collect();
    assert_eq!(names, [("score", false), ("label", false)]);

    let outputs = vec![
        bytes_tensor("label", &[1], &["POSITIVE"]),
        fp32_tensor("score", &[1], &[0.5]),
    ];
    let encoded = encode_response(&response(outputs), &request).unwrap();

    assert_eq!(
        (encoded.header_length, encoded.content_type),
        (None, "application/json")
    );
    let body: Value = serde_json::from_slice(&encoded.body).unwrap();
    assert_eq!(
        body,
        json!({"model_name": "sentiment", "model_version": "3", "id": "r1", "outputs": [
            {"name": "score", "datatype": "FP32", "shape": [1], "data": [0.5]},
            {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["POSITIVE"]}]})
    );
}

#[test]
fn binary_bytes_are_length_prefixed_little_endian() {
    let tail = b"\x02\x00\x00\x00hi\x03\x00\x00\x00you";
    let header = input(r#""shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":13}"#);
    let (body, length) = binary_body(&header, tail);

    let request = parse_request(&body, Some(&length)).unwrap();
    assert_eq!(request.inputs, [bytes_tensor("text", &[2], &["hi", "you"])]);

    let out = vec![bytes_tensor("text", &[2], &["hi", "you"])];
    let encoded = encode_response(&response(out), &asking_all(true)).unwrap();

    let json_len = encoded.header_length.unwrap();
    assert_eq!(encoded.content_type, "application/octet-stream");
    assert_eq!(&encoded.body[json_len..], tail);
    let header: Value = serde_json::from_slice(&encoded.body[..json_len]).unwrap();
    assert_eq!(
        header["outputs"][0],
        json!({"name": "text", "datatype": "BYTES", "shape": [2],
               "parameters": {"binary_data_size": 13}})
    );
}

#[test]
fn binary_fp32_is_four_little_endian_bytes_per_element() {
    let tail = [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0]; // 1.0, -2.5
    let header = input(r#""shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}"#);
    let (body, length) = binary_body(&header, &tail);

    let request = parse_request(&body, Some(&length)).unwrap();
    assert_eq!(request.inputs, [fp32_tensor("text", &[1, 2], &[1.0, -2.5])]);

    let mut wanted = asking_all(false);
    wanted.outputs = vec![RequestedOutput {
        name: "y".into(),
        binary: true,
    }];
    let outputs = vec![
        fp32_tensor("x", &[2], &[0.0, 0.0]),
        fp32_tensor("y", &[2], &[1.0, -2.5]),
    ];
    let encoded = encode_response(&response(outputs), &wanted).unwrap();
    let json_len = encoded.header_length.unwrap();
    assert_eq!(&encoded.body[json_len..], tail);
    let header: Value = serde_json::from_slice(&encoded.body[..json_len]).unwrap();
    assert_eq!(
        header["outputs"].as_array().unwrap().len(),
        1,
        "only the requested output"
    );
}

#[test]
fn tritonclient_default_request_is_understood() {
    // tritonclient[http] with binary_data=True (its default) and no requested outputs.
    let header = concat!(
        r#"{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "#,
        r#""parameters": {"binary_data_size": 14}}], "parameters": {"binary_data_output": true}}"#
    );
    let (body, length) = binary_body(header, b"\x0a\x00\x00\x00I love you");

    let request = parse_request(&body, Some(&length)).unwrap();

    assert_eq!(
        request.inputs,
        [bytes_tensor("text", &[1], &["I love you"])]
    );
    assert!(request.binary_output && request.outputs.is_empty());
    assert!(
        request.parameters.is_empty(),
        "binary_data_output is not the model's"
    );
    assert_eq!(provider_inputs(&request).unwrap(), json!("I love you"));
    let outputs = outputs_from_predictions(&json!([{"label": "POSITIVE", "score": 0.75}]));
    let encoded = encode_response(&response(outputs), &request).unwrap();
    let length = encoded.header_length.map(|n| n.to_string());
    let decoded = parse_response(&encoded.body, length.as_deref()).unwrap();
    assert_eq!(
        decoded.outputs[0],
        bytes_tensor("label", &[1], &["POSITIVE"])
    );
    assert_eq!(decoded.outputs[1], fp32_tensor("score", &[1], &[0.75]));
}

#[test]
fn request_level_binary_output_applies_unless_an_output_says_otherwise() {
    let body = br#"{"parameters": {"binary_data_output": true, "top_k": 1},
        "inputs": [{"name": "t", "shape": [], "datatype": "BYTES", "data": ["x"]}],
        "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": false}}]}"#;
    let request = parse_request(body, None).unwrap();
    let flags: Vec<_> = request.outputs.iter().map(|o| o.binary).collect();
    assert_eq!(flags, [true, false]);
    assert_eq!(
        request.parameters,
        json!({"top_k": 1}).as_object().unwrap().clone()
    );
}

#[test]
fn an_unknown_requested_output_names_the_available_ones() {
    let mut request = asking_all(false);
    request.outputs = vec![RequestedOutput {
        name: "logits".into(),
        binary: false,
    }];
    let outputs = vec![
        bytes_tensor("label", &[0], &[]),
        fp32_tensor("score", &[0], &[]),
    ];
    let Err(OipError::Invalid(message)) = encode_response(&response(outputs), &request) else {
        panic!("expected Invalid");
    };
    assert_eq!(
        message,
        "output \"logits\" does not exist; available: label, score"
    );
}

#[test]
fn non_utf8_bytes_go_binary_but_not_in_json() {
    let outputs = vec![Tensor {
        name: "raw".into(),
        shape: vec![1],
        data: TensorData::Bytes(vec![vec![0xff]]),
    }];
    let json = encode_response(&response(outputs.clone()), &asking_all(false));
    assert!(matches!(json, Err(OipError::Invalid(m)) if m.contains("not UTF-8")));
    let binary = encode_response(&response(outputs), &asking_all(true)).unwrap();
    assert!(binary.body.ends_with(b"\x01\x00\x00\x00\xff"));
}

/// Which refusal a body gets.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Malformed,
    Invalid,
}

/// Asserts that `body` (with the header length `length`) is refused as `kind` with a message
/// containing `expected`.
fn assert_refused(body: impl AsRef<[u8]>, length: Option<String>, kind: Kind, expected: &str) {
    let body = body.as_ref();
    let (got, message) = match parse_request(body, length.as_deref()) {
        Err(OipError::Malformed(m)) => (Kind::Malformed, m),
        Err(OipError::Invalid(m)) => (Kind::Invalid, m),
        Ok(request) => panic!("accepted: {request:?}"),
    };
    let context = String::from_utf8_lossy(body);
    assert_eq!(got, kind, "{context}: {message}");
    assert!(
        message.contains(expected),
        "{context}: {message:?} lacks {expected:?}"
    );
}

/// Asserts that binary `header` + `tail` is refused as `kind` with `expected` in its message.
fn assert_binary_refused(header: &str, tail: &[u8], kind: Kind, expected: &str) {
    let (body, length) = binary_body(header, tail);
    assert_refused(body, Some(length), kind, expected);
}

fn sized(datatype: &str, size: i64) -> String {
    let parameters = format!(r#""parameters":{{"binary_data_size":{size}}}"#);
    input(&format!(
        r#""shape":[2],"datatype":"{datatype}",{parameters}"#
    ))
}

#[test]
fn unreadable_bodies_are_malformed() {
    use Kind::Malformed;
    assert_refused(
        "{not json",
        None,
        Malformed,
        "not a valid inference request",
    );
    assert_refused(r#"{"inputs":[]} x"#, None, Malformed, "trailing characters");
    assert_refused("{}", None, Malformed, "missing field `inputs`");
    let bad_shape = input(r#""shape":["a"],"datatype":"FP32","data":[1]"#);
    assert_refused(bad_shape, None, Malformed, "inputs[0].shape[0]");
    let number_as_text = input(r#""shape":[1],"datatype":"BYTES","data":[1]"#);
    assert_refused(
        number_as_text,
        None,
        Malformed,
        "BYTES data must be strings",
    );
    let text_as_number = input(r#""shape":[1],"datatype":"FP32","data":["1"]"#);
    assert_refused(text_as_number, None, Malformed, "FP32 data must be numbers");
    let scalar_data = input(r#""shape":[1],"datatype":"FP32","data":1"#);
    assert_refused(scalar_data, None, Malformed, "data must be an array");
    assert_refused(sized("FP32", -4), None, Malformed, "non-negative integer");
    let yes = r#"{"parameters":{"binary_data_output":"yes"},"inputs":[]}"#;
    assert_refused(yes, None, Malformed, "must be a boolean");
    assert_refused("{}", Some("two".into()), Malformed, "not a length in bytes");
    assert_refused(
        "{}",
        Some("3".into()),
        Malformed,
        "says 3 bytes but the body has 2",
    );
    let no_header = "there is no Inference-Header-Content-Length header";
    assert_refused(sized("FP32", 8), None, Malformed, no_header);
    let truncated = "only 4 bytes of binary data remain";
    assert_binary_refused(&sized("FP32", 8), &[0; 4], Malformed, truncated);
    let leftover = "2 bytes of binary data follow the last binary tensor";
    assert_binary_refused(&sized("FP32", 8), &[0; 10], Malformed, leftover);
}

#[test]
fn unacceptable_content_is_invalid() {
    use Kind::Invalid;
    let int64 = input(r#""shape":[1],"datatype":"INT64","data":[1]"#);
    let unsupported = r#"input "text": datatype "INT64" is not supported; supported: BYTES, FP32"#;
    assert_refused(int64, None, Invalid, unsupported);
    let three = input(r#""shape":[2],"datatype":"BYTES","data":["a","b","c"]"#);
    assert_refused(
        three,
        None,
        Invalid,
        r#"input "text": 3 elements for shape [2]"#,
    );
    let negative = input(r#""shape":[-1],"datatype":"BYTES","data":["a"]"#);
    assert_refused(negative, None, Invalid, "negative dimension");
    let vast = input(r#""shape":[4294967296,4294967296,16],"datatype":"FP32","data":[]"#);
    assert_refused(vast, None, Invalid, "too many elements");
    let deep = input(&format!(
        r#""shape":{:?},"datatype":"FP32","data":[1]"#,
        [1; 33]
    ));
    assert_refused(deep, None, Invalid, "33 dimensions");
    let huge = input(r#""shape":[1],"datatype":"FP32","data":[1e39]"#);
    assert_refused(huge, None, Invalid, "element 0 is not a finite FP32 number");
    let no_data = input(r#""shape":[1],"datatype":"FP32""#);
    assert_refused(
        no_data,
        None,
        Invalid,
        "has neither data nor binary_data_size",
    );
    let both = r#""shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}"#;
    assert_binary_refused(&input(both), &[0; 4], Invalid, "has both");
    assert_refused(
        r#"{"inputs":[]}"#,
        None,
        Invalid,
        "the request has no inputs",
    );
    let a = r#"{"name":"a","shape":[],"datatype":"FP32","data":[1]}"#;
    let twice = format!(r#"{{"inputs":[{a},{a}]}}"#);
    assert_refused(twice, None, Invalid, r#"input "a" appears twice"#);
    let outputs_twice = format!(r#"{{"inputs":[{a}],"outputs":[{{"name":"o"}},{{"name":"o"}}]}}"#);
    assert_refused(
        outputs_twice,
        None,
        Invalid,
        r#"output "o" is requested twice"#,
    );
}

#[test]
fn binary_data_that_does_not_fit_its_tensor_is_invalid() {
    use Kind::Invalid;
    let fp32_size = "binary_data_size is 4 but shape [2] needs 4 bytes for each of 2 FP32 elements";
    assert_binary_refused(&sized("FP32", 4), &[0; 4], Invalid, fp32_size);
    let nan = [0, 0, 0xc0, 0x7f, 0, 0, 0, 0];
    let not_finite = "element 0 is not a finite FP32 number";
    assert_binary_refused(&sized("FP32", 8), &nan, Invalid, not_finite);
    let one = b"\x01\x00\x00\x00a";
    let too_few = r#"input "text": 1 elements for shape [2]"#;
    assert_binary_refused(&sized("BYTES", 5), one, Invalid, too_few);
    let three = b"\x01\x00\x00\x00a\x01\x00\x00\x00b\x01\x00\x00\x00c";
    let too_many = "more than the 2 BYTES elements";
    assert_binary_refused(&sized("BYTES", 15), three, Invalid, too_many);
    let long = b"\x05\x00\x00\x00ab";
    let past = "BYTES element 0 runs past binary_data_size";
    assert_binary_refused(&sized("BYTES", 6), long, Invalid, past);
    let cut = b"\x01\x00\x00\x00a\x01\x00";
    let inside = "ends inside a BYTES length";
    assert_binary_refused(&sized("BYTES", 7), cut, Invalid, inside);
}
