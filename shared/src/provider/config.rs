//! The typed provider configuration, derived once from [`Settings`] at start-up.
//!
//! [`ProvidersConfig`] holds one section per provider; the registry builds each provider from
//! its section. In development without `HUGGINGFACE_API_KEY`, the caller starts the HF
//! emulator first and passes its URL and token with
//! [`ProvidersConfig::with_hf_emulator`], so the adapter code is the same in every
//! environment.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Secret, Settings};

use super::egress::{AllowList, Lookup, SystemLookup};
use super::types::InstanceSpec;

/// The namespace used against the emulator when `HUGGINGFACE_NAMESPACE` is unset.
pub const EMULATOR_NAMESPACE: &str = "hokusai";

/// Why the providers cannot be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ProviderConfigError {
    /// The variable at fault.
    pub variable: &'static str,
    /// Why.
    pub reason: String,
}

/// Configuration of every provider.
#[derive(Debug, Clone)]
pub struct ProvidersConfig {
    /// HuggingFace Inference Endpoints.
    pub huggingface: HuggingFaceConfig,
    /// Already-running HTTP endpoints.
    pub http: HttpProviderConfig,
}

/// HuggingFace Inference Endpoints.
#[derive(Debug, Clone)]
pub struct HuggingFaceConfig {
    /// Management API base without `/v2` (`https://api.endpoints.huggingface.cloud`).
    pub api_base: String,
    /// The user or organisation owning the endpoints.
    pub namespace: String,
    /// The HF token (write scope).
    pub token: Secret,
    /// Hardware used when a spec leaves it out.
    pub default_instance: InstanceSpec,
    /// Timeout of one management call; also the longest `Retry-After` we wait in-process.
    pub timeout: Duration,
    /// Retries after the first attempt of a management call.
    pub max_retries: u32,
    /// Timeout of one prediction.
    pub predict_timeout: Duration,
    /// `X-Scale-Up-Timeout` sent with predictions (`None`: not sent, 503 while waking).
    pub scale_up_timeout: Option<Duration>,
    /// `MAX_UPSTREAM_BODY_BYTES`: the largest prediction answer read.
    pub max_body_bytes: usize,
    /// `MAX_UPSTREAM_CONNECTIONS_PER_HOST`: predictions in flight per endpoint host.
    pub connections_per_host: usize,
}

/// Already-running HTTP endpoints (self-hosted TGI, KServe, a container on a VM).
#[derive(Debug, Clone)]
pub struct HttpProviderConfig {
    /// Timeout of one call (health or prediction).
    pub timeout: Duration,
    /// The path probed for health, appended to the endpoint URL.
    pub health_route: String,
    /// `HTTP_PROVIDER_ALLOWED_HOSTS`: where endpoints may be (empty: provider disabled).
    pub allowed_hosts: AllowList,
    /// How names are resolved before the allow-list checks the addresses.
    pub lookup: Arc<dyn Lookup>,
    /// `MAX_UPSTREAM_BODY_BYTES`: the largest answer read.
    pub max_body_bytes: usize,
    /// `MAX_UPSTREAM_CONNECTIONS_PER_HOST`: predictions in flight per endpoint host.
    pub connections_per_host: usize,
}

impl HttpProviderConfig {
    /// `timeout` per call, `/health` probed, the system resolver, answers up to 10 MiB,
    /// 128 predictions in flight per host (the settings' defaults).
    pub fn new(timeout: Duration, allowed_hosts: AllowList) -> Self {
        Self {
            timeout,
            health_route: "/health".to_owned(),
            allowed_hosts,
            lookup: Arc::new(SystemLookup),
            max_body_bytes: 10 << 20,
            connections_per_host: 128,
        }
    }
}

impl ProvidersConfig {
    /// From settings, against the real HuggingFace API: needs `HUGGINGFACE_API_KEY` and
    /// `HUGGINGFACE_NAMESPACE`.
    pub fn from_settings(settings: &Settings) -> Result<Self, ProviderConfigError> {
        let hf = &settings.huggingface;
        let token = hf.api_key.clone().ok_or_else(|| ProviderConfigError {
            variable: "HUGGINGFACE_API_KEY",
            reason: "required to use HuggingFace (start the HF emulator otherwise)".into(),
        })?;
        let namespace = hf.namespace.clone().ok_or_else(|| ProviderConfigError {
            variable: "HUGGINGFACE_NAMESPACE",
            reason: "required with HUGGINGFACE_API_KEY: the user or organisation owning endpoints"
                .into(),
        })?;
        Ok(Self::build(settings, hf.api_base.clone(), namespace, token))
    }

    /// From settings, against an HF emulator at `base_url` accepting `token` (dev and tests).
    pub fn with_hf_emulator(settings: &Settings, base_url: &str, token: Secret) -> Self {
        let namespace = (settings.huggingface.namespace.clone())
            .unwrap_or_else(|| EMULATOR_NAMESPACE.to_owned());
        Self::build(settings, base_url.to_owned(), namespace, token)
    }

    fn build(settings: &Settings, api_base: String, namespace: String, token: Secret) -> Self {
        let hf = &settings.huggingface;
        let scale_up = settings.api.scale_up_timeout;
        Self {
            huggingface: HuggingFaceConfig {
                api_base,
                namespace,
                token,
                default_instance: InstanceSpec {
                    vendor: hf.default_vendor.clone(),
                    region: hf.default_region.clone(),
                    instance_type: hf.default_instance_type.clone(),
                    instance_size: hf.default_instance_size.clone(),
                },
                timeout: hf.timeout,
                max_retries: hf.max_retries,
                predict_timeout: settings.api.predict_timeout,
                scale_up_timeout: (!scale_up.is_zero()).then_some(scale_up),
                max_body_bytes: settings.api.max_upstream_body_bytes,
                connections_per_host: settings.api.max_upstream_connections_per_host,
            },
            http: HttpProviderConfig {
                max_body_bytes: settings.api.max_upstream_body_bytes,
                connections_per_host: settings.api.max_upstream_connections_per_host,
                ..HttpProviderConfig::new(
                    settings.api.predict_timeout,
                    settings.http_provider_allowed_hosts.clone(),
                )
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::LoadOptions;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let options = LoadOptions {
            config_dir: "/nonexistent".into(),
            dotenv: "/nonexistent/.env".into(),
        };
        Settings::load_from(&env, &options)
            .expect("valid settings")
            .0
    }

    #[test]
    fn real_huggingface_needs_a_token_and_a_namespace() {
        let err = ProvidersConfig::from_settings(&settings(&[])).unwrap_err();
        assert_eq!(err.variable, "HUGGINGFACE_API_KEY");
        let err = ProvidersConfig::from_settings(&settings(&[("HUGGINGFACE_API_KEY", "hf_x")]))
            .unwrap_err();
        assert_eq!(err.variable, "HUGGINGFACE_NAMESPACE");
    }

    #[test]
    fn settings_become_typed_provider_config() {
        let s = settings(&[
            ("HUGGINGFACE_API_KEY", "hf_x"),
            ("HUGGINGFACE_NAMESPACE", "hokusai-ai"),
            ("SCALE_UP_TIMEOUT_SECONDS", "0"),
        ]);
        let config = ProvidersConfig::from_settings(&s).expect("config");
        let hf = config.huggingface;
        assert_eq!(hf.namespace, "hokusai-ai");
        assert_eq!(hf.token.expose(), "hf_x");
        assert_eq!(hf.default_instance.instance_type, "intel-spr");
        assert_eq!(hf.default_instance.instance_size, "x2");
        assert_eq!(hf.scale_up_timeout, None);
        assert!(!format!("{hf:?}").contains("hf_x"));
    }

    #[test]
    fn the_emulator_replaces_base_and_token_and_defaults_the_namespace() {
        let config = ProvidersConfig::with_hf_emulator(
            &settings(&[]),
            "http://127.0.0.1:9",
            Secret::new("emu"),
        );
        assert_eq!(config.huggingface.api_base, "http://127.0.0.1:9");
        assert_eq!(config.huggingface.namespace, EMULATOR_NAMESPACE);
        assert_eq!(
            config.huggingface.scale_up_timeout,
            Some(Duration::from_secs(60))
        );
    }
}
