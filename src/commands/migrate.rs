//! `hokusai-serve migrate [up|down|status|fresh]` against `DATABASE_URL`.

use anyhow::Context;
use migrations::{Migrator, MigratorTrait};
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigrationStatus;
use shared::config::Environment;

use super::{Failure, load_verb_settings};

/// What to do.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Apply pending migrations.
    Up,
    /// Revert this many.
    Down(u32),
    /// List with status.
    Status,
    /// Drop everything and re-apply (development only).
    Fresh,
}

/// Runs `action` and reports what was done.
pub async fn run(action: Action, verbose: bool) -> Result<(), Failure> {
    let settings = load_verb_settings(verbose)?;
    if matches!(action, Action::Fresh) && settings.environment != Environment::Development {
        return Err(Failure::Config(format!(
            "ENVIRONMENT: `migrate fresh` drops every table and is refused in {}",
            settings.environment
        )));
    }
    let db = shared::db::connect(settings.database_url.expose())
        .await
        .context("connecting to the database")?;
    match action {
        Action::Up => Migrator::up(&db, None)
            .await
            .context("applying migrations")?,
        Action::Down(steps) => Migrator::down(&db, Some(steps))
            .await
            .context("reverting migrations")?,
        Action::Fresh => Migrator::fresh(&db)
            .await
            .context("re-creating the schema")?,
        Action::Status => {}
    }
    print_status(&db).await?;
    Ok(())
}

async fn print_status(db: &DatabaseConnection) -> anyhow::Result<()> {
    let migrations = Migrator::get_migration_with_status(db)
        .await
        .context("reading migration status")?;
    let mut report = String::new();
    for migration in &migrations {
        let status = match migration.status() {
            MigrationStatus::Applied => "applied",
            MigrationStatus::Pending => "pending",
        };
        report.push_str(&format!("{status:<8} {}\n", migration.name()));
    }
    super::print(&report);
    Ok(())
}
