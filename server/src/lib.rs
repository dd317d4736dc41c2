//! linked-customer-server: the `getLinkedCustomer` operation of `openapi.yaml`, on SQLite or
//! PostgreSQL, with HTTP Basic authentication of service subscribers.

pub mod auth;
pub mod cli;
pub mod contract;
pub mod demo;
pub mod domain;
pub mod errors;
pub mod import;
pub mod limits;
pub mod model;
pub mod openapi;
pub mod readiness;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod tls;
pub mod traces;
