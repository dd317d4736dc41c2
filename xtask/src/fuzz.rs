//! `cargo xtask fuzz [--seconds N]`: the cargo-fuzz targets in `fuzz/` (the `Authorization`
//! parser and the path parameters), each for a bounded time, with libFuzzer on the nightly
//! toolchain. Not part of ci. A crash leaves its input in `fuzz/artifacts/TARGET/`: make it a
//! regression test in the server's tests, then fix the parser.

use crate::util::{banner, capture, root, run};
use anyhow::{Context, Result};
use std::process::Command;

const CARGO_FUZZ_VERSION: &str = "0.13.2";
const TARGETS: [&str; 2] = ["authorization", "path_parameters"];

pub fn run_targets(seconds: u64) -> Result<()> {
    ensure_nightly()?;
    let cargo_fuzz = crate::tools::cargo_installed("cargo-fuzz", CARGO_FUZZ_VERSION)?;
    for target in TARGETS {
        banner(&format!("fuzzing {target} for {seconds} s"));
        let mut fuzz = Command::new(&cargo_fuzz);
        fuzz.args(["fuzz", "run", "--fuzz-dir", "fuzz", target])
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .current_dir(root());
        // Called directly, cargo-fuzz takes the subcommand's name first (as `cargo fuzz` passes
        // it), and builds with whatever `cargo` rustup picks: the nightly one.
        fuzz.env("RUSTUP_TOOLCHAIN", "nightly").env_remove("CARGO");
        run(fuzz).with_context(|| {
            format!(
                "fuzz target {target} found a failure: its input is in fuzz/artifacts/{target}/"
            )
        })?;
    }
    println!(
        "\nfuzz: {} targets, {seconds} s each, no failure",
        TARGETS.len()
    );
    Ok(())
}

fn ensure_nightly() -> Result<()> {
    let mut list = Command::new("rustup");
    list.args(["toolchain", "list"]);
    let output = capture(list).context("rustup is needed for the nightly toolchain")?;
    if String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.starts_with("nightly"))
    {
        return Ok(());
    }
    let mut install = Command::new("rustup");
    install.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
    run(install)
}
