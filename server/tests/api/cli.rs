//! The command-line interface, run as the real binary.

use crate::helpers::{FIXTURE, TestDb};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_linked-customer-server");

pub fn server(args: &[&str], stdin: Option<&str>) -> Output {
    server_on(None, args, stdin)
}

/// [`server`] with `DATABASE_URL` in its environment (a URL with a password stays off the
/// command line, where every local user could read it).
pub fn server_on(database_url: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(BIN);
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    if let Some(input) = stdin {
        let written = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes());
        // A command that refuses its arguments exits without reading its input.
        if let Err(err) = written {
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe,
                "write stdin: {err}"
            );
        }
    }
    child.wait_with_output().expect("binary ran")
}

pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `serve` as a child process, killed when dropped. Its stdout is read to the end (a line
/// after `listening on` must not meet a closed pipe), its log goes to a file, and both are
/// shown when the test fails.
pub struct Served {
    pub child: Child,
    pub base: String,
    pub banner: String,
    /// Every stdout line so far.
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    log: std::path::PathBuf,
    /// The log file is ours to remove (the caller did not ask for one).
    own_log: bool,
}

/// How long the server may take to say `listening on`.
const START_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

impl Served {
    pub fn start(database_url: &str, extra: &[&str]) -> Served {
        Served::start_with(database_url, extra, &[], None)
    }

    /// [`Served::start`] with these environment variables, and the server's log (stderr) in
    /// `log` when given (kept), else in a file of its own (removed).
    pub fn start_with(
        database_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Served {
        use std::sync::{Arc, Mutex, mpsc};
        let (log, own_log) = match log {
            Some(path) => (path.to_path_buf(), false),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let name = format!("served-{}-{nanos}.log", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        let stderr = std::fs::File::create(&log).expect("the server's log file");
        // Loopback and a port of the system's choosing, unless the test names its own.
        let bind: &[&str] = if extra.contains(&"--bind") {
            &[]
        } else {
            &["--bind", "127.0.0.1:0"]
        };
        // An empty URL: the test names the database its own way (a file, the environment).
        let mut command = Command::new(BIN);
        // In the environment, as an operator would: never a password on a command line.
        if !database_url.is_empty() {
            command.env("DATABASE_URL", database_url);
        }
        // The tests' setting: an answer that departs from openapi.yaml is a 500 (a test's
        // own `env` may say otherwise).
        command.env("LINKED_CUSTOMER_CONTRACT_GUARD", "enforce");
        let mut child = command
            .arg("serve")
            .args(bind)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start serve");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(String::new()));
        let (found, listening) = mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(address) = line.strip_prefix("listening on ") {
                        let _ = found.send(address.to_string());
                    }
                    let mut all = lines.lock().unwrap_or_else(|e| e.into_inner());
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        let base = listening.recv_timeout(START_DEADLINE);
        let banner = lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let served = Served {
            child,
            base: base.clone().unwrap_or_default(),
            banner,
            stdout: lines,
            log,
            own_log,
        };
        if base.is_err() {
            panic!("the server did not say `listening on` within {START_DEADLINE:?}");
        }
        served
    }
}

impl Served {
    /// Stops the server with SIGTERM, as an operator would, and waits for it: its log is then
    /// complete (a kill, as on drop, can cut the last lines).
    pub fn stop(mut self) -> std::process::ExitStatus {
        signal(&self.child, "TERM");
        self.child.wait().expect("wait")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let stdout = self.stdout.lock().unwrap_or_else(|e| e.into_inner());
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!(
                "the server's stdout:\n{stdout}\nits log ({}):\n{log}",
                self.log.display()
            );
        }
        if self.own_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Sends signal `name` (`TERM`, `INT`, `KILL`) to `child`.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name}");
}

pub async fn get(base: &str, path: &str, user: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("request")
}

/// `subscriber add` for `u` on `dept-north`, the password on stdin (the database URL to add).
pub const ADD_U: [&str; 7] = [
    "subscriber",
    "add",
    "--username",
    "u",
    "--password-stdin",
    "--department",
    "dept-north",
];

/// The password of subscriber `u` (passwords have at least 12 characters).
pub const PW: &str = "u-password-1";

/// Adds subscriber `u` / [`PW`] with `customer.search` on `dept-north`, through the CLI (after
/// `migrate`: a subscriber command never creates the database).
pub fn add_reader(database_url: &str) {
    ok(&server_on(Some(database_url), &["migrate"], None));
    ok(&server_on(
        Some(database_url),
        &ADD_U,
        Some(&format!("{PW}\n")),
    ));
}

/// Imports the fixture into the database at `url`, through `import` (the file goes in `dir`).
pub fn import_fixture(url: &str, dir: &std::path::Path) {
    let file = dir.join("fixture.jsonl");
    std::fs::write(&file, crate::helpers::FIXTURE).expect("write");
    ok(&server_on(
        Some(url),
        &["import", file.to_str().expect("utf8")],
        None,
    ));
}

/// The `/metrics` of the server at `base`.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of the unlabelled metric `name` in the `/metrics` of the server at `base`.
pub async fn metric(base: &str, name: &str) -> u64 {
    let text = metrics_text(base).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}")) as u64
}

pub const ORDER_1001: &str = "/customer/v2/department/dept-north/entity/ORDER/1001/customer";

on_both_databases! {
    async fn import_is_all_or_nothing_and_names_the_bad_line(backend: Backend) {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("dir");
        let bad_line = FIXTURE
            .lines()
            .nth(1)
            .expect("line")
            .replace(r#""id": 2"#, r#""id": "two""#);
        let mut lines: Vec<String> = FIXTURE.lines().map(str::to_string).collect();
        lines[1] = bad_line;
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, lines.join("\n")).expect("write");
        let output = server(
            &[
                "import",
                "--database-url",
                &db.url,
                bad.to_str().expect("utf8"),
            ],
            None,
        );
        assert!(!output.status.success(), "{backend:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("line 2, field `customer.id`"), "{stderr}");

        // Nothing of the good first line was kept.
        add_reader(&db.url);
        let served = Served::start(&db.url, &["--no-demo"]);
        let response = get(&served.base, ORDER_1001, "u", PW).await;
        assert_eq!(response.status(), 204, "{backend:?}");
    }
}

#[tokio::test]
async fn reimporting_a_customer_updates_it() {
    let db = TestDb::new(crate::helpers::Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("customers.jsonl");
    std::fs::write(&file, FIXTURE).expect("write");
    let file = file.to_str().expect("utf8");
    let first = ok(&server(&["import", "--database-url", &db.url, file], None));
    assert!(first.contains("3 customers created, 0 updated"), "{first}");

    let changed = FIXTURE.replacen(r#""firstName": "Maria""#, r#""firstName": "Mary""#, 1);
    std::fs::write(file, changed).expect("write");
    let second = ok(&server(&["import", "--database-url", &db.url, file], None));
    assert!(
        second.contains("0 customers created, 3 updated"),
        "{second}"
    );

    add_reader(&db.url);
    let served = Served::start(&db.url, &["--no-demo"]);
    let body: Value = get(&served.base, ORDER_1001, "u", PW)
        .await
        .json()
        .await
        .expect("JSON");
    let customer = &body["customerWithVehicles"]["customer"];
    assert_eq!(customer["firstName"], "Mary");
    assert_eq!(
        customer["emails"].as_array().map(Vec::len),
        Some(1),
        "no duplicated children"
    );
    assert_eq!(
        body["customerWithVehicles"]["vehicles"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn subscriber_commands_take_effect_on_a_running_server() {
    let db = TestDb::new(crate::helpers::Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("customers.jsonl");
    std::fs::write(&file, FIXTURE).expect("write");
    ok(&server(
        &[
            "import",
            "--database-url",
            &db.url,
            file.to_str().expect("utf8"),
        ],
        None,
    ));
    let added = ok(&server(
        &[
            "subscriber",
            "add",
            "--database-url",
            &db.url,
            "--username",
            "ops",
            "--password-stdin",
            "--department",
            "dept-north",
            "--scope",
            "customer.search",
        ],
        Some("first-password\n"),
    ));
    assert!(added.contains("added subscriber ops"));
    let served = Served::start(&db.url, &["--no-demo"]);
    assert_eq!(
        get(&served.base, ORDER_1001, "ops", "first-password")
            .await
            .status(),
        200
    );

    ok(&server(
        &[
            "subscriber",
            "passwd",
            "--database-url",
            &db.url,
            "--username",
            "ops",
            "--password-stdin",
        ],
        Some("second-password\n"),
    ));
    assert_eq!(
        get(&served.base, ORDER_1001, "ops", "first-password")
            .await
            .status(),
        401
    );
    assert_eq!(
        get(&served.base, ORDER_1001, "ops", "second-password")
            .await
            .status(),
        200
    );

    ok(&server(
        &[
            "subscriber",
            "remove",
            "--database-url",
            &db.url,
            "--username",
            "ops",
        ],
        None,
    ));
    assert_eq!(
        get(&served.base, ORDER_1001, "ops", "second-password")
            .await
            .status(),
        401
    );

    let missing = server(
        &[
            "subscriber",
            "remove",
            "--database-url",
            &db.url,
            "--username",
            "ops",
        ],
        None,
    );
    assert!(!missing.status.success());
}

#[tokio::test]
async fn a_new_embedded_database_gets_the_demo_data() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let served = Served::start(&url, &[]);
    assert!(
        served.banner.contains("`demo` / `demo-password`"),
        "{}",
        served.banner
    );
    assert!(
        served.banner.contains("curl -u demo:demo-password"),
        "{}",
        served.banner
    );
    let demo = "/customer/v2/department/demo-department/entity/ORDER/1001/customer";
    let response = get(&served.base, demo, "demo", "demo-password").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    let expected: Value =
        serde_json::from_str(include_str!("../../demo/demo.jsonl")).expect("demo");
    assert_eq!(
        body["customerWithVehicles"]["customer"],
        expected["customer"]
    );
    assert_eq!(
        body["customerWithVehicles"]["vehicles"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Every field of the spec's customer is filled in the demo customer.
    let spec: Value = serde_saphyr::from_str(include_str!("../../../openapi.yaml")).expect("spec");
    for schema in [
        "Customer",
        "Vehicle",
        "Email",
        "PhoneNumber",
        "Address",
        "BestTimeToContact",
    ] {
        let properties = spec["components"]["schemas"][schema]["properties"]
            .as_object()
            .expect("properties");
        let sample = match schema {
            "Customer" => &body["customerWithVehicles"]["customer"],
            "Vehicle" => &body["customerWithVehicles"]["vehicles"][1],
            "Email" => &body["customerWithVehicles"]["customer"]["emails"][0],
            "PhoneNumber" => &body["customerWithVehicles"]["customer"]["phoneNumbers"][0],
            "Address" => &body["customerWithVehicles"]["customer"]["addresses"][0],
            _ => &body["customerWithVehicles"]["customer"]["bestTimeToContact"],
        };
        for field in properties.keys() {
            assert!(!sample[field].is_null(), "demo {schema} lacks {field}");
        }
    }
    drop(served);

    // A second start on the same file keeps the data and loads nothing twice.
    let again = Served::start(&url, &[]);
    assert!(again.banner.contains("demo-password"));
    assert_eq!(
        get(&again.base, demo, "demo", "demo-password")
            .await
            .status(),
        200
    );

    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("empty.db").display());
    assert_no_demo(&Served::start(&url, &["--no-demo"])).await;
}

/// The server announces no demo credentials, and they do not work.
pub async fn assert_no_demo(served: &Served) {
    assert!(
        !served.banner.contains("demo-password"),
        "{}",
        served.banner
    );
    let demo = "/customer/v2/department/demo-department/entity/ORDER/1001/customer";
    assert_eq!(
        get(&served.base, demo, "demo", "demo-password")
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let served = Served::start(&url, &["--no-demo"]);
    let exit = served.stop();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn migrate_creates_the_schema() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let out = ok(&server(&["migrate", "--database-url", &url], None));
    assert!(out.contains("database is up to date"), "{out}");
    assert!(dir.path().join("m.db").exists());
}
