//! Domain types: identifiers parsed once at the edge and the deployment status machine.

mod ids;
mod status;

pub use ids::{DeploymentId, InvalidModelId, ModelId};
pub use status::DeploymentStatus;
