//! `getLinkedCustomer`: the customer, with their vehicles, linked to an entity of a department.

use crate::auth::{Credentials, SEARCH_SCOPE, parse_basic, username_hash};
use crate::domain::{DepartmentToken, EntityId};
use crate::errors::{self, ApiError, Code};
use crate::model::{self, Entity, ErrorResponse, LinkedCustomerResponse};
use crate::state::AppState;
use crate::store::{Lookup, LookupKey};
use actix_web::body::BoxBody;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, Responder, ResponseError, web};
use std::borrow::Cow;
use std::net::IpAddr;

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
    responses(LinkedCustomerAnswer),
    security(("basicAuth" = []))
)]
pub async fn get_linked_customer(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> LinkedCustomerAnswer {
    answer(&request, &state).await.into()
}

/// The stored document of the linked customer, if any. Every refusal is counted and logged
/// here, once, on its way out.
async fn answer(request: &HttpRequest, state: &AppState) -> Result<Option<String>, ApiError> {
    let address = client_address(request, &state.trusted_proxies);
    // Two headers are as unreadable as none: which of them would be the caller's?
    let mut headers = request.headers().get_all(header::AUTHORIZATION);
    let credentials = match (headers.next(), headers.next()) {
        (Some(value), None) => value.to_str().ok().and_then(parse_basic),
        _ => None,
    };
    let Some(credentials) = credentials else {
        return Err(refused(state, ApiError::MissingCredentials, None, address));
    };
    answer_as(request, state, &credentials, address)
        .await
        .map_err(|err| refused(state, err, Some(&credentials.username), address))
}

async fn answer_as(
    request: &HttpRequest,
    state: &AppState,
    credentials: &Credentials,
    address: Option<IpAddr>,
) -> Result<Option<String>, ApiError> {
    let segment = |name: &str| request.match_info().get(name).unwrap_or_default();
    let path = parse_segments(
        segment("serviceSubscriberDepartmentToken"),
        segment("entity"),
        segment("entityId"),
    )
    .map_err(ApiError::BadRequest)?;

    let key = |verified_hash| LookupKey {
        username: &credentials.username,
        department: &path.department,
        scope: SEARCH_SCOPE,
        entity: path.entity,
        entity_id: path.entity_id,
        verified_hash,
    };
    // Keyed once; a cached credential: one statement reads the grant, the hash and the document.
    let presented = state.auth.present(credentials);
    // Not cached, and its budget already found spent: refused before the database is read.
    if let Some(throttled) = state.auth.spent(&presented, address) {
        return Err(ApiError::TooManyRequests(throttled));
    }
    let cached = presented.verified_hash.as_deref();
    let found = read(state, &key(cached)).await?;
    let access = found.as_ref().map(|found| &found.access);
    state.auth.authorize(&presented, access, address).await?;
    let Some(found) = found else {
        return Err(ApiError::NotAuthorized);
    };
    if cached == Some(found.access.password_hash.as_str()) {
        return Ok(found.document);
    }
    // The password was checked just now: only now is the document read, and only while the
    // hash is still the one it matched (a password changed meanwhile is a refusal).
    let verified = found.access.password_hash;
    match read(state, &key(Some(&verified))).await? {
        Some(again) if again.access.granted && again.access.password_hash == verified => {
            Ok(again.document)
        }
        _ => Err(ApiError::NotAuthorized),
    }
}

/// `err`, counted by its reason and logged with the client's address and a hash of the
/// username (never the username or the password) when it is a refusal of credentials; other
/// errors (a 400, a 503) pass as they are.
fn refused(
    state: &AppState,
    err: ApiError,
    username: Option<&str>,
    address: Option<IpAddr>,
) -> ApiError {
    let reason = match &err {
        ApiError::MissingCredentials => "missing_credentials",
        ApiError::NotAuthorized => "not_authorized",
        ApiError::TooManyRequests(throttled) => throttled.reason(),
        _ => return err,
    };
    state.refusals.with_label_values(&[reason]).inc();
    let client = address.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    let user = username.map(username_hash).unwrap_or_default();
    tracing::info!(reason, client, user, "credentials refused");
    err
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest address
/// in `X-Forwarded-For` (read from the right, as each proxy appends) that is not one.
fn client_address(request: &HttpRequest, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = request.peer_addr()?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return Some(ip),
            // Not an address: the proxy's own is the one known for sure.
            Err(_) => break,
        }
    }
    Some(peer)
}

/// A lookup, counting the document bytes it moved from the database (`/metrics`), whether
/// the request is let through or not.
async fn read(state: &AppState, key: &LookupKey<'_>) -> Result<Option<Lookup>, ApiError> {
    let found = state.store.lookup(key).await?;
    if let Some(document) = found.as_ref().and_then(|found| found.document.as_ref()) {
        state.document_bytes.inc_by(document.len() as u64);
    }
    Ok(found)
}

/// Every answer of getLinkedCustomer, one variant per status the spec lists: the server's
/// document takes its responses from this type (`responses(LinkedCustomerAnswer)`), and the
/// handler can only answer with one of them. Made from the handler's result by `From`, so
/// that each error goes to the variant of its status.
#[derive(utoipa::IntoResponses)]
pub enum LinkedCustomerAnswer {
    #[response(
        status = 200,
        description = "A customer is linked to the entity; here they are, with their vehicles.",
        content_type = "application/json"
    )]
    Found(StoredCustomer),
    #[response(
        status = 204,
        description = "The department has no customer linked to that entity. There is no body."
    )]
    NotLinked,
    #[response(
        status = 400,
        description = "A path parameter is malformed. Each parameter at fault has its own error.",
        content_type = "application/json"
    )]
    BadRequest(Refusal),
    #[response(
        status = 401,
        description = "Credentials are missing, or do not allow this call.",
        content_type = "application/json",
        headers(("WWW-Authenticate" = String, description = "The authentication scheme to use."))
    )]
    Unauthorized(Refusal),
    #[response(
        status = 429,
        description = "Too many password checks for this username or from this address; try again after Retry-After seconds.",
        content_type = "application/json",
        headers(("Retry-After" = i32, description = "Seconds to wait before trying again."))
    )]
    TooManyRequests(Refusal),
    #[response(
        status = 500,
        description = "The server failed. The body carries no internal detail.",
        content_type = "application/json"
    )]
    Failed(Refusal),
    #[response(
        status = 503,
        description = "The server cannot answer now (saturated, database out of reach, or out of time); try again after Retry-After seconds.",
        content_type = "application/json",
        headers(("Retry-After" = i32, description = "Seconds to wait before trying again."))
    )]
    Unavailable(Refusal),
}

impl From<Result<Option<String>, ApiError>> for LinkedCustomerAnswer {
    fn from(result: Result<Option<String>, ApiError>) -> LinkedCustomerAnswer {
        match result {
            Ok(Some(document)) => LinkedCustomerAnswer::Found(StoredCustomer(document)),
            Ok(None) => LinkedCustomerAnswer::NotLinked,
            Err(err @ ApiError::BadRequest(_)) => LinkedCustomerAnswer::BadRequest(Refusal(err)),
            Err(err @ (ApiError::MissingCredentials | ApiError::NotAuthorized)) => {
                LinkedCustomerAnswer::Unauthorized(Refusal(err))
            }
            Err(err @ ApiError::TooManyRequests(_)) => {
                LinkedCustomerAnswer::TooManyRequests(Refusal(err))
            }
            Err(err @ ApiError::Unavailable) => LinkedCustomerAnswer::Unavailable(Refusal(err)),
            // Not found and wrong method are the router's answers, never this handler's: here
            // they would be a fault of the server's.
            Err(err @ ApiError::Unexpected(_)) => LinkedCustomerAnswer::Failed(Refusal(err)),
            Err(other @ (ApiError::NotFound | ApiError::MethodNotAllowed { .. })) => {
                let err = anyhow::anyhow!("getLinkedCustomer answered {other}");
                LinkedCustomerAnswer::Failed(Refusal(ApiError::Unexpected(err)))
            }
        }
    }
}

impl Responder for LinkedCustomerAnswer {
    type Body = BoxBody;

    fn respond_to(self, request: &HttpRequest) -> HttpResponse {
        let _writing = crate::traces::child(|| tracing::debug_span!("write answer")).entered();
        let guard = request
            .app_data::<web::Data<AppState>>()
            .map(|state| state.contract.clone());
        let refused = |violation: crate::contract::Violation| {
            let err = anyhow::anyhow!(
                "the answer departs from openapi.yaml at {:?} ({}): not sent",
                violation.pointer,
                violation.keyword
            );
            ApiError::Unexpected(err).error_response()
        };
        match self {
            LinkedCustomerAnswer::Found(StoredCustomer(document)) => {
                let body = LinkedCustomerResponse::json_around(&document);
                if let Some(guard) = &guard
                    && let Err(violation) = guard.check(200, || serde_json::from_slice(&body).ok())
                {
                    return refused(violation);
                }
                HttpResponse::Ok()
                    .content_type(ContentType::json())
                    .body(body)
            }
            LinkedCustomerAnswer::NotLinked => HttpResponse::NoContent().finish(),
            LinkedCustomerAnswer::BadRequest(Refusal(err))
            | LinkedCustomerAnswer::Unauthorized(Refusal(err))
            | LinkedCustomerAnswer::TooManyRequests(Refusal(err))
            | LinkedCustomerAnswer::Failed(Refusal(err))
            | LinkedCustomerAnswer::Unavailable(Refusal(err)) => {
                if let Some(guard) = &guard {
                    let status = err.status_code().as_u16();
                    if let Err(violation) =
                        guard.check(status, || serde_json::to_value(err.envelope()).ok())
                    {
                        return refused(violation);
                    }
                }
                err.error_response()
            }
        }
    }
}

/// A customer's stored document, answered as it was imported: on the wire a
/// `LinkedCustomerResponse` (the document is spliced into its envelope, not parsed again).
pub struct StoredCustomer(String);

/// An error answer: the error envelope (`ErrorResponse`) of the error it reports.
pub struct Refusal(ApiError);

/// `$wire` has the schema of `$schema` in the document: a `$ref` to it, by its name.
macro_rules! schema_as {
    ($wire:ty, $schema:ty) => {
        impl utoipa::PartialSchema for $wire {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                <$schema as utoipa::PartialSchema>::schema()
            }
        }

        impl utoipa::ToSchema for $wire {
            fn name() -> Cow<'static, str> {
                <$schema as utoipa::ToSchema>::name()
            }
        }
    };
}

schema_as!(StoredCustomer, LinkedCustomerResponse);
schema_as!(Refusal, ErrorResponse);

/// The three path parameters as actix-web matched them, decoded the rest of the way and
/// checked (the fuzz target `path_parameters` runs this).
pub fn parse_segments(
    department: &str,
    entity: &str,
    entity_id: &str,
) -> Result<LinkedCustomerPath, Vec<crate::model::Error>> {
    LinkedCustomerPath::parse(&decode(department), &decode(entity), &decode(entity_id))
}

/// The three path parameters of getLinkedCustomer, each checked by its domain type; every
/// failure is reported, with the error code of its parameter (domain types say what is
/// wrong, the route says which code that is).
pub struct LinkedCustomerPath {
    pub department: DepartmentToken,
    pub entity: Entity,
    pub entity_id: EntityId,
}

impl LinkedCustomerPath {
    pub fn parse(
        department: &str,
        entity: &str,
        entity_id: &str,
    ) -> Result<LinkedCustomerPath, Vec<model::Error>> {
        fn check<T>(
            result: Result<T, String>,
            code: Code,
            errors: &mut Vec<model::Error>,
        ) -> Option<T> {
            result
                .map_err(|msg| errors.push(code.with_message(msg)))
                .ok()
        }
        let mut errors = Vec::new();
        let department = check(
            DepartmentToken::parse(department),
            errors::INVALID_DEPARTMENT_TOKEN,
            &mut errors,
        );
        let entity = check(Entity::parse(entity), errors::INVALID_ENTITY, &mut errors);
        let entity_id = check(
            EntityId::parse(entity_id),
            errors::INVALID_ENTITY_ID,
            &mut errors,
        );
        match (department, entity, entity_id) {
            (Some(department), Some(entity), Some(entity_id)) => Ok(LinkedCustomerPath {
                department,
                entity,
                entity_id,
            }),
            _ => Err(errors),
        }
    }
}

/// actix-web decodes a path segment except for `%`, `/` and `+`; finish the job so that
/// validation sees exactly what the client meant.
fn decode(segment: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::IntoResponses;

    /// Whatever the handler's result, the status sent is one the document lists.
    #[test]
    fn every_answer_has_a_status_of_the_document() {
        let listed = LinkedCustomerAnswer::responses();
        let request = actix_web::test::TestRequest::default().to_http_request();
        let results: Vec<Result<Option<String>, ApiError>> = vec![
            Ok(Some("{}".to_string())),
            Ok(None),
            Err(ApiError::BadRequest(Vec::new())),
            Err(ApiError::MissingCredentials),
            Err(ApiError::NotAuthorized),
            Err(ApiError::TooManyRequests(crate::auth::Throttled::Address(
                std::time::Duration::from_secs(3),
            ))),
            Err(ApiError::Unavailable),
            Err(ApiError::Unexpected(anyhow::anyhow!("a fault"))),
            Err(ApiError::NotFound),
            Err(ApiError::MethodNotAllowed { allow: "GET" }),
        ];
        for result in results {
            let shown = format!("{result:?}");
            let status = LinkedCustomerAnswer::from(result)
                .respond_to(&request)
                .status();
            assert!(
                listed.contains_key(status.as_str()),
                "{shown} was answered {status}, which the document does not list"
            );
        }
        assert_eq!(listed.len(), 7);
    }

    #[test]
    fn every_bad_parameter_is_reported() {
        let Err(errors) = LinkedCustomerPath::parse("bad token", "CAR", "0") else {
            panic!("accepted bad parameters");
        };
        let codes: Vec<i32> = errors.iter().map(|e| e.error_code).collect();
        assert_eq!(codes, vec![1001, 1002, 1003]);
    }

    #[test]
    fn the_route_lets_each_parameter_be_empty() {
        assert_eq!(
            super::route(),
            "/v2/department/{serviceSubscriberDepartmentToken:[^/]*}/entity/{entity:[^/]*}/{entityId:[^/]*}/customer"
        );
    }
}
