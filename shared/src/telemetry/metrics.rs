//! The process's Prometheus registry (docs/design/observability.md): installed once as the
//! global `metrics` recorder, rendered by `GET /metrics` on the API and on the worker's metrics
//! port.
//!
//! Every series is named here, with its help text and, for histograms, its buckets, so the
//! exposition is the same whichever role records first. Label values are bounded: model ids
//! come from the database (never from the path of a request for an unknown model), routes
//! are templates, outcomes are fixed words.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Request-scale latencies: 0.5 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// How long a deployment takes to become serving (or to fail): 5 s to 1 h.
const DEPLOYMENT_BUCKETS: &[f64] = &[
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0,
];

/// The names of docs/design/observability.md.
pub mod names {
    /// Requests answered, by method, route template and status.
    pub const HTTP_REQUESTS: &str = "hokusai_http_requests_total";
    /// Request latency by method and route template.
    pub const HTTP_DURATION: &str = "hokusai_http_request_duration_seconds";
    /// Predictions by model and outcome.
    pub const PREDICT_REQUESTS: &str = "hokusai_predict_requests_total";
    /// Time waiting for the model endpoint.
    pub const PREDICT_UPSTREAM: &str = "hokusai_predict_upstream_duration_seconds";
    /// Tokens of the OpenAI-compatible routes' answers, by model and kind (prompt, completion).
    pub const TOKENS: &str = "hokusai_tokens_total";
    /// Streamed answers that ended early (upstream cut or idle timeout), by model.
    pub const STREAM_ERRORS: &str = "hokusai_stream_errors_total";
    /// Counter `{model_id,track,outcome}`: predictions during a rollout by track
    /// (`stable`, `canary`) and outcome (`ok`, `error`).
    pub const ROLLOUT_REQUESTS: &str = "hokusai_rollout_requests_total";
    /// Histogram `{model_id,track}`: latency of predictions during a rollout, seconds.
    pub const ROLLOUT_LATENCY: &str = "hokusai_rollout_request_duration_seconds";
    /// Counter `{decision}`: the reconciler's rollout decisions (`advanced`, `promoted`,
    /// `aborted`, `starved`).
    pub const ROLLOUT_DECISIONS: &str = "hokusai_rollout_decisions_total";
    /// Time spent in the gateway itself (request received to response, minus upstream).
    pub const PREDICT_OVERHEAD: &str = "hokusai_predict_overhead_seconds";
    /// Key validations by outcome.
    pub const AUTH_VALIDATIONS: &str = "hokusai_auth_validations_total";
    /// Key cache lookups by result.
    pub const AUTH_CACHE: &str = "hokusai_auth_cache_total";
    /// Usage reports to the auth service by outcome (`AUTH_USAGE_REPORTING`).
    pub const AUTH_USAGE_REPORTS: &str = "hokusai_auth_usage_reports_total";
    /// Provider calls by provider, operation and outcome.
    pub const PROVIDER_REQUESTS: &str = "hokusai_provider_requests_total";
    /// Provider call latency by provider and operation.
    pub const PROVIDER_DURATION: &str = "hokusai_provider_request_duration_seconds";
    /// Queue messages by queue and event.
    pub const QUEUE_MESSAGES: &str = "hokusai_queue_messages_total";
    /// Messages waiting, by queue (`<name>.dlq` for dead letters).
    pub const QUEUE_DEPTH: &str = "hokusai_queue_depth";
    /// Outbox rows not yet relayed.
    pub const OUTBOX_PENDING: &str = "hokusai_outbox_pending";
    /// Deployments by status.
    pub const DEPLOYMENTS: &str = "hokusai_deployments";
    /// Request to serving (or failed), by outcome.
    pub const DEPLOYMENT_DURATION: &str = "hokusai_deployment_duration_seconds";
    /// A worker handler's time per command, by kind and phase (inbox, decide, commit, settle).
    pub const WORKER_STEP: &str = "hokusai_worker_step_duration_seconds";
    /// Accrued cost by model and provider.
    pub const DEPLOYMENT_COST: &str = "hokusai_deployment_cost_usd_total";
    /// Current hourly burn by model.
    pub const DEPLOYMENT_HOURLY_COST: &str = "hokusai_deployment_hourly_cost_usd";
    /// 1 when the model's deployment bills but has answered no prediction for `COST_IDLE_HOURS`.
    pub const DEPLOYMENT_IDLE: &str = "hokusai_deployment_idle";
    /// MLflow webhook deliveries by event and outcome.
    pub const MLFLOW_WEBHOOKS: &str = "hokusai_mlflow_webhooks_total";
    /// 1 on the worker holding the reconciler's leader lease, 0 on the others.
    pub const LEADER: &str = "hokusai_leader";
    /// Reconciler passes by outcome (`ok`, `failed`).
    pub const RECONCILE_PASSES: &str = "hokusai_reconcile_passes_total";
    /// What reconciler passes found and did, by action (`endpoint_lost`, `timed_out`,
    /// `command_reissued`, `observe_failed`, …).
    pub const RECONCILE_ACTIONS: &str = "hokusai_reconcile_actions_total";
    /// Endpoints nobody owns that the orphan sweep deleted.
    pub const ORPHANS_DELETED: &str = "hokusai_orphans_deleted_total";
    /// Endpoints nobody owns that the orphan sweep found (deleted or only reported).
    pub const ORPHANS_FOUND: &str = "hokusai_orphans_found_total";
    /// Background loops the supervisor restarted (they panicked or returned), by task.
    pub const TASK_RESTARTS: &str = "hokusai_task_restarts_total";
    /// Outbox rows the relay gave up on after `RELAY_MAX_ATTEMPTS`.
    pub const OUTBOX_PARKED: &str = "hokusai_outbox_parked_total";
    /// Rows deleted by retention (`RETENTION_DAYS`), by table.
    pub const RETENTION_DELETED: &str = "hokusai_retention_deleted_total";
    /// Requests refused by our own limits, by `limit` (`key`, `quota`, `failed_auth`,
    /// `concurrency`).
    pub const LIMITED: &str = "hokusai_limited_total";
    /// Rate-limit checks answered in-process because Redis could not be reached.
    pub const RATE_LIMIT_FALLBACKS: &str = "hokusai_rate_limit_fallbacks_total";
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process; later calls return the same handle).
/// The process runs [`upkeep`] every [`UPKEEP_PERIOD`] ([`super::supervise`]).
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(names::DEPLOYMENT_DURATION.into()),
                DEPLOYMENT_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            })
            .expect("bucket lists are non-empty")
            .install_recorder()
            .expect("no other metrics recorder is installed in this process");
        describe();
        handle
    })
}

/// How often the recorder's histograms are drained between scrapes.
pub const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Drains the recorder's histogram buffers (so they stay bounded without scrapes).
pub fn upkeep() {
    install().run_upkeep();
}

/// The `Content-Type` of [`render`]'s text (Prometheus exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text exposition of every series recorded so far.
pub fn render() -> String {
    install().render()
}

fn describe() {
    use names::*;
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered");
    describe_counter!(LIMITED, "Requests refused by our own limits, by limit");
    describe_counter!(
        RATE_LIMIT_FALLBACKS,
        "Rate-limit checks answered in-process because Redis was unreachable"
    );
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency");
    describe_counter!(PREDICT_REQUESTS, "Predictions by model and outcome");
    describe_counter!(
        TOKENS,
        "Tokens of OpenAI-compatible answers, by model and kind"
    );
    describe_counter!(STREAM_ERRORS, "Streamed answers that ended early, by model");
    describe_counter!(
        ROLLOUT_REQUESTS,
        "Predictions during a rollout, by model, track and outcome"
    );
    describe_histogram!(
        ROLLOUT_LATENCY,
        Unit::Seconds,
        "Prediction latency during a rollout, by model and track"
    );
    describe_counter!(ROLLOUT_DECISIONS, "Rollout decisions of the reconciler");
    describe_histogram!(
        PREDICT_UPSTREAM,
        Unit::Seconds,
        "Time waiting for the model endpoint"
    );
    describe_histogram!(
        PREDICT_OVERHEAD,
        Unit::Seconds,
        "Gateway time of a prediction, upstream excluded"
    );
    describe_counter!(AUTH_VALIDATIONS, "API key validations by outcome");
    describe_counter!(AUTH_CACHE, "API key cache lookups by result");
    describe_counter!(
        AUTH_USAGE_REPORTS,
        "Usage reports to the auth service by outcome (sent, failed, dropped)"
    );
    describe_counter!(PROVIDER_REQUESTS, "Provider API calls by outcome");
    describe_histogram!(
        PROVIDER_DURATION,
        Unit::Seconds,
        "Provider API call latency"
    );
    describe_counter!(QUEUE_MESSAGES, "Queue messages by event");
    describe_gauge!(
        QUEUE_DEPTH,
        "Messages waiting in a queue (.dlq: dead letters)"
    );
    describe_gauge!(OUTBOX_PENDING, "Outbox rows not yet relayed to the queue");
    describe_gauge!(DEPLOYMENTS, "Deployments by status");
    describe_histogram!(
        WORKER_STEP,
        Unit::Seconds,
        "A worker handler's time per command, by kind and phase"
    );
    describe_histogram!(
        DEPLOYMENT_DURATION,
        Unit::Seconds,
        "Deployment request to serving or failed"
    );
    describe_gauge!(DEPLOYMENT_COST, "Accrued cost in USD by model and provider");
    describe_gauge!(
        DEPLOYMENT_HOURLY_COST,
        "Current hourly burn in USD by model"
    );
    describe_gauge!(
        DEPLOYMENT_IDLE,
        "1 when a billing deployment answered no prediction for COST_IDLE_HOURS"
    );
    describe_counter!(
        MLFLOW_WEBHOOKS,
        "MLflow webhook deliveries by event and outcome"
    );
    describe_gauge!(
        LEADER,
        "1 on the worker holding the reconciler's leader lease"
    );
    describe_counter!(RECONCILE_PASSES, "Reconciler passes by outcome");
    describe_counter!(
        RECONCILE_ACTIONS,
        "Reconciler findings and repairs by action"
    );
    describe_counter!(ORPHANS_DELETED, "Orphaned provider endpoints deleted");
    describe_counter!(ORPHANS_FOUND, "Orphaned provider endpoints found");
    describe_counter!(
        TASK_RESTARTS,
        "Background loops restarted by the supervisor, by task"
    );
    describe_counter!(
        OUTBOX_PARKED,
        "Outbox rows parked after RELAY_MAX_ATTEMPTS failed publishes"
    );
    describe_counter!(RETENTION_DELETED, "Rows pruned by retention, by table");
}
