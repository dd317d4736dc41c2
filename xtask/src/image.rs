//! `cargo xtask image [--test] [--base IMAGE]`: the release server in a container image, from
//! `Containerfile` at the root, built with podman (Debian's, installed when missing).
//!
//! The image holds the stripped release binary and the empty state directory, nothing else, on
//! a base that brings glibc and libgcc_s: by default Google's distroless `cc` image
//! ([`DEFAULT_BASE`]), which this machine cannot pull (it reaches no container registry), or
//! `--base IMAGE`. Steps:
//! 1. `cargo build --profile image --locked -p linked-customer-server` (the release build with
//!    whole-program optimisation: Cargo.toml's `[profile.image]`); into the build context
//!    (`target/xtask/image/context`) a stripped copy of the binary (`strip -o`: the build's own
//!    stays as it is) and `state/linked-customer/` (0700, owned by 65532:65532), which the
//!    Containerfile copies to /var/lib/linked-customer;
//! 2. `podman --storage-driver vfs build` with the OCI labels' values as build arguments (the
//!    server's version and licence from its manifest, the git commit, the time, the source),
//!    tagged `localhost/linked-customer-server:VERSION`; the image that tag named before, and the
//!    test base it stood on, are removed once nothing names them.
//!
//! With `--test` (not in ci: about 10 s once the release build is up to date), and with a base
//! made here when none is given: `mmdebstrap --variant=extract` of this machine's Debian suite's
//! `libc6`, `libgcc-s1` and `ca-certificates` (nothing pulled from a registry; Debian's mirror),
//! trimmed to what the server needs of them ([`trim_base`]: smaller than distroless `cc`, which
//! carries OpenSSL too), imported as [`TEST_BASE`].
//! Then it proves the image, failing loudly at the first step that does not hold:
//! - the configuration (`podman image inspect`): user 65532:65532, working directory and volume
//!   /var/lib/linked-customer, ports 8080 and 9090, entrypoint and command, and the labels:
//!   version as server/Cargo.toml's, licence as the workspace's, revision, source, base;
//! - `podman run` is tried first; where it cannot run (on this machine crun may not set
//!   `RLIMIT_NOFILE`), it says so and enters the image's file system instead: a container made
//!   from the image (`podman create`, `podman mount`), entered with `nsenter --root --wdns -S -G`,
//!   so that the binary runs from the image's root, in the image's working directory, as the
//!   image's user, with the image's environment and nothing else (GNU `chroot --userspec` would
//!   start in `/`, not in the working directory);
//! - `--version` prints the server's version; the image's own command, `serve`, refuses to start
//!   on 0.0.0.0 with neither TLS setting (the operator must choose); `migrate` makes the
//!   database in the volume (0600, owned by 65532); `import` of the test fixture; `subscriber
//!   add --password-stdin`; `subscriber list` with the URL from a secret file
//!   (`DATABASE_URL_FILE`, which no URL in the image's environment conflicts with);
//! - `serve` on loopback ports: the process runs as 65532 (its `/proc` status: every UID and
//!   GID, no supplementary groups) inside the image's root; a `200` with the customer, a `204`,
//!   a `401`, `/readyz` and `/metrics` on the operations port; SIGTERM ends it with success;
//!   then over TLS with a certificate from a CA made in the run, its files owned by 65532;
//! - the image's size, at most [`MAX_BYTES`], written to BENCHMARKS.md (section `image`).

use crate::bench;
use crate::server::listening_on;
use crate::tls::LocalTls;
use crate::util::{
    apt_install, banner, capture, capture_with_input, cargo_locked, free_port, random_hex, rel,
    root, run as run_cmd, target_dir,
};
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Containerfile's default `BASE`.
pub const DEFAULT_BASE: &str = "gcr.io/distroless/cc-debian12:nonroot";
/// The base that `--test` makes from Debian packages when no `--base` is given.
const TEST_BASE: &str = "localhost/linked-customer-base:test";
const REPOSITORY: &str = "localhost/linked-customer-server";
/// What the image may weigh, base included (`podman image inspect`'s `Size`, in bytes).
const MAX_BYTES: u64 = 50_000_000;
/// The image's user and group (distroless's `nonroot`).
const USER: u32 = 65532;
const STATE: &str = "/var/lib/linked-customer";
const ENTRYPOINT: &str = "/usr/local/bin/linked-customer-server";
/// Three customers; `ORDER` 1001 of `dept-north` is customer 700001's.
const FIXTURE: &str = "server/tests/fixtures/customers.jsonl";
const DEPARTMENT: &str = "dept-north";
const LINKED: &str = "/customer/v2/department/dept-north/entity/ORDER/1001/customer";
const CUSTOMER_ID: i64 = 700_001;
const UNLINKED: &str = "/customer/v2/department/dept-north/entity/ORDER/999999/customer";
/// Every podman command of this module uses vfs storage (no overlay mounts, which a machine that
/// is itself a container may not allow).
const STORAGE: [&str; 2] = ["--storage-driver", "vfs"];

pub fn run(test: bool, base: Option<&str>) -> Result<()> {
    let started = Instant::now();
    ensure_program("podman", "podman")?;
    let facts = Facts::read()?;
    let work = target_dir().join("xtask/image");
    fs::create_dir_all(&work)?;
    let tag = format!("{REPOSITORY}:{}", facts.version);
    let replaced = [image_id(&tag), image_id(TEST_BASE)];

    banner("building the release server (profile `image`: whole-program optimisation)");
    let binary = build_for_image()?;
    let context = prepare_context(&binary, &work)?;
    // The test base's size as extracted, before its trimming.
    let (base, extracted) = match base {
        Some(base) => (base.to_string(), None),
        None if test => {
            let (base, extracted) = test_base(&work)?;
            (base, Some(extracted))
        }
        None => (DEFAULT_BASE.to_string(), None),
    };

    banner(&format!("building {tag} on {base}"));
    build(&context, &base, &facts, &tag)?;
    remove_if_unnamed(&replaced);
    let image = Inspected::of(&tag)?;
    image.print(&tag);
    if !test {
        println!(
            "\nimage: built {tag} in {:.0} s; `cargo xtask image --test` proves it",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    let binary_bytes = fs::metadata(context.join("linked-customer-server"))?.len();
    let base_bytes = Inspected::of(&base)?.size;
    prove(&image, &facts, &base, &work)?;
    banner("size");
    let mut list = podman();
    list.args(["image", "ls", &tag]);
    run_cmd(list)?;
    println!(
        "{tag}: {} (base {} {}, server binary {})",
        mb(image.size),
        base,
        mb(base_bytes),
        mb(binary_bytes)
    );
    ensure!(
        image.size <= MAX_BYTES,
        "the image weighs {}, over the bound of {}",
        mb(image.size),
        mb(MAX_BYTES)
    );
    write_markdown(&base, extracted, base_bytes, binary_bytes, image.size)?;
    println!(
        "\nimage: every check held; {tag} is {} (bound {}); wrote BENCHMARKS.md (section image) \
         in {:.0} s",
        mb(image.size),
        mb(MAX_BYTES),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the labels say, read from the workspace and git.
struct Facts {
    version: String,
    license: String,
    revision: String,
    source: String,
    created: String,
}

impl Facts {
    fn read() -> Result<Facts> {
        let mut metadata = cargo_locked("metadata");
        metadata.args(["--no-deps", "--format-version", "1"]);
        let output = checked(metadata, "cargo metadata")?;
        let metadata: Value = serde_json::from_slice(&output.stdout)?;
        let server = metadata["packages"]
            .as_array()
            .and_then(|packages| {
                packages
                    .iter()
                    .find(|package| package["name"] == "linked-customer-server")
            })
            .context("cargo metadata names no linked-customer-server")?;
        let text = |field: &str| {
            server[field]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("linked-customer-server has no {field}"))
        };
        let git = |args: &[&str]| -> Result<String> {
            let mut git = Command::new("git");
            git.args(args);
            Ok(stdout(&checked(git, "git")?))
        };
        let mut revision = git(&["rev-parse", "HEAD"])?;
        if !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
            // Built from a working tree that is not the commit: say so in the label.
            revision.push_str("-dirty");
        }
        let source = match git(&["remote", "get-url", "origin"]) {
            Ok(url) if !url.is_empty() => url,
            _ => {
                println!("no git remote `origin`: the source label names this checkout");
                format!("file://{}", root().display())
            }
        };
        let mut date = Command::new("date");
        date.args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
        Ok(Facts {
            version: text("version")?,
            license: text("license")?,
            revision,
            source,
            created: stdout(&checked(date, "date")?),
        })
    }
}

/// The build context: the stripped binary and the state directory, made anew.
fn prepare_context(binary: &Path, work: &Path) -> Result<PathBuf> {
    ensure_program("strip", "binutils")?;
    let context = work.join("context");
    if context.exists() {
        fs::remove_dir_all(&context)?;
    }
    let state = context.join("state/linked-customer");
    fs::create_dir_all(&state)?;
    std::os::unix::fs::chown(&state, Some(USER), Some(USER))
        .context("giving the state directory to 65532 (xtask image runs as root)")?;
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700))?;
    let stripped = context.join("linked-customer-server");
    let mut strip = Command::new("strip");
    strip
        .arg("--strip-all")
        .arg("-o")
        .arg(&stripped)
        .arg(binary);
    run_cmd(strip)?;
    fs::set_permissions(&stripped, fs::Permissions::from_mode(0o755))?;
    println!(
        "context {}: linked-customer-server {} (the release build's {}), state/linked-customer/",
        rel(&context),
        mb(fs::metadata(&stripped)?.len()),
        mb(fs::metadata(binary)?.len())
    );
    Ok(context)
}

/// Builds `linked-customer-server` with the profile `image` and returns the binary's path.
fn build_for_image() -> Result<PathBuf> {
    let mut build = crate::util::cargo_locked("build");
    build.args([
        "--profile",
        "image",
        "--quiet",
        "-p",
        "linked-customer-server",
    ]);
    crate::util::run(build)?;
    Ok(crate::util::target_dir().join("image/linked-customer-server"))
}

fn podman() -> Command {
    let mut podman = Command::new("podman");
    podman.args(STORAGE);
    podman
}

fn build(context: &Path, base: &str, facts: &Facts, tag: &str) -> Result<()> {
    let mut build = podman();
    build
        .args(["build", "--layers=false", "--file"])
        .arg(root().join("Containerfile"))
        .arg("--ignorefile")
        .arg(root().join(".containerignore"));
    for (name, value) in [
        ("BASE", base),
        ("VERSION", &facts.version),
        ("REVISION", &facts.revision),
        ("CREATED", &facts.created),
        ("SOURCE", &facts.source),
    ] {
        build.arg("--build-arg").arg(format!("{name}={value}"));
    }
    build.args(["--tag", tag]).arg(context);
    match run_cmd(build) {
        Err(err) if image_id(base).is_none() => bail!(
            "{err:#}\n\nthe base {base} is not on this machine, and podman could not pull it \
             (a machine that reaches no container registry cannot). Run `cargo xtask image \
             --test`, which makes a base here from Debian packages, or name a base that is here \
             with `cargo xtask image --base IMAGE` (`podman --storage-driver vfs images`; one \
             pulled elsewhere comes in with `podman load`)"
        ),
        other => other,
    }
}

/// The id of the image `name`, if there is one.
fn image_id(name: &str) -> Option<String> {
    let mut inspect = podman();
    inspect.args(["image", "inspect", "--format", "{{.Id}}", name]);
    capture(inspect)
        .ok()
        .filter(|output| output.status.success())
        .map(|output| stdout(&output))
}

/// Removes the images of `ids` that no tag names any more (replaced by this run's); a failure
/// is told, not fatal: they are only disk space.
fn remove_if_unnamed(ids: &[Option<String>]) {
    for id in ids.iter().flatten() {
        let tags = Inspected::of(id).map(|image| image.tags);
        if !matches!(&tags, Ok(tags) if tags.is_empty()) {
            continue;
        }
        let mut remove = podman();
        remove.args(["rmi", id]);
        match capture(remove) {
            Ok(output) if output.status.success() => {
                println!("removed the image this run replaced, {}", &id[..12])
            }
            _ => println!(
                "note: could not remove the replaced image {id}: `podman --storage-driver vfs \
                 rmi {id}` says why"
            ),
        }
    }
}

/// The base that `--test` builds on: Debian's packages, extracted and trimmed, imported; its
/// name, and its size as extracted.
fn test_base(work: &Path) -> Result<(String, u64)> {
    ensure_program("mmdebstrap", "mmdebstrap")?;
    let suite = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
                .map(|name| name.trim_matches('"').to_string())
        })
        .filter(|name| !name.is_empty())
        .context("no VERSION_CODENAME in /etc/os-release: which Debian suite is this?")?;
    banner(&format!(
        "a base from Debian {suite}'s packages (mmdebstrap, this machine's mirror)"
    ));
    let rootfs = work.join("base");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs)?;
    }
    let mut extract = Command::new("mmdebstrap");
    extract
        .args(["--quiet", "--mode=root", "--variant=extract"])
        .args(["--include=libc6,libgcc-s1,ca-certificates", &suite])
        .arg(&rootfs);
    run_cmd(extract)?;
    let extracted = trim_base(&rootfs)?;
    let tarball = work.join("base.tar");
    let mut tar = Command::new("tar");
    tar.arg("--numeric-owner")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".");
    run_cmd(tar)?;
    let mut import = podman();
    import
        .args(["import", "--quiet"])
        .arg(&tarball)
        .arg(TEST_BASE);
    run_cmd(import)?;
    fs::remove_dir_all(&rootfs)?;
    fs::remove_file(&tarball)?;
    Ok((TEST_BASE.to_string(), extracted))
}

/// What the server needs of the extracted packages: glibc's and libgcc's libraries, the CA
/// bundle (which `update-ca-certificates` would have made) and the packages' copyright files,
/// and `/etc/passwd` and `/etc/group` naming root, nobody and nonroot (65532), as distroless
/// has them. Gone: programs (there is no shell to run them), OpenSSL (ca-certificates'
/// dependency, which distroless `cc` does carry; the server links none of it: TLS is rustls),
/// glibc's iconv modules, manuals, locales, apt's lists. So this base is smaller than
/// distroless `cc`, and the size it gives the image is not the default base's. Returns the
/// size as extracted.
fn trim_base(rootfs: &Path) -> Result<u64> {
    let extracted = bytes_below(rootfs)?;
    let mut certificates = Vec::new();
    files_below(&rootfs.join("usr/share/ca-certificates"), &mut certificates)?;
    certificates.retain(|path| path.extension().is_some_and(|ext| ext == "crt"));
    certificates.sort();
    ensure!(
        !certificates.is_empty(),
        "ca-certificates brought no certificates"
    );
    let mut bundle = String::new();
    for certificate in &certificates {
        bundle.push_str(&fs::read_to_string(certificate)?);
    }
    fs::create_dir_all(rootfs.join("etc/ssl/certs"))?;
    fs::write(rootfs.join("etc/ssl/certs/ca-certificates.crt"), bundle)?;
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
         nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )?;
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n",
    )?;

    let mut gone = vec![
        rootfs.join("usr/bin"),
        rootfs.join("usr/sbin"),
        rootfs.join("usr/lib/ssl"),
        rootfs.join("var/cache/apt"),
        rootfs.join("var/lib/apt"),
        rootfs.join("etc/ssl/openssl.cnf"),
    ];
    for entry in fs::read_dir(rootfs.join("usr/share"))? {
        let path = entry?.path();
        if !path.ends_with("doc") {
            gone.push(path);
        }
    }
    for entry in fs::read_dir(rootfs.join("usr/share/doc"))? {
        let dir = entry?.path();
        // A package's doc entry may be a link to another's: left as it is.
        if !fs::symlink_metadata(&dir)?.is_dir() {
            continue;
        }
        for file in fs::read_dir(&dir)? {
            let path = file?.path();
            if !path.ends_with("copyright") {
                gone.push(path);
            }
        }
    }
    for entry in fs::read_dir(rootfs.join("usr/lib"))? {
        let dir = entry?.path();
        if !dir.is_dir() || !dir.to_string_lossy().ends_with("-linux-gnu") {
            continue;
        }
        for file in fs::read_dir(&dir)? {
            let path = file?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if ["gconv", "engines-3", "ossl-modules"].contains(&name.as_ref())
                || name.starts_with("libssl")
                || name.starts_with("libcrypto")
            {
                gone.push(path);
            }
        }
    }
    for path in gone {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path)?,
            Ok(_) => fs::remove_file(&path)?,
            Err(_) => {}
        }
    }
    println!(
        "base: libc6, libgcc-s1 and a CA bundle of {} certificates; {} as extracted, {} trimmed",
        certificates.len(),
        mb(extracted),
        mb(bytes_below(rootfs)?)
    );
    Ok(extracted)
}

/// Every file below `dir` (links not followed).
fn files_below(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            files_below(&entry.path(), found)?;
        } else {
            found.push(entry.path());
        }
    }
    Ok(())
}

fn bytes_below(dir: &Path) -> Result<u64> {
    let mut files = Vec::new();
    files_below(dir, &mut files)?;
    files
        .iter()
        .map(|file| Ok(fs::symlink_metadata(file)?.len()))
        .sum()
}

/// What `podman image inspect` says of an image.
struct Inspected {
    id: String,
    size: u64,
    tags: Vec<String>,
    config: Value,
}

impl Inspected {
    fn of(name: &str) -> Result<Inspected> {
        let mut inspect = podman();
        inspect.args(["image", "inspect", name]);
        let output = checked(inspect, "podman image inspect")?;
        let all: Value = serde_json::from_slice(&output.stdout)?;
        let image = &all[0];
        Ok(Inspected {
            id: image["Id"].as_str().context("no Id")?.to_string(),
            size: image["Size"].as_u64().context("no Size")?,
            tags: strings(&image["RepoTags"]),
            config: image["Config"].clone(),
        })
    }

    fn label(&self, key: &str) -> &str {
        self.config["Labels"][format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap_or_default()
    }

    /// The image's environment, as `NAME=value` pairs.
    fn env(&self) -> Vec<(String, String)> {
        strings(&self.config["Env"])
            .iter()
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn print(&self, tag: &str) {
        println!(
            "{tag} ({}): {}, user {}, working directory {}, entrypoint {}, command {}",
            &self.id[..12],
            mb(self.size),
            self.config["User"],
            self.config["WorkingDir"],
            self.config["Entrypoint"],
            self.config["Cmd"]
        );
        if let Some(labels) = self.config["Labels"].as_object() {
            for (key, value) in labels {
                println!("  label {key}={}", value.as_str().unwrap_or_default());
            }
        }
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every check of `--test` on the built image.
fn prove(image: &Inspected, facts: &Facts, base: &str, work: &Path) -> Result<()> {
    banner("the image's configuration");
    check_configuration(image, facts, base)?;
    println!("user 65532:65532, /var/lib/linked-customer, ports 8080 and 9090, labels as built");

    banner("podman run");
    let mut podman_run = Command::new("timeout");
    podman_run
        .args(["60", "podman"])
        .args(STORAGE)
        .args(["run", "--rm", &image.id, "--version"]);
    let output = capture(podman_run)?;
    if output.status.success() {
        println!(
            "podman run works here: {}; the checks below enter the image's file system as it \
             would",
            stdout(&output)
        );
    } else {
        println!(
            "podman run does not work on this machine ({}: {}); instead the image's file system \
             is entered with nsenter, as its user, in its working directory, with its \
             environment only",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    let container = Container::create(&image.id)?;
    let inside = Inside::of(image, &container.mount)?;
    let result = prove_inside(&inside, facts, work);
    let removed = container.remove();
    result.and(removed)
}

fn check_configuration(image: &Inspected, facts: &Facts, base: &str) -> Result<()> {
    let config = &image.config;
    let expected = [
        ("user", config["User"].clone(), Value::from("65532:65532")),
        (
            "working directory",
            config["WorkingDir"].clone(),
            STATE.into(),
        ),
        (
            "entrypoint",
            config["Entrypoint"].clone(),
            Value::from(vec![ENTRYPOINT]),
        ),
        ("command", config["Cmd"].clone(), Value::from(vec!["serve"])),
    ];
    for (what, found, wanted) in expected {
        ensure!(
            found == wanted,
            "the image's {what} is {found}, not {wanted}"
        );
    }
    ensure!(
        config["Volumes"].get(STATE).is_some(),
        "{STATE} is not a volume: {}",
        config["Volumes"]
    );
    for port in ["8080/tcp", "9090/tcp"] {
        ensure!(
            config["ExposedPorts"].get(port).is_some(),
            "the image does not expose {port}"
        );
    }
    let labels = [
        ("title", "linked-customer-server"),
        ("version", &facts.version),
        ("licenses", &facts.license),
        ("revision", &facts.revision),
        ("source", &facts.source),
        ("created", &facts.created),
        ("base.name", base),
    ];
    for (key, wanted) in labels {
        let found = image.label(key);
        ensure!(
            found == wanted,
            "label org.opencontainers.image.{key} is {found:?}, not {wanted:?}"
        );
    }
    ensure!(
        !image.label("description").is_empty(),
        "no org.opencontainers.image.description label"
    );
    let env = image.env();
    ensure!(
        env.iter().all(|(name, _)| name != "DATABASE_URL"),
        "the image sets DATABASE_URL, which DATABASE_URL_FILE could then not be used with"
    );
    ensure!(
        env.contains(&("LINKED_CUSTOMER_BIND".into(), "0.0.0.0:8080".into())),
        "the image does not listen on 0.0.0.0:8080: {env:?}"
    );
    Ok(())
}

/// A container made from the image (never started), its file system mounted: a writable copy
/// of the image's, so that the checks' database and files do not go into the image.
struct Container {
    name: String,
    mount: PathBuf,
    removed: bool,
}

impl Container {
    fn create(image: &str) -> Result<Container> {
        let name = format!("linked-customer-image-test-{}", random_hex(4)?);
        let mut create = podman();
        create.args(["create", "--name", &name, image]);
        checked(create, "podman create")?;
        let mut container = Container {
            name,
            mount: PathBuf::new(),
            removed: false,
        };
        let mut mount = podman();
        mount.args(["mount", &container.name]);
        container.mount = PathBuf::from(stdout(&checked(mount, "podman mount")?));
        println!(
            "container {} from the image, mounted at {}",
            container.name,
            container.mount.display()
        );
        Ok(container)
    }

    fn remove(mut self) -> Result<()> {
        self.removed = true;
        let mut unmount = podman();
        unmount.args(["umount", &self.name]);
        checked(unmount, "podman umount")?;
        let mut remove = podman();
        remove.args(["rm", &self.name]);
        checked(remove, "podman rm")?;
        println!("container {} unmounted and removed", self.name);
        Ok(())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.removed {
            let mut remove = podman();
            remove.args(["rm", "--force", &self.name]);
            let _ = capture(remove);
        }
    }
}

/// Runs the image's entrypoint inside its file system as the image would: root, working
/// directory, user and environment from the image.
struct Inside {
    mount: PathBuf,
    workdir: String,
    uid: String,
    gid: String,
    entrypoint: Vec<String>,
    /// The image's command (`CMD`).
    cmd: Vec<String>,
    env: Vec<(String, String)>,
}

impl Inside {
    fn of(image: &Inspected, mount: &Path) -> Result<Inside> {
        let user = image.config["User"].as_str().unwrap_or_default();
        let (uid, gid) = user
            .split_once(':')
            .with_context(|| format!("the image's user {user:?} is not UID:GID"))?;
        Ok(Inside {
            mount: mount.to_path_buf(),
            workdir: image.config["WorkingDir"]
                .as_str()
                .unwrap_or("/")
                .to_string(),
            uid: uid.to_string(),
            gid: gid.to_string(),
            entrypoint: strings(&image.config["Entrypoint"]),
            cmd: strings(&image.config["Cmd"]),
            env: image.env(),
        })
    }

    /// The entrypoint with `args`; more environment with `.env(...)` on the command.
    fn command(&self, args: &[&str]) -> Command {
        let mut nsenter = Command::new("/usr/bin/nsenter");
        nsenter
            .arg(format!("--root={}", self.mount.display()))
            .arg(format!("--wdns={}", self.workdir))
            .args([
                "--setuid",
                &self.uid,
                "--setgid",
                &self.gid,
                "--no-fork",
                "--",
            ])
            .args(&self.entrypoint)
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null());
        nsenter
    }

    /// A file of the image's file system, on this machine.
    fn path(&self, inside: &str) -> PathBuf {
        self.mount.join(inside.trim_start_matches('/'))
    }

    /// Writes `text` to `inside` (its directories made), owned by the image's user, `mode`.
    fn write(&self, inside: &str, text: &str, mode: u32) -> Result<()> {
        let path = self.path(inside);
        fs::create_dir_all(path.parent().context("a file in a directory")?)?;
        fs::write(&path, text)?;
        std::os::unix::fs::chown(&path, Some(USER), Some(USER))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    }
}

fn prove_inside(inside: &Inside, facts: &Facts, work: &Path) -> Result<()> {
    let password = commands(inside, facts)?;
    let auth = format!("Basic {}", bench::base64(&format!("u:{password}")));
    serves(inside, &auth, work)?;
    serves_tls(inside, &auth, work)
}

/// `--version`, the refusal of `serve` as the image has it, and the commands that set a
/// database up: the subscriber's password.
fn commands(inside: &Inside, facts: &Facts) -> Result<String> {
    banner("--version");
    let output = checked(inside.command(&["--version"]), "--version")?;
    let wanted = format!("linked-customer-server {}", facts.version);
    ensure!(
        stdout(&output) == wanted,
        "--version printed {:?}, not {wanted:?}",
        stdout(&output)
    );
    println!("{wanted}");

    banner("serve as the image has it, with no TLS chosen: refused");
    refuses_plain_http(inside)?;

    banner("migrate, import, subscriber add");
    checked(inside.command(&["migrate"]), "migrate")?;
    let database = inside.path(&format!("{STATE}/linked-customer.db"));
    let meta = fs::metadata(&database)
        .with_context(|| format!("migrate made no {STATE}/linked-customer.db"))?;
    ensure!(
        meta.uid() == USER && meta.gid() == USER && meta.mode() & 0o777 == 0o600,
        "{STATE}/linked-customer.db is {}:{} mode {:o}, not 65532:65532 0600",
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o777
    );
    println!("{STATE}/linked-customer.db: 65532:65532, 0600");
    let fixture = fs::read_to_string(root().join(FIXTURE))?;
    inside.write("/import/customers.jsonl", &fixture, 0o444)?;
    let output = checked(
        inside.command(&["import", "/import/customers.jsonl"]),
        "import",
    )?;
    let created = format!("{} customers created", fixture.lines().count());
    ensure!(
        stdout(&output).contains(&created),
        "the import did not say `{created}`: {}",
        stdout(&output)
    );
    println!("{}", stdout(&output));
    let password = format!("image-{}", random_hex(8)?);
    let add = inside.command(&[
        "subscriber",
        "add",
        "--username",
        "u",
        "--password-stdin",
        "--department",
        DEPARTMENT,
    ]);
    let output = capture_with_input(add, &format!("{password}\n"))?;
    ensure!(
        output.status.success(),
        "subscriber add failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{}", stdout(&output));

    banner("the database URL from a secret file (DATABASE_URL_FILE)");
    inside.write(
        "/run/secrets/database-url",
        &format!("sqlite://{STATE}/linked-customer.db\n"),
        0o400,
    )?;
    let mut list = inside.command(&["subscriber", "list"]);
    list.env("DATABASE_URL_FILE", "/run/secrets/database-url");
    let output = checked(list, "subscriber list with DATABASE_URL_FILE")?;
    ensure!(
        stdout(&output).contains(DEPARTMENT),
        "subscriber list shows no grant on {DEPARTMENT}: {}",
        stdout(&output)
    );
    println!("{}", stdout(&output));
    Ok(password)
}

/// `serve` on loopback, as 65532: a 200 with the customer, a 204, a 401, the operations port;
/// SIGTERM.
fn serves(inside: &Inside, auth: &str, work: &Path) -> Result<()> {
    banner("serve on loopback: answers, its user, SIGTERM");
    let mut server = Serving::start(inside, &[], &work.join("serve-http.log"))?;
    server.runs_as_the_image_user(inside)?;
    let (status, body) = bench::get(&server.address, LINKED, Some(auth))?;
    ensure!(status == 200, "GET {LINKED} answered {status}: {body}");
    let answer: Value = serde_json::from_str(&body).context("the 200's body is not JSON")?;
    let id = &answer["customerWithVehicles"]["customer"]["id"];
    ensure!(
        id == CUSTOMER_ID,
        "the 200 is customer {id}, not {CUSTOMER_ID}"
    );
    println!("200: customer {id} with its vehicles");
    let (status, _) = bench::get(&server.address, UNLINKED, Some(auth))?;
    ensure!(status == 204, "GET {UNLINKED} answered {status}, not 204");
    println!("204: an entity with no customer");
    let wrong = format!("Basic {}", bench::base64("u:not-the-password"));
    let (status, _) = bench::get(&server.address, LINKED, Some(&wrong))?;
    ensure!(status == 401, "a wrong password got {status}, not 401");
    println!("401: a wrong password");
    for path in ["/readyz", "/metrics"] {
        let (status, _) = bench::get(&server.operations, path, None)?;
        ensure!(
            status == 200,
            "{path} on the operations port answered {status}"
        );
    }
    println!("200: /readyz and /metrics on the operations port");
    server.terminate()
}

/// `serve` over TLS, with a certificate from a CA made here whose files 65532 owns, as an
/// operator mounts them.
fn serves_tls(inside: &Inside, auth: &str, work: &Path) -> Result<()> {
    banner("serve over TLS, the certificate's files owned by 65532");
    let tls_dir = inside.path("/etc/linked-customer/tls");
    fs::create_dir_all(&tls_dir)?;
    let tls = LocalTls::make(&tls_dir, "server")?;
    for file in [&tls.cert, &tls.key] {
        std::os::unix::fs::chown(file, Some(USER), Some(USER))?;
    }
    let mut server = Serving::start(
        inside,
        &[
            (
                "LINKED_CUSTOMER_TLS_CERT",
                "/etc/linked-customer/tls/server.crt",
            ),
            (
                "LINKED_CUSTOMER_TLS_KEY",
                "/etc/linked-customer/tls/server.key",
            ),
        ],
        &work.join("serve-tls.log"),
    )?;
    ensure!(
        server.url.starts_with("https://"),
        "with a certificate the server announced {}",
        server.url
    );
    let (status, _) = tls.client.get(&server.address, LINKED, Some(auth))?;
    ensure!(status == 200, "GET {LINKED} over TLS answered {status}");
    println!("200 over TLS from {}", server.url);
    server.terminate()
}

/// The image's own command and environment (`serve` on 0.0.0.0; another port than 8080, which
/// this shared machine may have in use) with no TLS setting: it must refuse to start.
fn refuses_plain_http(inside: &Inside) -> Result<()> {
    let mut serve = inside.command(&[]);
    serve
        .args(&inside.cmd)
        .env("LINKED_CUSTOMER_BIND", format!("0.0.0.0:{}", free_port()?))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = serve.spawn().context("starting the image's command")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the image's `serve` on 0.0.0.0 with no TLS setting did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().context("no stderr")?, &mut stderr)?;
    ensure!(
        !status.success() && stderr.contains("--tls-terminated-by-proxy"),
        "the image's `serve` with no TLS setting exited {status}: {stderr}"
    );
    println!("refused ({status}): {}", stderr.trim());
    Ok(())
}

/// `serve` inside the image on loopback ports, with the API's and the operations' addresses.
struct Serving {
    child: Child,
    url: String,
    address: String,
    operations: String,
    log: PathBuf,
}

impl Serving {
    fn start(inside: &Inside, env: &[(&str, &str)], log: &Path) -> Result<Serving> {
        let operations = format!("127.0.0.1:{}", free_port()?);
        let mut serve = inside.command(&[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--admin-bind",
            operations.as_str(),
        ]);
        serve
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(log)?);
        println!("$ {}", crate::util::display(&serve));
        let mut child = serve.spawn().context("starting serve in the image")?;
        let announced = listening_on(child.stdout.take().context("no stdout")?);
        let mut server = Serving {
            child,
            url: String::new(),
            address: String::new(),
            operations,
            log: log.to_path_buf(),
        };
        server.url = announced
            .recv_timeout(Duration::from_secs(60))
            .with_context(|| format!("no `listening on` within 60 s; log: {}", rel(log)))?;
        server.address = server
            .url
            .split_once("://")
            .map_or(server.url.as_str(), |(_, address)| address)
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(
            bench::get(&server.operations, "/healthz", None),
            Ok((200, _))
        ) {
            ensure!(
                Instant::now() < deadline,
                "/healthz did not answer 200 within 30 s; log: {}",
                rel(log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("listening on {} (log: {})", server.url, rel(log));
        Ok(server)
    }

    /// The process (nsenter has become the server: `--no-fork`) is the server binary, with the
    /// image's root and working directory, as 65532 in every UID and GID, with no other group.
    fn runs_as_the_image_user(&self, inside: &Inside) -> Result<()> {
        let pid = self.child.id();
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let status = fs::read_to_string(proc.join("status"))?;
        let line = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|value| value.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let (uid, gid, groups) = (line("Uid"), line("Gid"), line("Groups"));
        let user = USER.to_string();
        ensure!(
            uid.len() == 4 && uid.iter().chain(&gid).all(|id| *id == user) && groups.is_empty(),
            "process {pid}: Uid {uid:?}, Gid {gid:?}, Groups {groups:?}; wanted 65532 throughout"
        );
        let exe = fs::read_link(proc.join("exe"))?;
        let root_dir = fs::read_link(proc.join("root"))?;
        let cwd = fs::read_link(proc.join("cwd"))?;
        ensure!(
            exe == inside.path(ENTRYPOINT)
                && root_dir == inside.mount
                && cwd == inside.path(&inside.workdir),
            "process {pid} is {} in root {} and directory {}",
            exe.display(),
            root_dir.display(),
            cwd.display()
        );
        println!(
            "process {pid}: Uid {} / Gid {} (real, effective, saved, file system), no \
             supplementary groups; {ENTRYPOINT} in the image's root, in {}",
            uid.join(" "),
            gid.join(" "),
            inside.workdir
        );
        Ok(())
    }

    /// SIGTERM; the server must exit with success within 30 s.
    fn terminate(&mut self) -> Result<()> {
        let mut kill = Command::new("kill");
        kill.args(["-TERM", &self.child.id().to_string()]);
        checked(kill, "kill -TERM")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            ensure!(
                Instant::now() < deadline,
                "the server did not exit within 30 s of SIGTERM; log: {}",
                rel(&self.log)
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        ensure!(
            status.success(),
            "the server exited {status} on SIGTERM; log: {}",
            rel(&self.log)
        );
        println!("SIGTERM: stopped ({status})");
        Ok(())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_markdown(
    base: &str,
    extracted: Option<u64>,
    base_bytes: u64,
    binary_bytes: u64,
    image_bytes: u64,
) -> Result<()> {
    let path = root().join("BENCHMARKS.md");
    let text = fs::read_to_string(&path).context("reading BENCHMARKS.md")?;
    let base_is = match extracted {
        Some(extracted) => format!(
            "made by the run from Debian's libc6, libgcc-s1 and ca-certificates, {} as \
             extracted, trimmed to what the server needs: no OpenSSL, iconv modules or programs",
            mb(extracted)
        ),
        None => "given with `--base`".to_string(),
    };
    let body = format!(
        "## Container image\n\n\
         {}, {}; `cargo xtask image --test` (`podman image inspect --format '{{{{.Size}}}}'`, \
         uncompressed; bound {}).\n\n\
         | layer | size |\n|---|---:|\n\
         | base `{base}` ({base_is}) | {} |\n\
         | the server (profile `image`: release, whole-program optimisation, stripped) | {} |\n\
         | **the image** | **{}** |\n\n\
         The default base, `{DEFAULT_BASE}`, cannot be pulled on this machine, so the image \
         on it was not measured: it is the server's layer above plus that base's own size, \
         which is larger than this test base's (distroless `cc` carries OpenSSL, libstdc++ \
         and glibc's iconv modules too), and may go over the bound.\n",
        bench::today()?,
        bench::machine()?,
        mb(MAX_BYTES),
        mb(base_bytes),
        mb(binary_bytes),
        mb(image_bytes),
    );
    fs::write(&path, bench::replace_section(&text, "image", &body)).context("writing BENCHMARKS.md")
}

/// Bytes as decimal megabytes, as podman shows them.
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Installs Debian's `package` when `program` cannot be started.
fn ensure_program(program: &str, package: &str) -> Result<()> {
    if Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return Ok(());
    }
    apt_install(
        &[package],
        &format!("{program} is missing and this is not root: install Debian's {package}"),
    )
}

/// Runs `cmd` for its output; fails with its stderr unless it succeeds.
fn checked(cmd: Command, what: &str) -> Result<Output> {
    let output = capture(cmd)?;
    ensure!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
