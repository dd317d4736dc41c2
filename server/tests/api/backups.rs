//! The backup drill, on each database: data and subscribers in, a backup while lookups run,
//! the database wiped, the backup restored, and then every recorded answer the same and every
//! subscriber able to log in. SQLite through the server's `backup` and `restore`; PostgreSQL
//! through `pg_dump` and `pg_restore`, as docs/operating.md ("Backups") says.

use crate::cli::{ORDER_1001, PW, Served, add_reader, get, import_fixture, ok, server_on};
use crate::helpers::{Backend, FIXTURE, TestDb};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Customers beyond the fixture's, so that a backup has some pages to copy.
const MORE_CUSTOMERS: u64 = 400;
const V_PASSWORD: &str = "v-password-22";

/// The fixture and [`MORE_CUSTOMERS`] more, in `dir`: (the file, every (department, path) to
/// look up).
fn data(dir: &Path) -> (std::path::PathBuf, Vec<String>) {
    let mut text = FIXTURE.to_string();
    let mut paths: Vec<String> = FIXTURE
        .lines()
        .flat_map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("fixture line");
            let department = record["department"]
                .as_str()
                .expect("department")
                .to_string();
            record["links"]
                .as_array()
                .expect("links")
                .iter()
                .map(|link| {
                    format!(
                        "/customer/v2/department/{department}/entity/{}/{}/customer",
                        link["entity"].as_str().expect("entity"),
                        link["entityId"]
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for i in 0..MORE_CUSTOMERS {
        let line = serde_json::json!({
            "department": "dept-north",
            "customer": {"id": 10_000 + i, "customerUuid": format!("drill-{i}"),
                "firstName": format!("Customer {i}"), "emails": [], "phoneNumbers": [],
                "addresses": []},
            "vehicles": [{"id": 20_000 + i, "vin": format!("WVWZZZ1JZXW{i:06}")}],
            "links": [{"entity": "APPOINTMENT", "entityId": 30_000 + i}],
        });
        text.push('\n');
        text.push_str(&line.to_string());
        paths.push(format!(
            "/customer/v2/department/dept-north/entity/APPOINTMENT/{}/customer",
            30_000 + i
        ));
    }
    paths.push("/customer/v2/department/dept-north/entity/ORDER/999999/customer".into());
    let file = dir.join("drill.jsonl");
    std::fs::write(&file, text).expect("write");
    (file, paths)
}

/// Data, subscribers `u` (dept-north) and `v` (dept-north and dept-south) in the database.
fn fill(url: &str, dir: &Path) -> Vec<String> {
    add_reader(url);
    import_fixture(url, dir);
    let (file, paths) = data(dir);
    ok(&server_on(
        Some(url),
        &["import", file.to_str().expect("utf8")],
        None,
    ));
    ok(&server_on(
        Some(url),
        &[
            "subscriber",
            "add",
            "--username",
            "v",
            "--password-stdin",
            "--department",
            "dept-north",
            "--department",
            "dept-south",
        ],
        Some(&format!("{V_PASSWORD}\n")),
    ));
    paths
}

/// Every path's answer (status and body) as `v`, who may read every department.
async fn answers(base: &str, paths: &[String]) -> Vec<(u16, String)> {
    let mut all = Vec::new();
    for path in paths {
        let response = get(base, path, "v", V_PASSWORD).await;
        all.push((
            response.status().as_u16(),
            response.text().await.expect("body"),
        ));
    }
    all
}

/// A server on the restored database at `url` gives every recorded answer, and both
/// subscribers log in.
async fn served_as_recorded(url: &str, paths: &[String], recorded: &[(u16, String)]) {
    let served = Served::start(url, &["--no-demo"]);
    assert_eq!(
        answers(&served.base, paths).await,
        recorded,
        "every answer the same"
    );
    both_log_in(&served.base).await;
}

/// Both subscribers log in.
async fn both_log_in(base: &str) {
    assert_eq!(
        get(base, ORDER_1001, "u", PW).await.status(),
        200,
        "u logs in"
    );
    let south = "/customer/v2/department/dept-south/entity/ORDER/1001/customer";
    assert_eq!(
        get(base, south, "v", V_PASSWORD).await.status(),
        200,
        "v logs in"
    );
}

/// Runs `backup` (a blocking command) while lookups run against `base`; fails unless every
/// lookup was answered 200 and some were answered while the command ran.
async fn while_lookups_run(base: &str, backup: impl FnOnce() + Send + 'static) {
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = {
        let (base, stop) = (base.to_string(), stop.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answered = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let status = client
                    .get(format!("{base}{ORDER_1001}"))
                    .basic_auth("u", Some(PW))
                    .send()
                    .await
                    .expect("lookup")
                    .status();
                answered.push((Instant::now(), status.as_u16()));
            }
            answered
        })
    };
    // Lookups run before the backup starts.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = Instant::now();
    tokio::task::spawn_blocking(backup).await.expect("backup");
    let ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let answered = lookups.await.expect("lookups");
    assert!(
        answered.iter().all(|(_, status)| *status == 200),
        "a lookup failed"
    );
    let during = answered
        .iter()
        .filter(|(at, _)| *at > started && *at < ended)
        .count();
    assert!(during > 0, "no lookup was answered while the backup ran");
}

#[tokio::test]
async fn sqlite_backup_restores_every_answer_and_login() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("dir");
    let paths = fill(&db.url, dir.path());
    let backup = dir.path().join("backups").join("linked-customer.backup");
    std::fs::create_dir(backup.parent().expect("folder")).expect("folder");

    let served = Served::start(&db.url, &["--no-demo"]);
    let recorded = answers(&served.base, &paths).await;
    assert!(recorded.iter().filter(|(status, _)| *status == 200).count() > 400);
    {
        let (url, file) = (db.url.clone(), backup.clone());
        while_lookups_run(&served.base, move || {
            let out = ok(&server_on(
                Some(&url),
                &["backup", file.to_str().expect("utf8")],
                None,
            ));
            assert!(out.contains("backed up"), "{out}");
        })
        .await;
    }
    let file = backup.to_str().expect("utf8");
    // A backup never replaces a file, and leaves no partial file behind when it fails.
    let before = std::fs::read(&backup).expect("backup");
    let again = server_on(Some(&db.url), &["backup", file], None);
    assert!(!again.status.success());
    assert_eq!(std::fs::read(&backup).expect("backup"), before);
    assert_eq!(
        std::fs::read_dir(backup.parent().expect("folder"))
            .expect("dir")
            .count(),
        1
    );

    // Restored under a running server: a customer removed after the backup is back at once.
    ok(&server_on(
        Some(&db.url),
        &[
            "customer",
            "remove",
            "--department",
            "dept-north",
            "--customer-uuid",
            "drill-0",
        ],
        None,
    ));
    assert_eq!(answers(&served.base, &paths[4..5]).await[0].0, 204);
    ok(&server_on(Some(&db.url), &["restore", file], None));
    assert_eq!(
        answers(&served.base, &paths).await,
        recorded,
        "restored while serving"
    );
    assert_eq!(served.stop().code(), Some(0));

    // Wiped: the database and its -wal and -shm files gone.
    let path = db.url.strip_prefix("sqlite://").expect("sqlite url");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    // A damaged backup is refused, and nothing is created.
    let damaged = dir.path().join("damaged.backup");
    std::fs::write(&damaged, &before[..before.len() / 2]).expect("write");
    let refused = server_on(
        Some(&db.url),
        &["restore", damaged.to_str().expect("utf8")],
        None,
    );
    assert!(!refused.status.success());
    assert!(
        !Path::new(path).exists(),
        "a refused restore created the database"
    );

    let restored = ok(&server_on(Some(&db.url), &["restore", file], None));
    assert!(restored.contains("restored"), "{restored}");
    served_as_recorded(&db.url, &paths, &recorded).await;
}

/// `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE` for a PostgreSQL URL: how the
/// PostgreSQL tools get a password without a command line.
fn pg_environment(url: &str) -> Vec<(&'static str, String)> {
    let url = url::Url::parse(url).expect("url");
    let decode = |s: &str| percent_decode(s);
    vec![
        ("PGHOST", url.host_str().expect("host").to_string()),
        ("PGPORT", url.port().unwrap_or(5432).to_string()),
        ("PGUSER", decode(url.username())),
        ("PGPASSWORD", decode(url.password().unwrap_or_default())),
        ("PGDATABASE", url.path().trim_start_matches('/').to_string()),
    ]
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A PostgreSQL client tool with the database of `url` in its environment.
fn pg_tool(name: &str, url: &str) -> std::process::Command {
    let mut command = std::process::Command::new(name);
    command.envs(pg_environment(url));
    command
}

fn succeeded(mut command: std::process::Command) {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn postgres_dump_restores_every_answer_and_login() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("dir");
    let paths = fill(&db.url, dir.path());
    let dump = dir.path().join("linked-customer.dump");

    // The server's `backup` points to pg_dump.
    let refused = server_on(Some(&db.url), &["backup", "x.backup"], None);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("pg_dump"));

    let served = Served::start(&db.url, &["--no-demo"]);
    let recorded = answers(&served.base, &paths).await;
    {
        let (url, dump) = (db.url.clone(), dump.clone());
        while_lookups_run(&served.base, move || {
            let mut command = pg_tool("pg_dump", &url);
            command
                .args(["--format=custom", "--no-owner", "--file"])
                .arg(&dump);
            succeeded(command);
        })
        .await;
    }
    served.stop();
    // Wiped: the database is gone; it is restored into a new one.
    drop(db);
    let fresh = TestDb::new(Backend::Postgres).await;
    let mut restore = pg_tool("pg_restore", &fresh.url);
    restore
        .args([
            "--no-owner",
            "--exit-on-error",
            "--single-transaction",
            "--dbname",
        ])
        .arg(pg_environment(&fresh.url)[4].1.as_str())
        .arg(&dump);
    succeeded(restore);
    served_as_recorded(&fresh.url, &paths, &recorded).await;
}
