//! `spawn_app`: the real server on a random port, on a fresh SQLite file or a throwaway
//! PostgreSQL database, and an HTTP client to talk to it.

use linked_customer_server::auth::{SEARCH_SCOPE, hash_password};
use linked_customer_server::domain::DepartmentToken;
use linked_customer_server::limits::HttpLimits;
use linked_customer_server::startup;
use linked_customer_server::state::AppState;
use linked_customer_server::store::{self, DatabaseLimits, ImportSummary, Store};
use serde_json::Value;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test per database, so that a failure names its database and hides neither:
/// `on_both_databases! { async fn name(backend: Backend) { ... } }` makes `name::sqlite` and
/// `name::postgres`.
macro_rules! on_both_databases {
    ($($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block)*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use crate::helpers::Backend;

            async fn run($backend: Backend) $body

            #[tokio::test]
            async fn sqlite() {
                run(Backend::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                run(Backend::Postgres).await
            }
        }
    )*};
}

/// A database for one test: a file in a temporary folder, or a PostgreSQL database created on
/// the server named by `TEST_POSTGRES_URL` and dropped when the test ends.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
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
                let name = format!("lc_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::postgres::PgConnection::connect(&admin)
                    .await
                    .expect("connect to TEST_POSTGRES_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create the test database");
                let url = match admin.rsplit_once('/') {
                    Some((server, _)) => format!("{server}/{name}"),
                    None => panic!("TEST_POSTGRES_URL has no database part"),
                };
                TestDb {
                    url,
                    _dir: None,
                    postgres: Some((admin, name)),
                }
            }
        }
    }
}

use sqlx::Connection;

impl TestDb {
    /// PostgreSQL only: refuse new connections to this database and end the open ones, as if
    /// the database server had gone away.
    pub async fn make_unreachable(&self) {
        let (admin, name) = self.postgres.as_ref().expect("a PostgreSQL test database");
        let mut conn = sqlx::postgres::PgConnection::connect(admin)
            .await
            .expect("connect as admin");
        for statement in [
            format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await
                .expect("statement");
        }
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
        let script = sqlx::AssertSqlSafe(script.to_string());
        if self.postgres.is_some() {
            let mut conn = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect");
            sqlx::raw_sql(script)
                .execute(&mut conn)
                .await
                .expect("script");
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("connect");
            sqlx::raw_sql(script)
                .execute(&mut conn)
                .await
                .expect("script");
        }
    }

    /// Runs one statement on this database behind the server's back.
    pub async fn execute(&self, statement: &'static str) {
        self.execute_script(statement).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime: use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut conn) = sqlx::postgres::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

pub struct TestApp {
    pub address: String,
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    pub db: TestDb,
}

pub const DEPARTMENT: &str = "dept-north";
pub const OTHER_DEPARTMENT: &str = "dept-south";
pub const USER: &str = "reader";
pub const PASSWORD: &str = "correct horse battery staple";

/// The server on a random port with a fresh database holding the fixture customers and the
/// subscriber `reader`, granted `customer.search` on `dept-north` only.
pub async fn spawn_app(backend: Backend) -> TestApp {
    let app = spawn_empty(backend).await;
    app.import(FIXTURE).await.expect("fixture imports");
    app.add_subscriber(USER, PASSWORD, &[DEPARTMENT], SEARCH_SCOPE)
        .await;
    app
}

/// The server on a random port with a fresh, empty database.
pub async fn spawn_empty(backend: Backend) -> TestApp {
    spawn_on(TestDb::new(backend).await).await
}

/// The server on a random port on `db`, as it is (migrated on the way).
pub async fn spawn_on(db: TestDb) -> TestApp {
    spawn_with(db, DatabaseLimits::default(), HttpLimits::default()).await
}

/// [`spawn_on`] with other limits than the defaults.
pub async fn spawn_with(db: TestDb, database: DatabaseLimits, http: HttpLimits) -> TestApp {
    let opened = store::open_with(&db.url, database)
        .await
        .expect("open the test database");
    let mut state = AppState::new(opened.store.clone(), Duration::from_secs(60)).expect("state");
    state.limits = http;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a random port");
    let port = listener.local_addr().expect("local address").port();
    let server = startup::run(listener, state).expect("server starts");
    tokio::spawn(server);
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        store: opened.store,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        db,
    }
}

pub const FIXTURE: &str = include_str!("../fixtures/customers.jsonl");

/// Line `index` (from 0) of the fixture file.
pub fn fixture_line(index: usize) -> Value {
    let line = FIXTURE.lines().nth(index).expect("fixture line");
    serde_json::from_str(line).expect("fixture JSON")
}

/// The 200 body for the customer of fixture line `index`: exactly what was imported.
pub fn expected_answer(index: usize) -> Value {
    let imported = fixture_line(index);
    serde_json::json!({
        "errors": [],
        "warnings": [],
        "customerWithVehicles": {
            "customer": imported["customer"],
            "vehicles": imported["vehicles"],
        }
    })
}

impl TestApp {
    /// Imports JSON lines through the store, as `import` does.
    pub async fn import(&self, text: &str) -> anyhow::Result<ImportSummary> {
        let records =
            linked_customer_server::import::records(std::io::Cursor::new(text.to_string()));
        self.store.import(Box::new(records)).await
    }

    pub async fn add_subscriber(
        &self,
        username: &str,
        password: &str,
        departments: &[&str],
        scope: &str,
    ) {
        let departments: Vec<DepartmentToken> = departments
            .iter()
            .map(|d| DepartmentToken::parse(d).expect("valid token"))
            .collect();
        self.store
            .add_subscriber(
                username,
                &hash_password(password).expect("hash"),
                &departments,
                &[scope.to_string()],
            )
            .await
            .expect("add subscriber");
    }

    /// The body of an unauthenticated GET of `path`.
    pub async fn get_text(&self, path: &str) -> String {
        let response = self.client.get(self.url(path)).send().await.expect("sent");
        response.text().await.expect("body")
    }

    /// The status of a plain GET of `path`.
    pub async fn status(&self, path: &str) -> u16 {
        let response = self.client.get(self.url(path)).send().await.expect("sent");
        response.status().as_u16()
    }

    /// getLinkedCustomer for ORDER 1001 of `dept-north` with exactly these `Authorization`
    /// headers, as written.
    pub async fn get_with_authorization(&self, headers: &[&str]) -> reqwest::Response {
        let url = self.url(&Self::customer_path(DEPARTMENT, "ORDER", "1001"));
        let mut request = self.client.get(&url);
        for header in headers {
            request = request.header("authorization", *header);
        }
        request.send().await.expect("sent")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn customer_path(department: &str, entity: &str, entity_id: &str) -> String {
        format!("/customer/v2/department/{department}/entity/{entity}/{entity_id}/customer")
    }

    /// GET of getLinkedCustomer as `reader`.
    pub async fn get_customer(
        &self,
        department: &str,
        entity: &str,
        entity_id: &str,
    ) -> reqwest::Response {
        self.get_customer_as(department, entity, entity_id, Some((USER, PASSWORD)))
            .await
    }

    pub async fn get_customer_as(
        &self,
        department: &str,
        entity: &str,
        entity_id: &str,
        credentials: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .get(self.url(&Self::customer_path(department, entity, entity_id)));
        if let Some((user, password)) = credentials {
            request = request.basic_auth(user, Some(password));
        }
        request.send().await.expect("request sent")
    }
}

/// Reads an error envelope and returns its error codes, checking its shape on the way.
pub async fn error_codes(response: reqwest::Response) -> Vec<i64> {
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
    );
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["warnings"], Value::Array(vec![]), "{body}");
    let errors = body["errors"].as_array().expect("errors array");
    assert!(!errors.is_empty(), "{body}");
    errors
        .iter()
        .map(|e| {
            assert!(
                e["errorTitle"].is_string() && e["errorMessage"].is_string(),
                "{e}"
            );
            e["errorCode"].as_i64().expect("errorCode")
        })
        .collect()
}
