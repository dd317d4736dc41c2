//! The real server for xtask's end-to-end steps (contract tests, other-language clients, the
//! browser test): built, given a fresh database with fixture data and a subscriber, started on
//! a free port, and stopped (its database dropped) when the handle is dropped.

use crate::util::{capture_with_input, cargo_locked, random_hex, root, run, target_dir};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
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
    /// The server root, e.g. `http://127.0.0.1:40123` (the API is below `/customer`).
    pub base_url: String,
    pub user: String,
    pub password: String,
    pub department: String,
    pub log: PathBuf,
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
    pub fn start(database: &Database) -> Result<TestServer> {
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
        let mut child = Command::new(&binary)
            .args(["serve", "--bind", "127.0.0.1:0", "--no-demo"])
            .env("DATABASE_URL", &database_url)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting linked-customer-server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(base) = line.strip_prefix("listening on ") {
                    let _ = sender.send(base.to_string());
                }
            }
        });
        let mut server = TestServer {
            base_url: String::new(),
            user: USER.to_string(),
            password,
            department: DEPARTMENT.to_string(),
            log,
            child,
            _database: throwaway,
        };
        match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => server.base_url = base,
            Err(_) => bail!(
                "the server did not start within 60 s; its log: {}",
                server.log.display()
            ),
        }
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
        let address = self
            .base_url
            .strip_prefix("http://")
            .context("base URL is not http")?
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
                let _ = stream.write_all(
                    format!(
                        "GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
                let mut answer = String::new();
                let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
                if answer.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{}/healthz did not answer 200 within 30 s", self.base_url)
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
