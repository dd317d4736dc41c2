//! The caller's trace in each request (W3C `traceparent`, `tracestate`), with the feature
//! `trace`: the context of the caller's current `tracing` span (through
//! `tracing-opentelemetry`), else OpenTelemetry's current context. Without the feature, or
//! outside any trace, nothing is added.

/// Adds the caller's trace context to `request` (the generated client's pre-hook).
pub(crate) async fn inject(request: &mut reqwest::Request) -> Result<(), std::convert::Infallible> {
    #[cfg(feature = "trace")]
    {
        use opentelemetry::propagation::TextMapPropagator;
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let from_span = tracing::Span::current().context();
        let context = if from_span.span().span_context().is_valid() {
            from_span
        } else {
            opentelemetry::Context::current()
        };
        if context.span().span_context().is_valid() {
            opentelemetry_sdk::propagation::TraceContextPropagator::new()
                .inject_context(&context, &mut Headers(request.headers_mut()));
        }
    }
    #[cfg(not(feature = "trace"))]
    let _ = request;
    Ok(())
}

#[cfg(feature = "trace")]
struct Headers<'a>(&'a mut reqwest::header::HeaderMap);

#[cfg(feature = "trace")]
impl opentelemetry::propagation::Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(key.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
