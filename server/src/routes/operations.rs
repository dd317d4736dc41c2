//! What operators and tooling need around the API: health, readiness, metrics, the spec, and
//! the answers for paths and methods that do not exist.

use crate::errors::ApiError;
use crate::state::AppState;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, ResponseError, web};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok\n")
}

/// 200 when lookups can be answered, 503 when they cannot; a line per database after that
/// (`primary up`, `replica1 unreachable`, ...). Why a database did not answer goes to the log,
/// not to the caller.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let readiness = state.store.readiness().await;
    let mut body = String::from(if readiness.serving {
        "ready\n"
    } else {
        "database unreachable\n"
    });
    for database in &readiness.databases {
        let reachable = if database.reachable {
            "up"
        } else {
            "unreachable"
        };
        body.push_str(&format!("{} {reachable}\n", database.name));
    }
    let mut response = if readiness.serving {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response.content_type(ContentType::plaintext()).body(body)
}

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.auth.update_gauges();
    let text = state.metrics.render()?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

/// `openapi.yaml` exactly as written in the repository.
pub async fn openapi_yaml() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/yaml")
        .body(crate::state::OPENAPI_YAML)
}

/// The same document as JSON.
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(state.spec.json.clone()) // Bytes: a reference count, not a copy
}

pub async fn not_found() -> HttpResponse {
    ApiError::NotFound.error_response()
}

/// A 405 naming the methods `allow`ed on the path.
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::route().to(move || async move { ApiError::MethodNotAllowed { allow }.error_response() })
}
