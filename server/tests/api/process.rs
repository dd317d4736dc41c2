//! The server as a process, run as the real binary: shutdown under load, an import killed
//! half-way, subscriber commands during an import, and what its logs say.

use crate::cli::{ADD_U, ORDER_1001, PW, Served, add_reader, get, ok, server, signal};
use crate::helpers::{Backend, FIXTURE, TestDb, fixture_line};
use base64::Engine;
use sqlx::Connection;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Waits up to `limit` for `child` to exit.
fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn import_file(url: &str, path: &Path) {
    ok(&server(
        &[
            "import",
            "--database-url",
            url,
            path.to_str().expect("utf8"),
        ],
        None,
    ));
}

/// `count` customers in `dept-north` made from the first fixture line, each with its own uuid
/// and ORDER link (from 500000), one JSON line each.
fn many_customers(count: usize) -> String {
    let template = fixture_line(0);
    let mut text = String::new();
    for index in 0..count {
        let mut line = template.clone();
        line["customer"]["customerUuid"] = format!("bulk-{index:06}").into();
        line["customer"]["id"] = (1_000_000 + index).into();
        line["links"] = serde_json::json!([{"entity": "ORDER", "entityId": 500_000 + index}]);
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text
}

/// An import of `customers` new customers, started and past its first progress line (records
/// are being written); its remaining stderr lines.
fn import_under_way(
    url: &str,
    dir: &Path,
    customers: usize,
) -> (Child, std::io::Lines<BufReader<std::process::ChildStderr>>) {
    let bulk = dir.join("bulk.jsonl");
    std::fs::write(&bulk, many_customers(customers)).expect("write");
    let mut import = Command::new(env!("CARGO_BIN_EXE_linked-customer-server"))
        .args(["import", "--database-url", url])
        .arg(&bulk)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the import");
    let stderr = import.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    lines
        .find_map(|line| line.ok().filter(|line| line.contains("records read")))
        .expect("a progress line: the import ended too soon to be caught under way");
    (import, lines)
}

/// SIGTERM while requests are in flight (held up by a locked table): they are answered, new
/// connections are refused, and the process exits 0 within the grace period.
#[tokio::test]
async fn sigterm_under_load_finishes_the_requests_in_flight() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("dir");
    let fixture = dir.path().join("fixture.jsonl");
    std::fs::write(&fixture, FIXTURE).expect("write");
    import_file(&db.url, &fixture);
    add_reader(&db.url);
    let mut served = Served::start(
        &db.url,
        &[
            "--no-demo",
            "--db-statement-timeout-ms",
            "20000",
            "--db-lock-timeout-ms",
            "20000",
        ],
    );
    assert_eq!(get(&served.base, ORDER_1001, "u", PW).await.status(), 200);

    let mut holder = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE customer_documents IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .expect("lock");
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let base = served.base.clone();
            tokio::spawn(async move { get(&base, ORDER_1001, "u", PW).await.status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&served.child, "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let address = served.base.trim_start_matches("http://").to_string();
    let refused = tokio::task::spawn_blocking(move || std::net::TcpStream::connect(address))
        .await
        .expect("thread");
    assert!(
        refused.is_err(),
        "a new connection was accepted after SIGTERM"
    );
    assert!(
        served.child.try_wait().expect("try_wait").is_none(),
        "the server exited with requests in flight"
    );

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("unlock");
    for request in in_flight {
        assert_eq!(request.await.expect("request"), 200, "in flight at SIGTERM");
    }
    let exit = wait_for_exit(&mut served.child, Duration::from_secs(10))
        .expect("exited within the grace period");
    assert!(exit.success(), "{exit:?}");
}

/// What a set of lookups answers, status and body.
async fn answers(base: &str) -> Vec<(u16, String)> {
    let mut all = Vec::new();
    for path in [
        ORDER_1001.to_string(),
        "/customer/v2/department/dept-north/entity/THREAD/42/customer".to_string(),
        "/customer/v2/department/dept-north/entity/ORDER/500000/customer".to_string(),
        "/customer/v2/department/dept-north/entity/ORDER/500999/customer".to_string(),
    ] {
        let response = get(base, &path, "u", PW).await;
        let status = response.status().as_u16();
        all.push((status, response.text().await.expect("body")));
    }
    all
}

on_both_databases! {
    /// `kill -9` in the middle of an import, then subscriber commands while another import runs:
    /// the killed import leaves the database answering exactly as before.
    async fn an_import_killed_half_way_leaves_nothing_behind(backend: Backend) {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("dir");
        let fixture = dir.path().join("fixture.jsonl");
        std::fs::write(&fixture, FIXTURE).expect("write");
        import_file(&db.url, &fixture);
        add_reader(&db.url);
        let before = {
            let served = Served::start(&db.url, &["--no-demo"]);
            answers(&served.base).await
        };
        assert_eq!(before[0].0, 200, "{backend:?}");
        assert_eq!(before[2].0, 204, "{backend:?}");

        let (mut import, _) = import_under_way(&db.url, dir.path(), 60_000);
        signal(&import, "KILL");
        let killed = import.wait().expect("wait");
        assert!(!killed.success(), "{backend:?}");

        let served = Served::start(&db.url, &["--no-demo"]);
        assert_eq!(
            answers(&served.base).await,
            before,
            "{backend:?} after kill -9"
        );
    }
}

on_both_databases! {
    /// `subscriber remove` and `passwd` while an import runs: each finishes or says why not,
    /// within the lock timeout and a little more; the import is not disturbed.
    async fn subscriber_commands_during_an_import_answer_promptly(backend: Backend) {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("dir");
        add_reader(&db.url);
        let (mut import, lines) = import_under_way(&db.url, dir.path(), 30_000);
        let drain = std::thread::spawn(move || lines.map_while(Result::ok).count());

        for command in [
            vec![
                "subscriber",
                "passwd",
                "--username",
                "u",
                "--password-stdin",
            ],
            vec!["subscriber", "remove", "--username", "u"],
        ] {
            let started = Instant::now();
            let mut args = command.clone();
            args.extend(["--database-url", &db.url, "--db-lock-timeout-ms", "1000"]);
            let output = server(&args, Some("new-password-1\n"));
            let took = started.elapsed();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                took < Duration::from_secs(5),
                "{backend:?} {command:?} took {took:?}: {said}"
            );
            assert!(
                output.status.success() || said.contains("locked"),
                "{backend:?} {command:?}: neither done nor a clear reason: {said}"
            );
        }
        let status = import.wait().expect("import");
        drain.join().expect("drain");
        assert!(status.success(), "{backend:?}: the import failed");
    }
}

/// Logs of failed and good logins, subscriber commands, imports (good and bad) and errors hold
/// no password, Authorization header, password hash or customer data.
#[tokio::test]
async fn the_logs_hold_no_secret_and_no_customer_data() {
    for (format, level) in [("text", "info"), ("json", "debug")] {
        let db = TestDb::new(Backend::Sqlite).await;
        let dir = tempfile::tempdir().expect("dir");
        let log_path = dir.path().join("server.log");
        let mut logs = String::new();

        let password = "pw-Secret-4711";
        let changed = "pw-Changed-0815";
        let mut run = |args: &[&str], stdin: Option<&str>| {
            let mut args = args.to_vec();
            args.extend(["--database-url", &db.url]);
            let output = Command::new(env!("CARGO_BIN_EXE_linked-customer-server"))
                .args(&args)
                .env("RUST_LOG", level)
                .env("LINKED_CUSTOMER_LOG_FORMAT", format)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    if let Some(input) = stdin {
                        use std::io::Write;
                        child
                            .stdin
                            .take()
                            .expect("stdin")
                            .write_all(input.as_bytes())?;
                    }
                    child.wait_with_output()
                })
                .expect("run the binary");
            logs.push_str(&String::from_utf8_lossy(&output.stderr));
            output
        };
        let fixture = dir.path().join("fixture.jsonl");
        std::fs::write(&fixture, FIXTURE).expect("write");
        let bad = dir.path().join("bad.jsonl");
        // A wrong type where the value is personal data: the error names the line and field,
        // not the value.
        std::fs::write(
            &bad,
            FIXTURE.replacen(r#""id": 700001"#, r#""id": "maria.okafor@example.com""#, 1),
        )
        .expect("write");
        run(&["import", fixture.to_str().expect("utf8")], None);
        let refused = run(&["import", bad.to_str().expect("utf8")], None);
        assert!(!refused.status.success(), "the bad import was refused");
        run(&ADD_U, Some(&format!("{password}\n")));

        {
            let served = Served::start_with(
                &db.url,
                &["--no-demo"],
                &[("RUST_LOG", level), ("LINKED_CUSTOMER_LOG_FORMAT", format)],
                Some(&log_path),
            );
            for (user, pass) in [
                ("u", password),
                ("u", "wrong-Guess-1"),
                ("nobody", password),
            ] {
                get(&served.base, ORDER_1001, user, pass).await;
            }
            let client = reqwest::Client::new();
            for header in ["Basic !!!", "Bearer token-Secret-99"] {
                client
                    .get(format!("{}{ORDER_1001}", served.base))
                    .header("authorization", header)
                    .send()
                    .await
                    .expect("request");
            }
            get(
                &served.base,
                "/customer/v2/department/bad%20dept/entity/ORDER/x/customer",
                "u",
                password,
            )
            .await;
            get(&served.base, "/nowhere", "u", password).await;
            run(
                &[
                    "subscriber",
                    "passwd",
                    "--username",
                    "u",
                    "--password-stdin",
                ],
                Some(&format!("{changed}\n")),
            );
            get(&served.base, ORDER_1001, "u", changed).await;
            assert!(served.stop().success());
        }
        let mut server_log = String::new();
        std::fs::File::open(&log_path)
            .expect("log")
            .read_to_string(&mut server_log)
            .expect("read log");
        assert!(
            server_log.contains("request done"),
            "{format}: no request was logged"
        );
        logs.push_str(&server_log);

        let userpass = base64::engine::general_purpose::STANDARD;
        let customer = fixture_line(0);
        let mut secrets = vec![
            password.to_string(),
            changed.to_string(),
            "wrong-Guess-1".to_string(),
            "token-Secret-99".to_string(),
            userpass.encode(format!("u:{password}")),
            userpass.encode(format!("u:{changed}")),
            "$argon2".to_string(),
            "Basic ".to_string(),
            "maria.okafor@".to_string(),
        ];
        for pointer in [
            "/customer/firstName",
            "/customer/lastName",
            "/customer/company",
            "/customer/emails/0/emailAddress",
            "/customer/phoneNumbers/0/phoneNumber",
            "/customer/addresses/0/line1",
            "/vehicles/0/vin",
            "/vehicles/0/licensePlate",
        ] {
            secrets.push(
                customer
                    .pointer(pointer)
                    .and_then(|value| value.as_str())
                    .unwrap_or_else(|| panic!("fixture has {pointer}"))
                    .to_string(),
            );
        }
        for secret in &secrets {
            assert!(
                !logs.contains(secret.as_str()),
                "{format}/{level}: the logs contain {secret:?}:\n{logs}"
            );
        }
    }
}

/// SIGHUP (`systemctl reload`) reloads a TLS certificate; a server without one logs it and goes
/// on serving, rather than dying of the signal's default action.
#[tokio::test]
async fn sighup_without_tls_leaves_the_server_serving() {
    let db = TestDb::new(crate::helpers::Backend::Sqlite).await;
    add_reader(&db.url);
    let mut served = Served::start(&db.url, &["--no-demo"]);
    signal(&served.child, "HUP");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        served.child.try_wait().expect("wait").is_none(),
        "SIGHUP ended the server"
    );
    assert_eq!(get(&served.base, ORDER_1001, "u", PW).await.status(), 204);
}
