//! The PostgreSQL store. A lookup is one prepared statement on a pipelined connection
//! (`reads`); the rest is on sqlx: migrations, subscribers, and an import that streams its
//! records into a temporary table with `COPY` and merges them with a few set-based statements,
//! all in one transaction.

mod reads;
mod replicas;
mod tls;

use super::{
    Applied, Creation, DELETE_CUSTOMER, DELETE_CUSTOMER_LINKS, DELETE_GRANT, DELETE_SUBSCRIBER,
    DatabaseLimits, FIND_CUSTOMER_BY_KEY, FIND_SUBSCRIBER, INSERT_GRANT, INSERT_SUBSCRIBER,
    ImportStream, ImportSummary, Lookup, LookupKey, Opened, ReadReplicas, Readiness,
    SUBSCRIBER_GRANTS, Store, SubscriberGrants, UPDATE_PASSWORD, UPSERT_DEPARTMENT,
};
use crate::domain::DepartmentToken;
use anyhow::{Context, Result};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;

pub struct PgStore {
    /// The primary: migrations, imports, subscribers, readiness.
    pool: PgPool,
    /// Lookups: the primary's or the replicas' (`replicas`).
    reads: replicas::Router,
}

/// `statement_timeout` and `lock_timeout` for every session of the server (the sqlx pool and
/// the read connections alike); an import lifts the statement timeout for its own transaction.
fn session_settings(limits: &DatabaseLimits) -> [(&'static str, String); 2] {
    [
        (
            "statement_timeout",
            limits.statement_timeout.as_millis().to_string(),
        ),
        ("lock_timeout", limits.lock_timeout.as_millis().to_string()),
    ]
}

pub async fn open(
    url: &str,
    replicas: &ReadReplicas,
    limits: DatabaseLimits,
    creation: Creation,
) -> Result<Opened> {
    let (options, ssl_mode) = connect_options(url)?;
    // Migrations (and carrying a large database over) may take long: on a connection of their
    // own, without the server's statement timeout.
    let migrating = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(limits.acquire_timeout)
        .connect_with(options.clone())
        .await
        .map_err(|err| tls::connect_error(err, ssl_mode))?;
    let has_schema: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&migrating)
        .await?;
    let newest = if has_schema {
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
            .fetch_one(&migrating)
            .await?
    } else {
        None
    };
    let migrator = sqlx::migrate!("./migrations/postgres");
    super::check_schema(Applied { has_schema, newest }, &migrator, creation, url)?;
    migrator
        .run(&migrating)
        .await
        .context("could not migrate the PostgreSQL database")?;
    super::carry_over::postgres(&migrating).await?;
    migrating.close().await;

    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(limits.acquire_timeout)
        .connect_with(options.options(session_settings(&limits)))
        .await
        .map_err(|err| tls::connect_error(err, ssl_mode))?;
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let primary = reads::Reads::open(url, cores * 2, limits).await?;
    let reads = replicas::Router::new(
        primary,
        url,
        &replicas.urls,
        replicas.fall_back_to_primary,
        cores * 2,
        limits,
    )?;
    Ok(Opened {
        store: Arc::new(PgStore { pool, reads }),
        created: false,
    })
}

/// sqlx's options for `url`, with the `sslmode` that the read connections use too (`tls`):
/// set here whatever sqlx would have taken by itself (its default `prefer`, or `PGSSLMODE`).
/// Without `sslrootcert`, sqlx's rustls trusts the webpki roots, as the read connections do;
/// with one, sqlx adds its CAs to those roots where the read connections trust the file alone,
/// so the server starts only with a certificate from the file's CAs.
fn connect_options(url: &str) -> Result<(PgConnectOptions, tls::SslMode)> {
    let mode = tls::settings(url)?.mode;
    let options =
        PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid PostgreSQL URL")?;
    Ok((options.ssl_mode(mode.for_sqlx()), mode))
}

/// Where an import's records wait, in this transaction only, until they are merged.
const CREATE_STAGING: &str = "
    CREATE TEMPORARY TABLE import_rows (
        department    TEXT NOT NULL,
        customer_uuid TEXT NOT NULL,
        document      TEXT NOT NULL,
        entities      TEXT[] NOT NULL,
        entity_ids    BIGINT[] NOT NULL
    ) ON COMMIT DROP";
const COPY_STAGING: &str = "COPY import_rows FROM STDIN";
const MERGE_DEPARTMENTS: &str = "
    INSERT INTO departments (token) SELECT DISTINCT department FROM import_rows
    ON CONFLICT (token) DO NOTHING";
/// The ids of the customers this import wrote, so that their links need no lookup in the
/// (large) customer table.
const CREATE_IMPORTED: &str = "
    CREATE TEMPORARY TABLE imported (
        id            BIGINT NOT NULL,
        department_id BIGINT NOT NULL,
        customer_uuid TEXT NOT NULL,
        created       BOOLEAN NOT NULL
    ) ON COMMIT DROP";
/// `xmax = 0` holds for a row this statement inserted, not for one it updated.
const MERGE_CUSTOMERS: &str = "
    WITH merged AS (
        INSERT INTO customer_documents (department_id, customer_uuid, document)
        SELECT d.id, r.customer_uuid, r.document
        FROM import_rows r JOIN departments d ON d.token = r.department
        ON CONFLICT (department_id, customer_uuid) DO UPDATE SET document = excluded.document
        RETURNING id, department_id, customer_uuid, xmax = 0)
    INSERT INTO imported SELECT * FROM merged";
const COUNT_IMPORTED: &str =
    "SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM imported";
/// A re-imported customer's links are the ones of its new line only.
const UNLINK_CUSTOMERS: &str = "
    DELETE FROM links l USING imported i WHERE NOT i.created AND l.customer_id = i.id";
/// In the links' key order, so that their index is filled from one end rather than at random.
const MERGE_LINKS: &str = "
    INSERT INTO links (department_id, entity, entity_id, customer_id)
    SELECT i.department_id, u.entity, u.entity_id, i.id
    FROM import_rows r
    JOIN departments d ON d.token = r.department
    JOIN imported i ON i.department_id = d.id AND i.customer_uuid = r.customer_uuid
    CROSS JOIN LATERAL unnest(r.entities, r.entity_ids) AS u (entity, entity_id)
    ORDER BY 1, 2, 3
    ON CONFLICT (department_id, entity, entity_id) DO UPDATE SET customer_id = excluded.customer_id";
/// Memory for the merges' sorts and hash joins, for this transaction only.
const IMPORT_WORK_MEM: &str = "SET LOCAL work_mem = '64MB'";
/// A large import's merges run for minutes: the server's statement timeout is not for them.
const IMPORT_NO_STATEMENT_TIMEOUT: &str = "SET LOCAL statement_timeout = 0";
/// Readiness reads a table of the schema, not just the connection.
const PING: &str = "SELECT count(*) FROM (SELECT 1 FROM subscribers LIMIT 1) AS s";

/// How much COPY data is gathered before it is sent.
const COPY_CHUNK: usize = 1 << 20;

#[async_trait::async_trait]
impl Store for PgStore {
    async fn readiness(&self) -> Readiness {
        let primary = async {
            sqlx::query(PING).execute(&self.pool).await?;
            Ok(())
        };
        self.reads.readiness(primary).await
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        self.reads.collectors()
    }

    async fn lookup(&self, key: &LookupKey<'_>) -> Result<Option<Lookup>> {
        self.reads.lookup(key).await
    }

    async fn import(&self, records: ImportStream<'static>) -> Result<ImportSummary> {
        let mut stage = Stage::new();
        let mut tx = self.pool.begin().await?;
        for statement in [IMPORT_NO_STATEMENT_TIMEOUT, IMPORT_WORK_MEM, CREATE_STAGING] {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        let mut copy = tx.copy_in_raw(COPY_STAGING).await?;
        let mut chunk = String::with_capacity(COPY_CHUNK + 64 * 1024);
        for record in records {
            let record = match record {
                Ok(record) => record,
                Err(err) => {
                    copy.abort("the import file has an error").await.ok();
                    return Err(err.into());
                }
            };
            let entities: Vec<&str> = record.links.iter().map(|l| l.entity.as_str()).collect();
            let ids: Vec<String> = record
                .links
                .iter()
                .map(|l| l.entity_id.get().to_string())
                .collect();
            let fields = [
                record.department.as_str(),
                &record.customer_uuid,
                &record.document,
                &format!("{{{}}}", entities.join(",")),
                &format!("{{{}}}", ids.join(",")),
            ];
            for (i, field) in fields.into_iter().enumerate() {
                if i > 0 {
                    chunk.push('\t');
                }
                push_copy_text(&mut chunk, field);
            }
            chunk.push('\n');
            if chunk.len() >= COPY_CHUNK {
                copy.send(chunk.as_bytes()).await?;
                chunk.clear();
            }
        }
        copy.send(chunk.as_bytes()).await?;
        let staged = copy.finish().await?;
        stage.done("staged", staged);
        for statement in ["ANALYZE import_rows", MERGE_DEPARTMENTS] {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        sqlx::query(CREATE_IMPORTED).execute(&mut *tx).await?;
        sqlx::query(MERGE_CUSTOMERS).execute(&mut *tx).await?;
        sqlx::query("ANALYZE imported").execute(&mut *tx).await?;
        let (created, updated): (i64, i64) =
            sqlx::query_as(COUNT_IMPORTED).fetch_one(&mut *tx).await?;
        stage.done("customers merged", (created + updated).unsigned_abs());
        let unlinked = sqlx::query(UNLINK_CUSTOMERS).execute(&mut *tx).await?;
        stage.done("old links removed", unlinked.rows_affected());
        let links = sqlx::query(MERGE_LINKS).execute(&mut *tx).await?;
        stage.done("links merged", links.rows_affected());
        tx.commit().await?;
        stage.done("committed", 0);
        Ok(ImportSummary {
            customers_created: usize::try_from(created)?,
            customers_updated: usize::try_from(updated)?,
            links: usize::try_from(links.rows_affected())?,
        })
    }

    async fn add_subscriber(
        &self,
        username: &str,
        password_hash: &str,
        departments: &[DepartmentToken],
        scopes: &[String],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let subscriber_id: i64 = sqlx::query_scalar(INSERT_SUBSCRIBER)
            .bind(username)
            .bind(password_hash)
            .fetch_one(&mut *tx)
            .await
            .with_context(|| {
                format!("could not add subscriber {username:?} (is the name taken?)")
            })?;
        grant_in(&mut tx, subscriber_id, departments, scopes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_subscriber(&self, username: &str) -> Result<bool> {
        let done = sqlx::query(DELETE_SUBSCRIBER)
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_password_hash(&self, username: &str, password_hash: &str) -> Result<bool> {
        let done = sqlx::query(UPDATE_PASSWORD)
            .bind(password_hash)
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn subscribers(&self) -> Result<Vec<SubscriberGrants>> {
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(SUBSCRIBER_GRANTS)
            .fetch_all(&self.pool)
            .await?;
        Ok(super::gather_grants(rows))
    }

    async fn grant(
        &self,
        username: &str,
        departments: &[DepartmentToken],
        scopes: &[String],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let Some(subscriber_id) = find_subscriber(&mut tx, username).await? else {
            return Ok(false);
        };
        grant_in(&mut tx, subscriber_id, departments, scopes).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn revoke(
        &self,
        username: &str,
        departments: &[DepartmentToken],
        scopes: &[String],
    ) -> Result<Option<u64>> {
        let mut tx = self.pool.begin().await?;
        let Some(subscriber_id) = find_subscriber(&mut tx, username).await? else {
            return Ok(None);
        };
        let mut revoked = 0;
        for department in departments {
            for scope in scopes {
                revoked += sqlx::query(DELETE_GRANT)
                    .bind(subscriber_id)
                    .bind(department.as_str())
                    .bind(scope)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
        }
        tx.commit().await?;
        Ok(Some(revoked))
    }

    async fn remove_customer(
        &self,
        department: &DepartmentToken,
        customer_uuid: &str,
    ) -> Result<Option<u64>> {
        let mut tx = self.pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(FIND_CUSTOMER_BY_KEY)
            .bind(department.as_str())
            .bind(customer_uuid)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        let links = sqlx::query(DELETE_CUSTOMER_LINKS)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(DELETE_CUSTOMER)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(links))
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// The id of the subscriber named `username`.
async fn find_subscriber(tx: &mut Tx, username: &str) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(FIND_SUBSCRIBER)
        .bind(username)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Grants every scope on every department to the subscriber, in `tx`.
async fn grant_in(
    tx: &mut Tx,
    subscriber_id: i64,
    departments: &[DepartmentToken],
    scopes: &[String],
) -> Result<()> {
    for department in departments {
        let department_id: i64 = sqlx::query_scalar(UPSERT_DEPARTMENT)
            .bind(department.as_str())
            .fetch_one(&mut **tx)
            .await?;
        for scope in scopes {
            sqlx::query(INSERT_GRANT)
                .bind(subscriber_id)
                .bind(department_id)
                .bind(scope)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// Logs how long each stage of an import took: where a slow import spends its time.
struct Stage(std::time::Instant);

impl Stage {
    fn new() -> Stage {
        Stage(std::time::Instant::now())
    }

    fn done(&mut self, stage: &str, rows: u64) {
        tracing::info!(
            stage,
            rows,
            seconds = self.0.elapsed().as_secs_f64(),
            "import"
        );
        self.0 = std::time::Instant::now();
    }
}

/// A field in COPY's text format: backslash, tab, newline and carriage return escaped.
fn push_copy_text(out: &mut String, field: &str) {
    for c in field.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_text_escapes_what_copy_reads_as_syntax() {
        let mut out = String::new();
        super::push_copy_text(&mut out, "a\\b\tc\nd\re\"f");
        assert_eq!(out, "a\\\\b\\tc\\nd\\re\"f");
    }
}
