//! Traces by OpenTelemetry, set by the standard environment variables and off when none asks
//! for them: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) turns them on,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` picks `http/protobuf` (the default) or `grpc`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` / `_ARG` and
//! `OTEL_BSP_*` are read by the OpenTelemetry SDK, and `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` keeps them off.
//!
//! The spans are the server's `tracing` spans, carried over by `tracing-opentelemetry` (the
//! request's span in [`crate::telemetry::observe`], and below it the password check, the
//! database statement and the answer): one set of spans for the log lines and the traces, so
//! the trace id is in both. (The OpenTelemetry org's actix-web instrumentation makes spans of
//! its own beside `tracing`'s, and the children would not nest under them.)

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

tokio::task_local! {
    /// Whether the request this task answers is in a sampled trace: only then are its child
    /// spans made (an unsampled one would cost the OpenTelemetry layer its attributes for
    /// nothing).
    static SAMPLED: bool;
}

/// Runs `answer` (a request's handling) knowing whether its trace is sampled.
pub async fn within<F: std::future::Future>(sampled: bool, answer: F) -> F::Output {
    SAMPLED.scope(sampled, answer).await
}

/// `make()`'s span when the current request's trace is sampled, else a disabled span.
pub fn child(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if SAMPLED.try_with(|sampled| *sampled).unwrap_or(false) {
        make()
    } else {
        tracing::Span::none()
    }
}

/// The service's name in traces when `OTEL_SERVICE_NAME` does not give one.
const SERVICE_NAME: &str = "linked-customer-server";

/// Whether traces are exported (spans then carry the OpenTelemetry attributes).
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

fn set(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// Whether the environment asks for traces.
fn wanted() -> bool {
    let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter =
        set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    let endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    endpoint && !disabled && !no_exporter
}

/// The tracer provider and a tracer of it, when the environment asks for traces.
pub fn start() -> anyhow::Result<Option<(SdkTracerProvider, Tracer)>> {
    if !wanted() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder().build()?;
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    );
    let named = set("OTEL_SERVICE_NAME").is_some()
        || set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer(SERVICE_NAME);
    ON.store(true, Ordering::Relaxed);
    Ok(Some((provider, tracer)))
}

/// The W3C trace context (`traceparent`, `tracestate`) a request carries.
pub fn parent(headers: &actix_web::http::header::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

struct Headers<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}
