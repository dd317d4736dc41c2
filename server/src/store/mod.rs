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
use std::time::Duration;

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
    /// The stored hash this request's password was verified against (a cached credential):
    /// the document is read only when the subscriber's hash is still this one.
    pub verified_hash: Option<&'a str>,
}

/// What a lookup finds when the subscriber exists.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub access: SubscriberAccess,
    /// The linked customer's stored document; read only when the grant is there and the
    /// subscriber's hash is [`LookupKey::verified_hash`].
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

/// One database the server uses, as `/readyz` reports it (why one does not answer goes to the
/// log, when it stops answering).
#[derive(Clone, Debug)]
pub struct DatabaseState {
    /// `database` (SQLite), `primary`, `replica1`, ...
    pub name: String,
    pub reachable: bool,
}

/// What `/readyz` reports.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// Whether lookups can be answered now.
    pub serving: bool,
    pub databases: Vec<DatabaseState>,
}

/// Where lookups are read from, besides the database that is written (PostgreSQL only).
#[derive(Clone, Debug)]
pub struct ReadReplicas {
    /// Read replicas of `DATABASE_URL`, used in turn; none: lookups read `DATABASE_URL`.
    pub urls: Vec<String>,
    /// When no replica answers, read the primary (true) or answer `503` (false).
    pub fall_back_to_primary: bool,
}

impl Default for ReadReplicas {
    fn default() -> ReadReplicas {
        ReadReplicas {
            urls: Vec::new(),
            fall_back_to_primary: true,
        }
    }
}

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Whether lookups can be answered, and each database's state: a round trip to the database
    /// that is written, reading a table of the schema; a replica as last found (PostgreSQL).
    async fn readiness(&self) -> Readiness;

    /// The store's own metrics (PostgreSQL: each database's state, lookups and lag).
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        Vec::new()
    }

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

/// How long the database may take (each limit turns a stuck database into a prompt `503`), and
/// how much of it the server may map into memory.
#[derive(Clone, Copy, Debug)]
pub struct DatabaseLimits {
    /// PostgreSQL `statement_timeout` for the server's statements (an import has none), and
    /// the longest a lookup waits for its answer.
    pub statement_timeout: Duration,
    /// PostgreSQL `lock_timeout`: how long a statement waits for a row or table lock (a
    /// subscriber change during an import, for instance) before it fails and says so. SQLite:
    /// how long a writer waits for another writer.
    pub lock_timeout: Duration,
    /// The longest a request or command waits for a database connection (or to open one).
    pub acquire_timeout: Duration,
    /// SQLite `mmap_size`: how many bytes of the database file the server reads through a memory
    /// map rather than with a system call per page (0, the default: none). Faster once the
    /// file no longer fits SQLite's page cache, but the mapped pages count in the server's RSS
    /// (they are the operating system's page cache either way), and an I/O error on the file
    /// becomes a signal that stops the process instead of an error answer.
    pub sqlite_mmap_size: u64,
}

impl Default for DatabaseLimits {
    fn default() -> DatabaseLimits {
        DatabaseLimits {
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(2),
            acquire_timeout: Duration::from_secs(2),
            sqlite_mmap_size: 0,
        }
    }
}

/// The context of a failure to open a connection, whatever PostgreSQL said about it (a
/// database that refuses connections answers with a code of its own).
#[derive(Debug, thiserror::Error)]
#[error("the database cannot be reached")]
pub struct Unreachable;

/// The database could not be reached or did not answer in time: nothing is wrong with the
/// request, and it may be tried again (a `503`, not a `500`).
pub fn is_unavailable(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Unreachable>().is_some()
        || err.chain().any(|cause| {
            // Out of time, or the connection broke under the statement.
            if cause.is::<tokio::time::error::Elapsed>() || cause.is::<std::io::Error>() {
                return true;
            }
            if let Some(err) = cause.downcast_ref::<sqlx::Error>() {
                return matches!(
                    err,
                    sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
                ) || err
                    .as_database_error()
                    .and_then(|err| err.code())
                    .is_some_and(|code| is_unavailable_sqlstate(&code));
            }
            if let Some(err) = cause.downcast_ref::<tokio_postgres::Error>() {
                // Not every error without a code: a column of an unexpected type has none, and
                // is the server's fault. A failed connect carries `Unreachable` instead.
                return err.is_closed()
                    || err
                        .code()
                        .is_some_and(|code| is_unavailable_sqlstate(code.code()));
            }
            if let Some(err) = cause.downcast_ref::<rusqlite::Error>() {
                return matches!(
                    err.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                );
            }
            false
        })
}

/// PostgreSQL's codes for "not now": statement or lock timeout, the server shutting down or
/// starting up, too many connections, and every connection exception (class 08).
fn is_unavailable_sqlstate(code: &str) -> bool {
    matches!(
        code,
        "57014" | "55P03" | "57P01" | "57P02" | "57P03" | "53300"
    ) || code.starts_with("08")
}

/// Opens (creating an SQLite file if needed) and migrates the database named by `url`, with
/// the default [`DatabaseLimits`].
pub async fn open(url: &str) -> Result<Opened> {
    open_with(url, DatabaseLimits::default()).await
}

pub async fn open_with(url: &str, limits: DatabaseLimits) -> Result<Opened> {
    open_replicated(url, &ReadReplicas::default(), limits).await
}

/// [`open_with`], with lookups read from `replicas` (PostgreSQL).
pub async fn open_replicated(
    url: &str,
    replicas: &ReadReplicas,
    limits: DatabaseLimits,
) -> Result<Opened> {
    let is_postgres =
        |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
    if let Some(other) = replicas.urls.iter().find(|url| !is_postgres(url)) {
        anyhow::bail!(
            "a read replica URL must start with postgres:// (got {})",
            redact(other)
        );
    }
    if is_postgres(url) {
        postgres::open(url, replicas, limits).await
    } else if !replicas.urls.is_empty() {
        anyhow::bail!("read replicas are for PostgreSQL: DATABASE_URL is not a PostgreSQL URL")
    } else if url.starts_with("sqlite:") {
        sqlite::open(url, limits).await
    } else {
        anyhow::bail!(
            "DATABASE_URL must start with sqlite: or postgres:// (got a URL with another scheme)"
        )
    }
}

/// The URL with any password replaced (in the user part and in `password`-like query
/// parameters), for logs and messages. Read by a URL parser, as the drivers read it: a password
/// holding `?`, `@`, `:` or `%` is hidden whole, and a URL that cannot be read is not shown.
pub fn redact(url: &str) -> String {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    let Ok(mut parsed) = url::Url::parse(url) else {
        return format!("{scheme}:(a URL that could not be read; not shown)");
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    // What a parser takes for the path or the fragment may be the rest of a password.
    if parsed.path().contains('@') || parsed.fragment().is_some() {
        return format!("{scheme}:(a URL that could not be read; not shown)");
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if key.to_ascii_lowercase().contains("password") {
                    "***".to_string()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
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

    /// Passwords with the characters that split a URL: each is hidden whole.
    #[test]
    fn redact_reads_the_url_as_a_parser_does() {
        for password in [
            "Qw8?Er5",
            "Qw8@Er5",
            "Qw8:Er5",
            "Qw8%41Er5",
            "Qw8%Er5",
            "Qw8?Er5@Ty6:Ui7",
            "Qw8#Er5",
            "Qw8/Er5",
            "12/Er5",
        ] {
            let url = format!("postgres://app:{password}@db.example.com:5432/lc?sslmode=require");
            let shown = redact(&url);
            let hidden = password
                .split(['?', '@', ':', '#', '/', '%'])
                .filter(|p| p.len() > 1);
            for piece in hidden {
                assert!(!shown.contains(piece), "{url} shown as {shown}");
            }
            assert!(!shown.contains(password), "{url} shown as {shown}");
        }
        assert_eq!(
            redact("postgres://app:p%40ss@db/lc?sslmode=verify-full"),
            "postgres://app:***@db/lc?sslmode=verify-full"
        );
        assert_eq!(
            redact("postgres://app:p@ss@db/lc"),
            "postgres://app:***@db/lc"
        );
        assert_eq!(
            redact("postgres://app@db/lc?password=a%3Fb%26c&x=1"),
            "postgres://app@db/lc?password=***&x=1"
        );
        assert_eq!(
            redact("sqlite:///var/lib/lc/lc.db"),
            "sqlite:///var/lib/lc/lc.db"
        );
    }
}
