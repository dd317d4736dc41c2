//! The Rust client of the linked-customer API: which customer, with their vehicles, a department
//! has linked to an order, appointment, message thread or payment (`getLinkedCustomer`).
//!
//! The types and the request code are generated from `openapi.yaml` by progenitor
//! ([`generated`], regenerated with `cargo xtask codegen`); this crate adds only construction,
//! HTTP Basic authentication and answers shaped for the caller: `Ok(Some(..))` for `200`,
//! `Ok(None)` for `204`, and [`Error::Api`] with the status and the parsed error envelope for
//! `400`, `401`, `500` and `503` (the server is saturated: try again after its `Retry-After`
//! seconds). HTTPS works out of the box (rustls, with the platform's trusted roots); a server
//! whose certificate comes from a private CA is trusted with [`Client::with_ca_certificate_pem`].
//!
//! ```no_run
//! use linked_customer_client::{Client, Entity, Error};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Error> {
//!     // The server root: the client adds the API's `/customer` base itself.
//!     let root = "http://127.0.0.1:8080";
//!     let subscriber = Client::new(root).with_basic_auth("demo", "demo-password");
//!     let anonymous = Client::new(root);
//!
//!     // `Entity` also parses from its wire name: "ORDER".parse::<Entity>().
//!     let calls = [
//!         (&subscriber, Entity::Order, 1001), // 200: a customer is linked
//!         (&subscriber, Entity::Order, 9999), // 204: none is linked
//!         (&anonymous, Entity::Order, 1001),  // 401: no credentials
//!     ];
//!     for (client, entity, id) in calls {
//!         match client.get_linked_customer("demo-department", entity, id).await {
//!             Ok(Some(found)) => println!(
//!                 "{entity} {id}: customer {} {}, {} vehicle(s)",
//!                 found.customer.id,
//!                 found.customer.last_name.as_deref().unwrap_or("(no name)"),
//!                 found.vehicles.len(),
//!             ),
//!             Ok(None) => println!("{entity} {id}: no customer is linked"),
//!             // 400, 401 and 500 carry the status and the parsed error envelope.
//!             Err(Error::Api { status, body, .. }) => {
//!                 for error in &body.errors {
//!                     println!("{entity} {id}: {status} {} {}", error.error_code, error.error_title);
//!                 }
//!             }
//!             // Connection, TLS or timeout problems, answers that are not this API's, and
//!             // `Error::Config` from a client that could not be built (a bad base URL).
//!             Err(other) => return Err(other),
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Against a server started with `cargo run -p linked-customer-server` (which loads demo data
//! into a new database), the example prints:
//!
//! ```text
//! ORDER 1001: customer 700001 Okafor, 2 vehicle(s)
//! ORDER 9999: no customer is linked
//! ORDER 1001: 401 2001 MISSING_CREDENTIALS
//! ```
//!
//! Building a client never fails: a problem such as a base URL that is not an absolute `http` or
//! `https` URL, or a CA certificate that does not parse, is kept, and every call of that client
//! returns it as [`Error::Config`]. A program that wants to report it up front, as a usage
//! error, asks [`Client::check`].
//!
//! Every type of the API is re-exported at the crate root ([`CustomerWithVehicles`],
//! [`Entity`], [`ErrorResponse`], ...), except the envelope's error entry, which is
//! [`types::Error`] so as not to clash with this crate's [`Error`].

#[rustfmt::skip]
pub mod generated;
mod trace_context;

pub use generated::types;
pub use generated::types::*;

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use std::time::Duration;

/// The API's base path below the server root (`servers[0].url` in `openapi.yaml`).
pub const API_BASE_PATH: &str = "/customer";

/// The connect and total timeout of a request (progenitor's default).
const TIMEOUT: Duration = Duration::from_secs(15);

/// How long an idle connection is kept for the next request: less than the server's
/// keep-alive (5 s by default), so that the client never sends a request on a connection that
/// the server is closing at that moment (which fails as a transport error).
const IDLE: Duration = Duration::from_secs(4);

/// A client of one linked-customer server. Cheap to clone; clones share the connection pool.
///
/// A client that could not be built (see [`Client::new`]) still exists: it keeps the reason,
/// and every call returns it as [`Error::Config`].
#[derive(Clone, Debug)]
pub struct Client {
    root: String,
    /// What the HTTP client is built from, kept so that each builder method adds to it.
    settings: Settings,
    /// The generated client, or why it could not be built (the message of [`Error::Config`]).
    inner: Result<generated::Client, String>,
}

/// The HTTP client's settings that the builder methods change.
#[derive(Clone, Debug, Default)]
struct Settings {
    /// Sent with every request (the credentials).
    headers: HeaderMap,
    /// The only certificate authorities trusted for `https`; `None`: the platform's roots.
    ca_roots: Option<Vec<reqwest::Certificate>>,
}

impl Client {
    /// A client of the server at `base_url`, the server root such as `http://127.0.0.1:8080` or
    /// `https://dealer.example.com` (a trailing slash is fine), without credentials.
    ///
    /// Never fails: when `base_url` is not an absolute `http` or `https` URL, or the HTTP stack
    /// cannot start, the client keeps the reason and every call returns it as
    /// [`Error::Config`]; [`Client::check`] tells it up front.
    pub fn new(base_url: &str) -> Self {
        let root = base_url.trim_end_matches('/').to_string();
        let settings = Settings::default();
        let inner = check_base_url(base_url, &root).and_then(|()| build(&root, &settings));
        Self {
            root,
            settings,
            inner,
        }
    }

    /// The same client, sending HTTP Basic credentials (a service subscriber's username and
    /// password) with every request. The header is marked sensitive, so it is neither logged
    /// nor shown by `{:?}`.
    ///
    /// Never fails: a client that could not be built stays so, with its first reason.
    pub fn with_basic_auth(self, username: &str, password: &str) -> Self {
        self.configure(|settings| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let mut value = HeaderValue::try_from(format!("Basic {token}"))
                .map_err(|err| format!("basic credentials: {err}"))?;
            value.set_sensitive(true);
            settings.headers.insert(AUTHORIZATION, value);
            Ok(())
        })
    }

    /// The same client, trusting for `https` the certificate authorities in `pem` (one CA
    /// certificate, or several in one PEM bundle; called again, the CAs add up): for a server
    /// whose certificate comes from a private CA.
    ///
    /// These CAs **replace** the platform's trusted roots rather than join them: a client meant
    /// for a server of a private CA then accepts no other server, not even one with a public
    /// certificate for the same name. A client that never calls this trusts the platform's
    /// roots, as a server with a public certificate needs. Either way the certificate must be
    /// valid for the base URL's host name; TLS is rustls (1.2 and 1.3).
    ///
    /// Never fails: PEM without a certificate, or with one that does not parse, leaves a client
    /// that could not be built, which [`Client::check`] and every call report as
    /// [`Error::Config`].
    pub fn with_ca_certificate_pem(self, pem: &[u8]) -> Self {
        self.configure(|settings| {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|err| format!("CA certificate: {err}"))?;
            if certificates.is_empty() {
                return Err("CA certificate: the PEM holds no certificate".to_string());
            }
            settings
                .ca_roots
                .get_or_insert_with(Vec::new)
                .extend(certificates);
            Ok(())
        })
    }

    /// Applies `change` to the settings and builds the client again; a client that could not
    /// be built stays so, with its first reason.
    fn configure(mut self, change: impl FnOnce(&mut Settings) -> Result<(), String>) -> Self {
        if self.inner.is_ok() {
            self.inner =
                change(&mut self.settings).and_then(|()| build(&self.root, &self.settings));
        }
        self
    }

    /// `Ok(())` when the client was built, or the [`Error::Config`] that each of its calls
    /// would return (a bad base URL, for instance). Calls need not be preceded by it; it is for
    /// programs that report a configuration problem before doing anything else.
    pub fn check(&self) -> Result<(), Error> {
        self.generated().map(|_| ())
    }

    /// The customer, with their vehicles, that the department has linked to the entity:
    /// `Ok(Some(..))` for `200`, `Ok(None)` when none is linked (`204`).
    ///
    /// The parameters are sent as given, so a malformed token or an `entity_id` below 1 gets
    /// the server's `400` ([`Error::Api`] with error code 1001 or 1003). `401`, `500` and `503`
    /// are [`Error::Api`] too. Warnings in a `200` answer are dropped: this version defines none
    /// (use [`Client::generated`] to see the whole answer).
    pub async fn get_linked_customer(
        &self,
        department_token: &str,
        entity: Entity,
        entity_id: i64,
    ) -> Result<Option<CustomerWithVehicles>, Error> {
        let inner = self.generated()?;
        let token = department_token.to_string();
        match inner.get_linked_customer(&token, entity, &entity_id).await {
            Ok(answer) => Ok(Some(answer.into_inner().customer_with_vehicles)),
            Err(err) => no_customer_or_error(err).await,
        }
    }

    /// The generated client underneath, for whole answers with their headers; or, for a
    /// client that could not be built, the [`Error::Config`] that every call returns.
    pub fn generated(&self) -> Result<&generated::Client, Error> {
        self.inner
            .as_ref()
            .map_err(|message| Error::Config(message.clone()))
    }
}

/// Why `base_url` is not the root of a server this client can call, if it is not.
fn check_base_url(base_url: &str, root: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(root).map_err(|err| format!("base URL `{base_url}`: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "base URL `{base_url}`: the scheme must be http or https"
        ));
    }
    Ok(())
}

/// The generated client below the server `root`, with these settings.
fn build(root: &str, settings: &Settings) -> Result<generated::Client, String> {
    let mut http = reqwest::Client::builder()
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .pool_idle_timeout(IDLE)
        .user_agent(concat!(
            "linked-customer-client/",
            env!("CARGO_PKG_VERSION")
        ))
        .default_headers(settings.headers.clone());
    if let Some(roots) = &settings.ca_roots {
        http = http.tls_certs_only(roots.iter().cloned());
    }
    // reqwest says only "builder error"; the reason (a CA certificate that does not parse, say)
    // is its source.
    let http = http
        .build()
        .map_err(|err| match std::error::Error::source(&err) {
            Some(reason) => format!("building the HTTP client: {err}: {reason}"),
            None => format!("building the HTTP client: {err}"),
        })?;
    Ok(generated::Client::new_with_client(
        &format!("{root}{API_BASE_PATH}"),
        http,
    ))
}

/// The generated client reports a `204` as an unexpected response, because the `204` had to be
/// removed from the spec before generation (see `xtask/src/codegen.rs`); it means "none linked".
async fn no_customer_or_error(
    err: generated::Error<ErrorResponse>,
) -> Result<Option<CustomerWithVehicles>, Error> {
    use generated::Error as Generated;
    match err {
        Generated::UnexpectedResponse(response) if response.status() == StatusCode::NO_CONTENT => {
            Ok(None)
        }
        Generated::ErrorResponse(answer) => Err(Error::Api {
            status: answer.status().as_u16(),
            request_id: request_id(answer.headers()),
            body: answer.into_inner(),
        }),
        // Every error answer of this server carries the envelope (a 404 from a base URL that is
        // not the server root, for instance); anything else is someone else's answer.
        Generated::UnexpectedResponse(response) => {
            let status = response.status().as_u16();
            let request_id = request_id(response.headers());
            let bytes = response.bytes().await.map_err(Error::Transport)?;
            match serde_json::from_slice::<ErrorResponse>(&bytes) {
                Ok(body) => Err(Error::Api {
                    status,
                    body,
                    request_id,
                }),
                Err(_) => Err(Error::UnexpectedStatus(status)),
            }
        }
        Generated::CommunicationError(err)
        | Generated::ResponseBodyError(err)
        | Generated::InvalidUpgrade(err) => Err(Error::Transport(err)),
        Generated::InvalidResponsePayload(_, err) => Err(Error::InvalidResponse(err.to_string())),
        // Neither can happen here (plain positional arguments, no hooks); kept, not dropped.
        Generated::InvalidRequest(message) | Generated::Custom(message) => Err(
            Error::InvalidResponse(format!("the request could not be made: {message}")),
        ),
    }
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

/// Why a call did not produce an answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The server refused the request with its error envelope: `400` (a malformed parameter,
    /// one entry per parameter at fault), `401` (credentials missing, wrong or not granted on
    /// the department), `500` (the server failed; quote `request_id` when reporting it), `503`
    /// (the server is saturated: try again after its `Retry-After` seconds), or another
    /// status that carries the envelope (such as `404` for a wrong base URL).
    Api {
        status: u16,
        body: ErrorResponse,
        /// The `x-request-id` response header, when there was one.
        request_id: Option<String>,
    },
    /// An answer whose status the API does not document and whose body is not the error
    /// envelope, such as a proxy's `502` page.
    UnexpectedStatus(u16),
    /// An answer with a documented status whose body does not match the API.
    InvalidResponse(String),
    /// The request was not sent or the answer not read: connection, TLS, timeout.
    Transport(reqwest::Error),
    /// The client could not be built: a bad base URL, or the HTTP stack failed to start. Every
    /// call of such a client returns it, as does [`Client::check`].
    Config(String),
}

impl Error {
    /// The HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::UnexpectedStatus(status) => Some(*status),
            Error::Transport(err) => err.status().map(|status| status.as_u16()),
            Error::InvalidResponse(_) | Error::Config(_) => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Api {
                status,
                body,
                request_id,
            } => {
                write!(f, "the server answered {status}")?;
                for (index, error) in body.errors.iter().enumerate() {
                    let separator = if index == 0 { ": " } else { "; " };
                    write!(
                        f,
                        "{separator}{} {}: {}",
                        error.error_code, error.error_title, error.error_message
                    )?;
                }
                if let Some(id) = request_id {
                    write!(f, " (x-request-id {id})")?;
                }
                Ok(())
            }
            Error::UnexpectedStatus(status) => write!(
                f,
                "the server answered {status}, which the API does not document \
                 (is the base URL the server root?)"
            ),
            Error::InvalidResponse(message) => {
                write!(f, "the server's answer does not match the API: {message}")
            }
            Error::Transport(err) => write!(f, "could not reach the server: {err}"),
            Error::Config(message) => write!(f, "could not build the client: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The reqwest error's own message is already part of ours.
            Error::Transport(err) => std::error::Error::source(err),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// Answers one request with `head` (status line and headers) and `body`, and hands back the
    /// request it received.
    fn serve_once(head: &str, body: &str) -> (String, std::thread::JoinHandle<String>) {
        let response = format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a local port");
        let root = format!("http://{}/", listener.local_addr().expect("local address"));
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accepting the client");
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let read = stream.read(&mut buffer).expect("reading the request");
                assert!(read > 0, "the client closed the connection early");
                request.extend_from_slice(&buffer[..read]);
            }
            stream.write_all(response.as_bytes()).expect("answering");
            String::from_utf8_lossy(&request).into_owned()
        });
        (root, handle)
    }

    #[test]
    fn the_base_path_is_the_one_in_the_spec() {
        let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml"))
            .expect("reading openapi.yaml");
        let spec: serde_json::Value = serde_saphyr::from_str(&spec).expect("parsing openapi.yaml");
        assert_eq!(spec["servers"][0]["url"].as_str(), Some(API_BASE_PATH));
    }

    #[tokio::test]
    async fn a_bad_base_url_makes_every_call_a_config_error() {
        for bad in ["127.0.0.1:8080", "/customer", "ftp://example.com", ""] {
            let client = Client::new(bad).with_basic_auth("user", "pa:ss");
            let answer = client.get_linked_customer("d", Entity::Order, 1).await;
            let Err(Error::Config(message)) = answer else {
                panic!("{bad:?} was accepted: {answer:?}");
            };
            assert!(
                message.starts_with(&format!("base URL `{bad}`: ")),
                "{message}"
            );
            // The same message from every call, and from check() and generated().
            let again = client.get_linked_customer("d", Entity::Order, 1).await;
            assert!(
                matches!(&again, Err(Error::Config(m)) if *m == message),
                "{again:?}"
            );
            assert!(matches!(client.check(), Err(Error::Config(m)) if m == message));
            assert!(matches!(client.generated(), Err(Error::Config(m)) if m == message));
        }
        let good = Client::new("https://dealer.example.com/").with_basic_auth("user", "pa:ss");
        assert!(good.check().is_ok());
        assert_eq!(
            good.generated().map(generated::ClientInfo::baseurl).ok(),
            Some("https://dealer.example.com/customer")
        );
    }

    #[tokio::test]
    async fn sends_credentials_and_parameters_as_given_below_the_api_base() {
        let (root, server) = serve_once("HTTP/1.1 204 No Content", "");
        let client = Client::new(&root).with_basic_auth("user", "pa:ss");
        let answer = client
            .get_linked_customer("bad token!", Entity::Thread, -1)
            .await;
        assert!(matches!(answer, Ok(None)), "{answer:?}");
        let request = server.join().expect("the stub server");
        assert!(
            request.starts_with(
                "GET /customer/v2/department/bad%20token!/entity/THREAD/-1/customer HTTP/1.1\r\n"
            ),
            "{request}"
        );
        // base64("user:pa:ss")
        assert!(
            request.contains("authorization: Basic dXNlcjpwYTpzcw==\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn an_error_envelope_under_any_status_is_an_api_error() {
        let (root, _server) = serve_once(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nx-request-id: r-1",
            r#"{"errors":[{"errorCode":4004,"errorTitle":"NOT_FOUND","errorMessage":"No."}],"warnings":[]}"#,
        );
        let client = Client::new(&root);
        match client.get_linked_customer("d", Entity::Order, 1).await {
            Err(Error::Api {
                status: 404,
                body,
                request_id,
            }) => {
                assert_eq!(body.errors[0].error_code, 4004);
                assert_eq!(request_id.as_deref(), Some("r-1"));
            }
            other => panic!("expected a 404 with the envelope, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_foreign_answer_is_an_unexpected_status() {
        let (root, _server) = serve_once(
            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html",
            "<h1>502</h1>",
        );
        let client = Client::new(&root);
        let answer = client.get_linked_customer("d", Entity::Order, 1).await;
        assert!(
            matches!(answer, Err(Error::UnexpectedStatus(502))),
            "{answer:?}"
        );
    }

    #[test]
    fn an_api_error_reads_well() {
        let err = Error::Api {
            status: 400,
            body: ErrorResponse {
                errors: vec![
                    types::Error {
                        error_code: 1001,
                        error_title: "INVALID_DEPARTMENT_TOKEN".into(),
                        error_message: "bad token".into(),
                    },
                    types::Error {
                        error_code: 1003,
                        error_title: "INVALID_ENTITY_ID".into(),
                        error_message: "bad id".into(),
                    },
                ],
                warnings: vec![],
            },
            request_id: Some("abc".into()),
        };
        assert_eq!(
            err.to_string(),
            "the server answered 400: 1001 INVALID_DEPARTMENT_TOKEN: bad token; \
             1003 INVALID_ENTITY_ID: bad id (x-request-id abc)"
        );
        assert_eq!(err.status(), Some(400));
    }

    #[test]
    fn a_ca_certificate_that_does_not_parse_is_a_config_error() {
        let garbled = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        for pem in [&b""[..], b"not PEM at all", garbled] {
            let client = Client::new("https://127.0.0.1:8443")
                .with_ca_certificate_pem(pem)
                .with_basic_auth("user", "pa:ss");
            let checked = client.check();
            assert!(
                matches!(&checked, Err(Error::Config(m)) if m.contains("certificate")),
                "{:?}: {checked:?}",
                String::from_utf8_lossy(pem)
            );
        }
    }

    #[test]
    fn credentials_do_not_show_in_debug_output() {
        let client = Client::new("http://127.0.0.1:8080").with_basic_auth("user", "pa:ss");
        let shown = format!("{client:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("dXNlcjpwYTpzcw=="), "{shown}");
    }

    #[test]
    fn errors_can_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Error>();
        send_sync::<Client>();
    }
}
