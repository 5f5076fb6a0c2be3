//! `GET /v1/models`: what an OpenAI client lists before it picks a `model`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use shared::domain::ModelId;

use super::Auth;
use super::schema::{ModelCard, ModelList};
use crate::auth::Authenticated;
use crate::error::{ApiError, OpenAiErrorResponse};
use crate::state::AppState;

/// `GET /v1/models`: the models with an active deployment this key may call.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    operation_id = "openai_models",
    summary = "The models this key may call (OpenAI-compatible)",
    description = "The models with an active deployment whose `predict` or `predict:{model_id}` scope the key holds.",
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The models", body = ModelList),
        (status = 503, description = "AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE: the database is unreachable; OVERLOADED", body = OpenAiErrorResponse),
    ),
)]
pub(crate) async fn models(State(state): State<AppState>, auth: Auth) -> Response {
    let answer = async {
        let Authenticated(principal) = auth?;
        let filter = shared::db::deployments::Filter {
            status: Some(shared::domain::DeploymentStatus::Deployed),
            limit: Some(1000),
            ..Default::default()
        };
        let deployed = shared::db::deployments::list(&state.db, &filter).await?;
        let data = deployed
            .into_iter()
            .filter(|d| d.is_active)
            .filter(|d| {
                ModelId::parse(&d.model_id).is_ok_and(|m| principal.require_predict(&m).is_ok())
            })
            .map(|d| ModelCard {
                created: d.created_at.timestamp(),
                id: d.model_id,
                object: "model",
                owned_by: "hokusai",
            })
            .collect();
        Ok::<_, ApiError>(ModelList {
            object: "list",
            data,
        })
    };
    match answer.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}
