//! `mlflow_deliveries`: accepted webhook delivery ids (replay protection).

use sea_orm::entity::prelude::*;

/// An accepted delivery.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "mlflow_deliveries")]
pub struct Model {
    /// `X-MLflow-Delivery-Id`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub delivery_id: String,
    /// When it was accepted.
    pub received_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
