//! Fresh databases for tests.

use std::path::PathBuf;

use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use uuid::Uuid;

/// The server the PostgreSQL tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("HOKUSAI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Which engine a test database runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A new SQLite file.
    Sqlite,
    /// A new PostgreSQL database.
    Postgres,
}

/// A database that exists only for one test. PostgreSQL databases are dropped by
/// [`TestDb::drop_database`]; SQLite files live in the system temp folder.
pub struct TestDb {
    /// The engine.
    pub engine: Engine,
    /// Its URL, for code under test that connects by itself.
    pub url: String,
    /// A connection pool on it.
    pub conn: DatabaseConnection,
    name: String,
    file: Option<PathBuf>,
}

impl TestDb {
    /// A new, empty database (no migrations applied).
    pub async fn empty(engine: Engine) -> TestDb {
        let name = format!("hk_test_{}", Uuid::new_v4().simple());
        let (url, file) = match engine {
            Engine::Sqlite => {
                let file = std::env::temp_dir().join(format!("{name}.db"));
                (format!("sqlite://{}?mode=rwc", file.display()), Some(file))
            }
            Engine::Postgres => {
                let admin = shared::db::connect(&postgres_admin_url()).await.expect(
                    "PostgreSQL must be reachable for this test (HOKUSAI_TEST_POSTGRES_URL)",
                );
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                (replace_database(&postgres_admin_url(), &name), None)
            }
        };
        let conn = shared::db::connect(&url)
            .await
            .expect("connect to the test database");
        TestDb {
            engine,
            url,
            conn,
            name,
            file,
        }
    }

    /// A new database with every migration applied.
    /// Migrations run on their own pool, closed before the test's opens: an SQLite
    /// connection open during a schema change can prepare statements with the old column
    /// list, which sqlx keeps (launchbadge/sqlx#2517; seen as "Missing value for column"
    /// in a test that then updated `deployed_models`).
    pub async fn migrated(engine: Engine) -> TestDb {
        let mut db = Self::empty(engine).await;
        Migrator::up(&db.conn, None)
            .await
            .expect("migrations apply");
        db.conn.clone().close().await.ok();
        db.conn = shared::db::connect(&db.url)
            .await
            .expect("reconnect to the migrated test database");
        db
    }

    /// Drops this PostgreSQL database while others still use it (`WITH (FORCE)` ends their
    /// sessions): a database gone under a running API or worker.
    pub async fn drop_under_its_users(&self) {
        assert_eq!(
            self.engine,
            Engine::Postgres,
            "only a PostgreSQL database is dropped"
        );
        let admin = shared::db::connect(&postgres_admin_url())
            .await
            .expect("admin connection");
        admin
            .execute_unprepared(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .expect("drop the database under its users");
        admin.close().await.ok();
    }

    /// Drops the database (PostgreSQL) or deletes the file (SQLite).
    pub async fn drop_database(self) {
        self.conn.close().await.ok();
        match self.engine {
            Engine::Sqlite => {
                if let Some(file) = self.file {
                    for suffix in ["", "-wal", "-shm"] {
                        let mut path = file.clone().into_os_string();
                        path.push(suffix);
                        std::fs::remove_file(path).ok();
                    }
                }
            }
            Engine::Postgres => {
                if let Ok(admin) = shared::db::connect(&postgres_admin_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
                    admin.execute_unprepared(&sql).await.ok();
                    admin.close().await.ok();
                }
            }
        }
    }
}

/// `postgres://host/db` with the database part replaced.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            super::replace_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::replace_database("postgres://h:1/a?sslmode=disable", "b"),
            "postgres://h:1/b?sslmode=disable"
        );
    }
}
