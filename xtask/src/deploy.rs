//! `cargo xtask deploy-check`: the deployment files in `deploy/` are what their tools accept,
//! and every check here is shown to fail on a broken copy (a canary), so that none passes by
//! checking nothing:
//! - `deploy/haproxy.cfg`: `haproxy -c` on the file itself (its `crt` swapped for a throwaway
//!   certificate) and on the copy `cargo xtask cluster` renders from it; a warning fails too.
//!   Canaries: an unknown keyword (refused by HAProxy), a missing timeout (only a warning).
//! - `deploy/linked-customer.service`: `systemd-analyze verify` on a copy whose `ExecStart`
//!   names the freshly built server (verify checks that the binary exists); any line it prints
//!   fails. `systemd-analyze security` prints the exposure level, held under a ceiling.
//!   Canaries: a misspelt directive (verify only warns, exit status 0: refused here for its
//!   warning) and an `ExecStart` that does not exist (verify's own failure).
//! - `deploy/linked-customer.env`: every variable is one the server reads; the debug server
//!   starts with those settings (addresses moved to loopback ports) and its `/metrics` has
//!   every metric and `route` that `deploy/alerts.yml` reads.
//! - `deploy/alerts.yml`: `promtool check rules`, and `promtool test rules` on
//!   `deploy/alerts.test.yml`; then, for every alert, copies with its threshold doubled, its
//!   threshold halved and its `for:` removed, each of which the tests must refuse, naming it.
//!
//! HAProxy, promtool (Debian's `prometheus`) and systemd-analyze are installed when missing (as
//! root); otherwise the check fails: it never skips.

use crate::util::{banner, capture, rel, root, target_dir};
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// THE HAProxy configuration, which `cargo xtask cluster` runs too.
pub(crate) const HAPROXY: &str = "deploy/haproxy.cfg";
/// Its frontend's `bind` up to the certificate file: the part a run swaps.
pub(crate) const HAPROXY_FRONTEND_BIND: &str = "bind :443 ssl crt /etc/haproxy/linked-customer.pem";
const UNIT: &str = "deploy/linked-customer.service";
const UNIT_EXEC_START: &str = "ExecStart=/usr/local/bin/linked-customer-server";
const ENV: &str = "deploy/linked-customer.env";
const ALERTS: &str = "deploy/alerts.yml";
const ALERT_TESTS: &str = "deploy/alerts.test.yml";
/// `systemd-analyze security`'s exposure (0.0 to 10.0) above which the unit fails: a ceiling
/// over today's figure (1.4 with systemd 252), not the figure, which other systemd versions
/// weigh a little differently. A unit without its hardening scores about 9.
const EXPOSURE_CEILING: f64 = 2.5;
/// Variables the server reads that are not flags (and so not in `serve --help`).
const ENV_NOT_FLAGS: [&str; 2] = ["RUST_LOG", "LINKED_CUSTOMER_LOG_FORMAT"];
/// Metrics that alerts.yml reads and the server on SQLite does not export: Prometheus's own
/// `up`, the lag of PostgreSQL read replicas, and the contract's violations (a series appears
/// with the first; server/tests/api/contract_guard.rs provokes it).
const NOT_ON_SQLITE: [&str; 3] = ["up", "replication_lag_seconds", "contract_violations_total"];

pub fn run() -> Result<()> {
    let started = Instant::now();
    let work = target_dir().join("xtask/deploy");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let haproxy = debian_program("/usr/sbin/haproxy", "haproxy")?;
    let promtool = debian_program("/usr/bin/promtool", "prometheus")?;
    let systemd_analyze = debian_program("/usr/bin/systemd-analyze", "systemd")?;
    let server = crate::server::build()?;

    banner(&format!("{HAPROXY}: haproxy -c"));
    haproxy_checks(&haproxy, &work)?;
    banner(&format!("{UNIT}: systemd-analyze verify, security"));
    unit_checks(&systemd_analyze, &server, &work)?;
    banner(&format!(
        "{ENV}: the server with these settings; the metrics {ALERTS} reads"
    ));
    let alerts: Value =
        serde_saphyr::from_str(&read(ALERTS)?).with_context(|| format!("parsing {ALERTS}"))?;
    settings_and_metrics(&server, &alerts, &work)?;
    banner(&format!("{ALERTS}: promtool check rules, test rules"));
    alert_checks(&promtool, &alerts, &work)?;
    println!(
        "\ndeploy-check: HAProxy configuration, systemd unit, settings and alert rules hold, \
         and each check failed on its canary ({:.1?})",
        started.elapsed()
    );
    Ok(())
}

/// The program at `path`, from Debian's `package`, installed when missing (as root).
pub(crate) fn debian_program(path: &str, package: &str) -> Result<PathBuf> {
    let installed = PathBuf::from(path);
    if !installed.exists() {
        crate::util::apt_install(
            &[package],
            &format!(
                "{path} is not installed and this is not root: install it (Debian: apt-get \
                 install {package})"
            ),
        )?;
    }
    ensure!(
        installed.exists(),
        "no {path} after installing Debian's {package}"
    );
    Ok(installed)
}

fn read(file: &str) -> Result<String> {
    std::fs::read_to_string(root().join(file)).with_context(|| format!("reading {file}"))
}

/// `text` (the file `name`) with each `(from, to)` applied: a line whose content starts with
/// `from` gets `to` in its place (the rest of the line, and its indentation, kept). Comment
/// lines (`#`, `;`) are never changed. Every `from` must start exactly one line, or this fails
/// naming it: the file and the code that changes it cannot drift apart unnoticed.
pub(crate) fn rewrite_lines(
    text: &str,
    name: &str,
    changes: &[(String, String)],
) -> Result<String> {
    let mut found = vec![0; changes.len()];
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let content = line.trim_start();
        let indent = &line[..line.len() - content.len()];
        let change = changes.iter().enumerate().find(|(_, (from, _))| {
            !content.starts_with(['#', ';']) && content.starts_with(from.as_str())
        });
        match change {
            Some((index, (from, to))) => {
                found[index] += 1;
                out.push_str(indent);
                out.push_str(to);
                out.push_str(&content[from.len()..]);
            }
            None => out.push_str(line),
        }
    }
    for ((from, _), count) in changes.iter().zip(found) {
        ensure!(
            count == 1,
            "{name}: {count} lines start with `{from}`, where exactly one must (the code that \
             changes the file expects it)"
        );
    }
    Ok(out)
}

/// The output of a command that must succeed and say nothing on stderr (HAProxy and
/// systemd-analyze report warnings there, with exit status 0).
fn clean(output: Output, what: &str) -> Result<Output> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success() && stderr.trim().is_empty(),
        "{what}: {}\n{}{stderr}",
        if output.status.success() {
            "warnings"
        } else {
            "failed"
        },
        String::from_utf8_lossy(&output.stdout)
    );
    Ok(output)
}

/// The whole output of a command, for matching a canary's complaint.
fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts that a canary's check failed, saying `expected`.
fn refused(result: Result<Output>, expected: &str, canary: &str) -> Result<()> {
    match result {
        Ok(output) => bail!("canary: {canary} passed the check:\n{}", said(&output)),
        Err(err) => {
            let err = format!("{err:#}");
            ensure!(
                err.contains(expected),
                "canary: {canary} failed the check, but not with `{expected}`:\n{err}"
            );
            println!("canary refused as it must: {canary} (`{expected}`)");
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HAProxy

/// `haproxy -c -f CONFIG`: valid, and no warnings.
pub(crate) fn haproxy_check(haproxy: &Path, config: &Path) -> Result<Output> {
    let mut check = Command::new(haproxy);
    check.arg("-c").arg("-f").arg(config);
    clean(capture(check)?, &format!("haproxy -c -f {}", rel(config)))
}

fn haproxy_checks(haproxy: &Path, work: &Path) -> Result<()> {
    let (_, certificate) = crate::cluster::haproxy_certificate(work)?;
    let deployed = rewrite_lines(
        &read(HAPROXY)?,
        HAPROXY,
        &[(
            HAPROXY_FRONTEND_BIND.to_string(),
            format!("bind :443 ssl crt {}", certificate.display()),
        )],
    )?;
    let config = work.join("haproxy.cfg");
    std::fs::write(&config, &deployed)?;
    haproxy_check(haproxy, &config)?;
    println!("{HAPROXY} (its crt a throwaway certificate): valid, no warnings");

    // The copy `cargo xtask cluster` runs, on loopback ports (`-c` binds none of them).
    let servers: Vec<(String, String)> = (1..=crate::cluster::SERVERS)
        .map(|n| (format!("127.0.0.1:1808{n}"), format!("127.0.0.1:1909{n}")))
        .collect();
    let rendered = crate::cluster::haproxy_config(
        "127.0.0.1:18443",
        &certificate,
        "127.0.0.1:18404",
        &work.join("haproxy.sock"),
        &servers,
    )?;
    let cluster = work.join("haproxy-cluster.cfg");
    std::fs::write(&cluster, rendered)?;
    haproxy_check(haproxy, &cluster)?;
    println!("the copy cargo xtask cluster renders from it: valid, no warnings");

    let canary = |name: &str, from: &str, to: &str| -> Result<PathBuf> {
        let path = work.join(name);
        std::fs::write(
            &path,
            rewrite_lines(&deployed, HAPROXY, &[(from.to_string(), to.to_string())])?,
        )?;
        Ok(path)
    };
    let unknown = canary(
        "haproxy-unknown-keyword.cfg",
        "balance roundrobin",
        "balance roundrobin\n    canary-unknown-keyword on",
    )?;
    refused(
        haproxy_check(haproxy, &unknown),
        "canary-unknown-keyword",
        "an unknown keyword in the backend",
    )?;
    let untimed = canary(
        "haproxy-no-client-timeout.cfg",
        "timeout client 30s",
        "# timeout client: removed by the canary",
    )?;
    refused(
        haproxy_check(haproxy, &untimed),
        "missing timeouts",
        "no `timeout client` (HAProxy only warns, exit status 0)",
    )
}

// ---------------------------------------------------------------------------------------------
// The systemd unit

/// `systemd-analyze verify UNIT`: exit status 0 and not a line of warning.
fn verify_unit(systemd_analyze: &Path, unit: &Path) -> Result<Output> {
    let mut verify = Command::new(systemd_analyze);
    verify.arg("verify").arg(unit);
    clean(
        capture(verify)?,
        &format!("systemd-analyze verify {}", rel(unit)),
    )
}

fn unit_checks(systemd_analyze: &Path, server: &Path, work: &Path) -> Result<()> {
    let shipped = read(UNIT)?;
    // The unit names its binary where an operator installs it; verify checks that ExecStart's
    // program exists, so the copy names the one just built (the rest unchanged, or with one
    // more change for a canary).
    let unit_copy = |dir: &str, program: &Path, change: Option<(&str, &str)>| -> Result<PathBuf> {
        let dir = work.join(dir);
        std::fs::create_dir_all(&dir)?;
        let mut changes = vec![(
            UNIT_EXEC_START.to_string(),
            format!("ExecStart={}", program.display()),
        )];
        changes.extend(change.map(|(from, to)| (from.to_string(), to.to_string())));
        let path = dir.join("linked-customer.service");
        std::fs::write(&path, rewrite_lines(&shipped, UNIT, &changes)?)?;
        Ok(path)
    };
    let unit = unit_copy("unit", server, None)?;
    verify_unit(systemd_analyze, &unit)?;
    println!("{UNIT} (ExecStart: {}): verified, no warnings", rel(server));
    // The variables it sets (and those its comments offer) are ones the server reads.
    let settings = shipped.lines().filter_map(|line| {
        let line = line.trim().trim_start_matches('#');
        variable_name(line.strip_prefix("Environment=")?)
    });
    let named = known_variables(server, UNIT, settings)?;
    println!("{UNIT}: its {named} Environment= variables are ones the server reads");

    let mut security = Command::new(systemd_analyze);
    security
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--threshold={}", (EXPOSURE_CEILING * 10.0) as u32))
        .arg(&unit);
    let output = capture(security)?;
    let text = said(&output);
    let verdict = text
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .with_context(|| format!("systemd-analyze security said no exposure level:\n{text}"))?;
    println!(
        "systemd-analyze security: {}",
        verdict.trim_start_matches("→ ")
    );
    ensure!(
        output.status.success(),
        "the unit's exposure is above {EXPOSURE_CEILING}: {verdict}\n{text}"
    );

    let misspelt = unit_copy(
        "unit-misspelt",
        server,
        Some(("ProtectSystem=strict", "ProtectSytem=strict")),
    )?;
    refused(
        verify_unit(systemd_analyze, &misspelt),
        "Unknown key",
        "`ProtectSytem=strict` (verify only warns, exit status 0)",
    )?;
    let missing = unit_copy(
        "unit-missing-binary",
        Path::new("/nonexistent/linked-customer-server"),
        None,
    )?;
    let mut verify = Command::new(systemd_analyze);
    verify.arg("verify").arg(&missing);
    let output = capture(verify)?;
    ensure!(
        !output.status.success() && said(&output).contains("/nonexistent/linked-customer-server"),
        "canary: systemd-analyze verify did not fail on an ExecStart that does not exist:\n{}",
        said(&output)
    );
    println!(
        "canary refused as it must: an ExecStart that does not exist (systemd-analyze verify: \
         {})",
        output.status
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The settings file, and the metrics the alerts read

/// `KEY=VALUE` lines of an environment file, comments and blank lines left out.
fn env_lines(text: &str) -> Result<Vec<(String, String)>> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            line.split_once('=')
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .with_context(|| format!("{ENV}: not KEY=VALUE: {line}"))
        })
        .collect()
}

/// `NAME` of `NAME=VALUE` or of `#NAME=VALUE` (an example left commented out), where `NAME`
/// is upper case: not a comment's prose.
fn variable_name(line: &str) -> Option<&str> {
    let (name, _) = line.trim_start_matches('#').split_once('=')?;
    let upper = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
    (!name.is_empty() && name.chars().all(upper)).then_some(name)
}

/// Fails unless every one of `names` (set in `file`) is a variable the server reads: one that
/// `linked-customer-server serve --help` names (`[env: NAME=]`), or [`ENV_NOT_FLAGS`].
fn known_variables<'a>(
    server: &Path,
    file: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<usize> {
    let mut help = Command::new(server);
    help.args(["serve", "--help"]);
    let output = capture(help)?;
    ensure!(output.status.success(), "serve --help failed");
    let text = String::from_utf8_lossy(&output.stdout);
    let known: Vec<&str> = text
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .chain(ENV_NOT_FLAGS)
        .collect();
    let mut count = 0;
    for name in names {
        ensure!(
            known.contains(&name),
            "{file}: the server reads no {name} (it reads {})",
            known.join(", ")
        );
        count += 1;
    }
    Ok(count)
}

/// The metric names in a PromQL expression: the names right before a `{` (every selector in
/// alerts.yml has its `job` matcher), outside quoted strings.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in expr.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && c == '{' && !word.is_empty() {
            names.push(std::mem::take(&mut word));
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
        } else {
            word.clear();
        }
    }
    names
}

/// Every alerting rule of alerts.yml: (group index, rule index, alert name).
fn alerting_rules(alerts: &Value) -> Result<Vec<(usize, usize, String)>> {
    let mut found = Vec::new();
    let groups = alerts["groups"]
        .as_array()
        .with_context(|| format!("{ALERTS} has no groups"))?;
    for (g, group) in groups.iter().enumerate() {
        let rules = group["rules"]
            .as_array()
            .with_context(|| format!("{ALERTS}: a group without rules"))?;
        for (r, rule) in rules.iter().enumerate() {
            if let Some(name) = rule["alert"].as_str() {
                found.push((g, r, name.to_string()));
            }
        }
    }
    ensure!(!found.is_empty(), "{ALERTS} has no alerting rules");
    Ok(found)
}

fn expr(alerts: &Value, (g, r): (usize, usize)) -> Result<&str> {
    alerts["groups"][g]["rules"][r]["expr"]
        .as_str()
        .with_context(|| format!("{ALERTS}: a rule without an expr"))
}

fn settings_and_metrics(server: &Path, alerts: &Value, work: &Path) -> Result<()> {
    let text = read(ENV)?;
    // Every setting, and every example left commented out, is one the server reads.
    let named = known_variables(server, ENV, text.lines().filter_map(variable_name))?;
    let mut env = Vec::new();
    for (key, value) in env_lines(&text)? {
        // Every address on a free loopback port: this machine is not 10.0.0.x.
        let value = if key.ends_with("_BIND") {
            format!("127.0.0.1:{}", crate::util::free_port()?)
        } else {
            value
        };
        env.push((key, value));
    }
    let env: Vec<(&str, String)> = env
        .iter()
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect();
    let database = format!("sqlite://{}", work.join("settings.db").display());
    let running = crate::bench::Server::start_on(
        server,
        &format!("127.0.0.1:{}", crate::util::free_port()?),
        &database,
        &env,
        &work.join("server.log"),
    )?;
    ensure!(
        running.operations.is_some(),
        "the server started with {ENV} has no operations port (LINKED_CUSTOMER_ADMIN_BIND)"
    );
    let lookup = crate::bench::lookup_path(0, "ORDER");
    let (status, _) = running.get(&lookup, None)?;
    ensure!(
        status == 401,
        "GET {lookup} without a credential answered {status}"
    );
    let (status, _) = running.operations_get("/readyz")?;
    ensure!(status == 200, "/readyz answered {status}");
    let (status, metrics) = running.operations_get("/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    println!(
        "{ENV}: {named} variables the server reads ({} set); it started with them (addresses \
         on loopback ports), /readyz 200 on its operations port",
        env.len()
    );

    let mut names = Vec::new();
    let mut routes = Vec::new();
    for (g, r, _) in alerting_rules(alerts)? {
        let expr = expr(alerts, (g, r))?;
        names.extend(metric_names(expr));
        routes.extend(
            expr.split("route=\"")
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
                .map(str::to_string),
        );
    }
    names.sort();
    names.dedup();
    routes.sort();
    routes.dedup();
    let exported = |name: &str| {
        metrics.lines().any(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
    };
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !NOT_ON_SQLITE.contains(&name.as_str()) && !exported(name))
        .collect();
    ensure!(
        missing.is_empty(),
        "{ALERTS} reads metrics the server does not export: {missing:?}"
    );
    for route in &routes {
        ensure!(
            metrics.contains(&format!("route=\"{route}\"")),
            "{ALERTS} reads route=\"{route}\", which the server's /metrics does not have after \
             GET {lookup}"
        );
    }
    println!(
        "the server exports every metric {ALERTS} reads ({}; {} only elsewhere) and its \
         route {routes:?}",
        names.len(),
        NOT_ON_SQLITE.join(" and ")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The alert rules

/// `promtool ARGS` in `dir`.
fn promtool(promtool: &Path, dir: &Path, args: &[&str]) -> Result<Output> {
    let mut command = Command::new(promtool);
    command.args(args).current_dir(dir);
    capture(command)
}

/// What a copy of alerts.yml changes in one alert.
#[derive(Clone, Copy, Debug)]
enum Mutation {
    /// `> X` made `> 2X` (`== 0` made `< 0`): the series that fires it no longer does.
    Raised,
    /// `> X` made `> X/2` (`== 0` made `>= 0`): the series that stays under it fires it.
    Lowered,
    /// No `for:`: it fires at once, where the tests expect it still pending.
    Immediate,
}

/// The rule `at` of `alerts`, changed by `mutation`; an expr that does not end with its
/// comparison (`> NUMBER`, `== 0`) or a rule without `for:` fails.
fn mutate(alerts: &Value, at: (usize, usize), mutation: Mutation) -> Result<Value> {
    let mut copy = alerts.clone();
    let rule = &mut copy["groups"][at.0]["rules"][at.1];
    let name = rule["alert"].as_str().unwrap_or_default().to_string();
    if let Mutation::Immediate = mutation {
        let rule = rule.as_object_mut().context("a rule that is not a map")?;
        ensure!(
            rule.remove("for").is_some(),
            "{ALERTS}: {name} has no `for:`"
        );
        return Ok(copy);
    }
    let expr = expr(alerts, at)?.trim_end();
    let comparison = || format!("{ALERTS}: {name}'s expr must end with `> NUMBER` or `== 0`");
    let (rest, number) = expr
        .rsplit_once(char::is_whitespace)
        .with_context(comparison)?;
    let (rest, operator) = rest
        .trim_end()
        .rsplit_once(char::is_whitespace)
        .with_context(comparison)?;
    let threshold: f64 = number.parse().with_context(comparison)?;
    let changed = match (operator, mutation) {
        (">", Mutation::Raised) => format!("> {}", threshold * 2.0),
        (">", _) => format!("> {}", threshold / 2.0),
        ("==", Mutation::Raised) if threshold == 0.0 => "< 0".to_string(),
        ("==", _) if threshold == 0.0 => ">= 0".to_string(),
        _ => bail!(comparison()),
    };
    rule["expr"] = Value::String(format!("{} {changed}", rest.trim_end()));
    Ok(copy)
}

/// The test file `tests` with only the test groups that evaluate alert `name`.
fn tests_of(tests: &Value, name: &str) -> Result<Value> {
    let mut copy = tests.clone();
    let groups = copy["tests"]
        .as_array_mut()
        .with_context(|| format!("{ALERT_TESTS} has no tests"))?;
    groups.retain(|group| {
        group["alert_rule_test"]
            .as_array()
            .is_some_and(|cases| cases.iter().any(|case| case["alertname"] == name))
    });
    ensure!(!groups.is_empty(), "{ALERT_TESTS} has no test of {name}");
    Ok(copy)
}

fn alert_checks(promtool_path: &Path, alerts: &Value, work: &Path) -> Result<()> {
    let deploy = root().join("deploy");
    let file = |path: &str| path.trim_start_matches("deploy/").to_string();
    let checked = promtool(promtool_path, &deploy, &["check", "rules", &file(ALERTS)])?;
    clean(checked, &format!("promtool check rules {ALERTS}"))?;
    let tested = promtool(
        promtool_path,
        &deploy,
        &["test", "rules", &file(ALERT_TESTS)],
    )?;
    let tested = clean(tested, &format!("promtool test rules {ALERT_TESTS}"))?;
    print!("{}", String::from_utf8_lossy(&tested.stdout));

    // Copies in a folder of their own: each mutated rules file next to the tests of that alert
    // (both as JSON, which is YAML too). Each copy unchanged must pass, or its canaries prove
    // nothing.
    let tests: Value = serde_saphyr::from_str(&read(ALERT_TESTS)?)
        .with_context(|| format!("parsing {ALERT_TESTS}"))?;
    let dir = work.join("alerts");
    std::fs::create_dir_all(&dir)?;
    let test_copy = |rules: &Value| -> Result<Output> {
        std::fs::write(dir.join(file(ALERTS)), serde_json::to_string_pretty(rules)?)?;
        promtool(promtool_path, &dir, &["test", "rules", &file(ALERT_TESTS)])
    };
    let rules = alerting_rules(alerts)?;
    for (g, r, name) in &rules {
        std::fs::write(
            dir.join(file(ALERT_TESTS)),
            serde_json::to_string_pretty(&tests_of(&tests, name)?)?,
        )?;
        clean(
            test_copy(alerts)?,
            &format!("promtool test rules on {name}'s tests and an unchanged copy"),
        )?;
        for mutation in [Mutation::Raised, Mutation::Lowered, Mutation::Immediate] {
            let output = test_copy(&mutate(alerts, (*g, *r), mutation)?)?;
            let text = said(&output);
            ensure!(
                !output.status.success(),
                "canary: {ALERT_TESTS} passes {ALERTS} with {name} {mutation:?}: its tests do not \
                 hold that alert's threshold and `for:`"
            );
            ensure!(
                text.contains(&format!("alertname: {name},")),
                "canary: {ALERT_TESTS} failed on {name} {mutation:?}, but not on {name}:\n{text}"
            );
        }
    }
    println!(
        "canaries refused as they must: {} copies of {ALERTS}, each alert's threshold doubled, \
         halved and its `for:` removed ({} alerts), each failed its test",
        rules.len() * 3,
        rules.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_lines_changes_one_line_each_and_fails_on_a_missing_or_repeated_one() {
        let text = "# bind :443 in a comment\n    bind :443 ssl\n    server s1 a check\n";
        let changes = [
            ("bind :443".to_string(), "bind 127.0.0.1:1".to_string()),
            ("server s1 a".to_string(), "server s1 b".to_string()),
        ];
        assert_eq!(
            rewrite_lines(text, "t", &changes).unwrap(),
            "# bind :443 in a comment\n    bind 127.0.0.1:1 ssl\n    server s1 b check\n"
        );
        let missing = [("server s2".to_string(), String::new())];
        assert!(rewrite_lines(text, "t", &missing).is_err());
        let twice = format!("{text}    server s1 a check\n");
        assert!(rewrite_lines(&twice, "t", &changes).is_err());
    }

    #[test]
    fn variable_names_are_settings_and_examples_not_prose() {
        assert_eq!(
            variable_name("LINKED_CUSTOMER_BIND=0.0.0.0:8080"),
            Some("LINKED_CUSTOMER_BIND")
        );
        assert_eq!(variable_name("#RUST_LOG=info"), Some("RUST_LOG"));
        assert_eq!(variable_name("# Or TLS on the server itself (a=b)"), None);
        assert_eq!(
            variable_name("DATABASE_URL_FILE=%d/database-url"),
            Some("DATABASE_URL_FILE")
        );
    }

    #[test]
    fn metric_names_skip_functions_labels_and_strings() {
        assert_eq!(
            metric_names(
                r#"histogram_quantile(0.99, sum by (le) (rate(x_bucket{route="/a/{b}/c"}[5m]))) / up{job="j"} > 1"#
            ),
            ["x_bucket", "up"]
        );
    }

    #[test]
    fn every_alert_can_be_mutated() {
        let alerts: Value = serde_saphyr::from_str(&read(ALERTS).unwrap()).unwrap();
        for (g, r, name) in alerting_rules(&alerts).unwrap() {
            for mutation in [Mutation::Raised, Mutation::Lowered, Mutation::Immediate] {
                let copy = mutate(&alerts, (g, r), mutation).unwrap();
                assert_ne!(copy, alerts, "{name} {mutation:?}");
            }
        }
        let rule = |expr: &str| -> Value {
            serde_json::json!({"groups": [{"rules": [{"alert": "A", "expr": expr, "for": "1m"}]}]})
        };
        let raised = mutate(&rule("rate(x{}[5m])\n  > 0.25\n"), (0, 0), Mutation::Raised);
        assert_eq!(
            raised.unwrap()["groups"][0]["rules"][0]["expr"],
            "rate(x{}[5m]) > 0.5"
        );
        let lowered = mutate(&rule("up{} == 0"), (0, 0), Mutation::Lowered).unwrap();
        assert_eq!(lowered["groups"][0]["rules"][0]["expr"], "up{} >= 0");
        assert!(mutate(&rule("up{} < 1"), (0, 0), Mutation::Raised).is_err());
    }
}
