//! The admin commands (`subscriber list`, `grant add`/`revoke`, `customer remove`) against a
//! running server, and what every admin command does with a database that is not there.

use crate::cli::{
    ADD_U, ORDER_1001, PW, Served, add_reader, get, import_fixture, metric, ok, server_on,
};
use crate::helpers::TestDb;

/// Runs `args` on the database at `url`; fails the test unless it fails, and answers stderr.
fn refused(url: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = server_on(Some(url), args, stdin);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "{args:?} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// The rows of `subscriber list`, their columns joined by one space.
fn rows(listed: &str) -> Vec<String> {
    listed
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Every command that manages what is in a database, with its standard input.
const ADMIN_COMMANDS: [(&[&str], Option<&str>); 8] = [
    (&ADD_U, Some("u-password-1\n")),
    (
        &[
            "subscriber",
            "passwd",
            "--username",
            "u",
            "--password-stdin",
        ],
        Some("u-password-1\n"),
    ),
    (&["subscriber", "remove", "--username", "u"], None),
    (&["subscriber", "list"], None),
    (
        &[
            "grant",
            "add",
            "--username",
            "u",
            "--department",
            "dept-north",
        ],
        None,
    ),
    (
        &["grant", "revoke", "--username", "u", "--department", "d-1"],
        None,
    ),
    (
        &[
            "customer",
            "remove",
            "--department",
            "dept-north",
            "--customer-uuid",
            "c-1",
        ],
        None,
    ),
    (&["backup", "/nonexistent/backup.db"], None),
];

/// Pointed at a file that is not there (the default URL on a host whose database is
/// PostgreSQL, say), an admin command creates nothing and says where it looked and how to
/// name the database.
#[tokio::test]
async fn admin_commands_never_create_a_database() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("linked-customer.db");
    let url = format!("sqlite://{}", file.display());
    for (args, stdin) in ADMIN_COMMANDS {
        let stderr = refused(&url, args, stdin);
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains("DATABASE_URL"),
            "{args:?}: {stderr}"
        );
        assert!(
            std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
            "{args:?} left a file behind"
        );
    }
    // The canary: `migrate` may create it, and then the same commands find it.
    ok(&server_on(Some(&url), &["migrate"], None));
    assert!(file.exists());
    ok(&server_on(Some(&url), &["subscriber", "list"], None));
}

on_both_databases! {
    /// A database without the schema (an empty PostgreSQL database, an empty SQLite file) is
    /// not one of this server's: the admin commands say so and leave it empty.
    async fn admin_commands_refuse_a_database_without_the_schema(backend: Backend) {
        let db = TestDb::new(backend).await;
        if backend == Backend::Sqlite {
            let path = db.url.strip_prefix("sqlite://").expect("sqlite url");
            std::fs::write(path, b"").expect("empty file");
        }
        for (args, stdin) in ADMIN_COMMANDS {
            if args[0] == "backup" && backend == Backend::Postgres {
                continue; // pg_dump's: the refusal is tested in backups.rs
            }
            let stderr = refused(&db.url, args, stdin);
            assert!(
                stderr.contains("no linked-customer database") || stderr.contains("not an SQLite"),
                "{backend:?} {args:?}: {stderr}"
            );
        }
        ok(&server_on(Some(&db.url), &["migrate"], None));
        let listed = ok(&server_on(Some(&db.url), &["subscriber", "list"], None));
        assert_eq!(listed.trim(), "USERNAME  DEPARTMENT  SCOPE", "{backend:?}");
    }

    /// Grants and customers change on a running server at once: a revoked grant refuses the
    /// very credential the server has cached, a granted one lets it in again, a removed
    /// customer's link answers 204.
    async fn grants_and_customers_change_at_once_on_a_running_server(backend: Backend) {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("dir");
        add_reader(&db.url);
        import_fixture(&db.url, dir.path());
        let served = Served::start(&db.url, &["--no-demo"]);
        let run = |args: &[&str]| ok(&server_on(Some(&db.url), args, None));

        assert_eq!(get(&served.base, ORDER_1001, "u", PW).await.status(), 200);
        let checks = metric(&served.base, "password_checks_total").await;
        assert_eq!(get(&served.base, ORDER_1001, "u", PW).await.status(), 200);
        assert_eq!(
            metric(&served.base, "password_checks_total").await,
            checks,
            "{backend:?}: the credential is cached (no second password check)"
        );

        let listed = run(&["subscriber", "list"]);
        assert!(rows(&listed).contains(&"u dept-north customer.search".into()), "{listed}");
        let json: serde_json::Value =
            serde_json::from_str(&run(&["subscriber", "list", "--json"])).expect("json");
        assert_eq!(
            json,
            serde_json::json!([{"username": "u",
                "grants": [{"department": "dept-north", "scope": "customer.search"}]}])
        );
        assert!(!listed.contains("argon2"), "{listed}");

        let revoked = run(&["grant", "revoke", "--username", "u", "--department", "dept-north"]);
        assert!(revoked.contains("revoked 1 grants"), "{revoked}");
        assert_eq!(
            get(&served.base, ORDER_1001, "u", PW).await.status(),
            401,
            "{backend:?}: the cached credential lost its grant at once"
        );
        let granted = run(&["grant", "add", "--username", "u", "--department", "dept-north"]);
        assert!(granted.contains("granted customer.search on dept-north"), "{granted}");
        assert_eq!(get(&served.base, ORDER_1001, "u", PW).await.status(), 200);

        // Another department's grant, then revoked: the listing follows.
        run(&["grant", "add", "--username", "u", "--department", "dept-south", "--scope", "x.y"]);
        let listed = run(&["subscriber", "list"]);
        assert!(rows(&listed).contains(&"u dept-south x.y".into()), "{listed}");

        let removed = run(&[
            "customer",
            "remove",
            "--department",
            "dept-north",
            "--customer-uuid",
            "5b8e7c2a-3f4d-4e6a-9b1c-0d2e3f4a5b6c",
        ]);
        assert!(removed.contains("and its 2 links"), "{removed}");
        assert_eq!(get(&served.base, ORDER_1001, "u", PW).await.status(), 204);
        let payment = "/customer/v2/department/dept-north/entity/PAYMENT/9223372036854775807/customer";
        assert_eq!(get(&served.base, payment, "u", PW).await.status(), 204);
        // The other department's customer with the same entity is untouched.
        let south = "/customer/v2/department/dept-south/entity/ORDER/1001/customer";
        run(&["grant", "add", "--username", "u", "--department", "dept-south"]);
        assert_eq!(get(&served.base, south, "u", PW).await.status(), 200);

        // Unknown names are refused, and say which.
        for (args, expected) in [
            (
                &["grant", "add", "--username", "nobody", "--department", "dept-north"][..],
                "there is no subscriber nobody",
            ),
            (
                &["grant", "revoke", "--username", "nobody", "--department", "dept-north"][..],
                "there is no subscriber nobody",
            ),
            (
                &["grant", "revoke", "--username", "u", "--department", "dept-east"][..],
                "holds none of customer.search on dept-east",
            ),
            (
                &["customer", "remove", "--department", "dept-north", "--customer-uuid",
                  "5b8e7c2a-3f4d-4e6a-9b1c-0d2e3f4a5b6c"][..],
                "there is no customer",
            ),
            (
                &["grant", "add", "--username", "u", "--department", "Not a token!"][..],
                "department",
            ),
        ] {
            let stderr = refused(&db.url, args, None);
            assert!(stderr.contains(expected), "{backend:?} {args:?}: {stderr}");
        }
    }

    /// A database migrated by a newer release (a migration this binary does not know) is
    /// refused at start with what to do, by the server and by every command.
    async fn a_schema_newer_than_the_binary_is_refused_clearly(backend: Backend) {
        let db = TestDb::new(backend).await;
        ok(&server_on(Some(&db.url), &["migrate"], None));
        let future = "INSERT INTO _sqlx_migrations \
            (version, description, success, checksum, execution_time) \
            VALUES (9999, 'from a newer release', TRUE, X'00', 0)";
        match backend {
            Backend::Sqlite => {
                let path = db.url.strip_prefix("sqlite://").expect("sqlite url");
                rusqlite::Connection::open(path)
                    .expect("open")
                    .execute(future, [])
                    .expect("insert");
            }
            Backend::Postgres => {
                pg_throwaway::execute(&db.url, &future.replace("X'00'", "'\\x00'::bytea"))
                    .expect("insert");
            }
        }
        for args in [&["serve", "--no-demo", "--bind", "127.0.0.1:0"][..], &["migrate"], &["subscriber", "list"]] {
            let stderr = refused(&db.url, args, None);
            assert!(
                stderr.contains("schema is at migration 9999, newer than this binary's")
                    && stderr.contains("Upgrading"),
                "{backend:?} {args:?}: {stderr}"
            );
        }
    }
}
