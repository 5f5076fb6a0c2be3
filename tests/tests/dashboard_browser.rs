//! `GET /dashboard` in a real headless browser (Debian's chromium through chromedriver): the
//! page asks for a key, shows a readable error for a wrong one, then with an admin key shows
//! the deployed model and its active version, the deployment's events and a dead letter, and
//! replays the dead letter with its button. A screenshot is saved as a test artifact.
//!
//! Fails (never skips) when chromium or chromedriver is missing.

use serde_json::{Value, json};
use tests::app::{ADMIN_KEY, TestApp};
use tests::browser::{Browser, artifact_dir};
use tests::db::Engine;

fn hf_body(version: &str) -> Value {
    json!({"model_version": version, "repository": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
           "task": "text-classification"})
}

async fn dead_letters(app: &TestApp) -> Vec<Value> {
    let response = app.get("/api/v1/admin/dlq", ADMIN_KEY).await;
    assert_eq!(response.status(), 200);
    let listed: Value = response.json().await.expect("json");
    listed.as_array().expect("array").clone()
}

#[tokio::test]
async fn the_dashboard_shows_a_deployed_model_and_replays_a_dead_letter() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let worker = app.worker();
    app.deploy_and_serve(&worker, "model-a", hf_body("3")).await;
    // Version 4 as a canary at 25 %: the rollouts panel shows its progress.
    let mut canary = hf_body("4");
    canary["rollout"] = json!({"strategy": "canary", "steps": [25, 100], "bake_seconds": 3600});
    let response = app
        .post("/api/v1/models/model-a/deployments", ADMIN_KEY, &canary)
        .await;
    assert_eq!(response.status(), 202, "canary accepted");
    let created: Value = response.json().await.expect("json");
    let canary_id = created["deployment"]["id"].as_str().expect("id").to_owned();
    app.work_until(&worker, &canary_id, |d| {
        d.status == shared::domain::DeploymentStatus::Deployed
    })
    .await;
    worker
        .queue()
        .publish_bytes(b"not an envelope".to_vec(), None)
        .await
        .expect("publish");
    for _ in 0..20 {
        if !dead_letters(&app).await.is_empty() {
            break;
        }
        worker.consumer().try_process_one().await.expect("queue");
    }
    let letters = dead_letters(&app).await;
    assert_eq!(letters.len(), 1, "one dead letter to replay");
    let letter_id = letters[0]["id"].as_str().expect("id").to_owned();
    let browser = Browser::start().await;

    browser.goto(&format!("{}/dashboard", app.url)).await;
    let key = browser.find("#key").await;
    browser.type_into(&key, "hk_not_a_key").await;
    browser.click(&browser.find("#connect").await).await;
    let rejected = browser.wait_for_text("#banner", |t| !t.is_empty()).await;
    browser.click(&browser.find("#logout").await).await;
    let key = browser.find("#key").await;
    browser.type_into(&key, ADMIN_KEY).await;
    browser.click(&browser.find("#connect").await).await;
    let model = browser
        .wait_for_text(r#"#models tr[data-model="model-a"]"#, |t| !t.is_empty())
        .await;
    let version = browser
        .wait_for_text(
            r#"#models tr[data-model="model-a"] td.active-version"#,
            |t| !t.is_empty(),
        )
        .await;
    let deployed = browser
        .wait_for_text(r#"#status-counts li[data-status="deployed"]"#, |t| {
            !t.is_empty()
        })
        .await;
    let events = browser
        .wait_for_text("#events", |t| t.contains("model-a"))
        .await;
    let rollout = browser
        .wait_for_text(r#"#rollouts tr[data-rollout="model-a"]"#, |t| {
            t.contains("25%")
        })
        .await;
    let count_before = browser.wait_for_text("#dlq-count", |t| t == "1").await;
    let letter_row = browser
        .wait_for_text("#dead-letters", |t| t.contains("Replay"))
        .await;
    let stored = browser
        .execute("return sessionStorage.getItem('hokusai.dashboard.key')")
        .await;
    let shot = artifact_dir().join("dashboard.png");
    browser.screenshot(&shot).await;
    println!("dashboard screenshot: {}", shot.display());
    browser
        .click(&browser.find("#dead-letters button.replay").await)
        .await;
    let count_after = browser.wait_for_text("#dlq-count", |t| t == "0").await;
    let letters_after = browser
        .wait_for_text("#dead-letters", |t| t.contains("empty"))
        .await;
    let replayed_notice = browser.wait_for_text("#notice", |t| !t.is_empty()).await;
    let after_shot = artifact_dir().join("dashboard-after-replay.png");
    browser.screenshot(&after_shot).await;
    println!(
        "dashboard screenshot after replay: {}",
        after_shot.display()
    );
    browser.quit().await;

    assert!(
        rejected.contains("401") && rejected.contains("UNAUTHORIZED"),
        "a wrong key is reported, not swallowed: {rejected}"
    );
    assert!(
        model.contains("model-a") && model.contains("deployed"),
        "{model}"
    );
    assert_eq!(version, "3");
    assert_eq!(deployed, "deployed 2", "the stable version and the canary");
    assert!(
        rollout.contains("canary") && rollout.contains("running") && rollout.contains("step 1/2"),
        "{rollout}"
    );
    assert!(
        events.contains("deployed"),
        "the deployment's events: {events}"
    );
    assert_eq!(count_before, "1");
    assert!(letter_row.contains(&letter_id), "{letter_row}");
    assert_eq!(
        stored,
        json!(ADMIN_KEY),
        "the key is kept in session storage"
    );
    assert_eq!(count_after, "0");
    assert!(letters_after.contains("empty"), "{letters_after}");
    assert!(replayed_notice.contains("Replayed 1"), "{replayed_notice}");
    assert!(
        dead_letters(&app).await.is_empty(),
        "the API agrees: no dead letter left"
    );
}

#[tokio::test]
async fn the_page_and_its_assets_need_no_key_and_forbid_inline_code() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;

    let mut served = Vec::new();
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .expect("request");
        let header = |name: &str| response.headers()[name].to_str().expect("ascii").to_owned();
        let (status, content_type, csp) = (
            response.status(),
            header("content-type"),
            header("content-security-policy"),
        );
        served.push((
            path,
            kind,
            status,
            content_type,
            csp,
            response.text().await.expect("body"),
        ));
    }

    for (path, kind, status, content_type, csp, _) in &served {
        assert_eq!(*status, 200, "{path}");
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
    }
    let (page, script) = (&served[0].5, &served[1].5);
    assert!(
        page.contains(r#"<script src="/dashboard/app.js""#),
        "the script is external"
    );
    assert_eq!(page.matches("<script").count(), 1, "no inline script");
    assert!(!page.contains("style="), "no inline style");
    for sink in [
        ".innerHTML",
        ".outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(
            !script.contains(sink),
            "text is set with textContent, never {sink}"
        );
    }
    assert!(
        script.contains("sessionStorage"),
        "the key lives in session storage"
    );
}
