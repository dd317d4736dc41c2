//! `cargo xtask <command>`: the project's checks, generators and test drivers, in Rust so that
//! there are no shell scripts to remember (see `cargo xtask --help`).

mod ci;
mod codegen;
mod postgres;
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ci => ci::run(),
        Command::Test => ci::tests(),
        Command::SpecLint { file } => spec_lint::run(file.as_deref()),
        Command::Codegen { check } => codegen::run(check),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
