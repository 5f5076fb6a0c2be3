//! Predictions: body, headers, response shapes and cold starts.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::provider::fake::Reply;
use crate::provider::{EndpointHandle, PredictRequest, Provider};

fn handle(fake: &Fake) -> EndpointHandle {
    EndpointHandle::new(NAME, Some(format!("{}/endpoints/{NAME}", fake.base)))
}

fn request(task: &str, parameters: Option<Value>) -> PredictRequest {
    PredictRequest {
        inputs: json!("I love you"),
        parameters,
        task: Some(task.into()),
    }
}

#[tokio::test]
async fn predict_posts_inputs_and_parameters_to_the_url_with_the_token() {
    let fake =
        Fake::start(|_, _| Reply::json(200, json!([[{"label": "POSITIVE", "score": 0.99}]]))).await;
    let (provider, _) = provider(&fake);

    let response = provider
        .predict(
            &handle(&fake),
            request("text-classification", Some(json!({"top_k": 1}))),
        )
        .await
        .expect("prediction");

    assert_eq!(
        response.predictions,
        json!([{"label": "POSITIVE", "score": 0.99}])
    );
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, format!("/endpoints/{NAME}"));
    assert_eq!(sent.header("authorization"), Some("Bearer hf_test_token"));
    assert_eq!(sent.header("x-scale-up-timeout"), None);
    assert_eq!(
        sent.json(),
        json!({"inputs": "I love you", "parameters": {"top_k": 1}})
    );
}

#[tokio::test]
async fn feature_extraction_puts_parameters_at_the_root_and_container_shapes_pass() {
    let fake = Fake::start(|_, _| Reply::json(200, json!([[0.1, 0.2]]))).await;
    let (provider, _) = provider(&fake);

    let response = provider
        .predict(
            &handle(&fake),
            request("feature-extraction", Some(json!({"normalize": true}))),
        )
        .await
        .expect("prediction");

    assert_eq!(response.predictions, json!([[0.1, 0.2]]));
    assert_eq!(
        fake.requests()[0].json(),
        json!({"inputs": "I love you", "normalize": true})
    );
}

#[tokio::test]
async fn a_waking_endpoint_is_unavailable_with_its_retry_after() {
    let fake =
        Fake::start(|_, _| Reply::text(503, "Service Unavailable").header("retry-after", "12"))
            .await;
    let (provider, _) = provider(&fake);

    let err = provider
        .predict(&handle(&fake), request("text-classification", None))
        .await
        .unwrap_err();

    assert_eq!(err.kind(), "unavailable");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(12)));
    assert_eq!(
        fake.requests().len(),
        1,
        "predictions are not retried in-process"
    );
}

#[tokio::test]
async fn with_a_scale_up_timeout_the_request_asks_the_proxy_to_wait() {
    let fake =
        Fake::start(|_, _| Reply::json(200, json!([{"label": "NEGATIVE", "score": 0.6}]))).await;
    let mut config = config(&fake.base);
    config.scale_up_timeout = Some(Duration::from_secs(60));
    let (provider, _) = provider_with(&config);

    provider
        .predict(&handle(&fake), request("text-classification", None))
        .await
        .expect("prediction");

    assert_eq!(fake.requests()[0].header("x-scale-up-timeout"), Some("60"));
}

#[tokio::test]
async fn without_a_recorded_url_the_endpoint_is_looked_up_first() {
    let fake = Fake::start(|req, _| match req.path.as_str() {
        ITEM => {
            let url = format!("http://{}/e", req.header("host").unwrap());
            Reply::json(200, endpoint("running", Some(&url)))
        }
        _ => Reply::json(200, json!([{"generated_text": "hi"}])),
    })
    .await;
    let (provider, _) = provider(&fake);
    let no_url = EndpointHandle::new(NAME, None);

    let response = provider
        .predict(&no_url, request("text-generation", None))
        .await
        .expect("prediction");

    assert_eq!(response.predictions, json!([{"generated_text": "hi"}]));
    assert_eq!(fake.count("POST", "/e"), 1);
}
