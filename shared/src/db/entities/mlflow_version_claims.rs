//! `mlflow_version_claims`: which deployment serves each MLflow model version (one each).

use sea_orm::entity::prelude::*;

/// A claimed version.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "mlflow_version_claims")]
pub struct Model {
    /// Registered model name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub model_name: String,
    /// Version.
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: String,
    /// Its deployment.
    pub deployment_id: Uuid,
    /// First claimed.
    pub created_at: DateTimeUtc,
    /// Last pointed at a new deployment.
    pub updated_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
