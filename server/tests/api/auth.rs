use crate::helpers::{
    Backend, DEPARTMENT, OTHER_DEPARTMENT, PASSWORD, USER, error_codes, spawn_app,
};
use linked_customer_server::auth::hash_password;

/// (department, user, password) of every kind of refusal: wrong password, unknown user, no
/// grant on the department, no such department, and no scope (`no-scope` holds only
/// `customer.write`).
const REFUSALS: [(&str, &str, &str); 5] = [
    (DEPARTMENT, USER, "wrong password"),
    (DEPARTMENT, "nobody", PASSWORD),
    (OTHER_DEPARTMENT, USER, PASSWORD),
    ("no-such-department", USER, PASSWORD),
    (DEPARTMENT, "no-scope", "pw"),
];

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
        let response = app.get_with_authorization(&[header]).await;
        assert_refused(response, 2001).await;
    }
}

on_both_databases! {
    async fn every_refusal_looks_the_same(backend: Backend) {
        let app = spawn_app(backend).await;
        app.add_subscriber("no-scope", "pw", &[DEPARTMENT], "customer.write")
            .await;
        let mut bodies = Vec::new();
        for (department, user, password) in REFUSALS {
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

on_both_databases! {
    async fn a_changed_password_or_removed_subscriber_stops_working_at_once(backend: Backend) {
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

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
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
    // The cache knows the credential, not the header's spelling: another case of the scheme
    // and more spaces are the same credential.
    let spelled = basic(USER, PASSWORD).replacen("Basic ", "bASIC   ", 1);
    let response = app.get_with_authorization(&[&spelled]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        password_checks(&app).await,
        1,
        "a respelled header was checked again"
    );
}

on_both_databases! {
    /// Every refusal costs one password check, every time: a right password without the grant or
    /// the scope, and a cached right password on a department it has no grant for, cost what a
    /// wrong password and an unknown user cost, so neither timing nor `/metrics` tells them apart.
    async fn every_refusal_costs_one_password_check_every_time(backend: Backend) {
        let app = spawn_app(backend).await;
        app.add_subscriber("no-scope", "pw", &[DEPARTMENT], "customer.write")
            .await;
        // The right password is verified and cached first, on the granted department.
        let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
        assert_eq!(response.status(), 200);
        for (department, user, password) in REFUSALS {
            for attempt in 0..2 {
                let before = password_checks(&app).await;
                let response = app
                    .get_customer_as(department, "ORDER", "1001", Some((user, password)))
                    .await;
                assert_eq!(response.status(), 401, "{backend:?} {department} {user}");
                assert_eq!(
                    password_checks(&app).await,
                    before + 1,
                    "{backend:?}: {department} as {user}, attempt {attempt}"
                );
            }
        }
    }
}

#[tokio::test]
async fn several_authorization_headers_are_unreadable_credentials() {
    let app = spawn_app(Backend::Sqlite).await;
    for second in [basic(USER, PASSWORD), basic(USER, "wrong")] {
        let response = app
            .get_with_authorization(&[&basic(USER, PASSWORD), &second])
            .await;
        assert_refused(response, 2001).await;
    }
    assert_eq!(password_checks(&app).await, 0);
}

/// A flood of wrong passwords saturates the password checks: what cannot be checked now gets a
/// 503 with `Retry-After` (never a false 401), and a cached credential is served throughout.
#[tokio::test]
async fn saturated_password_checks_answer_503_and_cached_credentials_keep_working() {
    let app = spawn_app(Backend::Sqlite).await;
    app.add_subscriber(
        "fresh",
        "fresh-pw",
        &[DEPARTMENT],
        linked_customer_server::auth::SEARCH_SCOPE,
    )
    .await;
    let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
    assert_eq!(response.status(), 200, "the cached credential");

    let url = app.url(&crate::helpers::TestApp::customer_path(
        DEPARTMENT, "ORDER", "1001",
    ));
    // Sent at once, each on its own task: (kind, response).
    let mut requests = tokio::task::JoinSet::new();
    let mut send = |kind: &'static str, header: String| {
        let request = app.client.get(&url).header("authorization", header).send();
        requests.spawn(async move { (kind, request.await.expect("sent")) });
    };
    for i in 0..400 {
        send("flood", basic(USER, &format!("wrong-{i}")));
        if i % 20 == 0 {
            send("fresh", basic("fresh", "fresh-pw"));
            send("cached", basic(USER, PASSWORD));
        }
    }
    let (mut flood, mut fresh, mut cached) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(done) = requests.join_next().await {
        let (kind, response) = done.expect("task");
        match kind {
            "flood" => flood.push(response),
            "fresh" => fresh.push(response),
            _ => cached.push(response),
        }
    }

    let mut busy = 0;
    for response in flood {
        match response.status().as_u16() {
            401 => {}
            503 => {
                busy += 1;
                assert_eq!(response.headers()["retry-after"], "1");
                assert_eq!(error_codes(response).await, vec![5003]);
            }
            other => panic!("a wrong password got {other}"),
        }
    }
    assert!(
        busy > 0,
        "400 wrong passwords at once never saturated the checks"
    );
    for response in fresh {
        let status = response.status().as_u16();
        assert!(
            status == 200 || status == 503,
            "a correct, uncached credential got {status} under load"
        );
    }
    for response in cached {
        assert_eq!(response.status(), 200, "a cached credential under load");
    }
}

/// The value of the unlabelled metric `name`.
async fn metric(app: &crate::helpers::TestApp, name: &str) -> u64 {
    crate::cli::metric(&app.address, name).await
}

on_both_databases! {
    /// A wrong password of a known subscriber on an entity linked to a large document reads
    /// no byte of it, and takes as long as one on an entity linked to nothing; the right
    /// password reads it, checked or cached.
    async fn a_document_is_read_only_after_the_password_matched(backend: Backend) {
        let app = spawn_app(backend).await;
        let mut big = crate::helpers::fixture_line(1);
        big["customer"]["id"] = 9001.into();
        big["customer"]["customerUuid"] = "big-9001".into();
        big["customer"]["emails"] = serde_json::json!([
            {"emailAddress": "big@example.com", "comments": "x".repeat(4 << 20)}
        ]);
        big["links"] = serde_json::json!([{"entity": "ORDER", "entityId": 5001}]);
        app.import(&big.to_string()).await.expect("import");
        const BYTES: &str = "customer_document_bytes_read_total";
        let before = metric(&app, BYTES).await;

        let wrong = |entity_id: &'static str| {
            let app = &app;
            async move {
                let started = std::time::Instant::now();
                let response = app
                    .get_customer_as(DEPARTMENT, "ORDER", entity_id, Some((USER, "wrong password")))
                    .await;
                assert_eq!(response.status(), 401, "{backend:?}");
                started.elapsed()
            }
        };
        // Alternated, so that the machine's load weighs on both alike.
        let (mut linked, mut unlinked) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            linked.push(wrong("5001").await);
            unlinked.push(wrong("5002").await);
        }
        assert_eq!(metric(&app, BYTES).await, before, "{backend:?}: a refusal read a document");
        // The quickest of each: what the work costs, without the waits that other tests
        // running at the same time add.
        let linked = linked.into_iter().min().expect("times");
        let unlinked = unlinked.into_iter().min().expect("times");
        assert!(
            linked < unlinked + unlinked / 2 + std::time::Duration::from_millis(10),
            "{backend:?}: refused in {linked:?} on the large document, {unlinked:?} on nothing"
        );

        for (round, how) in ["checked", "cached"].iter().enumerate() {
            let response = app.get_customer(DEPARTMENT, "ORDER", "5001").await;
            assert_eq!(response.status(), 200, "{backend:?} {how}");
            let read = metric(&app, BYTES).await - before;
            assert!(
                read > (4 << 20) * (round as u64 + 1),
                "{backend:?} {how}: {read} bytes read"
            );
        }
    }
}
