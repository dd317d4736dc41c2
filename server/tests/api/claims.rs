//! What the README promises about settings, logs, signals and the command line, each held by
//! a test against the real binary.

use crate::cli::{
    ADD_U, ORDER_1001, PW, Served, add_reader, assert_no_demo, get, import_fixture, ok, server,
    signal,
};
use crate::helpers::{Backend, TestDb};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_linked-customer-server");

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("claims.db").display())
}

async fn password_checks(base: &str) -> u64 {
    crate::cli::metric(base, "password_checks_total").await
}

/// `LINKED_CUSTOMER_BIND` chooses the address, like `--bind`.
#[test]
fn the_bind_address_comes_from_the_environment() {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(BIN)
        .args(["--no-demo", "--database-url", &sqlite_url(&dir)])
        .env("LINKED_CUSTOMER_BIND", "127.0.0.2:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let stdout = child.stdout.take().expect("stdout");
    let listening = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with("listening on "));
    let _ = child.kill();
    let _ = child.wait();
    let listening = listening.expect("a listening line");
    assert!(
        listening.starts_with("listening on http://127.0.0.2:"),
        "{listening}"
    );
}

/// `--auth-cache-seconds`: a verified credential costs no check until the entry expires, then
/// one.
#[tokio::test]
async fn the_credential_cache_expires_after_its_seconds() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir);
    import_fixture(&url, dir.path());
    add_reader(&url);
    let served = Served::start(&url, &["--no-demo", "--auth-cache-seconds", "1"]);
    for _ in 0..3 {
        assert_eq!(get(&served.base, ORDER_1001, "u", PW).await.status(), 200);
    }
    assert_eq!(password_checks(&served.base).await, 1, "cached");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(get(&served.base, ORDER_1001, "u", PW).await.status(), 200);
    assert_eq!(
        password_checks(&served.base).await,
        2,
        "checked again after expiry"
    );
}

/// `LINKED_CUSTOMER_LOG_FORMAT=json`: one JSON object per line, and a request's line carries
/// the `x-request-id` the client got.
#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir);
    let log_path = dir.path().join("server.log");
    let served = Served::start_with(
        &url,
        &["--no-demo"],
        &[("LINKED_CUSTOMER_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
        Some(&log_path),
    );
    let response = reqwest::get(format!("{}/healthz", served.base))
        .await
        .expect("healthz");
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(served.stop().success());
    let text = std::fs::read_to_string(&log_path).expect("read log");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        lines.iter().any(|line| line.to_string().contains(&id)),
        "no log line has request id {id}:\n{text}"
    );
}

/// SIGINT (Ctrl-C) stops the server as SIGTERM does: exit 0.
#[test]
fn sigint_stops_the_server_gracefully() {
    let dir = tempfile::tempdir().expect("dir");
    let mut served = Served::start(&sqlite_url(&dir), &["--no-demo"]);
    signal(&served.child, "INT");
    let exit = served.child.wait().expect("wait");
    assert!(exit.success(), "{exit:?}");
}

/// A PostgreSQL database gets no demo data, even when new.
#[tokio::test]
async fn a_postgresql_database_gets_no_demo_data() {
    let db = TestDb::new(Backend::Postgres).await;
    assert_no_demo(&Served::start(&db.url, &[])).await;
}

/// `migrate` leaves the real schema: the tables the server reads.
#[tokio::test]
async fn migrate_leaves_the_schema_the_server_reads() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir);
    let out = ok(&server(&["migrate", "--database-url", &url], None));
    assert!(out.contains("database is up to date"), "{out}");
    let db = rusqlite::Connection::open(dir.path().join("claims.db")).expect("open");
    let mut statement = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare");
    let tables: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .expect("query")
        .map(|name| name.expect("name"))
        .collect();
    for table in [
        "customer_documents",
        "departments",
        "grants",
        "links",
        "subscribers",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "no {table} in {tables:?}"
        );
    }
}

/// The subscriber commands refuse a taken username, an unknown one and an empty password,
/// saying why.
#[test]
fn subscriber_commands_refuse_and_say_why() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir);
    add_reader(&url);
    let refused = |args: &[&str], stdin: Option<&str>, says: &str| {
        let mut args = args.to_vec();
        args.extend(["--database-url", &url]);
        let output = server(&args, stdin);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    refused(&ADD_U, Some("other-password\n"), "is the name taken?");
    refused(
        &[
            "subscriber",
            "passwd",
            "--username",
            "nobody",
            "--password-stdin",
        ],
        Some("password-of-nobody\n"),
        "there is no subscriber nobody",
    );
    refused(
        &[
            "subscriber",
            "add",
            "--username",
            "v",
            "--password-stdin",
            "--department",
            "dept-north",
        ],
        Some("\n"),
        "empty",
    );
}

/// HEAD and undeclared methods on the paths beside the operation: HEAD like GET without a
/// body, others `405` in the envelope; a missing Swagger UI file is a `404` in the envelope.
#[tokio::test]
async fn the_other_paths_answer_head_405_and_404_in_the_envelope() {
    let dir = tempfile::tempdir().expect("dir");
    let served = Served::start(&sqlite_url(&dir), &["--no-demo"]);
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/openapi.json", "/metrics"] {
        let url = format!("{}{path}", served.base);
        let head = client.head(&url).send().await.expect("head");
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert!(head.bytes().await.expect("body").is_empty(), "HEAD {path}");
        let post = client.post(&url).send().await.expect("post");
        assert_eq!(post.status(), 405, "POST {path}");
        assert!(post.headers().contains_key("allow"), "POST {path}");
        let body: Value = post.json().await.expect("envelope");
        assert_eq!(body["errors"][0]["errorCode"], 4005, "POST {path}");
    }
    let missing = client
        .get(format!("{}/swagger-ui/no-such-file.js", served.base))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("envelope");
    assert_eq!(body["errors"][0]["errorCode"], 4004);
}
