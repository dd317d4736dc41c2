//! A PostgreSQL server for the tests, found or made available without manual steps:
//! `TEST_POSTGRES_URL` when given; otherwise the local cluster (started if stopped, installed
//! from Debian's packages if missing and we are root), with a test role that may create and
//! drop its own throwaway databases.

use crate::util::{banner, capture, run};
use anyhow::{Context, Result, bail};
use std::process::Command;

const ROLE: &str = "linked_customer_test";

/// A URL for a role that may create databases, e.g. `postgres://u:p@127.0.0.1:5432/postgres`.
pub fn admin_url() -> Result<String> {
    if let Ok(url) = std::env::var("TEST_POSTGRES_URL")
        && !url.is_empty()
    {
        return Ok(url);
    }
    banner("making PostgreSQL available for the tests");
    if !has("pg_lsclusters") {
        install()?;
    }
    let (version, name, port, status) = cluster()?;
    if status != "online" {
        let mut start = Command::new("pg_ctlcluster");
        start.args([&version, &name, "start"]);
        run(start).context("could not start the PostgreSQL cluster")?;
    }
    let password = test_role_password()?;
    let sql = format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN \
             CREATE ROLE {ROLE} LOGIN CREATEDB; \
           END IF; \
         END $$; \
         ALTER ROLE {ROLE} WITH LOGIN CREATEDB PASSWORD '{password}';"
    );
    let output = as_postgres_user(&format!("psql -q -p {port} -v ON_ERROR_STOP=1"), &sql)?;
    if !output.status.success() {
        bail!(
            "could not create the test role as the postgres user: {}\n\
             set TEST_POSTGRES_URL=postgres://USER:PASSWORD@HOST:PORT/postgres for a role that may create databases",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    println!("PostgreSQL {version}/{name} on port {port}, role {ROLE}");
    Ok(format!(
        "postgres://{ROLE}:{password}@127.0.0.1:{port}/postgres"
    ))
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn install() -> Result<()> {
    crate::util::apt_install(
        &["postgresql"],
        "PostgreSQL is not installed and this is not root: install it (Debian: apt-get install postgresql) \
         or set TEST_POSTGRES_URL=postgres://USER:PASSWORD@HOST:PORT/postgres",
    )
}

/// The first local cluster: (version, name, port, status).
fn cluster() -> Result<(String, String, String, String)> {
    let mut list = Command::new("pg_lsclusters");
    list.arg("--no-header");
    let output = capture(list)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = text
        .lines()
        .next()
        .context("PostgreSQL is installed but has no cluster (pg_createcluster 15 main)")?
        .split_whitespace()
        .collect();
    match fields.as_slice() {
        [version, name, port, status, ..] => Ok((
            version.to_string(),
            name.to_string(),
            port.to_string(),
            status.to_string(),
        )),
        _ => bail!("cannot read pg_lsclusters output: {text}"),
    }
}

/// Runs a shell command as the `postgres` user with `input` on its standard input (the SQL
/// goes there, not on a command line that `ps` would show).
fn as_postgres_user(command: &str, input: &str) -> Result<std::process::Output> {
    if !crate::util::is_root() {
        bail!(
            "creating the test role needs root (to act as the postgres user); set TEST_POSTGRES_URL instead"
        );
    }
    let mut su = Command::new("su");
    su.args(["postgres", "-s", "/bin/sh", "-c", command])
        .current_dir("/");
    crate::util::capture_with_input(su, input)
}

/// The test role's password: random, made once per checkout and kept in the git-ignored
/// `.tools/` folder, so that concurrent runs (which each set it) agree on it.
fn test_role_password() -> Result<String> {
    let path = crate::util::root().join(".tools/postgres-test-password");
    if let Ok(password) = std::fs::read_to_string(&path)
        && password.len() == 32
        && password.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Ok(password);
    }
    let password = crate::util::random_hex(16)?;
    std::fs::create_dir_all(path.parent().context("no parent")?)?;
    std::fs::write(&path, &password)?;
    Ok(password)
}
