//! The real server for xtask's end-to-end steps (contract tests, other-language clients, the
//! browser test): built, given a fresh database with fixture data and a subscriber, started on
//! a free port (in plain HTTP, or over TLS with a certificate from a CA made in the run), and
//! stopped (its database dropped) when the handle is dropped.

use crate::tls::LocalTls;
use crate::util::{capture_with_input, cargo_locked, random_hex, root, run, target_dir};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the fresh database lives.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite,
    /// A throwaway database on the PostgreSQL server of this admin URL (see `postgres.rs`).
    Postgres {
        admin_url: String,
    },
}

/// The fixture every end-to-end step uses: the demo customer (linked to `ORDER` 1001 and
/// `APPOINTMENT` 2001 of `demo-department`, every field filled, two vehicles), which the spec's
/// examples name, so example-driven requests reach a real 200.
pub const FIXTURES: &[&str] = &["server/demo/demo.jsonl"];
pub const DEPARTMENT: &str = "demo-department";
pub const USER: &str = "xtask";
/// An entity with no linked customer in the fixture (for a 204).
pub const UNLINKED_ORDER: i64 = 999_999;

pub struct TestServer {
    /// The server root, e.g. `http://127.0.0.1:40123`, or `https://localhost:40123` over TLS
    /// (the API is below `/customer`).
    pub base_url: String,
    pub user: String,
    pub password: String,
    pub department: String,
    pub log: PathBuf,
    /// `127.0.0.1:PORT`, where it listens.
    address: String,
    /// Over TLS: the CA's certificate, the server's, and a client that trusts the CA alone.
    tls: Option<LocalTls>,
    child: Child,
    /// Declared after `child`: the server stops before its database is dropped.
    _database: Option<pg_throwaway::Throwaway>,
}

/// Builds `linked-customer-server` (debug) and returns the path of the binary.
pub fn build() -> Result<PathBuf> {
    let mut build = cargo_locked("build");
    build.args(["--quiet", "-p", "linked-customer-server"]);
    run(build)?;
    Ok(target_dir().join("debug/linked-customer-server"))
}

impl TestServer {
    /// The server in plain HTTP.
    pub fn start(database: &Database) -> Result<TestServer> {
        TestServer::launch(database, false)
    }

    /// The server over TLS, with a certificate for `localhost` and `127.0.0.1` from a CA made
    /// here (see [`TestServer::ca_file`]).
    pub fn start_tls(database: &Database) -> Result<TestServer> {
        TestServer::launch(database, true)
    }

    /// The certificate of the CA that a server over TLS has its certificate from (PEM).
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.ca.as_path())
    }

    fn launch(database: &Database, tls: bool) -> Result<TestServer> {
        let binary = build()?;
        let suffix = random_hex(8)?;
        let work = target_dir().join("xtask/servers").join(&suffix);
        std::fs::create_dir_all(&work)?;
        let throwaway = match database {
            Database::Sqlite => None,
            Database::Postgres { admin_url } => {
                Some(pg_throwaway::Throwaway::create(admin_url, "lc_xtask")?)
            }
        };
        let database_url = match &throwaway {
            Some(postgres) => postgres.url().to_string(),
            None => format!("sqlite://{}", work.join("db.sqlite").display()),
        };
        for fixture in FIXTURES {
            let mut import = Command::new(&binary);
            import
                .arg("import")
                .arg(root().join(fixture))
                .env("DATABASE_URL", &database_url);
            quiet(import).with_context(|| format!("importing {fixture}"))?;
        }
        let password = format!("pw-{}", random_hex(8)?);
        let mut add = Command::new(&binary);
        add.args([
            "subscriber",
            "add",
            "--username",
            USER,
            "--password-stdin",
            "--department",
            DEPARTMENT,
            "--scope",
            "customer.search",
        ])
        .env("DATABASE_URL", &database_url);
        with_stdin(add, &format!("{password}\n")).context("adding the test subscriber")?;

        let log = work.join("server.log");
        let mut serve = Command::new(&binary);
        serve.args(["serve", "--bind", "127.0.0.1:0", "--no-demo"]);
        let tls = if tls {
            Some(tls_files(&work, &mut serve)?)
        } else {
            None
        };
        let mut child = serve
            .env("DATABASE_URL", &database_url)
            // Schemathesis sends hundreds of requests, many with credentials it made up: with the
            // production budgets most would be 429s, and the contract would be tested less.
            .env("LINKED_CUSTOMER_PASSWORD_CHECKS_PER_USERNAME", "100000")
            .env("LINKED_CUSTOMER_PASSWORD_CHECKS_PER_ADDRESS", "100000")
            // Every answer held to openapi.yaml: one that departs is a 500, which the contract
            // tests and the clients then fail on.
            .env("LINKED_CUSTOMER_CONTRACT_GUARD", "enforce")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting linked-customer-server")?;
        let receiver = listening_on(child.stdout.take().context("no stdout")?);
        let mut server = TestServer {
            base_url: String::new(),
            user: USER.to_string(),
            password,
            department: DEPARTMENT.to_string(),
            log,
            address: String::new(),
            tls,
            child,
            _database: throwaway,
        };
        let Ok(base) = receiver.recv_timeout(Duration::from_secs(60)) else {
            bail!(
                "the server did not start within 60 s; its log: {}",
                server.log.display()
            );
        };
        (server.base_url, server.address) = base_and_address(&base)?;
        server.wait_healthy()?;
        println!(
            "server {} on {} (log: {})",
            server.base_url,
            match database {
                Database::Sqlite => "SQLite",
                Database::Postgres { .. } => "PostgreSQL",
            },
            server.log.display()
        );
        Ok(server)
    }

    fn wait_healthy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.healthz(), Ok(200)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let last = self
            .healthz()
            .map_or_else(|err| format!("{err:#}"), |s| s.to_string());
        bail!(
            "{}/healthz did not answer 200 within 30 s (last: {last})",
            self.base_url
        )
    }

    /// The status of `/healthz`; over TLS, through a client that trusts the run's CA alone.
    fn healthz(&self) -> Result<u16> {
        let (status, _) = match &self.tls {
            Some(tls) => tls.client.get(&self.address, "/healthz", None)?,
            None => {
                let stream = std::net::TcpStream::connect(&self.address)?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                crate::bench::exchange(stream, &self.address, "/healthz", None)?
            }
        };
        Ok(status)
    }

    /// The API's base URL (the spec's `servers[0].url` below the server root).
    pub fn api_url(&self) -> String {
        format!("{}/customer", self.base_url)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The root that clients call and the `127.0.0.1:PORT` that the server listens on, from the
/// root it announced; over TLS, clients call it by the certificate's host name, as a deployment
/// is called.
fn base_and_address(announced: &str) -> Result<(String, String)> {
    let (scheme, address) = announced
        .split_once("://")
        .with_context(|| format!("the server announced {announced:?}"))?;
    let base = match (scheme, address.rsplit_once(':')) {
        ("https", Some((_, port))) => format!("https://localhost:{port}"),
        _ => announced.to_string(),
    };
    Ok((base, address.to_string()))
}

/// A CA made for this server and a certificate of it for `localhost` and `127.0.0.1`, in
/// `work`, given to `serve`.
fn tls_files(work: &Path, serve: &mut Command) -> Result<LocalTls> {
    let tls = LocalTls::make(work, "server")?;
    serve
        .arg("--tls-cert")
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key);
    Ok(tls)
}

fn quiet(mut cmd: Command) -> Result<()> {
    let output = cmd.output()?;
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn with_stdin(cmd: Command, input: &str) -> Result<()> {
    let output = capture_with_input(cmd, input)?;
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// `postgres://user:secret@host/db` as `postgres://user@host/db` and `secret` (percent-decoded);
/// a URL without a password comes back as it is.
pub(crate) fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let Some((user, password)) = userinfo.split_once(':') else {
        return (url.to_string(), None);
    };
    (
        format!("{scheme}://{user}@{host}{tail}"),
        Some(percent_decode(password)),
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL that a server's stdout announces (`listening on URL`), sent once it does; the rest
/// of its stdout is read and dropped.
pub fn listening_on(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(base) = line.strip_prefix("listening on ") {
                let _ = sender.send(base.to_string());
            }
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::split_password;

    #[test]
    fn the_password_leaves_the_url() {
        assert_eq!(
            split_password("postgres://u:p%40ss@127.0.0.1:5432/postgres?sslmode=disable"),
            (
                "postgres://u@127.0.0.1:5432/postgres?sslmode=disable".to_string(),
                Some("p@ss".to_string())
            )
        );
        for url in [
            "postgres://u@host/db",
            "postgres:///db?host=/run/postgresql",
        ] {
            assert_eq!(split_password(url), (url.to_string(), None));
        }
    }
}
