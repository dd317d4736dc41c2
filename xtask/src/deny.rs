//! `cargo xtask deny [--canary] [--advisory-db bundle|live]`: cargo-deny (pinned, built once
//! into the user's tool cache) over the dependency graph with the committed `deny.toml`: RustSec advisories,
//! licences, bans and sources (crates.io only). The advisory database is a git clone below
//! `.tools/advisory-dbs` whose `origin` is, by default, the bundle next to the repository
//! (`../shared/advisory-db.bundle`), so that cargo-deny's fetch never leaves this machine; with
//! `--advisory-db live` (`LC_ADVISORY_DB=live`) it is the live database. `--canary` proves that
//! the check can fail: a throwaway crate on a dependency with a known advisory must be refused.

use crate::tools::cargo_installed;
use crate::util::{banner, capture, cargo, rel, root, run, target_dir};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const CARGO_DENY_VERSION: &str = "0.20.2";

/// cargo-deny's default advisory database (`db-urls` is left alone in deny.toml).
const LIVE_DB_URL: &str = "https://github.com/rustsec/advisory-db";

/// Where cargo-deny looks for its clone of [`LIVE_DB_URL`]: `db-path` of deny.toml, and a folder
/// name it derives from the URL. A clone already there is fetched from its `origin`, whatever
/// that is: the bundle or the live database.
const DB_CLONE: &str = ".tools/advisory-dbs/advisory-db-3157b0e258782691";

/// The git bundle of the RustSec database, relative to the repository's root.
const BUNDLE: &str = "../shared/advisory-db.bundle";

/// The environment variable that `--advisory-db` reads, for `cargo xtask ci` too.
const DB_VARIABLE: &str = "LC_ADVISORY_DB";

/// A crate with no dependencies of its own and an exact version with an advisory in the
/// database (a buffer overflow in `SmallVec::insert_many`, fixed in 1.6.1).
const CANARY_CRATE: &str = "smallvec";
const CANARY_VERSION: &str = "1.6.0";
const CANARY_ADVISORY: &str = "RUSTSEC-2021-0003";

/// Where the advisories come from.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum AdvisoryDb {
    /// The git bundle next to the repository: no network, as fresh as the bundle.
    Bundle,
    /// The live RustSec database, fetched from its home.
    Live,
}

pub fn run_check(db: AdvisoryDb, canary: bool) -> Result<()> {
    let deny = cargo_installed("cargo-deny", CARGO_DENY_VERSION)?;
    prepare_db(db)?;
    if canary {
        refuses_known_advisory(&deny)
    } else {
        check(&deny)
    }
}

/// The database that `LC_ADVISORY_DB` names (the bundle when it is unset), for the ci steps.
pub fn db_from_env() -> Result<AdvisoryDb> {
    match std::env::var(DB_VARIABLE) {
        Err(std::env::VarError::NotPresent) => Ok(AdvisoryDb::Bundle),
        Ok(value) => <AdvisoryDb as clap::ValueEnum>::from_str(&value, true)
            .map_err(|_| anyhow::anyhow!("{DB_VARIABLE}={value}: expected `bundle` or `live`")),
        Err(err) => Err(err).context(DB_VARIABLE),
    }
}

/// Points the database's clone at its source: cloned from the bundle on first use, or its
/// `origin` set to the bundle or to the live database (cargo-deny clones the live one itself
/// where there is no clone yet).
fn prepare_db(db: AdvisoryDb) -> Result<()> {
    let clone = root().join(DB_CLONE);
    if !clone.join(".git").exists() {
        // Half a clone (an interrupted run) would make cargo-deny's fetch fail.
        let _ = fs::remove_dir_all(&clone);
    }
    let origin = match db {
        AdvisoryDb::Bundle => bundle()?,
        AdvisoryDb::Live => {
            println!("advisory database: the live one, {LIVE_DB_URL}");
            LIVE_DB_URL.to_string()
        }
    };
    if clone.exists() {
        let mut set = git(&clone);
        set.args(["remote", "set-url", "origin", &origin]);
        run(set)
    } else if db == AdvisoryDb::Bundle {
        fs::create_dir_all(clone.parent().expect("a folder below .tools"))?;
        let mut clone_it = Command::new("git");
        clone_it
            .args(["clone", "--quiet", "--branch", "main", &origin])
            .arg(&clone);
        run(clone_it)
    } else {
        Ok(())
    }
}

/// The bundle's absolute path (a clone's `origin` must not depend on the current folder), or a
/// failure that says where it was looked for and what else to do. Looked for in
/// `LC_ADVISORY_BUNDLE`, next to the repository (`../shared/`), then in the copy that an
/// earlier run kept in the user's tool cache, so that a clone elsewhere on the machine (a CI
/// checkout) finds it too.
fn bundle() -> Result<String> {
    let cached = crate::tools::installed_tools_cache().join("advisory-db.bundle");
    let mut candidates: Vec<std::path::PathBuf> = std::env::var_os("LC_ADVISORY_BUNDLE")
        .filter(|value| !value.is_empty())
        .map(Into::into)
        .into_iter()
        .collect();
    candidates.push(root().join(BUNDLE));
    for candidate in &candidates {
        if let Ok(path) = candidate.canonicalize() {
            keep_a_copy(&path, &cached);
            println!("advisory database: the bundle {}", path.display());
            return Ok(path.to_string_lossy().into_owned());
        }
    }
    candidates.push(cached);
    bundle_at(candidates.last().expect("a candidate"), &candidates)
}

/// A copy of the bundle in the tool cache, for checkouts that have none next to them.
fn keep_a_copy(bundle: &Path, cached: &Path) {
    let size = |path: &Path| fs::metadata(path).map(|m| m.len()).ok();
    if size(bundle) != size(cached) {
        let _ = fs::create_dir_all(cached.parent().unwrap_or(cached));
        let _ = fs::copy(bundle, cached);
    }
}

fn bundle_at(path: &Path, looked_in: &[std::path::PathBuf]) -> Result<String> {
    let Ok(path) = path.canonicalize() else {
        let looked: Vec<String> = looked_in.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "the RustSec advisory database bundle is missing: looked for {} (`{BUNDLE}`, next to \
             the repository, or LC_ADVISORY_BUNDLE). Put a git bundle of the database there \
             (branch `main`), or check against the live database with `{DB_VARIABLE}=live cargo \
             xtask deny`",
            looked.join(", ")
        );
    };
    println!("advisory database: the bundle {}", path.display());
    Ok(path.to_string_lossy().into_owned())
}

fn git(repository: &Path) -> Command {
    let mut git = Command::new("git");
    git.arg("-C").arg(repository);
    git
}

/// cargo-deny on the workspace with deny.toml (found in the root, where commands run), on the
/// committed Cargo.lock.
fn deny_command(deny: &Path) -> Command {
    let mut cmd = Command::new(deny);
    cmd.arg("--locked");
    cmd
}

fn check(deny: &Path) -> Result<()> {
    banner("cargo deny: advisories, licences, sources");
    let mut main = deny_command(deny);
    main.args(["check", "advisories", "licenses", "sources"]);
    run(main)?;
    print_db_date()?;
    // Bans apart, without inclusion graphs: the duplicate versions only warn, and their graphs
    // (a hundred lines each) would bury the rest of ci's log.
    banner("cargo deny: bans");
    let mut bans = deny_command(deny);
    bans.args(["check", "--hide-inclusion-graph", "bans"]);
    run(bans)
}

/// How fresh the advisories were: the date of the database's newest commit.
fn print_db_date() -> Result<()> {
    let mut log = git(&root().join(DB_CLONE));
    log.args(["log", "-1", "--format=%cs %h"]);
    let output = capture(log)?;
    if output.status.success() {
        println!(
            "advisories as of the database's commit of {}",
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(())
}

/// A check that cannot fail proves nothing: a throwaway crate that depends on a version with a
/// known advisory, checked with the same deny.toml and database, must be refused, naming it.
fn refuses_known_advisory(deny: &Path) -> Result<()> {
    let manifest = write_canary()?;
    let mut lock = cargo();
    lock.arg("generate-lockfile")
        .arg("--manifest-path")
        .arg(&manifest);
    run(lock)?;
    let mut check = deny_command(deny);
    check
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["check", "advisories"]);
    let output = capture(check)?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let canary = format!("{CANARY_CRATE} {CANARY_VERSION}");
    if output.status.success() {
        bail!("cargo deny passed {canary}, which has {CANARY_ADVISORY}:\n{report}");
    }
    if !report.contains("error[vulnerability]") || !report.contains(CANARY_ADVISORY) {
        bail!("cargo deny failed on {canary}, but not for {CANARY_ADVISORY}:\n{report}");
    }
    println!("cargo deny refused {canary} for {CANARY_ADVISORY}, as it must");
    Ok(())
}

/// The canary crate below `target/xtask/deny-canary`; returns its manifest.
fn write_canary() -> Result<PathBuf> {
    let dir = target_dir().join("xtask/deny-canary");
    fs::create_dir_all(dir.join("src"))?;
    // `[workspace]`: a workspace of its own, not a stray member of the one above `target/`.
    let manifest = dir.join("Cargo.toml");
    fs::write(
        &manifest,
        format!(
            "[package]\nname = \"deny-canary\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
             publish = false\nlicense = \"Apache-2.0\"\n\n[dependencies]\n\
             {CANARY_CRATE} = \"={CANARY_VERSION}\"\n\n[workspace]\n"
        ),
    )
    .with_context(|| format!("writing {}", rel(&manifest)))?;
    fs::write(dir.join("src/lib.rs"), "")?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bundle_says_where_it_was_looked_for_and_what_else_to_do() {
        let missing = target_dir().join("xtask/no-such-folder/advisory-db.bundle");
        let message = format!(
            "{:#}",
            bundle_at(&missing, std::slice::from_ref(&missing)).unwrap_err()
        );
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
        assert!(message.contains(BUNDLE), "{message}");
        assert!(
            message.contains("LC_ADVISORY_DB=live cargo xtask deny"),
            "{message}"
        );
    }
}
