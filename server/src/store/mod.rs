//! Storage: one small trait, implemented for SQLite (the embedded default, on rusqlite) and
//! PostgreSQL. A customer is one stored document; a lookup is one statement (`lookup.sql`) that
//! answers the credential, the grant and the document together.

pub mod backup;
mod carry_over;
mod postgres;
mod sqlite;

pub use sqlite::path as sqlite_path;

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

    /// Every subscriber with its grants, by name (no hashes).
    async fn subscribers(&self) -> Result<Vec<SubscriberGrants>>;

    /// Grants every scope on every department (created if new) to a subscriber; false if
    /// there is no such subscriber. A grant it holds already is left as it is.
    async fn grant(
        &self,
        username: &str,
        departments: &[DepartmentToken],
        scopes: &[String],
    ) -> Result<bool>;

    /// Takes every scope on every department from a subscriber: how many grants it held of
    /// them, or `None` if there is no such subscriber.
    async fn revoke(
        &self,
        username: &str,
        departments: &[DepartmentToken],
        scopes: &[String],
    ) -> Result<Option<u64>>;

    /// Removes a customer (by its department and `customerUuid`) and its links: how many links
    /// it had, or `None` if there is no such customer.
    async fn remove_customer(
        &self,
        department: &DepartmentToken,
        customer_uuid: &str,
    ) -> Result<Option<u64>>;
}

/// The span of a lookup's statement on `database` (`database`, `primary`, `replicaN`), with the
/// OpenTelemetry database attributes (traces); never a parameter's value.
pub(crate) fn statement_span(system: &'static str, database: &str) -> tracing::Span {
    crate::traces::child(|| {
        tracing::debug_span!(
            "lookup statement",
            "otel.name" = "SELECT getLinkedCustomer",
            "otel.kind" = "client",
            "db.system.name" = system,
            "db.operation.name" = "SELECT",
            "db.query.summary" = "SELECT getLinkedCustomer",
            database = %database,
        )
    })
}

/// The help of `database_up`, kept by each store for its databases.
const DATABASE_UP_HELP: &str =
    "1 while the database answers: its last probe, lookup or readiness check succeeded.";

/// A subscriber as `subscriber list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriberGrants {
    pub username: String,
    /// (department, scope), sorted.
    pub grants: Vec<(String, String)>,
}

/// Gathers [`SUBSCRIBER_GRANTS`]'s rows (sorted by username) into subscribers.
fn gather_grants(
    rows: impl IntoIterator<Item = (String, Option<String>, Option<String>)>,
) -> Vec<SubscriberGrants> {
    let mut subscribers: Vec<SubscriberGrants> = Vec::new();
    for (username, department, scope) in rows {
        if subscribers.last().is_none_or(|s| s.username != username) {
            subscribers.push(SubscriberGrants {
                username,
                grants: Vec::new(),
            });
        }
        if let (Some(department), Some(scope), Some(last)) =
            (department, scope, subscribers.last_mut())
        {
            last.grants.push((department, scope));
        }
    }
    subscribers
}

// The statements of the admin commands, the same text for both databases. SQLite reads `$N`
// as a parameter named `$N`, numbered in the order the names first appear: each statement
// names its parameters in ascending order (a test holds it), so that both bind by position.
const UPSERT_DEPARTMENT: &str = "
    INSERT INTO departments (token) VALUES ($1)
    ON CONFLICT (token) DO UPDATE SET token = excluded.token
    RETURNING id";
const INSERT_SUBSCRIBER: &str =
    "INSERT INTO subscribers (username, password_hash) VALUES ($1, $2) RETURNING id";
const INSERT_GRANT: &str = "
    INSERT INTO grants (subscriber_id, department_id, scope) VALUES ($1, $2, $3)
    ON CONFLICT DO NOTHING";
const DELETE_SUBSCRIBER: &str = "DELETE FROM subscribers WHERE username = $1";
const UPDATE_PASSWORD: &str = "UPDATE subscribers SET password_hash = $1 WHERE username = $2";
const FIND_SUBSCRIBER: &str = "SELECT id FROM subscribers WHERE username = $1";
const SUBSCRIBER_GRANTS: &str = "
    SELECT s.username, d.token, g.scope
    FROM subscribers s
    LEFT JOIN grants g ON g.subscriber_id = s.id
    LEFT JOIN departments d ON d.id = g.department_id
    ORDER BY s.username, d.token, g.scope";
const DELETE_GRANT: &str = "
    DELETE FROM grants
    WHERE subscriber_id = $1
      AND department_id = (SELECT id FROM departments WHERE token = $2) AND scope = $3";
const FIND_CUSTOMER_BY_KEY: &str = "
    SELECT c.id FROM customer_documents c JOIN departments d ON d.id = c.department_id
    WHERE d.token = $1 AND c.customer_uuid = $2";
const DELETE_CUSTOMER_LINKS: &str = "DELETE FROM links WHERE customer_id = $1";
const DELETE_CUSTOMER: &str = "DELETE FROM customer_documents WHERE id = $1";

/// Whether this start may create the database (an SQLite file), or must find one that holds
/// the schema already (the admin commands: pointed at the wrong place, they say so rather than
/// make an empty database there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creation {
    IfMissing,
    MustExist,
}

/// What the database says of its schema before the migrations run.
#[derive(Clone, Copy, Debug)]
struct Applied {
    /// Whether it has the migrations' table (a database of this server).
    has_schema: bool,
    /// The newest migration applied.
    newest: Option<i64>,
}

/// Refuses a database this binary cannot or may not use: one without the schema when it must
/// exist, and one migrated by a newer binary (which the migrations would refuse with less to go
/// on).
fn check_schema(
    applied: Applied,
    migrator: &sqlx::migrate::Migrator,
    creation: Creation,
    url: &str,
) -> Result<()> {
    if creation == Creation::MustExist && !applied.has_schema {
        anyhow::bail!(
            "{} holds no linked-customer database (no schema): check DATABASE_URL, or run \
             `migrate` to create one there",
            redact(url)
        );
    }
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(newest) = applied.newest.filter(|&newest| newest > known) {
        anyhow::bail!(
            "the database's schema is at migration {newest}, newer than this binary's {known} \
             (linked-customer-server {}): it was upgraded by a newer release. Run that release \
             or a newer one, or restore the backup taken before the upgrade \
             (docs/operating.md, \"Upgrading\")",
            env!("CARGO_PKG_VERSION")
        );
    }
    Ok(())
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
    open_as(url, replicas, limits, Creation::IfMissing).await
}

/// Opens a database that must exist and hold the schema (see [`Creation::MustExist`]).
pub async fn open_existing(url: &str, limits: DatabaseLimits) -> Result<Opened> {
    open_as(url, &ReadReplicas::default(), limits, Creation::MustExist).await
}

async fn open_as(
    url: &str,
    replicas: &ReadReplicas,
    limits: DatabaseLimits,
    creation: Creation,
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
        postgres::open(url, replicas, limits, creation).await
    } else if !replicas.urls.is_empty() {
        anyhow::bail!("read replicas are for PostgreSQL: DATABASE_URL is not a PostgreSQL URL")
    } else if url.starts_with("sqlite:") {
        sqlite::open(url, limits, creation).await
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

    /// SQLite numbers `$N` parameters by first appearance: each shared statement must name
    /// them first in ascending order, or SQLite would bind them to the wrong places.
    #[test]
    fn shared_statements_name_their_parameters_in_order() {
        for statement in [
            super::UPSERT_DEPARTMENT,
            super::INSERT_SUBSCRIBER,
            super::INSERT_GRANT,
            super::DELETE_SUBSCRIBER,
            super::UPDATE_PASSWORD,
            super::FIND_SUBSCRIBER,
            super::SUBSCRIBER_GRANTS,
            super::DELETE_GRANT,
            super::FIND_CUSTOMER_BY_KEY,
            super::DELETE_CUSTOMER_LINKS,
            super::DELETE_CUSTOMER,
        ] {
            assert!(parameters_in_order(statement), "{statement}");
        }
        // The canary: the order this test once caught.
        assert!(!parameters_in_order(
            "UPDATE subscribers SET password_hash = $2 WHERE username = $1"
        ));
    }

    fn parameters_in_order(statement: &str) -> bool {
        let mut seen: Vec<u32> = Vec::new();
        for piece in statement.split('$').skip(1) {
            let digits: String = piece.chars().take_while(char::is_ascii_digit).collect();
            let n: u32 = digits.parse().expect("a parameter number");
            if !seen.contains(&n) {
                if n != seen.len() as u32 + 1 {
                    return false;
                }
                seen.push(n);
            }
        }
        true
    }

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
