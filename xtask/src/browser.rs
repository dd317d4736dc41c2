//! `cargo xtask browser`: Swagger UI in a real browser. Starts the server (SQLite, fixture data,
//! a test subscriber) and runs `tools/browser/swagger-ui.js`, which drives headless Chromium
//! (Debian's `chromium`, installed here when missing) with playwright-core: Authorize, Try it
//! out on getLinkedCustomer with the demo order, Execute, and the page must show the 200 with
//! the customer. The screenshot goes to `target/browser/`.

use crate::server::{Database, TestServer};
use crate::tools::ensure_node;
use crate::util::{banner, rel, root};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The script's own watchdog is 90 s; this one catches a script that hangs anyway.
const WHOLE_TEST: Duration = Duration::from_secs(120);

pub fn run() -> Result<()> {
    ensure_chromium()?;
    ensure_node()?;
    let server = TestServer::start(&Database::Sqlite)?;
    let out = crate::util::target_dir().join("browser");
    for old in ["swagger-ui.png", "failure.png"] {
        let _ = std::fs::remove_file(out.join(old));
    }
    banner("Swagger UI in headless Chromium");
    // The password goes in on stdin, so that no command line or environment shows it.
    let input = serde_json::json!({
        "baseUrl": server.base_url,
        "user": server.user,
        "password": server.password,
        "department": server.department,
        "entity": "ORDER",
        "entityId": 1001,
        "expect": ["Okafor", "700001"],
        "outDir": out,
    });
    let script = root().join("tools/browser/swagger-ui.js");
    println!("$ node {}", rel(&script));
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(&script)
        // Where ensure_node installs the pinned npm packages (playwright-core among them).
        .env("NODE_PATH", root().join(".tools/npm/node_modules"))
        .current_dir(root())
        .stdin(Stdio::piped())
        .spawn()
        .context("could not start node")?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(input.to_string().as_bytes())?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > WHOLE_TEST {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the browser test did not finish within {} s (server log: {})",
                WHOLE_TEST.as_secs(),
                rel(&server.log)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        let failure = out.join("failure.png");
        bail!(
            "the browser test failed ({status}); screenshot: {}; server log: {}",
            if failure.exists() {
                rel(&failure)
            } else {
                "none".to_string()
            },
            rel(&server.log)
        );
    }
    println!(
        "Swagger UI showed the 200 with the customer, in {:.1?}; screenshot: {}",
        started.elapsed(),
        rel(&out.join("swagger-ui.png"))
    );
    Ok(())
}

/// Debian's `chromium` package; playwright's own browser download does not work here.
fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    crate::util::apt_install(
        &["chromium"],
        "Chromium is missing; install it as root: apt-get install chromium",
    )
}
