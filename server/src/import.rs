//! `import FILE`: JSON lines, one customer per line. The whole file is checked before anything
//! is written, and then written in one transaction, so a file is imported entirely or not at all.

use crate::domain::{DepartmentToken, EntityId, parse_entity};
use crate::model::{Customer, Entity, Vehicle};
use chrono::SubsecRound;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// The longest `customerUuid` accepted (it is part of a unique index).
pub const MAX_CUSTOMER_UUID: usize = 255;

/// One validated line of an import file.
#[derive(Clone, Debug)]
pub struct ImportRecord {
    pub department: DepartmentToken,
    pub customer: Customer,
    pub vehicles: Vec<Vehicle>,
    pub links: Vec<Link>,
}

#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub entity: Entity,
    pub entity_id: EntityId,
}

/// What is wrong with an import file, and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}, field `{field}`: {message}")]
pub struct ImportError {
    pub line: usize,
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
struct Line {
    department: String,
    customer: Customer,
    #[serde(default)]
    vehicles: Vec<Vehicle>,
    #[serde(default)]
    links: Vec<LinkLine>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinkLine {
    entity: String,
    entity_id: i64,
}

/// Parses and checks every line; the first problem found is returned with its line and field.
pub fn parse(text: &str) -> Result<Vec<ImportRecord>, ImportError> {
    let mut records = Vec::new();
    // What each earlier line claimed, so that a file cannot say two things about one customer
    // or link one entity twice (the later line would silently win).
    let mut customers: HashMap<(String, String), usize> = HashMap::new();
    let mut linked: HashMap<(String, Entity, i64), usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let fail = |field: &str, message: String| ImportError {
            line,
            field: field.to_string(),
            message,
        };
        let mut deserializer = serde_json::Deserializer::from_str(raw);
        let mut unknown = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        let parsed: Result<Line, _> = serde_ignored::deserialize(
            serde_path_to_error::Deserializer::new(&mut deserializer, &mut track),
            |path| unknown.push(path.to_string()),
        );
        let parsed = parsed.map_err(|err| {
            let path = track.path().to_string();
            let field = if path == "." {
                "(line)".to_string()
            } else {
                path
            };
            fail(&field, err.to_string())
        })?;
        // The wire types accept unknown fields (clients must), but a typo in an import file
        // would silently drop data: refuse it.
        if let Some(field) = unknown.first() {
            return Err(fail(field, "unknown field".to_string()));
        }
        let department =
            DepartmentToken::parse(&parsed.department).map_err(|msg| fail("department", msg))?;
        // U+0000 can only arrive escaped; look for it only where the escape appears.
        if raw.contains("\\u0000")
            && let Ok(value) = serde_json::from_str::<Value>(raw)
            && let Some(field) = nul_path(&value, String::new())
        {
            return Err(fail(
                &field,
                "must not contain the character U+0000".to_string(),
            ));
        }
        let uuid = parsed.customer.customer_uuid.as_str();
        if uuid.trim().is_empty() || uuid.chars().count() > MAX_CUSTOMER_UUID {
            return Err(fail(
                "customer.customerUuid",
                format!(
                    "must be 1 to {MAX_CUSTOMER_UUID} characters: it identifies the customer \
                     within the department"
                ),
            ));
        }
        if let Some(first) = customers.insert(
            (
                parsed.department.clone(),
                parsed.customer.customer_uuid.clone(),
            ),
            line,
        ) {
            return Err(fail(
                "customer.customerUuid",
                format!("the same customer is already on line {first} of this file"),
            ));
        }
        let mut links = Vec::with_capacity(parsed.links.len());
        for (i, link) in parsed.links.iter().enumerate() {
            let entity = parse_entity(&link.entity)
                .map_err(|msg| fail(&format!("links[{i}].entity"), msg))?;
            let entity_id = EntityId::new(link.entity_id)
                .map_err(|msg| fail(&format!("links[{i}].entityId"), msg))?;
            if let Some(first) =
                linked.insert((parsed.department.clone(), entity, entity_id.get()), line)
            {
                return Err(fail(
                    &format!("links[{i}]"),
                    format!("this entity is already linked on line {first} of this file"),
                ));
            }
            links.push(Link { entity, entity_id });
        }
        let mut customer = parsed.customer;
        // PostgreSQL keeps microseconds; both databases answer with what both can keep.
        for address in &mut customer.addresses {
            address.update_ts = address.update_ts.map(|ts| ts.trunc_subsecs(6));
        }
        records.push(ImportRecord {
            department,
            customer,
            vehicles: parsed.vehicles,
            links,
        });
    }
    Ok(records)
}

/// The path of the first string holding U+0000 (which PostgreSQL cannot store in text).
fn nul_path(value: &Value, path: String) -> Option<String> {
    match value {
        Value::String(text) if text.contains('\0') => Some(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                Some(path)
            } else {
                nul_path(item, path)
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"department":"d1","customer":{"id":1,"customerUuid":"u1","emails":[],"phoneNumbers":[],"addresses":[]},"links":[{"entity":"ORDER","entityId":5}]}"#;

    #[test]
    fn parses_a_good_line() {
        let records = parse(GOOD).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].links[0].entity, Entity::Order);
        assert_eq!(records[0].links[0].entity_id.get(), 5);
    }

    #[test]
    fn names_the_line_and_the_field() {
        let bad = GOOD.replace(r#""emails":[]"#, r#""emails":[{"okToEmail":"yes"}]"#);
        let err = parse(&format!("{GOOD}\n\n{bad}\n")).unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(err.field, "customer.emails[0].okToEmail");

        let err = parse(&GOOD.replace("ORDER", "CAR")).unwrap_err();
        assert_eq!((err.line, err.field.as_str()), (1, "links[0].entity"));

        let err = parse(&GOOD.replace(r#""id":1,"#, r#""id":1,"nickname":"x","#)).unwrap_err();
        assert_eq!(err.field, "customer.nickname");
        assert_eq!(err.message, "unknown field");

        let err = parse("{not json").unwrap_err();
        assert_eq!(err.line, 1);

        let err = parse(&GOOD.replace(r#""emails":[]"#, r#""emails":[{"label":"a\u0000b"}]"#))
            .unwrap_err();
        assert_eq!(err.field, "customer.emails[0].label");

        // An escaped backslash followed by "u0000" is text, not U+0000.
        let escaped = GOOD.replace(r#""emails":[]"#, r#""emails":[{"label":"a\\u0000b"}]"#);
        assert!(parse(&escaped).is_ok());

        let long = GOOD.replace(r#""u1""#, &format!("\"{}\"", "u".repeat(256)));
        assert_eq!(parse(&long).unwrap_err().field, "customer.customerUuid");
    }

    #[test]
    fn a_file_says_one_thing_about_each_customer_and_link() {
        let err = parse(&format!("{GOOD}\n{GOOD}")).unwrap_err();
        assert_eq!((err.line, err.field.as_str()), (2, "customer.customerUuid"));
        assert!(err.message.contains("line 1"), "{}", err.message);

        let other = GOOD.replace(r#""u1""#, r#""u2""#);
        let err = parse(&format!("{GOOD}\n{other}")).unwrap_err();
        assert_eq!((err.line, err.field.as_str()), (2, "links[0]"));

        let elsewhere = other.replace(r#""d1""#, r#""d2""#);
        assert_eq!(
            parse(&format!("{GOOD}\n{elsewhere}")).map(|r| r.len()),
            Ok(2)
        );
    }

    #[test]
    fn timestamps_keep_microseconds() {
        let line = GOOD.replace(
            r#""addresses":[]"#,
            r#""addresses":[{"updateTS":"2026-10-30T19:04:36.123456789+02:00"}]"#,
        );
        let ts = parse(&line).unwrap()[0].customer.addresses[0].update_ts;
        assert_eq!(
            ts.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            Some("2026-10-30T17:04:36.123456Z".to_string())
        );
    }
}
