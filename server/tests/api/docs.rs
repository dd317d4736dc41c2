//! What docs/operating.md tells an operator to type, checked against the binary: the import
//! and subscriber commands run as written, and the configuration table names the flags, the
//! environment variables and the defaults that `serve` has.

use crate::helpers::{Backend, TestDb};
use clap::CommandFactory;
use linked_customer_server::cli::Cli;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const OPERATING: &str = include_str!("../../../docs/operating.md");
const BIN: &str = env!("CARGO_BIN_EXE_linked-customer-server");

/// The body of the first fenced block of `language` after the heading `heading`.
fn block_after(heading: &str, language: &str) -> String {
    let section = OPERATING
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?} in docs/operating.md"))
        .1;
    let fence = format!("```{language}\n");
    let body = section
        .split_once(&fence)
        .unwrap_or_else(|| panic!("no {fence:?} block under {heading:?}"))
        .1;
    body.split_once("```")
        .expect("a closed block")
        .0
        .to_string()
}

#[test]
fn the_import_and_subscriber_commands_run_as_written() {
    let heading = "## Importing data and adding subscribers";
    let script = block_after(heading, "sh");
    let example = block_after(heading, "json");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("customers.jsonl"), &example).expect("example file");
    std::fs::write(dir.path().join("new-password.txt"), "a-new-password-0815\n")
        .expect("password file");
    let bin_dir = std::path::Path::new(BIN)
        .parent()
        .expect("the binary's folder");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // `URL` is the one placeholder; the commands without `--database-url` use DATABASE_URL.
    let script = script.replace(" URL ", " \"$DATABASE_URL\" ");
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let output = Command::new("sh")
        .args(["-e", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("DATABASE_URL", &url)
        .output()
        .expect("sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}\n{stdout}\n{stderr}");
    for said in [
        "imported customers.jsonl into sqlite://",
        ": 1 customers created, 0 updated, 1 links",
        "added subscriber crm",
        "password: ",
        "changed the password of subscriber crm",
        "granted customer.search on south-2 to subscriber crm",
        "crm       north-1     customer.search\ncrm       south-2     customer.search",
        "revoked 1 grants of customer.search on south-2 from subscriber crm",
        "removed customer c-7 of department north-1 and its 1 links",
        "removed subscriber crm",
    ] {
        assert!(stdout.contains(said), "no {said:?} in:\n{stdout}");
    }
}

/// The first `` `code` `` span of a table cell.
fn code(cell: &str) -> Option<&str> {
    let (_, rest) = cell.split_once('`')?;
    Some(rest.split_once('`')?.0)
}

/// The rows of the first table after `heading`, without its header and rule.
fn table_after(heading: &str) -> impl Iterator<Item = &'static str> {
    OPERATING
        .split_once(&format!("{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?} in docs/operating.md"))
        .1
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
}

/// The cells of a table row (`\|` is a `|` inside a cell).
fn cells(row: &str) -> Vec<String> {
    let row = row.replace("\\|", "\u{1}");
    row.trim_matches('|')
        .split('|')
        .map(|cell| cell.trim().replace('\u{1}', "|"))
        .collect()
}

#[test]
fn the_configuration_table_is_what_serve_takes() {
    let table = table_after("## Configuration");
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve");
    let mut rows = 0;
    for row in table {
        let cells = cells(row);
        let [flag, env, default] = &cells[..] else {
            panic!("not a row of three cells: {row}");
        };
        let long = code(flag)
            .and_then(|flag| flag.split_whitespace().next())
            .and_then(|flag| flag.strip_prefix("--"))
            .unwrap_or_else(|| panic!("no flag in {row}"));
        let arg = serve
            .get_arguments()
            .find(|arg| arg.get_long() == Some(long))
            .unwrap_or_else(|| panic!("serve has no --{long} ({row})"));
        assert_eq!(
            arg.get_env().map(|env| env.to_string_lossy().into_owned()),
            code(env).map(str::to_string),
            "the environment variable of --{long}"
        );
        if default.starts_with('`') {
            let shown = code(default).expect("a default");
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            assert_eq!(defaults, [shown], "the default of --{long}");
        } else {
            assert!(
                arg.get_default_values().is_empty(),
                "--{long} has a default the table does not show"
            );
        }
        rows += 1;
    }
    let documented = rows;
    let flags = serve
        .get_arguments()
        .filter(|arg| arg.get_long().is_some_and(|long| long != "help"))
        .count();
    assert_eq!(
        documented, flags,
        "every flag of serve has its row, and only those"
    );
}

/// Each metric family's type and label names, as `/metrics` at `base` shows them.
async fn exposed(base: &str, into: &mut BTreeMap<String, (String, BTreeSet<String>)>) {
    let text = crate::cli::metrics_text(base).await;
    let mut families: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            families.push((name.to_string(), kind.to_string()));
            into.entry(name.to_string())
                .or_insert_with(|| (kind.to_string(), BTreeSet::new()));
        } else if !line.starts_with('#') && !line.is_empty() {
            let series = line.split_once(' ').expect("a sample").0;
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let family = families
                .iter()
                .rev()
                .find(|(family, _)| {
                    name == family
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| name.strip_suffix(suffix) == Some(family))
                })
                .unwrap_or_else(|| panic!("{line} follows no # TYPE of its family"));
            let entry = into.get_mut(&family.0).expect("family");
            for pair in labels
                .trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
            {
                let label = pair.split_once('=').expect("label=value").0;
                if label != "le" {
                    entry.1.insert(label.to_string());
                }
            }
        }
    }
}

/// docs/operating.md's table of metrics names every metric family that `/metrics` shows (on
/// SQLite, and on PostgreSQL with a read replica), with its type and labels, and no other.
#[tokio::test]
async fn the_metrics_table_is_what_metrics_shows() {
    use crate::cli::{ORDER_1001, PW, Served, add_reader, get, import_fixture};
    let mut shown = BTreeMap::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("dir");
        add_reader(&db.url);
        import_fixture(&db.url, dir.path());
        let replica = [("DATABASE_READ_URL", db.url.as_str())];
        // On SQLite, a stored document that departs from the spec: the guard counts it.
        let sampled = [("LINKED_CUSTOMER_CONTRACT_GUARD", "sample:1")];
        let env: &[(&str, &str)] = if backend == Backend::Postgres {
            &replica
        } else {
            crate::contract_guard::break_the_document(&db);
            &sampled
        };
        let served = Served::start_with(&db.url, &["--no-demo"], env, None);
        // A 200, a 204 and a 401: every counter with its labels.
        assert_eq!(get(&served.base, ORDER_1001, "u", PW).await.status(), 200);
        let unknown = ORDER_1001.replace("1001", "7");
        assert_eq!(get(&served.base, &unknown, "u", PW).await.status(), 204);
        assert_eq!(
            get(&served.base, ORDER_1001, "u", "wrong-password")
                .await
                .status(),
            401
        );
        exposed(&served.base, &mut shown).await;
    }
    let mut documented = BTreeMap::new();
    for row in table_after("### Metrics") {
        let cells = cells(row);
        let [name, kind, labels, meaning] = &cells[..] else {
            panic!("not a row of four cells: {row}");
        };
        assert!(!meaning.is_empty(), "{row}: no meaning");
        let name = code(name).unwrap_or_else(|| panic!("no metric in {row}"));
        let labels: BTreeSet<String> = labels
            .split(',')
            .filter_map(code)
            .map(str::to_string)
            .collect();
        documented.insert(name.to_string(), (kind.clone(), labels));
    }
    assert_eq!(
        documented, shown,
        "docs/operating.md's metrics (left), /metrics (right)"
    );
}
