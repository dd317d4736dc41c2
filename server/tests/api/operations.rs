use crate::helpers::{Backend, DEPARTMENT, error_codes, spawn_app};
use serde_json::Value;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app(Backend::Postgres).await;
    assert_eq!(app.status("/healthz").await, 200);
    app.readyz_becomes(200).await;
    app.db.make_unreachable().await;
    app.readyz_becomes(503).await;
    assert_eq!(app.status("/healthz").await, 200);
    app.db.make_reachable().await;
    app.readyz_becomes(200).await;
}

#[tokio::test]
async fn unknown_paths_are_404_with_the_envelope() {
    let app = spawn_app(Backend::Sqlite).await;
    for path in [
        "/nope",
        "/customer",
        "/customer/v2/department/x/entity/ORDER/1",
        "/customer/v3/x",
    ] {
        let response = app.client.get(app.url(path)).send().await.expect("sent");
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(error_codes(response).await, vec![4004], "{path}");
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(id.len(), 36, "{id}");
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "caller-chosen-42")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-request-id"], "caller-chosen-42");
    // An id that could forge log lines is replaced.
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "a b\tc")
        .send()
        .await
        .expect("sent");
    assert_ne!(response.headers()["x-request-id"], "a b\tc");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app(Backend::Sqlite).await;
    app.get_customer(DEPARTMENT, "ORDER", "1001").await;
    app.get_customer(DEPARTMENT, "ORDER", "0").await;
    for invented in ["FOO", "BAR", "BAZ"] {
        let method = reqwest::Method::from_bytes(invented.as_bytes()).expect("method");
        app.client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .expect("sent");
    }
    let text = app.get_text("/metrics").await;
    let route = "/customer/v2/department/{serviceSubscriberDepartmentToken}/entity/{entity}/{entityId}/customer";
    for status in ["200", "400"] {
        let line =
            format!(r#"http_requests_total{{method="GET",route="{route}",status="{status}"}} 1"#);
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    assert!(text.contains("http_request_duration_seconds_bucket"));
    // Invented methods share one label: a client cannot grow the metrics without bound.
    assert!(
        text.contains(r#"http_requests_total{method="OTHER",route="/healthz",status="405"} 3"#),
        "{text}"
    );
    assert!(!text.contains("FOO"));
    assert!(
        !text.contains(DEPARTMENT),
        "metrics must not carry path values"
    );
}

#[tokio::test]
async fn the_spec_is_served_as_written_and_swagger_ui_shows_it() {
    let app = spawn_app(Backend::Sqlite).await;
    let spec_text = include_str!("../../../openapi.yaml");
    let response = app
        .client
        .get(app.url("/openapi.yaml"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), spec_text);

    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.expect("JSON");
    let expected: Value = serde_saphyr::from_str(spec_text).expect("YAML");
    assert_eq!(served, expected);

    let response = app
        .client
        .get(app.url("/swagger-ui"))
        .send()
        .await
        .expect("sent");
    assert!(response.status().is_redirection());
    assert_eq!(response.headers()["location"], "/swagger-ui/");
    let response = app
        .client
        .get(app.url("/swagger-ui/"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert!(response.text().await.expect("body").contains("swagger-ui"));
    let init = app.get_text("/swagger-ui/swagger-initializer.js").await;
    assert!(init.contains(r#""url": "/openapi.yaml""#), "{init}");
}
