//! `cargo xtask upgrade-check [--from COMMIT]`: after a newer server has migrated a database,
//! does a server binary from an older commit still run against it (a rolling upgrade, or a
//! rollback)? Not in `cargo xtask ci` (it builds a whole old tree); for an operator or a
//! release engineer before a release.
//!
//! What it proves, on SQLite and on PostgreSQL (a throwaway database on the cluster that
//! `cargo xtask test` uses, dropped after the run):
//!
//! 1. the old commit's `linked-customer-server` is built from `git archive` of that commit in
//!    `target/upgrade-check/` (its own `CARGO_TARGET_DIR` there, kept between runs) and cached
//!    as `target/upgrade-check/<commit>/linked-customer-server`; the new one is the working
//!    tree's debug build, as the other xtask steps build it;
//! 2. the new binary migrates a fresh database, imports a few customers of one department and
//!    adds a subscriber (password on stdin, the database URL in `DATABASE_URL` only);
//! 3. the new binary serves: the answers (status and body) to a lookup of every link, of an
//!    unlinked entity (204) and with a wrong password (401) are recorded, asked twice a second
//!    apart so that a body that depends on the time or the request would show;
//! 4. the old binary starts on that database (running its own migrations, which is part of the
//!    test) and either answers exactly the same, or refuses to start: it exits non-zero with a
//!    message on stderr naming the schema or migration problem. Anything else fails the check;
//! 5. the new binary serves again and answers exactly as before: the old one damaged nothing.
//!
//! It ends with a table: per database, whether the old binary serves with identical answers or
//! refuses (with its message). Anything that cannot be built or started fails the command.

use crate::bench::{self, add_subscriber, customer_line, department};
use crate::chaos::basic;
use crate::util::{banner, capture, cargo_locked, random_hex, rel, run, target_dir};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The release the check runs against by default.
pub const DEFAULT_OLD: &str = "82e9b1063c111f30d0f40d7e2cc97ac3d28fc662";
const USER: &str = "upgrade-check";
/// The customers imported (by the bench's generator): all in the department of index 0.
const CUSTOMERS: [usize; 3] = [0, bench::DEPARTMENTS, 2 * bench::DEPARTMENTS];

/// What the old binary did on a database the new one had migrated.
enum Outcome {
    Identical { requests: usize },
    Refused { message: String },
}

/// A server binary and how its `serve` is asked to listen on a free loopback port.
struct Binary {
    name: &'static str,
    path: PathBuf,
    serve: Vec<&'static str>,
}

pub fn run_check(old: &str) -> Result<()> {
    let started = Instant::now();
    let commit = resolve(old)?;
    let short = &commit[..7];
    let work = target_dir().join("upgrade-check");
    banner(&format!("the old server binary, {short}"));
    let old_binary = Binary::new("old", build_old(&work, &commit)?)?;
    banner("the new server binary (the working tree)");
    let new_binary = Binary::new("new", crate::server::build()?)?;

    let run_dir = work.join(format!("run-{}", random_hex(4)?));
    std::fs::create_dir_all(&run_dir)?;
    let data = run_dir.join("customers.jsonl");
    let lines: Vec<String> = CUSTOMERS
        .iter()
        .map(|&index| customer_line(index).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n")?;

    let mut table = Vec::new();
    for database in ["SQLite", "PostgreSQL"] {
        banner(&format!(
            "{database}: new, then old ({short}), then new again"
        ));
        let throwaway = match database {
            "PostgreSQL" => Some(pg_throwaway::Throwaway::create(
                &crate::postgres::admin_url()?,
                "lc_upgrade",
            )?),
            _ => None,
        };
        let url = match &throwaway {
            Some(postgres) => postgres.url().to_string(),
            None => format!("sqlite://{}", run_dir.join("db.sqlite").display()),
        };
        let outcome = check(&new_binary, &old_binary, &url, &data, &run_dir, database)
            .with_context(|| format!("upgrade check on {database} (logs in {})", rel(&run_dir)))?;
        table.push((database, outcome));
    }
    std::fs::remove_dir_all(&run_dir)?;

    println!(
        "\n{:<11} {:<11} old binary on the new schema",
        "database", "old commit"
    );
    for (database, outcome) in &table {
        let result = match outcome {
            Outcome::Identical { requests } => {
                format!("serves with identical answers ({requests} requests)")
            }
            Outcome::Refused { message } => format!("refuses with: {message}"),
        };
        println!("{database:<11} {short:<11} {result}");
    }
    println!(
        "\nupgrade-check done in {:.0} s; the new binary answered identically after the old one \
         on every database",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Steps 2 to 5 on one database.
fn check(
    new: &Binary,
    old: &Binary,
    url: &str,
    data: &Path,
    work: &Path,
    database: &str,
) -> Result<Outcome> {
    let key = database.to_lowercase();
    step(new, url, &["migrate"])?;
    let imported = step(new, url, &["import", &data.to_string_lossy()])?;
    print!("{imported}");
    let password = format!("pw-{}", random_hex(12)?);
    add_subscriber(&new.path, url, USER, &password, 1)?;
    println!(
        "new: migrated, imported {} customers, added {USER}",
        CUSTOMERS.len()
    );

    let requests = requests(&password);
    let before = serve(new, url, &work.join(format!("{key}-new.log")), &requests, 2)?
        .context("the new binary refused to start on the database it had just made")?;
    sanity(&requests, &before)?;

    let log = work.join(format!("{key}-old.log"));
    let outcome = match serve(old, url, &log, &requests, 1)? {
        Some(answers) => {
            same(&before, &answers, "the old binary")?;
            println!("old: {} identical answers", answers.len());
            Outcome::Identical {
                requests: answers.len(),
            }
        }
        None => {
            let stderr = std::fs::read_to_string(&log)?;
            let message = refusal(&stderr);
            let lower = stderr.to_lowercase();
            ensure!(
                ["migrat", "schema"].iter().any(|word| lower.contains(word)),
                "the old binary refused to start, but its stderr names no schema or migration \
                 problem:\n{stderr}"
            );
            println!("old: refused to start: {message}");
            Outcome::Refused {
                message: short(&message).to_string(),
            }
        }
    };

    let after = serve(
        new,
        url,
        &work.join(format!("{key}-new-again.log")),
        &requests,
        1,
    )?
    .context("the new binary refused to start again after the old one had run")?;
    same(&before, &after, "the new binary after the old one")?;
    println!("new again: {} identical answers", after.len());
    Ok(outcome)
}

/// The full commit id of `old`, which must name a commit.
fn resolve(old: &str) -> Result<String> {
    let mut git = Command::new("git");
    git.args([
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{old}^{{commit}}"),
    ]);
    let output = capture(git)?;
    ensure!(
        output.status.success(),
        "{old:?} is not a commit of this repository"
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// `target/upgrade-check/<commit>/linked-customer-server`, built from `git archive` of the
/// commit unless it is there already.
fn build_old(work: &Path, commit: &str) -> Result<PathBuf> {
    let dir = work.join(commit);
    let cached = dir.join("linked-customer-server");
    if cached.is_file() {
        println!("cached: {}", rel(&cached));
        return Ok(cached);
    }
    let tree = dir.join("tree");
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    std::fs::create_dir_all(&tree)?;
    let archive = dir.join("tree.tar");
    let mut git = Command::new("git");
    git.args(["archive", "--format=tar", "-o"])
        .arg(&archive)
        .arg(commit);
    run(git)?;
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(&archive).arg("-C").arg(&tree);
    run(tar)?;
    std::fs::remove_file(&archive)?;
    let targets = work.join("target");
    let mut build = cargo_locked("build");
    build
        .args(["-p", "linked-customer-server"])
        .current_dir(&tree)
        .env("CARGO_TARGET_DIR", &targets);
    run(build).with_context(|| format!("building the server of {commit}"))?;
    let built = targets.join("debug/linked-customer-server");
    let partial = dir.join(format!("linked-customer-server.{}", random_hex(4)?));
    std::fs::copy(&built, &partial)
        .with_context(|| format!("copying {} to {}", rel(&built), rel(&dir)))?;
    std::fs::rename(&partial, &cached)?;
    std::fs::remove_dir_all(&tree)?;
    println!("built and cached: {}", rel(&cached));
    Ok(cached)
}

impl Binary {
    /// The binary, with its `serve` arguments from what its `serve --help` offers.
    fn new(name: &'static str, path: PathBuf) -> Result<Binary> {
        let mut help = server_command(&path, "");
        help.args(["serve", "--help"]);
        let output = capture(help)?;
        let text = String::from_utf8_lossy(&output.stdout);
        ensure!(
            output.status.success() && text.contains("--bind"),
            "`{} serve --help` offers no --bind (exit {}): {text}{}",
            rel(&path),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        ensure!(
            text.contains("DATABASE_URL"),
            "`{} serve --help` reads no DATABASE_URL: the URL would have to go on its command line",
            rel(&path)
        );
        let mut serve = vec!["serve", "--bind", "127.0.0.1:0"];
        // Without it, an older server may load its demo data (and login) into the database.
        if text.contains("--no-demo") {
            serve.push("--no-demo");
        }
        println!("{name}: {} {}", rel(&path), serve.join(" "));
        Ok(Binary { name, path, serve })
    }
}

/// The binary with `url` in `DATABASE_URL` and none of the caller's other server settings.
fn server_command(binary: &Path, url: &str) -> Command {
    let mut cmd = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("LINKED_CUSTOMER_")
            || name.starts_with("DATABASE_")
            || name == "RUST_LOG"
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("DATABASE_URL", url);
    cmd
}

/// Runs a command of the server that exits (migrate, import); its standard output.
fn step(binary: &Binary, url: &str, args: &[&str]) -> Result<String> {
    let mut cmd = server_command(&binary.path, url);
    cmd.args(args);
    let output = capture(cmd)?;
    ensure!(
        output.status.success(),
        "`{} {}` ({}) failed ({}): {}",
        binary.name,
        args.join(" "),
        rel(&binary.path),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A request and the answer it must get.
struct Request {
    path: String,
    auth: String,
    /// 200 with this `customerId`, or a status with no customer.
    expect: Expect,
}

enum Expect {
    Customer(String),
    Status(u16),
}

type Answer = (u16, String);

/// A lookup of every link, of an unlinked order, and one with a wrong password.
fn requests(password: &str) -> Vec<Request> {
    let department = department(0);
    let path = |entity: &str, id: u64| {
        format!("/customer/v2/department/{department}/entity/{entity}/{id}/customer")
    };
    let mut requests = Vec::new();
    for index in CUSTOMERS {
        let line = customer_line(index);
        let customer_id = line["customer"]["customerId"].as_str().unwrap_or_default();
        for link in line["links"].as_array().into_iter().flatten() {
            let entity = link["entity"].as_str().unwrap_or_default();
            let id = link["entityId"].as_u64().unwrap_or_default();
            requests.push(Request {
                path: path(entity, id),
                auth: basic(USER, password),
                expect: Expect::Customer(customer_id.to_string()),
            });
        }
    }
    requests.push(Request {
        path: path("ORDER", crate::server::UNLINKED_ORDER as u64),
        auth: basic(USER, password),
        expect: Expect::Status(204),
    });
    requests.push(Request {
        path: path("ORDER", 1),
        auth: basic(USER, &format!("{password}-wrong")),
        expect: Expect::Status(401),
    });
    requests
}

/// The new binary's first answers are the ones the API promises.
fn sanity(requests: &[Request], answers: &[Answer]) -> Result<()> {
    for (request, (status, body)) in requests.iter().zip(answers) {
        match &request.expect {
            Expect::Customer(id) => ensure!(
                *status == 200 && body.contains(&format!("\"customerId\":\"{id}\"")),
                "GET {} answered {status}, not 200 with customer {id}: {body}",
                request.path
            ),
            Expect::Status(expected) => ensure!(
                status == expected && (*expected != 204 || body.is_empty()),
                "GET {} answered {status}, not {expected}: {body}",
                request.path
            ),
        }
    }
    Ok(())
}

/// Every answer of `answers` equals the one in `expected`.
fn same(expected: &[Answer], answers: &[Answer], who: &str) -> Result<()> {
    ensure!(
        expected.len() == answers.len(),
        "{who} gave {} answers, not {}",
        answers.len(),
        expected.len()
    );
    let differences: Vec<String> = expected
        .iter()
        .zip(answers)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| {
            format!(
                "request {}: {} {:?}\n  now {} {:?}",
                i + 1,
                a.0,
                a.1,
                b.0,
                b.1
            )
        })
        .collect();
    ensure!(
        differences.is_empty(),
        "{who} answered differently:\n{}",
        differences.join("\n")
    );
    Ok(())
}

/// Starts `binary` on `url`, asks `requests` `rounds` times (a second apart; every round must
/// answer the same) and stops it with SIGTERM; `None` when it exited without listening.
fn serve(
    binary: &Binary,
    url: &str,
    log: &Path,
    requests: &[Request],
    rounds: usize,
) -> Result<Option<Vec<Answer>>> {
    let Some(mut server) = Running::start(binary, url, log)? else {
        return Ok(None);
    };
    let (status, _) = bench::get(&server.address, "/healthz", None)?;
    ensure!(status == 200, "{}: /healthz answered {status}", binary.name);
    let mut first: Option<Vec<Answer>> = None;
    for round in 0..rounds {
        if round > 0 {
            std::thread::sleep(Duration::from_millis(1100));
        }
        let answers = requests
            .iter()
            .map(|request| bench::get(&server.address, &request.path, Some(&request.auth)))
            .collect::<Result<Vec<Answer>>>()?;
        match &first {
            Some(first) => same(
                first,
                &answers,
                &format!("{}, a second later,", binary.name),
            )
            .context("an answer depends on the time or on the request")?,
            None => first = Some(answers),
        }
    }
    server.stop()?;
    Ok(first)
}

/// A server that said `listening on`; killed if dropped before [`Running::stop`].
struct Running {
    name: &'static str,
    child: Child,
    address: String,
}

impl Running {
    /// `None` when the server exited (non-zero) before listening; its stderr is in `log`.
    fn start(binary: &Binary, url: &str, log: &Path) -> Result<Option<Running>> {
        let mut serve = server_command(&binary.path, url);
        serve
            .args(&binary.serve)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?);
        println!("$ {}", crate::util::display(&serve));
        let mut child = serve
            .spawn()
            .with_context(|| format!("starting the {} binary", binary.name))?;
        let receiver = crate::server::listening_on(child.stdout.take().context("no stdout")?);
        let mut server = Running {
            name: binary.name,
            child,
            address: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match receiver.recv_timeout(Duration::from_millis(100)) {
                Ok(url) => {
                    let address = url.split_once("://").map_or(url.as_str(), |(_, a)| a);
                    server.address = address.to_string();
                    println!("{} listening on {url} (log: {})", binary.name, rel(log));
                    return Ok(Some(server));
                }
                Err(_) => {
                    if let Some(status) = server.exited_within(Duration::ZERO)? {
                        ensure!(
                            !status.success(),
                            "the {} binary exited {status} without listening",
                            binary.name
                        );
                        println!("{}: exited without listening ({status})", binary.name);
                        return Ok(None);
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "the {} binary neither listened nor exited within 60 s; its log: {}",
                        binary.name,
                        rel(log)
                    );
                }
            }
        }
    }

    /// SIGTERM, then its exit, which must be a success.
    fn stop(&mut self) -> Result<()> {
        let mut kill = Command::new("kill");
        kill.args(["-TERM", &self.child.id().to_string()]);
        let output = capture(kill)?;
        ensure!(output.status.success(), "kill -TERM failed");
        let Some(status) = self.exited_within(Duration::from_secs(30))? else {
            bail!(
                "the {} binary did not exit within 30 s of SIGTERM",
                self.name
            );
        };
        ensure!(
            status.success(),
            "the {} binary exited {status} on SIGTERM",
            self.name
        );
        Ok(())
    }

    fn exited_within(&mut self, time: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + time;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A refusal for the table: without `error: ` and the `database URL: ` the server puts first.
fn short(message: &str) -> &str {
    let message = message.strip_prefix("error: ").unwrap_or(message);
    match message.split_once(": ") {
        Some((database, rest)) if database.starts_with("database ") => rest,
        _ => message,
    }
}

/// The `error: ...` lines of a refusal's stderr (else its last line), on one line.
fn refusal(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error"))
        .collect();
    if errors.is_empty() {
        let last = stderr.lines().rev().find(|line| !line.trim().is_empty());
        return last.unwrap_or_default().to_string();
    }
    errors.join("; ")
}
