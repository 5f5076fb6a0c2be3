//! Unit tests of the HF adapter against scripted HTTP fakes ([`crate::provider::fake`]):
//! exact bodies, state mapping, idempotent create, retries, errors and predictions.
//! Tests against the emulator live in the `tests` crate.

mod inference;
mod management;

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use super::HuggingFaceProvider;
use super::retry::{RetrySleeper, SleepLog};
use crate::config::Secret;
use crate::domain::{DeploymentId, ModelId};
use crate::provider::fake::Fake;
use crate::provider::{DeploymentSpec, HuggingFaceConfig, InstanceSpec, ScalingSpec};

const NAME: &str = "hk-fraud-detector-456789ab";
const COLLECTION: &str = "/v2/endpoint/hokusai";
const ITEM: &str = "/v2/endpoint/hokusai/hk-fraud-detector-456789ab";
const REPOSITORY: &str = "distilbert/distilbert-base-uncased-finetuned-sst-2-english";

fn config(base: &str) -> HuggingFaceConfig {
    HuggingFaceConfig {
        api_base: base.to_owned(),
        namespace: "hokusai".into(),
        token: Secret::new("hf_test_token"),
        default_instance: spec().instance,
        timeout: Duration::from_millis(500),
        max_retries: 3,
        predict_timeout: Duration::from_secs(2),
        scale_up_timeout: None,
        max_body_bytes: 1 << 20,
        connections_per_host: 128,
    }
}

/// A provider on `fake` whose retry delays are recorded, not waited.
fn provider_with(config: &HuggingFaceConfig) -> (HuggingFaceProvider, SleepLog) {
    let log = SleepLog::default();
    let provider = HuggingFaceProvider::with_sleeper(config, RetrySleeper::Recorded(log.clone()))
        .expect("provider");
    (provider, log)
}

fn provider(fake: &Fake) -> (HuggingFaceProvider, SleepLog) {
    provider_with(&config(&fake.base))
}

fn spec() -> DeploymentSpec {
    DeploymentSpec {
        deployment_id: DeploymentId(
            Uuid::parse_str("0190f3a4-1111-7abc-8def-0123456789ab").expect("uuid"),
        ),
        model_id: ModelId::parse("fraud-detector").expect("model id"),
        model_version: Some("3".into()),
        repository: Some(REPOSITORY.into()),
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

/// An Endpoint object as the real API returns it (with fields we do not read).
fn endpoint(state: &str, url: Option<&str>) -> Value {
    let mut status = json!({
        "state": state, "message": format!("Endpoint is {state}"),
        "createdAt": "2026-11-27T10:00:00.123Z", "updatedAt": "2026-11-27T10:01:00Z",
        "createdBy": {"id": "1", "name": "hokusai"}, "updatedBy": {"id": "1", "name": "hokusai"},
        "readyReplica": u32::from(state == "running"), "targetReplica": 1,
    });
    if let Some(url) = url {
        status["url"] = json!(url);
    }
    json!({
        "name": NAME, "type": "authenticated", "accountId": null, "healthRoute": "/health",
        "provider": {"vendor": "aws", "region": "us-east-1"},
        "compute": {"accelerator": "cpu", "instanceType": "intel-spr", "instanceSize": "x2",
                    "scaling": {"minReplica": 1, "maxReplica": 1, "scaleToZeroTimeout": null}},
        "model": {"repository": REPOSITORY, "revision": "main", "framework": "pytorch",
                  "task": "text-classification", "image": {"huggingface": {}}},
        "status": status,
    })
}
