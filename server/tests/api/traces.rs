//! Traces: the server exports its spans by OTLP over HTTP (protobuf) to a receiver in this test,
//! continuing the trace of each request's `traceparent`, with the OpenTelemetry HTTP and
//! database attributes and none of the request's secrets.

use crate::cli::{ORDER_1001, PW, Served, add_reader, import_fixture};
use crate::helpers::{Backend, TestDb};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the receiver got: every export request, decoded.
type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// An OTLP/HTTP receiver on a port of its own: answers each `POST /v1/traces` with `200`.
async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let received: Received = Arc::default();
    let kept = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    // One request: its head, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        let mut chunk = [0u8; 8192];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
                    assert!(head.starts_with("post /v1/traces "), "{head}");
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|value| value.trim().parse().ok())
                        .expect("content-length");
                    while buffer.len() < head_end + length {
                        let mut chunk = [0u8; 8192];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buffer.drain(..head_end + length).skip(head_end).collect();
                    let request = ExportTraceServiceRequest::decode(body.as_slice())
                        .expect("an OTLP trace export");
                    kept.lock().expect("lock").push(request);
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| value(&kv.value))
}

/// Every span received so far, with the resource's attributes of its export.
fn spans(received: &Received) -> (Vec<Span>, Vec<KeyValue>) {
    let mut spans = Vec::new();
    let mut resource = Vec::new();
    for request in received.lock().expect("lock").iter() {
        for resource_spans in &request.resource_spans {
            if let Some(r) = &resource_spans.resource {
                resource.extend(r.attributes.iter().cloned());
            }
            for scope in &resource_spans.scope_spans {
                spans.extend(scope.spans.iter().cloned());
            }
        }
    }
    (spans, resource)
}

const ROUTE: &str = "/customer/v2/department/{serviceSubscriberDepartmentToken}/entity/{entity}/{entityId}/customer";

/// A request with `traceparent` for a trace of its own: (trace id, parent span id).
async fn traced(base: &str, password: &str, n: u8) -> (String, String, u16) {
    traced_with_flags(base, password, n, "01").await
}

/// [`traced`], with the trace flags given (`00`: the caller's trace is not sampled).
async fn traced_with_flags(
    base: &str,
    password: &str,
    n: u8,
    flags: &str,
) -> (String, String, u16) {
    let trace_id = format!(
        "{:032x}",
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4700_u128 + u128::from(n)
    );
    let parent = format!("{:016x}", 0x00f0_67aa_0ba9_0200_u64 + u64::from(n));
    let status = reqwest::Client::new()
        .get(format!("{base}{ORDER_1001}"))
        .basic_auth("u", Some(password))
        .header("traceparent", format!("00-{trace_id}-{parent}-{flags}"))
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .expect("request")
        .status()
        .as_u16();
    (trace_id, parent, status)
}

#[tokio::test]
async fn spans_of_a_200_a_401_and_a_503_continue_the_callers_trace() {
    let (endpoint, received) = receiver().await;
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("dir");
    add_reader(&db.url);
    import_fixture(&db.url, dir.path());
    let log = dir.path().join("server.log");
    let served = Served::start_with(
        &db.url,
        &["--no-demo"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "lc-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        Some(&log),
    );
    let ok = traced(&served.base, PW, 1).await;
    let refused = traced(&served.base, "wrong-password-1", 2).await;
    db.make_unreachable().await;
    let unavailable = traced(&served.base, PW, 3).await;
    db.make_reachable().await;
    // A caller's trace that is not sampled is followed: nothing of it is exported.
    let unsampled = traced_with_flags(&served.base, PW, 4, "00").await;
    assert_eq!(unsampled.2, 200);
    assert_eq!((ok.2, refused.2, unavailable.2), (200, 401, 503));

    // The batch is sent every 100 ms.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let server_span = |spans: &[Span], trace: &str| {
        spans
            .iter()
            .find(|s| hex(&s.trace_id) == trace && s.kind == 2)
            .cloned()
    };
    let (spans, resource) = loop {
        let (spans, resource) = spans(&received);
        let all = [&ok, &refused, &unavailable]
            .iter()
            .all(|(trace, ..)| server_span(&spans, trace).is_some());
        if all || std::time::Instant::now() > deadline {
            break (spans, resource);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        resource
            .iter()
            .any(|kv| kv.key == "service.name" && value(&kv.value) == "lc-under-test"),
        "{resource:?}"
    );
    let names = |trace: &str, parent: &[u8]| -> Vec<String> {
        let mut names: Vec<String> = spans
            .iter()
            .filter(|s| hex(&s.trace_id) == trace && s.parent_span_id == parent)
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    for ((trace, parent, status), children) in [
        (
            &ok,
            &["SELECT getLinkedCustomer", "password check", "write answer"][..],
        ),
        (
            &refused,
            &["SELECT getLinkedCustomer", "password check", "write answer"][..],
        ),
        (
            &unavailable,
            &["SELECT getLinkedCustomer", "write answer"][..],
        ),
    ] {
        let server = server_span(&spans, trace)
            .unwrap_or_else(|| panic!("no server span of trace {trace}: {spans:#?}"));
        assert_eq!(server.name, format!("GET {ROUTE}"));
        assert_eq!(
            hex(&server.parent_span_id),
            *parent,
            "the caller's span is the parent"
        );
        assert_eq!(
            attribute(&server, "http.request.method").as_deref(),
            Some("GET")
        );
        assert_eq!(attribute(&server, "http.route").as_deref(), Some(ROUTE));
        assert_eq!(
            attribute(&server, "http.response.status_code"),
            Some(status.to_string())
        );
        assert_eq!(attribute(&server, "url.scheme").as_deref(), Some("http"));
        let error = server.status.as_ref().is_some_and(|s| s.code == 2);
        assert_eq!(error, *status >= 500, "{status}: {:?}", server.status);
        assert_eq!(names(trace, &server.span_id), children.to_vec(), "{status}");
        // The statement's span says which database answered.
        let statement = spans
            .iter()
            .find(|s| hex(&s.trace_id) == *trace && s.name == "SELECT getLinkedCustomer")
            .expect("a statement span");
        assert_eq!(
            attribute(statement, "db.system.name").as_deref(),
            Some("postgresql")
        );
        assert_eq!(attribute(statement, "database").as_deref(), Some("primary"));
        // The trace id is in the request's log line.
        let logged = std::fs::read_to_string(&log).expect("log");
        assert!(logged.contains(&format!("trace_id={trace}")), "{logged}");
    }
    // A password check waits for a thread and runs argon2, below its span.
    let check = spans
        .iter()
        .find(|s| hex(&s.trace_id) == ok.0 && s.name == "password check")
        .expect("the 200's password check");
    assert_eq!(
        names(&ok.0, &check.span_id),
        [
            "password check: argon2",
            "password check: waiting for a thread"
        ]
    );

    assert!(
        spans.iter().all(|s| hex(&s.trace_id) != unsampled.0),
        "spans of an unsampled trace were exported"
    );

    // Nothing secret in any span: no password, no Authorization, no department token, no
    // customer data.
    let everything = format!("{spans:?}{resource:?}");
    for secret in [
        PW,
        "wrong-password-1",
        "Basic ",
        "dGVzdA",
        "authorization",
        "dept-north",
        "Maria",
        "5b8e7c2a",
        "1001",
    ] {
        assert!(!everything.contains(secret), "{secret:?} in the spans");
    }
    // The canary of that scan: what it looks at does hold the spans' text.
    assert!(everything.contains("SELECT getLinkedCustomer") && everything.contains(ROUTE));
}

/// `OTEL_SDK_DISABLED=true` keeps traces off even with an endpoint; and with none set (every
/// other test) there is nothing to send to.
#[tokio::test]
async fn traces_are_off_when_disabled() {
    let (endpoint, received) = receiver().await;
    let db = TestDb::new(Backend::Sqlite).await;
    add_reader(&db.url);
    let served = Served::start_with(
        &db.url,
        &["--no-demo"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        None,
    );
    assert_eq!(traced(&served.base, PW, 9).await.2, 204);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(received.lock().expect("lock").is_empty());
}
