//! `cargo xtask contract`: schemathesis runs `openapi.yaml` against the real server, with all
//! checks, positive and negative data, and the examples, coverage and fuzzing phases; first on a
//! fresh server on SQLite, then on one on PostgreSQL (both with the demo fixture), then once
//! over TLS (SQLite, a certificate from a CA made in the run, which schemathesis trusts alone);
//! or, with `--base-url`, against a running deployment, starting nothing.
//!
//! Settings that have no command-line option (where schemathesis keeps its crash records, and
//! that its warnings fail the run) are in `schemathesis.toml` at the repository root, and so are
//! the credentials, as placeholders for environment variables: schemathesis' `--auth` would put
//! the password on a command line.

use crate::server::{DEPARTMENT, Database, TestServer};
use crate::tools::{ensure_python, python_tool};
use crate::util::{banner, display, rel, root};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The fixed seed: the same requests on every run, so that a failure reproduces.
const SEED: u64 = 1;
/// Test cases per operation and generation mode in the fuzzing phase (the examples and coverage
/// phases send what the spec dictates); about 10 s against a local server.
const MAX_EXAMPLES: u32 = 500;
/// The path parameter whose example `--department` replaces.
const DEPARTMENT_PARAMETER: &str = "serviceSubscriberDepartmentToken";
/// The environment variables that `[auth.basic]` in `schemathesis.toml` takes the Basic auth
/// credentials from.
const USER_VARIABLE: &str = "LC_CONTRACT_USER";
const PASSWORD_VARIABLE: &str = "LC_CONTRACT_PASSWORD";

/// A running deployment to test instead of servers of our own.
pub struct Deployment {
    /// The server root, e.g. `https://staging.example.com` (the API is below `/customer`).
    pub base_url: String,
    pub user: String,
    pub password: String,
    /// The department to send in positive cases instead of the spec's `demo-department`.
    pub department: Option<String>,
}

/// `cargo xtask contract [--base-url URL --user U --password P [--department TOKEN]]`.
pub fn run(deployment: Option<Deployment>) -> Result<()> {
    match deployment {
        None => run_local(),
        Some(deployment) => run_deployment(&deployment),
    }
}

/// The suite against fresh servers of our own, SQLite then PostgreSQL, then SQLite over TLS
/// (the CI step).
pub fn run_local() -> Result<()> {
    ensure_python()?;
    let sqlite = against_server("sqlite", "SQLite", &Database::Sqlite, Transport::Plain)?;
    let admin_url = crate::postgres::admin_url()?;
    let postgres = against_server(
        "postgres",
        "PostgreSQL",
        &Database::Postgres { admin_url },
        Transport::Plain,
    )?;
    // Once: the transport is the same whatever the database.
    let tls = against_server("tls", "SQLite over TLS", &Database::Sqlite, Transport::Tls)?;
    let deployment = as_a_deployment()?;
    println!(
        "contract tests passed: SQLite in {sqlite:.0?}, PostgreSQL in {postgres:.0?}, \
         TLS in {tls:.0?}, `--base-url` in {deployment:.0?}"
    );
    Ok(())
}

/// How schemathesis reaches the server.
#[derive(Clone, Copy)]
enum Transport {
    Plain,
    /// HTTPS, trusting the CA that the run made for the server and no other.
    Tls,
}

/// `cargo xtask contract --base-url ... --user ... --department ...` as README.md and
/// docs/contract-tests.md show it, with the password in `LINKED_CUSTOMER_PASSWORD`, against a
/// server of our own treated as a deployment (this program run again, so its command line is
/// what is tested).
fn as_a_deployment() -> Result<Duration> {
    banner("contract tests against a running deployment (--base-url)");
    let started = Instant::now();
    let server = TestServer::start(&Database::Sqlite)?;
    let mut xtask = Command::new(std::env::current_exe()?);
    xtask
        .args(["contract", "--base-url", &server.base_url])
        .args(["--user", &server.user, "--department", &server.department])
        .env("LINKED_CUSTOMER_PASSWORD", &server.password);
    crate::util::run(xtask).with_context(|| {
        format!(
            "`cargo xtask contract --base-url` failed; the server's log: {}",
            rel(&server.log)
        )
    })?;
    drop(server);
    Ok(started.elapsed())
}

/// The suite against a fresh server on this database; returns how long it took.
fn against_server(
    label: &'static str,
    name: &str,
    database: &Database,
    transport: Transport,
) -> Result<Duration> {
    banner(&format!("contract tests (schemathesis) on {name}"));
    let started = Instant::now();
    let server = match transport {
        Transport::Plain => TestServer::start(database)?,
        Transport::Tls => TestServer::start_tls(database)?,
    };
    let suite = Suite {
        label,
        against: format!("the server on {name}"),
        spec: root().join("openapi.yaml"),
        api_url: server.api_url(),
        user: server.user.clone(),
        password: server.password.clone(),
        ca_file: server.ca_file().map(Path::to_path_buf),
    };
    let result = suite.run().and_then(|statuses| {
        statuses.require(&[200, 204]).context(
            "the fixture must make positive cases reach a 200 (a linked customer) and a 204 \
             (none linked); see FIXTURES in xtask/src/server.rs",
        )
    });
    if let Err(err) = result {
        bail!(
            "{err:#}\nThe server's log: {}\n\
             To reproduce by hand, start the demo server (`cargo run -p linked-customer-server`, \
             same data) and run a curl command shown above with `-u demo:demo-password` and port \
             8080, or the whole suite: `cargo xtask contract --base-url http://127.0.0.1:8080 \
             --user demo --password demo-password`.",
            rel(&server.log)
        );
    }
    drop(server);
    Ok(started.elapsed())
}

fn run_deployment(deployment: &Deployment) -> Result<()> {
    ensure_python()?;
    let base_url = deployment.base_url.trim_end_matches('/');
    banner(&format!("contract tests (schemathesis) against {base_url}"));
    let spec = match &deployment.department {
        Some(department) if department != DEPARTMENT => spec_for_department(department)?,
        _ => root().join("openapi.yaml"),
    };
    let suite = Suite {
        label: "deployment",
        against: base_url.to_string(),
        spec,
        api_url: format!("{base_url}/customer"),
        user: deployment.user.clone(),
        password: deployment.password.clone(),
        ca_file: None,
    };
    let statuses = suite.run()?;
    if statuses.positive(200) + statuses.positive(204) == 0 {
        bail!(
            "no positive test case got a 200 or a 204 (statuses answered: {statuses}), so the \
             suite tested little more than the 401: check --user, --password and --department \
             (the subscriber needs the scope customer.search on that department)"
        );
    }
    if statuses.positive(200) == 0 {
        println!(
            "warning: no positive case got a 200, so the 200 response's schema went untested; the \
             examples ask for ORDER 1001 in the department, link a customer to it to cover it"
        );
    }
    println!("contract tests against {base_url} passed");
    Ok(())
}

/// A copy of `openapi.yaml` whose department parameter has the given example, so that the
/// examples and coverage phases (which start from the examples) ask the deployment for its own
/// department; the negative cases still send malformed tokens.
///
/// Schemathesis' own override (`[parameters]` in its config) would not do: it pins the value in
/// negative cases too, which then get a 200 that schemathesis reports as a schema-violating
/// request accepted (ST201).
fn spec_for_department(department: &str) -> Result<PathBuf> {
    let valid = (1..=64).contains(&department.len())
        && department
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        bail!(
            "--department {department:?} is not a department token as openapi.yaml defines it \
             (1 to 64 of A-Z a-z 0-9 _ -)"
        );
    }
    let source = root().join("openapi.yaml");
    let mut spec: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(&source)?)
        .with_context(|| format!("parsing {}", rel(&source)))?;
    let mut replaced = 0;
    let paths = spec
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
        .context("openapi.yaml has no paths")?;
    for (_, path_item) in paths.iter_mut() {
        let Some(path_item) = path_item.as_object_mut() else {
            continue;
        };
        for (_, operation) in path_item.iter_mut() {
            let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(serde_json::Value::as_array_mut)
            else {
                continue;
            };
            for parameter in parameters {
                if parameter.get("name").and_then(serde_json::Value::as_str)
                    == Some(DEPARTMENT_PARAMETER)
                {
                    parameter["example"] = department.into();
                    replaced += 1;
                }
            }
        }
    }
    if replaced == 0 {
        bail!("openapi.yaml has no parameter {DEPARTMENT_PARAMETER} whose example to replace");
    }
    // JSON is YAML too, and needs no YAML writer.
    let path = report_dir().join("openapi.deployment.json");
    std::fs::create_dir_all(report_dir())?;
    std::fs::write(&path, serde_json::to_string_pretty(&spec)?)?;
    println!(
        "{} is openapi.yaml with the example of {DEPARTMENT_PARAMETER} set to {department:?}",
        rel(&path)
    );
    Ok(path)
}

fn report_dir() -> PathBuf {
    crate::util::target_dir().join("contract")
}

/// One schemathesis run.
struct Suite {
    /// Names the report files: `target/contract/junit-<label>.xml`.
    label: &'static str,
    /// For messages: what the run talks to.
    against: String,
    spec: PathBuf,
    /// The API's base URL: the spec's `servers[0].url` (`/customer`) below the server root.
    api_url: String,
    user: String,
    password: String,
    /// Over TLS to a server of our own: the only CA to trust (schemathesis' `--tls-verify`);
    /// `None`: the system's roots.
    ca_file: Option<PathBuf>,
}

impl Suite {
    fn junit(&self) -> PathBuf {
        report_dir().join(format!("junit-{}.xml", self.label))
    }

    fn events(&self) -> PathBuf {
        report_dir().join(format!("events-{}.ndjson", self.label))
    }

    /// The command line; the credentials go in the environment, where `[auth.basic]` of
    /// `schemathesis.toml` reads them (a command line is visible to every user in `ps`).
    fn command(&self) -> Command {
        let mut cmd = python_tool("st");
        cmd.env(USER_VARIABLE, &self.user)
            .env(PASSWORD_VARIABLE, &self.password)
            .arg("--config-file")
            .arg(root().join("schemathesis.toml"))
            .arg("run")
            .arg(&self.spec)
            .args(["--url", &self.api_url])
            .args(["--checks", "all"])
            .args(["--mode", "all"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--seed", &SEED.to_string()])
            .args(["--max-examples", &MAX_EXAMPLES.to_string()])
            .args(["--generation-database", "none"])
            .arg("--report-junit-path")
            .arg(self.junit())
            .arg("--report-ndjson-path")
            .arg(self.events())
            .current_dir(root());
        if let Some(ca_file) = &self.ca_file {
            cmd.arg("--tls-verify").arg(ca_file);
        }
        cmd
    }

    /// Runs schemathesis; on success, returns the statuses the server answered with.
    fn run(&self) -> Result<Statuses> {
        std::fs::create_dir_all(report_dir())?;
        for old in [self.junit(), self.events()] {
            let _ = std::fs::remove_file(old);
        }
        // Schemathesis replays the requests of its cache (`cache.directory` in schemathesis.toml)
        // before a run; starting from none keeps the run a function of the seed.
        let _ = std::fs::remove_dir_all(report_dir().join("cache"));
        let mut cmd = self.command();
        let shown = display(&cmd);
        println!("$ {shown}");
        let status = cmd
            .status()
            .with_context(|| format!("could not start `{shown}`"))?;
        let statuses = Statuses::read(&self.events());
        match &statuses {
            Ok(statuses) => println!("statuses answered: {statuses}"),
            Err(err) => println!("could not count the statuses answered: {err:#}"),
        }
        if !status.success() {
            bail!(
                "schemathesis failed against {} ({status}).\n\
                 Above, under the operation, each failure has its code and the check that failed \
                 (e.g. `ST108 Response violates schema`), what was wrong, the response, and a curl \
                 command that reproduces it (its Authorization header shows as [Filtered]: use \
                 `-u USER:PASSWORD` instead); a run without failures fails on the warnings of its \
                 summary (e.g. `Authentication failed`).\n\
                 JUnit report: {}\n\
                 The run: {shown}",
                self.against,
                rel(&self.junit()),
            );
        }
        println!(
            "schemathesis passed against {}; JUnit report: {}",
            self.against,
            rel(&self.junit())
        );
        statuses
    }
}

/// How many responses of each status the server gave, for positive and negative test cases.
#[derive(Default)]
struct Statuses {
    /// (mode, status) -> count; mode is `positive` or `negative` as schemathesis generated it.
    counts: BTreeMap<(String, u16), usize>,
}

impl Statuses {
    /// Reads schemathesis' NDJSON event stream: every `ScenarioFinished` event holds the test
    /// cases (with their generation mode) and the interactions (with the response status).
    fn read(path: &Path) -> Result<Statuses> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", rel(path)))?;
        let mut statuses = Statuses::default();
        for line in std::io::BufReader::new(file).lines() {
            let line = line?;
            if !line.starts_with("{\"ScenarioFinished\"") {
                continue;
            }
            let event: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("an event of {}", rel(path)))?;
            let recorder = &event["ScenarioFinished"]["recorder"];
            let Some(interactions) = recorder["interactions"].as_object() else {
                continue;
            };
            for (id, interaction) in interactions {
                let Some(status) = interaction["response"]["status_code"].as_u64() else {
                    continue;
                };
                let mode = recorder["cases"][id]["value"]["meta"]["generation"]["mode"]
                    .as_str()
                    .unwrap_or("unknown");
                *statuses
                    .counts
                    .entry((mode.to_string(), u16::try_from(status)?))
                    .or_default() += 1;
            }
        }
        Ok(statuses)
    }

    fn positive(&self, status: u16) -> usize {
        self.counts
            .get(&("positive".to_string(), status))
            .copied()
            .unwrap_or_default()
    }

    /// Fails unless positive test cases got each of these statuses.
    fn require(&self, wanted: &[u16]) -> Result<()> {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|status| self.positive(**status) == 0)
            .map(u16::to_string)
            .collect();
        if !missing.is_empty() {
            bail!(
                "no positive test case got a {} (statuses answered: {self})",
                missing.join(" or ")
            );
        }
        Ok(())
    }
}

impl std::fmt::Display for Statuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.counts.is_empty() {
            return write!(f, "none recorded");
        }
        let mut modes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for ((mode, status), count) in &self.counts {
            modes
                .entry(mode)
                .or_default()
                .push(format!("{status} x{count}"));
        }
        let parts: Vec<String> = modes
            .iter()
            .rev() // positive first
            .map(|(mode, counts)| format!("{mode}: {}", counts.join(", ")))
            .collect();
        write!(f, "{}", parts.join("; "))
    }
}
