//! `cargo xtask bench`: how fast the release server answers getLinkedCustomer on this machine,
//! on SQLite and on PostgreSQL, next to two yardsticks measured in the same run: `/healthz`
//! (the HTTP stack alone, no database) and, on PostgreSQL, pgbench running the lookup's own SQL
//! (`server/src/store/lookup.sql`, the database alone). Absolute figures only describe this
//! machine; the ratios to the yardsticks are what can be compared between machines and commits.
//!
//! Everything is made here, without manual steps: a deterministic data set (every optional
//! field filled), a fresh database loaded with the server's real `import` command (timed, with
//! its peak memory), a subscriber, the server, and the load (wrk, installed when missing).
//! `--smoke` is the same on a small data set for a few seconds, and fails on any error: CI runs
//! it so that this command keeps working.

use crate::server::split_password;
use crate::tls;
use crate::util::{
    banner, capture, capture_with_input, cargo_locked, random_hex, rel, root, run as run_cmd,
};
use anyhow::{Context, Result, bail, ensure};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) const DEPARTMENTS: usize = 100;
pub(crate) const USER: &str = "bench";
const SCOPE: &str = "customer.search";
pub(crate) const CONNECTIONS: usize = 64;
const THREADS: usize = 2;
const SMOKE_CUSTOMERS: usize = 2000;
const SMOKE_SECONDS: u64 = 5;
/// The smoke run's other loads (TLS, new connections, the server settings compared): long
/// enough to prove that they work, short enough for ci.
const SMOKE_SIDE_SECONDS: u64 = 2;
/// Threads of the new-connection loop (each one request on a new connection at a time): more
/// than the cores, so that the server is busy while some of them wait on it.
const FRESH_THREADS: usize = 8;
const MARKDOWN: &str = "BENCHMARKS.md";

/// Which databases to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Databases {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Database {
    /// With `mmap_mib` MiB of the file memory-mapped by the server (0: none, the default).
    Sqlite {
        mmap_mib: u64,
    },
    Postgres,
}

impl Database {
    fn name(self) -> String {
        match self {
            Database::Sqlite { mmap_mib: 0 } => "SQLite".to_string(),
            Database::Sqlite { mmap_mib } => format!("SQLite, {mmap_mib} MiB memory-mapped"),
            Database::Postgres => "PostgreSQL".to_string(),
        }
    }

    fn key(self) -> String {
        match self {
            Database::Sqlite { mmap_mib: 0 } => "sqlite".to_string(),
            Database::Sqlite { .. } => "sqlite-mmap".to_string(),
            Database::Postgres => "postgres".to_string(),
        }
    }

    /// The server's settings for this database, beyond `DATABASE_URL`.
    fn server_env(self) -> Vec<(&'static str, String)> {
        match self {
            Database::Sqlite { mmap_mib } if mmap_mib > 0 => {
                vec![("LINKED_CUSTOMER_SQLITE_MMAP_MIB", mmap_mib.to_string())]
            }
            _ => Vec::new(),
        }
    }
}

pub struct Options {
    pub customers: Option<usize>,
    pub databases: Databases,
    pub seconds: Option<u64>,
    pub smoke: bool,
    /// SQLite: MiB of the database file the server memory-maps (0: none).
    pub sqlite_mmap_mib: u64,
}

/// What one wrk run measured (latencies in microseconds).
#[derive(Debug, Default)]
pub(crate) struct Load {
    pub(crate) requests: u64,
    pub(crate) per_second: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    /// Answers with a status of 400 or more (wrk's `errors.status`).
    pub(crate) bad_status: u64,
    /// connect, read, write and timeout errors.
    pub(crate) socket_errors: u64,
}

/// Everything measured on one database.
struct Measured {
    database: Database,
    import_seconds: f64,
    import_peak_kib: u64,
    healthz: Load,
    lookup: Load,
    /// getLinkedCustomer over TLS (a second server, the same database), wrk keeping its
    /// connections as in `lookup`.
    lookup_tls: Load,
    /// getLinkedCustomer on a new connection per request: plain HTTP, and TLS with a full
    /// handshake each.
    fresh: Fresh,
    fresh_tls: Fresh,
    /// getLinkedCustomer answers during the load by status, from the server's `/metrics`.
    statuses: Vec<(u16, u64)>,
    server_peak_kib: u64,
    /// The largest `RssAnon` seen (sampled every 100 ms): the server's own memory, without the
    /// pages of files it maps (its binary; a memory-mapped SQLite database).
    server_peak_anon_kib: u64,
    pgbench_tps: Option<f64>,
    /// Rows in `links` when pgbench ran (it finds nothing while the server does not fill it).
    links_rows: Option<u64>,
    /// getLinkedCustomer under each of [`SETTINGS`] (SQLite; empty on PostgreSQL).
    costs: Vec<Costed>,
}

pub fn run(options: &Options) -> Result<()> {
    let customers = options.customers.unwrap_or(if options.smoke {
        SMOKE_CUSTOMERS
    } else {
        10_000
    });
    let seconds = options
        .seconds
        .unwrap_or(if options.smoke { SMOKE_SECONDS } else { 30 });
    ensure!(customers >= 1, "--customers must be at least 1");
    ensure!(seconds >= 1, "--seconds must be at least 1");
    let sqlite = Database::Sqlite {
        mmap_mib: options.sqlite_mmap_mib,
    };
    let databases = match options.databases {
        Databases::Sqlite => vec![sqlite],
        Databases::Postgres => vec![Database::Postgres],
        Databases::Both => vec![sqlite, Database::Postgres],
    };
    let command = format!(
        "cargo xtask bench --customers {customers} --db {} --seconds {seconds}{}",
        match options.databases {
            Databases::Sqlite => "sqlite",
            Databases::Postgres => "postgres",
            Databases::Both => "both",
        },
        if options.smoke { " --smoke" } else { "" }
    );
    let command = match options.sqlite_mmap_mib {
        0 => command,
        mib => format!("{command} --sqlite-mmap-mib {mib}"),
    };
    let work = crate::util::target_dir().join("xtask/bench");
    std::fs::create_dir_all(&work)?;

    banner(&format!("bench data set: {customers} customers"));
    let data = dataset(&work, customers)?;
    // The smoke run proves the harness and the answers, not the speed: the debug server that
    // the tests built already will do, and CI is spared a release build.
    let binary = if options.smoke {
        banner("building the server (debug: a smoke run measures nothing)");
        crate::server::build()?
    } else {
        banner("building the release server");
        build_release()?
    };
    let rig = Rig {
        wrk: wrk_program()?,
        time: time_program()?,
        binary,
        data,
        customers,
        seconds,
        side_seconds: if options.smoke {
            SMOKE_SIDE_SECONDS
        } else {
            seconds
        },
        tls: tls::LocalTls::make(&work, "bench-server")?,
        work,
    };

    let mut results = Vec::new();
    for database in databases {
        banner(&format!("bench on {}", database.name()));
        let result =
            measure(database, &rig).with_context(|| format!("bench on {}", database.name()))?;
        results.push(result);
    }
    print_table(&results, &rig);
    if options.smoke {
        return require_no_errors(&results);
    }
    let machine = machine()?;
    write_markdown(&results, customers, seconds, &command, &machine)?;
    println!("\nwrote {MARKDOWN} ({command})");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The data set

/// `target/xtask/bench/customers-N.jsonl`, written unless an identical one is there already.
pub(crate) fn dataset(work: &Path, customers: usize) -> Result<PathBuf> {
    let path = work.join(format!("customers-{customers}.jsonl"));
    if is_current(&path, customers)? {
        println!("reusing {}", rel(&path));
        return Ok(path);
    }
    let temporary = work.join(format!("customers-{customers}.jsonl.{}", random_hex(4)?));
    let mut out = BufWriter::new(std::fs::File::create(&temporary)?);
    for index in 0..customers {
        serde_json::to_writer(&mut out, &customer_line(index))?;
        out.write_all(b"\n")?;
    }
    out.into_inner()
        .map_err(|err| err.into_error())?
        .sync_all()?;
    std::fs::rename(&temporary, &path)?;
    println!("wrote {}", rel(&path));
    Ok(path)
}

/// True when `path` has `customers` lines and starts with the line this generator makes (so a
/// file left by an older generator is made again).
fn is_current(path: &Path, customers: usize) -> Result<bool> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(false);
    };
    let mut lines = BufReader::new(file).lines();
    let expected = serde_json::to_string(&customer_line(0))?;
    if !matches!(lines.next(), Some(Ok(first)) if first == expected) {
        return Ok(false);
    }
    Ok(1 + lines.count() == customers)
}

/// The department of customer (or lookup index) `index`.
pub(crate) fn department(index: usize) -> String {
    format!("bench-dept-{:03}", index % DEPARTMENTS)
}

/// A linear congruential generator: the same customer from the same index, on every machine.
struct Lcg(u64);

impl Lcg {
    fn new(seed: usize) -> Lcg {
        let mut lcg = Lcg(seed as u64 ^ 0x5DEE_CE66_D1CE_4E5B);
        lcg.next();
        lcg
    }

    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 16
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn flag(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a & 0xffff_ffff,
            (a >> 32) & 0xffff,
            b & 0xfff,
            8 + ((b >> 12) & 3),
            (b >> 14) & 0xfff,
            self.next() & 0xffff_ffff_ffff
        )
    }

    /// `len` characters of `alphabet`.
    fn text(&mut self, alphabet: &str, len: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        (0..len).map(|_| chars[self.below(chars.len())]).collect()
    }
}

const FIRST: &[&str] = &[
    "Maria", "James", "Aisha", "Chen", "Olga", "Pedro", "Fatima", "Lars", "Yuki", "Kwame",
];
const MIDDLE: &[&str] = &["Luisa", "Edward", "Noor", "Wei", "Petrovna", "Jose", "Amal"];
const LAST: &[&str] = &[
    "Okafor", "Smith", "Khan", "Wang", "Ivanova", "Silva", "Haddad", "Berg", "Tanaka", "Mensah",
];
const LOCALES: &[&str] = &["en-GB", "de-DE", "fr-FR", "es-ES", "it-IT", "nl-NL"];
const CHANNELS: &[&str] = &["EMAIL", "PHONE", "TEXT"];
const ADDRESS_TYPES: &[&str] = &["COMMON", "PRIMARY", "BILLING", "OTHER"];
/// (city, state, country)
const CITIES: &[(&str, &str, &str)] = &[
    ("Bristol", "Bristol", "GB"),
    ("Leeds", "West Yorkshire", "GB"),
    ("Munich", "Bavaria", "DE"),
    ("Lyon", "Auvergne-Rhone-Alpes", "FR"),
    ("Valencia", "Valencia", "ES"),
    ("Utrecht", "Utrecht", "NL"),
];
/// (make, model, trim, engine)
const MODELS: &[(&str, &str, &str, &str)] = &[
    ("Volkswagen", "Golf", "Life", "1.5 TSI 130 PS"),
    ("Ford", "Transit Custom", "Limited", "2.0 EcoBlue 170 PS"),
    ("Toyota", "Corolla", "Design", "1.8 Hybrid 140 PS"),
    ("BMW", "320d", "M Sport", "2.0 190 PS"),
    ("Renault", "Clio", "Techno", "1.0 TCe 90 PS"),
];
const COLOURS: &[&str] = &[
    "Deep Blue Pearl",
    "Magnetic Grey",
    "Pure White",
    "Flame Red",
    "Black Sapphire",
];
const UPPER: &str = "ABCDEFGHJKLMNPRSTUVWXYZ";
const VIN: &str = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

/// One import line for customer `index`: department `index % 100`, every optional field filled,
/// linked to `ORDER` and `APPOINTMENT` number `index + 1`.
pub(crate) fn customer_line(index: usize) -> serde_json::Value {
    use serde_json::json;
    let mut rng = Lcg::new(index);
    let (first, middle, last) = (rng.pick(FIRST), rng.pick(MIDDLE), rng.pick(LAST));
    let (city, state, country) = CITIES[rng.below(CITIES.len())];
    let update_ts = format!(
        "202{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        4 + rng.below(3),
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1000)
    );
    let start = 7 + rng.below(5);
    let customer = json!({
        "id": 1_000_000 + index,
        "customerKey": format!("CK-{}", 1_000_000 + index),
        "firstName": first,
        "middleName": middle,
        "lastName": last,
        "company": format!("{last} {} Ltd", rng.pick(&["Logistics", "Motors", "Trading", "Farms"])),
        "preferredLocale": rng.pick(LOCALES),
        "emails": [{
            "emailAddress": format!("{}.{}.{index}@example.com", first.to_lowercase(), last.to_lowercase()),
            "label": rng.pick(&["work", "home"]),
            "okToEmail": rng.flag(),
            "isPreferred": true,
            "comments": "Prefers email for service reminders.",
        }],
        "phoneNumbers": [{
            "phoneNumber": format!("+44 20 7946 {:04}", index % 10_000),
            "label": rng.pick(&["mobile", "office", "home"]),
            "okToCall": rng.flag(),
            "okToText": rng.flag(),
            "isPreferred": true,
            "comments": "Not before 9 am.",
        }],
        "preferredCommunication": rng.pick(CHANNELS),
        "bestTimeToContact": {
            "startTime": format!("{start:02}:00"),
            "endTime": format!("{:02}:30", start + 8),
        },
        "addresses": [{
            "line1": format!("{} Harbour Road", 1 + rng.below(200)),
            "line2": format!("Unit {}", 1 + rng.below(20)),
            "city": city,
            "zip": format!("{}{} {}{}", rng.text(UPPER, 2), 1 + rng.below(9), rng.below(10), rng.text(UPPER, 2)),
            "addressType": rng.pick(&["Head office", "Home", "Depot"]),
            "type": rng.pick(ADDRESS_TYPES),
            "country": country,
            "updateTS": update_ts,
            "uuid": rng.uuid(),
            "isValid": true,
            "isPreferred": true,
            "state": state,
        }],
        "availability": rng.below(5),
        "isBusiness": rng.flag(),
        "customerUuid": rng.uuid(),
        "customerId": customer_id(index),
    });
    let vehicles: Vec<serde_json::Value> = (0..2)
        .map(|k| {
            let id = 5_000_000 + 2 * index + k;
            let (make, model, trim, engine) = MODELS[rng.below(MODELS.len())];
            json!({
                "id": id,
                "vin": rng.text(VIN, 17),
                "vehicleKey": format!("VK-{id}"),
                "isValid": true,
                "imageUrl": format!("https://images.example.com/vehicles/{id}.jpg"),
                "brandId": 1 + rng.below(50),
                "licensePlate": format!("{}{:02} {}", rng.text(UPPER, 2), rng.below(100), rng.text(UPPER, 3)),
                "color": rng.pick(COLOURS),
                "vehicleModel": model,
                "vehicleYear": (2012 + rng.below(14)).to_string(),
                "vehicleTrim": trim,
                "vehicleUuid": rng.uuid(),
                "vehicleEngine": engine,
                "estimatedMileage": (1000 * rng.below(200)).to_string(),
                "vehicleMake": make,
            })
        })
        .collect();
    json!({
        "department": department(index),
        "customer": customer,
        "vehicles": vehicles,
        "links": [
            {"entity": "ORDER", "entityId": index + 1},
            {"entity": "APPOINTMENT", "entityId": index + 1},
        ],
    })
}

/// The `customerId` of customer `index` (what a sanity request expects to read back).
fn customer_id(index: usize) -> String {
    format!("C-BENCH-{index:07}")
}

// ---------------------------------------------------------------------------------------------
// Tools

/// Builds `linked-customer-server` in release mode and returns the binary's path.
pub(crate) fn build_release() -> Result<PathBuf> {
    let mut build = cargo_locked("build");
    build.args(["--release", "--quiet", "-p", "linked-customer-server"]);
    run_cmd(build)?;
    Ok(crate::util::target_dir().join("release/linked-customer-server"))
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn wrk_program() -> Result<PathBuf> {
    if !on_path("wrk") {
        crate::util::apt_install(
            &["wrk"],
            "wrk is not installed and this is not root: install it (Debian: apt-get install wrk)",
        )?;
    }
    Ok(PathBuf::from("wrk"))
}

/// GNU time, for the peak memory of the import (`%M`, in KiB).
pub(crate) fn time_program() -> Result<PathBuf> {
    let path = PathBuf::from("/usr/bin/time");
    if !path.exists() {
        crate::util::apt_install(
            &["time"],
            "GNU time (/usr/bin/time) is missing and this is not root: install it (Debian: apt-get install time)",
        )?;
    }
    Ok(path)
}

fn pgbench_program() -> Result<PathBuf> {
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin/pgbench");
    if debian.exists() {
        Ok(debian)
    } else if on_path("pgbench") {
        Ok(PathBuf::from("pgbench"))
    } else {
        bail!(
            "pgbench is missing: install PostgreSQL's client tools (Debian: apt-get install postgresql-contrib or postgresql-client)"
        )
    }
}

// ---------------------------------------------------------------------------------------------
// One database

/// A database made for this run, dropped (PostgreSQL) when this goes out of scope.
struct FreshDatabase {
    url: String,
    _postgres: Option<pg_throwaway::Throwaway>,
}

impl FreshDatabase {
    fn new(database: Database, work: &Path, customers: usize) -> Result<FreshDatabase> {
        match database {
            Database::Sqlite { .. } => {
                let path = work.join(format!("sqlite-{customers}.db"));
                for suffix in ["", "-wal", "-shm"] {
                    let file = PathBuf::from(format!("{}{suffix}", path.display()));
                    if file.exists() {
                        std::fs::remove_file(&file)
                            .with_context(|| format!("removing the old {}", rel(&file)))?;
                    }
                }
                Ok(FreshDatabase {
                    url: format!("sqlite://{}", path.display()),
                    _postgres: None,
                })
            }
            Database::Postgres => {
                let postgres =
                    pg_throwaway::Throwaway::create(&crate::postgres::admin_url()?, "lc_bench")?;
                Ok(FreshDatabase {
                    url: postgres.url().to_string(),
                    _postgres: Some(postgres),
                })
            }
        }
    }
}

/// What the measurement of every database shares.
struct Rig {
    binary: PathBuf,
    wrk: PathBuf,
    time: PathBuf,
    data: PathBuf,
    customers: usize,
    seconds: u64,
    /// Seconds of each load past the first two (TLS, new connections, the server settings
    /// compared): the main loads' in a full run, [`SMOKE_SIDE_SECONDS`] in a smoke run.
    side_seconds: u64,
    work: PathBuf,
    /// The TLS server's certificate, and a client that trusts its CA.
    tls: tls::LocalTls,
}

fn measure(database: Database, rig: &Rig) -> Result<Measured> {
    let (customers, seconds, work) = (rig.customers, rig.seconds, rig.work.as_path());
    let fresh = FreshDatabase::new(database, work, customers)?;
    let (import_seconds, import_peak_kib) = import(
        &rig.binary,
        &rig.time,
        &fresh.url,
        &rig.data,
        customers,
        work,
    )?;
    let password = format!("pw-{}", random_hex(12)?);
    add_subscriber(&rig.binary, &fresh.url, USER, &password, DEPARTMENTS)?;

    let log = work.join(format!("server-{}.log", database.key()));
    let server = Server::start(&rig.binary, &fresh.url, &database.server_env(), &log)?;
    let auth = format!("Basic {}", base64(&format!("{USER}:{password}")));
    sanity_checks(&server, &auth, customers)?;

    let script = work.join(format!("wrk-{}.lua", random_hex(4)?));
    write_private(&script, &healthz_script())?;
    let healthz = load(&rig.wrk, &server.url("/healthz"), &script, seconds);
    let _ = std::fs::remove_file(&script);
    let healthz = healthz?;
    let (lookup, statuses) = lookup_load(rig, &server, &auth, seconds)?;
    let server_peak_kib = server.peak_kib()?;
    let server_peak_anon_kib = server.anon_peak.load(Ordering::Relaxed);
    // After the peaks are read: a connection per request is not the load they describe.
    let fresh_plain = fresh_connections(&server, customers, &auth, rig.side_seconds)?;
    drop(server);
    let (lookup_tls, fresh_tls) = measure_tls(database, rig, &fresh.url, &auth)?;
    let costs = match database {
        Database::Sqlite { .. } => measure_costs(database, rig, &fresh.url, &auth)?,
        Database::Postgres => Vec::new(),
    };

    let (pgbench_tps, links_rows) = match database {
        Database::Sqlite { .. } => (None, None),
        Database::Postgres => {
            let rows = count_links(&fresh.url)?;
            (
                Some(pgbench(&fresh.url, customers, seconds, work)?),
                Some(rows),
            )
        }
    };
    Ok(Measured {
        database,
        import_seconds,
        import_peak_kib,
        healthz,
        lookup,
        lookup_tls,
        fresh: fresh_plain,
        fresh_tls,
        statuses,
        server_peak_kib,
        server_peak_anon_kib,
        pgbench_tps,
        links_rows,
        costs,
    })
}

/// A second server on the same database, with TLS (the plain one stopped, so that the two do
/// not share the cores): getLinkedCustomer over TLS with wrk's kept connections, then on a new
/// connection per request. wrk does not check the certificate (Debian's build verifies none),
/// which does not change what a handshake costs the server; the new-connection loop checks it.
fn measure_tls(database: Database, rig: &Rig, url: &str, auth: &str) -> Result<(Load, Fresh)> {
    let log = rig.work.join(format!("server-{}-tls.log", database.key()));
    let server = Server::start_tls(&rig.binary, url, &database.server_env(), &log, &rig.tls)?;
    sanity_checks(&server, auth, rig.customers)?;
    let (kept, _) = lookup_load(rig, &server, auth, rig.side_seconds)?;
    let fresh = fresh_connections(&server, rig.customers, auth, rig.side_seconds)?;
    Ok((kept, fresh))
}

/// getLinkedCustomer by wrk ([`lookup_script`]) on `server` for `seconds`, with the answers by
/// status that the server counted meanwhile (its `/metrics`).
fn lookup_load(
    rig: &Rig,
    server: &Server,
    auth: &str,
    seconds: u64,
) -> Result<(Load, Vec<(u16, u64)>)> {
    let script = rig.work.join(format!("wrk-{}.lua", random_hex(4)?));
    write_private(&script, &lookup_script(rig.customers, auth))?;
    let before = lookup_statuses(server)?;
    let lookup = load(&rig.wrk, &server.url("/"), &script, seconds);
    let _ = std::fs::remove_file(&script);
    let lookup = lookup?;
    let after = lookup_statuses(server)?;
    Ok((lookup, difference(&before, &after)))
}

/// Runs the server's `import` under GNU time: (wall seconds, peak RSS in KiB).
pub(crate) fn import(
    binary: &Path,
    time: &Path,
    url: &str,
    data: &Path,
    customers: usize,
    work: &Path,
) -> Result<(f64, u64)> {
    let peak_file = work.join("import-peak-kib.txt");
    let mut cmd = Command::new(time);
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&peak_file)
        .arg(binary)
        .arg("import")
        .arg(data)
        .env("DATABASE_URL", url);
    println!("$ {}", crate::util::display(&cmd));
    let started = Instant::now();
    let output = capture(cmd)?;
    let elapsed = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "the import failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    print!("{stdout}");
    let created = format!(": {customers} customers created");
    ensure!(
        stdout.contains(&created),
        "the import did not report `{created}`; was the database fresh?"
    );
    let peak = std::fs::read_to_string(&peak_file)
        .context("GNU time wrote no peak memory")?
        .trim()
        .parse()
        .context("GNU time's %M is not a number")?;
    println!(
        "imported {customers} customers in {elapsed:.2} s ({:.0}/s), peak RSS {}",
        customers as f64 / elapsed,
        mib(peak)
    );
    Ok((elapsed, peak))
}

/// Subscriber `user` with `customer.search` on the first `departments` departments; the
/// password on stdin.
pub(crate) fn add_subscriber(
    binary: &Path,
    url: &str,
    user: &str,
    password: &str,
    departments: usize,
) -> Result<()> {
    let mut add = Command::new(binary);
    add.args(["subscriber", "add", "--username", user, "--password-stdin"]);
    for index in 0..departments {
        add.arg("--department").arg(department(index));
    }
    add.args(["--scope", SCOPE]).env("DATABASE_URL", url);
    let output = capture_with_input(add, &format!("{password}\n"))?;
    if !output.status.success() {
        bail!(
            "adding subscriber {user} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The server

/// The release server on a free port; its stdout and stderr go to a log file (drained, so it
/// never blocks on a full pipe). Killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) address: String,
    /// The operations port (`/metrics`, `/readyz`) when the server was given one
    /// (`LINKED_CUSTOMER_ADMIN_BIND`); else they answer on `address`.
    pub(crate) operations: Option<String>,
    /// The client of a server that speaks TLS.
    tls: Option<tls::Client>,
    pub(crate) anon_peak: Arc<AtomicU64>,
}

/// What the server's banner says that a caller needs.
enum Announced {
    /// `operations (/metrics, /readyz) on http://ADDR`
    Operations(String),
    /// `listening on http://ADDR` or `https://ADDR`
    Listening(String),
}

impl Announced {
    fn read(line: &str) -> Option<Announced> {
        if let Some(address) = line.strip_prefix("operations (/metrics, /readyz) on http://") {
            return Some(Announced::Operations(address.to_string()));
        }
        let url = line.strip_prefix("listening on ")?;
        let address = url.split_once("://").map_or(url, |(_, address)| address);
        Some(Announced::Listening(address.to_string()))
    }
}

impl Server {
    pub(crate) fn start(
        binary: &Path,
        url: &str,
        env: &[(&str, String)],
        log: &Path,
    ) -> Result<Server> {
        Server::start_on(binary, "127.0.0.1:0", url, env, log)
    }

    /// [`Server::start`] on the address `bind`.
    pub(crate) fn start_on(
        binary: &Path,
        bind: &str,
        url: &str,
        env: &[(&str, String)],
        log: &Path,
    ) -> Result<Server> {
        Server::launch(binary, bind, url, env, log, None)
    }

    /// [`Server::start`] serving TLS with `certificate` (its files given by the environment,
    /// as an operator would).
    pub(crate) fn start_tls(
        binary: &Path,
        url: &str,
        env: &[(&str, String)],
        log: &Path,
        certificate: &tls::LocalTls,
    ) -> Result<Server> {
        let mut env = env.to_vec();
        env.push((
            "LINKED_CUSTOMER_TLS_CERT",
            certificate.cert.display().to_string(),
        ));
        env.push((
            "LINKED_CUSTOMER_TLS_KEY",
            certificate.key.display().to_string(),
        ));
        let client = Some(certificate.client.clone());
        Server::launch(binary, "127.0.0.1:0", url, &env, log, client)
    }

    fn launch(
        binary: &Path,
        bind: &str,
        url: &str,
        env: &[(&str, String)],
        log: &Path,
        tls: Option<tls::Client>,
    ) -> Result<Server> {
        let log_file = std::fs::File::create(log)?;
        let mut command = Command::new(binary);
        command.args(["serve", "--bind", bind, "--no-demo"]);
        // The server's defaults (text logs at `info`, the contract guard's sampling, no
        // traces), whatever the caller's environment, unless `env` says otherwise.
        for name in [
            "RUST_LOG",
            "LINKED_CUSTOMER_LOG_FORMAT",
            "LINKED_CUSTOMER_CONTRACT_GUARD",
        ] {
            command.env_remove(name);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .env("DATABASE_URL", url)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file.try_clone()?)
            .spawn()
            .context("starting linked-customer-server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log_file = log_file;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log_file, "{line}");
                if let Some(announced) = Announced::read(&line) {
                    let _ = sender.send(announced);
                }
            }
        });
        let anon_peak = Arc::new(AtomicU64::new(0));
        sample_anon_peak(child.id(), anon_peak.clone());
        let mut server = Server {
            child,
            address: String::new(),
            operations: None,
            tls,
            anon_peak,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        server.address = loop {
            match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Announced::Operations(address)) => server.operations = Some(address),
                Ok(Announced::Listening(address)) => break address,
                Err(_) => bail!(
                    "the server did not say `listening on` within 60 s; its log: {}",
                    rel(log)
                ),
            }
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.get("/healthz", None).map(|(status, _)| status).ok() != Some(200) {
            if Instant::now() > deadline {
                bail!(
                    "/healthz did not answer 200 within 30 s; the server's log: {}",
                    rel(log)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("server on {} (log: {})", server.url(""), rel(log));
        Ok(server)
    }

    /// `http://ADDRESS/PATH`, or `https://...` when the server speaks TLS.
    pub(crate) fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.address)
    }

    /// One GET on a new connection to the API's port, over TLS when the server speaks it.
    pub(crate) fn get(&self, path: &str, auth: Option<&str>) -> Result<(u16, String)> {
        match &self.tls {
            Some(client) => client.get(&self.address, path, auth),
            None => get(&self.address, path, auth),
        }
    }

    /// One GET of an operations endpoint (`/metrics`, `/readyz`), on its port when it has one.
    pub(crate) fn operations_get(&self, path: &str) -> Result<(u16, String)> {
        match &self.operations {
            Some(address) => get(address, path, None),
            None => self.get(path, None),
        }
    }

    /// The server's peak resident memory so far (`VmHWM`), in KiB.
    pub(crate) fn peak_kib(&self) -> Result<u64> {
        status_kib(self.child.id(), "VmHWM")
            .context("no VmHWM in the server's /proc status (is this Linux?)")
    }

    /// The server's resident memory now (`VmRSS`), in KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        status_kib(self.child.id(), "VmRSS")
            .context("no VmRSS in the server's /proc status (is this Linux?)")
    }
}

/// A `NAME:   N kB` line of `/proc/PID/status`; `None` when the process or the line is gone.
fn status_kib(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Keeps the largest `RssAnon` of process `pid` in `peak` until the process is gone.
fn sample_anon_peak(pid: u32, peak: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        // A zombie has no memory lines: the loop ends when the server has stopped.
        while let Some(kib) = status_kib(pid, "RssAnon") {
            peak.fetch_max(kib, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET on a new connection: (status, body).
pub(crate) fn get(address: &str, path: &str, auth: Option<&str>) -> Result<(u16, String)> {
    let stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    exchange(stream, address, path, auth)
}

/// One HTTP/1.1 GET on `stream`, which the server closes after its answer: (status, body).
pub(crate) fn exchange(
    mut stream: impl Read + Write,
    address: &str,
    path: &str,
    auth: Option<&str>,
) -> Result<(u16, String)> {
    let auth = auth
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => {}
        // A TLS peer that closes without `close_notify` (as HTTP/1.1 allows once the answer
        // is whole) ends the stream with this error, after the answer.
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !bytes.is_empty() => {}
        Err(err) => return Err(err.into()),
    }
    let answer = String::from_utf8_lossy(&bytes);
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP/1.1 answer to GET {path}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub(crate) fn lookup_path(index: usize, entity: &str) -> String {
    format!(
        "/customer/v2/department/{}/entity/{entity}/{}/customer",
        department(index),
        index + 1
    )
}

/// Before the load: found customers answer 200 with their own data, unlinked entities 204.
fn sanity_checks(server: &Server, auth: &str, customers: usize) -> Result<()> {
    let span = lookup_span(customers);
    let found = [0, customers / 2, customers - 1];
    let missing = [customers, customers + 1, span.max(customers + 3) - 1];
    for entity in ["ORDER", "APPOINTMENT"] {
        for index in found {
            let path = lookup_path(index, entity);
            let (status, body) = server.get(&path, Some(auth))?;
            let id = customer_id(index);
            ensure!(
                status == 200 && body.contains(&format!("\"customerId\":\"{id}\"")),
                "GET {path} answered {status}, not 200 with customer {id}: {body}"
            );
        }
        for index in missing {
            let path = lookup_path(index, entity);
            let (status, body) = server.get(&path, Some(auth))?;
            ensure!(
                status == 204,
                "GET {path} (not linked) answered {status}, not 204: {body}"
            );
        }
    }
    println!("sanity: 6 linked entities answered 200 with their customer, 6 unlinked ones 204");
    Ok(())
}

/// getLinkedCustomer answers so far, by status, from the server's own `/metrics`.
fn lookup_statuses(server: &Server) -> Result<Vec<(u16, u64)>> {
    let (status, text) = server.operations_get("/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    let mut counts: Vec<(u16, u64)> = Vec::new();
    for line in text.lines() {
        let Some(labels) = line.strip_prefix("http_requests_total{") else {
            continue;
        };
        if !labels.contains("/entity/") {
            continue;
        }
        let status = labels
            .split_once("status=\"")
            .and_then(|(_, rest)| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        let count = line
            .rsplit_once(' ')
            .and_then(|(_, value)| value.parse::<f64>().ok());
        if let (Some(status), Some(count)) = (status, count) {
            match counts.iter_mut().find(|(s, _)| *s == status) {
                Some((_, total)) => *total += count as u64,
                None => counts.push((status, count as u64)),
            }
        }
    }
    Ok(counts)
}

fn difference(before: &[(u16, u64)], after: &[(u16, u64)]) -> Vec<(u16, u64)> {
    let mut result: Vec<(u16, u64)> = after
        .iter()
        .map(|&(status, count)| {
            let earlier = before
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, c)| *c);
            (status, count - earlier.min(count))
        })
        .filter(|&(_, count)| count > 0)
        .collect();
    result.sort_unstable();
    result
}

// ---------------------------------------------------------------------------------------------
// wrk

/// Lookups pick an index in [0, span): about 9 in 10 are customers (200), the rest 204.
fn lookup_span(customers: usize) -> usize {
    (customers * 10 / 9).max(customers + 1)
}

/// Prints what `load` parses: one `BENCH name value` line per figure.
const DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests %d\n", summary.requests))
  io.write(string.format("BENCH per_second %.2f\n", summary.requests / (summary.duration / 1e6)))
  io.write(string.format("BENCH p50 %.1f\n", latency:percentile(50)))
  io.write(string.format("BENCH p99 %.1f\n", latency:percentile(99)))
  io.write(string.format("BENCH p999 %.1f\n", latency:percentile(99.9)))
  io.write(string.format("BENCH bad_status %d\n", e.status))
  io.write(string.format("BENCH socket_errors %d\n", e.connect + e.read + e.write + e.timeout))
end
"#;

pub(crate) fn healthz_script() -> String {
    format!("-- written by cargo xtask bench: GET /healthz\n{DONE}")
}

/// getLinkedCustomer on a random index (per-thread seeds, so threads differ), ORDER or
/// APPOINTMENT at random; the department and id follow from the index as in the data set.
pub(crate) fn lookup_script(customers: usize, auth: &str) -> String {
    let span = lookup_span(customers);
    format!(
        r#"-- written by cargo xtask bench: getLinkedCustomer, about 9 in 10 found
local span = {span}
local entities = {{"ORDER", "APPOINTMENT"}}
wrk.headers["Authorization"] = "{auth}"
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("seed", threads)
end
init = function(args)
  math.randomseed(seed or 1)
end
request = function()
  local i = math.random(0, span - 1)
  local path = string.format("/customer/v2/department/bench-dept-%03d/entity/%s/%d/customer",
    i % {DEPARTMENTS}, entities[math.random(1, 2)], i + 1)
  return wrk.format(nil, path)
end
{DONE}"#
    )
}

/// A file only this user can read (the wrk script holds the bench subscriber's password).
pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// wrk on `url` (`http://` or `https://`) with `script` for `seconds`.
pub(crate) fn load(wrk: &Path, url: &str, script: &Path, seconds: u64) -> Result<Load> {
    let mut cmd = Command::new(wrk);
    cmd.arg(format!("-t{THREADS}"))
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(script)
        .arg(url);
    println!("$ {}", crate::util::display(&cmd));
    let output = capture(cmd)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let load = parse_wrk(&stdout)?;
    print_load(&load);
    Ok(load)
}

fn print_load(load: &Load) {
    println!(
        "{:.0} requests/s, p50 {} p99 {} p99.9 {}, {} answers >= 400, {} socket errors",
        load.per_second,
        ms(load.p50),
        ms(load.p99),
        ms(load.p999),
        load.bad_status,
        load.socket_errors
    );
}

fn parse_wrk(stdout: &str) -> Result<Load> {
    let mut load = Load::default();
    let mut seen = 0;
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("BENCH ") else {
            continue;
        };
        let (name, value) = rest
            .split_once(' ')
            .with_context(|| format!("cannot read wrk's `{line}`"))?;
        let number: f64 = value
            .trim()
            .parse()
            .with_context(|| format!("cannot read wrk's `{line}`"))?;
        match name {
            "requests" => load.requests = number as u64,
            "per_second" => load.per_second = number,
            "p50" => load.p50 = number,
            "p99" => load.p99 = number,
            "p999" => load.p999 = number,
            "bad_status" => load.bad_status = number as u64,
            "socket_errors" => load.socket_errors = number as u64,
            _ => continue,
        }
        seen += 1;
    }
    ensure!(
        seen == 7,
        "wrk printed {seen} of the 7 figures its script's done() writes:\n{stdout}"
    );
    Ok(load)
}

// ---------------------------------------------------------------------------------------------
// A new connection per request

/// A load of [`fresh_connections`], with the CPU time that each request cost the server and
/// this loop (milliseconds): the loop shares the cores with the server, so its own cost bounds
/// the rate, and the server's cost per connection is the figure that does not depend on it.
struct Fresh {
    load: Load,
    server_cpu_ms: f64,
    client_cpu_ms: f64,
}

/// Linux's `USER_HZ`, the unit of `/proc/PID/stat`'s times: 100 on every architecture Linux
/// runs on with this ABI.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// The CPU time (user and system, every thread) that process `pid` has used so far, seconds;
/// with `children`, that of the children it has waited for too.
fn cpu_seconds(pid: u32, children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Past the command's name (in parentheses, which may hold spaces): field 3 onwards; utime,
    // stime, cutime and cstime are fields 14 to 17.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let count = if children { 4 } else { 2 };
    let ticks = fields.get(11..11 + count)?.iter();
    let ticks: u64 = ticks
        .map(|field| field.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some(ticks as f64 / CLOCK_TICKS_PER_SECOND)
}

/// The machine's CPU time so far (seconds, every core, from `/proc/stat`): busy (user, nice,
/// system, irq, softirq) and stolen by the hypervisor for other machines.
fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let busy: u64 = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| ticks.get(i))
        .sum::<Option<u64>>()?;
    let stolen = *ticks.get(7)?;
    Some((
        busy as f64 / CLOCK_TICKS_PER_SECOND,
        stolen as f64 / CLOCK_TICKS_PER_SECOND,
    ))
}

/// What one thread of [`fresh_connections`] saw: the latency of each answer (microseconds),
/// answers other than 200 and 204, and requests that got no answer.
#[derive(Default)]
struct Seen {
    latencies: Vec<u64>,
    bad_status: u64,
    socket_errors: u64,
}

/// getLinkedCustomer, each request on a new connection (over TLS, with a full handshake and
/// the certificate checked, when the server speaks it), from [`FRESH_THREADS`] threads for
/// `seconds`, on the lookups wrk makes. wrk keeps its connections open, so this loop of our own
/// measures what a connection costs; the threads run beside the server on the same cores.
fn fresh_connections(server: &Server, customers: usize, auth: &str, seconds: u64) -> Result<Fresh> {
    let cpu = || -> Result<(f64, f64)> {
        let of = |pid| cpu_seconds(pid, false).context("no CPU times in /proc (is this Linux?)");
        Ok((of(server.child.id())?, of(std::process::id())?))
    };
    let (server_before, client_before) = cpu()?;
    println!(
        "$ {FRESH_THREADS} threads, getLinkedCustomer on a new connection per request, {seconds} s: {}",
        server.url("/")
    );
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let seen: Vec<Seen> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..FRESH_THREADS)
            .map(|thread| {
                scope.spawn(move || fresh_requests(server, customers, auth, thread, until))
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().unwrap_or_default())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies: Vec<u64> = seen
        .iter()
        .flat_map(|s| s.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let load = Load {
        requests: latencies.len() as u64,
        per_second: latencies.len() as f64 / elapsed,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        p999: percentile(&latencies, 99.9),
        bad_status: seen.iter().map(|s| s.bad_status).sum(),
        socket_errors: seen.iter().map(|s| s.socket_errors).sum(),
    };
    let (server_after, client_after) = cpu()?;
    let per_request = |seconds: f64| 1000.0 * seconds / load.requests.max(1) as f64;
    let fresh = Fresh {
        server_cpu_ms: per_request(server_after - server_before),
        client_cpu_ms: per_request(client_after - client_before),
        load,
    };
    print_load(&fresh.load);
    println!(
        "CPU per request: the server {:.3} ms, this loop {:.3} ms",
        fresh.server_cpu_ms, fresh.client_cpu_ms
    );
    Ok(fresh)
}

/// One thread of [`fresh_connections`]: random lookups (seeded by `thread`) until `until`.
fn fresh_requests(
    server: &Server,
    customers: usize,
    auth: &str,
    thread: usize,
    until: Instant,
) -> Seen {
    let mut rng = Lcg::new(thread);
    let mut seen = Seen::default();
    while Instant::now() < until {
        let index = rng.below(lookup_span(customers));
        let path = lookup_path(index, rng.pick(&["ORDER", "APPOINTMENT"]));
        let sent = Instant::now();
        match server.get(&path, Some(auth)) {
            Ok((status, _)) => {
                seen.latencies.push(sent.elapsed().as_micros() as u64);
                if ![200, 204].contains(&status) {
                    seen.bad_status += 1;
                }
            }
            Err(_) => seen.socket_errors += 1,
        }
    }
    seen
}

/// The `p`th percentile of `sorted` (nearest rank), as f64 like wrk's.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Less a hair, so that a product such as 0.999 × 1000 that floats put just past 999 is 999.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

// ---------------------------------------------------------------------------------------------
// The cost of traces and of the contract guard

/// A server setting whose cost the bench measures, on getLinkedCustomer.
struct Setting {
    /// Its row in the tables (Markdown).
    name: &'static str,
    /// Its server's log: `server-DATABASE-KEY.log`.
    key: &'static str,
    /// `LINKED_CUSTOMER_CONTRACT_GUARD`.
    guard: &'static str,
    /// Traces sampled at this ratio (`OTEL_TRACES_SAMPLER=traceidratio`), exported to an
    /// [`OtlpSink`]; `None`: no `OTEL_` variable, traces off.
    sampling: Option<&'static str>,
}

impl Setting {
    const fn new(
        name: &'static str,
        key: &'static str,
        guard: &'static str,
        sampling: Option<&'static str>,
    ) -> Setting {
        Setting {
            name,
            key,
            guard,
            sampling,
        }
    }

    /// The server's environment for this setting, its traces sent to `endpoint`. The batch
    /// processor keeps its defaults (`OTEL_BSP_*` unset: a batch every 5 s, or as soon as 512
    /// spans wait), as a deployment that sets only the endpoint and the sampler would.
    fn env(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        let mut env = vec![("LINKED_CUSTOMER_CONTRACT_GUARD", self.guard.to_string())];
        if let Some(ratio) = self.sampling {
            env.extend([
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
                ("OTEL_TRACES_SAMPLER", "traceidratio".to_string()),
                ("OTEL_TRACES_SAMPLER_ARG", ratio.to_string()),
            ]);
        }
        env
    }
}

/// The settings compared, in the order they run; each is reported as a ratio to the first.
static SETTINGS: [Setting; 5] = [
    Setting::new("baseline: guard `off`, no traces", "baseline", "off", None),
    Setting::new(
        "traces, sampling 1.0 (guard `off`)",
        "traces-1",
        "off",
        Some("1.0"),
    ),
    Setting::new(
        "traces, sampling 0.01 (guard `off`)",
        "traces-0.01",
        "off",
        Some("0.01"),
    ),
    Setting::new(
        "guard `sample:0.01`, no traces (the default)",
        "guard-sample",
        "sample:0.01",
        None,
    ),
    Setting::new(
        "guard `enforce`, no traces",
        "guard-enforce",
        "enforce",
        None,
    ),
];

/// Where in [`SETTINGS`]: the baseline, traces at 1.0, traces at 0.01, and the server's
/// defaults (which the main getLinkedCustomer row runs: it sets no guard and no `OTEL_`).
const BASELINE: usize = 0;
const ALL_TRACED: usize = 1;
const SAMPLED_TRACES: usize = 2;
const DEFAULTS: usize = 3;

/// The goal for traces at sampling 0.01: this share of the baseline's requests/s at least.
const TRACES_RATIO_GOAL: f64 = 0.90;

/// getLinkedCustomer under one of [`SETTINGS`].
struct Costed {
    setting: &'static Setting,
    load: Load,
    /// Its answers by status, from the server's `/metrics`.
    statuses: Vec<(u16, u64)>,
    /// What the OTLP sink received during the load (the traced settings).
    export: Option<Export>,
    cpu: CpuUse,
}

/// CPU time so far (seconds), to tell what a load cost the server and whether anything else
/// ran meanwhile on the shared cores.
#[derive(Clone, Copy)]
struct CpuClock {
    at: Instant,
    server: f64,
    /// xtask (with the OTLP sink) and the children it has waited for (wrk, once it is done).
    xtask: f64,
    /// The machine's busy time, every process's.
    busy: f64,
    /// Time the hypervisor gave to other machines.
    stolen: f64,
}

/// What a load cost in CPU, from two [`CpuClock`]s around it.
#[derive(Clone, Copy, Debug)]
struct CpuUse {
    /// The server's CPU time per request, milliseconds.
    server_ms: f64,
    /// Cores busy on average with neither the server nor xtask nor wrk: other work on the
    /// machine, which takes the cores from the load.
    elsewhere: f64,
    /// Cores stolen on average by the hypervisor.
    stolen: f64,
}

impl CpuClock {
    fn read(server: &Server) -> Result<CpuClock> {
        let none = || anyhow::anyhow!("no CPU times in /proc (is this Linux?)");
        let (busy, stolen) = machine_cpu_seconds().ok_or_else(none)?;
        Ok(CpuClock {
            at: Instant::now(),
            server: cpu_seconds(server.child.id(), false).ok_or_else(none)?,
            xtask: cpu_seconds(std::process::id(), true).ok_or_else(none)?,
            busy,
            stolen,
        })
    }

    /// What went by between `earlier` and this, over `requests`.
    fn since(&self, earlier: &CpuClock, requests: u64) -> CpuUse {
        let seconds = (self.at - earlier.at).as_secs_f64();
        let server = self.server - earlier.server;
        let ours = server + self.xtask - earlier.xtask;
        CpuUse {
            server_ms: 1000.0 * server / requests.max(1) as f64,
            elsewhere: ((self.busy - earlier.busy - ours) / seconds).max(0.0),
            stolen: (self.stolen - earlier.stolen) / seconds,
        }
    }
}

/// What an [`OtlpSink`] received in `seconds`: export requests and their bodies' bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Export {
    requests: u64,
    bytes: u64,
    seconds: f64,
}

/// getLinkedCustomer under each of [`SETTINGS`], with the main row's load (wrk, the same random
/// lookups) for `side_seconds` each, each on a server started for it alone (the one before it
/// stopped) on the same database, with the database's own settings as in the main row.
fn measure_costs(database: Database, rig: &Rig, url: &str, auth: &str) -> Result<Vec<Costed>> {
    let sink = OtlpSink::start()?;
    println!("OTLP sink for the traced settings: {}", sink.endpoint());
    let mut costs = Vec::new();
    for (index, setting) in SETTINGS.iter().enumerate() {
        banner(&format!(
            "bench on {}: {}",
            database.name(),
            setting.name.replace('`', "")
        ));
        let mut env = database.server_env();
        env.extend(setting.env(&sink.endpoint()));
        let log = rig
            .work
            .join(format!("server-{}-{}.log", database.key(), setting.key));
        let server = Server::start(&rig.binary, url, &env, &log)?;
        sanity_checks(&server, auth, rig.customers)?;
        let (before, started) = (sink.received(), CpuClock::read(&server)?);
        let (load, statuses) = lookup_load(rig, &server, auth, rig.side_seconds)?;
        let ended = CpuClock::read(&server)?;
        let seconds = (ended.at - started.at).as_secs_f64();
        let export = setting
            .sampling
            .map(|_| sink.received().since(before, seconds));
        drop(server);
        let cpu = ended.since(&started, load.requests);
        println!(
            "the server's CPU per request {:.3} ms; meanwhile {}",
            cpu.server_ms,
            elsewhere_text(&cpu)
        );
        if let Some(export) = &export {
            println!("the OTLP sink received {}", export_text(export, &load));
        }
        ensure!(
            index != ALL_TRACED || export.is_some_and(|export| export.bytes > 0),
            "with traces sampled at 1.0 the server exported nothing to the OTLP sink at {} \
             during the load (its log: {})",
            sink.endpoint(),
            rel(&log)
        );
        costs.push(Costed {
            setting,
            load,
            statuses,
            export,
            cpu,
        });
    }
    let refused = sink.received().refused;
    ensure!(
        refused == 0,
        "the OTLP sink got {refused} requests that were not `POST /v1/traces` with a \
         Content-Length (see the traced servers' logs)"
    );
    Ok(costs)
}

/// "0.02 cores busy elsewhere, 0.00 stolen": what else the shared cores did during a load.
fn elsewhere_text(cpu: &CpuUse) -> String {
    format!(
        "{:.2} cores busy elsewhere, {:.2} stolen",
        cpu.elsewhere, cpu.stolen
    )
}

/// "12345 KiB/s (830 B a request, 41 exports)".
fn export_text(export: &Export, load: &Load) -> String {
    format!(
        "{:.0} KiB/s ({:.0} B a request, {} exports)",
        export.bytes as f64 / 1024.0 / export.seconds,
        export.bytes as f64 / load.requests.max(1) as f64,
        export.requests
    )
}

/// What [`OtlpSink`] counts, from every connection.
#[derive(Default)]
struct SinkCounts {
    /// `POST /v1/traces` requests read and answered `200`.
    requests: AtomicU64,
    /// Their bodies' bytes (the protobuf batches).
    bytes: AtomicU64,
    /// Requests that were not an export it could read (each closed its connection).
    refused: AtomicU64,
}

/// [`SinkCounts`] at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Received {
    requests: u64,
    bytes: u64,
    refused: u64,
}

impl Received {
    /// What came between `earlier` and this, `seconds` apart.
    fn since(self, earlier: Received, seconds: f64) -> Export {
        Export {
            requests: self.requests - earlier.requests,
            bytes: self.bytes - earlier.bytes,
            seconds,
        }
    }
}

/// An OTLP/HTTP endpoint for the traced settings, on a port of its own: a thread per
/// connection reads each request (its head, then Content-Length bytes of body), discards it,
/// answers `200` and keeps the connection, counting what it received. A collector would decode
/// the batches too; this one costs the shared cores as little as it can. It lives as long as
/// xtask.
struct OtlpSink {
    address: std::net::SocketAddr,
    counts: Arc<SinkCounts>,
}

impl OtlpSink {
    fn start() -> Result<OtlpSink> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the OTLP sink")?;
        let address = listener.local_addr()?;
        let counts = Arc::new(SinkCounts::default());
        let shared = counts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let counts = shared.clone();
                std::thread::spawn(move || receive_exports(stream, &counts));
            }
        });
        Ok(OtlpSink { address, counts })
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    fn received(&self) -> Received {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Received {
            requests: get(&self.counts.requests),
            bytes: get(&self.counts.bytes),
            refused: get(&self.counts.refused),
        }
    }
}

/// One connection to [`OtlpSink`]: exports until the peer closes it (a server stopped with an
/// export under way ends here too). A request that is not `POST /v1/traces` with a
/// Content-Length is counted as refused, answered `400` and its connection closed.
fn receive_exports(stream: TcpStream, counts: &SinkCounts) -> std::io::Result<()> {
    let mut answers = stream.try_clone()?;
    let mut requests = BufReader::with_capacity(64 * 1024, stream);
    let mut line = String::new();
    loop {
        line.clear();
        if requests.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let export = line.starts_with("POST /v1/traces ");
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            if requests.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<u64>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            }
        }
        let Some(length) = length.filter(|_| export && !chunked) else {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            return answers.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        };
        if std::io::copy(&mut (&mut requests).take(length), &mut std::io::sink())? < length {
            return Ok(());
        }
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.bytes.fetch_add(length, Ordering::Relaxed);
        answers.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )?;
    }
}

// ---------------------------------------------------------------------------------------------
// pgbench

/// `server/src/store/lookup.sql` as a pgbench script: comments dropped, `$1`..`$6` replaced by
/// pgbench variables, the department and entity id computed from a random index as wrk does.
fn pgbench_script(customers: usize) -> Result<String> {
    let path = root().join("server/src/store/lookup.sql");
    let sql = std::fs::read_to_string(&path).with_context(|| format!("reading {}", rel(&path)))?;
    let mut sql: String = sql
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for (parameter, replacement) in [
        ("$1", ":username"),
        ("$2", "('bench-dept-' || lpad(CAST(:dept AS text), 3, '0'))"),
        ("$3", ":scope"),
        (
            "$4",
            "(CASE CAST(:entity AS integer) WHEN 0 THEN 'ORDER' ELSE 'APPOINTMENT' END)",
        ),
        ("$5", ":id"),
        // A cached credential, as in the server's steady state: the document is read.
        ("$6", "s.password_hash"),
    ] {
        ensure!(
            sql.contains(parameter),
            "{} no longer uses {parameter}: update pgbench_script in xtask/src/bench.rs",
            rel(&path)
        );
        sql = sql.replace(parameter, replacement);
    }
    ensure!(
        !sql.contains('$'),
        "{} has a parameter past $6: update pgbench_script in xtask/src/bench.rs",
        rel(&path)
    );
    Ok(format!(
        "\\set i random(0, {})\n\\set dept :i % {DEPARTMENTS}\n\\set id :i + 1\n\\set entity random(0, 1)\n{};\n",
        lookup_span(customers) - 1,
        sql.trim_end().trim_end_matches(';')
    ))
}

/// pgbench on the lookup's SQL against the bench database: its transactions per second.
fn pgbench(url: &str, customers: usize, seconds: u64, work: &Path) -> Result<f64> {
    let script = work.join("pgbench-lookup.sql");
    std::fs::write(&script, pgbench_script(customers)?)?;
    let (url, password) = split_password(url);
    let mut cmd = Command::new(pgbench_program()?);
    cmd.args(["-M", "prepared", "-n"])
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-j{THREADS}"))
        .arg(format!("-T{seconds}"))
        .arg("-D")
        .arg(format!("username={USER}"))
        .arg("-D")
        .arg(format!("scope={SCOPE}"))
        .arg("-f")
        .arg(&script)
        .arg(&url);
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    println!("$ {}", crate::util::display(&cmd));
    let output = capture(cmd)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "pgbench failed ({}) on {}: {stdout}{stderr}",
            output.status,
            rel(&script)
        );
    }
    let tps = parse_pgbench(&stdout).with_context(|| format!("{stdout}{stderr}"))?;
    println!("pgbench: {tps:.0} tps");
    Ok(tps)
}

fn parse_pgbench(stdout: &str) -> Result<f64> {
    let failed = stdout
        .lines()
        .find_map(|line| line.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse::<u64>().ok())
        .unwrap_or(0);
    ensure!(failed == 0, "pgbench reported {failed} failed transactions");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .context("pgbench printed no `tps = ` line")
}

/// Rows in `links`: the lookup finds customers only where the server fills this table.
fn count_links(url: &str) -> Result<u64> {
    let count = pg_throwaway::query_i64(url, "SELECT count(*) FROM links")
        .context("counting the rows of `links`")?;
    Ok(u64::try_from(count)?)
}

// ---------------------------------------------------------------------------------------------
// Reporting

pub(crate) fn ms(microseconds: f64) -> String {
    format!("{:.2} ms", microseconds / 1000.0)
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn statuses_text(statuses: &[(u16, u64)]) -> String {
    if statuses.is_empty() {
        return "none".to_string();
    }
    let total: u64 = statuses.iter().map(|(_, count)| count).sum();
    statuses
        .iter()
        .map(|(status, count)| {
            format!(
                "{status}: {count} ({:.1} %)",
                100.0 * *count as f64 / total as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn errors(load: &Load) -> u64 {
    load.bad_status + load.socket_errors
}

impl Measured {
    /// Every load with its name in the tables (Markdown: a path in a code span).
    fn loads(&self) -> [(&'static str, &Load); 5] {
        [
            ("`/healthz`", &self.healthz),
            ("getLinkedCustomer", &self.lookup),
            ("getLinkedCustomer over TLS", &self.lookup_tls),
            ("getLinkedCustomer, new connection each", &self.fresh.load),
            (
                "getLinkedCustomer over TLS, new connection each",
                &self.fresh_tls.load,
            ),
        ]
    }

    /// getLinkedCustomer over TLS (kept connections) as a share of plain HTTP's rate.
    fn tls_ratio(&self) -> f64 {
        self.lookup_tls.per_second / self.lookup.per_second
    }
}

/// The goal for [`Measured::tls_ratio`].
const TLS_RATIO_GOAL: f64 = 0.80;

fn print_table(results: &[Measured], rig: &Rig) {
    let (customers, seconds, side_seconds) = (rig.customers, rig.seconds, rig.side_seconds);
    println!(
        "\nbench: {customers} customers, wrk {CONNECTIONS} connections, {THREADS} threads, {seconds} s each \
         (TLS, new-connection and server-setting loads {side_seconds} s; new connections: {FRESH_THREADS} threads)"
    );
    println!(
        "{:<11} {:<48} {:>11} {:>8} {:>10} {:>10} {:>10} {:>7}",
        "database", "load", "requests/s", "ratio", "p50", "p99", "p99.9", "errors"
    );
    for result in results {
        for (name, load) in result.loads() {
            println!(
                "{:<11} {:<48} {:>11.0} {:>8.2} {:>10} {:>10} {:>10} {:>7}",
                result.database.name(),
                name.replace('`', ""),
                load.per_second,
                load.per_second / result.healthz.per_second,
                ms(load.p50),
                ms(load.p99),
                ms(load.p999),
                errors(load)
            );
        }
    }
    for result in results {
        let name = result.database.name();
        println!("{name}: {}", tls_summary(result));
        println!("{name}: {}", connections_summary(result));
        println!(
            "{}: answers {}; server peak RSS {} (anonymous {}); import {:.0} customers/s, peak RSS {}{}",
            result.database.name(),
            statuses_text(&result.statuses),
            mib(result.server_peak_kib),
            mib(result.server_peak_anon_kib),
            customers as f64 / result.import_seconds,
            mib(result.import_peak_kib),
            match result.pgbench_tps {
                Some(tps) => format!(
                    "; pgbench {tps:.0} tps, server/pgbench {:.2}{}",
                    result.lookup.per_second / tps,
                    links_note(result.links_rows, customers)
                ),
                None => String::new(),
            }
        );
    }
    for result in results.iter().filter(|result| !result.costs.is_empty()) {
        let name = result.database.name();
        println!(
            "\n{name}: getLinkedCustomer under each setting, a server started for each, {side_seconds} s each"
        );
        let header = [
            "server settings",
            "requests/s",
            "ratio",
            "p50",
            "p99",
            "p99 ratio",
            "CPU/request",
            "ratio",
            "errors",
            "received by the OTLP sink",
        ]
        .map(String::from);
        let rows = result
            .costs
            .iter()
            .map(|costed| cost_row(&result.costs, costed));
        for row in std::iter::once(header).chain(rows) {
            println!(
                "{:<46} {:>11} {:>6} {:>10} {:>10} {:>9} {:>11} {:>6} {:>7}  {}",
                row[0].replace('`', ""),
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                row[6],
                row[7],
                row[8],
                row[9]
            );
        }
        println!("{name}: {}", traces_summary(&result.costs));
        println!("{name}: {}", main_row_summary(result));
        println!("{name}: {}", elsewhere_summary(&result.costs));
    }
}

/// The columns of `costed`'s row among `costs`, for the console and Markdown: the setting,
/// requests/s and their ratio to the baseline's, p50, p99 and its ratio, the server's CPU per
/// request and its ratio, errors, the export.
fn cost_row(costs: &[Costed], costed: &Costed) -> [String; 10] {
    let (load, baseline) = (&costed.load, &costs[BASELINE]);
    [
        costed.setting.name.to_string(),
        format!("{:.0}", load.per_second),
        format!("{:.2}", load.per_second / baseline.load.per_second),
        ms(load.p50),
        ms(load.p99),
        format!("{:.2}", load.p99 / baseline.load.p99),
        format!("{:.3} ms", costed.cpu.server_ms),
        format!("{:.2}", costed.cpu.server_ms / baseline.cpu.server_ms),
        errors(load).to_string(),
        costed
            .export
            .map_or_else(|| "-".to_string(), |export| export_text(&export, load)),
    ]
}

/// Busy cores that were neither the server nor the load, by setting, for the notes: the
/// machine's cores are shared, and a setting measured while something else ran is slower for it.
fn elsewhere_summary(costs: &[Costed]) -> String {
    let each: Vec<String> = costs
        .iter()
        .map(|costed| {
            let cpu = &costed.cpu;
            format!(
                "{} {:.2} ({:.2} stolen)",
                costed.setting.key, cpu.elsewhere, cpu.stolen
            )
        })
        .collect();
    let disturbed: Vec<&str> = costs
        .iter()
        .filter(|costed| costed.cpu.elsewhere + costed.cpu.stolen > DISTURBED_CORES)
        .map(|costed| costed.setting.key)
        .collect();
    format!(
        "the machine's other work during each load (`/proc/stat`'s busy time less the \
         server's, xtask's and wrk's, in cores; besides, what the hypervisor stole): {}; {}",
        each.join(", "),
        if disturbed.is_empty() {
            format!("none above {DISTURBED_CORES:.2} cores")
        } else {
            format!(
                "above {DISTURBED_CORES:.2} cores during {}: those rows' requests/s and \
                 latencies lost cores to it (the server's CPU per request much less)",
                disturbed.join(", ")
            )
        }
    )
}

/// Cores of other work past which a setting's load is noted as disturbed.
const DISTURBED_CORES: f64 = 0.10;

/// Traces at sampling 0.01 against their goal, for the notes.
fn traces_summary(costs: &[Costed]) -> String {
    let ratio = costs[SAMPLED_TRACES].load.per_second / costs[BASELINE].load.per_second;
    against_goal(
        "with traces sampled at 0.01 getLinkedCustomer",
        ratio,
        "the baseline",
        TRACES_RATIO_GOAL,
    )
}

/// "WHAT does 0.85 of OF's requests/s (goal >= 0.80: met)".
fn against_goal(what: &str, ratio: f64, of: &str, goal: f64) -> String {
    let verdict = if ratio >= goal { "met" } else { "missed" };
    format!("{what} does {ratio:.2} of {of}'s requests/s (goal >= {goal:.2}: {verdict})")
}

/// What the main getLinkedCustomer row ran, and its rate against this run's baseline.
fn main_row_summary(result: &Measured) -> String {
    let costs = &result.costs;
    let baseline = costs[BASELINE].load.per_second;
    format!(
        "the main getLinkedCustomer row of this run's {} section sets neither the guard nor an \
         `OTEL_` variable, so it runs the server's defaults: guard `sample:0.01`, no traces, as \
         the row *{}*; it did {:.0} requests/s, {:.2} of this baseline (that row: {:.2}, the same \
         setting on another server start)",
        result.database.name(),
        costs[DEFAULTS].setting.name,
        result.lookup.per_second,
        result.lookup.per_second / baseline,
        costs[DEFAULTS].load.per_second / baseline
    )
}

/// TLS on kept connections against plain HTTP, for the tables' notes.
fn tls_summary(result: &Measured) -> String {
    against_goal(
        "getLinkedCustomer over TLS on kept connections",
        result.tls_ratio(),
        "plain HTTP",
        TLS_RATIO_GOAL,
    )
}

/// New connections, TLS against plain, and what each cost in CPU.
fn connections_summary(result: &Measured) -> String {
    let (tls, plain) = (&result.fresh_tls, &result.fresh);
    format!(
        "{:.0} new TLS connections/s (a full handshake and one request each), {:.2} of plain \
         HTTP's {:.0}/s; CPU per connection: the server {:.2} ms over TLS ({:.0} connections per \
         CPU-second) and {:.2} ms plain, the measuring loop {:.2} ms over TLS and {:.2} ms plain \
         (xtask, a debug build on the same cores: where it costs more than the server, it bounds \
         the rate)",
        tls.load.per_second,
        tls.load.per_second / plain.load.per_second,
        plain.load.per_second,
        tls.server_cpu_ms,
        1000.0 / tls.server_cpu_ms,
        plain.server_cpu_ms,
        tls.client_cpu_ms,
        plain.client_cpu_ms
    )
}

fn links_note(rows: Option<u64>, customers: usize) -> String {
    match rows {
        Some(rows) if rows < 2 * customers as u64 => format!(
            " (links has {rows} rows, not {}: pgbench's lookups found no customer)",
            2 * customers
        ),
        _ => String::new(),
    }
}

/// The smoke run's verdict: any failed request fails it, in every load and every setting.
fn require_no_errors(results: &[Measured]) -> Result<()> {
    for result in results {
        let (name, key) = (result.database.name(), result.database.key());
        for (load_name, load) in result.loads() {
            require_answered(
                &format!("{name} {load_name}"),
                load,
                &format!("server-{key}.log, and server-{key}-tls.log for the TLS loads"),
            )?;
        }
        require_found_or_not(&format!("{name} getLinkedCustomer"), &result.statuses)?;
        for costed in &result.costs {
            let what = format!("{name} getLinkedCustomer, {}", costed.setting.name);
            require_answered(
                &what,
                &costed.load,
                &format!("server-{key}-{}.log", costed.setting.key),
            )?;
            require_found_or_not(&what, &costed.statuses)?;
        }
    }
    println!("\nbench smoke: no errors");
    Ok(())
}

/// `load` made requests and none failed; `logs` names the server's logs in target/xtask/bench.
fn require_answered(what: &str, load: &Load, logs: &str) -> Result<()> {
    ensure!(
        errors(load) == 0 && load.requests > 0,
        "{what}: {} requests, {} answered 400 or more (or not 200/204 on a new connection), {} \
         socket errors (the server's logs: target/xtask/bench/{logs})",
        load.requests,
        load.bad_status,
        load.socket_errors
    );
    Ok(())
}

/// The server counted only 200s and 204s among the lookups' answers.
fn require_found_or_not(what: &str, statuses: &[(u16, u64)]) -> Result<()> {
    ensure!(
        statuses
            .iter()
            .all(|(status, _)| [200, 204].contains(status)),
        "{what} answered other than 200 or 204: {}",
        statuses_text(statuses)
    );
    Ok(())
}

/// "2 cores, Intel(R) Xeon(R) ..." for the record.
pub(crate) fn machine() -> Result<String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    Ok(format!("{cores} cores, {cpu}"))
}

pub(crate) fn today() -> Result<String> {
    let mut date = Command::new("date");
    date.args(["-u", "+%Y-%m-%d %H:%M UTC"]);
    let output = capture(date)?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

const HEADER: &str = "# Benchmarks

Written by `cargo xtask bench` (see `xtask/src/bench.rs`); each run replaces the section of its
database and data-set size, so sections for other sizes stay.

How to read them: the absolute figures describe one machine on one day and do not travel. What
does travel is the **ratio to `/healthz` in the same run**: `/healthz` answers without touching
the database, so it is what the HTTP stack, wrk and this machine manage at all, and
getLinkedCustomer's share of it shows what authentication, the lookup and the JSON cost. On
PostgreSQL, **server/pgbench** compares the server with the lookup's own SQL
(`server/src/store/lookup.sql`) run by pgbench on the same database, with the same number of
connections: how much of the database's speed reaches the client. Compare runs through these
ratios, and absolute figures only between runs on the same machine.

The load: wrk, 64 connections, 2 threads, on the same machine as the server, with a random
customer index per request, of which about 9 in 10 are linked (200) and the rest are not (204);
the subscriber's credentials are checked once and then cached by the server, as in production.
The server runs with its default logging (a text line per request at `info`).

The TLS rows: a second server on the same database, with a certificate made in the run (ECDSA
P-256, TLS 1.3 settles), once the first is stopped. **TLS / plain** is getLinkedCustomer over
TLS on wrk's kept connections as a share of the plain row (goal >= 0.80); wrk over `https://`
checks no certificate, which changes nothing the server does. The *new connection each* rows
are not wrk (it keeps its connections) but xtask's own loop: 8 threads, each request on a new
TCP connection, over TLS a full handshake (rustls, the certificate checked, no resumption).
The loop (a debug build) shares the cores with the server and may spend more CPU on a TLS
connection than the server does, which then bounds the rate: the server's CPU time per
connection (from `/proc`), noted under the table, is the figure that does not depend on it.

The sections on the cost of traces and of the contract guard (SQLite): getLinkedCustomer with
the main row's load under five server settings, each on a release server started for it alone
on the same database, as a **ratio to the baseline of the same run** (guard `off`, no traces):
traces sampled at 1.0 and at 0.01 (goal >= 0.90 of the baseline), the guard at its default
`sample:0.01` (what the main row runs) and at `enforce`. The traces go to a sink in xtask that
discards them, on the same cores. Next to requests/s, the server's CPU time per request (from
`/proc`) and its ratio, which depend less on what else the two cores did; the other work the
machine did during each load is noted under the table.
";

/// What a section says of the run that wrote it.
#[derive(Clone, Copy)]
struct Run<'a> {
    customers: usize,
    seconds: u64,
    command: &'a str,
    machine: &'a str,
    date: &'a str,
}

fn section(result: &Measured, run: &Run) -> String {
    let &Run {
        customers,
        seconds,
        command,
        machine,
        date,
    } = run;
    let healthz = result.healthz.per_second;
    let mut text = format!(
        "## {}, {customers} customers\n\n\
         {date}, {machine}; `{command}` (wrk {CONNECTIONS} connections, {THREADS} threads, {seconds} s per load; new connections: {FRESH_THREADS} threads).\n\n\
         | load | requests/s | ratio to /healthz | p50 | p99 | p99.9 | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        result.database.name()
    );
    for (name, load) in result.loads() {
        text.push_str(&format!(
            "| {name} | {:.0} | {:.2} | {} | {} | {} | {} |\n",
            load.per_second,
            load.per_second / healthz,
            ms(load.p50),
            ms(load.p99),
            ms(load.p999),
            errors(load)
        ));
    }
    text.push_str(&format!(
        "\n- TLS: {}\n\
         - new connections: {}\n\
         - getLinkedCustomer answers (server's `/metrics`): {}\n\
         - server peak RSS (VmHWM) after the two plain wrk loads: {}; of it anonymous memory (the server's own, without mapped files; `RssAnon` sampled every 100 ms) at most {}\n\
         - import of {customers} customers (`linked-customer-server import`, wall time): {:.2} s, {:.0} customers/s, peak RSS {}\n",
        tls_summary(result),
        connections_summary(result),
        statuses_text(&result.statuses),
        mib(result.server_peak_kib),
        mib(result.server_peak_anon_kib),
        result.import_seconds,
        customers as f64 / result.import_seconds,
        mib(result.import_peak_kib)
    ));
    if let Some(tps) = result.pgbench_tps {
        text.push_str(&format!(
            "- pgbench on `lookup.sql` (`-M prepared -c {CONNECTIONS} -j {THREADS} -T {seconds}`): {tps:.0} tps; server/pgbench {:.2}{}\n",
            result.lookup.per_second / tps,
            links_note(result.links_rows, customers)
        ));
    }
    text
}

/// The section of [`SETTINGS`], for a database that measured them.
fn costs_section(result: &Measured, run: &Run) -> String {
    let mut text = format!(
        "## {}, {} customers: the cost of traces and of the contract guard\n\n\
         {}, {}; `{}` (getLinkedCustomer with the main row's load: wrk {CONNECTIONS} connections, {THREADS} threads, the same random lookups, {} s per setting; each setting on a release server started for it alone, on the same database, one after the other).\n\n\
         | server settings | requests/s | ratio to baseline | p50 | p99 | p99 ratio to baseline | server CPU per request | ratio to baseline | errors | received by the OTLP sink |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        result.database.name(),
        run.customers,
        run.date,
        run.machine,
        run.command,
        run.seconds
    );
    for costed in &result.costs {
        let row = cost_row(&result.costs, costed);
        text.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    let answers: Vec<String> = result
        .costs
        .iter()
        .map(|costed| {
            format!(
                "{}: {}",
                costed.setting.key,
                statuses_text(&costed.statuses)
            )
        })
        .collect();
    text.push_str(&format!(
        "\n- {}\n\
         - {}\n\
         - the server's CPU per request: its CPU time (`/proc`) over the requests wrk made; it depends less than requests/s on what else the two cores did.\n\
         - {}\n\
         - traces went by OTLP over HTTP (protobuf) to a sink in xtask on the same cores, which reads each batch and discards it (a collector that decoded them would cost the cores more); `OTEL_TRACES_SAMPLER=traceidratio`, `OTEL_TRACES_SAMPLER_ARG` 1.0 or 0.01 (wrk sends no `traceparent`: every request starts a trace); the batch processor's defaults (`OTEL_BSP_*` unset: a batch every 5 s, or as soon as 512 spans wait; a queue of 2048, past which spans are dropped). The last column: the batches' bytes that the sink received during the load, per second and per request.\n\
         - getLinkedCustomer answers by setting (server's `/metrics`): {}\n",
        traces_summary(&result.costs),
        main_row_summary(result),
        elsewhere_summary(&result.costs),
        answers.join("; ")
    ));
    text
}

fn write_markdown(
    results: &[Measured],
    customers: usize,
    seconds: u64,
    command: &str,
    machine: &str,
) -> Result<()> {
    let path = root().join(MARKDOWN);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|_| HEADER.to_string());
    let date = today()?;
    let run = Run {
        customers,
        seconds,
        command,
        machine,
        date: &date,
    };
    for result in results {
        let key = format!("{}:{customers}", result.database.key());
        text = replace_section(&text, &key, &section(result, &run));
        if !result.costs.is_empty() {
            let key = format!("{}-costs:{customers}", result.database.key());
            text = replace_section(&text, &key, &costs_section(result, &run));
        }
    }
    std::fs::write(&path, text).with_context(|| format!("writing {MARKDOWN}"))
}

/// `text` with the section marked `key` replaced by `body` (appended when there is none).
pub(crate) fn replace_section(text: &str, key: &str, body: &str) -> String {
    let start = format!("<!-- bench:{key} -->");
    let end = format!("<!-- /bench:{key} -->");
    let block = format!("{start}\n{body}{end}\n");
    if let (Some(from), Some(to)) = (text.find(&start), text.find(&end))
        && from < to
    {
        let to = to + end.len();
        let to = if text[to..].starts_with('\n') {
            to + 1
        } else {
            to
        };
        return format!("{}{block}{}", &text[..from], &text[to..]);
    }
    format!("{}\n\n{block}", text.trim_end())
}

pub(crate) fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads() {
        assert_eq!(base64("bench:pw"), "YmVuY2g6cHc=");
        assert_eq!(base64("ab"), "YWI=");
        assert_eq!(base64("abc"), "YWJj");
    }

    #[test]
    fn lines_are_deterministic_and_complete() {
        let line = customer_line(7);
        assert_eq!(line, customer_line(7));
        assert_ne!(line, customer_line(8));
        assert_eq!(line["department"], "bench-dept-007");
        assert_eq!(line["links"][0]["entityId"], 8);
        let demo = std::fs::read_to_string(root().join("server/demo/demo.jsonl")).unwrap();
        let demo: serde_json::Value = serde_json::from_str(demo.lines().next().unwrap()).unwrap();
        // Every field the demo customer fills, this one fills too.
        for (object, model) in [
            (&line["customer"], &demo["customer"]),
            (
                &line["customer"]["emails"][0],
                &demo["customer"]["emails"][0],
            ),
            (
                &line["customer"]["phoneNumbers"][0],
                &demo["customer"]["phoneNumbers"][0],
            ),
            (
                &line["customer"]["addresses"][0],
                &demo["customer"]["addresses"][0],
            ),
            (&line["vehicles"][1], &demo["vehicles"][0]),
        ] {
            for key in model.as_object().unwrap().keys() {
                assert!(object.get(key).is_some(), "missing {key}");
            }
        }
    }

    #[test]
    fn sections_are_replaced_not_repeated() {
        let once = replace_section(HEADER, "sqlite:10", "a\n");
        let twice = replace_section(&once, "sqlite:10", "b\n");
        let other = replace_section(&twice, "postgres:10", "c\n");
        assert!(!twice.contains("a\n<!--") && twice.contains("b\n"));
        assert_eq!(other.matches("<!-- bench:sqlite:10 -->").count(), 1);
        assert!(other.contains("c\n"));
    }

    #[test]
    fn reads_wrk_and_pgbench() {
        let load = parse_wrk(
            "Running 5s test\nBENCH requests 10\nBENCH per_second 2.00\nBENCH p50 100.0\n\
             BENCH p99 200.0\nBENCH p999 300.5\nBENCH bad_status 1\nBENCH socket_errors 2\n",
        )
        .unwrap();
        assert_eq!(
            (load.requests, load.bad_status, load.socket_errors),
            (10, 1, 2)
        );
        assert_eq!(load.p999, 300.5);
        assert!(parse_wrk("BENCH requests 10\n").is_err());
        let tps = parse_pgbench(
            "number of failed transactions: 0 (0.000%)\ntps = 1234.5 (without initial connection time)\n",
        )
        .unwrap();
        assert_eq!(tps, 1234.5);
        assert!(parse_pgbench("number of failed transactions: 3 (1%)\ntps = 1.0 (x)\n").is_err());
    }

    #[test]
    fn reads_the_banner_and_percentiles() {
        let at = |line| match Announced::read(line) {
            Some(Announced::Operations(address)) => format!("operations {address}"),
            Some(Announced::Listening(address)) => format!("listening {address}"),
            None => "nothing".to_string(),
        };
        assert_eq!(
            at("operations (/metrics, /readyz) on http://127.0.0.1:9001"),
            "operations 127.0.0.1:9001"
        );
        assert_eq!(
            at("listening on https://127.0.0.1:8443"),
            "listening 127.0.0.1:8443"
        );
        assert_eq!(
            at("listening on http://127.0.0.1:8080"),
            "listening 127.0.0.1:8080"
        );
        assert_eq!(
            at("Swagger UI: http://127.0.0.1:8080/swagger-ui/"),
            "nothing"
        );
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&sorted, 50.0), 500.0);
        assert_eq!(percentile(&sorted, 99.9), 999.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    #[test]
    fn the_otlp_sink_answers_exports_on_a_kept_connection() {
        let sink = OtlpSink::start().unwrap();
        let mut stream = TcpStream::connect(sink.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answers = BufReader::new(stream.try_clone().unwrap());
        for body in [&b"abc"[..], &[0u8; 70_000][..]] {
            write!(
                stream,
                "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n\
                 content-length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            stream.write_all(body).unwrap();
            let mut head = String::new();
            while !head.ends_with("\r\n\r\n") {
                assert!(answers.read_line(&mut head).unwrap() > 0, "{head}");
            }
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert!(head.contains("content-length: 0\r\n"), "{head}");
        }
        let received = sink.received();
        assert_eq!(
            (received.requests, received.bytes, received.refused),
            (2, 70_003, 0)
        );
        let (status, _) = get(&sink.address.to_string(), "/v1/traces", None).unwrap();
        assert_eq!((status, sink.received().refused), (400, 1));
    }

    #[test]
    fn the_settings_are_where_the_notes_say() {
        let traced = |index: usize| SETTINGS[index].sampling;
        assert_eq!((traced(BASELINE), SETTINGS[BASELINE].guard), (None, "off"));
        assert_eq!(traced(ALL_TRACED), Some("1.0"));
        assert_eq!(traced(SAMPLED_TRACES), Some("0.01"));
        assert_eq!(
            (traced(DEFAULTS), SETTINGS[DEFAULTS].guard),
            (None, "sample:0.01")
        );
        // The main row runs the server's default guard, which the notes call `sample:0.01`.
        let cli = std::fs::read_to_string(root().join("server/src/cli.rs")).unwrap();
        let guard = cli
            .split_once("env = \"LINKED_CUSTOMER_CONTRACT_GUARD\"")
            .unwrap()
            .1;
        assert!(
            guard[..guard.find(')').unwrap()].contains("default_value = \"sample:0.01\""),
            "the server's default guard is no longer sample:0.01: update SETTINGS and its notes"
        );
        let env = SETTINGS[SAMPLED_TRACES].env("http://127.0.0.1:1");
        assert!(env.contains(&("OTEL_TRACES_SAMPLER_ARG", "0.01".to_string())));
        assert_eq!(SETTINGS[BASELINE].env("http://127.0.0.1:1").len(), 1);
    }

    #[test]
    fn the_pgbench_script_has_no_positional_parameters() {
        let script = pgbench_script(900).unwrap();
        assert!(script.starts_with("\\set i random(0, 999)\n"));
        assert!(!script.contains('$') && script.contains(":username"));
        assert!(script.trim_end().ends_with(';'));
    }
}
