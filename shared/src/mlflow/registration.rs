//! Registering hokusai-serve's listener as a webhook on an MLflow server
//! (`hokusai-serve mlflow register-webhook`). Registration is idempotent: a webhook of
//! the same name is updated (URL, events, secret, re-activated) instead of duplicated.

use serde_json::{Value, json};

use super::client::{MlflowClient, MlflowError};
use crate::config::Secret;

/// The events the listener handles, as the REST API spells them (UPPERCASE enum names;
/// anything else makes MLflow answer an HTML 500).
pub const EVENTS: [(&str, &str); 3] = [
    ("MODEL_VERSION", "CREATED"),
    ("MODEL_VERSION_TAG", "SET"),
    ("MODEL_VERSION_ALIAS", "CREATED"),
];

/// What registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new webhook, with its id.
    Created(String),
    /// The existing webhook of that name, updated, with its id.
    Updated(String),
}

/// The webhook body: `name`, `url`, `secret`, the [`EVENTS`], active.
pub fn webhook_body(name: &str, url: &str, secret: &Secret) -> Value {
    let events: Vec<Value> = EVENTS
        .iter()
        .map(|(entity, action)| json!({"entity": entity, "action": action}))
        .collect();
    json!({"name": name, "url": url, "secret": secret.expose(), "events": events,
           "status": "ACTIVE",
           "description": "hokusai-serve: deploys registered model versions"})
}

/// Creates the webhook `name` delivering to `url`, or updates the one of that name.
pub async fn register_webhook(
    client: &MlflowClient,
    name: &str,
    url: &str,
    secret: &Secret,
) -> Result<Registered, MlflowError> {
    let body = webhook_body(name, url, secret);
    let existing = client
        .list_webhooks()
        .await?
        .into_iter()
        .find(|w| w["name"].as_str() == Some(name));
    match existing.and_then(|w| w["webhook_id"].as_str().map(str::to_owned)) {
        Some(id) => {
            client.update_webhook(&id, &body).await?;
            Ok(Registered::Updated(id))
        }
        None => {
            let created = client.create_webhook(&body).await?;
            let id = created["webhook_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Ok(Registered::Created(id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_uppercase_events_and_carries_the_secret() {
        let body = webhook_body(
            "hokusai-serve",
            "http://h/api/v1/webhooks/mlflow",
            &Secret::new("s"),
        );

        assert_eq!(
            body["events"][0],
            json!({"entity": "MODEL_VERSION", "action": "CREATED"})
        );
        assert_eq!(body["events"][2]["entity"], "MODEL_VERSION_ALIAS");
        assert_eq!(body["secret"], "s");
        assert_eq!(body["status"], "ACTIVE");
    }
}
