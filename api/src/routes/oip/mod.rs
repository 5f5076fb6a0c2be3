//! The Open Inference Protocol V2 (KServe V2 / Triton HTTP) in front of the same models as
//! `POST /api/v1/models/{model_id}/predict`, so `tritonclient[http]` and other V2 clients
//! work unchanged (docs/integration-guide.md, "Open Inference Protocol"):
//!
//! - `GET /v2/health/live`, `GET /v2/health/ready`: the server (no key; ready = the database
//!   answers); `GET /v2`: its name, version and extensions (any valid key).
//! - `GET /v2/models/{model_id}[/versions/{v}]`: metadata (the task's input and output
//!   tensors); `…/ready`: 200 when the model (that MLflow version) is serving, 404 otherwise;
//!   `POST …/infer`: a prediction. These take an API key with `predict` or
//!   `predict:{model_id}`, like predict.
//!
//! The codec is `crate::protocol::oip` (JSON and the binary tensor data extension); the
//! forwarding step, metrics and upstream error mapping are predict's (`predict::forward`).
//! Every error answers the protocol's shape `{"error": "<sentence>"}` with the status our own
//! API gives the same failure (and its `Retry-After`), written by `crate::error::render` for
//! every `/v2/` route; `X-Request-Id` is on every answer.

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use shared::domain::ModelId;

mod schema;

use schema::{InferRequest as InferRequestBody, InferResponse as InferResponseBody};
use schema::{ModelMetadata, ModelReady, ServerLive, ServerMetadata, ServerReady};

use crate::auth::Authenticated;
use crate::error::{ApiError, OipErrorResponse};
use crate::extract::{Body, Path};
use crate::observe::RequestContext;
use crate::protocol::oip::{self, InferResponse, OipError};
use crate::routing::{ActiveRoute, Routed};
use crate::state::AppState;

/// The V2 routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model_id}", get(metadata))
        .route("/v2/models/{model_id}/ready", get(model_ready))
        .route("/v2/models/{model_id}/infer", post(infer))
        .route(
            "/v2/models/{model_id}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{model_id}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{model_id}/versions/{version}/infer",
            post(version_infer),
        )
}

impl From<OipError> for ApiError {
    fn from(error: OipError) -> Self {
        match error {
            OipError::Malformed(message) => Self::BadRequest(message),
            OipError::Invalid(message) => Self::Validation(message),
        }
    }
}

#[utoipa::path(
    get,
    path = "/v2",
    tag = "open inference protocol",
    operation_id = "oip_server_metadata",
    summary = "Server metadata (Open Inference Protocol)",
    description = "Any valid key (it names the server's version).",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The server's name, version and protocol extensions", body = ServerMetadata)),
)]
pub(crate) async fn server_metadata(principal: Result<Authenticated, ApiError>) -> Response {
    match principal {
        Ok(_) => axum::Json(ServerMetadata {
            name: "hokusai-serve",
            version: env!("CARGO_PKG_VERSION"),
            extensions: &["binary_tensor_data"],
        })
        .into_response(),
        Err(error) => error.into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/v2/health/live",
    tag = "open inference protocol",
    operation_id = "oip_live",
    summary = "Server liveness (Open Inference Protocol)",
    responses((status = 200, description = "The server answers", body = ServerLive)),
)]
pub(crate) async fn live() -> Response {
    axum::Json(ServerLive { live: true }).into_response()
}

#[utoipa::path(
    get,
    path = "/v2/health/ready",
    tag = "open inference protocol",
    operation_id = "oip_ready",
    summary = "Server readiness (Open Inference Protocol)",
    responses(
        (status = 200, description = "Ready: the database answers", body = ServerReady),
        (status = 503, description = "Not ready: the database does not answer", body = ServerReady),
    ),
)]
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let ping = shared::runtime::within(
        "the readiness ping",
        std::time::Duration::from_secs(2),
        state.db.ping(),
    );
    let ready = matches!(ping.await, Ok(Ok(())));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(ServerReady { ready })).into_response()
}

/// The model id and the optional version of a V2 path.
#[derive(serde::Deserialize)]
pub(crate) struct ModelPath {
    model_id: String,
    version: Option<String>,
}

/// The serving route of the model named in `path`, after the key's scope is checked; a
/// version that is not the serving one is 404 (V2 clients address versions explicitly).
async fn serving(
    state: &AppState,
    principal: &crate::auth::Principal,
    path: &ModelPath,
) -> Result<(ModelId, Arc<ActiveRoute>), ApiError> {
    let not_deployed = || ApiError::ModelNotDeployed(path.model_id.clone());
    let model = ModelId::parse(&path.model_id).map_err(|_| not_deployed())?;
    principal.require_predict(&model)?;
    let Routed::Active(route) = state.routing.resolve(&state.db, &model).await? else {
        return Err(not_deployed());
    };
    check_version(path, &route)?;
    Ok((model, route))
}

fn check_version(path: &ModelPath, route: &ActiveRoute) -> Result<(), ApiError> {
    match (&path.version, &route.model_version) {
        (Some(asked), serving) if serving.as_deref() != Some(asked.as_str()) => {
            Err(ApiError::NotFound(format!(
                "version {asked} of model `{}` is not serving (serving: {})",
                path.model_id,
                serving.as_deref().unwrap_or("an unversioned deployment")
            )))
        }
        _ => Ok(()),
    }
}

#[utoipa::path(
    get,
    path = "/v2/models/{model_id}",
    tag = "open inference protocol",
    operation_id = "oip_model_metadata",
    summary = "Model metadata (Open Inference Protocol)",
    params(("model_id" = String, Path, description = "The Hokusai model id (MLflow registered-model name)")),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The model's input and output tensors", body = ModelMetadata),
        (status = 404, description = "MODEL_NOT_DEPLOYED: the model has no active deployment", body = OipErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OipErrorResponse),
    ),
)]
pub(crate) async fn metadata(
    State(state): State<AppState>,
    principal: Result<Authenticated, ApiError>,
    path: Result<Path<ModelPath>, ApiError>,
) -> Response {
    let answer = async {
        let Authenticated(principal) = principal?;
        let Path(path) = path?;
        let (model, route) = serving(&state, &principal, &path).await?;
        let (inputs, outputs) = oip::metadata_for_task(route.task.as_deref());
        Ok::<_, ApiError>(ModelMetadata {
            name: model.as_str().to_owned(),
            versions: route.model_version.iter().cloned().collect(),
            platform: format!("hokusai-serve/{}", route.provider),
            inputs,
            outputs,
        })
    };
    match answer.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/v2/models/{model_id}/ready",
    tag = "open inference protocol",
    operation_id = "oip_model_ready",
    summary = "Model readiness (Open Inference Protocol)",
    params(("model_id" = String, Path, description = "The Hokusai model id (MLflow registered-model name)")),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The model (that version) is serving", body = ModelReady),
        (status = 404, description = "MODEL_NOT_DEPLOYED: the model has no active deployment", body = OipErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OipErrorResponse),
    ),
)]
pub(crate) async fn model_ready(
    State(state): State<AppState>,
    principal: Result<Authenticated, ApiError>,
    path: Result<Path<ModelPath>, ApiError>,
) -> Response {
    let answer = async {
        let Authenticated(principal) = principal?;
        let Path(path) = path?;
        let (model, _) = serving(&state, &principal, &path).await?;
        Ok::<_, ApiError>(ModelReady {
            name: model.as_str().to_owned(),
            ready: true,
        })
    };
    match answer.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

#[utoipa::path(
    post,
    path = "/v2/models/{model_id}/infer",
    tag = "open inference protocol",
    operation_id = "oip_infer",
    summary = "Inference (Open Inference Protocol)",
    params(("model_id" = String, Path, description = "The Hokusai model id (MLflow registered-model name)")),
    request_body(description = "An inference request, JSON or with the binary tensor data extension (a Content-Type is not required)", content((InferRequestBody = "application/json"), ("application/octet-stream"))),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The output tensors (binary when asked: `Inference-Header-Content-Length` gives the JSON header's length)", content((InferResponseBody = "application/json"), ("application/octet-stream"))),
        (status = 400, description = "BAD_REQUEST: malformed JSON or binary framing, or the model rejected the request", body = OipErrorResponse),
        (status = 422, description = "VALIDATION_ERROR: not one input tensor, an unsupported datatype, data that does not match the shape, an unknown requested output, or a path parameter that is not UTF-8", body = OipErrorResponse),
        (status = 502, description = "UPSTREAM_ERROR: the model endpoint failed", body = OipErrorResponse),
        (status = 504, description = "UPSTREAM_TIMEOUT: the model endpoint did not answer in time", body = OipErrorResponse),
        (status = 404, description = "MODEL_NOT_DEPLOYED: the model has no active deployment", body = OipErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OipErrorResponse),
    ),
)]
pub(crate) async fn infer(
    State(state): State<AppState>,
    context: Option<Extension<RequestContext>>,
    principal: Result<Authenticated, ApiError>,
    path: Result<Path<ModelPath>, ApiError>,
    headers: HeaderMap,
    body: Result<Body, ApiError>,
) -> Response {
    let started = context.as_ref().map_or_else(Instant::now, |c| c.started());
    let answer = async {
        let Authenticated(principal) = principal?;
        let Path(path) = path?;
        // Scope, serving model and version first: a refused request costs no parsing.
        let (model, _) = serving(&state, &principal, &path).await?;
        let Body(bytes) = body?;
        let header_length = match headers.get(oip::HEADER_LENGTH_HEADER) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                ApiError::BadRequest(format!(
                    "{} must be a decimal number of bytes",
                    oip::HEADER_LENGTH_HEADER
                ))
            })?),
        };
        let request = oip::parse_request(&bytes, header_length)?;
        let inputs = oip::provider_inputs(&request)?;
        let parameters = (!request.parameters.is_empty()).then(|| request.parameters.clone());
        let how = super::predict::pick_of(&state, &principal, &headers, &model)?;
        let (route, predictions) = super::predict::forward(
            &state,
            context.as_ref(),
            &model,
            &path.model_id,
            (inputs, parameters),
            how,
            started,
        )
        .await?;
        let outputs = oip::outputs_from_predictions(&predictions);
        let encoded = oip::encode_response(
            &InferResponse {
                model_name: model.as_str(),
                model_version: route.model_version.as_deref(),
                id: request.id.as_deref(),
                outputs,
            },
            &request,
        )?;
        Ok::<_, ApiError>(encoded)
    };
    match answer.await {
        Ok(encoded) => {
            let mut response = encoded.body.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(encoded.content_type),
            );
            if let Some(length) = encoded.header_length {
                headers.insert(oip::HEADER_LENGTH_HEADER, HeaderValue::from(length));
            }
            response
        }
        Err(error) => error.into_response(),
    }
}

// The `/versions/{version}` forms: the same handlers, each documented as its own operation.

#[utoipa::path(
    get,
    path = "/v2/models/{model_id}/versions/{version}",
    tag = "open inference protocol",
    operation_id = "oip_version_metadata",
    summary = "Metadata of one version (Open Inference Protocol)",
    params(("model_id" = String, Path, description = "The Hokusai model id (MLflow registered-model name)"), ("version" = String, Path, description = "The MLflow version; 404 unless it is the serving one")),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The model's input and output tensors", body = ModelMetadata),
        (status = 404, description = "MODEL_NOT_DEPLOYED: the model has no active deployment; NOT_FOUND: that version is not the serving one", body = OipErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OipErrorResponse),
    ),
)]
pub(crate) async fn version_metadata(
    state: State<AppState>,
    principal: Result<Authenticated, ApiError>,
    path: Result<Path<ModelPath>, ApiError>,
) -> Response {
    metadata(state, principal, path).await
}

#[utoipa::path(
    get,
    path = "/v2/models/{model_id}/versions/{version}/ready",
    tag = "open inference protocol",
    operation_id = "oip_version_ready",
    summary = "Readiness of one version (Open Inference Protocol)",
    params(("model_id" = String, Path, description = "The Hokusai model id (MLflow registered-model name)"), ("version" = String, Path, description = "The MLflow version; 404 unless it is the serving one")),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The model (that version) is serving", body = ModelReady),
        (status = 404, description = "MODEL_NOT_DEPLOYED: the model has no active deployment; NOT_FOUND: that version is not the serving one", body = OipErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OipErrorResponse),
    ),
)]
pub(crate) async fn version_ready(
    state: State<AppState>,
    principal: Result<Authenticated, ApiError>,
    path: Result<Path<ModelPath>, ApiError>,
) -> Response {
    model_ready(state, principal, path).await
}

#[utoipa::path(
    post,
    path = "/v2/models/{model_id}/versions/{version}/infer",
    tag = "open inference protocol",
    operation_id = "oip_version_infer",
    summary = "Inference on one version (Open Inference Protocol)",
    params(("model_id" = String, Path, description = "The Hokusai model id (MLflow registered-model name)"), ("version" = String, Path, description = "The MLflow version; 404 unless it is the serving one")),
    request_body(description = "An inference request, JSON or with the binary tensor data extension (a Content-Type is not required)", content((InferRequestBody = "application/json"), ("application/octet-stream"))),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The output tensors (binary when asked: `Inference-Header-Content-Length` gives the JSON header's length)", content((InferResponseBody = "application/json"), ("application/octet-stream"))),
        (status = 400, description = "BAD_REQUEST: malformed JSON or binary framing, or the model rejected the request", body = OipErrorResponse),
        (status = 422, description = "VALIDATION_ERROR: not one input tensor, an unsupported datatype, data that does not match the shape, an unknown requested output, or a path parameter that is not UTF-8", body = OipErrorResponse),
        (status = 502, description = "UPSTREAM_ERROR: the model endpoint failed", body = OipErrorResponse),
        (status = 504, description = "UPSTREAM_TIMEOUT: the model endpoint did not answer in time", body = OipErrorResponse),
        (status = 404, description = "MODEL_NOT_DEPLOYED: the model has no active deployment; NOT_FOUND: that version is not the serving one", body = OipErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OipErrorResponse),
    ),
)]
pub(crate) async fn version_infer(
    state: State<AppState>,
    context: Option<Extension<RequestContext>>,
    principal: Result<Authenticated, ApiError>,
    path: Result<Path<ModelPath>, ApiError>,
    headers: HeaderMap,
    body: Result<Body, ApiError>,
) -> Response {
    infer(state, context, principal, path, headers, body).await
}
