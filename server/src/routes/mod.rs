//! HTTP handlers, one module per feature.

pub mod linked_customer;
pub mod operations;
