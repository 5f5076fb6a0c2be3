//! Bounded work per request (issue 19): load shedding past `MAX_CONCURRENT_REQUESTS` and
//! recovery, `REQUEST_TIMEOUT_SECONDS` against a client that sends its body slowly,
//! `MAX_UPSTREAM_BODY_BYTES`, `MAX_UPSTREAM_CONNECTIONS_PER_HOST` (the wait's deadline: the
//! forwarder's unit tests), the webhook's 256 KiB, `MAX_REPLICAS_PER_DEPLOYMENT`, and the
//! production roles refusing to start without `ENVIRONMENT`.

use std::time::{Duration, Instant};

use serde_json::json;
use tests::app::{ADMIN_KEY, TestApp, assert_error};
use tests::db::Engine;
use tests::process::{run, scratch_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn overload_sheds_with_503_and_recovers() {
    let app = TestApp::start(Engine::Sqlite, &[("MAX_CONCURRENT_REQUESTS", "2")]).await;
    app.serve_upstream("slow", 200, "[]", Duration::from_millis(1500))
        .await;
    let input = json!({"inputs": "x"});
    let predict = || app.post("/api/v1/models/slow/predict", ADMIN_KEY, &input);

    let probe = |path: &'static str| app.client.get(format!("{}{path}", app.url)).send();
    let (chat, infer) = (json!({"model": "slow"}), json!({"inputs": []}));

    let (a, b, (shed, openai, oip, health, v2_live)) = tokio::join!(predict(), predict(), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::join!(
            predict(),
            app.post("/v1/chat/completions", ADMIN_KEY, &chat),
            app.post("/v2/models/slow/infer", ADMIN_KEY, &infer),
            probe("/health"),
            probe("/v2/health/live"),
        )
    });
    let recovered = predict().await;

    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(
        shed.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_error(shed, 503, "OVERLOADED").await;
    // The layer's refusal takes each protocol's error shape.
    assert_eq!(openai.status(), 503);
    let openai: serde_json::Value = openai.json().await.expect("json");
    assert_eq!(openai["error"]["code"], "overloaded", "{openai}");
    assert_eq!(openai["error"]["type"], "api_error", "{openai}");
    assert_eq!(oip.status(), 503);
    let oip: serde_json::Value = oip.json().await.expect("json");
    assert!(
        oip["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{oip}"
    );
    assert_eq!(oip.as_object().map(serde_json::Map::len), Some(1), "{oip}");
    assert_eq!(
        health.expect("health").status(),
        200,
        "probes are never shed"
    );
    assert_eq!(
        v2_live.expect("v2 live").status(),
        200,
        "probes are never shed"
    );
    assert_eq!(recovered.status(), 200);
}

#[tokio::test]
async fn a_body_sent_slowly_times_out_at_request_timeout() {
    let app = TestApp::start(Engine::Sqlite, &[("REQUEST_TIMEOUT_SECONDS", "1")]).await;
    let address = app.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/models/slowloris/deployments HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"prov"
    );
    let started = Instant::now();

    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered before the client gave up")
        .expect("read");

    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("\"TIMEOUT\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_upstream_answer_past_max_upstream_body_bytes_is_502() {
    let app = TestApp::start(Engine::Sqlite, &[("MAX_UPSTREAM_BODY_BYTES", "64")]).await;
    app.serve_upstream("small", 200, r#"[{"label":"ok"}]"#, Duration::ZERO)
        .await;
    app.serve_upstream(
        "huge",
        200,
        r#"[{"label":"0123456789012345678901234567890123456789012345678901234567890123456789"}]"#,
        Duration::ZERO,
    )
    .await;
    let input = json!({"inputs": "x"});

    let small = app
        .post("/api/v1/models/small/predict", ADMIN_KEY, &input)
        .await;
    let huge = app
        .post("/api/v1/models/huge/predict", ADMIN_KEY, &input)
        .await;

    assert_eq!(small.status(), 200);
    assert_error(huge, 502, "UPSTREAM_ERROR").await;
}

#[tokio::test]
async fn predictions_past_max_upstream_connections_per_host_wait_for_a_connection() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let app = TestApp::start(
        Engine::Sqlite,
        &[("MAX_UPSTREAM_CONNECTIONS_PER_HOST", "1")],
    )
    .await;
    // A model endpoint that takes 300 ms per prediction and counts the ones it holds at once.
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (held, seen) = (now.clone(), most.clone());
    let endpoint = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .route(
            "/",
            axum::routing::post(move || {
                let (now, most) = (held.clone(), seen.clone());
                async move {
                    most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    ([("content-type", "application/json")], "[]")
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, endpoint).await.ok() });
    let spec = json!({"provider": "http", "endpoint_url": url});
    app.deploy_and_serve(&app.worker(), "one", spec).await;
    let input = json!({"inputs": "x"});
    let predict = || app.post("/api/v1/models/one/predict", ADMIN_KEY, &input);

    let started = Instant::now();
    let (a, b, c) = tokio::join!(predict(), predict(), predict());
    let took = started.elapsed();
    let most = most.load(Ordering::SeqCst);
    println!("three at once through one connection: {most} at the endpoint at once, {took:?}");
    let statuses = [a.status(), b.status(), c.status()].map(|s| s.as_u16());
    assert_eq!(statuses, [200; 3], "all served, one after the other");
    assert_eq!(most, 1, "the endpoint never held more than the bound");
    assert!(took >= Duration::from_millis(900), "{took:?}");
}

#[tokio::test]
async fn webhook_bodies_past_256_kib_and_fleets_past_the_replica_cap_are_refused() {
    let app = TestApp::start(
        Engine::Sqlite,
        &[
            ("MLFLOW_WEBHOOK_SECRET", "s3cret"),
            ("MAX_REPLICAS_PER_DEPLOYMENT", "4"),
        ],
    )
    .await;
    let oversized = vec![b'x'; 300 * 1024];

    let webhook = app
        .client
        .post(format!("{}/api/v1/webhooks/mlflow", app.url))
        .header("content-type", "application/json")
        .body(oversized)
        .send()
        .await
        .expect("request");
    let fleet = app
        .post(
            "/api/v1/models/fleet/deployments",
            ADMIN_KEY,
            &json!({"repository": "org/model", "scaling": {"min_replica": 0, "max_replica": 5}}),
        )
        .await;

    assert_error(webhook, 413, "PAYLOAD_TOO_LARGE").await;
    let body = assert_error(fleet, 422, "VALIDATION_ERROR").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("scaling.max_replica"),
        "{body}"
    );
}

#[tokio::test]
async fn the_api_and_worker_roles_exit_2_without_environment() {
    let dir = scratch_dir();

    for role in ["api", "worker"] {
        let finished = run(&dir, &[role], &[("DATABASE_URL", "sqlite://x.db?mode=rwc")]).await;

        assert_eq!(finished.code, Some(2), "{role}: {finished:?}");
        assert!(
            finished.stderr.contains("ENVIRONMENT"),
            "{role}: {}",
            finished.stderr
        );
    }
}

#[tokio::test]
async fn the_docs_page_runs_only_its_own_script() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;

    let docs = app
        .client
        .get(format!("{}/docs", app.url))
        .send()
        .await
        .expect("docs");

    let policy = docs
        .headers()
        .get("content-security-policy")
        .expect("a Content-Security-Policy")
        .to_str()
        .expect("ascii")
        .to_owned();
    let page = docs.text().await.expect("page");
    let script = page
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .expect("the inline script")
        .0;
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
    assert!(
        policy.contains(&format!("script-src 'sha256-{hash}'")),
        "{policy}"
    );
    assert!(policy.contains("default-src 'none'"), "{policy}");
}
