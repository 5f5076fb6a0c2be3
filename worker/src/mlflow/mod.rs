//! The worker's half of the MLflow integration (docs/contracts/mlflow.md). Three loops, started by
//! [`Worker::run_until_stopped`](crate::Worker::run_until_stopped) only when
//! `MLFLOW_TRACKING_URI` is set, none of them touching the saga:
//!
//! - [`intake`]: handles the events the API's listener recorded in `mlflow_events` —
//!   fetches the version's metadata from MLflow, validates it with
//!   [`shared::request::prepare`] and creates the deployment (or writes the rejection back
//!   to MLflow), or makes a version active for the `production` alias.
//! - [`sync`]: follows `deployment_events` after a stored cursor and writes each changed
//!   deployment's state back to its model version as `hokusai.*` tags.
//! - [`reconcile`]: every `MLFLOW_RECONCILE_INTERVAL_SECONDS`, finds versions tagged
//!   `hokusai.deploy=true` without a deployment (their webhook was dropped) and deploys them.
//!
//! [`versions`] holds what intake and reconciliation share: deploying one version exactly
//! once, rejecting it, activating it.

pub mod intake;
pub mod reconcile;
pub mod sync;
pub mod versions;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use shared::config::{AutoDeploy, Settings};
use shared::db::lease::Leadership;
use shared::db::outbox::Route;
use shared::mlflow::{MlflowClient, MlflowError};
use shared::provider::{InstanceSpec, ProviderRegistry};
use shared::runtime::Tasks;

/// What the MLflow loops need.
#[derive(Clone)]
pub struct MlflowContext {
    /// The application database.
    pub db: DatabaseConnection,
    /// The MLflow REST client.
    pub client: MlflowClient,
    /// Providers, to validate deploy requests.
    pub providers: Arc<ProviderRegistry>,
    /// Where deploy and retire commands are written.
    pub route: Route,
    /// Hardware used when a request leaves it out.
    pub default_instance: InstanceSpec,
    /// `MLFLOW_AUTO_DEPLOY`.
    pub auto_deploy: AutoDeploy,
    /// `RETIRE_AFTER_SECONDS`: delay before a version replaced by an alias move is undeployed.
    pub retire_after: Duration,
    /// `MLFLOW_RECONCILE_INTERVAL_SECONDS`.
    pub reconcile_interval: Duration,
    /// Reconciliation passes this process has run (the first runs at start-up).
    pub reconcile_passes: Arc<std::sync::atomic::AtomicU64>,
}

impl MlflowContext {
    /// The context `settings` describe; `None` when `MLFLOW_TRACKING_URI` is unset.
    pub fn from_settings(
        settings: &Settings,
        db: DatabaseConnection,
        providers: Arc<ProviderRegistry>,
    ) -> Result<Option<Self>, MlflowError> {
        let Some(client) = MlflowClient::from_settings(&settings.mlflow)? else {
            return Ok(None);
        };
        let hf = &settings.huggingface;
        Ok(Some(Self {
            db,
            client,
            providers,
            route: Route::for_backend(settings.queue.backend),
            default_instance: InstanceSpec {
                vendor: hf.default_vendor.clone(),
                region: hf.default_region.clone(),
                instance_type: hf.default_instance_type.clone(),
                instance_size: hf.default_instance_size.clone(),
            },
            auto_deploy: settings.mlflow.auto_deploy,
            retire_after: settings.worker.retire_after,
            reconcile_interval: settings.mlflow.reconcile_interval,
            reconcile_passes: Arc::default(),
        }))
    }

    /// Runs the intake (every worker), the status sync (the leader only: one writer of
    /// each tag) and the reconciliation loop under `tasks`.
    pub fn supervise(self, tasks: &Tasks, leadership: &Leadership) {
        let ctx = Arc::new(self);
        tasks.supervise("mlflow_intake", intake::PERIOD, {
            let ctx = ctx.clone();
            move |heartbeat, shutdown| intake::run(ctx.clone(), heartbeat, shutdown)
        });
        tasks.every("mlflow_sync", sync::PERIOD, Some(leadership.predicate()), {
            let ctx = ctx.clone();
            move || {
                let ctx = ctx.clone();
                async move { sync::sync_once(&ctx).await.map(drop).map_err(Into::into) }
            }
        });
        let interval = ctx.reconcile_interval;
        tasks.every("mlflow_reconcile", interval, None, move || {
            let ctx = ctx.clone();
            async move {
                let outcome = reconcile::reconcile_once(&ctx).await;
                ctx.reconcile_passes
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let report = outcome.map_err(|e| anyhow::anyhow!("MLflow reconciliation: {e}"))?;
                tracing::debug!(?report, "MLflow reconciliation pass");
                Ok(())
            }
        });
    }
}
