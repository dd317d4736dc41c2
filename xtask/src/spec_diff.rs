//! `cargo xtask spec-diff [--base REF]`: the breaking-change gate. Compares `openapi.yaml` in the
//! working tree with its version at a git ref (default: the newest tag, else the first commit
//! that has the file) with optic's breaking-change checks, and fails listing each breaking change.
//! A deliberate one is released as a new major version: `info.version`'s major goes up (optic
//! then allows breaking changes) and CHANGELOG.md gets a heading naming the new version.

use crate::tools::{ensure_node, node_tool};
use crate::util::{banner, capture, root};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Command, Output};

const SPEC: &str = "openapi.yaml";
/// Where a deliberate breaking change is noted, under a heading that names the new version.
const CHANGELOG: &str = "CHANGELOG.md";
/// The words optic ends each failed breaking-change check with.
const BREAKING: &str = "This is a breaking change.";

pub fn run(base: Option<&str>) -> Result<()> {
    let base = match base {
        Some(reference) => {
            if git(&["cat-file", "-e", &format!("{reference}:{SPEC}")]).is_none() {
                bail!(
                    "`{reference}` is no git ref that has {SPEC}{}",
                    if is_shallow() {
                        " (this is a shallow clone: `git fetch --unshallow --tags` brings the history)"
                    } else {
                        ""
                    }
                );
            }
            reference.to_string()
        }
        None => match default_base() {
            Some(base) => base,
            None => return Ok(()),
        },
    };
    let (breaking, output) = breaking_changes(&root(), &base)?;
    let (old, new) = (version_at(Some(&base))?, version_at(None)?);
    if !breaking.is_empty() {
        bail!(
            "{} breaking change(s) in {SPEC} since {base} (info.version {old} -> {new}):\n  - {}\n\
             Undo them, or, if they are deliberate, release a new major version: \
             see \"Breaking changes\" in README.md",
            breaking.len(),
            breaking.join("\n  - ")
        );
    }
    if !output.status.success() {
        bail!(
            "optic diff failed ({}), see its output above",
            output.status
        );
    }
    if major(&new) <= major(&old) {
        println!("no breaking change in {SPEC} since {base}");
        return Ok(());
    }
    // optic lets breaking changes through when the major version goes up (its
    // `skip_when_major_version_changes`); the note is what makes such a release deliberate.
    let changelog = std::fs::read_to_string(root().join(CHANGELOG)).unwrap_or_default();
    if !changelog
        .lines()
        .any(|line| line.starts_with('#') && line.contains(new.as_str()))
    {
        bail!(
            "info.version's major went up since {base} ({old} -> {new}), which lets breaking \
             changes through, but {CHANGELOG} has no heading for {new} with a note about them"
        );
    }
    println!(
        "new major version {new} (from {old} at {base}), noted in {CHANGELOG}: \
         breaking changes are allowed"
    );
    Ok(())
}

/// Runs optic in the git checkout `dir` on its `openapi.yaml` against `base`; returns each
/// failed breaking-change check (with where it is) and optic's own result.
pub fn breaking_changes(dir: &Path, base: &str) -> Result<(Vec<String>, Output)> {
    ensure_node()?;
    banner(&format!("optic: breaking changes in {SPEC} since {base}"));
    let mut optic = node_tool("optic");
    optic
        .args([
            "diff",
            SPEC,
            "--base",
            base,
            "--check",
            "--severity",
            "error",
        ])
        .current_dir(dir)
        // Offline: no telemetry, no error reports, no update check.
        .env("OPTIC_TELEMETRY_LEVEL", "off")
        .env("NO_UPDATE_NOTIFIER", "1");
    let output = capture(optic)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    // Each failed check, with the line after it that says where (`at openapi.yaml:LINE:OFFSET`).
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    let breaking = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.ends_with(BREAKING))
        .map(|(index, line)| {
            let check = line.trim_start_matches("x ");
            match lines.get(index + 1).filter(|next| next.starts_with("at ")) {
                Some(at) => format!("{check} ({at})"),
                None => check.to_string(),
            }
        })
        .collect();
    Ok((breaking, output))
}

/// `info.version` of the spec at a git ref, or in the working tree.
fn version_at(reference: Option<&str>) -> Result<String> {
    let text = match reference {
        Some(reference) => git(&["show", &format!("{reference}:{SPEC}")])
            .with_context(|| format!("reading {SPEC} at {reference}"))?,
        None => std::fs::read_to_string(root().join(SPEC))?,
    };
    let document: serde_yaml::Value = serde_yaml::from_str(&text).with_context(|| {
        format!(
            "parsing {SPEC} at {}",
            reference.unwrap_or("the working tree")
        )
    })?;
    document["info"]["version"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{SPEC} has no info.version"))
}

/// The major version of `MAJOR.MINOR.PATCH` (0 when it is not a number).
fn major(version: &str) -> u64 {
    version
        .split('.')
        .next()
        .and_then(|major| major.trim().parse().ok())
        .unwrap_or(0)
}

/// The newest tag that has the spec, else the first commit that has it; `None` (said why) when
/// there is no history to compare with.
fn default_base() -> Option<String> {
    let Some(shallow) = git(&["rev-parse", "--is-shallow-repository"]) else {
        println!(
            "spec-diff skipped: this is not a git checkout, so there is no base to compare with"
        );
        return None;
    };
    if shallow == "true" {
        println!(
            "spec-diff skipped: this is a shallow clone without the history to compare with \
             (`git fetch --unshallow --tags` brings it)"
        );
        return None;
    }
    if let Some(tag) = git(&["describe", "--tags", "--abbrev=0"]) {
        if git(&["cat-file", "-e", &format!("{tag}:{SPEC}")]).is_some() {
            println!("base: {tag}, the newest tag");
            return Some(tag);
        }
        println!("the newest tag, {tag}, has no {SPEC}");
    }
    let added = git(&["log", "--diff-filter=A", "--format=%H", "--", SPEC]).unwrap_or_default();
    match added.lines().last() {
        Some(first) => {
            println!("base: {first}, the first commit that has {SPEC} (no tag has it)");
            Some(first.to_string())
        }
        None => {
            println!(
                "spec-diff skipped: no commit has {SPEC} yet, so there is no base to compare with"
            );
            None
        }
    }
}

fn is_shallow() -> bool {
    git(&["rev-parse", "--is-shallow-repository"]).as_deref() == Some("true")
}

/// A git command's trimmed output, or `None` when it fails.
fn git(args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("git");
    cmd.args(args);
    capture(cmd)
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
}
