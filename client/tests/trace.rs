//! With the feature `trace`, a request carries the caller's trace: its `traceparent` names the
//! trace and span of the caller's `tracing` span; outside any trace, nothing is added. The
//! server here is a socket that keeps each request's head and answers `204`.

use linked_customer_client::{Client, Entity};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// A server that answers every request `204` and sends its head (lower case) to the test.
async fn recorder() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (heads, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buffer.drain(..end + 4).collect();
                        let _ = heads.send(String::from_utf8_lossy(&head).to_lowercase());
                        let answer = "HTTP/1.1 204 No Content\r\n\r\n";
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (base, received)
}

#[tokio::test]
async fn a_request_carries_the_callers_trace_and_no_other() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("caller")));
    let _default = tracing::subscriber::set_default(subscriber);
    let (base, mut heads) = recorder().await;
    let client = Client::new(&base).with_basic_auth("u", "u-password-1");

    let span = tracing::info_span!("caller");
    let context = span.context();
    let caller = context.span().span_context().clone();
    assert!(caller.is_valid());
    let answer = client
        .get_linked_customer("dept-north", Entity::Order, 1001)
        .instrument(span)
        .await;
    assert!(matches!(answer, Ok(None)), "{answer:?}");
    let head = heads.recv().await.expect("a request");
    let expected = format!(
        "traceparent: 00-{}-{}-01",
        caller.trace_id(),
        caller.span_id()
    );
    assert!(head.contains(&expected), "{expected} not in:\n{head}");

    // Outside any span: no trace context is made up.
    let answer = client
        .get_linked_customer("dept-north", Entity::Order, 1001)
        .await;
    assert!(matches!(answer, Ok(None)), "{answer:?}");
    let head = heads.recv().await.expect("a request");
    assert!(!head.contains("traceparent"), "{head}");
}
