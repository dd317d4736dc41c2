//! `getLinkedCustomer`: the customer, with their vehicles, linked to an entity of a department.

use crate::auth::{SEARCH_SCOPE, parse_basic};
use crate::domain::LinkedCustomerPath;
use crate::errors::ApiError;
use crate::model::{Entity, ErrorResponse, LinkedCustomerResponse};
use crate::startup::AppState;
use crate::store::LookupKey;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use std::borrow::Cow;

/// The operation's path, relative to the `/customer` base, as the spec spells it: the one
/// literal for both the document (`#[utoipa::path]`) and the router ([`route`]).
pub const PATH: &str =
    "/v2/department/{serviceSubscriberDepartmentToken}/entity/{entity}/{entityId}/customer";

/// [`PATH`] as an actix-web pattern whose parameters may be empty, so that an empty parameter
/// is answered with a 400 that names it rather than a 404.
pub fn route() -> String {
    PATH.split_inclusive('}')
        .map(|piece| match piece.strip_suffix('}') {
            Some(open) => format!("{open}:[^/]*}}"),
            None => piece.to_string(),
        })
        .collect()
}

/// Get the customer linked to an entity
#[utoipa::path(
    get,
    path = PATH,
    operation_id = "getLinkedCustomer",
    tag = "Customer",
    params(
        ("serviceSubscriberDepartmentToken" = String, Path,
            min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$",
            description = "The opaque token of the department, as issued to the service subscriber."),
        ("entity" = Entity, Path, description = "The kind of entity the customer is linked to."),
        ("entityId" = i64, Path, format = Int64, minimum = 1,
            description = "The identifier of the entity within its kind (a positive 64-bit integer)."),
    ),
    responses(
        (status = 200, description = "A customer is linked to the entity; here they are, with their vehicles.",
            body = LinkedCustomerResponse, content_type = "application/json"),
        (status = 204, description = "The department has no customer linked to that entity. There is no body."),
        (status = 400, description = "A path parameter is malformed. Each parameter at fault has its own error.",
            body = ErrorResponse, content_type = "application/json"),
        (status = 401, description = "Credentials are missing, or do not allow this call.",
            body = ErrorResponse, content_type = "application/json",
            headers(("WWW-Authenticate" = String, description = "The authentication scheme to use."))),
        (status = 500, description = "The server failed. The body carries no internal detail.",
            body = ErrorResponse, content_type = "application/json"),
        (status = 503, description = "The server cannot answer now (saturated, database out of reach, or out of time); try again after Retry-After seconds.",
            body = ErrorResponse, content_type = "application/json",
            headers(("Retry-After" = i32, description = "Seconds to wait before trying again."))),
    ),
    security(("basicAuth" = []))
)]
pub async fn get_linked_customer(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Two headers are as unreadable as none: which of them would be the caller's?
    let mut headers = request.headers().get_all(header::AUTHORIZATION);
    let credentials = match (headers.next(), headers.next()) {
        (Some(value), None) => value.to_str().ok().and_then(parse_basic),
        _ => None,
    }
    .ok_or(ApiError::MissingCredentials)?;

    let segment = |name: &str| request.match_info().get(name).unwrap_or_default();
    let path = parse_segments(
        segment("serviceSubscriberDepartmentToken"),
        segment("entity"),
        segment("entityId"),
    )
    .map_err(ApiError::BadRequest)?;

    let found = state
        .store
        .lookup(&LookupKey {
            username: &credentials.username,
            department: &path.department,
            scope: SEARCH_SCOPE,
            entity: path.entity,
            entity_id: path.entity_id,
        })
        .await?;
    let access = found.as_ref().map(|found| &found.access);
    state.auth.authorize(&credentials, access).await?;

    Ok(match found.and_then(|found| found.document) {
        Some(document) => HttpResponse::Ok()
            .content_type(ContentType::json())
            .body(LinkedCustomerResponse::json_around(&document)),
        None => HttpResponse::NoContent().finish(),
    })
}

/// The three path parameters as actix-web matched them, decoded the rest of the way and
/// checked (the fuzz target `path_parameters` runs this).
pub fn parse_segments(
    department: &str,
    entity: &str,
    entity_id: &str,
) -> Result<LinkedCustomerPath, Vec<crate::model::Error>> {
    LinkedCustomerPath::parse(&decode(department), &decode(entity), &decode(entity_id))
}

/// actix-web decodes a path segment except for `%`, `/` and `+`; finish the job so that
/// validation sees exactly what the client meant.
fn decode(segment: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_route_lets_each_parameter_be_empty() {
        assert_eq!(
            super::route(),
            "/v2/department/{serviceSubscriberDepartmentToken:[^/]*}/entity/{entity:[^/]*}/{entityId:[^/]*}/customer"
        );
    }
}
