use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root: the parent of this crate's manifest directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// A path relative to the repository root, for messages.
pub fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Prints a step banner so that long CI logs are easy to scan.
pub fn banner(title: &str) {
    println!("\n==> {title}");
}

/// Renders a command line the way a person would type it (for "rerun with" hints).
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(key, value)| Some((key.to_string_lossy(), value?.to_string_lossy())))
        .map(|(key, value)| format!("{key}={}", shown_env_value(&key, &value)))
        .collect();
    parts.push(shell_word(cmd.get_program()));
    parts.extend(cmd.get_args().map(shell_word));
    parts.join(" ")
}

/// What a command line shows of an environment variable: never a secret, nor a long search path.
fn shown_env_value(key: &str, value: &str) -> String {
    let key = key.to_ascii_uppercase();
    if ["PASSWORD", "SECRET", "TOKEN", "POSTGRES", "DATABASE"]
        .iter()
        .any(|word| key.contains(word))
    {
        "***".to_string()
    } else if value.len() > 80 {
        "…".to_string()
    } else {
        shell_word(OsStr::new(value))
    }
}

fn shell_word(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let root = root();
    let root = root.to_string_lossy();
    let word = word
        .strip_prefix(&format!("{root}/"))
        .map(str::to_string)
        .unwrap_or_else(|| word.to_string());
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,".contains(c))
    {
        word
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs a command in the repository root with inherited output; fails naming the command.
pub fn run(mut cmd: Command) -> Result<()> {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(root());
    }
    let shown = display(&cmd);
    println!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs a command in the repository root and captures its output, whatever its exit status.
pub fn capture(mut cmd: Command) -> Result<Output> {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(root());
    }
    let shown = display(&cmd);
    cmd.output()
        .with_context(|| format!("could not start `{shown}`"))
}

/// Like [`capture`], with `input` written to the command's standard input (where secrets go,
/// rather than on a command line that `ps` shows).
pub fn capture_with_input(mut cmd: Command, input: &str) -> Result<Output> {
    use std::io::Write;
    use std::process::Stdio;
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(root());
    }
    let shown = display(&cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(input.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// `bytes` random bytes from the system, as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut buffer))
        .context("reading /dev/urandom")?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

/// Cargo's target folder (`CARGO_TARGET_DIR`, else `target/` at the root).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// `cargo` as the one running xtask (respects `CARGO` set by cargo itself).
/// Without the variables that `cargo run` gave xtask (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`,
/// ...): build scripts that watch them (ring's) would otherwise rerun, and everything above them
/// rebuild, on every switch between `cargo xtask ...` and a plain `cargo build`.
pub fn cargo() -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name.as_ref())
        {
            cargo.env_remove(&key);
        }
    }
    cargo
}

/// `cargo SUBCOMMAND --locked`, for every build, test, check and run of the workspace: the
/// committed Cargo.lock is what gets built, and a manifest that no longer matches it fails
/// instead of being resolved anew behind the reader's back. (`cargo --locked SUBCOMMAND` would
/// not do: cargo keeps its own flags from the external subcommands such as clippy.)
pub fn cargo_locked(subcommand: &str) -> Command {
    let mut cmd = cargo();
    cmd.args([subcommand, "--locked"]);
    cmd
}

/// True when this process runs as root (and so may install Debian packages).
pub fn is_root() -> bool {
    let mut id = Command::new("id");
    id.arg("-u");
    capture(id).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs Debian packages with apt-get (as root); `hint` says what to do otherwise.
pub fn apt_install(packages: &[&str], hint: &str) -> Result<()> {
    if !is_root() {
        bail!("{hint}");
    }
    banner(&format!("installing Debian's {}", packages.join(", ")));
    let mut update = Command::new("apt-get");
    update.args(["update", "-q"]);
    run(update).context(hint.to_string())?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(install).context(hint.to_string())
}

/// A loopback port that was free a moment ago (the system handed it out and it was let go),
/// for a program that must be told its port.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
