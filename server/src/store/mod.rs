//! Storage: one trait, implemented for SQLite (the embedded default) and PostgreSQL with the
//! same SQL text (both accept `$n` placeholders, `ON CONFLICT` and `RETURNING`).

mod rows;
mod sql;

use crate::domain::{DepartmentToken, EntityId};
use crate::import::ImportRecord;
use crate::model::{CustomerWithVehicles, Entity};
use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// What the authenticator needs to know about a subscriber, fetched in one query.
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

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Cheap round trip to the database, for readiness.
    async fn ping(&self) -> Result<()>;

    /// The customer, with their vehicles, linked to `(department, entity, entity_id)`.
    async fn linked_customer(
        &self,
        department: &DepartmentToken,
        entity: Entity,
        entity_id: EntityId,
    ) -> Result<Option<CustomerWithVehicles>>;

    /// The subscriber called `username` (if any), and whether it holds `scope` on `department`.
    async fn subscriber_access(
        &self,
        username: &str,
        department: &DepartmentToken,
        scope: &str,
    ) -> Result<Option<SubscriberAccess>>;

    /// Writes every record in one transaction: all of them or none.
    async fn import(&self, records: &[ImportRecord]) -> Result<ImportSummary>;

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
        let options = PgConnectOptions::from_str(url)
            .context("DATABASE_URL is not a valid PostgreSQL URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .context("could not connect to PostgreSQL")?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("could not migrate the PostgreSQL database")?;
        Ok(Opened {
            store: Arc::new(sql::PgStore::new(pool)),
            created: false,
        })
    } else if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .context("DATABASE_URL is not a valid SQLite URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let filename = options.get_filename();
        let in_memory = url.contains(":memory:") || filename.as_os_str().is_empty();
        let created = in_memory || !filename.exists();
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 8 })
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .context("could not open the SQLite database")?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .context("could not migrate the SQLite database")?;
        Ok(Opened {
            store: Arc::new(sql::SqliteStore::new(pool)),
            created,
        })
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
