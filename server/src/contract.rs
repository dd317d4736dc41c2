//! The contract guarded at run time: answers of getLinkedCustomer checked against the response
//! schemas of `openapi.yaml` (embedded, compiled once), and every imported document against
//! `CustomerWithVehicles`. A stored document is spliced into its answer unparsed, so this is
//! where a document written under an older contract, or straight into the database, is caught.
//!
//! `--contract-guard`: `off`; `sample:RATE` (checks one answer in 1/RATE; a violation is counted
//! in `contract_violations_total` and logged with the request id, and the answer goes out);
//! `enforce` (every answer; a violating one becomes a `500`: the tests' and ci's setting).
//! Neither the metric nor the log holds a value of the answer: only where (a JSON pointer,
//! array indexes as `*`) and which keyword.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The contract, as written.
const SPEC: &str = include_str!("../../openapi.yaml");

/// How answers are checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Off,
    /// One answer in `every`.
    Sample {
        every: u64,
    },
    Enforce,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "off" => Ok(Mode::Off),
            "enforce" => Ok(Mode::Enforce),
            _ => {
                let rate = text
                    .strip_prefix("sample:")
                    .and_then(|rate| rate.parse::<f64>().ok())
                    .filter(|rate| *rate > 0.0 && *rate <= 1.0)
                    .ok_or_else(|| {
                        format!("{text:?}: expected off, enforce or sample:RATE (0 < RATE <= 1)")
                    })?;
                Ok(Mode::Sample {
                    every: (1.0 / rate).round().max(1.0) as u64,
                })
            }
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Off => write!(f, "off"),
            Mode::Enforce => write!(f, "enforce"),
            Mode::Sample { every } => write!(f, "sample:{}", 1.0 / *every as f64),
        }
    }
}

/// Where an answer or a document departs from its schema: never a value of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// A JSON pointer into the answer, array indexes as `*`.
    pub pointer: String,
    /// The schema keyword it fails (`type`, `required`, `enum`, ...).
    pub keyword: String,
}

/// The schemas of the answers (by status) and of a stored document.
struct Schemas {
    found: jsonschema::Validator,
    error: jsonschema::Validator,
    document: jsonschema::Validator,
}

fn schemas() -> Result<&'static Schemas> {
    static SCHEMAS: OnceLock<Result<Schemas, String>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| compile().map_err(|err| format!("{err:#}")))
        .as_ref()
        .map_err(|err| anyhow::anyhow!("openapi.yaml's schemas: {err}"))
}

fn compile() -> Result<Schemas> {
    let spec: Value = serde_saphyr::from_str(SPEC).context("openapi.yaml is not YAML")?;
    let components = spec
        .pointer("/components/schemas")
        .context("openapi.yaml has no components.schemas")?
        .clone();
    let validator = |name: &str| -> Result<jsonschema::Validator> {
        if components.get(name).is_none() {
            bail!("openapi.yaml has no schema {name}");
        }
        // The schema, with every `#/components/schemas/...` resolved in this same document.
        let root = serde_json::json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": { "schemas": components },
        });
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|err| anyhow::anyhow!("schema {name}: {err}"))
    };
    Ok(Schemas {
        found: validator("LinkedCustomerResponse")?,
        error: validator("ErrorResponse")?,
        document: validator("CustomerWithVehicles")?,
    })
}

/// The first violation of `instance` against `validator`.
fn violation(validator: &jsonschema::Validator, instance: &Value) -> Option<Violation> {
    let error = validator.iter_errors(instance).next()?;
    let pointer = error
        .instance_path()
        .to_string()
        .split('/')
        .map(|part| {
            if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    Some(Violation {
        pointer,
        keyword: error.kind().keyword().to_string(),
    })
}

/// Checks a stored document (a `CustomerWithVehicles`), as an import writes it.
pub fn check_document(document: &Value) -> Result<Option<Violation>> {
    Ok(violation(&schemas()?.document, document))
}

/// The guard of one server: its mode, its counter and its metric.
pub struct Guard {
    mode: Mode,
    seen: AtomicU64,
    violations: prometheus::IntCounterVec,
}

impl Guard {
    /// Compiles the schemas now (a server that cannot does not start).
    pub fn new(mode: Mode) -> Result<Guard> {
        schemas()?;
        Ok(Guard {
            mode,
            seen: AtomicU64::new(0),
            violations: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "contract_violations_total",
                    "Answers that departed from openapi.yaml's schema for their status, by \
                     operation, status and where (a JSON pointer).",
                ),
                &["operation", "status", "pointer"],
            )?,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The same guard (its metric too) in another mode.
    pub fn with_mode(&self, mode: Mode) -> Guard {
        Guard {
            mode,
            seen: AtomicU64::new(0),
            violations: self.violations.clone(),
        }
    }

    pub fn collector(&self) -> Box<dyn prometheus::core::Collector> {
        Box::new(self.violations.clone())
    }

    /// Whether this answer is to be checked.
    fn due(&self) -> bool {
        match self.mode {
            Mode::Off => false,
            Mode::Enforce => true,
            Mode::Sample { every } => self
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(every),
        }
    }

    /// Checks the body of getLinkedCustomer's `status` answer (`body`: its JSON, made only when
    /// the answer is checked). `Err` only in `enforce`: the answer must not go out.
    pub fn check(
        &self,
        status: u16,
        body: impl FnOnce() -> Option<Value>,
    ) -> Result<(), Violation> {
        if !self.due() {
            return Ok(());
        }
        let Ok(schemas) = schemas() else {
            return Ok(()); // compiled in `new`
        };
        let validator = if status == 200 {
            &schemas.found
        } else {
            &schemas.error
        };
        let found = match body() {
            Some(body) => violation(validator, &body),
            None => Some(Violation {
                pointer: String::new(),
                keyword: "JSON".to_string(),
            }),
        };
        let Some(found) = found else { return Ok(()) };
        self.violations
            .with_label_values(&["getLinkedCustomer", &status.to_string(), &found.pointer])
            .inc();
        tracing::error!(
            status,
            pointer = %found.pointer,
            keyword = %found.keyword,
            mode = %self.mode,
            "an answer departs from openapi.yaml"
        );
        if self.mode == Mode::Enforce {
            Err(found)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_written() {
        assert_eq!("off".parse::<Mode>(), Ok(Mode::Off));
        assert_eq!("enforce".parse::<Mode>(), Ok(Mode::Enforce));
        assert_eq!(
            "sample:0.01".parse::<Mode>(),
            Ok(Mode::Sample { every: 100 })
        );
        assert_eq!("sample:1".parse::<Mode>(), Ok(Mode::Sample { every: 1 }));
        for bad in ["sample:0", "sample:2", "sample:x", "on", ""] {
            assert!(bad.parse::<Mode>().is_err(), "{bad}");
        }
    }

    /// A document the spec refuses names where and which keyword, and no value of it; the
    /// example of the spec passes.
    #[test]
    fn documents_are_held_to_customer_with_vehicles() {
        let good = serde_json::json!({
            "customer": {"id": 7, "customerUuid": "c-7", "emails": [], "phoneNumbers": [],
                "addresses": []},
            "vehicles": [{"id": 70, "vin": "WVWZZZ1JZXW000001"}],
        });
        assert_eq!(check_document(&good).unwrap(), None);
        let mut bad = good.clone();
        bad["vehicles"][0]["id"] = serde_json::json!("secret-value");
        let found = check_document(&bad).unwrap().expect("a violation");
        assert_eq!(found.pointer, "/vehicles/*/id");
        assert_eq!(found.keyword, "type");
        assert!(!format!("{found:?}").contains("secret-value"));
        let mut missing = good;
        missing["customer"]
            .as_object_mut()
            .unwrap()
            .remove("emails");
        assert_eq!(
            check_document(&missing).unwrap().map(|v| v.keyword),
            Some("required".to_string())
        );
    }
}
