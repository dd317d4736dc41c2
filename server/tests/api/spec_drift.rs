//! The server's utoipa document must say what `openapi.yaml` says.
//!
//! utoipa writes OpenAPI 3.1 and the spec is 3.0.3, so both are first brought to one form:
//! `type: [X, "null"]` and `oneOf: [X, {type: null}]` become `X` with `nullable: true` (which
//! the spec never uses, so any nullable field shows up as a mismatch), empty `required` lists
//! go, `required` is sorted, parameters are keyed by `in:name`, and whole numbers are written
//! alike. Prose and examples (`description`, `summary`, `example`, `info` beyond title and
//! version) are left out: Swagger UI serves openapi.yaml itself, so only its text is read by
//! people, while everything that shapes requests and responses is compared: paths,
//! operations, parameters, statuses, media types, headers, security and component schemas.

use serde_json::{Map, Value, json};

const FIX: &str = "openapi.yaml is the contract. If the server is wrong, change its wire types \
(server/src/model.rs) or the #[utoipa::path] of the handler (server/src/routes/linked_customer.rs); \
if the API is meant to change, edit openapi.yaml first (see docs/releasing.md, \"Changing the API\").";

/// Keys whose values are maps from names (paths, statuses, field names, ...) to objects.
const NAME_MAPS: &[&str] = &[
    "paths",
    "properties",
    "responses",
    "headers",
    "content",
    "schemas",
    "securitySchemes",
];
/// Keys that are documentation, not contract.
const PROSE: &[&str] = &[
    "description",
    "summary",
    "example",
    "examples",
    "externalDocs",
];

pub fn normalize(document: &Value) -> Value {
    let mut document = normalize_value(document, false);
    if let Some(top) = document.as_object_mut() {
        top.remove("openapi");
        if let Some(info) = top.get_mut("info").and_then(Value::as_object_mut) {
            info.retain(|key, _| key == "title" || key == "version");
        }
    }
    document
}

fn normalize_value(value: &Value, is_name_map: bool) -> Value {
    match value {
        Value::Object(object) if is_name_map => Value::Object(
            object
                .iter()
                .map(|(name, child)| (name.clone(), normalize_value(child, false)))
                .collect(),
        ),
        Value::Object(object) => normalize_object(object),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| normalize_value(v, false)).collect())
        }
        Value::Number(number) => match number.as_f64() {
            Some(f) if number.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
            _ => value.clone(),
        },
        _ => value.clone(),
    }
}

fn normalize_object(object: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for (key, child) in object {
        if PROSE.contains(&key.as_str()) {
            continue;
        }
        let child = match key.as_str() {
            "parameters" => Value::Object(
                child
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let name = format!(
                            "{}:{}",
                            p["in"].as_str().unwrap_or("?"),
                            p["name"].as_str().unwrap_or("?")
                        );
                        (name, normalize_value(p, false))
                    })
                    .collect(),
            ),
            "required" if child.is_array() => {
                let mut names: Vec<Value> = child.as_array().cloned().unwrap_or_default();
                if names.is_empty() {
                    continue;
                }
                names.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                Value::Array(names)
            }
            "tags" => Value::Array(
                child
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        if t.is_object() {
                            json!({"name": t["name"]})
                        } else {
                            t.clone()
                        }
                    })
                    .collect(),
            ),
            _ => normalize_value(child, NAME_MAPS.contains(&key.as_str())),
        };
        out.insert(key.clone(), child);
    }
    // 3.1 nullability, as 3.0 would say it.
    if let Some(Value::Array(types)) = out.get("type").cloned() {
        let non_null: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if non_null.len() < types.len() {
            out.insert("nullable".into(), json!(true));
        }
        match non_null.as_slice() {
            [single] => {
                out.insert("type".into(), single.clone());
            }
            _ => {
                out.insert("type".into(), Value::Array(non_null));
            }
        }
    }
    if let Some(Value::Array(variants)) = out.get("oneOf").cloned() {
        let non_null: Vec<&Value> = variants.iter().filter(|v| v["type"] != "null").collect();
        if non_null.len() == 1 && variants.len() == 2 {
            out.remove("oneOf");
            if let Value::Object(inner) = non_null[0] {
                for (k, v) in inner {
                    out.insert(k.clone(), v.clone());
                }
            }
            out.insert("nullable".into(), json!(true));
        }
    }
    Value::Object(out)
}

#[derive(Debug, PartialEq)]
pub struct Mismatch {
    pub path: String,
    pub spec: Option<Value>,
    pub server: Option<Value>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>| match v {
            Some(v) => v.to_string(),
            None => "(nothing)".to_string(),
        };
        write!(
            f,
            "at {}\n    openapi.yaml says: {}\n    the server says:   {}",
            self.path,
            show(&self.spec),
            show(&self.server)
        )
    }
}

/// Every place where the two normalised documents differ, by JSON path.
pub fn compare(spec: &Value, server: &Value) -> Vec<Mismatch> {
    let mut found = Vec::new();
    walk("$", Some(spec), Some(server), &mut found);
    found
}

fn walk(path: &str, spec: Option<&Value>, server: Option<&Value>, found: &mut Vec<Mismatch>) {
    match (spec, server) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                walk(&format!("{path}.{key}"), a.get(key), b.get(key), found);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), Some(x), Some(y), found);
            }
        }
        (a, b) if a == b => {}
        (a, b) => found.push(Mismatch {
            path: path.to_string(),
            spec: a.cloned(),
            server: b.cloned(),
        }),
    }
}

fn spec_document() -> Value {
    serde_saphyr::from_str(include_str!("../../../openapi.yaml")).expect("openapi.yaml parses")
}

fn report(mismatches: &[Mismatch]) -> String {
    let lines: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
    format!(
        "the server's utoipa document differs from openapi.yaml in {} place(s):\n{}\n\n{FIX}",
        mismatches.len(),
        lines.join("\n")
    )
}

#[test]
fn the_server_document_matches_openapi_yaml() {
    let server = linked_customer_server::openapi::document();
    assert_eq!(
        server["openapi"], "3.1.0",
        "utoipa's output changed version: revisit normalize()"
    );
    let mismatches = compare(&normalize(&spec_document()), &normalize(&server));
    assert!(mismatches.is_empty(), "{}", report(&mismatches));
}

/// The check has to be able to fail: each kind of drift it exists for is introduced on one side
/// or the other, and must be reported at its JSON path.
#[test]
fn the_drift_check_names_each_kind_of_drift() {
    let spec = normalize(&spec_document());
    let server = normalize(&linked_customer_server::openapi::document());
    let op = "$.paths./v2/department/{serviceSubscriberDepartmentToken}/entity/{entity}/{entityId}/customer.get";
    fn get(doc: &mut Value) -> &mut Value {
        &mut doc["paths"]["/v2/department/{serviceSubscriberDepartmentToken}/entity/{entity}/{entityId}/customer"]
            ["get"]
    }

    type Mutation = (&'static str, bool, Box<dyn Fn(&mut Value)>, String);
    let cases: Vec<Mutation> = vec![
        (
            "a field's type changed on the server",
            false,
            Box::new(|doc| {
                doc["components"]["schemas"]["Vehicle"]["properties"]["brandId"] =
                    json!({"type": "string"})
            }),
            "$.components.schemas.Vehicle.properties.brandId.format".to_string(),
        ),
        (
            "a field missing on the server",
            false,
            Box::new(|doc| {
                doc["components"]["schemas"]["Customer"]["properties"]
                    .as_object_mut()
                    .map(|p| p.remove("middleName"));
            }),
            "$.components.schemas.Customer.properties.middleName".to_string(),
        ),
        (
            "a parameter changed in the spec",
            true,
            Box::new(|doc| get(doc)["parameters"]["path:entityId"]["schema"]["minimum"] = json!(0)),
            format!("{op}.parameters.path:entityId.schema.minimum"),
        ),
        (
            "a status missing on the server",
            false,
            Box::new(|doc| {
                get(doc)["responses"]
                    .as_object_mut()
                    .map(|r| r.remove("204"));
            }),
            format!("{op}.responses.204"),
        ),
        (
            "a nullable field on the server",
            false,
            Box::new(|doc| {
                doc["components"]["schemas"]["Email"]["properties"]["label"]["nullable"] =
                    json!(true)
            }),
            "$.components.schemas.Email.properties.label.nullable".to_string(),
        ),
    ];
    for (what, on_spec, mutate, expected_path) in cases {
        let (mut a, mut b) = (spec.clone(), server.clone());
        mutate(if on_spec { &mut a } else { &mut b });
        let mismatches = compare(&a, &b);
        assert!(
            mismatches.iter().any(|m| m.path == expected_path),
            "{what}: expected a mismatch at {expected_path}, got:\n{}",
            report(&mismatches)
        );
        assert!(report(&mismatches).contains("openapi.yaml is the contract"));
    }
}

#[test]
fn normalize_turns_31_nullability_into_30() {
    let three_one = json!({"type": "object", "required": [], "properties": {
        "a": {"type": ["string", "null"], "description": "x"},
        "b": {"oneOf": [{"$ref": "#/components/schemas/B"}, {"type": "null"}]},
        "description": {"type": "integer", "minimum": 1.0}
    }});
    assert_eq!(
        normalize_value(&three_one, false),
        json!({"type": "object", "properties": {
            "a": {"type": "string", "nullable": true},
            "b": {"$ref": "#/components/schemas/B", "nullable": true},
            "description": {"type": "integer", "minimum": 1}
        }})
    );
}
