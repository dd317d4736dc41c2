//! `cargo xtask ci`: every check and test of the project, cheapest first, stopping at the first
//! failure with the name of the step and the command that reruns it.

use crate::util::{banner, cargo, cargo_locked, root, run as run_cmd};
use crate::{codegen, spec_lint};
use anyhow::{Context, Result, bail};
use std::time::Instant;

type Step = (&'static str, &'static str, fn() -> Result<()>);

const STEPS: &[Step] = &[
    ("format", "cargo fmt --all -- --check", fmt),
    ("spec lint", "cargo xtask spec-lint", spec_lint_step),
    (
        "spec lint catches a bad example",
        "cargo xtask spec-lint target/xtask/broken-example.yaml",
        spec_lint_canary,
    ),
    (
        "every change of the contract since the last release has its version and changelog",
        "cargo xtask spec-diff",
        spec_diff,
    ),
    (
        "client code is generated from the spec",
        "cargo xtask codegen --check",
        codegen_check,
    ),
    (
        "supply chain: advisories, licences, bans, sources (cargo deny)",
        "cargo xtask deny",
        deny,
    ),
    (
        "cargo deny refuses a dependency with a known advisory",
        "cargo xtask deny --canary",
        deny_canary,
    ),
    (
        "GitHub workflows (actionlint)",
        "cargo xtask workflows",
        workflows,
    ),
    (
        "actionlint refuses an invalid workflow",
        "cargo xtask workflows --canary",
        workflows_canary,
    ),
    (
        "clippy",
        "cargo clippy --locked --workspace --all-targets -- -D warnings",
        clippy,
    ),
    ("tests (SQLite and PostgreSQL)", "cargo xtask test", tests),
    (
        "PostgreSQL's certificate verified: accepted with the CA, refused without it",
        "cargo xtask pg-tls",
        crate::pg_tls::run,
    ),
    (
        "deployment files: HAProxy, systemd unit, alert rules",
        "cargo xtask deploy-check",
        crate::deploy::run,
    ),
    (
        "benchmark smoke run",
        "cargo xtask bench --smoke",
        bench_smoke,
    ),
    (
        "faults and abuse: database stopped under load, reset flood, refusal timing",
        "cargo xtask chaos --debug-build",
        chaos,
    ),
    (
        "contract tests (schemathesis: SQLite, PostgreSQL, SQLite over TLS)",
        "cargo xtask contract",
        crate::contract::run_local,
    ),
    (
        "clients in other languages (Python, TypeScript)",
        "cargo xtask clients",
        crate::clients::run,
    ),
    (
        "Swagger UI in a real browser",
        "cargo xtask browser",
        crate::browser::run,
    ),
];

pub fn run() -> Result<()> {
    let started = Instant::now();
    for (index, (name, rerun, step)) in STEPS.iter().enumerate() {
        banner(&format!("ci step {}/{}: {name}", index + 1, STEPS.len()));
        let step_started = Instant::now();
        if let Err(err) = step() {
            bail!("ci step `{name}` failed: {err:#}\nrerun just this step with `{rerun}`");
        }
        println!("ci step `{name}` passed in {:.0?}", step_started.elapsed());
    }
    println!(
        "\nci: all {} steps passed in {:.0?}",
        STEPS.len(),
        started.elapsed()
    );
    Ok(())
}

fn fmt() -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["fmt", "--all", "--", "--check"]);
    run_cmd(cmd)
}

fn spec_lint_step() -> Result<()> {
    spec_lint::run(None)
}

/// A lint that cannot fail proves nothing: break one example on purpose and expect a failure.
fn spec_lint_canary() -> Result<()> {
    let spec = std::fs::read_to_string(root().join("openapi.yaml"))?;
    let needle = "example: 1001\n";
    anyhow::ensure!(
        spec.contains(needle),
        "openapi.yaml no longer has the entityId example `{needle}` that this check breaks"
    );
    let broken = spec.replacen(needle, "example: 0\n", 1);
    let dir = crate::util::target_dir().join("xtask");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("broken-example.yaml");
    std::fs::write(&path, broken).context("writing the broken copy")?;
    let failed: Vec<&str> = spec_lint::lint(&path)?
        .into_iter()
        .map(|(tool, _)| tool)
        .collect();
    for example_checker in ["redocly lint", "spectral lint"] {
        if !failed.contains(&example_checker) {
            bail!(
                "{example_checker} passed a document whose entityId example (0) breaks `minimum: 1`"
            );
        }
    }
    println!(
        "redocly and spectral both refused an entityId example of 0 (minimum 1), as they must"
    );
    Ok(())
}

/// The contract's semver gate (drift) against the newest tag (else the first commit with the
/// spec); it skips itself, saying why, where no base exists (a shallow clone, no commit with
/// the spec). Its canaries (a removed field, a tightened parameter) are xtask's unit tests.
fn spec_diff() -> Result<()> {
    crate::spec_diff::run(None)
}

fn codegen_check() -> Result<()> {
    codegen::run(true)
}

/// The advisories from the database that `LC_ADVISORY_DB` names, as `cargo xtask deny` reads it.
fn deny() -> Result<()> {
    crate::deny::run_check(crate::deny::db_from_env()?, false)
}

fn deny_canary() -> Result<()> {
    crate::deny::run_check(crate::deny::db_from_env()?, true)
}

fn workflows() -> Result<()> {
    crate::workflows::run(false)
}

fn workflows_canary() -> Result<()> {
    crate::workflows::run(true)
}

fn clippy() -> Result<()> {
    let mut cmd = cargo_locked("clippy");
    cmd.args(["--workspace", "--all-targets", "--", "-D", "warnings"]);
    run_cmd(cmd)
}

/// `cargo xtask bench --smoke`: the benchmark's machinery works, and the release server answers
/// a few seconds of load on both databases without one failed request.
fn bench_smoke() -> Result<()> {
    crate::bench::run(&crate::bench::Options {
        customers: None,
        databases: crate::bench::Databases::Both,
        seconds: None,
        smoke: true,
        sqlite_mmap_mib: 0,
    })
}

fn chaos() -> Result<()> {
    crate::chaos::run(true)
}

/// The workspace's tests, with a PostgreSQL server for the tests that need one.
pub fn tests() -> Result<()> {
    let postgres = crate::postgres::admin_url()?;
    let mut cmd = cargo_locked("test");
    cmd.arg("--workspace").env("TEST_POSTGRES_URL", postgres);
    run_cmd(cmd)
}
