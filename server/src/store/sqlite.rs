//! The embedded store: SQLite through rusqlite, so that a lookup is one prepared statement run
//! in place, with no hop to a connection thread (the profile in BENCHMARKS.md says why). sqlx
//! runs the migrations, as it always has for this schema.

use super::{
    Applied, Creation, DELETE_CUSTOMER, DELETE_CUSTOMER_LINKS, DELETE_GRANT, DELETE_SUBSCRIBER,
    DatabaseLimits, DatabaseState, FIND_CUSTOMER_BY_KEY, FIND_SUBSCRIBER, INSERT_GRANT,
    INSERT_SUBSCRIBER, ImportStream, ImportSummary, LOOKUP_SQL, Lookup, LookupKey, Opened,
    Readiness, SUBSCRIBER_GRANTS, Store, SubscriberAccess, SubscriberGrants, UPDATE_PASSWORD,
    UPSERT_DEPARTMENT,
};
use crate::domain::DepartmentToken;
use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, named_params};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub struct SqliteStore {
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    writer: Arc<Mutex<Connection>>,
    /// `database_up{database="database"}`: the last readiness probe's verdict.
    up: prometheus::IntGauge,
}

/// The schema's migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The file an `sqlite:` URL names (not created).
pub fn path(url: &str) -> Result<std::path::PathBuf> {
    let options =
        SqliteConnectOptions::from_str(url).context("DATABASE_URL is not a valid SQLite URL")?;
    let path = options.get_filename().to_path_buf();
    if url.contains(":memory:") || path.as_os_str().is_empty() {
        bail!(
            "an in-memory SQLite database cannot be shared by the server's connections: name a file"
        );
    }
    Ok(path)
}

/// What the database at `conn` records of its migrations (before they run).
pub(super) fn applied(conn: &Connection) -> Result<Applied> {
    let has_schema: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        [],
        |r| r.get(0),
    )?;
    let newest = if has_schema {
        conn.query_row("SELECT max(version) FROM _sqlx_migrations", [], |r| {
            r.get(0)
        })?
    } else {
        None
    };
    Ok(Applied { has_schema, newest })
}

/// A command that does not create a database found no file where its URL points.
pub fn missing(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "there is no file {}, and this command does not create a database: name the server's \
         database in DATABASE_URL (or --database-url, DATABASE_URL_FILE), or run `migrate` to \
         create a new one there",
        std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
    )
}

/// `limits.lock_timeout` is how long a writer waits for another writer (an import in another
/// process) before it fails with "database is locked".
pub async fn open(url: &str, limits: DatabaseLimits, creation: Creation) -> Result<Opened> {
    let options = SqliteConnectOptions::from_str(url)
        .context("DATABASE_URL is not a valid SQLite URL")?
        .create_if_missing(creation == Creation::IfMissing)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(limits.lock_timeout);
    let path = path(url)?;
    let created = !path.exists();
    if created && creation == Creation::MustExist {
        return Err(missing(&path));
    }
    if created {
        create_private(&path)?;
    }
    seal(&path)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .context("could not open the SQLite database")?;
    let found = applied(&Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?)?;
    super::check_schema(found, &MIGRATOR, creation, url)?;
    MIGRATOR
        .run(&pool)
        .await
        .context("could not migrate the SQLite database")?;
    super::carry_over::sqlite(&pool).await?;
    pool.close().await;

    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let writer = Arc::new(Mutex::new(connect(&path, false, &limits)?));
    let readers = (0..cores * 2)
        .map(|_| connect(&path, true, &limits).map(Mutex::new))
        .collect::<Result<Vec<_>>>()?;
    let up = prometheus::IntGauge::with_opts(
        prometheus::Opts::new("database_up", super::DATABASE_UP_HELP)
            .const_label("database", "database"),
    )?;
    up.set(1);
    let store = SqliteStore {
        readers,
        next_reader: AtomicUsize::new(0),
        writer,
        up,
    };
    Ok(Opened {
        store: Arc::new(store),
        created,
    })
}

/// A new database file is created readable by its owner only: it holds the subscribers'
/// password hashes and every customer record. SQLite gives its `-wal` and `-shm` files the
/// database file's mode.
pub(super) fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    Ok(())
}

/// Takes group and other access off the database file and its `-wal` and `-shm`, saying so:
/// a file made by an older version, or copied in, may be readable by every local user.
fn seal(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        let Ok(metadata) = std::fs::metadata(file) else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))
                .with_context(|| format!("could not make {} private", file.display()))?;
            tracing::warn!(
                file = %file.display(),
                was = format!("{mode:o}"),
                now = format!("{:o}", mode & 0o700),
                "took group and other access off a database file"
            );
        }
    }
    Ok(())
}

fn connect(path: &Path, read_only: bool, limits: &DatabaseLimits) -> Result<Connection> {
    // Readers open read-write and refuse writes with `query_only`: a read-only connection could
    // not create the WAL index file when it is missing.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("could not open {}", path.display()))?;
    conn.busy_timeout(limits.lock_timeout)?;
    conn.pragma_update(None, "query_only", read_only)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    if read_only && limits.sqlite_mmap_size > 0 {
        let size = i64::try_from(limits.sqlite_mmap_size).unwrap_or(i64::MAX);
        conn.pragma_update(None, "mmap_size", size)?;
    }
    Ok(conn)
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding a connection leaves nothing half-done that SQLite would not undo.
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SqliteStore {
    /// A reader connection: the first free one, else the next in turn.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        (0..n)
            .find_map(|i| self.readers[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| lock(&self.readers[start % n]))
    }

    /// Runs `work` on the writer connection on a blocking thread.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || work(&mut lock(&writer)))
            .await
            .context("the database writer stopped")?
    }
}

const FIND_CUSTOMER: &str =
    "SELECT id FROM customer_documents WHERE department_id = ?1 AND customer_uuid = ?2";
const INSERT_CUSTOMER: &str =
    "INSERT INTO customer_documents (department_id, customer_uuid, document) VALUES (?1, ?2, ?3)";
const UPDATE_CUSTOMER: &str = "UPDATE customer_documents SET document = ?2 WHERE id = ?1";
const UPSERT_LINK: &str = "
    INSERT INTO links (department_id, entity, entity_id, customer_id) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (department_id, entity, entity_id) DO UPDATE SET customer_id = excluded.customer_id";
/// Page cache of a connection: SQLite's default, and a larger one while importing.
const DEFAULT_CACHE_KIB: i64 = 2000;
const IMPORT_CACHE_KIB: i64 = 32 * 1024;
/// Readiness reads a table of the schema, not just the connection.
const PING: &str = "SELECT count(*) FROM (SELECT 1 FROM subscribers LIMIT 1)";

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn readiness(&self) -> Readiness {
        let answered = self.reader().query_row(PING, [], |_| Ok(()));
        if let Err(err) = &answered {
            tracing::warn!(error = %err, "database unreachable");
        }
        self.up.set(i64::from(answered.is_ok()));
        Readiness {
            serving: answered.is_ok(),
            databases: vec![DatabaseState {
                name: "database".into(),
                reachable: answered.is_ok(),
            }],
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.up.clone())]
    }

    async fn lookup(&self, key: &LookupKey<'_>) -> Result<Option<Lookup>> {
        let _statement = super::statement_span("sqlite", "database").entered();
        let conn = self.reader();
        let mut statement = conn.prepare_cached(LOOKUP_SQL)?;
        let found = statement
            .query_row(
                named_params! {
                    "$1": key.username,
                    "$2": key.department.as_str(),
                    "$3": key.scope,
                    "$4": key.entity.as_str(),
                    "$5": key.entity_id.get(),
                    "$6": key.verified_hash,
                },
                |row| {
                    Ok(Lookup {
                        access: SubscriberAccess {
                            subscriber_id: row.get(0)?,
                            password_hash: row.get(1)?,
                            granted: row.get(2)?,
                        },
                        document: row.get(3)?,
                    })
                },
            )
            .optional()?;
        Ok(found)
    }

    async fn import(&self, records: ImportStream<'static>) -> Result<ImportSummary> {
        self.write(move |conn| {
            let mut summary = ImportSummary::default();
            // An import inserts into indexes at random places; with SQLite's default 2 MB of
            // page cache, pages leave the cache half-written and are written again and again.
            conn.pragma_update(None, "cache_size", -IMPORT_CACHE_KIB)?;
            let result = import_in(conn, records, &mut summary);
            conn.pragma_update(None, "cache_size", -DEFAULT_CACHE_KIB)?;
            result.map(|()| summary)
        })
        .await
    }

    async fn add_subscriber(
        &self,
        username: &str,
        password_hash: &str,
        departments: &[DepartmentToken],
        scopes: &[String],
    ) -> Result<()> {
        let (username, password_hash) = (username.to_string(), password_hash.to_string());
        let departments = departments.to_vec();
        let scopes = scopes.to_vec();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let subscriber_id: i64 = tx
                .query_row(INSERT_SUBSCRIBER, (&username, &password_hash), |r| r.get(0))
                .with_context(|| {
                    format!("could not add subscriber {username:?} (is the name taken?)")
                })?;
            grant_in(&tx, subscriber_id, &departments, &scopes)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn remove_subscriber(&self, username: &str) -> Result<bool> {
        let username = username.to_string();
        self.write(move |conn| Ok(conn.execute(DELETE_SUBSCRIBER, [&username])? > 0))
            .await
    }

    async fn set_password_hash(&self, username: &str, password_hash: &str) -> Result<bool> {
        let (username, password_hash) = (username.to_string(), password_hash.to_string());
        self.write(move |conn| Ok(conn.execute(UPDATE_PASSWORD, (&password_hash, &username))? > 0))
            .await
    }

    async fn subscribers(&self) -> Result<Vec<SubscriberGrants>> {
        let conn = self.reader();
        let mut statement = conn.prepare(SUBSCRIBER_GRANTS)?;
        let rows = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(super::gather_grants(rows))
    }

    async fn grant(
        &self,
        username: &str,
        departments: &[DepartmentToken],
        scopes: &[String],
    ) -> Result<bool> {
        let username = username.to_string();
        let (departments, scopes) = (departments.to_vec(), scopes.to_vec());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(subscriber_id) = find_subscriber(&tx, &username)? else {
                return Ok(false);
            };
            grant_in(&tx, subscriber_id, &departments, &scopes)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn revoke(
        &self,
        username: &str,
        departments: &[DepartmentToken],
        scopes: &[String],
    ) -> Result<Option<u64>> {
        let username = username.to_string();
        let (departments, scopes) = (departments.to_vec(), scopes.to_vec());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(subscriber_id) = find_subscriber(&tx, &username)? else {
                return Ok(None);
            };
            let mut revoked = 0;
            for department in &departments {
                for scope in &scopes {
                    revoked += tx
                        .execute(DELETE_GRANT, (subscriber_id, department.as_str(), scope))?
                        as u64;
                }
            }
            tx.commit()?;
            Ok(Some(revoked))
        })
        .await
    }

    async fn remove_customer(
        &self,
        department: &DepartmentToken,
        customer_uuid: &str,
    ) -> Result<Option<u64>> {
        let (department, customer_uuid) = (department.clone(), customer_uuid.to_string());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(id) = tx
                .query_row(
                    FIND_CUSTOMER_BY_KEY,
                    (department.as_str(), &customer_uuid),
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
            else {
                return Ok(None);
            };
            let links = tx.execute(DELETE_CUSTOMER_LINKS, [id])? as u64;
            tx.execute(DELETE_CUSTOMER, [id])?;
            tx.commit()?;
            Ok(Some(links))
        })
        .await
    }
}

/// The id of the subscriber named `username`.
fn find_subscriber(tx: &rusqlite::Transaction<'_>, username: &str) -> Result<Option<i64>> {
    Ok(tx
        .query_row(FIND_SUBSCRIBER, [username], |r| r.get(0))
        .optional()?)
}

/// Grants every scope on every department to the subscriber, in `tx`.
fn grant_in(
    tx: &rusqlite::Transaction<'_>,
    subscriber_id: i64,
    departments: &[DepartmentToken],
    scopes: &[String],
) -> Result<()> {
    for department in departments {
        let department_id: i64 =
            tx.query_row(UPSERT_DEPARTMENT, [department.as_str()], |r| r.get(0))?;
        for scope in scopes {
            tx.execute(INSERT_GRANT, (subscriber_id, department_id, scope))?;
        }
    }
    Ok(())
}

/// Writes the records in one transaction; an error anywhere rolls it back (dropped `tx`).
fn import_in(
    conn: &mut Connection,
    records: ImportStream<'static>,
    summary: &mut ImportSummary,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut departments: HashMap<String, i64> = HashMap::new();
        let mut upsert_department = tx.prepare(UPSERT_DEPARTMENT)?;
        let mut find = tx.prepare(FIND_CUSTOMER)?;
        let mut insert = tx.prepare(INSERT_CUSTOMER)?;
        let mut update = tx.prepare(UPDATE_CUSTOMER)?;
        let mut unlink = tx.prepare(DELETE_CUSTOMER_LINKS)?;
        let mut link = tx.prepare(UPSERT_LINK)?;
        for record in records {
            let record = record?;
            let token = record.department.as_str();
            let department_id = match departments.get(token) {
                Some(id) => *id,
                None => {
                    let id: i64 = upsert_department.query_row([token], |r| r.get(0))?;
                    departments.insert(token.to_string(), id);
                    id
                }
            };
            let existing: Option<i64> = find
                .query_row((department_id, &record.customer_uuid), |r| r.get(0))
                .optional()?;
            let customer_id = match existing {
                Some(id) => {
                    update.execute((id, &record.document))?;
                    unlink.execute([id])?;
                    summary.customers_updated += 1;
                    id
                }
                None => {
                    insert.execute((department_id, &record.customer_uuid, &record.document))?;
                    summary.customers_created += 1;
                    tx.last_insert_rowid()
                }
            };
            for l in &record.links {
                link.execute((
                    department_id,
                    l.entity.as_str(),
                    l.entity_id.get(),
                    customer_id,
                ))?;
                summary.links += 1;
            }
        }
    }
    tx.commit()?;
    Ok(())
}
