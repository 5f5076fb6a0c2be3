//! The Open Inference Protocol V2 routes (`/v2/...`) through the real API, worker and the HF
//! emulator: health, metadata, readiness, inference in JSON and in the binary tensor data
//! extension (as `tritonclient[http]` sends it: no Content-Type), the protocol's error shape
//! `{"error": …}` with our statuses, and the official `tritonclient[http]` client
//! (`tests/python/oip_tritonclient.py`).

use std::path::PathBuf;
use std::time::Duration;

use api::protocol::oip::{self, InferRequest, RequestedOutput, Tensor, TensorData};
use serde_json::{Value, json};
use tests::app::{ADMIN_KEY, MODEL_A_KEY, READ_KEY, TestApp};
use tests::db::Engine;

fn hf_body(version: &str) -> Value {
    json!({"model_version": version, "repository": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
           "task": "text-classification"})
}

async fn served() -> TestApp {
    let app = TestApp::start(Engine::Sqlite, &[("MAX_BODY_BYTES", "4000")]).await;
    let worker = app.worker();
    app.deploy_and_serve(&worker, "model-a", hf_body("3")).await;
    app
}

async fn raw(app: &TestApp, path: &str, key: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut request = app.client.post(format!("{}{path}", app.url)).body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("request")
}

/// The protocol's error shape with `status`; returns the sentence.
async fn oip_error(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.expect("json error body");
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["error"], "{body}");
    body["error"].as_str().expect("sentence").to_owned()
}

fn text_request(texts: &[&str]) -> Value {
    json!({"id": "r-1", "inputs": [{"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts}]})
}

#[tokio::test]
async fn health_metadata_and_readiness() {
    let app = served().await;
    let live = app
        .client
        .get(format!("{}/v2/health/live", app.url))
        .send()
        .await
        .expect("live");
    assert_eq!(live.status(), 200);
    let ready = app
        .client
        .get(format!("{}/v2/health/ready", app.url))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);

    let metadata: Value = app
        .get("/v2/models/model-a", MODEL_A_KEY)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(metadata["name"], "model-a");
    assert_eq!(metadata["versions"], json!(["3"]));
    assert_eq!(
        metadata["inputs"],
        json!([{"name": "text", "datatype": "BYTES", "shape": [-1]}])
    );
    let outputs: Vec<&str> = metadata["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| o["name"].as_str().expect("name"))
        .collect();
    assert_eq!(outputs, ["label", "score"]);

    assert_eq!(
        app.get("/v2/models/model-a/ready", MODEL_A_KEY)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get("/v2/models/model-a/versions/3/ready", MODEL_A_KEY)
            .await
            .status(),
        200
    );
    let stale = app
        .get("/v2/models/model-a/versions/2/ready", MODEL_A_KEY)
        .await;
    assert!(oip_error(stale, 404).await.contains("version 2"));
    assert!(
        oip_error(app.get("/v2/models/nobody", ADMIN_KEY).await, 404)
            .await
            .contains("nobody")
    );
    let no_key = app
        .client
        .get(format!("{}/v2/models/model-a", app.url))
        .send()
        .await
        .expect("req");
    oip_error(no_key, 401).await;
    oip_error(app.get("/v2/models/model-a", READ_KEY).await, 403).await;
}

#[tokio::test]
async fn json_inference_answers_output_tensors_from_the_predictions() {
    let app = served().await;
    let body = serde_json::to_vec(&text_request(&["I love this", "I hate this"])).expect("json");
    let response = raw(
        &app,
        "/v2/models/model-a/infer",
        Some(MODEL_A_KEY),
        body.clone(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["model_name"], "model-a");
    assert_eq!(answer["model_version"], "3");
    assert_eq!(answer["id"], "r-1");
    let label = &answer["outputs"][0];
    assert_eq!(label["name"], "label");
    assert_eq!(label["datatype"], "BYTES");
    assert_eq!(label["shape"], json!([2]));
    assert_eq!(label["data"], json!(["POSITIVE", "NEGATIVE"]));
    assert_eq!(answer["outputs"][1]["datatype"], "FP32");

    // The same answer as predict gives for the same inputs.
    let predict: Value = app
        .post(
            "/api/v1/models/model-a/predict",
            MODEL_A_KEY,
            &json!({"inputs": ["I love this", "I hate this"]}),
        )
        .await
        .json()
        .await
        .expect("json");
    let score = predict["predictions"][0]["score"].as_f64().expect("score");
    let oip_score = answer["outputs"][1]["data"][0].as_f64().expect("score");
    assert!((score - oip_score).abs() < 1e-6, "{score} vs {oip_score}");

    let versioned = raw(
        &app,
        "/v2/models/model-a/versions/3/infer",
        Some(MODEL_A_KEY),
        body.clone(),
    )
    .await;
    assert_eq!(versioned.status(), 200);
    let other = raw(
        &app,
        "/v2/models/model-a/versions/9/infer",
        Some(MODEL_A_KEY),
        body,
    )
    .await;
    oip_error(other, 404).await;
}

#[tokio::test]
async fn the_binary_extension_works_both_ways_without_a_content_type() {
    let app = served().await;
    let request = InferRequest {
        id: None,
        inputs: vec![Tensor {
            name: "text".into(),
            shape: vec![1],
            data: TensorData::Bytes(vec![b"I love this".to_vec()]),
        }],
        outputs: vec![
            RequestedOutput {
                name: "score".into(),
                binary: true,
            },
            RequestedOutput {
                name: "label".into(),
                binary: false,
            },
        ],
        binary_output: false,
        parameters: serde_json::Map::new(),
    };
    let encoded = oip::encode_request(&request, true).expect("encode");
    let response = app
        .client
        .post(format!("{}/v2/models/model-a/infer", app.url))
        .bearer_auth(MODEL_A_KEY)
        .header(
            oip::HEADER_LENGTH_HEADER,
            encoded.header_length.expect("binary").to_string(),
        )
        .body(encoded.body)
        .send()
        .await
        .expect("infer");
    assert_eq!(response.status(), 200);
    let length = response.headers()[oip::HEADER_LENGTH_HEADER]
        .to_str()
        .expect("header")
        .to_owned();
    let bytes = response.bytes().await.expect("body");
    let decoded = oip::parse_response(&bytes, Some(&length)).expect("decode");
    let names: Vec<&str> = decoded.outputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["score", "label"],
        "requested outputs, in their order"
    );
    let TensorData::Fp32(scores) = &decoded.outputs[0].data else {
        panic!("FP32 score")
    };
    assert!(scores[0] >= 0.5 && scores[0] < 1.0, "{scores:?}");
    assert_eq!(
        decoded.outputs[1].data,
        TensorData::Bytes(vec![b"POSITIVE".to_vec()])
    );
}

#[tokio::test]
async fn bad_inference_requests_answer_the_protocols_errors_never_a_5xx() {
    let app = served().await;
    let infer = "/v2/models/model-a/infer";
    let key = Some(MODEL_A_KEY);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{\"inputs\": ".to_vec(), 400, "not a valid inference request"),
        (br#"{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["one"]}]}"#.to_vec(), 422, "shape"),
        (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1]}]}"#.to_vec(), 422, "INT64"),
        (br#"{"inputs":[]}"#.to_vec(), 422, "input"),
        (serde_json::to_vec(&json!({"inputs": [{"name":"text","shape":[1],"datatype":"BYTES","data":["x".repeat(5000)]}]})).expect("json"), 413, "MAX_BODY_BYTES"),
    ];
    for (body, status, needle) in cases {
        let sentence = oip_error(raw(&app, infer, key, body).await, status).await;
        assert!(sentence.contains(needle), "{status}: {sentence}");
    }
    let truncated = app
        .client
        .post(format!("{}{infer}", app.url))
        .bearer_auth(MODEL_A_KEY)
        .header(oip::HEADER_LENGTH_HEADER, "999")
        .body(serde_json::to_vec(&text_request(&["x"])).expect("json"))
        .send()
        .await
        .expect("req");
    oip_error(truncated, 400).await;
    let body = serde_json::to_vec(&text_request(&["x"])).expect("json");
    oip_error(raw(&app, infer, None, body.clone()).await, 401).await;
    oip_error(raw(&app, infer, Some(READ_KEY), body.clone()).await, 403).await;
    oip_error(
        raw(&app, "/v2/models/unknown/infer", Some(ADMIN_KEY), body).await,
        404,
    )
    .await;
}

/// The official `tritonclient[http]` (from `HOKUSAI_TEST_PYTHON`'s virtualenv, which
/// scripts/test prepares; without it the test fails, never skips): server live, model ready,
/// metadata, and an inference with a BYTES tensor in its default binary encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_tritonclient_speaks_to_the_gateway() {
    let python = std::env::var("HOKUSAI_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("HOKUSAI_TEST_PYTHON is not set: scripts/test prepares the virtualenv with tritonclient[http]")
    });
    let app = served().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/oip_tritonclient.py");
    let host = app.url.trim_start_matches("http://").to_owned();
    let run = tokio::process::Command::new(&python)
        .arg(script)
        .env("HOKUSAI_URL", host)
        .env("HOKUSAI_KEY", MODEL_A_KEY)
        .env("HOKUSAI_MODEL", "model-a")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the client finished within 2 minutes")
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tritonclient failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("OK: tritonclient"), "{stdout}");
}

/// Generated bodies (garbage, and a valid request cut and continued with garbage) with and
/// without a binary header length: never a 5xx, every refusal in the protocol's shape.
#[tokio::test]
async fn generated_infer_bodies_never_get_a_5xx() {
    use proptest::prelude::any;
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    let app = served().await;
    let valid = serde_json::to_vec(&text_request(&["a", "b"])).expect("json");
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of(0u16..400),
        0..valid.len(),
        any::<bool>(),
    );
    let mut runner = TestRunner::deterministic();
    let (mut refused, mut answered) = (0, 0);
    for _ in 0..300 {
        let (garbage, header, cut, continue_valid) =
            strategy.new_tree(&mut runner).expect("case").current();
        let body = if continue_valid {
            let mut body = valid[..cut].to_vec();
            body.extend_from_slice(&garbage);
            body
        } else {
            garbage
        };
        let mut request = app
            .client
            .post(format!("{}/v2/models/model-a/infer", app.url))
            .bearer_auth(MODEL_A_KEY)
            .body(body.clone());
        if let Some(length) = header {
            request = request.header(oip::HEADER_LENGTH_HEADER, length.to_string());
        }
        let response = request.send().await.expect("answer");
        let status = response.status().as_u16();
        assert!(status < 500, "{status} for {body:?} (header {header:?})");
        if status >= 400 {
            oip_error(response, status).await;
            refused += 1;
        } else {
            answered += 1;
        }
    }
    println!("generated infer bodies: {refused} refused (4xx), {answered} answered, 0 × 5xx");
}
