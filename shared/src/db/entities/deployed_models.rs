//! `deployed_models`: one row per deployment of a model.

use sea_orm::entity::prelude::*;
use serde::Serialize;

use crate::domain::DeploymentStatus;

/// A deployment. Serializes as the `Deployment` JSON of docs/design/http-api.md.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Deployment))]
#[sea_orm(table_name = "deployed_models")]
pub struct Model {
    /// Deployment id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// MLflow registered-model name.
    pub model_id: String,
    /// MLflow model version.
    pub model_version: Option<String>,
    /// Provider name (`huggingface`, `http`).
    pub provider: String,
    /// The provider's own name for the endpoint (HF endpoint name).
    pub provider_model_id: Option<String>,
    /// Where predictions are sent once deployed.
    pub endpoint_url: Option<String>,
    /// Our status machine.
    pub status: DeploymentStatus,
    /// The provider's own state string.
    pub provider_status: Option<String>,
    /// Instance type (HF `instanceType`, e.g. `intel-spr`).
    pub instance_type: String,
    /// Instance size (`x1`…`x16`).
    pub instance_size: Option<String>,
    /// Cloud vendor.
    pub vendor: Option<String>,
    /// Cloud region.
    pub region: Option<String>,
    /// Model task (e.g. `text-classification`).
    pub task: Option<String>,
    /// Model framework (e.g. `pytorch`).
    pub framework: Option<String>,
    /// HF Hub repository.
    pub repository: Option<String>,
    /// Repository revision.
    pub revision: Option<String>,
    /// Last failure reason.
    #[sea_orm(column_type = "Text", nullable)]
    pub error_message: Option<String>,
    /// Free-form metadata (MLflow tags, scaling, spec overrides).
    #[sea_orm(column_type = "JsonBinary", nullable)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Json>,
    /// Serving predictions (at most one per model).
    pub is_active: bool,
    /// Price per hour of the configured replicas.
    pub hourly_cost_usd: Option<f64>,
    /// Cost observed so far.
    pub accrued_cost_usd: f64,
    /// The `Idempotency-Key` of the request that created it (unique per model).
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    /// Optimistic lock: incremented by every transition.
    #[serde(skip)]
    pub lock_version: i32,
    /// Created.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: DateTimeUtc,
    /// Last changed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: DateTimeUtc,
    /// Became `deployed`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub deployed_at: Option<DateTimeUtc>,
    /// Became `stopped`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub stopped_at: Option<DateTimeUtc>,
    /// Last answered a prediction (recorded by the API within a minute).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_prediction_at: Option<DateTimeUtc>,
    /// The month (`YYYY-MM`, UTC) `accrued_cost_usd` was last written in.
    #[serde(skip)]
    pub cost_month: Option<String>,
    /// What had accrued when `cost_month` began.
    #[serde(skip)]
    pub month_start_accrued_usd: f64,
}

/// Relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The deployment's event log.
    #[sea_orm(has_many = "super::deployment_events::Entity")]
    Events,
}

impl Related<super::deployment_events::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Events.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
