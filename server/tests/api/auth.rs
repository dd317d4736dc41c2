use crate::helpers::{
    BACKENDS, Backend, DEPARTMENT, OTHER_DEPARTMENT, PASSWORD, USER, error_codes, spawn_app,
};
use linked_customer_server::auth::hash_password;

async fn assert_refused(response: reqwest::Response, code: i64) {
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Basic realm="customer""#
    );
    assert_eq!(error_codes(response).await, vec![code]);
}

#[tokio::test]
async fn missing_or_unreadable_credentials_are_401_missing_credentials() {
    let app = spawn_app(Backend::Postgres).await;
    let url = app.url(&crate::helpers::TestApp::customer_path(
        DEPARTMENT, "ORDER", "1001",
    ));
    let response = app.client.get(&url).send().await.expect("sent");
    assert_refused(response, 2001).await;
    // "cmVhZGVy" is `reader` without a password; "ZGUAbW86cHc=" is `de\0mo:pw`.
    for header in [
        "Bearer abc",
        "Basic !!!",
        "Basic",
        "Basic cmVhZGVy",
        "Basic ZGUAbW86cHc=",
    ] {
        let response = app
            .client
            .get(&url)
            .header("authorization", header)
            .send()
            .await
            .expect("sent");
        assert_refused(response, 2001).await;
    }
}

#[tokio::test]
async fn every_refusal_looks_the_same() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        app.add_subscriber("no-scope", "pw", &[DEPARTMENT], "customer.write")
            .await;
        let refusals = [
            (DEPARTMENT, USER, "wrong password"),
            (DEPARTMENT, "nobody", PASSWORD),
            (OTHER_DEPARTMENT, USER, PASSWORD),
            ("no-such-department", USER, PASSWORD),
            (DEPARTMENT, "no-scope", "pw"),
        ];
        let mut bodies = Vec::new();
        for (department, user, password) in refusals {
            let response = app
                .get_customer_as(department, "ORDER", "1001", Some((user, password)))
                .await;
            assert_eq!(response.status(), 401, "{backend:?} {department} {user}");
            assert_eq!(
                response.headers()["www-authenticate"],
                r#"Basic realm="customer""#
            );
            bodies.push(response.text().await.expect("body"));
        }
        assert!(bodies.iter().all(|b| b == &bodies[0]), "{bodies:#?}");
        assert!(bodies[0].contains("2002"), "{}", bodies[0]);
    }
}

#[tokio::test]
async fn a_changed_password_or_removed_subscriber_stops_working_at_once() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        // The first request verifies the password and caches the result; the second uses it.
        for _ in 0..2 {
            let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
            assert_eq!(response.status(), 200, "{backend:?}");
        }
        let new_hash = hash_password("a new password").expect("hash");
        assert!(
            app.store
                .set_password_hash(USER, &new_hash)
                .await
                .expect("passwd")
        );
        let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
        assert_refused(response, 2002).await;
        let response = app
            .get_customer_as(DEPARTMENT, "ORDER", "1001", Some((USER, "a new password")))
            .await;
        assert_eq!(response.status(), 200, "{backend:?}");

        assert!(app.store.remove_subscriber(USER).await.expect("remove"));
        let response = app
            .get_customer_as(DEPARTMENT, "ORDER", "1001", Some((USER, "a new password")))
            .await;
        assert_refused(response, 2002).await;
    }
}

#[tokio::test]
async fn no_secret_reaches_a_response() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .get_customer_as(DEPARTMENT, "ORDER", "1001", Some((USER, "hunter2-secret")))
        .await;
    let text = response.text().await.expect("body");
    assert!(
        !text.contains("hunter2-secret") && !text.contains(USER),
        "{text}"
    );
}

/// The count of argon2 checks in /metrics.
async fn password_checks(app: &crate::helpers::TestApp) -> u64 {
    let text = app.get_text("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix("password_checks_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no password_checks_total in\n{text}"))
}

#[tokio::test]
async fn a_verified_credential_costs_no_second_password_check() {
    let app = spawn_app(Backend::Sqlite).await;
    assert_eq!(password_checks(&app).await, 0);
    for _ in 0..3 {
        let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        password_checks(&app).await,
        1,
        "the cache did not spare the later checks"
    );
    // A wrong password is checked every time, and so is an unknown user (against a decoy hash,
    // so that its answer takes as long as a known user's).
    for _ in 0..2 {
        app.get_customer_as(DEPARTMENT, "ORDER", "1001", Some((USER, "wrong")))
            .await;
    }
    app.get_customer_as(DEPARTMENT, "ORDER", "1001", Some(("nobody", "pw")))
        .await;
    assert_eq!(password_checks(&app).await, 4);
}
