//! [`ProviderRegistry`]: provider names to configured instances, built once at start-up
//! from [`ProvidersConfig`] with one explicit line per provider.

use std::collections::HashMap;
use std::sync::Arc;

use super::config::{ProviderConfigError, ProvidersConfig};
use super::http::HttpProvider;
use super::huggingface::HuggingFaceProvider;
use super::instrumented::Instrumented;
use super::{Provider, ProviderError};
use crate::config::Settings;

/// Every configured provider, by name.
#[derive(Clone)]
pub struct ProviderRegistry {
    providers: HashMap<&'static str, Arc<dyn Provider>>,
}

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("providers", &self.names())
            .finish()
    }
}

impl ProviderRegistry {
    /// Builds every provider from its configuration section.
    pub fn build(config: &ProvidersConfig) -> Result<Self, ProviderConfigError> {
        let providers: [Arc<dyn Provider>; 2] = [
            Arc::new(HuggingFaceProvider::new(&config.huggingface)?),
            Arc::new(HttpProvider::new(&config.http)?),
        ];
        Ok(Self::from_providers(providers))
    }

    /// Against the real HuggingFace API (needs `HUGGINGFACE_API_KEY` and `_NAMESPACE`).
    pub fn from_settings(settings: &Settings) -> Result<Self, ProviderConfigError> {
        Self::build(&ProvidersConfig::from_settings(settings)?)
    }

    /// From already-built providers (tests, or a caller wiring its own), each wrapped in
    /// [`Instrumented`] so every call is measured.
    pub fn from_providers(providers: impl IntoIterator<Item = Arc<dyn Provider>>) -> Self {
        let providers = providers
            .into_iter()
            .map(|p| {
                let measured: Arc<dyn Provider> = Arc::new(Instrumented(p));
                (measured.name(), measured)
            })
            .collect();
        Self { providers }
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Provider>, ProviderError> {
        self.providers
            .get(name)
            .cloned()
            .ok_or_else(|| ProviderError::invalid(format!("unknown provider `{name}`")))
    }

    /// Runs every provider's start-up [`Provider::refresh`]; failures are logged, not fatal
    /// (the HF catalogue falls back to its built-in prices). Returns how many succeeded.
    /// The production start-up of every role: providers from settings, shared, with their
    /// start-up work (catalogue refresh) done.
    pub async fn start(settings: &Settings) -> Result<Arc<Self>, ProviderConfigError> {
        let registry = Self::from_settings(settings)?;
        registry.refresh_all().await;
        Ok(Arc::new(registry))
    }

    /// Runs every provider's start-up work; returns how many succeeded.
    pub async fn refresh_all(&self) -> usize {
        let mut refreshed = 0;
        for name in self.names() {
            match self.providers[name].refresh().await {
                Ok(()) => refreshed += 1,
                Err(err) => {
                    tracing::warn!(provider = name, error = %err, "provider refresh failed")
                }
            }
        }
        refreshed
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.providers.keys().copied().collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Secret;
    use crate::provider::config::{HttpProviderConfig, HuggingFaceConfig};
    use crate::provider::types::InstanceSpec;

    pub(crate) fn config() -> ProvidersConfig {
        ProvidersConfig {
            huggingface: HuggingFaceConfig {
                api_base: "http://127.0.0.1:9".into(),
                namespace: "ns".into(),
                token: Secret::new("hf_x"),
                default_instance: InstanceSpec {
                    vendor: "aws".into(),
                    region: "us-east-1".into(),
                    instance_type: "intel-spr".into(),
                    instance_size: "x2".into(),
                },
                timeout: Duration::from_secs(5),
                max_retries: 1,
                predict_timeout: Duration::from_secs(5),
                scale_up_timeout: None,
                max_body_bytes: 1 << 20,
                connections_per_host: 128,
            },
            http: HttpProviderConfig::new(Duration::from_secs(5), Default::default()),
        }
    }

    #[test]
    fn registry_holds_huggingface_and_http_by_name() {
        let registry = ProviderRegistry::build(&config()).expect("registry");
        assert_eq!(registry.names(), vec!["http", "huggingface"]);
        assert_eq!(registry.get("huggingface").unwrap().name(), "huggingface");
        assert_eq!(registry.get("sagemaker").err().unwrap().kind(), "invalid");
        assert!(!format!("{registry:?}").contains("hf_x"));
    }
}
