//! On an open network: no published login off loopback, private files, passwords that are not
//! guessable by length, secrets from files, descriptors for every connection.

use crate::cli::{BIN, PW, Served, add_reader, assert_no_demo, get, import_fixture, ok, server};
use crate::helpers::{Backend, TestDb};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const DEMO: &str = "/customer/v2/department/demo-department/entity/ORDER/1001/customer";

fn sqlite_url(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}", dir.path().join(name).display())
}

/// Listening on every address, a new database gets no demo login; asked for by name, it does.
#[tokio::test]
async fn the_demo_login_exists_off_loopback_only_when_asked_for() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir, "public.db");
    let served = Served::start(&url, &["--bind", "0.0.0.0:0", "--tls-terminated-by-proxy"]);
    assert!(served.banner.contains("No demo data"), "{}", served.banner);
    assert_no_demo(&served).await;
    drop(served);

    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir, "asked.db");
    let served = Served::start(
        &url,
        &["--bind", "0.0.0.0:0", "--tls-terminated-by-proxy", "--demo"],
    );
    assert!(served.banner.contains("demo-password"), "{}", served.banner);
    assert_eq!(
        get(&served.base, DEMO, "demo", "demo-password")
            .await
            .status(),
        200
    );
}

/// A database made on loopback with the demo login is not served beyond this machine until
/// the login is gone (or `--demo` says it is meant).
#[tokio::test]
async fn a_database_with_the_demo_login_is_not_served_off_loopback() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir, "demo.db");
    drop(Served::start(&url, &[]));

    let refused = server(
        &[
            "serve",
            "--bind",
            "0.0.0.0:0",
            "--tls-terminated-by-proxy",
            "--database-url",
            &url,
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "served with the demo login");
    assert!(stderr.contains("demo login"), "{stderr}");

    ok(&server(
        &[
            "subscriber",
            "remove",
            "--username",
            "demo",
            "--database-url",
            &url,
        ],
        None,
    ));
    let served = Served::start(&url, &["--bind", "0.0.0.0:0", "--tls-terminated-by-proxy"]);
    assert_no_demo(&served).await;
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// The database and its `-wal` and `-shm` are the owner's alone, new or found open to others.
#[tokio::test]
async fn the_database_files_are_private() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir, "lc.db");
    add_reader(&url);
    let served = Served::start(&url, &["--no-demo"]);
    assert_eq!(
        get(&served.base, crate::cli::ORDER_1001, "u", PW)
            .await
            .status(),
        204
    );
    let files = ["lc.db", "lc.db-wal", "lc.db-shm"].map(|name| dir.path().join(name));
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    drop(served);

    // Made readable by all (copied in, an older version's): sealed again at the next start.
    for file in &files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let served = Served::start(&url, &["--no-demo"]);
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    drop(served);
}

/// Short passwords are refused; `--generate` makes one, shows it once, and it works.
#[tokio::test]
async fn subscriber_passwords_are_long_or_generated() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir, "lc.db");
    ok(&server(&["migrate", "--database-url", &url], None));
    let add = |stdin: Option<&str>, how: &str| {
        server(
            &[
                "subscriber",
                "add",
                "--database-url",
                &url,
                "--username",
                "crm",
                how,
                "--department",
                "dept-north",
            ],
            stdin,
        )
    };
    let short = add(Some("eleven-char\n"), "--password-stdin");
    assert!(!short.status.success());
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(stderr.contains("at least 12 characters"), "{stderr}");

    let generated = ok(&add(None, "--generate"));
    let password = generated
        .lines()
        .find_map(|line| line.strip_prefix("password: "))
        .expect("the generated password is shown")
        .to_string();
    assert!(password.len() >= 20, "{password}");

    let passwd = |stdin: Option<&str>, how: &[&str]| {
        let mut args = vec!["subscriber", "passwd", "--database-url", &url];
        args.extend(["--username", "crm"]);
        args.extend(how);
        server(&args, stdin)
    };
    let short = passwd(Some("short\n"), &["--password-stdin"]);
    assert!(!short.status.success());
    let both = passwd(
        Some("long-enough-password\n"),
        &["--password-stdin", "--generate"],
    );
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(!both.status.success());
    assert!(stderr.contains("cannot be used with"), "{stderr}");

    let served = Served::start(&url, &["--no-demo"]);
    let path = "/customer/v2/department/dept-north/entity/ORDER/1001/customer";
    assert_eq!(
        get(&served.base, path, "crm", &password).await.status(),
        204
    );
    assert_eq!(
        get(&served.base, path, "crm", "eleven-char").await.status(),
        401
    );
}

/// `DATABASE_URL_FILE`: the URL, password and all, comes from a file, and is shown redacted.
#[tokio::test]
async fn the_database_url_can_come_from_a_file() {
    let db = TestDb::new(Backend::Postgres).await;
    add_reader(&db.url);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("database-url");
    std::fs::write(&file, format!("{}\n", db.url)).expect("write");
    let migrated = Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL_FILE", &file)
        .env_remove("DATABASE_URL")
        .output()
        .expect("migrate");
    let stdout = ok(&migrated);
    assert!(
        stdout.contains("database is up to date: postgres://"),
        "{stdout}"
    );
    assert!(stdout.contains(":***@"), "{stdout}");
    let password = url::Url::parse(&db.url)
        .expect("url")
        .password()
        .map(str::to_string);
    if let Some(password) = password {
        assert!(!stdout.contains(&password), "{stdout}");
    }

    // The server, with no URL on its command line: the lookup reads the file's database.
    let file = file.to_str().expect("utf8");
    let served = Served::start_with("", &["--no-demo"], &[("DATABASE_URL_FILE", file)], None);
    let response = get(&served.base, crate::cli::ORDER_1001, "u", PW).await;
    assert_eq!(response.status(), 204);
    assert!(served.banner.contains(":***@"), "{}", served.banner);

    // Both a URL and a file: which one was meant? Neither is guessed.
    let both = Command::new(BIN)
        .args(["migrate", "--database-url", "sqlite://other.db"])
        .env("DATABASE_URL_FILE", file)
        .output()
        .expect("migrate");
    assert!(!both.status.success());
    assert!(!std::path::Path::new("other.db").exists());
}

/// The soft descriptor limit is raised to the hard one; a hard limit too low for
/// `--max-connections` stops the start, saying so.
#[test]
fn the_descriptor_limit_is_raised_or_the_start_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir, "lc.db");
    let limited = |connections: &str| {
        let mut command = Command::new("prlimit");
        command.args(["--nofile=256:1024", "--", BIN, "serve", "--no-demo"]);
        command.args(["--bind", "127.0.0.1:0", "--database-url", &url]);
        command.args(["--max-connections", connections]);
        command
    };
    let refused = limited("4096").output().expect("prlimit");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("--max-connections 4096 needs about"),
        "{stderr}"
    );
    assert!(stderr.contains("at most 1024"), "{stderr}");

    let mut child = limited("300")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let stdout = child.stdout.take().expect("stdout");
    let listening = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .any(|line| line.starts_with("listening on "));
    assert!(
        listening,
        "the server did not start under a hard limit of 1024"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("limits");
    let _ = child.kill();
    let _ = child.wait();
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("Max open files");
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["1024", "1024"], "{open_files}");
}

/// `--admin-bind`: `/metrics` and `/readyz` answer on the operations port only, and that port
/// serves nothing else but `/healthz`.
#[tokio::test]
async fn the_operations_endpoints_move_to_their_own_port() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir, "lc.db");
    add_reader(&url);
    let served = Served::start(&url, &["--no-demo", "--admin-bind", "127.0.0.1:0"]);
    let admin = served
        .banner
        .lines()
        .find_map(|line| line.strip_prefix("operations (/metrics, /readyz) on "))
        .unwrap_or_else(|| panic!("no operations line in {}", served.banner))
        .to_string();
    let status = |base: &str, path: &str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.expect("request").status().as_u16() }
    };
    for path in ["/metrics", "/readyz"] {
        assert_eq!(
            status(&admin, path).await,
            200,
            "{path} on the operations port"
        );
        assert_eq!(
            status(&served.base, path).await,
            404,
            "{path} on the API's port"
        );
    }
    assert_eq!(status(&admin, "/healthz").await, 200);
    assert_eq!(status(&served.base, "/healthz").await, 200);
    assert_eq!(status(&admin, "/openapi.json").await, 404);
    assert_eq!(
        get(&admin, crate::cli::ORDER_1001, "u", PW).await.status(),
        404
    );
    assert_eq!(
        get(&served.base, crate::cli::ORDER_1001, "u", PW)
            .await
            .status(),
        204
    );
    // What the operations port answers is counted like the rest.
    let metrics = crate::cli::metrics_text(&admin).await;
    assert!(metrics.contains("route=\"/readyz\""), "{metrics}");
}

/// No cache keeps an answer of the operation, and no browser sniffs another type into it,
/// whatever its status.
#[tokio::test]
async fn every_answer_of_the_operation_is_private() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir, "lc.db");
    import_fixture(&url, dir.path());
    add_reader(&url);
    let served = Served::start(&url, &["--no-demo"]);
    let client = reqwest::Client::new();
    let dept = "/customer/v2/department/dept-north/entity";
    let cases = [
        ("GET", format!("{dept}/ORDER/1001/customer"), Some(PW), 200),
        ("HEAD", format!("{dept}/ORDER/1001/customer"), Some(PW), 200),
        (
            "GET",
            format!("{dept}/ORDER/999999/customer"),
            Some(PW),
            204,
        ),
        ("GET", format!("{dept}/ORDER/0/customer"), Some(PW), 400),
        (
            "GET",
            format!("{dept}/ORDER/1001/customer"),
            Some("wrong-password"),
            401,
        ),
        ("GET", format!("{dept}/ORDER/1001/customer"), None, 401),
        (
            "DELETE",
            format!("{dept}/ORDER/1001/customer"),
            Some(PW),
            405,
        ),
    ];
    for (method, path, password, status) in cases {
        let mut request = client.request(
            method.parse().expect("method"),
            format!("{}{path}", served.base),
        );
        if let Some(password) = password {
            request = request.basic_auth("u", Some(password));
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), status, "{method} {path}");
        let headers = response.headers();
        assert_eq!(
            headers["cache-control"], "no-store",
            "{method} {path} ({status})"
        );
        assert_eq!(
            headers["x-content-type-options"], "nosniff",
            "{method} {path} ({status})"
        );
    }
}

/// A basic-auth GET of ORDER 1001 of `dept-north` as `user`, from `client` (through a trusted
/// proxy's `X-Forwarded-For`); the status and the `Retry-After` header.
async fn from(base: &str, client: &str, user: &str, password: &str) -> (u16, Option<String>) {
    let response = reqwest::Client::new()
        .get(format!("{base}{}", crate::cli::ORDER_1001))
        .basic_auth(user, Some(password))
        .header("x-forwarded-for", client)
        .send()
        .await
        .expect("request");
    let retry = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().expect("text").to_string());
    (response.status().as_u16(), retry)
}

/// Guessing one username: its budget spent, the rest are `429` with `Retry-After` and no
/// password check; the subscriber still logs in from an address where it logged in before;
/// every refusal is counted by reason and logged with the address and a hash of the username.
#[tokio::test]
async fn guessing_a_username_is_bounded_and_its_subscriber_still_logs_in() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir, "lc.db");
    add_reader(&url);
    let log = dir.path().join("server.log");
    let served = Served::start_with(
        &url,
        &[
            "--no-demo",
            "--trusted-proxy",
            "127.0.0.1",
            "--password-checks-per-username",
            "3",
        ],
        &[],
        Some(&log),
    );
    let base = served.base.clone();
    let checks = || crate::cli::metric(&base, "password_checks_total");
    assert_eq!(
        from(&base, "10.0.0.1", "u", PW).await.0,
        204,
        "its own address"
    );

    // Guessed from another address: two more checks, then 429s without a check.
    let before = checks().await;
    for _ in 0..2 {
        assert_eq!(
            from(&base, "10.6.6.6", "u", "guess-guess-guess").await.0,
            401
        );
    }
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..50 {
        let started = std::time::Instant::now();
        let (status, retry) = from(&base, "10.6.6.6", "u", "guess-guess-guess").await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 429);
        let retry: u32 = retry.expect("Retry-After").parse().expect("seconds");
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    assert_eq!(checks().await - before, 2, "no check past the budget");
    assert!(
        slowest < std::time::Duration::from_millis(500),
        "{slowest:?}"
    );
    // A new password (so that nothing is cached): refused from a new address, since the
    // username's budget is spent, and let in from the address it used before.
    ok(&server(
        &[
            "subscriber",
            "passwd",
            "--database-url",
            &url,
            "--username",
            "u",
            "--password-stdin",
        ],
        Some("u-password-2\n"),
    ));
    assert_eq!(from(&base, "10.0.0.2", "u", "u-password-2").await.0, 429);
    assert_eq!(from(&base, "10.0.0.1", "u", "u-password-2").await.0, 204);

    let refusals = |reason: &str| format!("auth_refusals_total{{reason=\"{reason}\"}}");
    assert_eq!(
        crate::cli::metric(&base, &refusals("not_authorized")).await,
        2
    );
    assert_eq!(
        crate::cli::metric(&base, &refusals("throttled_username")).await,
        51
    );
    served.stop();
    let log = std::fs::read_to_string(&log).expect("log");
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("credentials refused"))
        .collect();
    assert_eq!(refused.len(), 53, "{log}");
    // One username, one hash (16 hex digits, keyed by the server's process) on every line.
    let user = |line: &str| {
        line.split_once("user=")
            .map(|(_, rest)| {
                rest.trim_start_matches('"')
                    .chars()
                    .take_while(char::is_ascii_hexdigit)
                    .collect::<String>()
            })
            .unwrap_or_default()
    };
    let hash = user(refused[0]);
    assert_eq!(hash.len(), 16, "{}", refused[0]);
    for line in refused {
        assert!(
            line.contains("10.6.6.6") || line.contains("10.0.0.2"),
            "{line}"
        );
        assert_eq!(user(line), hash, "{line}");
        assert!(!line.contains("guess-guess-guess"), "{line}");
    }
}

/// Without `--trusted-proxy`, `X-Forwarded-For` is the client's to write, so it is not read:
/// the connection's peer has the one address budget, whatever the header says.
#[tokio::test]
async fn a_forged_forwarded_for_does_not_buy_a_new_budget() {
    let dir = tempfile::tempdir().expect("dir");
    let url = sqlite_url(&dir, "lc.db");
    add_reader(&url);
    let served = Served::start(&url, &["--no-demo", "--password-checks-per-address", "2"]);
    for n in 0..2 {
        let client = format!("10.1.1.{n}");
        assert_eq!(
            from(
                &served.base,
                &client,
                &format!("user{n}"),
                "guess-guess-guess"
            )
            .await
            .0,
            401
        );
    }
    assert_eq!(
        from(&served.base, "10.1.1.9", "user9", "guess-guess-guess")
            .await
            .0,
        429
    );
    assert_eq!(
        crate::cli::metric(
            &served.base,
            "auth_refusals_total{reason=\"throttled_address\"}"
        )
        .await,
        1
    );
}
