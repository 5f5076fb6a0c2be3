//! The emulator's OpenAI-compatible routes (TGI's `/v1/chat/completions` and
//! `/v1/completions`, TEI's `/v1/embeddings`) under an endpoint's `status.url`, seen by a
//! plain HTTP client: deterministic answers, server-sent events read as they arrive, the
//! streaming chaos knobs, TGI's error shapes and the proxy's scale-to-zero behaviour.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::time::Instant;

const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";
const EMBEDDINGS: &str = "/v1/embeddings";

/// An emulator and a client for it.
struct Fixture {
    emu: EmulatorHandle,
    http: reqwest::Client,
}

impl Fixture {
    async fn start() -> Self {
        let emu = Emulator::start(EmulatorConfig::default())
            .await
            .expect("emulator");
        Self {
            emu,
            http: reqwest::Client::new(),
        }
    }

    /// Creates endpoints `(name, task)` in namespace `ns`, waits until they run and returns
    /// their URLs, in order.
    async fn endpoints(&self, wanted: &[(&str, &str)]) -> Vec<String> {
        join_all(wanted.iter().map(|(name, task)| self.endpoint(name, task))).await
    }

    async fn endpoint(&self, name: &str, task: &str) -> String {
        let body = json!({"name": name, "type": "authenticated",
            "provider": {"vendor": "aws", "region": "us-east-1"},
            "compute": {"accelerator": "cpu", "instanceType": "intel-spr", "instanceSize": "x1",
                        "scaling": {"minReplica": 1, "maxReplica": 1}},
            "model": {"repository": "gpt2", "framework": "pytorch", "task": task,
                      "image": {"huggingface": {}}}});
        let created = self.management("", Some(body)).await;
        assert_eq!(created.status(), 200, "{:?}", created.text().await);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let endpoint: Value = self.management(name, None).await.json().await.unwrap();
            if endpoint["status"]["state"] == "running" {
                return endpoint["status"]["url"].as_str().expect("url").to_owned();
            }
            assert!(Instant::now() < deadline, "stuck in {endpoint}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET` (no body) or `POST` on `{v2}/endpoint/ns/{path}`.
    async fn management(&self, path: &str, body: Option<Value>) -> reqwest::Response {
        let url = format!("{}/endpoint/ns/{path}", self.emu.v2_url());
        let request = match body {
            Some(body) => self.http.post(url.trim_end_matches('/')).json(&body),
            None => self.http.get(url),
        };
        request.bearer_auth(&self.emu.token).send().await.unwrap()
    }

    /// `POST {url}{route}` with the token and `body` as it is.
    async fn post_raw(&self, url: &str, route: &str, body: String) -> reqwest::Response {
        self.http
            .post(format!("{url}{route}"))
            .bearer_auth(&self.emu.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, url: &str, route: &str, body: &Value) -> reqwest::Response {
        self.post_raw(url, route, body.to_string()).await
    }

    /// A 200 answer's JSON.
    async fn answer(&self, url: &str, route: &str, body: &Value) -> Value {
        let response = self.post(url, route, body).await;
        assert_eq!(response.status(), 200, "{body}");
        response.json().await.unwrap()
    }

    async fn stream(&self, url: &str, route: &str, body: &Value) -> Streamed {
        Streamed::read(self.post(url, route, body).await).await
    }

    /// `POST /_emulator/chaos` with a partial body (the other knobs take their defaults).
    async fn set_chaos(&self, chaos: Value) {
        let url = format!("{}/_emulator/chaos", self.emu.base_url);
        let set = self.http.post(url).json(&chaos).send().await.unwrap();
        assert_eq!(set.status(), 200);
    }
}

/// A streamed answer as read: each event's `data` with the time it was complete, and the
/// error that ended the body, if any.
struct Streamed {
    content_type: String,
    events: Vec<(Instant, String)>,
    error: Option<reqwest::Error>,
}

impl Streamed {
    async fn read(mut response: reqwest::Response) -> Self {
        let content_type = response.headers()["content-type"].to_str().unwrap().into();
        let (mut events, mut buffer) = (Vec::new(), String::new());
        let error = loop {
            match response.chunk().await {
                Ok(Some(bytes)) => buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let data = event.trim_end().strip_prefix("data: ").expect("data line");
                events.push((Instant::now(), data.to_owned()));
            }
        };
        Self {
            content_type,
            events,
            error,
        }
    }

    /// The JSON chunks (every event but `[DONE]`).
    fn chunks(&self) -> Vec<Value> {
        (self.events.iter())
            .filter(|(_, data)| data != "[DONE]")
            .map(|(_, data)| serde_json::from_str(data).expect("JSON chunk"))
            .collect()
    }

    fn last(&self) -> &str {
        self.events.last().map_or("", |(_, data)| data.as_str())
    }

    /// The concatenated `choices[0]` text pieces at `pointer` (`/delta/content`, `/text`).
    fn text(&self, pointer: &str) -> String {
        (self.chunks().iter())
            .filter_map(|c| {
                c["choices"][0]
                    .pointer(pointer)?
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// A chat body: a system message, `content` from the user, and `extra` fields.
fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": "tgi", "messages": [
        {"role": "system", "content": "You are terse"},
        {"role": "user", "content": content}]});
    let extra = extra.as_object().expect("extra fields").clone();
    body.as_object_mut().expect("object").extend(extra);
    body
}

#[tokio::test]
async fn chat_answers_are_deterministic_with_tgis_shape_and_usage() {
    let fx = Fixture::start().await;
    let url = fx.endpoint("llm", "text-generation").await;
    let five = json!({"max_tokens": 5});

    let marked = fx
        .post(&url, CHAT, &chat("Say hello to me", five.clone()))
        .await;
    let marker = marked.headers()["x-hokusai-emulator"].clone();
    let first: Value = marked.json().await.unwrap();
    let again = fx
        .answer(&url, CHAT, &chat("Say hello to me", five.clone()))
        .await;
    let other = fx.answer(&url, CHAT, &chat("Say goodbye now", five)).await;
    let default = fx.answer(&url, CHAT, &chat("Hi", json!({}))).await;

    let content = |answer: &Value| answer["choices"][0]["message"]["content"].clone();
    assert_eq!(marker, "1");
    assert_eq!(content(&first), content(&again));
    assert_ne!(content(&first), content(&other));
    assert_eq!(content(&first).as_str().unwrap().split(' ').count(), 5);
    let usage = json!({"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12});
    assert_eq!(first["usage"], usage, "3 + 4 words of prompt");
    assert_eq!(first["object"], "chat.completion");
    assert_eq!(first["model"], "tgi");
    assert_eq!(first["system_fingerprint"], "emulator");
    assert_eq!(first["choices"][0]["message"]["role"], "assistant");
    assert_eq!(first["choices"][0]["finish_reason"], "length");
    assert!(first["choices"][0]["logprobs"].is_null());
    assert!(first["id"].is_string() && first["created"].is_u64());
    assert_eq!(default["usage"]["completion_tokens"], 16);
}

#[tokio::test]
async fn streamed_chat_sends_a_chunk_per_word_then_done_and_usage_on_request() {
    let fx = Fixture::start().await;
    let url = fx.endpoint("llm", "text-generation").await;
    let whole = fx
        .answer(&url, CHAT, &chat("Tell a story", json!({"max_tokens": 4})))
        .await;

    let body = chat("Tell a story", json!({"max_tokens": 4, "stream": true}));
    let plain = fx.stream(&url, CHAT, &body).await;
    let include =
        json!({"max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}});
    let counted = fx.stream(&url, CHAT, &chat("Tell a story", include)).await;

    let chunks = plain.chunks();
    assert_eq!(plain.content_type, "text/event-stream");
    assert!(plain.error.is_none());
    assert_eq!((chunks.len(), plain.last()), (4, "[DONE]"));
    assert_eq!(
        plain.text("/delta/content"),
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(
            (&chunk["id"], &chunk["usage"]),
            (&chunks[0]["id"], &Value::Null)
        );
        assert_eq!(chunk["choices"][0]["delta"]["role"], "assistant");
    }
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .collect();
    assert_eq!(
        finish,
        [&Value::Null, &Value::Null, &Value::Null, &json!("length")]
    );
    let with_usage = counted.chunks();
    assert_eq!((with_usage.len(), counted.last()), (5, "[DONE]"));
    assert_eq!(with_usage[4]["choices"], json!([]));
    assert_eq!(with_usage[4]["usage"], whole["usage"]);
}

#[tokio::test]
async fn completions_answer_one_choice_per_prompt_streamed_or_not() {
    let fx = Fixture::start().await;
    let url = fx.endpoint("llm", "text-generation").await;
    let single = json!({"prompt": "Once upon a time", "max_tokens": 3});
    let batch = json!({"prompt": ["Once upon a time", "x"], "max_tokens": 3});
    let streamed = json!({"prompt": "Once upon a time", "max_tokens": 3, "stream": true});

    let single = fx.answer(&url, COMPLETIONS, &single).await;
    let batch = fx.answer(&url, COMPLETIONS, &batch).await;
    let streamed = fx.stream(&url, COMPLETIONS, &streamed).await;

    assert_eq!(single["object"], "text_completion");
    let text = single["choices"][0]["text"].as_str().unwrap();
    assert_eq!(text.split(' ').count(), 3);
    let usage = json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7});
    assert_eq!(single["usage"], usage);
    assert_eq!(batch["choices"].as_array().unwrap().len(), 2);
    assert_eq!(
        (&batch["choices"][0]["text"], &batch["choices"][1]["index"]),
        (&json!(text), &json!(1))
    );
    assert_eq!(batch["usage"]["total_tokens"], (4 + 1) + 2 * 3);
    let chunks = streamed.chunks();
    assert_eq!((chunks.len(), streamed.last()), (3, "[DONE]"));
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(streamed.text("/text"), text);
}

#[tokio::test]
async fn embeddings_come_as_floats_or_as_base64_of_the_same_f32s() {
    let fx = Fixture::start().await;
    let urls = fx
        .endpoints(&[("tei", "feature-extraction"), ("st", "sentence-embeddings")])
        .await;
    let input = json!(["hello world", "bye"]);

    let floats = fx
        .answer(&urls[0], EMBEDDINGS, &json!({"input": input}))
        .await;
    let base64 = json!({"input": input, "encoding_format": "base64"});
    let encoded = fx.answer(&urls[0], EMBEDDINGS, &base64).await;
    let predicted = fx
        .answer(&urls[0], "", &json!({"inputs": "hello world"}))
        .await;
    let sentence = fx
        .answer(&urls[1], EMBEDDINGS, &json!({"input": "bye"}))
        .await;

    let vector = |v: &Value| -> Vec<f32> {
        let numbers = v.as_array().expect("array of numbers");
        numbers.iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let first = vector(&floats["data"][0]["embedding"]);
    let bytes = STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = (bytes.chunks_exact(4))
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(
        (&floats["object"], &floats["model"]),
        (&json!("list"), &json!("tei"))
    );
    assert_eq!(floats["data"][0]["object"], "embedding");
    assert_eq!(floats["data"][1]["index"], 1);
    assert_eq!(
        floats["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );
    assert_eq!(first.len(), 8);
    assert_eq!(decoded, first);
    assert_eq!(
        vector(&predicted[0]),
        first,
        "the feature-extraction prediction's vector"
    );
    assert_eq!(
        sentence["data"][0]["embedding"],
        floats["data"][1]["embedding"]
    );
}

#[tokio::test]
async fn a_container_without_the_route_answers_404() {
    let fx = Fixture::start().await;
    let wanted = [
        ("cls", "text-classification"),
        ("llm", "text-generation"),
        ("tei", "feature-extraction"),
    ];
    let urls = fx.endpoints(&wanted).await;

    let chat_on_classifier = fx.post(&urls[0], CHAT, &chat("Hi", json!({}))).await;
    let embeddings_on_llm = fx.post(&urls[1], EMBEDDINGS, &json!({"input": "x"})).await;
    let completions_on_tei = fx
        .post(&urls[2], COMPLETIONS, &json!({"prompt": "x"}))
        .await;

    assert_eq!(chat_on_classifier.status(), 404);
    assert_eq!(chat_on_classifier.headers()["x-hokusai-emulator"], "1");
    assert_eq!(
        chat_on_classifier.json::<Value>().await.unwrap(),
        json!({"error": "Not Found: the text-classification container has no /v1/chat/completions route",
               "error_type": "not_found"})
    );
    assert_eq!(embeddings_on_llm.status(), 404);
    assert_eq!(completions_on_tei.status(), 404);
    assert_eq!(
        completions_on_tei.json::<Value>().await.unwrap()["error"],
        "Not Found: the feature-extraction container has no /v1/completions route"
    );
}

#[tokio::test]
async fn bad_bodies_answer_400_or_422_with_tgis_error_shape() {
    let fx = Fixture::start().await;
    let urls = fx
        .endpoints(&[("llm", "text-generation"), ("tei", "feature-extraction")])
        .await;
    let (llm, tei) = (&urls[0], &urls[1]);
    let hi = json!({"role": "user", "content": "Hi"});
    let invalid = [
        (llm, CHAT, json!({"messages": []})),
        (llm, CHAT, json!({"messages": [{"role": "user"}]})),
        (
            llm,
            CHAT,
            json!({"messages": [{"role": "user", "content": 3}]}),
        ),
        (llm, CHAT, json!({"messages": [hi], "stream": "yes"})),
        (llm, CHAT, json!({"messages": [hi], "max_tokens": 0})),
        (llm, COMPLETIONS, json!({"prompt": 5})),
        (tei, EMBEDDINGS, json!({"inputs": "x"})),
        (
            tei,
            EMBEDDINGS,
            json!({"input": "x", "encoding_format": "int8"}),
        ),
    ];

    let unreadable = fx.post_raw(llm, CHAT, "{not json".into()).await;
    let mut answers = Vec::new();
    for (url, route, body) in invalid {
        let response = fx.post(url, route, &body).await;
        answers.push((
            body,
            response.status(),
            response.json::<Value>().await.unwrap(),
        ));
    }

    assert_eq!(unreadable.status(), 400);
    let unreadable: Value = unreadable.json().await.unwrap();
    assert_eq!(unreadable["error_type"], "validation");
    assert!(unreadable["error"].as_str().unwrap().contains("JSON"));
    for (body, status, answer) in answers {
        assert_eq!(status, 422, "{body}");
        assert_eq!(answer["error_type"], "validation", "{body}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.starts_with("Input validation error: "), "{error}");
    }
}

#[tokio::test]
async fn a_scaled_to_zero_endpoint_answers_503_unless_asked_to_wait() {
    let fx = Fixture::start().await;
    let url = fx.endpoint("llm", "text-generation").await;
    let zero = fx.management("llm/scale-to-zero", Some(json!({}))).await;
    assert_eq!(zero.status(), 200);
    let body = chat("Hi", json!({"max_tokens": 2}));
    let request = || fx.http.post(format!("{url}{CHAT}")).json(&body);

    let anonymous = request().send().await.unwrap();
    let cold = fx.post(&url, CHAT, &body).await;
    let waiting = request()
        .bearer_auth(&fx.emu.token)
        .header("x-scale-up-timeout", "5");
    let woken = waiting.send().await.unwrap();

    assert_eq!(anonymous.status(), 401);
    assert_eq!(cold.status(), 503);
    assert!(cold.headers().contains_key("retry-after"));
    assert_eq!(woken.status(), 200);
    let answer: Value = woken.json().await.unwrap();
    assert_eq!(answer["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn stream_chunk_delay_spaces_the_chunks_out() {
    let fx = Fixture::start().await;
    let url = fx.endpoint("llm", "text-generation").await;
    fx.set_chaos(json!({"stream_chunk_delay_ms": 40})).await;

    let body = chat("Go slowly", json!({"max_tokens": 5, "stream": true}));
    let streamed = fx.stream(&url, CHAT, &body).await;

    assert_eq!((streamed.chunks().len(), streamed.last()), (5, "[DONE]"));
    let spread = streamed.events[4].0 - streamed.events[0].0;
    assert!(spread >= 4 * Duration::from_millis(40), "{spread:?}");
}

#[tokio::test]
async fn stream_abort_after_cuts_the_body_before_done() {
    let fx = Fixture::start().await;
    let url = fx.endpoint("llm", "text-generation").await;
    fx.set_chaos(json!({"stream_abort_after": 3})).await;
    let streamed = |n: u32| chat("Stop early", json!({"max_tokens": n, "stream": true}));

    let cut = fx.stream(&url, CHAT, &streamed(6)).await;
    let exact = fx.stream(&url, CHAT, &streamed(3)).await;
    let short = fx.stream(&url, CHAT, &streamed(2)).await;
    let unstreamed = fx
        .post(&url, CHAT, &chat("Stop early", json!({"max_tokens": 6})))
        .await;

    assert!(cut.error.is_some(), "the body ends in an error");
    assert_eq!((cut.chunks().len(), cut.events.len()), (3, 3), "no [DONE]");
    assert!(exact.error.is_some(), "only [DONE] is missing");
    assert_eq!((exact.chunks().len(), exact.events.len()), (3, 3));
    assert!(short.error.is_none());
    assert_eq!((short.chunks().len(), short.last()), (2, "[DONE]"));
    assert_eq!(unstreamed.status(), 200);
}
