//! The `hokusai.*` tags: the ones users set on a model version or registered model to steer
//! a deployment, and the ones the service writes back to report on it. The webhook listener
//! ignores tag events for the keys it writes itself ([`is_written_by_us`]), so writing
//! status back never triggers another round.

/// `true` on a version or its registered model: deploy it.
pub const DEPLOY: &str = "hokusai.deploy";
/// Written back: the deployment status (docs/design/domain.md), or `rejected`.
pub const STATUS: &str = "hokusai.deployment.status";
/// Written back: the deployment id.
pub const DEPLOYMENT_ID: &str = "hokusai.deployment.id";
/// Written back: where the endpoint answers.
pub const ENDPOINT_URL: &str = "hokusai.endpoint_url";
/// Written back: why the deployment failed or was rejected (empty when it did not).
pub const ERROR: &str = "hokusai.deployment.error";
/// Written back on a version rolled out progressively: its rollout as JSON,
/// `{"strategy", "state", "step", "steps", "weight"}` (docs/design/rollouts.md).
pub const ROLLOUT_STATE: &str = "hokusai.deployment.rollout";
/// The status value of a version whose metadata cannot be deployed.
pub const REJECTED: &str = "rejected";

/// HF Hub repository (overrides the `MLmodel` transformers flavor's `source_model_name`).
pub const HF_REPOSITORY: &str = "hokusai.hf_repository";
/// Repository revision.
pub const REVISION: &str = "hokusai.revision";
/// Task.
pub const TASK: &str = "hokusai.task";
/// Framework.
pub const FRAMEWORK: &str = "hokusai.framework";
/// Provider name.
pub const PROVIDER: &str = "hokusai.provider";
/// Cloud vendor.
pub const VENDOR: &str = "hokusai.vendor";
/// Region.
pub const REGION: &str = "hokusai.region";
/// Instance type.
pub const INSTANCE_TYPE: &str = "hokusai.instance_type";
/// Instance size.
pub const INSTANCE_SIZE: &str = "hokusai.instance_size";
/// Fewest replicas.
pub const MIN_REPLICA: &str = "hokusai.min_replica";
/// Most replicas.
pub const MAX_REPLICA: &str = "hokusai.max_replica";
/// Minutes before scaling to zero.
pub const SCALE_TO_ZERO_TIMEOUT: &str = "hokusai.scale_to_zero_timeout";
/// How the version takes over from the serving one: the deploy body's `rollout` object as
/// JSON (`{"strategy": "canary", "steps": [10, 50, 100], ...}`; docs/design/rollouts.md).
pub const ROLLOUT: &str = "hokusai.rollout";

/// The keys the service writes on model versions.
pub const WRITTEN: [&str; 5] = [STATUS, DEPLOYMENT_ID, ENDPOINT_URL, ERROR, ROLLOUT_STATE];

/// Whether `key` is one the service writes itself (its tag events must be ignored).
pub fn is_written_by_us(key: &str) -> bool {
    WRITTEN.contains(&key)
}

/// Whether a tag value means yes (`true`, any case, surrounding blanks ignored).
pub fn is_true(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_written_keys_are_ours() {
        assert!(is_written_by_us(STATUS));
        assert!(is_written_by_us(ENDPOINT_URL));
        assert!(!is_written_by_us(DEPLOY));
        assert!(!is_written_by_us(HF_REPOSITORY));
    }

    #[test]
    fn truth_is_case_and_blank_insensitive() {
        assert!(is_true("true"));
        assert!(is_true(" TRUE "));
        assert!(!is_true("yes"));
        assert!(!is_true("false"));
    }
}
