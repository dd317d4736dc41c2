//! `cargo xtask spec-diff [--base REF]`: semver on the contract. Compares `openapi.yaml` in the
//! working tree with its version at a git ref (default: the newest tag, else the first commit
//! that has the file) with Oxide's drift, in-process, and requires that every change drift
//! reports comes with a new `info.version` and a `CHANGELOG.md` section for that version:
//!
//! - `BackwardIncompatible` or `Incompatible` (a removed operation, a retyped field, ...): a
//!   new major;
//! - `Unhandled`, and `ForwardIncompatible`: at least a new minor. drift reports every change
//!   to an object's properties and every changed constraint as `Unhandled`: it cannot tell an
//!   added optional field from a removed one, so the gate lists each with its JSON paths and
//!   drift's message for the reviewer, who decides whether it is in truth a major;
//! - `Trivial` (descriptions, examples): nothing.

use crate::util::{capture, root};
use anyhow::{Context, Result, bail};
use drift::ChangeClass;
use serde_json::Value;
use std::process::Command;

const SPEC: &str = "openapi.yaml";
/// Where each new version of the contract says what changed, under a `## VERSION` heading.
const CHANGELOG: &str = "CHANGELOG.md";

pub fn run(base: Option<&str>) -> Result<()> {
    let base = match base {
        Some(reference) => {
            if git(&["cat-file", "-e", &format!("{reference}:{SPEC}")]).is_none() {
                bail!(
                    "`{reference}` is no git ref that has {SPEC}{}",
                    if is_shallow() {
                        " (this is a shallow clone: `git fetch --unshallow --tags` brings the history)"
                    } else {
                        ""
                    }
                );
            }
            reference.to_string()
        }
        None => match default_base() {
            Some(base) => base,
            None => return Ok(()),
        },
    };
    let old_text = git(&["show", &format!("{base}:{SPEC}")])
        .with_context(|| format!("reading {SPEC} at {base}"))?;
    let old = parse(&old_text).with_context(|| format!("parsing {SPEC} at {base}"))?;
    let new = parse(&std::fs::read_to_string(root().join(SPEC))?)
        .with_context(|| format!("parsing {SPEC} in the working tree"))?;
    let changelog = std::fs::read_to_string(root().join(CHANGELOG)).unwrap_or_default();
    let verdict = judge(&old, &new, &changelog)?;
    println!("{SPEC} since {base}: {verdict}");
    Ok(())
}

/// The spec as JSON, as drift reads it.
pub fn parse(yaml: &str) -> Result<Value> {
    Ok(serde_saphyr::from_str(yaml)?)
}

/// How far a version has to move: the order is the severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Bump {
    None,
    Minor,
    Major,
}

fn needed(class: ChangeClass) -> Bump {
    match class {
        ChangeClass::BackwardIncompatible | ChangeClass::Incompatible => Bump::Major,
        ChangeClass::ForwardIncompatible | ChangeClass::Unhandled => Bump::Minor,
        ChangeClass::Trivial => Bump::None,
    }
}

/// One change drift found, as the gate shows it.
struct Finding {
    class: ChangeClass,
    message: String,
    /// Where it is in the new document, and the operation it was reached from.
    paths: Vec<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:?}] {}", self.class, self.message)?;
        for path in &self.paths {
            write!(f, "\n      at {path}")?;
        }
        Ok(())
    }
}

/// Passes (saying what it saw) when every change from `old` to `new` has the version bump and
/// the changelog section its class needs; fails listing the changes and the fix otherwise.
pub fn judge(old: &Value, new: &Value, changelog: &str) -> Result<String> {
    let changes = drift::compare(old, new).context("drift could not compare the documents")?;
    let mut findings = Vec::new();
    for change in &changes {
        for info in &change.changes {
            let mut paths: Vec<String> = change
                .paths
                .iter()
                .map(|path| place(&path.new, &info.new_subpath))
                .collect();
            paths.dedup();
            findings.push(Finding {
                class: info.class,
                message: info.message.clone(),
                paths,
            });
        }
    }
    let bump = findings
        .iter()
        .map(|finding| needed(finding.class))
        .max()
        .unwrap_or(Bump::None);
    let listed = |findings: &[Finding]| {
        findings
            .iter()
            .map(|finding| format!("  - {finding}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let trivial = findings
        .iter()
        .filter(|f| f.class == ChangeClass::Trivial)
        .count();
    if bump == Bump::None {
        return Ok(format!(
            "no change that needs a new version ({trivial} trivial)"
        ));
    }
    let (old_version, new_version) = (version(old)?, version(new)?);
    let (from, to) = (semver(&old_version)?, semver(&new_version)?);
    let moved = match bump {
        Bump::Major => to.0 > from.0,
        Bump::Minor => (to.0, to.1) > (from.0, from.1),
        Bump::None => true,
    };
    let noted = has_section(changelog, &new_version);
    let significant: Vec<Finding> = findings
        .into_iter()
        .filter(|finding| finding.class != ChangeClass::Trivial)
        .collect();
    if !moved || !noted {
        let wanted = match bump {
            Bump::Major => format!("a new major ({}.0.0)", from.0 + 1),
            _ => format!("at least a new minor ({}.{}.0)", from.0, from.1 + 1),
        };
        let mut fix = Vec::new();
        if !moved {
            fix.push(format!(
                "set info.version in {SPEC} to {wanted} (it is {new_version}, it was {old_version})"
            ));
        }
        if !noted {
            fix.push(format!(
                "add a `## {}` section to {CHANGELOG} that says what changed and what callers do",
                if moved {
                    new_version.clone()
                } else {
                    "NEW.VERSION".to_string()
                }
            ));
        }
        bail!(
            "{} change(s) in {SPEC} that need {wanted}:\n{}\nTo release them: {}. \
             Undo them otherwise (docs/releasing.md, \"Breaking changes\").",
            significant.len(),
            listed(&significant),
            fix.join("; and ")
        );
    }
    let review = if bump == Bump::Minor {
        "\nReview each one: drift cannot tell whether these break a client (a removed or \
         tightened field does); if one does, the version must be a new major instead."
    } else {
        ""
    };
    Ok(format!(
        "{} change(s), released as {new_version} (from {old_version}) with its {CHANGELOG} \
         section:\n{}{review}",
        significant.len(),
        listed(&significant)
    ))
}

/// `#/components/schemas/Customer/properties/x, reached from #/paths/~1.../get`: the place
/// itself, and where the chain of `$ref`s that led to it started.
fn place(stack: &drift::JsonPathStack, subpath: &str) -> String {
    let here = match subpath {
        "" => stack.current_pointer().to_string(),
        sub => format!("{}/{sub}", stack.current_pointer()),
    };
    match stack.iter().last() {
        Some(origin) if origin != stack.current_pointer() => {
            format!("{here}, reached from {origin}")
        }
        _ => here,
    }
}

fn version(document: &Value) -> Result<String> {
    document["info"]["version"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{SPEC} has no info.version"))
}

fn semver(version: &str) -> Result<(u64, u64, u64)> {
    let parts: Vec<u64> = version
        .split('.')
        .map(|part| part.parse::<u64>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|parts: &Vec<u64>| parts.len() == 3)
        .with_context(|| format!("info.version {version:?} is not MAJOR.MINOR.PATCH"))?;
    Ok((parts[0], parts[1], parts[2]))
}

/// Whether a heading of `changelog` names exactly `version` (`## 3.0.0`, `## v3.0.0`,
/// `## [3.0.0] - 2026-12-02`; not `## 13.0.0`).
fn has_section(changelog: &str, version: &str) -> bool {
    changelog.lines().any(|line| {
        line.starts_with('#')
            && line
                .trim_start_matches('#')
                .split_whitespace()
                .next()
                .map(|word| word.trim_matches(['[', ']']).trim_start_matches('v'))
                == Some(version)
    })
}

/// The newest tag that has the spec, else the first commit that has it; `None` (said why) when
/// there is no history to compare with.
fn default_base() -> Option<String> {
    let Some(shallow) = git(&["rev-parse", "--is-shallow-repository"]) else {
        println!(
            "spec-diff skipped: this is not a git checkout, so there is no base to compare with"
        );
        return None;
    };
    if shallow == "true" {
        println!(
            "spec-diff skipped: this is a shallow clone without the history to compare with \
             (`git fetch --unshallow --tags` brings it)"
        );
        return None;
    }
    if let Some(tag) = git(&["describe", "--tags", "--abbrev=0"]) {
        if git(&["cat-file", "-e", &format!("{tag}:{SPEC}")]).is_some() {
            println!("base: {tag}, the newest tag");
            return Some(tag);
        }
        println!("the newest tag, {tag}, has no {SPEC}");
    }
    let added = git(&["log", "--diff-filter=A", "--format=%H", "--", SPEC]).unwrap_or_default();
    match added.lines().last() {
        Some(first) => {
            println!("base: {first}, the first commit that has {SPEC} (no tag has it)");
            Some(first.to_string())
        }
        None => {
            println!(
                "spec-diff skipped: no commit has {SPEC} yet, so there is no base to compare with"
            );
            None
        }
    }
}

fn is_shallow() -> bool {
    git(&["rev-parse", "--is-shallow-repository"]).as_deref() == Some("true")
}

/// A git command's trimmed output, or `None` when it fails.
fn git(args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("git");
    cmd.args(args);
    capture(cmd)
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str =
        "/v2/department/{serviceSubscriberDepartmentToken}/entity/{entity}/{entityId}/customer";

    fn spec() -> Value {
        parse(include_str!("../../openapi.yaml")).unwrap()
    }

    fn changelog() -> String {
        include_str!("../../CHANGELOG.md").to_string()
    }

    /// `document` as the next minor (or major) version, with a changelog section for it.
    fn released(mut document: Value, major: bool) -> (Value, String) {
        let (a, b, _) = semver(&version(&document).unwrap()).unwrap();
        let next = if major {
            format!("{}.0.0", a + 1)
        } else {
            format!("{a}.{}.0", b + 1)
        };
        document["info"]["version"] = next.clone().into();
        (
            document,
            format!("{}\n## {next}\n\n- The change.\n", changelog()),
        )
    }

    fn without_customer_id() -> Value {
        let mut document = spec();
        let removed = document["components"]["schemas"]["Customer"]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("customerId");
        assert!(removed.is_some(), "openapi.yaml has Customer.customerId");
        document
    }

    fn with_shorter_token() -> Value {
        let mut document = spec();
        let schema = &mut document["paths"][PATH]["get"]["parameters"][0]["schema"];
        assert_eq!(schema["maxLength"], 64, "the department token's maxLength");
        schema["maxLength"] = 32.into();
        document
    }

    #[test]
    fn the_same_document_passes() {
        let verdict = judge(&spec(), &spec(), &changelog()).unwrap();
        assert!(verdict.starts_with("no change"), "{verdict}");
    }

    /// The canary of a removed response field: refused without a new version.
    #[test]
    fn a_removed_response_field_needs_a_new_version() {
        let err = judge(&spec(), &without_customer_id(), &changelog()).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("Customer"), "{err}");
        assert!(err.contains("set info.version"), "{err}");
    }

    /// The canary of a tightened parameter constraint: refused without a new version.
    #[test]
    fn a_tightened_parameter_needs_a_new_version() {
        let err = judge(&spec(), &with_shorter_token(), &changelog()).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("parameters"), "{err}");
        // A new version alone is not enough: its changelog section is missing.
        let (bumped, _) = released(with_shorter_token(), false);
        let err = format!("{:#}", judge(&spec(), &bumped, &changelog()).unwrap_err());
        assert!(err.contains("CHANGELOG.md"), "{err}");
        assert!(!err.contains("set info.version"), "{err}");
    }

    #[test]
    fn a_new_minor_with_its_section_passes_and_is_listed_for_review() {
        let (bumped, changelog) = released(with_shorter_token(), false);
        let verdict = judge(&spec(), &bumped, &changelog).unwrap();
        assert!(verdict.contains("Unhandled"), "{verdict}");
        assert!(verdict.contains("Review each one"), "{verdict}");
    }

    /// A removed operation breaks every caller: a new minor does not do.
    #[test]
    fn a_removed_operation_needs_a_new_major() {
        let mut gone = spec();
        gone["paths"].as_object_mut().unwrap().remove(PATH);
        let (minor, changelog) = released(gone.clone(), false);
        let err = format!("{:#}", judge(&spec(), &minor, &changelog).unwrap_err());
        assert!(err.contains("a new major"), "{err}");
        let (major, changelog) = released(gone, true);
        judge(&spec(), &major, &changelog).unwrap();
    }

    #[test]
    fn a_changelog_section_names_its_version_exactly() {
        let changelog = "# Changelog\n\n## 13.0.0\n\n- x\n\n## [2.1.0] - 2026-12-02\n";
        assert!(!has_section(changelog, "3.0.0"));
        assert!(has_section(changelog, "13.0.0"));
        assert!(has_section(changelog, "2.1.0"));
        assert!(!has_section(changelog, "2.1"));
        assert!(has_section("## v4.0.0\n", "4.0.0"));
        assert!(!has_section("- 4.0.0\n", "4.0.0"));
    }
}
