//! The HuggingFace adapter against the in-process HF emulator: the whole lifecycle,
//! scale-to-zero, chaos, and the emulator's own contract (auth, errors, marker header).

use std::time::Duration;

use emulator::{ChaosConfig, Emulator, EmulatorConfig, EmulatorHandle};
use serde_json::json;
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
