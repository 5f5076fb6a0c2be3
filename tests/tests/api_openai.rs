//! The OpenAI-compatible routes through the real API, worker and the HF emulator's TGI/TEI
//! routes: pass-through, streaming chunk by chunk, token metrics, OpenAI's error shape, and
//! the official `openai` Python client (`tests/python/openai_client.py`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use emulator::ChaosConfig;
use serde_json::{Value, json};
use tests::app::{ADMIN_KEY, MODEL_A_KEY, READ_KEY, TestApp};
use tests::db::Engine;

async fn served() -> TestApp {
    served_with(&[]).await
}

async fn served_with(overrides: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![("MAX_BODY_BYTES", "4000")];
    settings.extend_from_slice(overrides);
    let app = TestApp::start(Engine::Sqlite, &settings).await;
    let worker = app.worker();
    let generation = json!({"model_version": "1", "repository": "openai-community/gpt2", "task": "text-generation"});
    app.deploy_and_serve(&worker, "model-a", generation).await;
    let embedding = json!({"model_version": "1", "repository": "sentence-transformers/all-MiniLM-L6-v2", "task": "feature-extraction"});
    app.deploy_and_serve(&worker, "embedder", embedding).await;
    app
}

async fn post(app: &TestApp, path: &str, key: Option<&str>, body: &[u8]) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}{path}", app.url))
        .body(body.to_vec());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("request")
}

/// OpenAI's error shape with `status`; returns the message.
async fn openai_error(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.expect("json error body");
    let error = &body["error"];
    assert!(
        error["type"].is_string() && error["code"].is_string(),
        "{body}"
    );
    error["message"].as_str().expect("message").to_owned()
}

fn chat(model: &str, stream: bool) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"model": model, "messages": [{"role": "user", "content": "hello there"}],
                               "max_tokens": 4, "stream": stream}),
    )
    .expect("json")
}

#[tokio::test]
async fn chat_passes_through_with_our_model_name_and_counts_tokens() {
    let app = served().await;
    let response = post(
        &app,
        "/v1/chat/completions",
        Some(MODEL_A_KEY),
        &chat("model-a", false),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["model"], "model-a");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["usage"]["completion_tokens"], 4);
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert_eq!(content.split(' ').count(), 4);

    let scoped = post(
        &app,
        "/api/v1/models/model-a/v1/chat/completions",
        Some(MODEL_A_KEY),
        &chat("anything", false),
    )
    .await;
    let scoped: Value = scoped.json().await.expect("json");
    assert_eq!(
        scoped["choices"][0]["message"]["content"], content,
        "deterministic upstream"
    );

    let metrics = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("hokusai_tokens_total")
                && l.contains("model-a")
                && l.contains("completion")
        })
        .unwrap_or_else(|| panic!("no token series in\n{metrics}"));
    assert!(
        line.ends_with(" 8"),
        "two answers of 4 completion tokens: {line}"
    );
}

#[tokio::test]
async fn streams_arrive_chunk_by_chunk_and_end_with_done() {
    streams_chunk_by_chunk(served().await).await;
}

#[tokio::test]
async fn payload_logging_does_not_hold_a_stream_back() {
    streams_chunk_by_chunk(served_with(&[("LOG_PAYLOADS", "true")]).await).await;
}

async fn streams_chunk_by_chunk(app: TestApp) {
    app.emulator.set_chaos(ChaosConfig {
        stream_chunk_delay_ms: 150,
        ..ChaosConfig::default()
    });
    let started = Instant::now();
    let mut response = post(
        &app,
        "/v1/chat/completions",
        Some(MODEL_A_KEY),
        &chat("model-a", true),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let first = response
        .chunk()
        .await
        .expect("chunk")
        .expect("a first chunk");
    let first_at = started.elapsed();
    let mut body = first.to_vec();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        body.extend_from_slice(&chunk);
    }
    let total = started.elapsed();
    // 4 words and [DONE] are 5 events, 4 delays of 150 ms: the first arrives long before the last.
    assert!(
        total - first_at >= Duration::from_millis(450),
        "first {first_at:?}, total {total:?}: buffered"
    );
    let text = String::from_utf8(body).expect("utf-8");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    assert_eq!(events.len(), 5, "{text}");
}

#[tokio::test]
async fn a_stream_cut_upstream_ends_with_an_error_event_and_is_counted() {
    let app = served().await;
    app.emulator.set_chaos(ChaosConfig {
        stream_abort_after: 2,
        ..ChaosConfig::default()
    });
    let response = post(
        &app,
        "/v1/chat/completions",
        Some(MODEL_A_KEY),
        &chat("model-a", true),
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = response
        .text()
        .await
        .expect("the client sees a complete stream");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "two chunks, then our error event: {text}");
    let error: Value =
        serde_json::from_str(events[2].trim_start_matches("data: ")).expect("json event");
    assert_eq!(error["error"]["type"], "upstream_error");
    assert!(!text.contains("[DONE]"));
    let metrics = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hokusai_stream_errors_total") && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_requests_answer_openais_error_shape_never_a_5xx() {
    let app = served().await;
    let key = Some(ADMIN_KEY);
    let chat_path = "/v1/chat/completions";
    assert!(
        openai_error(post(&app, chat_path, key, b"{\"model\":").await, 400)
            .await
            .contains("malformed JSON")
    );
    assert!(
        openai_error(post(&app, chat_path, key, br#"{"messages":[]}"#).await, 400)
            .await
            .contains("`model` is required")
    );
    let not_bool =
        br#"{"model":"model-a","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#;
    assert!(
        openai_error(post(&app, chat_path, key, not_bool).await, 400)
            .await
            .contains("boolean")
    );
    openai_error(
        post(&app, chat_path, key, &chat("no-such-model", false)).await,
        404,
    )
    .await;
    openai_error(
        post(&app, chat_path, None, &chat("model-a", false)).await,
        401,
    )
    .await;
    openai_error(
        post(&app, chat_path, Some(READ_KEY), &chat("model-a", false)).await,
        403,
    )
    .await;
    openai_error(
        post(&app, chat_path, Some(MODEL_A_KEY), &chat("embedder", false)).await,
        403,
    )
    .await;
    let wrong_task = openai_error(
        post(
            &app,
            "/v1/embeddings",
            key,
            br#"{"model":"model-a","input":"x"}"#,
        )
        .await,
        400,
    )
    .await;
    assert!(wrong_task.contains("feature-extraction"), "{wrong_task}");
    let upstream_refusal = br#"{"model":"model-a","messages":"not a list"}"#;
    let message = openai_error(post(&app, chat_path, key, upstream_refusal).await, 422).await;
    assert!(
        message.contains("validation error") && !message.contains("http"),
        "{message}"
    );
    let large = serde_json::to_vec(
        &json!({"model": "model-a", "messages": [{"role": "user", "content": "x".repeat(5000)}]}),
    )
    .expect("json");
    openai_error(post(&app, chat_path, key, &large).await, 413).await;
}

#[tokio::test]
async fn embeddings_and_the_models_list() {
    let app = served().await;
    let body = br#"{"model":"embedder","input":["a","b"]}"#;
    let answer: Value = post(&app, "/v1/embeddings", Some(ADMIN_KEY), body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(answer["model"], "embedder");
    assert_eq!(answer["data"].as_array().expect("data").len(), 2);
    let models: Value = app
        .get("/v1/models", MODEL_A_KEY)
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["model-a"], "only the models this key may call");
}

/// The official `openai` client (from `HOKUSAI_TEST_PYTHON`'s virtualenv, which scripts/test
/// prepares; without it the test fails, never skips).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_works_against_the_gateway() {
    let python = std::env::var("HOKUSAI_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("HOKUSAI_TEST_PYTHON is not set: scripts/test prepares the virtualenv with openai")
    });
    let app = served().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/openai_client.py");
    let run = tokio::process::Command::new(&python)
        .arg(script)
        .env("HOKUSAI_BASE_URL", format!("{}/v1", app.url))
        .env("HOKUSAI_KEY", ADMIN_KEY)
        .env("HOKUSAI_CHAT_MODEL", "model-a")
        .env("HOKUSAI_EMBED_MODEL", "embedder")
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
        "openai client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("OK: openai"), "{stdout}");
}

/// Generated bodies (garbage, and a valid chat request cut and continued with garbage) on
/// every generation route, streamed or not: never a 5xx, every refusal in OpenAI's shape.
#[tokio::test]
async fn generated_bodies_never_get_a_5xx() {
    use proptest::prelude::any;
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    let app = served().await;
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..200),
        0usize..3,
        any::<bool>(),
        any::<bool>(),
        0usize..80,
    );
    let routes = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];
    let mut runner = TestRunner::deterministic();
    let (mut refused, mut answered) = (0, 0);
    for _ in 0..300 {
        let (garbage, route, stream, continue_valid, cut) =
            strategy.new_tree(&mut runner).expect("case").current();
        let valid = chat("model-a", stream);
        let body = if cut % 3 == 0 {
            // Well-formed JSON whose fields have generated types: the container's own
            // validation (422) and ours (400) both answer.
            let pick = |options: &[Value]| options[garbage.len() % options.len()].clone();
            serde_json::to_vec(&json!({
                "model": pick(&[json!("model-a"), json!("embedder"), json!(7), json!(null), json!("nobody")]),
                "messages": pick(&[json!([]), json!("x"), json!([{"role": "user", "content": "hi"}]), json!([{"role": 1}])]),
                "prompt": pick(&[json!("x"), json!(["a", "b"]), json!(3)]),
                "input": pick(&[json!("x"), json!([]), json!({})]),
                "stream": pick(&[json!(stream), json!("yes"), json!(null)]),
                "max_tokens": pick(&[json!(2), json!(0), json!(-1), json!("many")]),
                "encoding_format": pick(&[json!("float"), json!("base64"), json!("hex")]),
            }))
            .expect("json")
        } else if continue_valid {
            let mut body = valid[..cut.min(valid.len())].to_vec();
            body.extend_from_slice(&garbage);
            body
        } else {
            garbage
        };
        let response = post(&app, routes[route], Some(ADMIN_KEY), &body).await;
        let status = response.status().as_u16();
        assert!(
            status < 500,
            "{status} for {:?} on {}",
            String::from_utf8_lossy(&body),
            routes[route]
        );
        if status >= 400 {
            openai_error(response, status).await;
            refused += 1;
        } else {
            answered += 1;
        }
    }
    println!("generated OpenAI bodies: {refused} refused (4xx), {answered} answered, 0 × 5xx");
}
