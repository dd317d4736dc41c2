//! TLS on the listener, with certificates made here (rcgen): the right client gets its answer,
//! the wrong CA or host name is refused, ALPN settles on HTTP/1.1, plain HTTP and an HTTP/2
//! preface are refused without a 5xx, and a renewed certificate reaches new connections on
//! SIGHUP while an open one finishes.

use crate::cli::{BIN, PW, Served, add_reader, import_fixture, signal};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

const PATH: &str = "/customer/v2/department/dept-north/entity/ORDER/1001/customer";

/// A certificate authority made for one test.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for `names` and its key, both PEM.
    pub fn issue(&self, names: &[&str], common_name: &str) -> (String, String) {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// A server on loopback with TLS from `ca`, the fixture imported and subscriber `u`.
pub struct TlsServer {
    pub served: Served,
    pub port: u16,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    pub fn start(ca: &Ca, extra: &[&str]) -> TlsServer {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("lc.db").display());
        import_fixture(&url, dir.path());
        add_reader(&url);
        let (cert_pem, key_pem) = ca.issue(&["localhost", "127.0.0.1"], "first");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, cert_pem).expect("cert");
        std::fs::write(&key, key_pem).expect("key");
        let mut args = vec![
            "--no-demo",
            "--tls-cert",
            path(&cert),
            "--tls-key",
            path(&key),
        ];
        args.extend(extra);
        let served = Served::start(&url, &args);
        let port = served
            .base
            .strip_prefix("https://127.0.0.1:")
            .unwrap_or_else(|| panic!("not an https base: {}", served.base))
            .parse()
            .expect("port");
        TlsServer {
            served,
            port,
            cert,
            key,
            _dir: dir,
        }
    }

    pub fn url(&self, host: &str) -> String {
        format!("https://{host}:{}{PATH}", self.port)
    }
}

fn path(file: &std::path::Path) -> &str {
    file.to_str().expect("utf8")
}

/// A client that trusts `ca` only.
pub fn client(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA")])
        .resolve("other.example", "127.0.0.1:0".parse().expect("address"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A TLS connection to the server offering `alpn`, trusting `ca` only.
async fn connect(
    ca: &str,
    port: u16,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).expect("CA");
    roots.add(der).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

use rustls::pki_types::pem::PemObject;

/// One request on an open connection; the status line's code.
async fn request(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    basic: &str,
) -> u16 {
    let head =
        format!("GET {PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {basic}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut buffer = vec![0u8; 16 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let text = String::from_utf8_lossy(&buffer[..read]);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

fn basic_u() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("u:{PW}"))
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_gets_the_answer_over_tls() {
    let ca = Ca::new("test CA");
    let server = TlsServer::start(&ca, &[]);
    assert!(
        server.served.banner.contains("TLS: certificate"),
        "{}",
        server.served.banner
    );
    let response = client(&ca.pem)
        .get(server.url("localhost"))
        .basic_auth("u", Some(PW))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["customerWithVehicles"]["customer"]["id"], 700001);

    // Another CA, another host name: refused by the client before any request is sent.
    let other = Ca::new("another CA");
    let refused = client(&other.pem).get(server.url("localhost")).send().await;
    assert!(
        refused.is_err(),
        "a certificate of an untrusted CA was accepted"
    );
    let wrong_name = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("CA")])
        .resolve(
            "other.example",
            format!("127.0.0.1:{}", server.port)
                .parse()
                .expect("address"),
        )
        .build()
        .expect("client")
        .get(server.url("other.example"))
        .send()
        .await;
    assert!(
        wrong_name.is_err(),
        "a certificate for another name was accepted"
    );
}

/// ALPN: HTTP/1.1 when offered with h2; h2 alone finds no protocol in common.
#[tokio::test]
async fn alpn_settles_on_http_1_1_and_never_h2() {
    let ca = Ca::new("test CA");
    let server = TlsServer::start(&ca, &[]);
    let mut both = connect(&ca.pem, server.port, &[b"h2", b"http/1.1"])
        .await
        .expect("handshake");
    assert_eq!(both.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(request(&mut both, &basic_u()).await, 200);

    let h2_only = connect(&ca.pem, server.port, &[b"h2"]).await;
    assert!(h2_only.is_err(), "a handshake offering only h2 succeeded");

    // The HTTP/2 preface on an HTTP/1.1 connection: a 4xx or a closed connection, never 5xx.
    let mut preface = connect(&ca.pem, server.port, &[]).await.expect("handshake");
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), preface.read_to_end(&mut answer))
        .await
        .expect("closed within 5 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer:?}"
    );
    // And the server still answers.
    let mut after = connect(&ca.pem, server.port, &[]).await.expect("handshake");
    assert_eq!(request(&mut after, &basic_u()).await, 200);
}

/// Plain HTTP sent to the TLS port: refused (no HTTP answer, certainly no 5xx), promptly.
#[test]
fn plain_http_on_the_tls_port_is_refused() {
    let ca = Ca::new("test CA");
    let server = TlsServer::start(&ca, &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    assert!(
        !answer.starts_with(b"HTTP/1.1 5"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "served in clear");
}

/// A renewed certificate, written over the files and announced with SIGHUP: new connections
/// get it, a connection opened before keeps working; a broken pair leaves the current one.
#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_on_sighup() {
    let ca = Ca::new("test CA");
    let server = TlsServer::start(&ca, &["--keep-alive-seconds", "60"]);
    let peer = |stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        stream
            .get_ref()
            .1
            .peer_certificates()
            .expect("a certificate")[0]
            .to_vec()
    };
    let mut old = connect(&ca.pem, server.port, &[]).await.expect("handshake");
    assert_eq!(request(&mut old, &basic_u()).await, 200);
    let first = peer(&old);

    // A pair that does not go together: refused, the first certificate stays.
    let (cert_pem, _) = ca.issue(&["localhost", "127.0.0.1"], "mismatched");
    let (_, other_key) = ca.issue(&["localhost"], "other");
    std::fs::write(&server.cert, &cert_pem).expect("cert");
    std::fs::write(&server.key, other_key).expect("key");
    signal(&server.served.child, "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = connect(&ca.pem, server.port, &[]).await.expect("handshake");
    assert_eq!(
        peer(&still),
        first,
        "a broken pair replaced the certificate"
    );

    let (cert_pem, key_pem) = ca.issue(&["localhost", "127.0.0.1"], "renewed");
    std::fs::write(&server.cert, cert_pem).expect("cert");
    std::fs::write(&server.key, key_pem).expect("key");
    signal(&server.served.child, "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let renewed = loop {
        let mut fresh = connect(&ca.pem, server.port, &[]).await.expect("handshake");
        if peer(&fresh) != first {
            assert_eq!(request(&mut fresh, &basic_u()).await, 200);
            break peer(&fresh);
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(renewed, first);
    // The connection opened before the renewal finishes its work undisturbed.
    assert_eq!(request(&mut old, &basic_u()).await, 200);
    assert_eq!(peer(&old), first);
}

/// Beyond loopback, plain HTTP needs to be said out loud.
#[test]
fn plain_http_off_loopback_needs_a_proxy_that_terminates_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("lc.db").display());
    let refused = std::process::Command::new(BIN)
        .args([
            "serve",
            "--no-demo",
            "--bind",
            "0.0.0.0:0",
            "--database-url",
            &url,
        ])
        .output()
        .expect("serve");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("--tls-terminated-by-proxy"), "{stderr}");

    let served = Served::start(
        &url,
        &[
            "--no-demo",
            "--bind",
            "0.0.0.0:0",
            "--tls-terminated-by-proxy",
        ],
    );
    assert!(
        served.banner.contains("TLS: terminated by a proxy"),
        "{}",
        served.banner
    );
    let loopback = Served::start(&url, &["--no-demo"]);
    assert!(
        loopback
            .banner
            .contains("TLS: none (plain HTTP, on loopback only)"),
        "{}",
        loopback.banner
    );
}

/// A normal request over TLS beside whatever else is going on: answered within a second.
async fn served_within_a_second(ca: &Ca, port: u16, context: &str) {
    let started = Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(1), async {
        let mut stream = connect(&ca.pem, port, &[]).await.expect("handshake");
        request(&mut stream, &basic_u()).await
    })
    .await;
    assert_eq!(
        answered.ok(),
        Some(200),
        "{context}: a normal request was not answered within 1 s ({:?})",
        started.elapsed()
    );
}

/// Sends `bytes` on a new connection to the TLS port and reads until it closes: no HTTP
/// answer (certainly no 5xx), and closed within 5 s.
fn garbage(port: u16, bytes: &[u8], name: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = Instant::now();
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let hung = matches!(&read, Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    assert!(!hung, "{name}: the connection was still open after 5 s");
    assert!(started.elapsed() < Duration::from_secs(5), "{name}");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{name}: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

/// Garbage where a handshake should be, and plain HTTP: refused and closed, and the server
/// goes on serving.
#[tokio::test]
async fn garbage_handshakes_are_closed_and_the_server_goes_on() {
    let ca = Ca::new("test CA");
    let server = TlsServer::start(&ca, &[]);
    let port = server.port;
    let corpus: Vec<(&str, Vec<u8>)> = vec![
        (
            "random bytes",
            (0..512u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("zeros", vec![0u8; 16 * 1024]),
        // A handshake record that claims 16 KiB and brings 5 bytes.
        (
            "a truncated record",
            vec![0x16, 0x03, 0x01, 0x40, 0x00, 1, 0, 0, 0, 0],
        ),
        // A record longer than TLS allows.
        (
            "an oversized record",
            [vec![0x16, 0x03, 0x03, 0xff, 0xff], vec![0; 1024]].concat(),
        ),
        // SSL 2.0's hello.
        (
            "an SSLv2 hello",
            vec![
                0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
            ],
        ),
        (
            "an alert first",
            vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
        ),
        (
            "plain HTTP",
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        (
            "an HTTP/2 preface in clear",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
    ];
    for (name, bytes) in corpus {
        let bytes = bytes.clone();
        tokio::task::spawn_blocking(move || garbage(port, &bytes, name))
            .await
            .expect("garbage");
        served_within_a_second(&ca, port, name).await;
    }
}

/// Connections that start a handshake and stall, beside normal traffic: the normal requests
/// are answered promptly, and the stalled connections are closed by the handshake deadline.
#[tokio::test]
async fn slow_handshakes_do_not_delay_normal_requests() {
    let ca = Ca::new("test CA");
    let server = TlsServer::start(&ca, &[]);
    let port = server.port;
    let stalled: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            // The first bytes of a ClientHello record, and nothing more.
            stream.write_all(&[0x16, 0x03, 0x01]).expect("write");
            stream
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        served_within_a_second(&ca, port, "beside 64 stalled handshakes").await;
    }
    let closed = tokio::task::spawn_blocking(move || {
        stalled
            .into_iter()
            .filter_map(|mut stream| {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut byte = [0u8; 1];
                // Closed (0 bytes, an alert, or a reset) rather than timed out.
                match stream.read(&mut byte) {
                    Err(err)
                        if matches!(
                            err.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        None
                    }
                    _ => Some(()),
                }
            })
            .count()
    })
    .await
    .expect("stalled");
    assert_eq!(closed, 64, "stalled handshakes left open past the deadline");
}
