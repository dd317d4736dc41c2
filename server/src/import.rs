//! `import FILE`: JSON lines, one customer per line, read as a stream: each line is checked
//! (through the wire types) and written as it comes, all in one transaction, so a file is
//! imported entirely or not at all and memory does not grow with its size.

use crate::domain::{DepartmentToken, EntityId};
use crate::model::{Customer, CustomerWithVehicles, Entity, Vehicle};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::io::BufRead;
use std::time::{Duration, Instant};

/// The longest `customerUuid` accepted (it is part of a unique index).
pub const MAX_CUSTOMER_UUID: usize = 255;

/// The longest line accepted: far above any real customer, far below a memory problem.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// One validated line of an import file: the customer as its stored document.
#[derive(Clone, Debug)]
pub struct ImportRecord {
    pub line: usize,
    pub department: DepartmentToken,
    pub customer_uuid: String,
    /// [`CustomerWithVehicles::to_document`] of the line's customer and vehicles.
    pub document: String,
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

/// The records of a file, read line by line; the first problem ends the stream (the store then
/// rolls back what it wrote).
pub fn records<R: BufRead>(reader: R) -> Records<R> {
    Records {
        reader,
        line: 0,
        buffer: Vec::new(),
        checker: Checker::default(),
        failed: false,
    }
}

/// Parses and checks a whole text (the demo data, tests).
pub fn parse(text: &str) -> Result<Vec<ImportRecord>, ImportError> {
    records(text.as_bytes()).collect()
}

pub struct Records<R> {
    reader: R,
    line: usize,
    buffer: Vec<u8>,
    checker: Checker,
    failed: bool,
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<ImportRecord, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            self.line += 1;
            let result = match read_line(&mut self.reader, &mut self.buffer, self.line) {
                Ok(None) => return None,
                Ok(Some(raw)) if raw.trim().is_empty() => continue,
                Ok(Some(raw)) => self.checker.check(self.line, raw),
                Err(err) => Err(err),
            };
            self.failed = result.is_err();
            return Some(result);
        }
        None
    }
}

/// The next line without its line ending, read into `buffer`; `None` at the end of the file.
fn read_line<'b>(
    reader: &mut impl BufRead,
    buffer: &'b mut Vec<u8>,
    line: usize,
) -> Result<Option<&'b str>, ImportError> {
    let fail = |message: String| ImportError {
        line,
        field: "(line)".to_string(),
        message,
    };
    buffer.clear();
    let read = std::io::Read::take(reader, MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buffer)
        .map_err(|err| fail(format!("could not be read: {err}")))?;
    if read == 0 {
        return Ok(None);
    }
    if buffer.len() > MAX_LINE_BYTES {
        return Err(fail(format!(
            "is longer than {} MiB",
            MAX_LINE_BYTES / 1024 / 1024
        )));
    }
    let text = std::str::from_utf8(buffer).map_err(|_| fail("is not valid UTF-8".to_string()))?;
    Ok(Some(text.trim_end_matches(['\n', '\r'])))
}

/// Reads and checks `records` on a thread of its own, a bounded number ahead of the consumer:
/// parsing a line costs about as much as writing it, and the two then overlap.
pub fn read_ahead<I>(records: I) -> impl Iterator<Item = I::Item> + Send + 'static
where
    I: Iterator<Item = Result<ImportRecord, ImportError>> + Send + 'static,
{
    let (sender, receiver) = std::sync::mpsc::sync_channel(1024);
    std::thread::spawn(move || {
        for record in records {
            // The consumer went away (it failed, or stopped at an error): stop reading.
            if sender.send(record).is_err() {
                break;
            }
        }
    });
    receiver.into_iter()
}

/// Passes records through, printing a progress line on stderr every few seconds of a long
/// import, and a last one with the total.
pub struct Progress<I> {
    inner: I,
    records: usize,
    started: Instant,
    last: Instant,
}

impl<I> Progress<I> {
    const EVERY: Duration = Duration::from_secs(2);

    pub fn new(inner: I) -> Progress<I> {
        let now = Instant::now();
        Progress {
            inner,
            records: 0,
            started: now,
            last: now,
        }
    }

    fn report(&self) {
        let seconds = self.started.elapsed().as_secs_f64();
        eprintln!(
            "import: {} records read in {seconds:.0} s ({:.0}/s)",
            self.records,
            self.records as f64 / seconds.max(0.001)
        );
    }
}

impl<I: Iterator<Item = Result<ImportRecord, ImportError>>> Iterator for Progress<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.inner.next();
        match &next {
            Some(Ok(_)) => {
                self.records += 1;
                if self.last.elapsed() >= Self::EVERY {
                    self.last = Instant::now();
                    self.report();
                }
            }
            None if self.started.elapsed() >= Self::EVERY => self.report(),
            _ => {}
        }
        next
    }
}

/// serde's messages quote the value they refused (`invalid type: string "…", expected i64`),
/// which may be a customer's personal data: keep the kind of value, not the value.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((unexpected, expected)) = rest.rsplit_once(", expected")
        {
            let kind = unexpected
                .split(['`', '"'])
                .next()
                .unwrap_or(unexpected)
                .trim();
            return format!("{prefix}{kind}, expected{expected}");
        }
    }
    message.to_string()
}

/// Checks lines one at a time and remembers what earlier lines claimed, so that a file cannot
/// say two things about one customer or link one entity twice (the later line would silently
/// win). It keeps a keyed 64-bit hash of each key and the line number, not the strings, so that
/// a file of millions of lines stays within tens of MB: two keys of one file share a hash with
/// a chance of about one in 10^6 for 6 million keys, and then the file is refused naming both
/// lines, never imported wrong (and the next run, with a new key, goes through).
#[derive(Default)]
struct Checker {
    hasher: RandomState,
    customers: HashMap<u64, u32>,
    linked: HashMap<u64, u32>,
}

impl Checker {
    fn key(&self, value: impl Hash) -> u64 {
        self.hasher.hash_one(value)
    }

    fn check(&mut self, line: usize, raw: &str) -> Result<ImportRecord, ImportError> {
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
            fail(&field, without_value(&err.to_string()))
        })?;
        deserializer
            .end()
            .map_err(|err| fail("(line)", err.to_string()))?;
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
        let key = self.key((department.as_str(), uuid));
        if let Some(first) = self.customers.insert(key, line_number(line)) {
            return Err(fail(
                "customer.customerUuid",
                format!("the same customer is already on line {first} of this file"),
            ));
        }
        let mut links = Vec::with_capacity(parsed.links.len());
        for (i, link) in parsed.links.iter().enumerate() {
            let entity = Entity::parse(&link.entity)
                .map_err(|msg| fail(&format!("links[{i}].entity"), msg))?;
            let entity_id = EntityId::new(link.entity_id)
                .map_err(|msg| fail(&format!("links[{i}].entityId"), msg))?;
            let key = self.key((department.as_str(), entity, entity_id.get()));
            if let Some(first) = self.linked.insert(key, line_number(line)) {
                return Err(fail(
                    &format!("links[{i}]"),
                    format!("this entity is already linked on line {first} of this file"),
                ));
            }
            links.push(Link { entity, entity_id });
        }
        let customer_uuid = parsed.customer.customer_uuid.clone();
        let document = CustomerWithVehicles {
            customer: parsed.customer,
            vehicles: parsed.vehicles,
        };
        // Held to the contract's schema as well as to the wire types: what is stored here is
        // answered as it is.
        let checked = serde_json::to_value(&document)
            .map_err(anyhow::Error::from)
            .and_then(|value| crate::contract::check_document(&value));
        match checked {
            Ok(None) => {}
            Ok(Some(violation)) => {
                return Err(fail(
                    &violation.pointer,
                    format!(
                        "departs from openapi.yaml's CustomerWithVehicles ({})",
                        violation.keyword
                    ),
                ));
            }
            Err(err) => return Err(fail("(line)", format!("could not be checked: {err:#}"))),
        }
        let document = document.to_document();
        Ok(ImportRecord {
            line,
            department,
            customer_uuid,
            document,
            links,
        })
    }
}

/// A line number as the checker keeps it (a file of more than 4 billion lines is not a concern:
/// the number saturates and only the message would be off).
fn line_number(line: usize) -> u32 {
    u32::try_from(line).unwrap_or(u32::MAX)
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
    fn a_refused_value_is_not_repeated_in_the_message() {
        let line = GOOD.replace(r#""id":1"#, r#""id":"maria, expected x@example.com""#);
        let err = parse(&line).unwrap_err();
        assert_eq!(err.field, "customer.id");
        assert!(!err.message.contains("example.com"), "{}", err.message);
        assert!(
            err.message.starts_with("invalid type: string, expected"),
            "{}",
            err.message
        );
        let line = GOOD.replace(r#""customerUuid":"u1""#, r#""customerUuid":4479460958"#);
        let err = parse(&line).unwrap_err();
        assert!(!err.message.contains("4479460958"), "{}", err.message);
        assert!(
            err.message.starts_with("invalid type: integer, expected"),
            "{}",
            err.message
        );
    }

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
    fn the_document_is_the_canonical_serialisation() {
        let line = GOOD.replace(
            r#""addresses":[]"#,
            r#""addresses":[{"updateTS":"2026-10-30T19:04:36.123456789+02:00","city":null}]"#,
        );
        let record = &parse(&line).unwrap()[0];
        assert_eq!(
            record.document,
            r#"{"customer":{"id":1,"emails":[],"phoneNumbers":[],"addresses":[{"updateTS":"2026-10-30T17:04:36.123456789Z"}],"customerUuid":"u1"},"vehicles":[]}"#
        );
        assert_eq!((record.line, record.customer_uuid.as_str()), (1, "u1"));
    }

    #[test]
    fn read_ahead_passes_every_record_and_the_error_in_order() {
        let other = GOOD.replace(r#""u1""#, r#""u2""#).replace("5}", "6}");
        let text = format!("{GOOD}\n{other}\n{{broken\n");
        let lines: Vec<Result<usize, usize>> = read_ahead(records(std::io::Cursor::new(text)))
            .map(|r| r.map(|r| r.line).map_err(|e| e.line))
            .collect();
        assert_eq!(lines, vec![Ok(1), Ok(2), Err(3)]);
    }

    #[test]
    fn lines_are_read_one_at_a_time_and_the_first_problem_ends_the_stream() {
        let other = GOOD.replace(r#""u1""#, r#""u2""#).replace("5}", "6}");
        let text = format!("{GOOD}\r\n{{broken\n{other}\n");
        let results: Vec<_> = records(text.as_bytes()).collect();
        assert_eq!(results.len(), 2, "nothing is read after the bad line");
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err().line, 2);

        let err = parse(&format!("{GOOD} trailing")).unwrap_err();
        assert_eq!((err.line, err.field.as_str()), (1, "(line)"));

        let mut invalid = GOOD.as_bytes().to_vec();
        invalid.extend_from_slice(b"\n\xff\n");
        let results: Vec<_> = records(&invalid[..]).collect();
        assert_eq!(
            results[1].as_ref().unwrap_err().message,
            "is not valid UTF-8"
        );

        let long = format!("{}\n", " ".repeat(MAX_LINE_BYTES + 1));
        let err = parse(&long).unwrap_err();
        assert!(err.message.contains("longer than"), "{err}");
    }
}
