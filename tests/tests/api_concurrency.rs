//! Many hands on one model over HTTP (docs/design/domain.md, "Concurrent operations on one
//! model"): the model's `ETag`, conditional writes with `If-Match` (412 with the current tag),
//! 409 beside an undeploy in flight, and never a 500 from a race.

use futures_util::future::join_all;
use serde_json::{Value, json};
use tests::app::{ADMIN_KEY, TestApp, assert_error};
use tests::db::Engine;

fn hf_body(version: &str) -> Value {
    json!({"model_version": version, "repository": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
           "task": "text-classification"})
}

fn etag(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("etag")
        .expect("an ETag")
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// Versions 1 and 2 of `model` deployed one after the other: 2 serves, 1 runs inactive.
async fn two_versions(app: &TestApp, worker: &worker::Worker, model: &str) {
    app.deploy_and_serve(worker, model, hf_body("1")).await;
    app.deploy_and_serve(worker, model, hf_body("2")).await;
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    if_match: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.url))
        .bearer_auth(ADMIN_KEY);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    request.send().await.expect("request")
}

#[tokio::test]
async fn the_model_etag_moves_with_every_operation_and_activation() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let worker = app.worker();
    let accepted = app
        .post(
            "/api/v1/models/tagged/deployments",
            ADMIN_KEY,
            &hf_body("1"),
        )
        .await;
    assert_eq!(accepted.status(), 202);
    let after_deploy = etag(&accepted);
    let read = app.get("/api/v1/models/tagged", ADMIN_KEY).await;
    assert_eq!(
        etag(&read),
        after_deploy,
        "GET answers the tag the write answered"
    );
    let id = accepted.json::<Value>().await.unwrap()["deployment"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.work_until(&worker, &id, |d| d.is_active).await;
    let after_activation = etag(&app.get("/api/v1/models/tagged", ADMIN_KEY).await);
    println!("etag: after deploy {after_deploy}, after activation {after_activation}");
    assert_ne!(
        after_activation, after_deploy,
        "an activation is a change of the model"
    );

    // A write conditional on the old tag is refused with the current one.
    let stale = send(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/models/tagged/deployment",
        Some(&after_deploy),
    )
    .await;
    assert_eq!(etag(&stale), after_activation);
    assert_error(stale, 412, "PRECONDITION_FAILED").await;
    let malformed = send(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/models/tagged/deployment",
        Some("7"),
    )
    .await;
    assert_error(malformed, 400, "BAD_REQUEST").await;
    let current = send(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/models/tagged/deployment",
        Some(&after_activation),
    )
    .await;
    assert_eq!(current.status(), 202);
    assert_ne!(etag(&current), after_activation);
}

#[tokio::test]
async fn four_parallel_rollbacks_with_one_if_match_accept_one_and_refuse_three() {
    let app = TestApp::start(Engine::Postgres, &[]).await;
    let worker = app.worker();
    two_versions(&app, &worker, "churn").await;
    let tag = etag(&app.get("/api/v1/models/churn", ADMIN_KEY).await);

    let answers = join_all((0..4).map(|_| {
        send(
            &app,
            reqwest::Method::POST,
            "/api/v1/models/churn/rollback",
            Some(&tag),
        )
    }))
    .await;

    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    let tags: Vec<String> = answers.iter().map(etag).collect();
    println!("4 rollbacks with If-Match {tag}: {statuses:?}, ETags {tags:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 200 || **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        3,
        "{statuses:?}"
    );
    let winner = statuses.iter().position(|s| *s != 412).unwrap();
    for (n, answer) in answers.into_iter().enumerate() {
        if n != winner {
            assert_eq!(tags[n], tags[winner], "412 names the tag the winner left");
            assert_error(answer, 412, "PRECONDITION_FAILED").await;
        }
    }
    let model: Value = app
        .get("/api/v1/models/churn", ADMIN_KEY)
        .await
        .json()
        .await
        .unwrap();
    let active = model["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["is_active"] == true)
        .count();
    assert_eq!(active, 1);
    app.db.drop_database().await;
}

#[tokio::test]
async fn rollbacks_and_undeploys_beside_an_undeploy_in_flight_answer_409_naming_it() {
    let app = TestApp::start(Engine::Postgres, &[]).await;
    let worker = app.worker();
    two_versions(&app, &worker, "ranker").await;
    let undeploy = send(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/models/ranker/deployment",
        None,
    )
    .await;
    assert_eq!(undeploy.status(), 202);
    let undeploying = undeploy.json::<Value>().await.unwrap()["deployment"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut racing = Vec::new();
    for n in 0..6 {
        let (method, path) = if n % 2 == 0 {
            (reqwest::Method::POST, "/api/v1/models/ranker/rollback")
        } else {
            (reqwest::Method::DELETE, "/api/v1/models/ranker/deployment")
        };
        racing.push(send(&app, method, path, None));
    }
    let answers = join_all(racing).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    println!("beside undeploy {undeploying}: {statuses:?}");
    for answer in answers {
        let body = assert_error(answer, 409, "CONFLICT").await;
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("undeploy") && detail.contains(&undeploying),
            "{detail}"
        );
    }
    // Nothing was reactivated while its endpoint is being deleted.
    let model: Value = app
        .get("/api/v1/models/ranker", ADMIN_KEY)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        model["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["is_active"] == false),
        "{model}"
    );
    app.db.drop_database().await;
}

#[tokio::test]
async fn parallel_deploys_of_one_request_create_one_deployment() {
    let app = TestApp::start(Engine::Postgres, &[]).await;
    let body = hf_body("5");
    let answers =
        join_all((0..4).map(|_| app.post("/api/v1/models/twice/deployments", ADMIN_KEY, &body)))
            .await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    let mut ids = Vec::new();
    for answer in answers {
        let body: Value = answer.json().await.unwrap();
        ids.push(body["deployment"]["id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    println!("4 identical deploys: {statuses:?}, deployments {ids:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(ids.len(), 1);
    app.db.drop_database().await;
}
