//! `cargo xtask spec-lint [FILE]`: three independent validators over the OpenAPI document, with
//! warnings counted as failures. Each failing tool is named with the command that reruns it alone.

use crate::tools::{ensure_node, ensure_python, node_tool, python_tool};
use crate::util::{banner, capture, display, rel, root};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

pub fn run(file: Option<&Path>) -> Result<()> {
    let spec = match file {
        Some(file) => std::path::absolute(file)?,
        None => root().join("openapi.yaml"),
    };
    let failures = lint(&spec)?;
    if !failures.is_empty() {
        let hints: Vec<String> = failures
            .iter()
            .map(|(tool, rerun)| format!("  {tool}: rerun alone with `{rerun}`"))
            .collect();
        bail!(
            "spec-lint found problems in {} (see above):\n{}",
            rel(&spec),
            hints.join("\n")
        );
    }
    Ok(())
}

/// Runs every validator on `spec`, printing their reports; returns each failing tool with the
/// command that reruns it alone.
pub fn lint(spec: &Path) -> Result<Vec<(&'static str, String)>> {
    ensure_python()?;
    ensure_node()?;
    let mut failures = Vec::new();
    for (tool, check) in [
        (
            "openapi-spec-validator",
            openapi_spec_validator as fn(&Path) -> Result<Outcome>,
        ),
        ("redocly lint", redocly),
        ("spectral lint", spectral),
    ] {
        banner(&format!("spec-lint: {tool} on {}", rel(spec)));
        let outcome = check(spec)?;
        print!("{}", outcome.report);
        if outcome.passed {
            println!("{tool}: no errors, no warnings");
        } else {
            failures.push((tool, outcome.rerun));
        }
    }
    Ok(failures)
}

struct Outcome {
    passed: bool,
    report: String,
    rerun: String,
}

fn outcome_of(cmd: Command, passed: impl Fn(&std::process::Output) -> bool) -> Result<Outcome> {
    let rerun = display(&cmd);
    let output = capture(cmd)?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Outcome {
        passed: passed(&output),
        report,
        rerun,
    })
}

fn openapi_spec_validator(spec: &Path) -> Result<Outcome> {
    let mut cmd = python_tool("openapi-spec-validator");
    cmd.arg(spec);
    outcome_of(cmd, |out| out.status.success())
}

fn spectral(spec: &Path) -> Result<Outcome> {
    let mut cmd = node_tool("spectral");
    cmd.arg("lint")
        .arg(spec)
        .args(["--ruleset", ".spectral.yaml", "--fail-severity=warn"]);
    outcome_of(cmd, |out| out.status.success())
}

/// Redocly exits 0 on warnings, so its JSON report is read and every problem counted.
fn redocly(spec: &Path) -> Result<Outcome> {
    let mut cmd = node_tool("redocly");
    cmd.arg("lint")
        .arg(spec)
        .args(["--config", "redocly.yaml", "--format=json"]);
    let rerun = display(&cmd).replace(" --format=json", "");
    let output = capture(cmd)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "redocly printed no JSON report; it said:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let problems = report["problems"].as_array().cloned().unwrap_or_default();
    let mut text = String::new();
    for problem in &problems {
        let at = problem["location"][0]["pointer"].as_str().unwrap_or("?");
        text.push_str(&format!(
            "{} {}: {} (at {at})\n",
            problem["severity"].as_str().unwrap_or("?"),
            problem["ruleId"].as_str().unwrap_or("?"),
            problem["message"].as_str().unwrap_or("?"),
        ));
    }
    Ok(Outcome {
        passed: output.status.success() && problems.is_empty(),
        report: text,
        rerun,
    })
}
