//! What the tests of this workspace start the server with (feature `test-support`): a
//! throwaway database (a SQLite file in a temporary folder, or a PostgreSQL database created on
//! the server of `TEST_POSTGRES_URL` and dropped afterwards) and the real server on port 0 of
//! loopback, in-process, with the real store. The server's own tests and the client's
//! end-to-end tests both start it here.

use crate::auth::hash_password;
use crate::domain::DepartmentToken;
use crate::limits::HttpLimits;
use crate::startup;
use crate::state::AppState;
use crate::store::{self, DatabaseLimits, ImportSummary, ReadReplicas, Store};
use sqlx::Connection;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database for one test: a file in a temporary folder, or a PostgreSQL database created on
/// the server named by `TEST_POSTGRES_URL` and dropped when the test ends (`pg_throwaway`, the
/// helper xtask makes its databases with too).
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<pg_throwaway::Throwaway>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                }
            }
            Backend::Postgres => {
                let admin = std::env::var("TEST_POSTGRES_URL").expect(
                    "TEST_POSTGRES_URL is not set: run the tests with `cargo xtask test` (or \
                     `cargo xtask ci`), which starts PostgreSQL, or set it to \
                     postgres://USER:PASSWORD@HOST:PORT/postgres for a role that may create databases",
                );
                let database = pg_throwaway::Throwaway::create(&admin, "lc_test")
                    .unwrap_or_else(|e| panic!("a test database on TEST_POSTGRES_URL: {e:#}"));
                TestDb {
                    url: database.url().to_string(),
                    _dir: None,
                    postgres: Some(database),
                }
            }
        }
    }

    /// PostgreSQL only: refuse new connections to this database and end the open ones, as if
    /// the database server had gone away.
    pub async fn make_unreachable(&self) {
        self.postgres
            .as_ref()
            .expect("a PostgreSQL test database")
            .make_unreachable()
            .expect("make the test database unreachable");
    }

    /// PostgreSQL only: undoes [`TestDb::make_unreachable`].
    pub async fn make_reachable(&self) {
        self.postgres
            .as_ref()
            .expect("a PostgreSQL test database")
            .make_reachable()
            .expect("make the test database reachable");
    }
}

impl TestDb {
    pub fn backend(&self) -> Backend {
        if self.postgres.is_some() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// Runs SQL (one or more statements) on this database behind the server's back.
    pub async fn execute_script(&self, script: &str) {
        if self.postgres.is_some() {
            run_script::<sqlx::PgConnection>(&self.url, script).await
        } else {
            run_script::<sqlx::SqliteConnection>(&self.url, script).await
        }
    }

    /// Runs one statement on this database behind the server's back.
    pub async fn execute(&self, statement: &'static str) {
        self.execute_script(statement).await
    }
}

/// Runs `script` on a new connection of type `C` to `url`.
async fn run_script<C>(url: &str, script: &str)
where
    C: Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    let mut conn = C::connect(url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(script.to_string()))
        .execute(&mut conn)
        .await
        .expect("script");
}

/// The server on a free loopback port, on `db`.
pub struct Spawned {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub store: Arc<dyn Store>,
    pub db: TestDb,
}

/// Starts the server on `db` (migrated on the way) with these limits; it runs on the current
/// tokio runtime until the test ends.
pub async fn spawn(db: TestDb, database: DatabaseLimits, http: HttpLimits) -> Spawned {
    spawn_replicated(db, &ReadReplicas::default(), database, http).await
}

/// [`spawn`], with lookups read from `replicas`.
pub async fn spawn_replicated(
    db: TestDb,
    replicas: &ReadReplicas,
    database: DatabaseLimits,
    http: HttpLimits,
) -> Spawned {
    let opened = store::open_replicated(&db.url, replicas, database)
        .await
        .expect("open the test database");
    let state = AppState::new(opened.store.clone(), Duration::from_secs(60), http).expect("state");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a random port");
    let port = listener.local_addr().expect("local address").port();
    let server = startup::run(listener, state).expect("server starts");
    tokio::spawn(server);
    Spawned {
        address: format!("http://127.0.0.1:{port}"),
        store: opened.store,
        db,
    }
}

/// Imports JSON lines through the store, as `import` does.
pub async fn import(store: &dyn Store, text: &str) -> anyhow::Result<ImportSummary> {
    let records = crate::import::records(std::io::Cursor::new(text.to_string()));
    store.import(Box::new(records)).await
}

/// Adds a subscriber with `scope` on each of `departments`.
pub async fn add_subscriber(
    store: &dyn Store,
    username: &str,
    password: &str,
    departments: &[&str],
    scope: &str,
) {
    let departments: Vec<DepartmentToken> = departments
        .iter()
        .map(|d| DepartmentToken::parse(d).expect("valid token"))
        .collect();
    store
        .add_subscriber(
            username,
            &hash_password(password).expect("hash"),
            &departments,
            &[scope.to_string()],
        )
        .await
        .expect("add subscriber");
}
