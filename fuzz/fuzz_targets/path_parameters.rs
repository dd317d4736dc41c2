//! getLinkedCustomer's path parameters: never panic, every refusal names at least one
//! parameter, and what is accepted is valid (a positive id, a token that parses again as
//! itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use linked_customer_server::domain::DepartmentToken;
use linked_customer_server::routes::linked_customer::parse_segments;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '/');
    let (department, entity, entity_id) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    match parse_segments(department, entity, entity_id) {
        Ok(path) => {
            assert!(path.entity_id.get() > 0);
            let token = path.department.as_str();
            let again = DepartmentToken::parse(token).expect("an accepted token parses again");
            assert_eq!(again.as_str(), token);
        }
        Err(errors) => assert!(!errors.is_empty() && errors.len() <= 3),
    }
});
