//! Logs, request ids and Prometheus metrics.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use std::time::Instant;
use tracing::{Instrument, Span};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Structured logs to stderr: JSON with `LINKED_CUSTOMER_LOG_FORMAT=json`, else text with fields.
/// The level comes from `RUST_LOG` (default `info`). Traces too, when the environment asks for
/// them ([`crate::traces`]).
///
/// Lines are written by a thread of their own, in batches, so that a request does not wait for
/// a write to stderr (at `info` there is a line per request). When stderr is slower than the
/// requests for long enough to fill the queue, requests wait rather than lines being lost.
/// Keep the returned guard until the process ends: dropping it writes what is queued, and
/// sends the traces still held.
pub fn init_logging() -> Telemetry {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 * 1024)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = std::env::var("LINKED_CUSTOMER_LOG_FORMAT").is_ok_and(|f| f == "json");
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let lines = if json {
        lines.json().with_filter(filter).boxed()
    } else {
        lines.with_filter(filter).boxed()
    };
    let (provider, traces) = match crate::traces::start() {
        Ok(Some((provider, tracer))) => {
            // The server's own spans, down to the password check's and the statement's
            // (`debug`): not the libraries'.
            let spans = tracing_subscriber::filter::Targets::new()
                .with_target(env!("CARGO_CRATE_NAME"), tracing::Level::DEBUG);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_threads(false)
                .with_location(false)
                .with_tracked_inactivity(false)
                // Spans nest by `tracing`'s parents; nothing in the server reads OpenTelemetry's
                // current context, which would otherwise be set at every poll of a request.
                .with_context_activation(false)
                .with_target(false)
                .with_filter(spans);
            (Some(provider), Some(layer))
        }
        Ok(None) => (None, None),
        Err(err) => {
            eprintln!("traces are off: {err:#}");
            (None, None)
        }
    };
    // A second initialisation (tests start several servers in one process) is harmless.
    let _ = tracing_subscriber::registry()
        .with(lines)
        .with(traces)
        .try_init();
    Telemetry {
        _lines: guard,
        provider,
    }
}

/// Keeps the log writer and the trace exporter until the process ends.
pub struct Telemetry {
    _lines: tracing_appender::non_blocking::WorkerGuard,
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = &self.provider {
            // Sends what is held; an exporter that cannot be reached costs its timeout once.
            let _ = provider.shutdown_with_timeout(std::time::Duration::from_secs(5));
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Metrics> {
        let registry = Registry::new();
        let labels = ["method", "route", "status"];
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route and status.",
            ),
            &labels,
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer HTTP requests, by route and status.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &labels,
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        // CPU seconds, resident and virtual memory, open and maximum descriptors, threads and
        // start time, read from /proc at each scrape.
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
        })
    }

    /// Adds a metric kept by another part of the server.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> anyhow::Result<()> {
        Ok(self.registry.register(collector)?)
    }

    pub fn render(&self) -> anyhow::Result<String> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8(buffer)?)
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }
}

/// A bounded set of method labels: any client can invent methods, and each new label value
/// would be a new time series kept for the life of the process.
fn method_label(method: &actix_web::http::Method) -> String {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];
    let name = method.as_str();
    if KNOWN.contains(&name) { name } else { "OTHER" }.to_string()
}

/// The request's span: its id, method and route; with traces on, also its place in the
/// caller's trace (`traceparent`), the trace id for the log lines, and, when the trace is
/// sampled, the OpenTelemetry HTTP server attributes (the route's pattern, never the path with
/// its department token). The attributes go to the OpenTelemetry span alone: an unsampled
/// request pays for none of them, and the log line does not repeat them.
/// Also answers whether the trace is sampled (its child spans are made only then).
fn request_span(
    request: &ServiceRequest,
    request_id: &str,
    method: &str,
    route: &str,
) -> (Span, bool) {
    if !crate::traces::on() {
        let span = tracing::info_span!("request", request_id = %request_id, %method, %route);
        return (span, false);
    }
    use opentelemetry::KeyValue;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        %method,
        %route,
        "otel.kind" = "server",
        trace_id = tracing::field::Empty,
    );
    let _ = span.set_parent(crate::traces::parent(request.headers()));
    // Starts the span: the sampler decides now, for the attributes and the children.
    let context = span.context();
    let otel = context.span();
    let sampled = otel.span_context().is_sampled();
    span.record(
        "trace_id",
        tracing::field::display(otel.span_context().trace_id()),
    );
    if sampled {
        otel.update_name(format!("{method} {route}"));
        otel.set_attributes([
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("http.route", route.to_string()),
            KeyValue::new(
                "url.scheme",
                if request.app_config().secure() {
                    "https"
                } else {
                    "http"
                },
            ),
            KeyValue::new("network.protocol.version", http_version(request.version())),
        ]);
    }
    (span, sampled)
}

/// The answer's status on a sampled request's span (an error for a `5xx`).
fn record_status(span: &Span, status: u16) {
    use opentelemetry::trace::{Status, TraceContextExt};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let otel = context.span();
    otel.set_attribute(opentelemetry::KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        otel.set_status(Status::error(""));
    }
}

fn http_version(version: actix_web::http::Version) -> &'static str {
    match version {
        actix_web::http::Version::HTTP_09 => "0.9",
        actix_web::http::Version::HTTP_10 => "1.0",
        actix_web::http::Version::HTTP_2 => "2",
        _ => "1.1",
    }
}

/// Gives every request an id (the caller's `x-request-id` when it is a sane token), a span that
/// carries it through every log line, a log line when done, and its metrics.
pub async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // A route pattern, never the raw path: bounded label values, and no tokens in metrics.
    let route = request.match_pattern().map_or_else(
        || "unmatched".to_string(),
        |pattern| pattern.replace(":[^/]*}", "}"),
    );
    let method = method_label(request.method());
    let metrics = request.app_data::<web::Data<Metrics>>().cloned();
    let (span, sampled) = request_span(&request, &request_id, &method, &route);
    let result = crate::traces::within(sampled, next.call(request).instrument(span.clone())).await;
    let elapsed = started.elapsed();
    let mut response = result?;
    let status = response.status().as_u16();
    if sampled {
        record_status(&span, status);
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if let Some(metrics) = metrics {
        metrics.observe(&method, &route, status, elapsed.as_secs_f64());
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "request done"
        )
    });
    Ok(response)
}
