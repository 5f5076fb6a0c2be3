//! The `static` authenticator: keys and scopes given at start-up (development and tests).
//! Keys are held as SHA-256 digests and compared in constant time; the key itself is never
//! stored or logged. Production refuses this backend (see `shared::config`).

use std::collections::HashMap;
use std::net::IpAddr;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, Authenticator, Principal};

/// All scopes hokusai-serve knows, given to the `dev` key.
pub const ALL_SCOPES: [&str; 4] = ["predict", "read", "model:write", "admin"];

/// Keys from configuration.
#[derive(Default)]
pub struct StaticKeys {
    keys: HashMap<[u8; 32], Principal>,
}

impl StaticKeys {
    /// An authenticator that knows no key yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `key` with `scopes`; its `key_id` is derived from the digest.
    pub fn with_key(mut self, key: &str, user_id: &str, scopes: &[&str]) -> Self {
        let digest = digest(key);
        let principal = Principal {
            key_id: format!("static-{}", &hex::encode(digest)[..12]),
            user_id: Some(user_id.to_owned()),
            service_id: Some("platform".to_owned()),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            rate_limit_per_hour: None,
            monthly_prediction_limit: None,
        };
        self.keys.insert(digest, principal);
        self
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[async_trait]
impl Authenticator for StaticKeys {
    async fn authenticate(
        &self,
        key: &str,
        _client_ip: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let wanted = digest(key);
        self.keys
            .iter()
            .find(|(known, _)| bool::from(known.ct_eq(&wanted)))
            .map(|(_, principal)| principal.clone())
            .ok_or(AuthError::Invalid)
    }
}

/// A new random development key, `hk_dev_` + 32 characters.
pub fn generate_dev_key() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    format!("hk_dev_{}", &a[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn known_keys_map_to_their_principal_and_others_are_invalid() {
        let keys = StaticKeys::new().with_key("hk_dev_a", "alice", &["read"]);

        let alice = keys
            .authenticate("hk_dev_a", None)
            .await
            .expect("known key");
        let unknown = keys.authenticate("hk_dev_b", None).await;

        assert_eq!(alice.user_id.as_deref(), Some("alice"));
        assert_eq!(alice.scopes, vec!["read".to_owned()]);
        assert!(!alice.key_id.contains("hk_dev_a"));
        assert_eq!(unknown, Err(AuthError::Invalid));
    }

    #[test]
    fn generated_keys_have_the_documented_format() {
        let key = generate_dev_key();
        assert!(
            key.starts_with("hk_dev_") && key.len() == "hk_dev_".len() + 32,
            "{key}"
        );
        assert_ne!(key, generate_dev_key());
    }
}
