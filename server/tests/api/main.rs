//! One integration-test binary: every test talks HTTP to the real server on a random port
//! with a real database (SQLite, and PostgreSQL through `TEST_POSTGRES_URL`).

#[macro_use]
mod helpers;
mod admin;
mod auth;
mod backups;
mod claims;
mod cli;
mod contract_guard;
mod docs;
mod error_codes;
mod hostile;
mod limits;
mod linked_customer;
mod operations;
mod process;
mod replicas;
mod security;
mod spec_drift;
mod storage;
mod tls;
mod traces;
