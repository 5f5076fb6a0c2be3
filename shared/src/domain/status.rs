//! The deployment status machine of docs/design/domain.md.
//!
//! ```text
//! pending ──► deploying ──► deployed ──► undeploying ──► stopped
//!    │            │   ▲          │
//!    │            ▼   │(retry)   └─ endpoint lost/failed/paused ─► rolling_back
//!    └──────────► failed ◄── rolling_back ◄── deploy failed or timed out
//!                                  │
//!                                  └─ compensation exhausted ─► rollback_failed
//! ```

use sea_orm::sea_query::StringLen;
use sea_orm::{DeriveActiveEnum, EnumIter};
use serde::{Deserialize, Serialize};

/// The `deployed_models.status` column.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// Recorded, command queued.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// The provider is provisioning.
    #[sea_orm(string_value = "deploying")]
    Deploying,
    /// Running and healthy.
    #[sea_orm(string_value = "deployed")]
    Deployed,
    /// Being deleted at the provider.
    #[sea_orm(string_value = "undeploying")]
    Undeploying,
    /// Deleted at the provider (terminal).
    #[sea_orm(string_value = "stopped")]
    Stopped,
    /// Failed; nothing left at the provider (terminal).
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Compensating a failed deploy: deleting the provider endpoint.
    #[sea_orm(string_value = "rolling_back")]
    RollingBack,
    /// Compensation exhausted: an operator must look (terminal, alerting).
    #[sea_orm(string_value = "rollback_failed")]
    RollbackFailed,
}

impl DeploymentStatus {
    /// Every status, in the order of the diagram.
    pub const ALL: [Self; 8] = [
        Self::Pending,
        Self::Deploying,
        Self::Deployed,
        Self::Undeploying,
        Self::Stopped,
        Self::Failed,
        Self::RollingBack,
        Self::RollbackFailed,
    ];

    /// The string stored in the database and shown in JSON and MLflow tags.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Deploying => "deploying",
            Self::Deployed => "deployed",
            Self::Undeploying => "undeploying",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::RollingBack => "rolling_back",
            Self::RollbackFailed => "rollback_failed",
        }
    }

    /// Parses the stored string.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// No further transition is expected.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Failed | Self::RollbackFailed)
    }

    /// Whether the machine allows `self → next`. A step that would make any other move is
    /// a stale or out-of-order message and must do nothing.
    pub fn can_transition_to(self, next: Self) -> bool {
        use DeploymentStatus::*;
        matches!(
            (self, next),
            (Pending, Deploying | Failed | Undeploying | RollingBack)
                | (
                    Deploying,
                    Deploying | Deployed | RollingBack | Failed | Undeploying
                )
                | (Deployed, Undeploying | RollingBack)
                | (Undeploying, Undeploying | Stopped)
                | (RollingBack, Failed | RollbackFailed)
                | (RollbackFailed, RollingBack)
        )
    }
}

impl std::fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for status in DeploymentStatus::ALL {
            assert_eq!(DeploymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(DeploymentStatus::parse("running"), None);
    }

    #[test]
    fn terminal_states_only_leave_for_an_operator_retry() {
        use DeploymentStatus::*;
        for from in [Stopped, Failed] {
            assert!(
                DeploymentStatus::ALL
                    .iter()
                    .all(|to| !from.can_transition_to(*to))
            );
        }
        assert!(RollbackFailed.can_transition_to(RollingBack));
        assert!(Pending.can_transition_to(Deploying));
        assert!(!Deployed.can_transition_to(Deploying));
        assert!(!Stopped.can_transition_to(Deployed));
    }
}
