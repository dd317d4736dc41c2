//! `cargo xtask <command>`: the project's checks, generators and test drivers, in Rust so that
//! there are no shell scripts to remember (see `cargo xtask --help`).

mod ci;
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
    /// Lint openapi.yaml with openapi-spec-validator, Redocly and Spectral (warnings fail too).
    SpecLint {
        /// The document to lint (default: openapi.yaml at the repository root).
        file: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ci => ci::run(),
        Command::SpecLint { file } => spec_lint::run(file.as_deref()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
