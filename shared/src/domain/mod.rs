//! Domain types: identifiers parsed once at the edge, the deployment status machine and the
//! rollout of a new version.

mod ids;
pub mod rollout;
mod status;

pub use ids::{DeploymentId, InvalidModelId, ModelId};
pub use rollout::{InvalidRollout, RolloutSpec, Strategy};
pub use status::DeploymentStatus;
