//! `cargo xtask <command>`: the project's checks, generators and test drivers, in Rust so that
//! there are no shell scripts to remember (see `cargo xtask --help`).

mod bench;
mod browser;
mod chaos;
mod ci;
mod clients;
mod cluster;
mod codegen;
mod contract;
mod deny;
mod deploy;
mod fuzz;
mod guessing;
mod image;
mod pg_tls;
mod pgcluster;
mod postgres;
mod server;
mod spec_diff;
mod spec_lint;
mod tls;
mod tools;
mod upgrade;
mod util;
mod workflows;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Checks, generators and test drivers of linked-customer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every check and test of the project, in order, stopping at the first failure.
    Ci,
    /// Run the workspace's tests, with PostgreSQL made available (TEST_POSTGRES_URL).
    Test,
    /// Lint openapi.yaml with openapi-spec-validator, Redocly and Spectral (warnings fail too).
    SpecLint {
        /// The document to lint (default: openapi.yaml at the repository root).
        file: Option<PathBuf>,
    },
    /// Generate the Rust client (client/src/generated.rs) from openapi.yaml with progenitor.
    Codegen {
        /// Regenerate in memory and fail, showing the diff, if the checked-in file differs.
        #[arg(long)]
        check: bool,
    },
    /// Supply chain: cargo-deny on the dependency graph with deny.toml (RustSec advisories,
    /// licences, bans, sources: crates.io only).
    Deny {
        /// Prove the check can fail instead: a throwaway crate on a dependency with a known
        /// advisory must be refused, naming it.
        #[arg(long)]
        canary: bool,
        /// Where the advisories come from: the git bundle next to the repository
        /// (../shared/advisory-db.bundle), or the live RustSec database.
        #[arg(long, value_enum, env = "LC_ADVISORY_DB", default_value_t = deny::AdvisoryDb::Bundle)]
        advisory_db: deny::AdvisoryDb,
    },
    /// Run schemathesis on openapi.yaml against fresh servers (SQLite, then PostgreSQL, then
    /// SQLite over TLS) with the demo fixture, or with --base-url against a running deployment,
    /// starting nothing.
    Contract {
        /// The root URL of a running deployment to test (the API is below /customer).
        #[arg(long, requires_all = ["user", "password"])]
        base_url: Option<String>,
        /// The subscriber's username (with --base-url).
        #[arg(long, requires = "base_url")]
        user: Option<String>,
        /// The subscriber's password (with --base-url); better given in the environment, where
        /// `ps` does not show it.
        #[arg(long, env = "LINKED_CUSTOMER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// The department that positive cases ask for (default: the spec's `demo-department`).
        #[arg(long, requires = "base_url")]
        department: Option<String>,
    },
    /// Generate Python and TypeScript clients from openapi.yaml and run each against the server.
    Clients,
    /// Drive Swagger UI in headless Chromium: Authorize, Try it out, Execute, expect the 200.
    Browser,
    /// Semver on the contract: every change to openapi.yaml since a git ref (drift) needs its new
    /// info.version and CHANGELOG.md section; a breaking one, a new major.
    SpecDiff {
        /// The ref to compare with (default: the newest tag, else the first commit with the spec).
        #[arg(long)]
        base: Option<String>,
    },
    /// Measure the release server under load (wrk) on SQLite and PostgreSQL, next to /healthz
    /// and pgbench, and record the figures in BENCHMARKS.md.
    Bench {
        /// Customers in the data set (default 10000; 2000 with --smoke).
        #[arg(long)]
        customers: Option<usize>,
        /// The database(s) to measure.
        #[arg(long, value_enum, default_value_t = bench::Databases::Both)]
        db: bench::Databases,
        /// Seconds of each load (default 30; 5 with --smoke).
        #[arg(long)]
        seconds: Option<u64>,
        /// A short run that fails on any error and writes no BENCHMARKS.md (run by ci).
        #[arg(long)]
        smoke: bool,
        /// SQLite: MiB of the database file the server memory-maps (its section is apart).
        #[arg(long, default_value_t = 0)]
        sqlite_mmap_mib: u64,
    },
    /// The server under faults and abuse on a PostgreSQL cluster of its own: the database
    /// stopped and started under load, a reset flood, an ungranted burst, refusal timing.
    Chaos {
        /// Run the debug build the tests use and leave BENCHMARKS.md alone (as ci does).
        #[arg(long)]
        debug_build: bool,
    },
    /// The server verifies its PostgreSQL's certificate: a cluster with a certificate from a CA
    /// made in the run; accepted with the CA, refused without it or for another host name.
    PgTls,
    /// The deployment files in deploy/: haproxy -c on the HAProxy configuration (and the copy
    /// `cluster` runs), systemd-analyze verify on the unit, the settings file against the
    /// server, promtool on the alert rules and their tests; each check shown to fail on a
    /// broken copy.
    DeployCheck,
    /// A PostgreSQL primary and streaming replica, three release servers reading the replica and
    /// HAProxy in front, on loopback; runs until Ctrl-C, or with --test proves the topology.
    Cluster {
        /// Prove it: an import and a removal visible within 1 s, a server and the replica
        /// stopped under load, throughput (BENCHMARKS.md); then stop (not in ci).
        #[arg(long)]
        test: bool,
    },
    /// The release server in a container image (Containerfile), built with podman; with --test
    /// on a base made here from Debian packages, and proven (not in ci).
    Image {
        /// Prove it: the configuration and labels, the binary run inside the image as its user
        /// (migrate, import, subscriber add, serve: 200, 204, 401), the size under 50 MB.
        #[arg(long)]
        test: bool,
        /// The base image (default: the Containerfile's, gcr.io/distroless/cc-debian12:nonroot;
        /// with --test, one made from Debian packages).
        #[arg(long, value_name = "IMAGE")]
        base: Option<String>,
    },
    /// Fuzz the Authorization parser and the path parameters (cargo-fuzz, nightly; not in ci).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Does an older server binary still run on a database the new one migrated? Builds the old
    /// commit, then new, old and new again on SQLite and PostgreSQL: identical answers, or a
    /// refusal naming the schema problem (not in ci).
    UpgradeCheck {
        /// The older commit to build the old binary from (any git revision).
        #[arg(long, value_name = "COMMIT", default_value = upgrade::DEFAULT_OLD)]
        from: String,
    },
    /// Check the GitHub workflows in .github/workflows/ with actionlint, and the scripts of their
    /// `run:` steps with shellcheck; any finding fails.
    Workflows {
        /// Prove the check can fail instead: a workflow with an unknown key, a bad expression and
        /// an unquoted variable must be refused for each.
        #[arg(long)]
        canary: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ci => ci::run(),
        Command::Test => ci::tests(),
        Command::SpecLint { file } => spec_lint::run(file.as_deref()),
        Command::Codegen { check } => codegen::run(check),
        Command::Deny {
            canary,
            advisory_db,
        } => deny::run_check(advisory_db, canary),
        Command::Contract {
            base_url,
            user,
            password,
            department,
        } => contract::run(base_url.map(|base_url| contract::Deployment {
            base_url,
            user: user.unwrap_or_default(),
            password: password.unwrap_or_default(),
            department,
        })),
        Command::Clients => clients::run(),
        Command::Browser => browser::run(),
        Command::SpecDiff { base } => spec_diff::run(base.as_deref()),
        Command::Bench {
            customers,
            db,
            seconds,
            smoke,
            sqlite_mmap_mib,
        } => bench::run(&bench::Options {
            customers,
            databases: db,
            seconds,
            smoke,
            sqlite_mmap_mib,
        }),
        Command::Chaos { debug_build } => chaos::run(debug_build),
        Command::PgTls => pg_tls::run(),
        Command::DeployCheck => deploy::run(),
        Command::Cluster { test } => cluster::run(test),
        Command::Image { test, base } => image::run(test, base.as_deref()),
        Command::Fuzz { seconds } => fuzz::run_targets(seconds),
        Command::UpgradeCheck { from } => upgrade::run_check(&from),
        Command::Workflows { canary } => workflows::run(canary),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Every `cargo xtask ...` command that README.md and docs/ show parses as written (with its
/// optional parts left out, and with all of them in, placeholders such as `N` filled in), and
/// every subcommand is shown somewhere.
#[cfg(test)]
mod documented_commands {
    use super::Cli;
    use clap::{CommandFactory, Parser};

    const DOCS: [(&str, &str); 5] = [
        ("README.md", include_str!("../../README.md")),
        ("docs/operating.md", include_str!("../../docs/operating.md")),
        ("docs/clients.md", include_str!("../../docs/clients.md")),
        (
            "docs/contract-tests.md",
            include_str!("../../docs/contract-tests.md"),
        ),
        ("docs/releasing.md", include_str!("../../docs/releasing.md")),
    ];

    /// `cargo xtask ...` up to the end of its code span, line or comment.
    fn commands(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in text.lines() {
            let mut rest = line;
            while let Some(at) = rest.find("cargo xtask ") {
                // `NAME=value cargo xtask ...`: the environment it is given, as `@NAME=value`
                // words after the command.
                let env: Vec<String> = rest[..at]
                    .rsplit(|c: char| c.is_whitespace() || c == '`')
                    .take_while(|word| word.is_empty() || word.contains('='))
                    .filter(|word| !word.is_empty())
                    .map(|word| format!("@{word}"))
                    .collect();
                let tail = &rest[at + "cargo xtask ".len()..];
                let end = tail.find(['`', '#', ')']).unwrap_or(tail.len());
                // A table cell's `|` is written `\|` inside a code span; a bare one ends it.
                let command = tail[..end].replace("\\|", "|");
                let mut command = command.trim().to_string();
                for assignment in env {
                    command.push(' ');
                    command.push_str(&assignment);
                }
                found.push(command);
                rest = &tail[end..];
            }
        }
        found
    }

    /// The words of a synopsis: with every `[...]` left out, or with all of them in; `a|b`
    /// taken as `a`, `...` dropped, upper-case placeholders given a value.
    fn forms(synopsis: &str) -> [Vec<String>; 2] {
        let words = |keep_optional: bool| {
            let mut depth = 0;
            let mut out = Vec::new();
            for word in synopsis.split_whitespace() {
                let opens = word.matches('[').count();
                let closes = word.matches(']').count();
                let inside = depth > 0 || opens > 0;
                depth += opens;
                depth -= closes.min(depth);
                if inside && !keep_optional {
                    continue;
                }
                let word = word.trim_matches(['[', ']']);
                let word = word.split('|').next().unwrap_or(word);
                if word.is_empty() || word == "..." || word == "…" {
                    continue;
                }
                let placeholder = word.chars().all(|c| c.is_ascii_uppercase());
                out.push(if placeholder {
                    "1".to_string()
                } else {
                    word.to_string()
                });
            }
            out
        };
        [words(false), words(true)]
    }

    /// `@NAME=value` as the flag of the subcommand that reads `NAME` (so that the test needs no
    /// change to its own environment); a variable that no flag of it reads fails.
    fn with_environment(form: Vec<String>) -> Vec<String> {
        let command = Cli::command();
        let mut out = Vec::new();
        for word in &form {
            let Some((name, value)) = word.strip_prefix('@').and_then(|w| w.split_once('=')) else {
                out.push(word.clone());
                continue;
            };
            let sub = command
                .find_subcommand(&form[0])
                .unwrap_or_else(|| panic!("no subcommand {}", form[0]));
            let arg = sub
                .get_arguments()
                .find(|arg| arg.get_env().is_some_and(|env| env == name))
                .unwrap_or_else(|| panic!("`cargo xtask {}` reads no {name}", form[0]));
            let long = arg.get_long().expect("a flag with an environment variable");
            out.extend([format!("--{long}"), value.to_string()]);
        }
        out
    }

    #[test]
    fn every_documented_xtask_command_parses_and_every_subcommand_is_documented() {
        let mut documented = std::collections::BTreeSet::new();
        let mut count = 0;
        for (file, text) in DOCS {
            for command in commands(text) {
                for form in forms(&command) {
                    let form = with_environment(form);
                    let args = std::iter::once("xtask".to_string()).chain(form.clone());
                    if let Err(err) = Cli::try_parse_from(args) {
                        panic!("{file}: `cargo xtask {command}` ({form:?}) does not parse:\n{err}");
                    }
                    documented.insert(form[0].clone());
                }
                count += 1;
            }
        }
        assert!(
            count > 20,
            "only {count} commands found: is the extraction broken?"
        );
        let all: std::collections::BTreeSet<String> = Cli::command()
            .get_subcommands()
            .map(|sub| sub.get_name().to_string())
            .filter(|name| name != "help")
            .collect();
        let undocumented: Vec<&String> = all.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "not in README.md or docs/: {undocumented:?}"
        );
    }

    #[test]
    fn the_extraction_reads_synopses_as_meant() {
        assert_eq!(
            commands("| `cargo xtask bench [--db sqlite\\|both]` | x `cargo xtask ci` |"),
            ["bench [--db sqlite|both]", "ci"]
        );
        let [short, long] = forms("contract [--base-url URL --user U [--department T]]");
        assert_eq!(short, ["contract"]);
        assert_eq!(
            long,
            [
                "contract",
                "--base-url",
                "1",
                "--user",
                "1",
                "--department",
                "1"
            ]
        );
        assert_eq!(
            commands("`LC_X=1 SECRET=... cargo xtask contract --user u`"),
            ["contract --user u @SECRET=... @LC_X=1"]
        );
        // A misspelt flag is caught.
        let [_, long] = forms("bench [--customer N]");
        assert!(Cli::try_parse_from(std::iter::once("xtask".to_string()).chain(long)).is_err());
    }
}
