//! `import FILE`: JSON lines, one customer per line. The whole file is checked before anything
//! is written, and then written in one transaction, so a file is imported entirely or not at all.

use crate::domain::{DepartmentToken, EntityId, parse_entity};
use crate::model::{Customer, Entity, Vehicle};
use serde::Deserialize;

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
        if parsed.customer.customer_uuid.trim().is_empty() {
            return Err(fail(
                "customer.customerUuid",
                "must not be empty: it identifies the customer within the department".to_string(),
            ));
        }
        let mut links = Vec::with_capacity(parsed.links.len());
        for (i, link) in parsed.links.iter().enumerate() {
            let entity = parse_entity(&link.entity)
                .map_err(|msg| fail(&format!("links[{i}].entity"), msg))?;
            let entity_id = EntityId::new(link.entity_id)
                .map_err(|msg| fail(&format!("links[{i}].entityId"), msg))?;
            links.push(Link { entity, entity_id });
        }
        records.push(ImportRecord {
            department,
            customer: parsed.customer,
            vehicles: parsed.vehicles,
            links,
        });
    }
    Ok(records)
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
    }
}
