//! End to end: the real server of this workspace, started in-process on a free port (the
//! server crate's `test_support`) on a fresh SQLite database with
//! `tests/fixtures/customers.jsonl` imported, called through this crate and through its
//! command-line program, `linked-customer-get`. Over TLS, the server is the real binary with a
//! certificate from a CA made in the test (rcgen): the client trusts that CA when told to
//! (`with_ca_certificate_pem`, `--ca-cert`) and refuses the server otherwise.

use anyhow::{Context, Result, bail, ensure};
use linked_customer_client::{Client, Customer, CustomerWithVehicles, Entity, Error, Vehicle};
use linked_customer_server::limits::HttpLimits;
use linked_customer_server::store::DatabaseLimits;
use linked_customer_server::test_support::{self, Backend, Spawned, TestDb};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/customers.jsonl"
);
/// The fixture's first line: every field filled, linked to ORDER 1001 and PAYMENT i64::MAX.
const DEPARTMENT: &str = "e2e-dept";
/// The fixture's second line: only the required fields, linked to ORDER 1001 as well.
const OTHER_DEPARTMENT: &str = "other-dept";

const SCOPE: &str = "customer.search";
/// A subscriber's username and password.
type Credentials = (&'static str, &'static str);
/// Granted `customer.search` on DEPARTMENT.
const GRANTED: Credentials = ("e2e-granted", "granted-secret");
/// Granted `customer.search` on OTHER_DEPARTMENT only.
const OTHER_ONLY: Credentials = ("e2e-other-only", "other-secret");
/// Granted on DEPARTMENT, but not the scope this operation needs.
const WRONG_SCOPE: Credentials = ("e2e-wrong-scope", "scope-secret");

/// The (errorCode, errorTitle) pairs an error answer must carry, sorted by code.
type Expected = &'static [(i32, &'static str)];
const BAD_TOKEN: Expected = &[(1001, "INVALID_DEPARTMENT_TOKEN")];
const BAD_ID: Expected = &[(1003, "INVALID_ENTITY_ID")];
const BAD_TOKEN_AND_ID: Expected = &[
    (1001, "INVALID_DEPARTMENT_TOKEN"),
    (1003, "INVALID_ENTITY_ID"),
];
const MISSING: Expected = &[(2001, "MISSING_CREDENTIALS")];
const REFUSED: Expected = &[(2002, "NOT_AUTHORIZED")];
const FAILED: Expected = &[(5000, "INTERNAL_ERROR")];

#[tokio::test]
async fn get_linked_customer_against_the_real_server() -> Result<()> {
    let server = Server::start().await?;
    let granted = client(&server.root, Some(GRANTED));

    // 200: the whole customer and every vehicle, field for field as imported.
    let expected = fixture(DEPARTMENT)?;
    for (entity, id) in [(Entity::Order, 1001), (Entity::Payment, i64::MAX)] {
        let found = granted.get_linked_customer(DEPARTMENT, entity, id).await;
        let found = found.map_err(|err| err.to_string());
        assert_eq!(found, Ok(Some(expected.clone())), "{entity} {id}");
    }
    // Departments are separate: the same entity, another department, another customer; and
    // optional fields that were never imported stay absent.
    let other = client(&server.root, Some(OTHER_ONLY))
        .get_linked_customer(OTHER_DEPARTMENT, Entity::Order, 1001)
        .await;
    let other = other.map_err(|err| err.to_string());
    assert_eq!(other, Ok(Some(fixture(OTHER_DEPARTMENT)?)));

    // 204: nothing linked (an unknown id, or a known id of another kind of entity).
    for (entity, id) in [(Entity::Order, 9999), (Entity::Thread, 1001)] {
        let none = granted.get_linked_customer(DEPARTMENT, entity, id).await;
        assert!(matches!(none, Ok(None)), "{entity} {id}: {none:?}");
    }

    // 400: every malformed parameter the client can send, one error per parameter at fault.
    let long_token = "d".repeat(65);
    let cases: [(&str, i64, Expected); 8] = [
        ("", 1001, BAD_TOKEN),
        ("bad token!", 1001, BAD_TOKEN),
        ("dept/../x", 1001, BAD_TOKEN),
        ("département", 1001, BAD_TOKEN),
        (&long_token, 1001, BAD_TOKEN),
        (DEPARTMENT, 0, BAD_ID),
        (DEPARTMENT, i64::MIN, BAD_ID),
        ("bad token!", -1, BAD_TOKEN_AND_ID),
    ];
    for (token, id, errors) in cases {
        let answer = granted.get_linked_customer(token, Entity::Order, id).await;
        assert_api_error(answer, 400, errors, &format!("token {token:?}, id {id}"));
    }

    // 401: no credentials, and credentials that are wrong or not granted; all look the same.
    let callers: [(&str, Option<Credentials>, Expected); 5] = [
        ("no credentials", None, MISSING),
        (
            "a wrong password",
            Some((GRANTED.0, "not-the-secret")),
            REFUSED,
        ),
        (
            "an unknown subscriber",
            Some(("nobody", GRANTED.1)),
            REFUSED,
        ),
        (
            "a grant on another department only",
            Some(OTHER_ONLY),
            REFUSED,
        ),
        (
            "a grant without customer.search",
            Some(WRONG_SCOPE),
            REFUSED,
        ),
    ];
    for (who, credentials, errors) in callers {
        let answer = client(&server.root, credentials)
            .get_linked_customer(DEPARTMENT, Entity::Order, 1001)
            .await;
        assert_api_error(answer, 401, errors, who);
    }

    command_line_program(&server.root, &expected)?;

    // 500: the schema broken behind the server's back; the client gets the envelope.
    server.spawned.db.execute("DROP TABLE links").await;
    let answer = granted
        .get_linked_customer(DEPARTMENT, Entity::Order, 1001)
        .await;
    assert_api_error(answer, 500, FAILED, "a broken database");
    Ok(())
}

/// `linked-customer-get` prints the answer and tells each outcome apart by its exit status.
fn command_line_program(root: &str, expected: &CustomerWithVehicles) -> Result<()> {
    let run = |args: &[&str]| get_program(args, &[]);
    let with_auth = |rest: &[&str]| {
        let mut args = vec![
            "--base-url",
            root,
            "--user",
            GRANTED.0,
            "--password",
            GRANTED.1,
        ];
        args.extend_from_slice(rest);
        run(&args)
    };

    let found = with_auth(&[DEPARTMENT, "ORDER", "1001"])?;
    assert_eq!(found.status.code(), Some(0), "{found:?}");
    let printed: CustomerWithVehicles = serde_json::from_slice(&found.stdout)?;
    assert_eq!(&printed, expected);

    let none = with_auth(&[DEPARTMENT, "ORDER", "9999"])?;
    assert_eq!(none.status.code(), Some(3), "{none:?}");
    assert!(String::from_utf8_lossy(&none.stdout).contains("No customer is linked"));

    let bad_id = with_auth(&[DEPARTMENT, "ORDER", "-5"])?;
    assert_eq!(bad_id.status.code(), Some(4), "{bad_id:?}");
    let envelope: linked_customer_client::ErrorResponse = serde_json::from_slice(&bad_id.stdout)?;
    assert_eq!(envelope.errors[0].error_code, 1003);

    let anonymous = run(&["--base-url", root, DEPARTMENT, "ORDER", "1001"])?;
    assert_eq!(anonymous.status.code(), Some(4), "{anonymous:?}");
    let envelope: linked_customer_client::ErrorResponse =
        serde_json::from_slice(&anonymous.stdout)?;
    assert_eq!(envelope.errors[0].error_code, 2001);

    let closed = format!("http://{}", closed_port_address()?);
    let unreachable = run(&["--base-url", &closed, DEPARTMENT, "ORDER", "1001"])?;
    assert_eq!(unreachable.status.code(), Some(5), "{unreachable:?}");

    let usage = run(&["--base-url", root, DEPARTMENT, "CAR", "1001"])?;
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");

    // A bad base URL is a usage error too, reported before any request.
    let bad_url = run(&["--base-url", "127.0.0.1:8080", DEPARTMENT, "ORDER", "1001"])?;
    assert_eq!(bad_url.status.code(), Some(2), "{bad_url:?}");
    assert!(
        String::from_utf8_lossy(&bad_url.stderr).contains("base URL `127.0.0.1:8080`"),
        "{bad_url:?}"
    );
    Ok(())
}

/// Runs `linked-customer-get` with `args` and `env`, and no other settings from this process's
/// environment.
fn get_program(args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    let mut get = Command::new(env!("CARGO_BIN_EXE_linked-customer-get"));
    for variable in [
        "LINKED_CUSTOMER_BASE_URL",
        "LINKED_CUSTOMER_USER",
        "LINKED_CUSTOMER_PASSWORD",
        "LINKED_CUSTOMER_CA_CERT",
    ] {
        get.env_remove(variable);
    }
    get.args(args)
        .envs(env.iter().copied())
        .output()
        .context("running linked-customer-get")
}

fn client(root: &str, credentials: Option<Credentials>) -> Client {
    let client = Client::new(root);
    match credentials {
        Some((username, password)) => client.with_basic_auth(username, password),
        None => client,
    }
}

#[track_caller]
fn assert_api_error(
    answer: Result<Option<CustomerWithVehicles>, Error>,
    status: u16,
    errors: Expected,
    case: &str,
) {
    match answer {
        Err(Error::Api {
            status: got,
            body,
            request_id: _,
        }) => {
            let mut got_errors: Vec<(i32, &str)> = body
                .errors
                .iter()
                .map(|error| (error.error_code, error.error_title.as_str()))
                .collect();
            got_errors.sort();
            assert_eq!((got, got_errors.as_slice()), (status, errors), "{case}");
            assert!(body.warnings.is_empty(), "{case}: {:?}", body.warnings);
            for error in &body.errors {
                assert!(!error.error_message.is_empty(), "{case}: {error:?}");
            }
        }
        other => panic!("{case}: expected a {status} with the error envelope, got {other:?}"),
    }
}

/// What the fixture imported for a department, as the API should answer it.
fn fixture(department: &str) -> Result<CustomerWithVehicles> {
    #[derive(Deserialize)]
    struct Line {
        department: String,
        customer: Customer,
        vehicles: Vec<Vehicle>,
    }
    let text = std::fs::read_to_string(FIXTURE)?;
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let line: Line = serde_json::from_str(line).context("a line of the fixture")?;
        if line.department == department {
            return Ok(CustomerWithVehicles {
                customer: line.customer,
                vehicles: line.vehicles,
            });
        }
    }
    bail!("the fixture has no customer in department {department}")
}

/// The fixture's full customer must fill every property the spec defines, so that the 200
/// comparison covers every field.
#[test]
fn the_fixture_fills_every_field_of_the_spec() -> Result<()> {
    let spec: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../openapi.yaml"
    ))?)?;
    let text = std::fs::read_to_string(FIXTURE)?;
    let first = text.lines().next().context("an empty fixture")?;
    let line: serde_json::Value = serde_json::from_str(first)?;
    ensure!(
        line["department"] == DEPARTMENT,
        "the first line must be the full customer"
    );
    let customer = &line["customer"];
    let mut objects = vec![("Customer", customer)];
    objects.push(("BestTimeToContact", &customer["bestTimeToContact"]));
    for (array, schema) in [
        ("emails", "Email"),
        ("phoneNumbers", "PhoneNumber"),
        ("addresses", "Address"),
    ] {
        let items = customer[array].as_array().context(array)?;
        ensure!(!items.is_empty(), "customer.{array} is empty");
        objects.extend(items.iter().map(|item| (schema, item)));
    }
    let vehicles = line["vehicles"].as_array().context("vehicles")?;
    ensure!(!vehicles.is_empty(), "vehicles is empty");
    objects.extend(vehicles.iter().map(|vehicle| ("Vehicle", vehicle)));

    for (schema, object) in objects {
        let properties = spec["components"]["schemas"][schema]["properties"]
            .as_object()
            .with_context(|| format!("openapi.yaml has no schema {schema}"))?;
        for name in properties.keys() {
            ensure!(
                object.get(name).is_some(),
                "the fixture's {schema} lacks `{name}`: {object}"
            );
        }
    }
    Ok(())
}

/// The server under test: the real server, in-process on a free port through the server
/// crate's `test_support`, on a fresh SQLite database with the fixture imported and the three
/// subscribers added through its store.
struct Server {
    root: String,
    spawned: Spawned,
}

impl Server {
    async fn start() -> Result<Self> {
        let db = TestDb::new(Backend::Sqlite).await;
        let spawned =
            test_support::spawn(db, DatabaseLimits::default(), HttpLimits::default()).await;
        test_support::import(spawned.store.as_ref(), &std::fs::read_to_string(FIXTURE)?).await?;
        let subscribers = [
            (GRANTED, DEPARTMENT, SCOPE),
            (OTHER_ONLY, OTHER_DEPARTMENT, SCOPE),
            (WRONG_SCOPE, DEPARTMENT, "customer.read"),
        ];
        for ((username, password), department, scope) in subscribers {
            test_support::add_subscriber(
                spawned.store.as_ref(),
                username,
                password,
                &[department],
                scope,
            )
            .await;
        }
        Ok(Server {
            root: spawned.address.clone(),
            spawned,
        })
    }
}

/// An address nothing listens on: a port the system just handed out and that was let go.
fn closed_port_address() -> Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Over TLS: a client that trusts the server's CA gets its answers, through the library and the
/// program; one that trusts the platform's roots (no CA given) or another CA is refused by its
/// own TLS (a transport error, no answer).
#[tokio::test]
async fn over_tls_the_ca_certificate_is_trusted_and_nothing_else() -> Result<()> {
    let ca = TestCa::new("linked-customer client test CA")?;
    let server = TlsServer::start(&ca)?;
    let (username, password) = TLS_SUBSCRIBER;
    let trusting = |pem: &str| {
        Client::new(&server.root)
            .with_ca_certificate_pem(pem.as_bytes())
            .with_basic_auth(username, password)
    };

    let found = trusting(&ca.pem)
        .get_linked_customer(DEPARTMENT, Entity::Order, 1001)
        .await
        .map_err(|err| err.to_string());
    assert_eq!(found, Ok(Some(fixture(DEPARTMENT)?)));

    let other_ca = TestCa::new("another CA")?;
    let refused = [
        (
            "the platform's roots",
            client(&server.root, Some(TLS_SUBSCRIBER)),
        ),
        ("another CA", trusting(&other_ca.pem)),
    ];
    for (trusted, client) in refused {
        let answer = client
            .get_linked_customer(DEPARTMENT, Entity::Order, 1001)
            .await;
        match answer {
            // The reason is further down than the error's own message ("error sending
            // request"); the debug form shows the whole chain.
            Err(Error::Transport(err)) => {
                let reason = format!("{err:?}");
                assert!(reason.contains("InvalidCertificate"), "{trusted}: {reason}");
            }
            other => panic!("{trusted}: expected a TLS refusal, got {other:?}"),
        }
    }

    // The program, with the password in its environment.
    let ca_file = server.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem)?;
    let ca_file = ca_file.to_str().context("a UTF-8 path")?;
    let get = |extra: &[&str]| {
        let mut args = vec!["--base-url", &server.root, "--user", username];
        args.extend_from_slice(extra);
        args.extend([DEPARTMENT, "ORDER", "1001"]);
        get_program(&args, &[("LINKED_CUSTOMER_PASSWORD", password)])
    };
    let found = get(&["--ca-cert", ca_file])?;
    assert_eq!(found.status.code(), Some(0), "{found:?}");
    let printed: CustomerWithVehicles = serde_json::from_slice(&found.stdout)?;
    assert_eq!(printed, fixture(DEPARTMENT)?);

    let untrusted = get(&[])?;
    assert_eq!(untrusted.status.code(), Some(5), "{untrusted:?}");
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("certificate"),
        "{untrusted:?}"
    );
    // A CA file that is missing, or that holds no certificate, is a usage error.
    let missing = server.dir.path().join("missing.pem");
    let not_pem = server.dir.path().join("key.pem");
    for file in [&missing, &not_pem] {
        let bad = get(&["--ca-cert", file.to_str().context("a UTF-8 path")?])?;
        assert_eq!(bad.status.code(), Some(2), "{}: {bad:?}", file.display());
    }
    Ok(())
}

/// The subscriber of the TLS server: granted `customer.search` on DEPARTMENT (the server takes
/// passwords of 12 characters or more).
const TLS_SUBSCRIBER: Credentials = ("e2e-tls", "tls-granted-secret");

/// A certificate authority made for one test.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// Its certificate, PEM.
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> Result<TestCa> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let pem = params.self_signed(&key)?.pem();
        Ok(TestCa {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// A server certificate for loopback (`localhost` and `127.0.0.1`) and its key, PEM.
    fn issue_for_loopback(&self) -> Result<(String, String)> {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(names)?.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The real server binary over TLS, with a certificate from the test's CA, on a free loopback
/// port of a fresh SQLite database: the fixture imported and [`TLS_SUBSCRIBER`] added through
/// its `import` and `subscriber add` commands. Killed when dropped.
///
/// Not in-process like [`Server`]: `test_support` serves plain HTTP only, and the binary is what
/// `--tls-cert` and `--tls-key` are given to in production.
struct TlsServer {
    /// `https://127.0.0.1:PORT`, as the server announced it.
    root: String,
    /// Its database, certificate, key and log.
    dir: tempfile::TempDir,
    child: Child,
}

impl TlsServer {
    fn start(ca: &TestCa) -> Result<TlsServer> {
        let binary = server_binary()?;
        let dir = tempfile::tempdir()?;
        let database_url = format!("sqlite://{}", dir.path().join("lc.db").display());
        let (cert, key) = ca.issue_for_loopback()?;
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, cert)?;
        std::fs::write(&key_file, key)?;

        let server = |args: &[&str]| {
            let mut command = Command::new(&binary);
            command.args(args).env("DATABASE_URL", &database_url);
            command
        };
        succeeds(server(&["import", FIXTURE]), "")?;
        let (username, password) = TLS_SUBSCRIBER;
        let add = server(&[
            "subscriber",
            "add",
            "--username",
            username,
            "--password-stdin",
            "--department",
            DEPARTMENT,
            "--scope",
            SCOPE,
        ]);
        succeeds(add, &format!("{password}\n"))?;

        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut serve = server(&["serve", "--bind", "127.0.0.1:0", "--no-demo"]);
        serve
            .arg("--tls-cert")
            .arg(&cert_file)
            .arg("--tls-key")
            .arg(&key_file)
            .stdout(Stdio::piped())
            .stderr(log);
        let child = serve.spawn().context("starting linked-customer-server")?;
        // Owned from here on, so that a failed start is killed too.
        let mut server = TlsServer {
            root: String::new(),
            dir,
            child,
        };
        server.root = announced_root(&mut server.child).with_context(|| {
            let log = std::fs::read_to_string(server.dir.path().join("server.log"));
            format!(
                "the server did not say `listening on https://...` within 60 s; its log: {}",
                log.unwrap_or_default()
            )
        })?;
        Ok(server)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` with `input` on its standard input; fails with its stderr unless it succeeds.
fn succeeds(mut command: Command, input: &str) -> Result<()> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Dropped after writing: the command sees the end of its input.
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The `https://...` root the server announces on its stdout, which is read to the end on a
/// thread of its own (a line after `listening on` must not meet a closed pipe).
fn announced_root(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(root) = line.strip_prefix("listening on ") {
                let _ = sender.send(root.to_string());
            }
        }
    });
    receiver
        .recv_timeout(Duration::from_secs(60))
        .ok()
        .filter(|root| root.starts_with("https://"))
}

/// The server's binary, built as `cargo xtask` builds it (`cargo build --locked -p
/// linked-customer-server`: the same features, so that the later steps of `cargo xtask ci`
/// find it built). Cargo builds a package's own binaries for its tests, not a dependency's.
fn server_binary() -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cargo = Command::new(env!("CARGO"));
    // Without the package's variables that cargo gave this test: ring's build script watches
    // them, so with them it would run again, and all above it rebuild, at the next plain build.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_MANIFEST_") {
            cargo.env_remove(name.as_ref());
        }
    }
    let output = cargo
        .args(["build", "--locked", "-p", "linked-customer-server"])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    ensure!(
        output.status.success(),
        "cargo build -p linked-customer-server failed"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact"
                && message["target"]["name"] == "linked-customer-server"
                && message["executable"].is_string()
        })
        .and_then(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo build named no linked-customer-server executable")
}
