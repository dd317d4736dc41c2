//! `spawn_app`: the real server on a random port, on a fresh SQLite file or a throwaway
//! PostgreSQL database, and an HTTP client to talk to it.

use linked_customer_server::auth::SEARCH_SCOPE;
use linked_customer_server::limits::HttpLimits;
use linked_customer_server::store::{DatabaseLimits, ImportSummary, Store};
use linked_customer_server::test_support::{self, Spawned};
pub use linked_customer_server::test_support::{Backend, TestDb};
use serde_json::Value;
use std::sync::Arc;

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
    spawn_with(db, DatabaseLimits::default(), test_limits()).await
}

/// The default limits, but password-check budgets no test reaches by accident: the tests of
/// those budgets set their own.
pub fn test_limits() -> HttpLimits {
    HttpLimits {
        password_checks: linked_customer_server::auth::ThrottleLimits {
            per_username: 1_000_000,
            per_address: 1_000_000,
        },
        ..HttpLimits::default()
    }
}

/// [`spawn_on`] with other limits than the defaults.
pub async fn spawn_with(db: TestDb, database: DatabaseLimits, http: HttpLimits) -> TestApp {
    let Spawned { address, store, db } = test_support::spawn(db, database, http).await;
    TestApp {
        address,
        store,
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
        test_support::import(self.store.as_ref(), text).await
    }

    pub async fn add_subscriber(
        &self,
        username: &str,
        password: &str,
        departments: &[&str],
        scope: &str,
    ) {
        test_support::add_subscriber(self.store.as_ref(), username, password, departments, scope)
            .await
    }

    /// The body of an unauthenticated GET of `path`.
    pub async fn get_text(&self, path: &str) -> String {
        let response = self.client.get(self.url(path)).send().await.expect("sent");
        response.text().await.expect("body")
    }

    /// Waits for `/readyz` to answer `status`: it answers from the server's last probe of its
    /// databases (one a second; not ready after three failed in a row), so a change shows
    /// within a few seconds, not at once. Fails after 10 s.
    pub async fn readyz_becomes(&self, status: u16) {
        let started = std::time::Instant::now();
        loop {
            let now = self.status("/readyz").await;
            if now == status {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "/readyz answered {now}, not {status}, for 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
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
