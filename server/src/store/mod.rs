//! Storage: one small trait, implemented for SQLite (the embedded default, on rusqlite) and
//! PostgreSQL. A customer is one stored document; a lookup is one statement (`lookup.sql`) that
//! answers the credential, the grant and the document together.

mod carry_over;
mod postgres;
mod sqlite;

use crate::domain::{DepartmentToken, EntityId};
use crate::import::{ImportError, ImportRecord};
use crate::model::Entity;
use anyhow::Result;
use std::sync::Arc;

/// getLinkedCustomer's one statement: see the comment at its top.
pub const LOOKUP_SQL: &str = include_str!("lookup.sql");

/// What a lookup asks.
#[derive(Clone, Copy, Debug)]
pub struct LookupKey<'a> {
    pub username: &'a str,
    pub department: &'a DepartmentToken,
    pub scope: &'a str,
    pub entity: Entity,
    pub entity_id: EntityId,
}

/// What a lookup finds when the subscriber exists.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub access: SubscriberAccess,
    /// The linked customer's stored document; read only when the grant is there.
    pub document: Option<String>,
}

/// What the authenticator needs to know about a subscriber.
#[derive(Clone, Debug)]
pub struct SubscriberAccess {
    pub subscriber_id: i64,
    pub password_hash: String,
    /// Whether the subscriber holds the asked-for scope on the asked-for department.
    pub granted: bool,
}

/// What an import changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub customers_created: usize,
    pub customers_updated: usize,
    pub links: usize,
}

/// The records of an import file, as [`crate::import::records`] reads them.
pub type ImportStream<'a> = Box<dyn Iterator<Item = Result<ImportRecord, ImportError>> + Send + 'a>;

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// A round trip to the database that reads a table of the schema, for readiness.
    async fn ping(&self) -> Result<()>;

    /// The subscriber (if any), its grant and the linked document, in one statement.
    async fn lookup(&self, key: &LookupKey<'_>) -> Result<Option<Lookup>>;

    /// Writes every record in one transaction as it arrives: all of them or none. A record
    /// that is an error rolls back everything and comes back as the error (an [`ImportError`]).
    /// A customer already stored is replaced whole, links included; a link that another
    /// customer had moves to the imported one.
    async fn import(&self, records: ImportStream<'static>) -> Result<ImportSummary>;

    /// Creates a subscriber with grants of every scope on every department (created if new).
    /// Fails if the username is taken.
    async fn add_subscriber(
        &self,
        username: &str,
        password_hash: &str,
        departments: &[DepartmentToken],
        scopes: &[String],
    ) -> Result<()>;

    /// Removes a subscriber and its grants; false if there was none.
    async fn remove_subscriber(&self, username: &str) -> Result<bool>;

    /// Replaces a subscriber's password hash; false if there is no such subscriber.
    async fn set_password_hash(&self, username: &str, password_hash: &str) -> Result<bool>;
}

/// An opened database: the store, and whether this start created it (for the demo data).
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub created: bool,
}

/// Opens (creating an SQLite file if needed) and migrates the database named by `url`.
pub async fn open(url: &str) -> Result<Opened> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres::open(url).await
    } else if url.starts_with("sqlite:") {
        sqlite::open(url).await
    } else {
        anyhow::bail!(
            "DATABASE_URL must start with sqlite: or postgres:// (got a URL with another scheme)"
        )
    }
}

/// The URL with any password replaced (in the user part and in `password`-like query
/// parameters), for logs and messages.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_string(),
            },
            None => base.to_string(),
        },
        None => base.to_string(),
    };
    match query {
        None => base,
        Some(query) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{base}?{}", pairs.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/lc"),
            "postgres://app:***@db:5432/lc"
        );
        assert_eq!(
            redact("sqlite://linked-customer.db"),
            "sqlite://linked-customer.db"
        );
        assert_eq!(
            redact("postgres://app@db/lc?sslmode=require&password=s3cret&sslpassword=k"),
            "postgres://app@db/lc?sslmode=require&password=***&sslpassword=***"
        );
    }
}
