//! The pinned external tools (`tools/requirements.lock`, compiled with hashes from
//! `tools/requirements.txt`; `tools/package.json` with its lockfile; cargo-installed programs),
//! installed on first use into the git-ignored `.tools/` folder and reinstalled when the pins change.

use crate::util::{banner, capture, cargo, rel, root, run};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tools_dir() -> PathBuf {
    root().join(".tools")
}

/// True when `stamp` holds exactly `pins`, i.e. the install there matches the pinned versions.
fn up_to_date(stamp: &Path, pins: &str) -> bool {
    fs::read_to_string(stamp).is_ok_and(|installed| installed == pins)
}

fn venv() -> PathBuf {
    tools_dir().join("venv")
}

/// Makes sure the Python venv with the pinned tools exists.
pub fn ensure_python() -> Result<()> {
    // The compiled lock, not the human-written requirements.txt: every package, dependencies
    // included, pinned with the hashes of its files (its header says how to make it anew).
    let requirements = root().join("tools/requirements.lock");
    let pins = fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", rel(&requirements)))?;
    let stamp = venv().join("installed-requirements.lock");
    if up_to_date(&stamp, &pins) {
        return Ok(());
    }
    banner("installing the pinned Python tools into .tools/venv");
    let _ = fs::remove_dir_all(venv());
    let mut create = Command::new("python3");
    create.args(["-m", "venv"]).arg(venv());
    run(create)?;
    // --require-hashes: a file whose hash is not in the lock is refused, and so is a package
    // the lock does not pin. --only-binary: wheels only, so that no package's build script runs
    // (and no build dependency comes in unhashed).
    let mut install = Command::new(venv().join("bin/pip"));
    install
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(["--require-hashes", "--only-binary", ":all:", "-r"])
        .arg(&requirements);
    run(install)?;
    fs::write(&stamp, pins)?;
    Ok(())
}

/// A console script of the Python venv, e.g. `openapi-spec-validator`.
pub fn python_tool(name: &str) -> Command {
    Command::new(venv().join("bin").join(name))
}

fn npm_dir() -> PathBuf {
    tools_dir().join("npm")
}

/// Makes sure the npm folder with the pinned tools exists (`npm ci` from the committed lockfile).
pub fn ensure_node() -> Result<()> {
    let lock = root().join("tools/package-lock.json");
    let pins = fs::read_to_string(&lock).with_context(|| format!("reading {}", rel(&lock)))?;
    let stamp = npm_dir().join("installed-package-lock.json");
    if up_to_date(&stamp, &pins) {
        return Ok(());
    }
    banner("installing the pinned npm tools into .tools/npm");
    let _ = fs::remove_dir_all(npm_dir());
    fs::create_dir_all(npm_dir())?;
    fs::copy(
        root().join("tools/package.json"),
        npm_dir().join("package.json"),
    )?;
    fs::copy(&lock, npm_dir().join("package-lock.json"))?;
    // --ignore-scripts: no package's install script runs. The lockfile has one
    // (`hasInstallScript`): @scarf/scarf, which Spectral depends on, and whose postinstall only
    // reports the download to its authors; every tool works without it.
    let mut install = Command::new("npm");
    install
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(npm_dir());
    run(install)?;
    fs::write(&stamp, pins)?;
    Ok(())
}

/// An executable of the npm folder, e.g. `spectral`.
pub fn node_tool(name: &str) -> Command {
    let mut cmd = Command::new(npm_dir().join("node_modules/.bin").join(name));
    cmd.env("REDOCLY_TELEMETRY", "off")
        .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true");
    cmd
}

/// A cargo-installed program at its pinned version, built on first use (with the crate's own
/// lockfile, `--locked`) into a folder of this user's cache named by crate and version, so that
/// a fresh clone on the same machine does not build it again (several minutes for cargo-deny);
/// returns the path of its binary.
/// Where cargo-installed tools are kept: `LC_TOOLS_CACHE`, else `$XDG_CACHE_HOME/linked-customer`,
/// else `~/.cache/linked-customer`, else `.tools` (no home to speak of).
pub(crate) fn installed_tools_cache() -> PathBuf {
    let from = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = from("LC_TOOLS_CACHE") {
        PathBuf::from(dir)
    } else if let Some(dir) = from("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("linked-customer")
    } else if let Some(home) = from("HOME") {
        PathBuf::from(home).join(".cache/linked-customer")
    } else {
        tools_dir()
    }
}

pub fn cargo_installed(krate: &str, version: &str) -> Result<PathBuf> {
    let prefix = installed_tools_cache().join(format!("{krate}-{version}"));
    let binary = prefix.join("bin").join(krate);
    let mut asked = Command::new(&binary);
    asked.arg("--version");
    // `cargo-deny 0.20.2`: the version is a word of its own.
    if capture(asked).is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .any(|word| word == version)
    }) {
        return Ok(binary);
    }
    banner(&format!(
        "installing {krate} {version} into {}",
        rel(&prefix)
    ));
    let mut install = cargo();
    install
        .args(["install", "--locked", "--version", version, "--root"])
        .arg(&prefix)
        .arg(krate);
    run(install)?;
    if !binary.exists() {
        bail!("cargo install put no {krate} in {}", rel(&prefix));
    }
    Ok(binary)
}
