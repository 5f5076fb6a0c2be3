//! Management calls: create body, idempotent create, states, retries and errors.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::provider::fake::Reply;
use crate::provider::{EndpointHandle, Provider, ProviderError, ProviderState};

fn handle() -> EndpointHandle {
    EndpointHandle::new(NAME, None)
}

#[tokio::test]
async fn create_sends_exactly_the_official_clients_body() {
    let fake = Fake::start(|_, _| Reply::json(200, endpoint("pending", None))).await;
    let (provider, _) = provider(&fake);

    let handle = provider.deploy(&spec()).await.expect("deploy");

    assert_eq!(handle.provider_model_id, NAME);
    let sent = &fake.requests()[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", COLLECTION)
    );
    assert_eq!(sent.header("authorization"), Some("Bearer hf_test_token"));
    let expected = json!({
        "name": NAME, "type": "authenticated",
        "provider": {"vendor": "aws", "region": "us-east-1"},
        "compute": {"accelerator": "cpu", "instanceType": "intel-spr", "instanceSize": "x2",
                    "scaling": {"minReplica": 1, "maxReplica": 1, "scaleToZeroTimeout": null}},
        "model": {"repository": REPOSITORY, "revision": null, "framework": "pytorch",
                  "task": "text-classification", "image": {"huggingface": {}}}
    });
    assert_eq!(sent.json(), expected);
}

#[tokio::test]
async fn an_unknown_task_is_omitted_never_null() {
    let fake = Fake::start(|_, _| Reply::json(200, endpoint("pending", None))).await;
    let (provider, _) = provider(&fake);
    let mut spec = spec();
    spec.task = None;

    provider.deploy(&spec).await.expect("deploy");

    let body = fake.requests()[0].json();
    assert!(body["model"].get("task").is_none(), "{body}");
}

#[tokio::test]
async fn unknown_hardware_or_no_repository_is_invalid_before_any_call() {
    let fake = Fake::start(|_, _| Reply::json(200, endpoint("pending", None))).await;
    let (provider, _) = provider(&fake);
    let mut bad_size = spec();
    bad_size.instance.instance_size = "medium".into();
    let mut no_repo = spec();
    no_repo.repository = None;

    for spec in [bad_size, no_repo] {
        let err = provider.deploy(&spec).await.unwrap_err();
        assert_eq!(err.kind(), "invalid", "{err}");
    }
    assert_eq!(provider.hourly_cost_usd(&spec()).unwrap(), 0.067);
    let mut three = spec();
    three.scaling.max_replica = 3;
    assert!((provider.hourly_cost_usd(&three).unwrap() - 0.201).abs() < 1e-9);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn create_answered_409_adopts_the_matching_endpoint() {
    let fake = Fake::start(|req, _| match req.method.as_str() {
        "POST" => Reply::json(409, json!({"error": "Endpoint name already exists"})),
        _ => Reply::json(200, endpoint("initializing", None)),
    })
    .await;
    let (provider, _) = provider(&fake);

    let handle = provider.deploy(&spec()).await.expect("adopted");

    assert_eq!(handle.provider_model_id, NAME);
    assert_eq!(
        (fake.count("POST", COLLECTION), fake.count("GET", ITEM)),
        (1, 1)
    );
}

#[tokio::test]
async fn create_answered_409_for_a_different_endpoint_is_a_conflict() {
    let fake = Fake::start(|req, _| match req.method.as_str() {
        "POST" => Reply::json(409, json!({"error": "exists"})),
        _ => {
            let mut other = endpoint("running", Some("http://x"));
            other["model"]["repository"] = json!("someone/else");
            Reply::json(200, other)
        }
    })
    .await;
    let (provider, _) = provider(&fake);

    let err = provider.deploy(&spec()).await.unwrap_err();

    assert_eq!(err.kind(), "conflict");
    assert_eq!(fake.count("POST", COLLECTION), 1);
}

#[tokio::test]
async fn create_that_timed_out_is_read_back_and_adopted_not_repeated() {
    // The first POST creates the endpoint but answers after the client gave up.
    let fake = Fake::start(|req, _| match req.method.as_str() {
        "POST" => Reply::json(200, endpoint("pending", None)).after(Duration::from_secs(3)),
        _ => Reply::json(200, endpoint("pending", None)),
    })
    .await;
    let (provider, _) = provider(&fake);

    let handle = provider.deploy(&spec()).await.expect("adopted");

    assert_eq!(handle.provider_model_id, NAME);
    assert_eq!(
        (fake.count("POST", COLLECTION), fake.count("GET", ITEM)),
        (1, 1)
    );
}

#[tokio::test]
async fn create_failing_with_5xx_and_nothing_created_is_retried() {
    let fake = Fake::start(|req, seen| {
        let posts = seen.iter().filter(|r| r.method == "POST").count();
        match (req.method.as_str(), posts) {
            ("POST", 0) => Reply::text(502, "Bad Gateway"),
            ("POST", _) => Reply::json(200, endpoint("pending", None)),
            _ => Reply::json(404, json!({"error": "Endpoint not found"})),
        }
    })
    .await;
    let (provider, log) = provider(&fake);

    provider.deploy(&spec()).await.expect("second create");

    assert_eq!(
        (fake.count("POST", COLLECTION), fake.count("GET", ITEM)),
        (2, 1)
    );
    assert_eq!(log.delays().len(), 1);
}

/// The fake's own URL plus `path`, from the request's `Host` header.
fn own_url(req: &crate::provider::fake::Recorded, path: &str) -> String {
    format!("http://{}{path}", req.header("host").expect("host header"))
}

#[tokio::test]
async fn every_hf_state_maps_and_only_a_healthy_running_endpoint_is_ready() {
    let states = [
        ("pending", ProviderState::Pending),
        ("initializing", ProviderState::Initializing),
        ("updating", ProviderState::Updating),
        ("updateFailed", ProviderState::UpdateFailed),
        ("running", ProviderState::Running),
        ("paused", ProviderState::Paused),
        ("failed", ProviderState::Failed),
        ("scaledToZero", ProviderState::ScaledToZero),
        ("brandNew", ProviderState::Unknown("brandNew".into())),
    ];
    for (raw, expected) in states {
        let fake = Fake::start(move |req, _| match req.path.as_str() {
            "/e/health" => Reply::text(200, "ok"),
            _ => Reply::json(200, endpoint(raw, Some(&own_url(req, "/e")))),
        })
        .await;
        let (provider, _) = provider(&fake);

        let status = provider.get_status(&handle()).await.expect("status");

        assert_eq!(status.state, expected);
        assert_eq!(status.state.as_str(), raw);
        assert_eq!(status.ready, raw == "running", "{raw}");
        assert_eq!(
            fake.count("GET", "/e/health"),
            usize::from(raw == "running")
        );
    }
}

#[tokio::test]
async fn running_is_not_ready_without_a_url_or_until_the_health_route_answers_200() {
    let fake = Fake::start(|req, seen| {
        let probes = seen.iter().filter(|r| r.path == "/e/health").count();
        let gets = seen.iter().filter(|r| r.path == ITEM).count();
        match (req.path.as_str(), probes, gets) {
            ("/e/health", 0, _) => Reply::text(503, "loading"),
            ("/e/health", _, _) => Reply::text(200, ""),
            (_, _, 0) => Reply::json(200, endpoint("running", None)),
            _ => Reply::json(200, endpoint("running", Some(&own_url(req, "/e")))),
        }
    })
    .await;
    let (provider, _) = provider(&fake);

    let no_url = provider.get_status(&handle()).await.expect("status");
    let unhealthy = provider.get_status(&handle()).await.expect("status");
    let healthy = provider.get_status(&handle()).await.expect("status");

    assert_eq!(no_url.state, ProviderState::Running);
    assert!(!no_url.ready && !unhealthy.ready && healthy.ready);
    let probe = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/e/health")
        .unwrap();
    assert_eq!(probe.header("authorization"), Some("Bearer hf_test_token"));
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_delay_the_provider_asked_for() {
    let fake = Fake::start(|_, seen| match seen.len() {
        0 => Reply::json(429, json!({"error": "slow down"})).header("retry-after", "3"),
        1 => Reply::text(429, "").header("ratelimit", "\"api\";r=0;t=5"),
        _ => Reply::json(200, endpoint("running", None)),
    })
    .await;
    let mut config = config(&fake.base);
    config.timeout = Duration::from_secs(10); // delays up to the timeout are waited in-process
    let (provider, log) = provider_with(&config);

    provider.management().get(NAME).await.expect("third try");

    assert_eq!(
        log.delays(),
        vec![Duration::from_secs(3), Duration::from_secs(5)]
    );
    assert_eq!(fake.count("GET", ITEM), 3);
}

#[tokio::test]
async fn permanent_errors_are_not_retried_and_carry_the_providers_message() {
    let cases = [
        (
            Reply::text(400, "Bad JSON at line 1").header("x-error-message", "from header"),
            "invalid",
            "from header",
        ),
        (
            Reply::json(401, json!({"error": "Invalid token"})),
            "unauthorized",
            "Invalid token",
        ),
        (
            Reply::text(404, "no such endpoint"),
            "not_found",
            "no such endpoint",
        ),
    ];
    for (reply, kind, message) in cases {
        let fake = Fake::start(move |_, _| reply.clone()).await;
        let (provider, log) = provider(&fake);

        let err = provider.get_status(&handle()).await.unwrap_err();

        assert_eq!((err.kind(), err.message()), (kind, message));
        assert_eq!(fake.requests().len(), 1);
        assert!(log.delays().is_empty());
    }
}

#[tokio::test]
async fn server_errors_are_retried_until_the_limit() {
    let fake = Fake::start(|_, _| Reply::text(500, "oops")).await;
    let (provider, log) = provider(&fake);

    let err = provider.management().get(NAME).await.unwrap_err();

    assert_eq!((err.kind(), err.message()), ("transient", "oops"));
    assert_eq!(fake.requests().len(), 4);
    assert_eq!(log.delays().len(), 3);
}

#[tokio::test]
async fn resume_of_a_running_endpoint_is_success_and_undeploy_of_a_gone_one_too() {
    let fake = Fake::start(
        |req, _| match (req.method.as_str(), req.path.ends_with("/resume")) {
            ("POST", true) => Reply::text(400, "Endpoint is already running"),
            ("DELETE", _) => Reply::json(404, json!({"error": "not found"})),
            _ => Reply::json(200, endpoint("running", None)),
        },
    )
    .await;
    let (provider, _) = provider(&fake);

    let resumed = provider.management().resume(NAME).await.expect("resume");
    provider.undeploy(&handle()).await.expect("undeploy");

    assert_eq!(resumed.status.state, "running");
    assert_eq!(fake.count("POST", &format!("{ITEM}/resume")), 1);
}

#[tokio::test]
async fn pause_scale_to_zero_and_list_use_their_routes() {
    let fake = Fake::start(|req, _| match req.path.as_str() {
        COLLECTION => Reply::json(200, json!({"items": [endpoint("running", None)]})),
        p if p.ends_with("/pause") => Reply::json(200, endpoint("paused", None)),
        _ => Reply::json(200, endpoint("scaledToZero", Some("http://x"))),
    })
    .await;
    let (provider, _) = provider(&fake);
    let client = provider.management();

    assert_eq!(client.pause(NAME).await.unwrap().status.state, "paused");
    assert_eq!(
        client.scale_to_zero(NAME).await.unwrap().status.state,
        "scaledToZero"
    );
    assert_eq!(client.list().await.unwrap().len(), 1);
    assert_eq!(fake.count("POST", &format!("{ITEM}/pause")), 1);
    assert_eq!(fake.count("POST", &format!("{ITEM}/scale-to-zero")), 1);
}

#[tokio::test]
async fn the_catalogue_is_refreshed_from_the_provider_listing() {
    let fake = Fake::start(|_, _| {
        Reply::json(
            200,
            json!({"vendors": [{"name": "aws", "regions": [{"name": "us-east-1",
            "computes": [{"id": "aws-us-east-1-intel-spr-x2", "accelerator": "cpu",
              "instanceType": "intel-spr", "instanceSize": "x2", "memoryGb": 8,
              "status": "available", "pricePerHour": 0.07}]}]}]}),
        )
    })
    .await;
    let (provider, _) = provider(&fake);

    assert_eq!(provider.refresh_catalogue().await.expect("refresh"), 1);

    assert_eq!(fake.requests()[0].path, "/v2/provider");
    assert!((provider.hourly_cost_usd(&spec()).unwrap() - 0.07).abs() < 1e-9);
    let mut eu = spec();
    eu.instance.region = "eu-west-1".into();
    assert!(matches!(
        provider.hourly_cost_usd(&eu),
        Err(ProviderError::Invalid { .. })
    ));
}
