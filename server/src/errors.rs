//! Every failure a request can meet, and the one place where each becomes a status and an
//! error envelope. The codes are the stable table in the `ErrorResponse` schema of openapi.yaml.

use crate::model::{Error, ErrorResponse};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

pub const REALM_CHALLENGE: &str = r#"Basic realm="customer""#;

/// A stable error code with its title.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    pub code: i32,
    pub title: &'static str,
}

pub const INVALID_DEPARTMENT_TOKEN: Code = Code {
    code: 1001,
    title: "INVALID_DEPARTMENT_TOKEN",
};
pub const INVALID_ENTITY: Code = Code {
    code: 1002,
    title: "INVALID_ENTITY",
};
pub const INVALID_ENTITY_ID: Code = Code {
    code: 1003,
    title: "INVALID_ENTITY_ID",
};
pub const MISSING_CREDENTIALS: Code = Code {
    code: 2001,
    title: "MISSING_CREDENTIALS",
};
pub const NOT_AUTHORIZED: Code = Code {
    code: 2002,
    title: "NOT_AUTHORIZED",
};
pub const NOT_FOUND: Code = Code {
    code: 4004,
    title: "NOT_FOUND",
};
pub const METHOD_NOT_ALLOWED: Code = Code {
    code: 4005,
    title: "METHOD_NOT_ALLOWED",
};
pub const TOO_MANY_REQUESTS: Code = Code {
    code: 4029,
    title: "TOO_MANY_REQUESTS",
};
pub const INTERNAL_ERROR: Code = Code {
    code: 5000,
    title: "INTERNAL_ERROR",
};
pub const SERVICE_UNAVAILABLE: Code = Code {
    code: 5003,
    title: "SERVICE_UNAVAILABLE",
};

/// Every error code, in the order of the table in `openapi.yaml` (a test holds them to it).
pub const ALL: [Code; 10] = [
    INVALID_DEPARTMENT_TOKEN,
    INVALID_ENTITY,
    INVALID_ENTITY_ID,
    MISSING_CREDENTIALS,
    NOT_AUTHORIZED,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    TOO_MANY_REQUESTS,
    INTERNAL_ERROR,
    SERVICE_UNAVAILABLE,
];

/// Seconds a client is asked to wait after a 503: long enough for a burst to drain.
pub const RETRY_AFTER_SECONDS: u32 = 1;

impl Code {
    pub fn with_message(self, message: impl Into<String>) -> Error {
        Error {
            error_code: self.code,
            error_title: self.title.to_string(),
            error_message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid parameters")]
    BadRequest(Vec<Error>),
    #[error("missing or unreadable credentials")]
    MissingCredentials,
    #[error("credentials refused")]
    NotAuthorized,
    #[error("no such path")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    /// Password checks or database connections are saturated, the database cannot be reached,
    /// or the request ran out of time: come back, nothing is wrong with the request.
    #[error("unavailable")]
    Unavailable,
    /// Too many password checks for this username or from this address: come back after the
    /// wait, without a check.
    #[error("too many password checks")]
    TooManyRequests(crate::auth::Throttled),
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

/// Every failure that reaches a handler as an error: a database out of reach or out of time is
/// worth a retry (`503`); anything else is the server's fault (`500`).
impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> ApiError {
        if crate::store::is_unavailable(&err) {
            tracing::warn!(error = format!("{err:#}"), "database unavailable");
            ApiError::Unavailable
        } else {
            ApiError::Unexpected(err)
        }
    }
}

impl ApiError {
    pub fn envelope(&self) -> ErrorResponse {
        let errors = match self {
            ApiError::BadRequest(errors) => errors.clone(),
            ApiError::MissingCredentials => vec![MISSING_CREDENTIALS.with_message(
                "This request needs HTTP Basic credentials of a service subscriber.",
            )],
            ApiError::NotAuthorized => {
                vec![NOT_AUTHORIZED.with_message("The credentials do not allow this request.")]
            }
            ApiError::NotFound => vec![NOT_FOUND.with_message("No operation exists at this path.")],
            ApiError::MethodNotAllowed { allow } => vec![METHOD_NOT_ALLOWED.with_message(format!(
                "This path does not support that method; it allows {allow}."
            ))],
            ApiError::Unavailable => vec![SERVICE_UNAVAILABLE.with_message(format!(
                "The server cannot answer now; try again in {RETRY_AFTER_SECONDS} s (see Retry-After)."
            ))],
            ApiError::TooManyRequests(throttled) => vec![TOO_MANY_REQUESTS.with_message(format!(
                "Too many password checks; try again in {} s (see Retry-After).",
                throttled.retry_after_seconds()
            ))],
            ApiError::Unexpected(_) => vec![INTERNAL_ERROR.with_message(
                "The server failed to answer. Quote the x-request-id header when reporting this.",
            )],
        };
        ErrorResponse {
            errors,
            warnings: Vec::new(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingCredentials | ApiError::NotAuthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::MissingCredentials | ApiError::NotAuthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, REALM_CHALLENGE));
            }
            ApiError::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, *allow));
            }
            ApiError::Unavailable => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS));
            }
            ApiError::TooManyRequests(throttled) => {
                response.insert_header((header::RETRY_AFTER, throttled.retry_after_seconds()));
            }
            ApiError::Unexpected(err) => {
                // The detail stays in the log (with the request id); the body says nothing of it.
                tracing::error!(error = format!("{err:#}"), "request failed");
            }
            _ => {}
        }
        response.json(self.envelope())
    }
}

/// Gives the envelope to a bare 404 that the application did not write itself (Swagger UI's
/// answer for an asset it does not have), so that every error body has the documented shape.
pub async fn envelope_bare_not_found(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let response = next.call(request).await?;
    let bare = response.status() == StatusCode::NOT_FOUND
        && !response.headers().contains_key(header::CONTENT_TYPE);
    if bare {
        let (request, _) = response.into_parts();
        return Ok(ServiceResponse::new(
            request,
            ApiError::NotFound.error_response(),
        ));
    }
    Ok(response.map_into_boxed_body())
}
