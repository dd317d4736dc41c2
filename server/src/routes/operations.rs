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

/// 200 while the server is ready (its last probe of the databases succeeded, or fewer than
/// [`crate::readiness::FALL`] in a row have failed), 503 when it is not; a line per database
/// after that (`primary up`, `replica1 unreachable`, ...), as the last probe found it, and its
/// age in milliseconds in the `x-probed-ms-ago` header. Answered from kept state: it never waits
/// on a database. Why a database did not answer goes to the log, not to the caller.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    // Before the first probe has finished (the server has just started), the kept state is
    // that of a probe made now.
    let kept = match state.readiness.kept() {
        Some(kept) => kept,
        None => state.readiness.probe_now(state.store.as_ref()).await,
    };
    let mut body = String::from(if kept.ready {
        "ready\n"
    } else {
        "database unreachable\n"
    });
    for database in &kept.readiness.databases {
        let reachable = if database.reachable {
            "up"
        } else {
            "unreachable"
        };
        body.push_str(&format!("{} {reachable}\n", database.name));
    }
    let mut response = if kept.ready {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response
        .content_type(ContentType::plaintext())
        .insert_header((
            "x-probed-ms-ago",
            kept.probed_at.elapsed().as_millis().to_string(),
        ))
        .body(body)
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
