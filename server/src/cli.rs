//! The command line: `serve` (the default), `migrate`, `import` and `subscriber`. Scripts
//! depend on these names and flags: change them only with a deprecation.

use crate::auth::{SEARCH_SCOPE, hash_password};
use crate::domain::{DepartmentToken, EntityId};
use crate::limits::HttpLimits;
use crate::model::Entity;
use crate::startup::run as serve_on;
use crate::state::AppState;
use crate::store::{self, DatabaseLimits, LookupKey, Opened, ReadReplicas, redact};
use crate::{demo, import};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::io::BufRead;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://linked-customer.db";

#[derive(Parser)]
#[command(
    name = "linked-customer-server",
    version,
    about = "Serves getLinkedCustomer (see openapi.yaml) on SQLite or PostgreSQL.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, the server runs (`serve`).
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate(DatabaseArgs),
    /// Import customers from a JSON-lines file, all or nothing.
    Import {
        #[command(flatten)]
        database: DatabaseArgs,
        /// One JSON object per line: {"department", "customer", "vehicles", "links"}.
        file: PathBuf,
    },
    /// Manage service subscribers.
    #[command(subcommand)]
    Subscriber(SubscriberCommand),
}

#[derive(Args)]
struct DatabaseArgs {
    /// sqlite://FILE (created if missing) or postgres://USER:PASSWORD@HOST/DB.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// PostgreSQL: the longest a statement of the server may run (an import's are not bound).
    #[arg(long, env = "LINKED_CUSTOMER_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = millis(DatabaseLimits::default().statement_timeout))]
    db_statement_timeout_ms: u64,
    /// The longest a statement waits for a lock held by another (PostgreSQL `lock_timeout`;
    /// SQLite: for another writer, such as an import).
    #[arg(long, env = "LINKED_CUSTOMER_DB_LOCK_TIMEOUT_MS",
        default_value_t = millis(DatabaseLimits::default().lock_timeout))]
    db_lock_timeout_ms: u64,
    /// The longest a request waits for a database connection, or to open one.
    #[arg(long, env = "LINKED_CUSTOMER_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = millis(DatabaseLimits::default().acquire_timeout))]
    db_acquire_timeout_ms: u64,
    /// SQLite: MiB of the database file read through a memory map (0: none). Faster lookups on
    /// a database larger than SQLite's page cache; the mapped pages count in the server's RSS,
    /// and an I/O error on the file stops the process (docs/operating.md).
    #[arg(long, env = "LINKED_CUSTOMER_SQLITE_MMAP_MIB", default_value_t = 0)]
    sqlite_mmap_mib: u64,
}

impl DatabaseArgs {
    fn limits(&self) -> DatabaseLimits {
        DatabaseLimits {
            statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
            lock_timeout: Duration::from_millis(self.db_lock_timeout_ms),
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            sqlite_mmap_size: self.sqlite_mmap_mib.saturating_mul(1 << 20),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LINKED_CUSTOMER_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    #[command(flatten)]
    database: DatabaseArgs,
    /// PostgreSQL: a read replica of DATABASE_URL for lookups (repeat, or a comma-separated
    /// list). Imports, subscriber commands and migrations still go to DATABASE_URL.
    #[arg(
        long = "database-read-url",
        env = "DATABASE_READ_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    database_read_urls: Vec<String>,
    /// When no read replica answers: read the primary (`primary`) or answer 503 (`none`).
    #[arg(long, env = "LINKED_CUSTOMER_READ_FALLBACK", value_enum, default_value_t = ReadFallback::Primary)]
    read_fallback: ReadFallback,
    /// Do not load the demo data into a new SQLite database.
    #[arg(long)]
    no_demo: bool,
    /// How long a verified credential is trusted without a new password check.
    #[arg(long, env = "LINKED_CUSTOMER_AUTH_CACHE_SECONDS", default_value_t = 60)]
    auth_cache_seconds: u64,
    /// The longest a request may take; past it, a 503.
    #[arg(long, env = "LINKED_CUSTOMER_REQUEST_TIMEOUT_SECONDS",
        default_value_t = HttpLimits::default().request_timeout.as_secs())]
    request_timeout_seconds: u64,
    /// How long a client may take to send a request's head.
    #[arg(long, env = "LINKED_CUSTOMER_HEADER_TIMEOUT_SECONDS",
        default_value_t = HttpLimits::default().header_timeout.as_secs())]
    header_timeout_seconds: u64,
    /// How long an idle connection is kept open for its next request.
    #[arg(long, env = "LINKED_CUSTOMER_KEEP_ALIVE_SECONDS",
        default_value_t = HttpLimits::default().keep_alive.as_secs())]
    keep_alive_seconds: u64,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, env = "LINKED_CUSTOMER_MAX_CONNECTIONS",
        default_value_t = HttpLimits::default().max_connections)]
    max_connections: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReadFallback {
    Primary,
    None,
}

impl ServeArgs {
    fn replicas(&self) -> ReadReplicas {
        ReadReplicas {
            urls: self
                .database_read_urls
                .iter()
                .map(|url| url.trim().to_string())
                .filter(|url| !url.is_empty())
                .collect(),
            fall_back_to_primary: self.read_fallback == ReadFallback::Primary,
        }
    }

    fn limits(&self) -> HttpLimits {
        HttpLimits {
            request_timeout: Duration::from_secs(self.request_timeout_seconds.max(1)),
            header_timeout: Duration::from_secs(self.header_timeout_seconds.max(1)),
            keep_alive: Duration::from_secs(self.keep_alive_seconds),
            max_connections: self.max_connections.max(1),
        }
    }
}

#[derive(Subcommand)]
enum SubscriberCommand {
    /// Add a subscriber with grants on one or more departments.
    Add {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// A department the subscriber may use (repeat for more).
        #[arg(long = "department", required = true)]
        departments: Vec<String>,
        /// A scope granted on each of those departments (repeat for more).
        #[arg(long = "scope", default_value = SEARCH_SCOPE)]
        scopes: Vec<String>,
    },
    /// Remove a subscriber and its grants; its credentials stop working at once.
    Remove {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        username: String,
    },
    /// Change a subscriber's password; the old one stops working at once.
    Passwd {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        username: String,
        /// Read the new password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Migrate(database)) => {
            open(&database).await?;
            println!("database is up to date: {}", redact(&database.database_url));
            Ok(())
        }
        Some(Command::Import { database, file }) => {
            let reader = std::fs::File::open(&file)
                .with_context(|| format!("could not read {}", file.display()))?;
            let opened = open(&database).await?;
            let records = import::records(std::io::BufReader::with_capacity(1 << 20, reader));
            let summary = opened
                .store
                .import(Box::new(import::Progress::new(import::read_ahead(records))))
                .await
                .with_context(|| format!("{} was not imported", file.display()))?;
            println!(
                "imported {}: {} customers created, {} updated, {} links",
                file.display(),
                summary.customers_created,
                summary.customers_updated,
                summary.links
            );
            Ok(())
        }
        Some(Command::Subscriber(command)) => subscriber(command).await,
    }
}

async fn open(database: &DatabaseArgs) -> Result<Opened> {
    open_reading(database, &ReadReplicas::default()).await
}

/// [`open`], with lookups read from `replicas`.
async fn open_reading(database: &DatabaseArgs, replicas: &ReadReplicas) -> Result<Opened> {
    store::open_replicated(&database.database_url, replicas, database.limits())
        .await
        .with_context(|| format!("database {}", redact(&database.database_url)))
}

async fn serve(args: ServeArgs) -> Result<()> {
    let replicas = args.replicas();
    let opened = open_reading(&args.database, &replicas).await?;
    if opened.created && !args.no_demo {
        demo::load(opened.store.as_ref()).await?;
    }
    let listener = TcpListener::bind(&args.bind)
        .with_context(|| format!("could not listen on {}", args.bind))?;
    let address = listener.local_addr()?;
    let base = format!("http://{address}");
    println!("linked-customer-server {}", env!("CARGO_PKG_VERSION"));
    println!("database {}", redact(&args.database.database_url));
    for (i, url) in replicas.urls.iter().enumerate() {
        println!("read replica{} {}", i + 1, redact(url));
    }
    if demo_is_usable(&opened).await {
        println!("{}", demo::instructions(&base));
    }
    let mut state = AppState::new(opened.store, Duration::from_secs(args.auth_cache_seconds))?;
    state.limits = args.limits();
    let server = serve_on(listener, state)?;
    // Signal handlers exist before the address is announced, so no signal can be missed.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let handle = server.handle();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down gracefully");
        handle.stop(true).await;
    });
    println!("Swagger UI: {base}/swagger-ui/");
    println!("listening on {base}");
    tracing::info!(%address, "listening");
    server.await?;
    tracing::info!("stopped");
    Ok(())
}

/// True when the demo subscriber exists with the demo password, so printing it helps.
async fn demo_is_usable(opened: &Opened) -> bool {
    let (Ok(department), Ok(entity_id)) = (
        DepartmentToken::parse(demo::DEPARTMENT),
        EntityId::new(demo::ENTITY_ID),
    ) else {
        return false;
    };
    let found = opened
        .store
        .lookup(&LookupKey {
            username: demo::USERNAME,
            department: &department,
            scope: SEARCH_SCOPE,
            entity: Entity::Order,
            entity_id,
        })
        .await;
    match found {
        Ok(Some(found)) if found.access.granted && found.document.is_some() => {
            crate::auth::verify_password(demo::PASSWORD, &found.access.password_hash)
        }
        _ => false,
    }
}

fn read_password() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("could not read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("the password read from standard input is empty");
    }
    Ok(password)
}

async fn subscriber(command: SubscriberCommand) -> Result<()> {
    match command {
        SubscriberCommand::Add {
            database,
            username,
            password_stdin: _,
            departments,
            scopes,
        } => {
            if !crate::auth::is_valid_username(&username) {
                bail!(
                    "a username must be 1 to 64 characters, without `:` or control characters \
                     (got {username:?})"
                );
            }
            let departments = departments
                .iter()
                .map(|d| DepartmentToken::parse(d).map_err(anyhow::Error::msg))
                .collect::<Result<Vec<_>>>()?;
            let hash = hash_password(&read_password()?)?;
            let opened = open(&database).await?;
            opened
                .store
                .add_subscriber(&username, &hash, &departments, &scopes)
                .await?;
            println!("added subscriber {username}");
        }
        SubscriberCommand::Remove { database, username } => {
            let opened = open(&database).await?;
            if !opened.store.remove_subscriber(&username).await? {
                bail!("there is no subscriber {username}");
            }
            println!("removed subscriber {username}");
        }
        SubscriberCommand::Passwd {
            database,
            username,
            password_stdin: _,
        } => {
            let hash = hash_password(&read_password()?)?;
            let opened = open(&database).await?;
            if !opened.store.set_password_hash(&username, &hash).await? {
                bail!("there is no subscriber {username}");
            }
            println!("changed the password of subscriber {username}");
        }
    }
    Ok(())
}
