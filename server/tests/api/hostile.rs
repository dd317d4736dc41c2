//! Hostile input, written to the socket byte for byte (no well-behaved client in between):
//! every request gets a 4xx (in the error envelope when it reaches the operation) or a closed
//! connection, never a 5xx, a hang or a dead server, and a normal request beside it is served
//! promptly. The same for the TLS port (garbage handshakes, stalled handshakes, plain HTTP):
//! `tls.rs`.

use crate::helpers::{Backend, DEPARTMENT, PASSWORD, TestApp, USER, spawn_app};
use base64::Engine;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What a hostile request must get.
#[derive(Debug)]
enum Expect {
    /// This status, with these error codes in the envelope.
    Envelope(u16, &'static [i64]),
    /// Any 4xx, or the connection closed without an answer.
    Refused,
    /// Any answer below 500 (the request is odd but valid, such as HTTP/1.0 without `Host`).
    Answered,
}

/// The server's answer to one raw request: its status line's code (none when the connection
/// closed without one), and its whole text.
struct Answer {
    status: Option<u16>,
    text: Vec<u8>,
}

/// Sends `request` on a new connection and reads until the server closes it. A read that
/// times out with nothing received is a hang and fails the test.
fn exchange(address: &str, request: &[u8], context: &str) -> Answer {
    let mut socket = TcpStream::connect(address).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // The server may refuse a huge request before reading all of it: a failed write is fine,
    // what matters is what comes back.
    let _ = socket.write_all(request);
    let mut text = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => text.extend_from_slice(&buffer[..read]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(!text.is_empty(), "{context}: no answer within 5 s (a hang)");
                break;
            }
            // A reset after the server refused a request it did not read to the end.
            Err(_) => break,
        }
    }
    let status = text
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| text.strip_prefix(b"HTTP/1.0 "))
        .and_then(|rest| std::str::from_utf8(rest.get(..3)?).ok())
        .and_then(|code| code.parse().ok());
    Answer { status, text }
}

fn basic(userpass: &[u8]) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(userpass)
    )
}

fn good_authorization() -> String {
    basic(format!("{USER}:{PASSWORD}").as_bytes())
}

/// `GET path` over HTTP/1.1 with `Connection: close` and these header lines.
fn get(path: &str, headers: &[Vec<u8>]) -> Vec<u8> {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n").into_bytes();
    for header in headers {
        request.extend_from_slice(header);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request
}

fn authorization(value: &[u8]) -> Vec<u8> {
    [b"Authorization: ".as_slice(), value].concat()
}

/// A lookup with the good credentials and these raw path segments.
fn lookup(department: &str, entity: &str, id: &str) -> Vec<u8> {
    get(
        &TestApp::customer_path(department, entity, id),
        &[authorization(good_authorization().as_bytes())],
    )
}

fn corpus() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let order = TestApp::customer_path(DEPARTMENT, "ORDER", "1001");
    vec![
        // Authorization
        (
            "another scheme",
            get(&order, &[authorization(b"Bearer abc.def")]),
            Expect::Envelope(401, &[2001]),
        ),
        (
            "bad base64",
            get(&order, &[authorization(b"Basic !!!")]),
            Expect::Envelope(401, &[2001]),
        ),
        (
            "no colon",
            get(&order, &[authorization(basic(b"reader").as_bytes())]),
            Expect::Envelope(401, &[2001]),
        ),
        (
            "non-UTF-8 credentials",
            get(
                &order,
                &[authorization(basic(b"re\xffader:\xfe\xfe").as_bytes())],
            ),
            Expect::Envelope(401, &[2001]),
        ),
        (
            "non-UTF-8 header bytes",
            get(&order, &[authorization(b"Basic \xff\xfe\xfd")]),
            Expect::Envelope(401, &[2001]),
        ),
        (
            "a NUL in the username",
            get(&order, &[authorization(basic(b"rea\0der:pw").as_bytes())]),
            Expect::Envelope(401, &[2001]),
        ),
        (
            "64 KiB of credentials",
            get(
                &order,
                &[authorization(
                    basic(format!("{USER}:{}", "p".repeat(48 * 1024)).as_bytes()).as_bytes(),
                )],
            ),
            Expect::Refused,
        ),
        (
            "several schemes in one header",
            get(&order, &[authorization(b"Basic Og==, Bearer x")]),
            Expect::Envelope(401, &[2001]),
        ),
        // Path parameters
        (
            "an encoded slash in entityId",
            lookup(DEPARTMENT, "ORDER", "10%2F01"),
            Expect::Envelope(400, &[1003]),
        ),
        (
            "an encoded NUL in entityId",
            lookup(DEPARTMENT, "ORDER", "1%0001"),
            Expect::Envelope(400, &[1003]),
        ),
        (
            "an encoded NUL in the department",
            lookup("dept%00north", "ORDER", "1001"),
            Expect::Envelope(400, &[1001]),
        ),
        (
            "an encoded slash in the department",
            lookup("dept%2Fnorth", "ORDER", "1001"),
            Expect::Envelope(400, &[1001]),
        ),
        (
            "percent-encoded bytes that are not UTF-8",
            lookup("dept%FFnorth", "ORDER", "1001"),
            Expect::Envelope(400, &[1001]),
        ),
        (
            // Refused by the HTTP parser: a request line is ASCII.
            "raw UTF-8 in the department",
            lookup("d\u{e9}pt-north", "ORDER", "1001"),
            Expect::Refused,
        ),
        (
            "an encoded entity",
            lookup(DEPARTMENT, "%4F%52%44%45%52%00", "1001"),
            Expect::Envelope(400, &[1002]),
        ),
        (
            "10,000 digits",
            lookup(DEPARTMENT, "ORDER", &"1".repeat(10_000)),
            Expect::Envelope(400, &[1003]),
        ),
        (
            "int64 overflow",
            lookup(DEPARTMENT, "ORDER", "9223372036854775808"),
            Expect::Envelope(400, &[1003]),
        ),
        (
            "a plus sign",
            lookup(DEPARTMENT, "ORDER", "+1001"),
            Expect::Envelope(400, &[1003]),
        ),
        (
            "a minus sign",
            lookup(DEPARTMENT, "ORDER", "-1001"),
            Expect::Envelope(400, &[1003]),
        ),
        (
            "a fraction",
            lookup(DEPARTMENT, "ORDER", "1001.0"),
            Expect::Envelope(400, &[1003]),
        ),
        (
            "an exponent",
            lookup(DEPARTMENT, "ORDER", "1e3"),
            Expect::Envelope(400, &[1003]),
        ),
        (
            "a 100 KB URL",
            lookup(DEPARTMENT, "ORDER", &"9".repeat(100_000)),
            Expect::Refused,
        ),
        // The request itself
        (
            "an unknown method",
            format!("BREW {order} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .into_bytes(),
            Expect::Envelope(405, &[4005]),
        ),
        (
            "Content-Length and Transfer-Encoding together",
            format!(
                "POST {order} HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            )
            .into_bytes(),
            Expect::Refused,
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST {order} HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\n\
                 Content-Length: 2\r\n\r\nab"
            )
            .into_bytes(),
            Expect::Refused,
        ),
        (
            "HTTP/1.0 without Host",
            format!(
                "GET {order} HTTP/1.0\r\nAuthorization: {}\r\n\r\n",
                good_authorization()
            )
            .into_bytes(),
            Expect::Answered,
        ),
        (
            "a header line without a colon",
            get(&order, &[b"Authorization Basic abc".to_vec()]),
            Expect::Refused,
        ),
        (
            "a NUL in a header value",
            get(&order, &[b"X-Note: a\0b".to_vec()]),
            Expect::Refused,
        ),
        (
            "bytes that are not HTTP",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            Expect::Refused,
        ),
        (
            "an empty request line",
            b"\r\n\r\n\r\n".to_vec(),
            Expect::Refused,
        ),
    ]
}

fn check(answer: &Answer, expect: &Expect, name: &str) {
    let shown = String::from_utf8_lossy(&answer.text[..answer.text.len().min(400)]).into_owned();
    match (expect, answer.status) {
        (_, Some(status)) if status >= 500 => panic!("{name}: a {status}: {shown}"),
        (Expect::Envelope(status, codes), Some(got)) => {
            assert_eq!(got, *status, "{name}: {shown}");
            let body = answer
                .text
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|at| &answer.text[at + 4..])
                .unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(body)
                .unwrap_or_else(|err| panic!("{name}: not the envelope ({err}): {shown}"));
            let got: Vec<i64> = body["errors"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no errors array: {shown}"))
                .iter()
                .filter_map(|error| error["errorCode"].as_i64())
                .collect();
            assert_eq!(got, *codes, "{name}: {shown}");
        }
        (Expect::Envelope(..), None) => panic!("{name}: closed without an answer"),
        (Expect::Refused, Some(status)) => {
            assert!((400..500).contains(&status), "{name}: {shown}")
        }
        (Expect::Refused, None) => {}
        (Expect::Answered, Some(_)) => {}
        (Expect::Answered, None) => panic!("{name}: closed without an answer"),
    }
}

/// The normal request beside the hostile ones: answered 200 within a second.
async fn served_promptly(app: &TestApp, context: &str) {
    let started = Instant::now();
    let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
    assert_eq!(response.status(), 200, "{context}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{context}: a normal request took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn each_hostile_request_gets_a_4xx_or_a_closed_connection() {
    let app = spawn_app(Backend::Sqlite).await;
    let address = app.address.trim_start_matches("http://").to_string();
    served_promptly(&app, "before").await;
    for (name, request, expect) in corpus() {
        let address = address.clone();
        let answer = tokio::task::spawn_blocking(move || exchange(&address, &request, name))
            .await
            .expect("client thread");
        check(&answer, &expect, name);
        served_promptly(&app, &format!("after {name}")).await;
    }
}

/// Hundreds of connections that send nothing, or a byte now and then, beside normal traffic.
#[tokio::test]
async fn idle_and_slow_connections_do_not_delay_normal_requests() {
    let app = spawn_app(Backend::Sqlite).await;
    let address = app.address.trim_start_matches("http://").to_string();
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&address).expect("idle connection"))
        .collect();
    let slow: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&address).expect("slow connection"))
        .collect();
    let dribble = std::thread::spawn(move || {
        let head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ";
        let mut slow = slow;
        for byte in head.iter().cycle().take(30) {
            for socket in &mut slow {
                let _ = socket.write_all(&[*byte]);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        slow
    });
    for round in 0..10 {
        served_promptly(&app, &format!("round {round}")).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let slow = dribble.join().expect("dribbling thread");
    drop((idle, slow));
    served_promptly(&app, "after").await;
}
