//! The `Authorization` header parser: never panics, and what it accepts is a valid username
//! with the password exactly as encoded (it reads back the same from a fresh header).
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use linked_customer_server::auth::{is_valid_username, parse_basic};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let Some(credentials) = parse_basic(header) else {
        return;
    };
    assert!(is_valid_username(&credentials.username));
    let password = credentials.password();
    let again = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{password}",
            credentials.username
        ))
    );
    let again = parse_basic(&again).expect("a header made from accepted credentials");
    assert_eq!(again.username, credentials.username);
    assert_eq!(again.password(), password);
});
