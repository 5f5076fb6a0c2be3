//! State shared by every handler.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use shared::config::Settings;

use crate::auth::Authenticator;

/// Cheap to clone: everything inside is reference-counted.
#[derive(Clone)]
pub struct AppState {
    /// The database pool.
    pub db: DatabaseConnection,
    /// The configuration the application was built with.
    pub settings: Arc<Settings>,
    /// Validates API keys (chosen once at start-up by `AUTH_BACKEND`).
    pub authenticator: Arc<dyn Authenticator>,
}
