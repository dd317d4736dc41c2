//! End to end: the real server of this workspace, started in-process on a free port (the
//! server crate's `test_support`) on a fresh SQLite database with
//! `tests/fixtures/customers.jsonl` imported, called through this crate and through its
//! command-line program, `linked-customer-get`.

use anyhow::{Context, Result, bail, ensure};
use linked_customer_client::{Client, Customer, CustomerWithVehicles, Entity, Error, Vehicle};
use linked_customer_server::limits::HttpLimits;
use linked_customer_server::store::DatabaseLimits;
use linked_customer_server::test_support::{self, Backend, Spawned, TestDb};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::{Command, Output};

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
    let get = PathBuf::from(env!("CARGO_BIN_EXE_linked-customer-get"));
    let run = |args: &[&str]| -> Result<Output> {
        Command::new(&get)
            .args(args)
            .env_remove("LINKED_CUSTOMER_BASE_URL")
            .env_remove("LINKED_CUSTOMER_USER")
            .env_remove("LINKED_CUSTOMER_PASSWORD")
            .output()
            .context("running linked-customer-get")
    };
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
