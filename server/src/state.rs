//! What every request can reach: the store, the authenticator, the metrics, the spec and the
//! limits. It sits below the modules that use it (startup, routes, telemetry, limits), so that
//! each of them only looks down.

use crate::auth::Authenticator;
use crate::limits::HttpLimits;
use crate::store::Store;
use crate::telemetry::Metrics;
use actix_web::web;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// `openapi.yaml`, the contract, built into the binary and served as written.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// The same document as JSON, converted once at start-up.
pub struct Spec {
    pub json: web::Bytes,
}

impl Spec {
    pub fn load() -> anyhow::Result<Spec> {
        let value: serde_json::Value =
            serde_saphyr::from_str(OPENAPI_YAML).context("openapi.yaml is not valid YAML")?;
        Ok(Spec {
            json: serde_json::to_vec_pretty(&value)?.into(),
        })
    }
}

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    /// Shared with the request middleware, which finds it as `web::Data<Metrics>`.
    pub metrics: Arc<Metrics>,
    pub spec: Spec,
    pub limits: HttpLimits,
    /// Bytes of stored customer documents that lookups read from the database: a refusal
    /// reads none.
    pub document_bytes: prometheus::IntCounter,
    /// Refused credentials, by reason (never by username).
    pub refusals: prometheus::IntCounterVec,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// What `/readyz` answers: the databases as a task of its own last probed them.
    pub readiness: Arc<crate::readiness::KeptReadiness>,
    /// Answers checked against openapi.yaml (`--contract-guard`; `enforce` unless set).
    pub contract: Arc<crate::contract::Guard>,
}

impl AppState {
    /// Checks answers as `mode` says, from now on (the metric is registered once, by `new`).
    pub fn guard_contract(&mut self, mode: crate::contract::Mode) {
        self.contract = Arc::new(self.contract.with_mode(mode));
    }

    pub fn new(
        store: Arc<dyn Store>,
        auth_cache_ttl: Duration,
        limits: HttpLimits,
    ) -> anyhow::Result<AppState> {
        let auth = Authenticator::new(auth_cache_ttl, limits.password_checks)?;
        let metrics = Metrics::new()?;
        for collector in auth.collectors().into_iter().chain(store.collectors()) {
            metrics.register(collector)?;
        }
        let document_bytes = prometheus::IntCounter::new(
            "customer_document_bytes_read_total",
            "Bytes of stored customer documents read from the database by lookups.",
        )?;
        metrics.register(Box::new(document_bytes.clone()))?;
        let refusals = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "auth_refusals_total",
                "Refused requests of getLinkedCustomer, by reason: missing_credentials, \
                 not_authorized, throttled_username, throttled_address.",
            ),
            &["reason"],
        )?;
        metrics.register(Box::new(refusals.clone()))?;
        let readiness = crate::readiness::KeptReadiness::start(store.clone())?;
        metrics.register(readiness.collector())?;
        let contract = Arc::new(crate::contract::Guard::new(crate::contract::Mode::Enforce)?);
        metrics.register(contract.collector())?;
        Ok(AppState {
            readiness,
            contract,
            document_bytes,
            refusals,
            trusted_proxies: Vec::new(),
            store,
            auth,
            metrics: Arc::new(metrics),
            spec: Spec::load()?,
            limits,
        })
    }
}
