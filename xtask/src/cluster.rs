//! `cargo xtask cluster [--test]`: the deployment past one machine, on this one. A PostgreSQL
//! primary and a streaming replica of it (`pg_basebackup`), three release servers that write to
//! the primary and read the replica, and HAProxy in front of them, all on loopback ports.
//! HAProxy terminates TLS with a certificate from a CA made in the run, and checks each server's
//! `/readyz` on its operations port (`--admin-bind`); behind it the servers speak plain HTTP.
//! HAProxy's configuration is the project's, `deploy/haproxy.cfg`, with only the lines that a
//! run on loopback needs changed ([`haproxy_config`]).
//!
//! Without `--test` it imports a data set, prints the URLs and a credential, and runs until
//! Ctrl-C. With `--test` it proves, and fails loudly otherwise, every request through the load
//! balancer (wrk's too) over TLS:
//! 1. a customer imported on the primary is served through the load balancer within 1 s;
//! 2. under load through the load balancer (wrk, 64 connections), a server stopped (SIGTERM,
//!    then SIGKILL) costs at most the requests in flight on it, and is back in the rotation
//!    once started again;
//! 3. the replica stopped under load: the servers read the primary, with no more failed
//!    requests than were in flight, and read the replica again when it is back;
//! 4. `subscriber remove` on the primary refuses that subscriber through the load balancer
//!    within 1 s;
//! 5. throughput through the load balancer beside one server on its own (BENCHMARKS.md,
//!    section `cluster`).

use crate::bench::{self, Load, Server};
use crate::pgcluster::Cluster;
use crate::tls::LocalTls;
use crate::util::{banner, capture, rel};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CUSTOMERS: usize = 20_000;
pub(crate) const SERVERS: usize = 3;
/// Seconds of each load with a fault in it, and when in it the fault comes and goes.
const FAULT_LOAD_SECONDS: u64 = 12;
const FAULT_AT: Duration = Duration::from_secs(3);
const RESTORE_AT: Duration = Duration::from_secs(7);
const THROUGHPUT_SECONDS: u64 = 10;
/// What the issue allows for a change on the primary to show through the load balancer.
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);

pub fn run(test: bool) -> Result<()> {
    let work = crate::util::target_dir().join("xtask/cluster");
    std::fs::create_dir_all(&work)?;
    banner("building the release server");
    let binary = bench::build_release()?;
    let haproxy = haproxy_program()?;
    let data = bench::dataset(&work, CUSTOMERS)?;

    banner("PostgreSQL: a primary and a streaming replica of it");
    let primary = Cluster::create()?;
    primary.start()?;
    let primary_url = primary.url();
    on_primary(&binary, &primary_url, &["migrate".as_ref()])?;
    let replica = Cluster::replica_of(&primary)?;
    replica.start()?;
    println!(
        "primary on port {}, replica on port {} (pg_basebackup -R)",
        primary.port(),
        replica.port()
    );
    ensure!(
        pg_throwaway::query_i64(&replica.url(), "SELECT pg_is_in_recovery()::int::bigint")? == 1,
        "the replica is not in recovery: it is not a standby"
    );
    bench::import(
        &binary,
        &bench::time_program()?,
        &primary_url,
        &data,
        CUSTOMERS,
        &work,
    )?;
    let password = format!("pw-{}", crate::util::random_hex(12)?);
    bench::add_subscriber(
        &binary,
        &primary_url,
        bench::USER,
        &password,
        bench::DEPARTMENTS,
    )?;
    wait_for_replay(&primary, &replica)?;

    banner("three servers and HAProxy");
    let mut servers = Servers::start(&binary, &primary_url, &replica.url(), &work)?;
    let balancer = Balancer::start(&haproxy, &servers, &work)?;
    balancer.wait_all_up(Duration::from_secs(20))?;
    let auth = format!(
        "Basic {}",
        bench::base64(&format!("{}:{password}", bench::USER))
    );
    let example = bench::lookup_path(0, "ORDER");
    let (status, _) = balancer.get(&example, Some(&auth))?;
    ensure!(
        status == 200,
        "GET {example} through HAProxy answered {status}"
    );
    println!(
        "\nload balancer: {}  (HAProxy stats: http://{}/stats)\n\
         servers: {}\n\
         try: curl --cacert {} -u {}:{password} {}",
        balancer.url(""),
        balancer.stats,
        servers
            .binds
            .iter()
            .zip(&servers.operations)
            .map(|(bind, operations)| format!("http://{bind} (operations http://{operations})"))
            .collect::<Vec<_>>()
            .join(" "),
        balancer.tls.ca.display(),
        bench::USER,
        balancer.url(&example)
    );
    if !test {
        println!("\nCtrl-C stops everything.");
        let (stop, stopped) = std::sync::mpsc::channel();
        ctrlc::set_handler(move || {
            let _ = stop.send(());
        })
        .context("could not wait for Ctrl-C")?;
        let _ = stopped.recv();
        println!("\nstopping the servers, HAProxy and PostgreSQL");
        return Ok(());
    }

    let wrk = bench::wrk_program()?;
    let mut report = Vec::new();
    banner("1. an import on the primary, through the load balancer");
    report.push(import_is_visible(
        &binary,
        &primary_url,
        &balancer,
        &auth,
        &work,
    )?);
    for signal in ["TERM", "KILL"] {
        banner(&format!("2. a server stopped with SIG{signal} under load"));
        report.push(server_stopped(
            &mut servers,
            &balancer,
            &wrk,
            &auth,
            signal,
            &work,
        )?);
    }
    banner("3. the replica stopped under load");
    report.push(replica_stopped(
        &replica, &servers, &balancer, &wrk, &auth, &work,
    )?);
    banner("4. a subscriber removed on the primary");
    report.push(removal_is_visible(&binary, &primary_url, &balancer)?);
    banner("5. throughput");
    report.extend(throughput(&servers, &balancer, &wrk, &auth, &work)?);

    println!("\n{}", report.join("\n"));
    write_markdown(&report)?;
    println!("\ncluster: every check held; wrote BENCHMARKS.md (section cluster)");
    Ok(())
}

/// Runs the server's command `args` on the primary (`DATABASE_URL`); when it returned.
fn on_primary(binary: &Path, primary_url: &str, args: &[&std::ffi::OsStr]) -> Result<Instant> {
    let mut command = Command::new(binary);
    command.args(args).env("DATABASE_URL", primary_url);
    let output = capture(command)?;
    let returned = Instant::now();
    ensure!(
        output.status.success(),
        "`linked-customer-server {}` failed: {}",
        args.iter()
            .map(|arg| arg.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(returned)
}

/// Waits until the replica has replayed everything the primary has written so far.
fn wait_for_replay(primary: &Cluster, replica: &Cluster) -> Result<()> {
    let target: i64 = pg_throwaway::query_i64(
        &primary.url(),
        "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let replayed = pg_throwaway::query_i64(
            &replica.url(),
            "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint",
        )?;
        if replayed >= target {
            println!("the replica has replayed the import");
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the replica did not replay the import within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `127.0.0.1:PORT` on a port that was free a moment ago, for a program told its address.
fn free_address() -> Result<String> {
    Ok(format!("127.0.0.1:{}", crate::util::free_port()?))
}

// ---------------------------------------------------------------------------------------------
// The servers

struct Servers {
    binary: PathBuf,
    primary_url: String,
    replica_url: String,
    work: PathBuf,
    /// `127.0.0.1:PORT` of each, fixed: HAProxy's configuration names them.
    binds: Vec<String>,
    /// Each one's operations port (`/readyz`, `/metrics`), where HAProxy's checks go.
    operations: Vec<String>,
    running: Vec<Option<Server>>,
    starts: usize,
}

impl Servers {
    fn start(binary: &Path, primary_url: &str, replica_url: &str, work: &Path) -> Result<Servers> {
        let binds = (0..SERVERS)
            .map(|_| free_address())
            .collect::<Result<Vec<_>>>()?;
        let operations = (0..SERVERS)
            .map(|_| free_address())
            .collect::<Result<Vec<_>>>()?;
        let mut servers = Servers {
            binary: binary.to_path_buf(),
            primary_url: primary_url.to_string(),
            replica_url: replica_url.to_string(),
            work: work.to_path_buf(),
            binds,
            operations,
            running: (0..SERVERS).map(|_| None).collect(),
            starts: 0,
        };
        for index in 0..SERVERS {
            servers.start_one(index)?;
        }
        Ok(servers)
    }

    fn start_one(&mut self, index: usize) -> Result<()> {
        self.starts += 1;
        let log = self
            .work
            .join(format!("server-{}-{}.log", index + 1, self.starts));
        let env = [
            ("DATABASE_READ_URL", self.replica_url.clone()),
            // A line per request on stderr costs the three servers a share of two cores.
            ("RUST_LOG", "warn".to_string()),
            ("LINKED_CUSTOMER_ADMIN_BIND", self.operations[index].clone()),
            // Every client arrives from HAProxy: the password-check budgets go by the address
            // it forwards for (`option forwardfor`), not by its own.
            ("LINKED_CUSTOMER_TRUSTED_PROXIES", "127.0.0.1".to_string()),
        ];
        let server = Server::start_on(
            &self.binary,
            &self.binds[index],
            &self.primary_url,
            &env,
            &log,
        )?;
        self.running[index] = Some(server);
        Ok(())
    }

    fn server(&self, index: usize) -> Result<&Server> {
        self.running[index]
            .as_ref()
            .with_context(|| format!("server {} is not running", index + 1))
    }

    /// Sends `signal` to server `index` and waits for it to exit.
    fn stop_one(&mut self, index: usize, signal: &str) -> Result<()> {
        let mut server = self.running[index]
            .take()
            .with_context(|| format!("server {} is not running", index + 1))?;
        let mut kill = Command::new("kill");
        kill.arg(format!("-{signal}"))
            .arg(server.child.id().to_string());
        crate::util::run(kill)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.child.try_wait()?.is_none() {
            ensure!(
                Instant::now() < deadline,
                "server {} did not exit within 30 s of SIG{signal}",
                index + 1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `database_lookups_total` of `database` on server `index`.
    fn lookups(&self, index: usize, database: &str) -> Result<u64> {
        let (status, text) = self.server(index)?.operations_get("/metrics")?;
        ensure!(status == 200, "/metrics answered {status}");
        let series = format!("database_lookups_total{{database=\"{database}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(series.as_str())?.trim().parse().ok())
            .with_context(|| format!("no {series}in the /metrics of server {}", index + 1))
    }
}

// ---------------------------------------------------------------------------------------------
// HAProxy

/// Debian's HAProxy, installed when missing (as root).
fn haproxy_program() -> Result<PathBuf> {
    crate::deploy::debian_program("/usr/sbin/haproxy", "haproxy")
}

struct Balancer {
    /// Where it takes TLS.
    address: String,
    /// Its certificate's CA, and a client that trusts it.
    tls: LocalTls,
    /// HAProxy's stats page, for people.
    stats: String,
    /// Its stats socket, for this program.
    socket: PathBuf,
    /// Its log: a line per request (see [`haproxy_config`]).
    log: PathBuf,
    child: Child,
}

/// THE HAProxy configuration, deploy/haproxy.cfg (its comments say why each setting is
/// there), with the lines that a run on loopback needs changed, and nothing else: HAProxy runs
/// as the user running xtask (no `user`/`group` to drop to), its stats socket in the run's
/// folder (`show stat`: [`Balancer::servers`]), a request log of status, termination state
/// and server ([`Balancer::failures_since`]) in place of `option httplog`, and the run's
/// addresses and certificate. Each line changed must be in the file exactly once
/// ([`crate::deploy::rewrite_lines`]), and every `server` line is one of the run's, or this
/// fails: the file and the test cannot drift apart silently. `servers` are each server's API
/// address and operations address (where its `/readyz` checks go).
pub(crate) fn haproxy_config(
    address: &str,
    certificate: &Path,
    stats: &str,
    socket: &Path,
    servers: &[(String, String)],
) -> Result<String> {
    let file = crate::deploy::HAPROXY;
    let text = std::fs::read_to_string(crate::util::root().join(file))
        .with_context(|| format!("reading {file}"))?;
    let mut changes: Vec<(String, String)> = [
        (
            "user haproxy",
            "# user: the one running cargo xtask cluster".to_string(),
        ),
        (
            "group haproxy",
            "# group: the one running cargo xtask cluster".to_string(),
        ),
        (
            "stats socket /run/haproxy/linked-customer.sock",
            format!("stats socket {}", socket.display()),
        ),
        ("option httplog", "log-format \"%ST %tsc %s\"".to_string()),
        (
            crate::deploy::HAPROXY_FRONTEND_BIND,
            format!("bind {address} ssl crt {}", certificate.display()),
        ),
        ("bind 127.0.0.1:8404", format!("bind {stats}")),
    ]
    .map(|(from, to)| (from.to_string(), to))
    .into();
    for (index, (bind, operations)) in servers.iter().enumerate() {
        let n = index + 1;
        // deploy/haproxy.cfg's servers: s1 on 10.0.0.11, s2 on 10.0.0.12, ...
        let example = format!("10.0.0.{}:8080", 10 + n);
        let port = operations
            .rsplit_once(':')
            .map(|(_, port)| port)
            .with_context(|| format!("no port in {operations}"))?;
        changes.push((
            format!("server s{n} {example} check port 9090"),
            format!("server s{n} {bind} check port {port}"),
        ));
        changes.push((
            format!("server s{n}-unchecked {example} backup"),
            format!("server s{n}-unchecked {bind} backup"),
        ));
    }
    let config = crate::deploy::rewrite_lines(&text, file, &changes)?;
    let server_lines = config
        .lines()
        .filter(|line| line.trim_start().starts_with("server "))
        .count();
    ensure!(
        server_lines == 2 * servers.len(),
        "{file} has {server_lines} `server` lines; a run on loopback has {} servers, each a \
         checked line and an unchecked backup",
        servers.len()
    );
    Ok(format!(
        "# deploy/haproxy.cfg as cargo xtask cluster runs it (see its header)\n{config}"
    ))
}

/// HAProxy's certificate from a CA made in the run, and `crt`'s one PEM file: the
/// certificate, then its key.
pub(crate) fn haproxy_certificate(work: &Path) -> Result<(LocalTls, PathBuf)> {
    let tls = LocalTls::make(work, "haproxy")?;
    let certificate = work.join("haproxy.pem");
    bench::write_private(
        &certificate,
        &(std::fs::read_to_string(&tls.cert)? + &std::fs::read_to_string(&tls.key)?),
    )?;
    Ok((tls, certificate))
}

impl Balancer {
    fn start(haproxy: &Path, servers: &Servers, work: &Path) -> Result<Balancer> {
        let (address, stats) = (free_address()?, free_address()?);
        let (tls, certificate) = haproxy_certificate(work)?;
        let config = work.join("haproxy.cfg");
        let socket = work.join("haproxy.sock");
        let _ = std::fs::remove_file(&socket);
        let addresses: Vec<(String, String)> = servers
            .binds
            .iter()
            .cloned()
            .zip(servers.operations.iter().cloned())
            .collect();
        std::fs::write(
            &config,
            haproxy_config(&address, &certificate, &stats, &socket, &addresses)?,
        )?;
        crate::deploy::haproxy_check(haproxy, &config)?;
        let log_path = work.join("haproxy.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting HAProxy")?;
        println!("HAProxy on https://{address} ({})", rel(&config));
        Ok(Balancer {
            address,
            tls,
            stats,
            socket,
            log: log_path,
            child,
        })
    }

    /// HAProxy's view of each server: (name, status such as `UP` or `DOWN`, retries,
    /// redispatches).
    fn servers(&self) -> Result<Vec<(String, String, u64, u64)>> {
        // The stats socket answers plain CSV (the stats page's is chunked).
        let mut socket = std::os::unix::net::UnixStream::connect(&self.socket)?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        std::io::Write::write_all(&mut socket, b"show stat\n")?;
        let mut csv = String::new();
        std::io::Read::read_to_string(&mut socket, &mut csv)?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .and_then(|line| line.strip_prefix("# "))
            .context("HAProxy's stats have no header")?
            .split(',')
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|c| *c == name)
                .with_context(|| format!("no column {name} in HAProxy's stats"))
        };
        let (px, sv, st, retr, redis) = (
            column("pxname")?,
            column("svname")?,
            column("status")?,
            column("wretr")?,
            column("wredis")?,
        );
        let mut servers = Vec::new();
        for line in lines {
            let fields: Vec<&str> = line.split(',').collect();
            if fields.get(px) != Some(&"servers") {
                continue;
            }
            let name = fields.get(sv).copied().unwrap_or_default();
            // The unchecked backups are the same servers, for when every check fails.
            if name == "FRONTEND" || name == "BACKEND" || name.ends_with("-unchecked") {
                continue;
            }
            let number = |i: usize| fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
            servers.push((
                name.to_string(),
                fields.get(st).copied().unwrap_or_default().to_string(),
                number(retr),
                number(redis),
            ));
        }
        Ok(servers)
    }

    fn wait_all_up(&self, within: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            // Until HAProxy listens, its stats page refuses the connection.
            let servers = self.servers().unwrap_or_default();
            if servers.len() == SERVERS && servers.iter().all(|(_, status, ..)| status == "UP") {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                bail!("HAProxy does not see every server up within {within:?}: {servers:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How far its log has been written, for [`Balancer::failures_since`].
    fn log_offset(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.log)?.len())
    }

    /// The requests logged after `offset` that were not answered 2xx, counted by status,
    /// termination state and server (`503 sC-- s2`: HAProxy's own 503, the connection to
    /// server 2 failed), most frequent first.
    fn failures_since(&self, offset: u64) -> Result<String> {
        let text = std::fs::read(&self.log)?;
        let text = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default());
        let mut counts: Vec<(String, u64)> = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(status), Some(state), Some(server)) =
                (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if status.len() != 3
                || !status.bytes().all(|b| b.is_ascii_digit())
                || status.starts_with('2')
            {
                continue;
            }
            let key = format!("{status} {state} {server}");
            match counts.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => counts.push((key, 1)),
            }
        }
        counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        Ok(if counts.is_empty() {
            "none".to_string()
        } else {
            counts
                .iter()
                .map(|(key, n)| format!("{n} × `{key}`"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// `https://ADDRESS/PATH`.
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    /// One GET through the load balancer, on a new TLS connection.
    fn get(&self, path: &str, auth: Option<&str>) -> Result<(u16, String)> {
        self.tls.client.get(&self.address, path, auth)
    }

    fn retries(&self) -> Result<(u64, u64)> {
        Ok(self
            .servers()?
            .iter()
            .fold((0, 0), |(r, d), (_, _, retr, redis)| (r + retr, d + redis)))
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The checks

/// Polls `path` through the load balancer until it answers `status` `times` in a row (so that
/// every server has answered it, round robin), for at most `within` after `since`.
fn answers_within(
    balancer: &Balancer,
    path: &str,
    auth: &str,
    status: u16,
    times: usize,
    since: Instant,
    within: Duration,
) -> Result<Duration> {
    let mut in_a_row = 0;
    let mut first = None;
    loop {
        let (now, _) = balancer.get(path, Some(auth))?;
        if now == status {
            first.get_or_insert_with(|| since.elapsed());
            in_a_row += 1;
            if in_a_row == times {
                return first.context("seen");
            }
        } else {
            in_a_row = 0;
            first = None;
        }
        ensure!(
            since.elapsed() < within + Duration::from_secs(5),
            "GET {path} through the load balancer did not answer {status} {times} times in a row \
             within {within:?} (last {now})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn import_is_visible(
    binary: &Path,
    primary_url: &str,
    balancer: &Balancer,
    auth: &str,
    work: &Path,
) -> Result<String> {
    // A customer of the data set's shape that the data set does not have.
    let index = CUSTOMERS + 7;
    let path = bench::lookup_path(index, "ORDER");
    let (before, _) = balancer.get(&path, Some(auth))?;
    ensure!(
        before == 204,
        "GET {path} answered {before} before the import"
    );
    let file = work.join("one-more.jsonl");
    std::fs::write(&file, format!("{}\n", bench::customer_line(index)))?;
    let imported = on_primary(binary, primary_url, &["import".as_ref(), file.as_os_str()])?;
    let took = answers_within(
        balancer,
        &path,
        auth,
        200,
        SERVERS,
        imported,
        VISIBLE_WITHIN,
    )?;
    ensure!(
        took <= VISIBLE_WITHIN,
        "the imported customer was served {took:?} after the import, not within {VISIBLE_WITHIN:?}"
    );
    Ok(format!(
        "- a customer imported on the primary was served through the load balancer (read from \
         the replica) {} ms after the import returned; bound {} ms",
        took.as_millis(),
        VISIBLE_WITHIN.as_millis()
    ))
}

/// wrk through the load balancer for `seconds`, in a thread; the caller makes the fault.
fn load_in_background(
    wrk: &Path,
    balancer: &Balancer,
    auth: &str,
    seconds: u64,
    work: &Path,
) -> Result<std::thread::JoinHandle<Result<Load>>> {
    let script = work.join(format!("wrk-{}.lua", crate::util::random_hex(4)?));
    bench::write_private(&script, &bench::lookup_script(CUSTOMERS, auth))?;
    let (wrk, url) = (wrk.to_path_buf(), balancer.url("/"));
    Ok(std::thread::spawn(move || {
        let load = bench::load(&wrk, &url, &script, seconds);
        let _ = std::fs::remove_file(&script);
        load
    }))
}

fn sleep_until(started: Instant, at: Duration) {
    if let Some(left) = at.checked_sub(started.elapsed()) {
        std::thread::sleep(left);
    }
}

fn server_stopped(
    servers: &mut Servers,
    balancer: &Balancer,
    wrk: &Path,
    auth: &str,
    signal: &str,
    work: &Path,
) -> Result<String> {
    let index = 1;
    let (retries_before, redispatches_before) = balancer.retries()?;
    let offset = balancer.log_offset()?;
    let started = Instant::now();
    let load = load_in_background(wrk, balancer, auth, FAULT_LOAD_SECONDS, work)?;
    sleep_until(started, FAULT_AT);
    servers.stop_one(index, signal)?;
    println!(
        "server {} stopped (SIG{signal}) at {:?}",
        index + 1,
        started.elapsed()
    );
    sleep_until(started, RESTORE_AT);
    servers.start_one(index)?;
    let back = balancer.wait_all_up(Duration::from_secs(10))?;
    println!(
        "server {} back in HAProxy's rotation {} ms after it started",
        index + 1,
        back.as_millis()
    );
    let load = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let served_since = servers.lookups(index, "replica1")? + servers.lookups(index, "primary")?;
    let (retries, redispatches) = balancer.retries()?;
    let failed = bench::errors(&load);
    let how = balancer.failures_since(offset)?;
    ensure!(
        served_since > 0,
        "server {} answered no lookup after it was started again",
        index + 1
    );
    ensure!(
        failed <= bench::CONNECTIONS as u64,
        "{failed} requests failed when a server stopped (SIG{signal}); at most the {} in flight may",
        bench::CONNECTIONS
    );
    Ok(format!(
        "- one of three servers stopped with SIG{signal} under load ({} connections through \
         HAProxy, {FAULT_LOAD_SECONDS} s, stopped at {} s, started again at {} s): {} requests, \
         {failed} failed (bound: the {} in flight; in HAProxy's log, status, termination state \
         and server: {how}); HAProxy retried {} and redispatched {}; the server was back in the rotation {} ms after it started and answered {served_since} \
         lookups before the load ended",
        bench::CONNECTIONS,
        FAULT_AT.as_secs(),
        RESTORE_AT.as_secs(),
        load.requests,
        bench::CONNECTIONS,
        retries - retries_before,
        redispatches - redispatches_before,
        back.as_millis()
    ))
}

fn replica_stopped(
    replica: &Cluster,
    servers: &Servers,
    balancer: &Balancer,
    wrk: &Path,
    auth: &str,
    work: &Path,
) -> Result<String> {
    let primary_before: Vec<u64> = (0..SERVERS)
        .map(|i| servers.lookups(i, "primary"))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let load = load_in_background(wrk, balancer, auth, FAULT_LOAD_SECONDS, work)?;
    sleep_until(started, FAULT_AT);
    replica.stop()?;
    println!("replica stopped at {:?}", started.elapsed());
    sleep_until(started, RESTORE_AT);
    replica.start()?;
    println!("replica started at {:?}", started.elapsed());
    let load = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let failed = bench::errors(&load);
    let from_primary: u64 = (0..SERVERS)
        .map(|i| Ok(servers.lookups(i, "primary")? - primary_before[i]))
        .sum::<Result<u64>>()?;
    ensure!(
        from_primary > 0,
        "no server read the primary while the replica was down"
    );
    ensure!(
        failed <= bench::CONNECTIONS as u64,
        "{failed} requests failed while the replica was down; at most the {} in flight may",
        bench::CONNECTIONS
    );
    // Back on the replica: every server's replica count grows again.
    let replica_before: Vec<u64> = (0..SERVERS)
        .map(|i| servers.lookups(i, "replica1"))
        .collect::<Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let path = bench::lookup_path(0, "ORDER");
    loop {
        for _ in 0..SERVERS * 2 {
            let (status, _) = balancer.get(&path, Some(auth))?;
            ensure!(
                status == 200,
                "GET {path} answered {status} after the replica came back"
            );
        }
        let grown = (0..SERVERS)
            .map(|i| Ok(servers.lookups(i, "replica1")? > replica_before[i]))
            .collect::<Result<Vec<bool>>>()?;
        if grown.iter().all(|g| *g) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not every server reads the replica again 10 s after it came back: {grown:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(format!(
        "- the replica stopped (`pg_ctl stop -m fast`) under load ({} connections, \
         {FAULT_LOAD_SECONDS} s, stopped at {} s, started at {} s): {} requests, {failed} failed \
         (bound: the {} in flight); {from_primary} lookups read the primary meanwhile; every \
         server read the replica again once it was back",
        bench::CONNECTIONS,
        FAULT_AT.as_secs(),
        RESTORE_AT.as_secs(),
        load.requests,
        bench::CONNECTIONS
    ))
}

fn removal_is_visible(binary: &Path, primary_url: &str, balancer: &Balancer) -> Result<String> {
    let user = "leaving";
    let password = format!("pw-{}", crate::util::random_hex(8)?);
    bench::add_subscriber(binary, primary_url, user, &password, bench::DEPARTMENTS)?;
    let auth = format!("Basic {}", bench::base64(&format!("{user}:{password}")));
    let path = bench::lookup_path(0, "ORDER");
    // Served (and its credential cached) by every server first.
    answers_within(
        balancer,
        &path,
        &auth,
        200,
        SERVERS * 2,
        Instant::now(),
        Duration::from_secs(5),
    )?;
    let args = ["subscriber", "remove", "--username", user].map(std::ffi::OsStr::new);
    let removed = on_primary(binary, primary_url, &args)?;
    let took = answers_within(
        balancer,
        &path,
        &auth,
        401,
        SERVERS * 2,
        removed,
        VISIBLE_WITHIN,
    )?;
    ensure!(
        took <= VISIBLE_WITHIN,
        "the removed subscriber was refused {took:?} after `subscriber remove`, not within {VISIBLE_WITHIN:?}"
    );
    Ok(format!(
        "- `subscriber remove` on the primary: the subscriber's requests through the load \
         balancer were refused (401, by every server) {} ms after the command returned, though \
         each server had its credential cached; bound {} ms",
        took.as_millis(),
        VISIBLE_WITHIN.as_millis()
    ))
}

fn throughput(
    servers: &Servers,
    balancer: &Balancer,
    wrk: &Path,
    auth: &str,
    work: &Path,
) -> Result<Vec<String>> {
    let script = work.join(format!("wrk-{}.lua", crate::util::random_hex(4)?));
    let measure = |base: &str, lookup: bool| -> Result<Load> {
        let text = if lookup {
            bench::lookup_script(CUSTOMERS, auth)
        } else {
            bench::healthz_script()
        };
        bench::write_private(&script, &text)?;
        let path = if lookup { "/" } else { "/healthz" };
        bench::load(wrk, &format!("{base}{path}"), &script, THROUGHPUT_SECONDS)
    };
    let (through, single) = (balancer.url(""), servers.server(0)?.url(""));
    let lb_healthz = measure(&through, false)?;
    let lb_lookup = measure(&through, true)?;
    let one_healthz = measure(&single, false)?;
    let one_lookup = measure(&single, true)?;
    let _ = std::fs::remove_file(&script);
    for (name, load) in [
        ("through HAProxy, /healthz", &lb_healthz),
        ("through HAProxy, getLinkedCustomer", &lb_lookup),
        ("one server, /healthz", &one_healthz),
        ("one server, getLinkedCustomer", &one_lookup),
    ] {
        ensure!(
            bench::errors(load) == 0,
            "{name}: {} requests failed",
            bench::errors(load)
        );
    }
    let row = |name: &str, load: &Load, healthz: &Load| {
        format!(
            "| {name} | {:.0} | {:.2} | {} | {} |",
            load.per_second,
            load.per_second / healthz.per_second,
            bench::ms(load.p50),
            bench::ms(load.p99)
        )
    };
    Ok(vec![
        String::new(),
        format!(
            "Throughput, wrk {} connections, {THROUGHPUT_SECONDS} s each, {CUSTOMERS} customers, \
             the servers reading the replica; wrk speaks TLS to HAProxy (kept connections) and \
             plain HTTP to the one server:",
            bench::CONNECTIONS
        ),
        String::new(),
        "| load | requests/s | ratio to its /healthz | p50 | p99 |".to_string(),
        "|---|---:|---:|---:|---:|".to_string(),
        row(
            "HAProxy (TLS) + 3 servers, `/healthz`",
            &lb_healthz,
            &lb_healthz,
        ),
        row(
            "HAProxy (TLS) + 3 servers, getLinkedCustomer",
            &lb_lookup,
            &lb_healthz,
        ),
        row("1 server direct, `/healthz`", &one_healthz, &one_healthz),
        row(
            "1 server direct, getLinkedCustomer",
            &one_lookup,
            &one_healthz,
        ),
        String::new(),
        format!(
            "Through the load balancer getLinkedCustomer does {:.2} of one server's rate on its \
             own, TLS at HAProxy included. On this machine's 2 cores the three servers, HAProxy, \
             both PostgreSQL clusters and wrk share the same CPUs, so this measures the load \
             balancer's overhead, not a speed-up: the three servers pay off only on machines of \
             their own.",
            lb_lookup.per_second / one_lookup.per_second
        ),
    ])
}

fn write_markdown(report: &[String]) -> Result<()> {
    let path = crate::util::root().join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).context("reading BENCHMARKS.md")?;
    let body = format!(
        "## Past one machine: three servers behind HAProxy, a streaming replica\n\n\
         {}, {}; `cargo xtask cluster --test` (release build; PostgreSQL primary and a \
         `pg_basebackup` replica, three servers with `DATABASE_READ_URL` on the replica, HAProxy \
         terminating TLS with a certificate made in the run and checking `/readyz` on each \
         server's operations port, all on loopback; every request through HAProxy over TLS).\n\n{}\n",
        bench::today()?,
        bench::machine()?,
        report.join("\n")
    );
    std::fs::write(&path, bench::replace_section(&text, "cluster", &body))
        .context("writing BENCHMARKS.md")
}
