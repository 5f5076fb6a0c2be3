//! A scripted model endpoint for the `http` provider: answers `GET /health` 200 and each
//! `POST /` with the status and body it was told, after an optional delay. Tests use it to
//! make the upstream fail in exactly one way (4xx, 5xx, slowness).

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

/// Starts an endpoint on 127.0.0.1:0 answering predictions with `status` and `body` after
/// `delay`; returns its URL.
pub async fn start(status: u16, body: &'static str, delay: Duration) -> String {
    let status = StatusCode::from_u16(status).expect("a valid status");
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/",
            post(move || async move {
                // `sleep(ZERO)` would still wait for the timer's next millisecond tick.
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                (status, [("content-type", "application/json")], body)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    url
}
