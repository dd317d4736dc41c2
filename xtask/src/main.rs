//! `cargo xtask <command>`: the project's checks, generators and test drivers, in Rust so that
//! there are no shell scripts to remember (see `cargo xtask --help`).

mod bench;
mod browser;
mod chaos;
mod ci;
mod clients;
mod codegen;
mod contract;
mod fuzz;
mod postgres;
mod server;
mod spec_diff;
mod spec_lint;
mod tools;
mod util;

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
    /// Run schemathesis on openapi.yaml against fresh servers (SQLite, then PostgreSQL) with the
    /// demo fixture, or with --base-url against a running deployment, starting nothing.
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
    /// Fuzz the Authorization parser and the path parameters (cargo-fuzz, nightly; not in ci).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ci => ci::run(),
        Command::Test => ci::tests(),
        Command::SpecLint { file } => spec_lint::run(file.as_deref()),
        Command::Codegen { check } => codegen::run(check),
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
        Command::Fuzz { seconds } => fuzz::run_targets(seconds),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
