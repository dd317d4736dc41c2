//! `cargo xtask clients`: clients in other languages, generated from `openapi.yaml` with the
//! pinned generators (`tools/requirements.txt`, `tools/package.json`) into
//! `target/clients/<name>`, type-checked where the language has types (tsc, strict), and run
//! against the real server by the small programs of `tools/clients/`: the 200 with its fields,
//! the 204 and the 401 of `getLinkedCustomer`.

use crate::server::{Database, TestServer, UNLINKED_ORDER};
use crate::tools::{ensure_node, ensure_python, node_tool, python_tool};
use crate::util::{banner, capture, display, rel, root, run as run_cmd};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq)]
enum Language {
    Python,
    TypeScript,
}

struct Client {
    /// The folder below `target/clients/`, and the name in every message.
    name: &'static str,
    language: Language,
    generator: &'static str,
    /// The generator's command for the spec and the output folder.
    generate: fn(&Path, &Path) -> Command,
    /// The test program, in `tools/clients/`.
    program: &'static str,
}

const CLIENTS: &[Client] = &[
    Client {
        name: "python-openapi-python-client",
        language: Language::Python,
        generator: "openapi-python-client",
        generate: openapi_python_client,
        program: "python_openapi_python_client.py",
    },
    Client {
        name: "python-openapi-generator",
        language: Language::Python,
        generator: "openapi-generator -g python",
        generate: openapi_generator_python,
        program: "python_openapi_generator.py",
    },
    Client {
        name: "ts-hey-api",
        language: Language::TypeScript,
        generator: "@hey-api/openapi-ts",
        generate: hey_api,
        program: "ts_hey_api.ts",
    },
    Client {
        name: "ts-openapi-generator",
        language: Language::TypeScript,
        generator: "openapi-generator -g typescript-fetch",
        generate: openapi_generator_typescript,
        program: "ts_openapi_generator.ts",
    },
];

/// Where the TypeScript generators write the client, below the client's folder (the test
/// program, `clientcheck.ts` and `tsconfig.json` sit next to it; tsc writes `dist/`).
const TS_SOURCES: &str = "src";

fn programs() -> PathBuf {
    root().join("tools/clients")
}

pub fn run() -> Result<()> {
    let started = Instant::now();
    ensure_python()?;
    ensure_node()?;
    ensure_java()?;
    let spec = root().join("openapi.yaml");
    let out = crate::util::target_dir().join("clients");
    for client in CLIENTS {
        let dir = out.join(client.name);
        banner(&format!(
            "client {}: generating with {}",
            client.name, client.generator
        ));
        generate(client, &spec, &dir)
            .with_context(|| format!("client `{}`, step `generate`", client.name))?;
        if client.language == Language::TypeScript {
            banner(&format!(
                "client {}: type-checking with tsc (strict)",
                client.name
            ));
            type_check(client, &dir)
                .with_context(|| format!("client `{}`, step `type-check`", client.name))?;
        }
    }

    banner("starting the server for the clients");
    let server = TestServer::start(&Database::Sqlite)?;
    let mut failed = Vec::new();
    for client in CLIENTS {
        banner(&format!("client {}: against the live server", client.name));
        if let Err(err) = against(client, &out.join(client.name), &server) {
            eprintln!("client {}: {err:#}", client.name);
            failed.push(client.name);
        }
    }
    drop(server);
    if !failed.is_empty() {
        bail!(
            "client {}, step `run against the server`: the program's FAIL lines above name the \
             check; rerun with `cargo xtask clients`",
            failed
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "\nclients: {} generated, type-checked where typed, and passed against the server in {:.0?}",
        CLIENTS.len(),
        started.elapsed()
    );
    Ok(())
}

/// A clean `dir` with the generated client; the generators' chatter is shown only on failure.
fn generate(client: &Client, spec: &Path, dir: &Path) -> Result<()> {
    let started = Instant::now();
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", rel(dir)))?;
    }
    fs::create_dir_all(dir.parent().context("no parent")?)?;
    let cmd = (client.generate)(spec, dir);
    let shown = display(&cmd);
    println!("$ {shown}");
    let output = capture(cmd)?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if !dir.exists() {
        bail!("`{shown}` wrote nothing to {}", rel(dir));
    }
    println!("generated {} in {:.1?}", rel(dir), started.elapsed());
    Ok(())
}

/// The program and `clientcheck.ts` next to the generated sources, compiled together in strict
/// mode (`tools/clients/tsconfig.base.json`) into `dist/`.
fn type_check(client: &Client, dir: &Path) -> Result<()> {
    fs::copy(programs().join(client.program), dir.join("main.ts"))?;
    fs::copy(
        programs().join("clientcheck.ts"),
        dir.join("clientcheck.ts"),
    )?;
    let tsconfig = serde_json::json!({
        "extends": programs().join("tsconfig.base.json"),
        "compilerOptions": { "rootDir": ".", "outDir": "dist" },
        "include": ["main.ts", "clientcheck.ts", format!("{TS_SOURCES}/**/*.ts")],
    });
    fs::write(
        dir.join("tsconfig.json"),
        serde_json::to_string_pretty(&tsconfig)?,
    )?;
    let mut tsc = node_tool("tsc");
    tsc.arg("-p").arg(dir.join("tsconfig.json"));
    run_cmd(tsc)
}

/// Runs the client's test program against the server; it prints every check and exits non-zero
/// on a mismatch.
fn against(client: &Client, dir: &Path, server: &TestServer) -> Result<()> {
    let mut cmd = match client.language {
        Language::Python => {
            // -B: no __pycache__ in tools/clients. The generated package is found on PYTHONPATH.
            let mut python = python_tool("python");
            python
                .arg("-B")
                .arg(programs().join(client.program))
                .env("PYTHONPATH", std::env::join_paths([dir, &programs()])?);
            python
        }
        Language::TypeScript => {
            let mut node = Command::new("node");
            node.arg(dir.join("dist/main.js"));
            node
        }
    };
    cmd.args(["--unlinked-order", &UNLINKED_ORDER.to_string()])
        .env("LINKED_CUSTOMER_API_URL", server.api_url())
        .env("LINKED_CUSTOMER_USER", &server.user)
        .env("LINKED_CUSTOMER_PASSWORD", &server.password)
        .env("LINKED_CUSTOMER_DEPARTMENT", &server.department);
    run_cmd(cmd)
}

fn openapi_python_client(spec: &Path, dir: &Path) -> Command {
    let mut cmd = python_tool("openapi-python-client");
    // Its post-hooks run `ruff` (a dependency of it, in the venv) over the output; without it on
    // PATH they are skipped with a warning, and --fail-on-warning would fail.
    let venv_bin = Path::new(cmd.get_program())
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(venv_bin).chain(std::env::split_paths(&path)))
        .unwrap_or(path);
    cmd.args(["generate", "--fail-on-warning", "--path"])
        .arg(spec)
        .arg("--output-path")
        .arg(dir)
        .env("PATH", path);
    cmd
}

fn openapi_generator(generator: &str, spec: &Path, dir: &Path) -> Command {
    let mut cmd = python_tool("openapi-generator-cli");
    cmd.args(["generate", "-g", generator, "-i"])
        .arg(spec)
        .arg("-o")
        .arg(dir);
    cmd
}

fn openapi_generator_python(spec: &Path, dir: &Path) -> Command {
    let mut cmd = openapi_generator("python", spec, dir);
    cmd.args([
        "--package-name",
        "linked_customer_client",
        "--additional-properties=projectName=linked-customer-client",
    ]);
    cmd
}

fn openapi_generator_typescript(spec: &Path, dir: &Path) -> Command {
    let mut cmd = openapi_generator("typescript-fetch", spec, &dir.join(TS_SOURCES));
    // The schema `Error` clashes with JavaScript's Error: the generator renames the model to
    // ModelError but leaves `errors: Array<Error>` (the built-in) in the models that use it, so
    // 401 bodies would not type-check. An explicit mapping renames it everywhere.
    cmd.args(["--model-name-mappings", "Error=ApiError"]);
    cmd
}

fn hey_api(spec: &Path, dir: &Path) -> Command {
    let mut cmd = node_tool("openapi-ts");
    cmd.arg("--file")
        .arg(programs().join("openapi-ts.config.mjs"))
        .arg("--input")
        .arg(spec)
        .arg("--output")
        .arg(dir.join(TS_SOURCES))
        .arg("--no-log-file");
    cmd
}

/// openapi-generator is a Java program (the jar inside the openapi-generator-cli wheel):
/// Debian's Java runtime is installed where it is missing (as root).
fn ensure_java() -> Result<()> {
    let mut java = Command::new("java");
    java.arg("-version");
    match capture(java) {
        Ok(output) if output.status.success() => Ok(()),
        _ => crate::util::apt_install(
            &["default-jre-headless"],
            "openapi-generator needs Java 11 or newer, and `java -version` failed: install a \
             Java runtime (Debian: apt-get install default-jre-headless)",
        ),
    }
}
