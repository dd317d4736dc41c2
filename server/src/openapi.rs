//! The document that the server's own annotations describe. A test holds it against the
//! hand-written `openapi.yaml` (see `tests/spec_drift.rs`); it is not what clients are served.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Linked Customer API", version = "4.0.0"),
    paths(crate::routes::linked_customer::get_linked_customer),
    // Referenced by a path parameter and by the typed answer's bodies, which utoipa does not
    // collect by itself (the schemas they refer to come along).
    components(schemas(
        crate::model::Entity,
        crate::model::LinkedCustomerResponse,
        crate::model::ErrorResponse
    )),
    servers((url = "/customer")),
    tags((name = "Customer")),
    modifiers(&BasicAuth)
)]
pub struct ApiDoc;

struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basicAuth",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The server's document as JSON (OpenAPI 3.1, as utoipa writes it).
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
