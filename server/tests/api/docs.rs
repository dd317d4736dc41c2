//! What docs/operating.md tells an operator to type, checked against the binary: the import
//! and subscriber commands run as written, and the configuration table names the flags, the
//! environment variables and the defaults that `serve` has.

use clap::CommandFactory;
use linked_customer_server::cli::Cli;
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
        "imported customers.jsonl: 1 customers created, 0 updated, 1 links",
        "added subscriber crm",
        "password: ",
        "changed the password of subscriber crm",
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

#[test]
fn the_configuration_table_is_what_serve_takes() {
    let table = OPERATING
        .split_once("## Configuration\n")
        .expect("a Configuration section")
        .1
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2); // the header and its rule
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve");
    let mut rows = 0;
    for row in table {
        // `\|` is a `|` inside a cell.
        let row = row.replace("\\|", "\u{1}");
        let cells: Vec<String> = row
            .trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().replace('\u{1}', "|"))
            .collect();
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
