use crate::helpers::{
    DEPARTMENT, OTHER_DEPARTMENT, TestApp, error_codes, expected_answer, spawn_app,
};
use serde_json::{Value, json};

on_both_databases! {
    async fn linked_customer_is_returned_with_every_field_as_imported(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
        assert_eq!(response.status(), 200, "{backend:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{backend:?}"
        );
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body, expected_answer(0), "{backend:?}");
    }
}

on_both_databases! {
    async fn absent_optional_fields_are_omitted_and_arrays_kept(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app.get_customer(DEPARTMENT, "THREAD", "42").await;
        assert_eq!(response.status(), 200, "{backend:?}");
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(
            body["customerWithVehicles"],
            json!({
                "customer": {"id": 2, "customerUuid": "sparse-0001", "emails": [], "phoneNumbers": [], "addresses": []},
                "vehicles": []
            }),
            "{backend:?}"
        );
    }
}

on_both_databases! {
    async fn largest_entity_id_is_accepted(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app
            .get_customer(DEPARTMENT, "PAYMENT", "9223372036854775807")
            .await;
        assert_eq!(response.status(), 200, "{backend:?}");
    }
}

on_both_databases! {
    async fn no_linked_customer_is_204_without_a_body(backend: Backend) {
        let app = spawn_app(backend).await;
        for (entity, id) in [("ORDER", "1002"), ("APPOINTMENT", "1001"), ("THREAD", "1")] {
            let response = app.get_customer(DEPARTMENT, entity, id).await;
            assert_eq!(response.status(), 204, "{backend:?} {entity} {id}");
            assert!(response.headers().get("content-type").is_none());
            assert!(response.bytes().await.expect("body").is_empty());
        }
    }
}

on_both_databases! {
    async fn departments_do_not_see_each_others_links(backend: Backend) {
        let app = spawn_app(backend).await;
        app.add_subscriber(
            "both",
            "pw-both",
            &[DEPARTMENT, OTHER_DEPARTMENT],
            "customer.search",
        )
        .await;
        let mut first_names = Vec::new();
        for department in [DEPARTMENT, OTHER_DEPARTMENT] {
            let response = app
                .get_customer_as(department, "ORDER", "1001", Some(("both", "pw-both")))
                .await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("JSON");
            first_names.push(body["customerWithVehicles"]["customer"]["firstName"].clone());
        }
        assert_eq!(
            first_names,
            vec![json!("Maria"), json!("Southern")],
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn each_malformed_parameter_is_a_400_that_names_it() {
    let app = spawn_app(crate::helpers::Backend::Sqlite).await;
    let long = "a".repeat(65);
    let cases: Vec<(&str, &str, &str, Vec<i64>)> = vec![
        ("bad token", "ORDER", "1", vec![1001]),
        ("dept%2Fnorth", "ORDER", "1", vec![1001]),
        ("", "ORDER", "1", vec![1001]),
        (&long, "ORDER", "1", vec![1001]),
        ("d%C3%A9pt", "ORDER", "1", vec![1001]),
        (DEPARTMENT, "order", "1", vec![1002]),
        (DEPARTMENT, "CAR", "1", vec![1002]),
        (DEPARTMENT, "", "1", vec![1002]),
        (DEPARTMENT, "ORDER", "0", vec![1003]),
        (DEPARTMENT, "ORDER", "-5", vec![1003]),
        (DEPARTMENT, "ORDER", "abc", vec![1003]),
        (DEPARTMENT, "ORDER", "1.5", vec![1003]),
        (DEPARTMENT, "ORDER", "9223372036854775808", vec![1003]),
        (DEPARTMENT, "ORDER", "", vec![1003]),
        ("x!", "CAR", "0", vec![1001, 1002, 1003]),
    ];
    for (department, entity, id, expected) in cases {
        let response = app.get_customer(department, entity, id).await;
        assert_eq!(response.status(), 400, "{department:?} {entity:?} {id:?}");
        assert_eq!(
            error_codes(response).await,
            expected,
            "{department:?} {entity:?} {id:?}"
        );
    }
}

#[tokio::test]
async fn path_segments_are_percent_decoded_before_validation() {
    let app = spawn_app(crate::helpers::Backend::Sqlite).await;
    let response = app
        .get_customer("dept%2Dnorth", "%4FRDER", "%31%30%30%31")
        .await;
    assert_eq!(response.status(), 200);
}

on_both_databases! {
    async fn a_database_failure_is_a_500_that_reveals_nothing(backend: Backend) {
        let app = spawn_app(backend).await;
        // Break the schema behind the server's back: the lookup now fails inside the database.
        app.db.execute("DROP TABLE links").await;
        let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
        assert_eq!(response.status(), 500, "{backend:?}");
        assert!(response.headers().contains_key("x-request-id"));
        let text = response.text().await.expect("body");
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["errors"][0]["errorCode"], 5000);
        for leak in ["links", "SELECT", "sqlx", "table", "/"] {
            assert!(!text.contains(leak), "500 body reveals {leak:?}: {text}");
        }
    }
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let app = spawn_app(crate::helpers::Backend::Sqlite).await;
    let path = TestApp::customer_path(DEPARTMENT, "ORDER", "1001");
    let response = app
        .client
        .head(app.url(&path))
        .basic_auth(crate::helpers::USER, Some(crate::helpers::PASSWORD))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.bytes().await.expect("body").is_empty());
    let response = app
        .client
        .head(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn undeclared_methods_are_405_with_allow() {
    let app = spawn_app(crate::helpers::Backend::Sqlite).await;
    let path = TestApp::customer_path(DEPARTMENT, "ORDER", "1001");
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
        let response = app
            .client
            .request(method.parse().expect("method"), app.url(&path))
            .basic_auth("reader", Some("x"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "GET, HEAD", "{method}");
        assert_eq!(error_codes(response).await, vec![4005], "{method}");
    }
}
