//! The HuggingFace adapter against the in-process HF emulator: the whole lifecycle,
//! scale-to-zero, chaos (global and per endpoint), and the emulator's own contract (auth,
//! errors, marker header).

use std::time::Duration;

use emulator::{ChaosConfig, Emulator, EmulatorConfig, EmulatorHandle};
use serde_json::{Value, json};
use shared::config::Secret;
use shared::domain::{DeploymentId, ModelId};
use shared::provider::huggingface::HuggingFaceProvider;
use shared::provider::huggingface::retry::{RetrySleeper, SleepLog};
use shared::provider::{
    DeploymentSpec, EndpointHandle, EndpointStatus, HttpProviderConfig, HuggingFaceConfig,
    InstanceSpec, PredictRequest, Provider, ProviderRegistry, ProviderState, ProvidersConfig,
    ScalingSpec,
};

fn config(emu: &EmulatorHandle, scale_up: Option<Duration>) -> HuggingFaceConfig {
    HuggingFaceConfig {
        api_base: emu.base_url.clone(),
        namespace: "hokusai".into(),
        token: Secret::new(emu.token.clone()),
        default_instance: spec().instance,
        timeout: Duration::from_secs(5),
        max_retries: 3,
        predict_timeout: Duration::from_secs(5),
        scale_up_timeout: scale_up,
        max_body_bytes: 1 << 20,
        connections_per_host: 128,
    }
}

fn provider(emu: &EmulatorHandle, scale_up: Option<Duration>) -> (HuggingFaceProvider, SleepLog) {
    let log = SleepLog::default();
    let sleeper = RetrySleeper::Recorded(log.clone());
    let provider =
        HuggingFaceProvider::with_sleeper(&config(emu, scale_up), sleeper).expect("provider");
    (provider, log)
}

fn spec() -> DeploymentSpec {
    DeploymentSpec {
        deployment_id: DeploymentId::new(),
        model_id: ModelId::parse("fraud-detector").expect("model id"),
        model_version: Some("3".into()),
        repository: Some("distilbert/distilbert-base-uncased-finetuned-sst-2-english".into()),
        revision: None,
        task: Some("text-classification".into()),
        framework: Some("pytorch".into()),
        instance: InstanceSpec {
            vendor: "aws".into(),
            region: "us-east-1".into(),
            instance_type: "intel-spr".into(),
            instance_size: "x2".into(),
        },
        scaling: ScalingSpec::default(),
        endpoint_url: None,
    }
}

/// Polls until `done(status)` or fails the test after 10 s.
async fn wait_for(
    provider: &HuggingFaceProvider,
    handle: &EndpointHandle,
    done: impl Fn(&EndpointStatus) -> bool,
) -> EndpointStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = provider.get_status(handle).await.expect("status");
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck in {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn classify(text: &str) -> PredictRequest {
    PredictRequest {
        inputs: json!(text),
        parameters: None,
        task: Some("text-classification".into()),
    }
}

#[tokio::test]
async fn deploy_wait_predict_and_undeploy_against_the_emulator() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let (provider, _) = provider(&emu, None);
    let spec = spec();

    let handle = provider.deploy(&spec).await.expect("deploy");
    let again = provider.deploy(&spec).await.expect("idempotent deploy");
    let ready = wait_for(&provider, &handle, |s| s.ready).await;
    let handle = handle.with_url(ready.url.clone());
    let prediction = provider
        .predict(&handle, classify("I love you"))
        .await
        .expect("predict");

    assert_eq!(again.provider_model_id, handle.provider_model_id);
    assert_eq!(ready.state, ProviderState::Running);
    assert_eq!(prediction.predictions[0]["label"], "POSITIVE");
    let held = emu.endpoints();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].name.as_str(), held[0].state.as_str()),
        (handle.provider_model_id.as_str(), "running")
    );

    provider.undeploy(&handle).await.expect("undeploy");
    provider.undeploy(&handle).await.expect("undeploy again");
    assert!(emu.endpoints().is_empty());
    assert_eq!(
        provider.get_status(&handle).await.unwrap_err().kind(),
        "not_found"
    );
}

#[tokio::test]
async fn a_scaled_to_zero_endpoint_is_unavailable_unless_asked_to_wait() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let (provider, _) = provider(&emu, None);
    let handle = provider.deploy(&spec()).await.expect("deploy");
    let url = wait_for(&provider, &handle, |s| s.ready).await.url;
    let handle = handle.with_url(url);

    let zero = provider
        .management()
        .scale_to_zero(&handle.provider_model_id)
        .await
        .expect("scale to zero");
    let cold = provider
        .predict(&handle, classify("hello"))
        .await
        .unwrap_err();
    let (waiting, _) = self::provider(&emu, Some(Duration::from_secs(5)));
    provider
        .management()
        .scale_to_zero(&handle.provider_model_id)
        .await
        .ok();
    let woken = waiting.predict(&handle, classify("hello")).await;

    assert_eq!(zero.status.state, "scaledToZero");
    assert_eq!(cold.kind(), "unavailable");
    assert!(cold.retry_after().is_some());
    assert!(woken.is_ok(), "{woken:?}");
}

#[tokio::test]
async fn pause_and_resume_with_already_running_as_success() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let (provider, _) = provider(&emu, None);
    let handle = provider.deploy(&spec()).await.expect("deploy");
    wait_for(&provider, &handle, |s| s.ready).await;
    let client = provider.management();

    let paused = client
        .pause(&handle.provider_model_id)
        .await
        .expect("pause");
    let status = provider.get_status(&handle).await.expect("status");
    client
        .resume(&handle.provider_model_id)
        .await
        .expect("resume");
    wait_for(&provider, &handle, |s| s.ready).await;
    let again = client
        .resume(&handle.provider_model_id)
        .await
        .expect("already running");

    assert_eq!(paused.status.state, "paused");
    assert_eq!((status.state, status.url), (ProviderState::Paused, None));
    assert_eq!(again.status.state, "running");
}

#[tokio::test]
async fn injected_rate_limits_are_retried_after_the_emulators_retry_after() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let (provider, log) = provider(&emu, None);
    emu.set_chaos(ChaosConfig {
        rate_limit_next: 2,
        retry_after_secs: 2,
        ..ChaosConfig::default()
    });

    let handle = provider.deploy(&spec()).await.expect("deploy after 429s");

    assert_eq!(log.delays(), vec![Duration::from_secs(2); 2]);
    assert_eq!(emu.endpoints()[0].name, handle.provider_model_id);
}

#[tokio::test]
async fn chaos_can_make_endpoints_fail_and_the_adapter_reports_it() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let (provider, _) = provider(&emu, None);
    emu.set_chaos(ChaosConfig {
        fail_next_deploys: 1,
        ..ChaosConfig::default()
    });

    let doomed = provider.deploy(&spec()).await.expect("deploy");
    let failed = wait_for(&provider, &doomed, |s| s.state.is_failed()).await;
    let healthy = provider.deploy(&spec()).await.expect("deploy");
    wait_for(&provider, &healthy, |s| s.ready).await;
    assert!(emu.fail_endpoint("hokusai", &healthy.provider_model_id));
    let lost = provider.get_status(&healthy).await.expect("status");

    assert_eq!(failed.state, ProviderState::Failed);
    assert!(failed.message.unwrap().contains("emulated failure"));
    assert_eq!((lost.state, lost.ready), (ProviderState::Failed, false));
}

#[tokio::test]
async fn the_catalogue_refreshes_from_the_emulator_and_unknown_hardware_is_refused() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let (provider, _) = provider(&emu, None);

    let offers = provider.refresh_catalogue().await.expect("refresh");
    let mut bad = spec();
    bad.instance.instance_type = "c6i".into();
    let err = provider.deploy(&bad).await.unwrap_err();

    assert_eq!(
        offers,
        5 + 1 + 5 + 4 + 4,
        "CPU offers only, deprecated included"
    );
    assert_eq!(err.kind(), "invalid");
    assert!(emu.endpoints().is_empty());
}

#[tokio::test]
async fn the_registry_refreshes_its_providers_at_start_up() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let config = ProvidersConfig {
        huggingface: config(&emu, None),
        http: HttpProviderConfig::new(Duration::from_secs(5), Default::default()),
    };
    let registry = ProviderRegistry::build(&config).expect("registry");

    let refreshed = registry.refresh_all().await;
    emu.shutdown().await.expect("emulator stopped");
    let offline = ProviderRegistry::build(&config).expect("registry");
    let without_emulator = offline.refresh_all().await;

    assert_eq!(refreshed, 2);
    assert_eq!(
        without_emulator, 1,
        "only the http provider, which has nothing to refresh"
    );
}

/// Inference requests sent per endpoint (and per phase) by the per-endpoint chaos tests.
const REQUESTS: usize = 20;
/// What the control route's 422s must say.
const RATE_RULE: &str = "predict_error_rate must be a number from 0.0 to 1.0";

/// An answer: its status and its body (JSON, or the text of a non-JSON body as a string).
type Answer = (u16, Value);

/// Deploys `spec` through the adapter and waits until it runs: its handle and inference URL.
async fn running(
    provider: &HuggingFaceProvider,
    spec: &DeploymentSpec,
) -> (EndpointHandle, String) {
    let handle = provider.deploy(spec).await.expect("deploy");
    let url = wait_for(provider, &handle, |s| s.ready)
        .await
        .url
        .expect("url");
    (handle.with_url(Some(url.clone())), url)
}

/// `spec()` for a model of `task`.
fn spec_for(task: &str) -> DeploymentSpec {
    DeploymentSpec {
        task: Some(task.into()),
        ..spec()
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `POST /_emulator/endpoints/hokusai/{name}/{action}` with `body` as it is.
async fn control(emu: &EmulatorHandle, name: &str, action: &str, body: &str) -> Answer {
    let url = format!(
        "{}/_emulator/endpoints/hokusai/{name}/{action}",
        emu.base_url
    );
    let request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    answer(request.send().await.expect("control route")).await
}

/// Sets the `predict_error_rate` of each endpoint: the control route's answers.
async fn set_rate(emu: &EmulatorHandle, endpoints: &[&EndpointHandle], rate: f64) -> Vec<Answer> {
    let body = json!({"predict_error_rate": rate}).to_string();
    let mut answers = Vec::new();
    for endpoint in endpoints {
        answers.push(control(emu, &endpoint.provider_model_id, "chaos", &body).await);
    }
    answers
}

/// `POST {url}{route}` with the token and `body`, one request after the other.
async fn infer<'a>(
    emu: &EmulatorHandle,
    requests: impl IntoIterator<Item = &'a (String, &'static str, Value)>,
) -> Vec<Answer> {
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for (url, route, body) in requests {
        let request = http
            .post(format!("{url}{route}"))
            .bearer_auth(&emu.token)
            .json(body);
        answers.push(answer(request.send().await.expect("inference")).await);
    }
    answers
}

/// How many answers have `status`.
fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|(s, _)| *s == status).count()
}

/// How many answers are the injected 500 with its `{"error"}` body.
fn injected(answers: &[Answer]) -> usize {
    let is_injected = |(status, body): &&Answer| {
        *status == 500
            && body["error"]
                .as_str()
                .is_some_and(|e| e.contains("predict_error_rate"))
    };
    answers.iter().filter(is_injected).count()
}

/// `GET /_emulator/endpoints`: each endpoint's name and `predict_error_rate`.
async fn listed_rates(emu: &EmulatorHandle) -> Vec<(String, Value)> {
    let listed: Value = reqwest::get(format!("{}/_emulator/endpoints", emu.base_url))
        .await
        .expect("listing")
        .json()
        .await
        .expect("JSON");
    let items = listed["items"].as_array().expect("items");
    let rate = |e: &Value| {
        (
            e["name"].as_str().unwrap_or("").to_owned(),
            e["predict_error_rate"].clone(),
        )
    };
    items.iter().map(rate).collect()
}

#[tokio::test]
async fn an_error_rate_fails_its_share_of_one_endpoints_inference_while_it_stays_running() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let (provider, _) = provider(&emu, None);
    let (flaky, flaky_url) = running(&provider, &spec()).await;
    let (steady, steady_url) = running(&provider, &spec()).await;
    let predict = |url: &String| (url.clone(), "", json!({"inputs": "I love you"}));
    let interleaved: Vec<_> = (0..REQUESTS)
        .flat_map(|_| [predict(&flaky_url), predict(&steady_url)])
        .collect();

    let set = set_rate(&emu, &[&flaky], 0.5).await;
    let answers = infer(&emu, &interleaved).await;
    let status = provider.get_status(&flaky).await.expect("status");
    let rates = listed_rates(&emu).await;

    assert_eq!(set, vec![(200, json!({"predict_error_rate": 0.5}))]);
    let flaky_answers: Vec<Answer> = answers.iter().step_by(2).cloned().collect();
    let steady_answers: Vec<Answer> = answers.iter().skip(1).step_by(2).cloned().collect();
    let (failed, served) = (count(&flaky_answers, 500), count(&flaky_answers, 200));
    assert_eq!(
        (failed, served),
        (REQUESTS / 2, REQUESTS / 2),
        "{flaky_answers:?}"
    );
    assert_eq!(injected(&flaky_answers), failed, "{flaky_answers:?}");
    let failing: Vec<usize> = (flaky_answers.iter().enumerate())
        .filter_map(|(n, (status, _))| (*status == 500).then_some(n))
        .collect();
    let every_second: Vec<usize> = (1..REQUESTS).step_by(2).collect();
    assert_eq!(
        failing, every_second,
        "request n fails when floor((n+1)/2) > floor(n/2)"
    );
    assert_eq!(count(&steady_answers, 200), REQUESTS, "{steady_answers:?}");
    assert_eq!((status.state, status.ready), (ProviderState::Running, true));
    let rate_of = |name: &str| {
        rates
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
    };
    assert_eq!(rate_of(&flaky.provider_model_id), Some(json!(0.5)));
    assert_eq!(rate_of(&steady.provider_model_id), Some(json!(0.0)));
}

#[tokio::test]
async fn an_error_rate_of_one_fails_every_inference_route_and_zero_turns_it_off() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let (provider, _) = provider(&emu, None);
    let (generator, generator_url) = running(&provider, &spec_for("text-generation")).await;
    let (embedder, embedder_url) = running(&provider, &spec_for("feature-extraction")).await;
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let routes = [
        (generator_url.clone(), "", json!({"inputs": "Hi"})),
        (generator_url.clone(), "/v1/chat/completions", chat),
        (generator_url.clone(), "/v1/chat/completions", streamed),
        (
            generator_url,
            "/v1/completions",
            json!({"prompt": "Hi", "max_tokens": 2}),
        ),
        (embedder_url.clone(), "", json!({"inputs": "Hi"})),
        (embedder_url, "/v1/embeddings", json!({"input": "Hi"})),
    ];
    let both = [&generator, &embedder];

    let on = set_rate(&emu, &both, 1.0).await;
    let failing = infer(&emu, routes.iter().cycle().take(REQUESTS)).await;
    let off = set_rate(&emu, &both, 0.0).await;
    let serving = infer(&emu, routes.iter().cycle().take(REQUESTS)).await;
    let generator_status = provider.get_status(&generator).await.expect("status");
    let embedder_status = provider.get_status(&embedder).await.expect("status");

    let settings = |rate: f64| (200, json!({"predict_error_rate": rate}));
    assert_eq!(on, vec![settings(1.0); both.len()]);
    assert_eq!(off, vec![settings(0.0); both.len()]);
    assert_eq!(injected(&failing), REQUESTS, "{failing:?}");
    assert_eq!(count(&serving, 200), REQUESTS, "{serving:?}");
    assert_eq!(
        (generator_status.state, embedder_status.state),
        (ProviderState::Running, ProviderState::Running)
    );
}

#[tokio::test]
async fn the_endpoint_chaos_route_refuses_bad_rates_and_unknown_endpoints() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let (provider, _) = provider(&emu, None);
    let (handle, _) = running(&provider, &spec()).await;
    let name = &handle.provider_model_id;
    let bad = [
        r#"{"predict_error_rate": 1.5}"#,
        r#"{"predict_error_rate": -0.1}"#,
        r#"{"predict_error_rate": "x"}"#,
        "{}",
        r#"{"predict_error_rate": "#,
    ];

    let mut refused = Vec::new();
    for body in bad {
        refused.push(control(&emu, name, "chaos", body).await);
    }
    let unknown = control(&emu, "nope", "chaos", r#"{"predict_error_rate": 0.5}"#).await;
    let unknown_fail = control(&emu, "nope", "fail", "").await;
    let rates = listed_rates(&emu).await;

    let explained = |(status, body): &&Answer| {
        *status == 422
            && body["error"]
                .as_str()
                .is_some_and(|e| e.contains(RATE_RULE))
    };
    assert_eq!(
        refused.iter().filter(explained).count(),
        bad.len(),
        "{refused:?}"
    );
    assert_eq!(
        unknown,
        (404, json!({"error": "Endpoint hokusai/nope not found"}))
    );
    assert_eq!(
        unknown, unknown_fail,
        "the same 404 as the other control routes"
    );
    assert_eq!(
        rates,
        vec![(name.clone(), json!(0.0))],
        "a refused rate changes nothing"
    );
}
