//! The demo data set that a new embedded database gets, so that Swagger UI's "Try it out"
//! answers with a real customer at once.

use crate::auth::{SEARCH_SCOPE, hash_password};
use crate::domain::DepartmentToken;
use crate::store::Store;
use anyhow::Result;

pub const DEPARTMENT: &str = "demo-department";
pub const USERNAME: &str = "demo";
pub const PASSWORD: &str = "demo-password";
pub const ENTITY: &str = "ORDER";
pub const ENTITY_ID: i64 = 1001;

/// One customer with every field filled and two vehicles, linked to ORDER 1001 and APPOINTMENT
/// 2001 of `demo-department`; the customer is the 200 example of openapi.yaml.
const DATA: &str = include_str!("../demo/demo.jsonl");

pub async fn load(store: &dyn Store) -> Result<()> {
    store
        .import(Box::new(crate::import::records(DATA.as_bytes())))
        .await?;
    store
        .add_subscriber(
            USERNAME,
            &hash_password(PASSWORD)?,
            &[DepartmentToken::parse(DEPARTMENT).map_err(anyhow::Error::msg)?],
            &[SEARCH_SCOPE.to_string()],
        )
        .await
}

/// What to paste to try the demo against a server listening at `base` (e.g. http://127.0.0.1:8080).
pub fn instructions(base: &str) -> String {
    format!(
        "Demo data loaded: department `{DEPARTMENT}`, subscriber `{USERNAME}` / `{PASSWORD}`.\n\
         Try it in Swagger UI: {base}/swagger-ui/ (Authorize with the demo credentials), or:\n\
         \n    curl -u {USERNAME}:{PASSWORD} {base}/customer/v2/department/{DEPARTMENT}/entity/{ENTITY}/{ENTITY_ID}/customer\n"
    )
}
