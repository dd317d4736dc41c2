//! The error-code table lives in `openapi.yaml` (the `ErrorResponse` description). Every code
//! in it is provoked here over HTTP and answered with its status, its title and a message; the
//! server knows no code that the table does not list.

use crate::helpers::{
    Backend, DEPARTMENT, PASSWORD, TestApp, TestDb, USER, spawn_app, spawn_with, test_limits,
};
use linked_customer_server::auth::{SEARCH_SCOPE, ThrottleLimits};
use linked_customer_server::errors;
use linked_customer_server::limits::HttpLimits;
use linked_customer_server::store::DatabaseLimits;
use serde_json::Value;

/// `(code, title, status)` for each row of the table in the spec.
fn table() -> Vec<(i64, String, u16)> {
    let spec: Value =
        serde_saphyr::from_str(include_str!("../../../openapi.yaml")).expect("openapi.yaml");
    let description = spec["components"]["schemas"]["ErrorResponse"]["description"]
        .as_str()
        .expect("ErrorResponse has a description");
    description
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            match cells.as_slice() {
                [code, title, status, _] => {
                    Some((code.parse().ok()?, title.to_string(), status.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

/// A request that gets exactly one error, with this code.
async fn provoke(code: i64) -> reqwest::Response {
    let plain = || spawn_app(Backend::Sqlite);
    match code {
        1001 => {
            plain()
                .await
                .get_customer("bad token", "ORDER", "1001")
                .await
        }
        1002 => plain().await.get_customer(DEPARTMENT, "CAR", "1001").await,
        1003 => plain().await.get_customer(DEPARTMENT, "ORDER", "0").await,
        2001 => {
            let app = plain().await;
            app.get_customer_as(DEPARTMENT, "ORDER", "1001", None).await
        }
        2002 => {
            let app = plain().await;
            app.get_customer_as(DEPARTMENT, "ORDER", "1001", Some(("reader", "wrong")))
                .await
        }
        4004 => {
            let app = plain().await;
            app.client
                .get(app.url("/nowhere"))
                .send()
                .await
                .expect("sent")
        }
        4005 => {
            let app = plain().await;
            let path = TestApp::customer_path(DEPARTMENT, "ORDER", "1001");
            app.client
                .delete(app.url(&path))
                .send()
                .await
                .expect("sent")
        }
        4029 => {
            // One password check per username a minute: the second wrong password is 429.
            let http = HttpLimits {
                password_checks: ThrottleLimits {
                    per_username: 1,
                    per_address: 1000,
                },
                ..test_limits()
            };
            let app = spawn_with(
                TestDb::new(Backend::Sqlite).await,
                DatabaseLimits::default(),
                http,
            )
            .await;
            app.add_subscriber(USER, PASSWORD, &[DEPARTMENT], SEARCH_SCOPE)
                .await;
            let wrong = || app.get_customer_as(DEPARTMENT, "ORDER", "1001", Some((USER, "wrong")));
            assert_eq!(wrong().await.status(), 401);
            let throttled = wrong().await;
            assert!(
                throttled.headers().contains_key("retry-after"),
                "{throttled:?}"
            );
            throttled
        }
        5000 => {
            let app = plain().await;
            app.db.execute("DROP TABLE links").await;
            app.get_customer(DEPARTMENT, "ORDER", "1001").await
        }
        5003 => {
            let app = spawn_app(Backend::Postgres).await;
            app.db.make_unreachable().await;
            app.get_customer(DEPARTMENT, "ORDER", "1001").await
        }
        other => panic!("no request here provokes error code {other}: add one"),
    }
}

#[tokio::test]
async fn every_error_code_of_the_spec_is_answered_as_the_table_says() {
    let table = table();
    assert!(table.len() >= 9, "the table in openapi.yaml: {table:?}");
    for (code, title, status) in &table {
        let response = provoke(*code).await;
        assert_eq!(response.status().as_u16(), *status, "code {code}");
        let body: Value = response.json().await.expect("JSON");
        let errors = body["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "code {code}: {body}");
        assert_eq!(errors[0]["errorCode"], *code, "{body}");
        assert_eq!(errors[0]["errorTitle"], title.as_str(), "{body}");
        let message = errors[0]["errorMessage"].as_str().expect("message");
        assert!(
            message.len() > 10,
            "code {code}: a message that says something: {body}"
        );
    }
}

#[test]
fn the_server_knows_exactly_the_codes_of_the_table() {
    let table: Vec<(i64, String)> = table()
        .into_iter()
        .map(|(code, title, _)| (code, title))
        .collect();
    let server: Vec<(i64, String)> = errors::ALL
        .iter()
        .map(|code| (i64::from(code.code), code.title.to_string()))
        .collect();
    assert_eq!(server, table);
}
