//! The command line: `serve` (the default), `migrate`, `import` and `subscriber`. Scripts
//! depend on these names and flags: change them only with a deprecation.

use crate::auth::{SEARCH_SCOPE, ThrottleLimits, hash_password};
use crate::domain::{DepartmentToken, EntityId};
use crate::limits::HttpLimits;
use crate::model::Entity;
use crate::startup::{Listeners, serve as serve_on};
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
    /// Give subscribers scopes on departments, or take them away.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Manage the imported customers.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// SQLite: copy the database, while the server runs, into a new file (consistent: one
    /// snapshot). PostgreSQL: use pg_dump (docs/operating.md, "Backups").
    Backup {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The backup to write; must not exist yet.
        file: PathBuf,
    },
    /// SQLite: replace the database's content with a backup's, at once, also while the server
    /// runs (it serves the backup's content from then on). PostgreSQL: use pg_restore.
    Restore {
        #[command(flatten)]
        database: DatabaseArgs,
        /// A file written by `backup`.
        file: PathBuf,
    },
}

#[derive(Args)]
struct DatabaseArgs {
    /// sqlite://FILE (created if missing) or postgres://USER:PASSWORD@HOST/DB. A URL with a
    /// password belongs in the environment or in a file, not on a command line.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// A file whose first line is the database URL, in place of DATABASE_URL (for secrets
    /// mounted as files).
    #[arg(
        long,
        env = "DATABASE_URL_FILE",
        value_name = "FILE",
        conflicts_with = "database_url"
    )]
    database_url_file: Option<PathBuf>,
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
    /// Takes the URL from `--database-url-file` when one is named.
    fn resolve(&mut self) -> Result<()> {
        if let Some(file) = &self.database_url_file {
            self.database_url = read_secret(file)?;
        }
        Ok(())
    }

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
    /// The listener's certificate chain (PEM): the API is served over TLS (1.2 and 1.3,
    /// HTTP/1.1). Read again, with the key, on SIGHUP.
    #[arg(
        long,
        env = "LINKED_CUSTOMER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "LINKED_CUSTOMER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Plain HTTP on an address other machines can reach, because a proxy in front (HAProxy, a
    /// cloud load balancer) terminates TLS. Without it, such an address needs --tls-cert.
    #[arg(
        long,
        env = "LINKED_CUSTOMER_TLS_TERMINATED_BY_PROXY",
        conflicts_with = "tls_cert"
    )]
    tls_terminated_by_proxy: bool,
    /// A second address, plain HTTP, for `/metrics` and `/readyz` (which then leave the API's
    /// address): for the load balancer's health checks and the metrics scraper.
    #[arg(long, env = "LINKED_CUSTOMER_ADMIN_BIND", value_name = "ADDR")]
    admin_bind: Option<String>,
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
    /// A file of read replica URLs (one per line, or comma-separated), in place of
    /// DATABASE_READ_URL.
    #[arg(
        long,
        env = "DATABASE_READ_URL_FILE",
        value_name = "FILE",
        conflicts_with = "database_read_urls"
    )]
    database_read_url_file: Option<PathBuf>,
    /// When no read replica answers: read the primary (`primary`) or answer 503 (`none`).
    #[arg(long, env = "LINKED_CUSTOMER_READ_FALLBACK", value_enum, default_value_t = ReadFallback::Primary)]
    read_fallback: ReadFallback,
    /// Do not load the demo data into a new SQLite database.
    #[arg(long, conflicts_with = "demo")]
    no_demo: bool,
    /// Load the demo data into a new SQLite database, and allow its published login, even
    /// where the server listens beyond this machine (by default the demo exists only on a
    /// loopback address).
    #[arg(long)]
    demo: bool,
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
    /// Password checks one username may start per minute (and at once); past it, `429`.
    /// From an address where its password matched before, only the address's budget counts.
    #[arg(long, env = "LINKED_CUSTOMER_PASSWORD_CHECKS_PER_USERNAME",
        default_value_t = ThrottleLimits::default().per_username)]
    password_checks_per_username: u32,
    /// Password checks one client address (an IPv6 /64) may start per minute (and at once).
    #[arg(long, env = "LINKED_CUSTOMER_PASSWORD_CHECKS_PER_ADDRESS",
        default_value_t = ThrottleLimits::default().per_address)]
    password_checks_per_address: u32,
    /// A proxy whose `X-Forwarded-For` names the client (repeat, or a comma-separated list):
    /// requests from it are budgeted by the address it forwards for.
    #[arg(
        long = "trusted-proxy",
        env = "LINKED_CUSTOMER_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Answers checked against openapi.yaml's schemas: `off`, `sample:RATE` (one answer in
    /// 1/RATE; a violation is counted and logged, and the answer goes out) or `enforce` (every
    /// answer; a violating one becomes a `500`).
    #[arg(
        long,
        env = "LINKED_CUSTOMER_CONTRACT_GUARD",
        value_name = "MODE",
        default_value = "sample:0.01"
    )]
    contract_guard: crate::contract::Mode,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReadFallback {
    Primary,
    None,
}

impl ServeArgs {
    fn resolve(&mut self) -> Result<()> {
        self.database.resolve()?;
        if let Some(file) = &self.database_read_url_file {
            self.database_read_urls = read_secret_lines(file)?;
        }
        Ok(())
    }

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
            password_checks: ThrottleLimits {
                per_username: self.password_checks_per_username.max(1),
                per_address: self.password_checks_per_address.max(1),
            },
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
        #[command(flatten)]
        password: NewPassword,
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
        #[command(flatten)]
        password: NewPassword,
    },
    /// List the subscribers with their departments and scopes (never their password hashes).
    List {
        #[command(flatten)]
        database: DatabaseArgs,
        /// One JSON document: [{"username", "grants": [{"department", "scope"}]}].
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum GrantCommand {
    /// Give a subscriber scopes on departments (a department is created if new).
    Add(GrantArgs),
    /// Take scopes on departments from a subscriber; it loses them at once, also on a running
    /// server with its credential cached.
    Revoke(GrantArgs),
}

#[derive(Args)]
struct GrantArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    #[arg(long)]
    username: String,
    /// A department (repeat for more).
    #[arg(long = "department", required = true)]
    departments: Vec<String>,
    /// A scope, on each of those departments (repeat for more).
    #[arg(long = "scope", default_value = SEARCH_SCOPE)]
    scopes: Vec<String>,
}

#[derive(Subcommand)]
enum CustomerCommand {
    /// Remove a customer and its links; lookups of those links answer 204 at once.
    Remove {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The customer's department.
        #[arg(long)]
        department: String,
        /// The customer's `customerUuid`, as imported.
        #[arg(long)]
        customer_uuid: String,
    },
}

/// Where a new password comes from: standard input, or made here and printed once.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct NewPassword {
    /// Read the password (at least 12 characters) from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Make a random password and print it once, on standard output.
    #[arg(long)]
    generate: bool,
}

/// The shortest password a subscriber may have.
const MIN_PASSWORD_CHARS: usize = 12;

impl NewPassword {
    /// The password, and whether it was generated (and so is to be shown once).
    fn read(&self) -> Result<(String, bool)> {
        if self.generate {
            return Ok((crate::auth::generate_password(), true));
        }
        let password = read_password()?;
        if password.chars().count() < MIN_PASSWORD_CHARS {
            bail!(
                "the password must be at least {MIN_PASSWORD_CHARS} characters long \
                 (or use --generate)"
            );
        }
        Ok((password, false))
    }
}

impl Cli {
    /// Reads the secrets named by `*_FILE` settings, once, for whichever command runs.
    fn resolve(&mut self) -> Result<()> {
        match &mut self.command {
            None => self.serve.resolve(),
            Some(Command::Serve(args)) => args.resolve(),
            Some(Command::Migrate(database) | Command::Import { database, .. }) => {
                database.resolve()
            }
            Some(
                Command::Subscriber(
                    SubscriberCommand::Add { database, .. }
                    | SubscriberCommand::Remove { database, .. }
                    | SubscriberCommand::Passwd { database, .. }
                    | SubscriberCommand::List { database, .. },
                )
                | Command::Grant(
                    GrantCommand::Add(GrantArgs { database, .. })
                    | GrantCommand::Revoke(GrantArgs { database, .. }),
                )
                | Command::Customer(CustomerCommand::Remove { database, .. })
                | Command::Backup { database, .. }
                | Command::Restore { database, .. },
            ) => database.resolve(),
        }
    }
}

pub async fn run(mut cli: Cli) -> Result<()> {
    cli.resolve()?;
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
                "imported {} into {}: {} customers created, {} updated, {} links",
                file.display(),
                redact(&database.database_url),
                summary.customers_created,
                summary.customers_updated,
                summary.links
            );
            Ok(())
        }
        Some(Command::Subscriber(command)) => subscriber(command).await,
        Some(Command::Grant(command)) => grant(command).await,
        Some(Command::Customer(CustomerCommand::Remove {
            database,
            department,
            customer_uuid,
        })) => {
            let department = department_token(&department)?;
            let opened = open_existing(&database).await?;
            let Some(links) = opened
                .store
                .remove_customer(&department, &customer_uuid)
                .await?
            else {
                bail!(
                    "there is no customer {customer_uuid:?} in department {}",
                    department.as_str()
                );
            };
            println!(
                "removed customer {customer_uuid} of department {} and its {links} links",
                department.as_str()
            );
            Ok(())
        }
        Some(Command::Backup { database, file }) => {
            let path = sqlite_only(&database, "backup", "pg_dump")?;
            let pages = store::backup::backup(&path, &file)?;
            println!(
                "backed up {} to {} ({pages} pages)",
                redact(&database.database_url),
                file.display()
            );
            Ok(())
        }
        Some(Command::Restore { database, file }) => {
            let path = sqlite_only(&database, "restore", "pg_restore")?;
            store::backup::restore(&file, &path, database.limits().lock_timeout)?;
            println!(
                "restored {} from {}",
                redact(&database.database_url),
                file.display()
            );
            Ok(())
        }
    }
}

/// The SQLite file of `database`, for the commands that PostgreSQL's own tools do there.
fn sqlite_only(database: &DatabaseArgs, command: &str, tool: &str) -> Result<PathBuf> {
    let url = &database.database_url;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        bail!(
            "`{command}` is for SQLite; for PostgreSQL use {tool} (docs/operating.md, \"Backups\")"
        );
    }
    crate::store::sqlite_path(url)
}

/// Opens a database that must exist already: the admin commands never create one.
async fn open_existing(database: &DatabaseArgs) -> Result<Opened> {
    store::open_existing(&database.database_url, database.limits())
        .await
        .with_context(|| format!("database {}", redact(&database.database_url)))
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
    let limits = args.limits();
    crate::limits::raise_descriptor_limit(limits.max_connections)?;
    let replicas = args.replicas();
    let listener = TcpListener::bind(&args.bind)
        .with_context(|| format!("could not listen on {}", args.bind))?;
    let address = listener.local_addr()?;
    // The demo's login is published: it may exist only where nobody else can reach it.
    let local_only = address.ip().is_loopback();
    let certificates = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::Certificates::load(crate::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })?),
        _ => None,
    };
    if certificates.is_none() && !local_only && !args.tls_terminated_by_proxy {
        bail!(
            "{address} is reachable from other machines, and without TLS credentials and \
             passwords would cross the network in clear: give --tls-cert and --tls-key, or \
             --tls-terminated-by-proxy when a proxy in front terminates TLS"
        );
    }
    let admin = match &args.admin_bind {
        Some(bind) => {
            Some(TcpListener::bind(bind).with_context(|| format!("could not listen on {bind}"))?)
        }
        None => None,
    };
    let opened = open_reading(&args.database, &replicas).await?;
    if opened.created && !args.no_demo && (local_only || args.demo) {
        demo::load(opened.store.as_ref()).await?;
    }
    let scheme = if certificates.is_some() {
        "https"
    } else {
        "http"
    };
    let base = format!("{scheme}://{address}");
    println!("linked-customer-server {}", env!("CARGO_PKG_VERSION"));
    println!(
        "{}",
        match (&certificates, args.tls_terminated_by_proxy) {
            (Some(certificates), _) => format!(
                "TLS: certificate {} (read again on SIGHUP)",
                certificates.files().cert.display()
            ),
            (None, true) => "TLS: terminated by a proxy in front; plain HTTP here".to_string(),
            (None, false) => "TLS: none (plain HTTP, on loopback only)".to_string(),
        }
    );
    println!("database {}", redact(&args.database.database_url));
    for (i, url) in replicas.urls.iter().enumerate() {
        println!("read replica{} {}", i + 1, redact(url));
    }
    if demo_is_usable(&opened).await {
        if !(local_only || args.demo) {
            bail!(
                "the demo login ({}) works in this database, and {address} is reachable from \
                 other machines: remove it (`subscriber remove --username {}`) or start with \
                 --demo to serve it anyway",
                demo::USERNAME,
                demo::USERNAME
            );
        }
        println!("{}", demo::instructions(&base));
    } else if opened.created && !local_only && !args.no_demo {
        println!("No demo data: {address} is reachable from other machines (--demo loads it).");
    }
    let mut state = AppState::new(
        opened.store,
        Duration::from_secs(args.auth_cache_seconds),
        limits,
    )?;
    state.trusted_proxies = args.trusted_proxies.clone();
    state.guard_contract(args.contract_guard);
    let admin_address = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    let listeners = Listeners {
        api: listener,
        tls: certificates
            .as_ref()
            .map(|c| c.server_config())
            .transpose()?,
        admin,
    };
    let server = serve_on(listeners, state)?;
    // Signal handlers exist before the address is announced, so no signal can be missed.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    reload_on_hangup(certificates)?;
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
    if let Some(admin) = admin_address {
        println!("operations (/metrics, /readyz) on http://{admin}");
    }
    println!("listening on {base}");
    tracing::info!(%address, "listening");
    server.await?;
    tracing::info!("stopped");
    Ok(())
}

/// Reads the certificate and key again at each SIGHUP; a pair that cannot be used leaves the
/// one in use in place. Without TLS, SIGHUP has nothing to reload and is logged (it must not
/// stop the server, as its default action would: `systemctl reload` sends it).
fn reload_on_hangup(certificates: Option<std::sync::Arc<crate::tls::Certificates>>) -> Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let Some(certificates) = &certificates else {
                tracing::info!("SIGHUP: no TLS certificate to reload; nothing else is reloaded");
                continue;
            };
            match certificates.reload() {
                Ok(()) => tracing::info!("reloaded the TLS certificate and key"),
                Err(err) => tracing::error!(
                    error = format!("{err:#}"),
                    "could not reload the TLS certificate; the one in use stays"
                ),
            }
        }
    });
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
    let lookup = |verified_hash: Option<String>| {
        let department = &department;
        async move {
            let key = LookupKey {
                username: demo::USERNAME,
                department,
                scope: SEARCH_SCOPE,
                entity: Entity::Order,
                entity_id,
                verified_hash: verified_hash.as_deref(),
            };
            opened.store.lookup(&key).await.ok().flatten()
        }
    };
    let Some(found) = lookup(None).await else {
        return false;
    };
    if !(found.access.granted
        && crate::auth::verify_password(demo::PASSWORD, &found.access.password_hash))
    {
        return false;
    }
    lookup(Some(found.access.password_hash))
        .await
        .is_some_and(|found| found.document.is_some())
}

/// The first line of `file`: a secret kept out of command lines and the environment.
fn read_secret(file: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("could not read {}", file.display()))?;
    let line = text.lines().next().unwrap_or_default().trim();
    if line.is_empty() {
        bail!("{} is empty", file.display());
    }
    Ok(line.to_string())
}

/// Every URL of `file`, one per line or comma-separated.
fn read_secret_lines(file: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("could not read {}", file.display()))?;
    Ok(text
        .split(['\n', ','])
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_string)
        .collect())
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
            password,
            departments,
            scopes,
        } => {
            if !crate::auth::is_valid_username(&username) {
                bail!(
                    "a username must be 1 to 64 characters, without `:` or control characters \
                     (got {username:?})"
                );
            }
            let departments = department_tokens(&departments)?;
            let (password, generated) = password.read()?;
            let hash = hash_password(&password)?;
            let opened = open_existing(&database).await?;
            opened
                .store
                .add_subscriber(&username, &hash, &departments, &scopes)
                .await?;
            println!("added subscriber {username}");
            show_generated(&password, generated);
        }
        SubscriberCommand::Remove { database, username } => {
            let opened = open_existing(&database).await?;
            if !opened.store.remove_subscriber(&username).await? {
                bail!("there is no subscriber {username}");
            }
            println!("removed subscriber {username}");
        }
        SubscriberCommand::Passwd {
            database,
            username,
            password,
        } => {
            let (password, generated) = password.read()?;
            let hash = hash_password(&password)?;
            let opened = open_existing(&database).await?;
            if !opened.store.set_password_hash(&username, &hash).await? {
                bail!("there is no subscriber {username}");
            }
            println!("changed the password of subscriber {username}");
            show_generated(&password, generated);
        }
        SubscriberCommand::List { database, json } => {
            let opened = open_existing(&database).await?;
            let subscribers = opened.store.subscribers().await?;
            if json {
                let list: Vec<_> = subscribers
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "username": s.username,
                            "grants": s.grants.iter().map(|(department, scope)| {
                                serde_json::json!({"department": department, "scope": scope})
                            }).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                print!("{}", subscriber_table(&subscribers));
            }
        }
    }
    Ok(())
}

/// One line per grant (a subscriber without any: `-`), in aligned columns under a header.
fn subscriber_table(subscribers: &[crate::store::SubscriberGrants]) -> String {
    let mut rows = vec![("USERNAME", "DEPARTMENT", "SCOPE")];
    for subscriber in subscribers {
        if subscriber.grants.is_empty() {
            rows.push((subscriber.username.as_str(), "-", "-"));
        }
        for (department, scope) in &subscriber.grants {
            rows.push((subscriber.username.as_str(), department, scope));
        }
    }
    let width = |column: usize| {
        rows.iter()
            .map(|r| [r.0, r.1][column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (first, second) = (width(0), width(1));
    rows.iter()
        .map(|(a, b, c)| format!("{a:first$}  {b:second$}  {c}\n"))
        .collect()
}

async fn grant(command: GrantCommand) -> Result<()> {
    let (args, revoking) = match command {
        GrantCommand::Add(args) => (args, false),
        GrantCommand::Revoke(args) => (args, true),
    };
    let departments = department_tokens(&args.departments)?;
    let opened = open_existing(&args.database).await?;
    let store = &opened.store;
    let username = &args.username;
    let what = format!(
        "{} on {}",
        args.scopes.join(", "),
        args.departments.join(", ")
    );
    if revoking {
        match store.revoke(username, &departments, &args.scopes).await? {
            None => bail!("there is no subscriber {username}"),
            Some(0) => bail!("subscriber {username} holds none of {what}: nothing was revoked"),
            Some(n) => println!("revoked {n} grants of {what} from subscriber {username}"),
        }
    } else {
        if !store.grant(username, &departments, &args.scopes).await? {
            bail!("there is no subscriber {username}");
        }
        println!("granted {what} to subscriber {username}");
    }
    Ok(())
}

/// A department named on the command line, or why it cannot be one.
fn department_token(department: &str) -> Result<DepartmentToken> {
    DepartmentToken::parse(department)
        .map_err(|err| anyhow::anyhow!("department {department:?} cannot be used: {err}"))
}

fn department_tokens(departments: &[String]) -> Result<Vec<DepartmentToken>> {
    departments.iter().map(|d| department_token(d)).collect()
}

/// A generated password is shown once, here, and kept nowhere but as its hash.
fn show_generated(password: &str, generated: bool) {
    if generated {
        println!("password: {password}");
    }
}
