//! Parsed, validated values. Strings from the outside are checked once, here; inner code takes
//! these types and never re-checks.

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
}
