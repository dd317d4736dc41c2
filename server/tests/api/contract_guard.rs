//! The contract guarded at run time: a stored document that openapi.yaml refuses (written
//! straight into the database, as an import never would) is answered as each
//! `--contract-guard` mode says.

use crate::cli::{ORDER_1001, PW, Served, add_reader, get, import_fixture, metrics_text};
use crate::helpers::{Backend, TestDb};

/// The customer of ORDER 1001 with an `id` that is a string: the wire types would never write
/// it, the spec says integer.
pub fn break_the_document(db: &TestDb) {
    let path = db.url.strip_prefix("sqlite://").expect("sqlite url");
    let conn = rusqlite::Connection::open(path).expect("open");
    let changed = conn
        .execute(
            "UPDATE customer_documents SET document = json_set(document, '$.customer.id', 'seven') \
             WHERE customer_uuid = '5b8e7c2a-3f4d-4e6a-9b1c-0d2e3f4a5b6c'",
            [],
        )
        .expect("update");
    assert_eq!(changed, 1);
}

#[tokio::test]
async fn each_mode_does_what_it_says_with_an_answer_that_departs() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("dir");
    add_reader(&db.url);
    import_fixture(&db.url, dir.path());
    break_the_document(&db);
    let violations = "contract_violations_total{operation=\"getLinkedCustomer\",pointer=\"/customerWithVehicles/customer/id\",status=\"200\"}";

    // off: the answer goes out as stored, and nothing is counted.
    let served = Served::start_with(
        &db.url,
        &["--no-demo"],
        &[("LINKED_CUSTOMER_CONTRACT_GUARD", "off")],
        None,
    );
    let response = get(&served.base, ORDER_1001, "u", PW).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.expect("body").contains("\"seven\""));
    assert!(
        !metrics_text(&served.base)
            .await
            .contains("contract_violations_total{")
    );
    drop(served);

    // sample:1: every answer checked; the violation is counted and logged with the request
    // id, without the value, and the answer goes out.
    let log = dir.path().join("sampled.log");
    let served = Served::start_with(
        &db.url,
        &["--no-demo"],
        &[("LINKED_CUSTOMER_CONTRACT_GUARD", "sample:1")],
        Some(&log),
    );
    let response = reqwest::Client::new()
        .get(format!("{}{ORDER_1001}", served.base))
        .basic_auth("u", Some(PW))
        .header("x-request-id", "guard-sampled-1")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let metrics = metrics_text(&served.base).await;
    assert!(metrics.contains(&format!("{violations} 1")), "{metrics}");
    // A good answer (another department's customer) is not counted.
    let south = "/customer/v2/department/dept-south/entity/ORDER/1001/customer";
    crate::cli::ok(&crate::cli::server_on(
        Some(&db.url),
        &[
            "grant",
            "add",
            "--username",
            "u",
            "--department",
            "dept-south",
        ],
        None,
    ));
    assert_eq!(get(&served.base, south, "u", PW).await.status(), 200);
    let metrics = metrics_text(&served.base).await;
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("contract_violations_total{"))
        .collect();
    assert_eq!(counted, [format!("{violations} 1")], "{metrics}");
    served.stop();
    let logged = std::fs::read_to_string(&log).expect("log");
    let line = logged
        .lines()
        .find(|line| line.contains("an answer departs from openapi.yaml"))
        .unwrap_or_else(|| panic!("no violation logged:\n{logged}"));
    assert!(
        line.contains("guard-sampled-1") && line.contains("/customerWithVehicles/customer/id"),
        "{line}"
    );
    assert!(!line.contains("seven"), "the value is in the log: {line}");

    // enforce: the answer that departs is a 500 in the documented envelope; good ones pass.
    let served = Served::start_with(
        &db.url,
        &["--no-demo"],
        &[("LINKED_CUSTOMER_CONTRACT_GUARD", "enforce")],
        None,
    );
    let response = get(&served.base, ORDER_1001, "u", PW).await;
    assert_eq!(response.status(), 500);
    let body: serde_json::Value = response.json().await.expect("envelope");
    assert_eq!(body["errors"][0]["errorCode"], 5000, "{body}");
    assert!(!body.to_string().contains("seven"));
    assert_eq!(get(&served.base, south, "u", PW).await.status(), 200);
    assert_eq!(
        get(&served.base, ORDER_1001, "u", "wrong-password")
            .await
            .status(),
        401
    );
    assert!(
        metrics_text(&served.base)
            .await
            .contains(&format!("{violations} 1"))
    );
}

/// A mode that is not one is refused at start, naming the choices.
#[tokio::test]
async fn a_mode_that_is_not_one_is_refused() {
    let output = crate::cli::server(&["serve", "--contract-guard", "sample:5"], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("off, enforce or sample:RATE"), "{stderr}");
}
