//! The pinned external tools (`tools/requirements.txt`, `tools/package.json` with its lockfile),
//! installed on first use into the git-ignored `.tools/` folder and reinstalled when the pins change.

use crate::util::{banner, rel, root, run};
use anyhow::{Context, Result};
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
    let requirements = root().join("tools/requirements.txt");
    let pins = fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", rel(&requirements)))?;
    let stamp = venv().join("installed-requirements.txt");
    if up_to_date(&stamp, &pins) {
        return Ok(());
    }
    banner("installing the pinned Python tools into .tools/venv");
    let _ = fs::remove_dir_all(venv());
    let mut create = Command::new("python3");
    create.args(["-m", "venv"]).arg(venv());
    run(create)?;
    let mut install = Command::new(venv().join("bin/pip"));
    install
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
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
    let mut install = Command::new("npm");
    install
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
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
