//! Parsed, validated values. Strings from the outside are checked once, here; inner code takes
//! these types and never re-checks.

use crate::errors::{self, Code};
use crate::model::{self, Entity};

/// A department token: 1 to 64 characters of `[A-Za-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DepartmentToken(String);

impl DepartmentToken {
    pub const MAX_LEN: usize = 64;

    pub fn parse(text: &str) -> Result<DepartmentToken, String> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(format!(
                "serviceSubscriberDepartmentToken must be 1 to {} characters of A-Z, a-z, 0-9, _ \
                 and - (got {} bytes).",
                Self::MAX_LEN,
                text.len()
            ));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(
                "serviceSubscriberDepartmentToken may hold only the characters A-Z, a-z, 0-9, _ and -."
                    .to_string(),
            );
        }
        Ok(DepartmentToken(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An entity id: a positive 64-bit integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntityId(i64);

impl EntityId {
    pub fn new(value: i64) -> Result<EntityId, String> {
        if value >= 1 {
            Ok(EntityId(value))
        } else {
            Err(format!("entityId must be at least 1 (got {value})."))
        }
    }

    /// Decimal digits only: no sign (a `+` is not how any client writes an integer), no
    /// spaces, no fraction or exponent.
    pub fn parse(text: &str) -> Result<EntityId, String> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            if let Some(rest) = text.strip_prefix('-')
                && !rest.is_empty()
                && rest.bytes().all(|b| b.is_ascii_digit())
            {
                return Err("entityId must be at least 1 (got a negative number).".to_string());
            }
            return Err(
                "entityId must be a whole number from 1 to 9223372036854775807.".to_string(),
            );
        }
        let value: i64 = text.parse().map_err(|_| {
            "entityId must be a whole number from 1 to 9223372036854775807 (it is too large)."
                .to_string()
        })?;
        EntityId::new(value)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// Parses an entity kind, with a message that lists the allowed values.
pub fn parse_entity(text: &str) -> Result<Entity, String> {
    Entity::parse(text).ok_or_else(|| {
        let allowed: Vec<&str> = Entity::ALL.iter().map(|e| e.as_str()).collect();
        format!("entity must be one of {}.", allowed.join(", "))
    })
}

/// The three path parameters of getLinkedCustomer, each checked; every failure is reported.
pub struct LinkedCustomerPath {
    pub department: DepartmentToken,
    pub entity: Entity,
    pub entity_id: EntityId,
}

impl LinkedCustomerPath {
    pub fn parse(
        department: &str,
        entity: &str,
        entity_id: &str,
    ) -> Result<LinkedCustomerPath, Vec<model::Error>> {
        fn check<T>(
            result: Result<T, String>,
            code: Code,
            errors: &mut Vec<model::Error>,
        ) -> Option<T> {
            result
                .map_err(|msg| errors.push(code.with_message(msg)))
                .ok()
        }
        let mut errors = Vec::new();
        let department = check(
            DepartmentToken::parse(department),
            errors::INVALID_DEPARTMENT_TOKEN,
            &mut errors,
        );
        let entity = check(parse_entity(entity), errors::INVALID_ENTITY, &mut errors);
        let entity_id = check(
            EntityId::parse(entity_id),
            errors::INVALID_ENTITY_ID,
            &mut errors,
        );
        match (department, entity, entity_id) {
            (Some(department), Some(entity), Some(entity_id)) => Ok(LinkedCustomerPath {
                department,
                entity,
                entity_id,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn department_tokens() {
        assert!(DepartmentToken::parse("demo-department").is_ok());
        assert!(DepartmentToken::parse("A_b-9").is_ok());
        assert!(DepartmentToken::parse(&"a".repeat(64)).is_ok());
        assert!(DepartmentToken::parse(&"a".repeat(65)).is_err());
        assert!(DepartmentToken::parse("").is_err());
        assert!(DepartmentToken::parse("dept one").is_err());
        assert!(DepartmentToken::parse("dépt").is_err());
        assert!(DepartmentToken::parse("a/b").is_err());
    }

    #[test]
    fn entity_ids() {
        assert_eq!(EntityId::parse("1").map(EntityId::get), Ok(1));
        assert_eq!(
            EntityId::parse("9223372036854775807").map(EntityId::get),
            Ok(i64::MAX)
        );
        for bad in [
            "0",
            "-1",
            "",
            "1.5",
            "abc",
            "9223372036854775808",
            " 1",
            "1e3",
        ] {
            assert!(EntityId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn every_bad_parameter_is_reported() {
        let Err(errors) = LinkedCustomerPath::parse("bad token", "CAR", "0") else {
            panic!("accepted bad parameters");
        };
        let codes: Vec<i32> = errors.iter().map(|e| e.error_code).collect();
        assert_eq!(codes, vec![1001, 1002, 1003]);
    }
}
