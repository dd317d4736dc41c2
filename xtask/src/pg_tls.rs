//! `cargo xtask pg-tls`: the server checks its PostgreSQL's certificate. A PostgreSQL cluster of
//! its own (`pgcluster.rs`) takes TCP connections over TLS only (`hostssl`), with a certificate
//! from a CA that this run makes (rcgen). The debug server:
//!
//! 1. starts with the CA (`sslrootcert=ca.pem`), imports, adds a subscriber and answers a
//!    getLinkedCustomer lookup over HTTP with the 200;
//! 2. while it runs, the cluster comes back with a certificate for another host name: lookups
//!    are refused (`503`, the read connections verify too) and its log names the certificate;
//!    with the right certificate back, the lookup answers 200 again;
//! 3. refuses to start (non-zero exit, the certificate named, no password in the message):
//!    without the CA, by default for a host that is not local (the machine's own name, which
//!    resolves to loopback: no address off this machine is used) and with an explicit
//!    `sslmode=verify-full` to `localhost`; and with the CA, against a certificate for another
//!    host name;
//! 4. on `localhost` with no `sslmode`, keeps `prefer` (TLS, the certificate unchecked) and
//!    starts.
//!
//! A case that should be refused and starts is a failure: verification that is off fails this.

use crate::bench::{self, Server};
use crate::pgcluster::Cluster;
use crate::util::{banner, capture_with_input, random_hex, rel, root, target_dir};
use anyhow::{Context, Result, bail, ensure};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEPARTMENT: &str = "demo-department";
const USER: &str = "pg-tls";
/// The demo customer's lookup (server/demo/demo.jsonl) and a word of its answer.
const LOOKUP: &str = "/customer/v2/department/demo-department/entity/ORDER/1001/customer";
const CUSTOMER: &str = "Okafor";
/// The host name of the certificate that is not the database's.
const OTHER_HOST: &str = "other-host.invalid";
/// How long a server may take to refuse to start (it refuses at its first connection).
const REFUSAL_DEADLINE: Duration = Duration::from_secs(60);

/// The CA and the cluster's two certificates, as PEM.
struct Certificates {
    ca: String,
    /// For the names that the server connects to.
    right: (String, String),
    /// The same CA, for [`OTHER_HOST`] only.
    wrong: (String, String),
}

pub fn run() -> Result<()> {
    let started = Instant::now();
    let work = target_dir().join("xtask/pg-tls");
    std::fs::create_dir_all(&work)?;
    banner("building the server (debug)");
    let binary = crate::server::build()?;

    let name = non_local_name();
    match &name {
        Some(name) => {
            println!("a host that is not local: {name} (this machine's name, on 127.0.0.1)")
        }
        None => println!(
            "this machine's name is not a loopback name: sslmode=verify-full to localhost stands in \
             for a host that is not local"
        ),
    }
    let certificates = certificates(name.as_deref())?;
    let ca = work.join("ca.pem");
    std::fs::write(&ca, &certificates.ca)?;

    banner("a PostgreSQL cluster that takes TCP over TLS only");
    let cluster = Cluster::create()?;
    tls_only(&cluster, &certificates.right)?;
    cluster.start()?;
    // Any password: the cluster trusts loopback; it is here to be kept out of every message.
    let secret = format!("pw{}", random_hex(12)?);
    let url = |host: &str, query: &str| {
        format!(
            "postgres://postgres:{secret}@{host}:{}/postgres{query}",
            cluster.port()
        )
    };
    let with_ca = match &name {
        Some(name) => url(name, &format!("?sslrootcert={}", ca.display())),
        None => url(
            "localhost",
            &format!("?sslmode=verify-full&sslrootcert={}", ca.display()),
        ),
    };
    let mut report = Vec::new();

    banner("1. with the CA: import, subscriber, serve, a lookup");
    let password = format!("pw-{}", random_hex(8)?);
    prepare(&binary, &with_ca, &password)?;
    let log = work.join("server.log");
    let server = Server::start(&binary, &with_ca, &[], &log)?;
    let auth = format!("Basic {}", bench::base64(&format!("{USER}:{password}")));
    expect_lookup(&server, &auth, 200)?;
    report.push("accepted with sslrootcert=ca.pem: started, the lookup answered 200".to_string());

    banner("2. the cluster comes back with a certificate for another host name");
    swap_certificate(&cluster, &certificates.wrong)?;
    let refused = refused_lookup(&server, &auth, &log)?;
    report.push(format!(
        "the running server's read connections, against a certificate for {OTHER_HOST}: {refused}"
    ));
    let refused_start = expect_refused(
        &cluster,
        &binary,
        &with_ca,
        &secret,
        "not valid for name",
        &work,
    )?;
    report.push(format!(
        "with the CA, a certificate for {OTHER_HOST}: refused to start: {refused_start}"
    ));
    swap_certificate(&cluster, &certificates.right)?;
    expect_lookup_within(&server, &auth, Duration::from_secs(15))?;
    report.push("the right certificate back: the lookup answered 200 again".to_string());
    drop(server);
    ensure_no_secret(&log, &secret)?;

    banner("3. without the CA: refused");
    if let Some(name) = &name {
        let refused = expect_refused(
            &cluster,
            &binary,
            &url(name, ""),
            &secret,
            "UnknownIssuer",
            &work,
        )?;
        report.push(format!(
            "{name} with no sslmode (verify-full by default): refused to start: {refused}"
        ));
    }
    let explicit = url("localhost", "?sslmode=verify-full");
    let refused = expect_refused(
        &cluster,
        &binary,
        &explicit,
        &secret,
        "UnknownIssuer",
        &work,
    )?;
    report.push(format!(
        "localhost with sslmode=verify-full: refused to start: {refused}"
    ));

    banner("4. localhost with no sslmode keeps prefer");
    let local_log = work.join("server-local.log");
    let local = Server::start(&binary, &url("localhost", ""), &[], &local_log)?;
    expect_lookup(&local, &auth, 200)?;
    drop(local);
    report.push("localhost with no sslmode (prefer): started, the lookup answered 200".to_string());

    println!();
    for line in &report {
        println!("- {line}");
    }
    println!(
        "\npg-tls: every check held in {:.0?} (no password in any message)",
        started.elapsed()
    );
    Ok(())
}

/// This machine's name when it resolves to 127.0.0.1 alone (where the cluster listens): a host
/// that the server does not take for local, reached without leaving loopback.
fn non_local_name() -> Option<String> {
    use std::net::ToSocketAddrs;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_string();
    if name.is_empty()
        || name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
    {
        return None;
    }
    let addresses: Vec<_> = (name.as_str(), 0).to_socket_addrs().ok()?.collect();
    let on_loopback = !addresses.is_empty()
        && addresses
            .iter()
            .all(|address| address.ip() == std::net::Ipv4Addr::LOCALHOST);
    on_loopback.then_some(name)
}

/// A CA, a certificate for `name`, `localhost` and 127.0.0.1, and one for [`OTHER_HOST`].
fn certificates(name: Option<&str>) -> Result<Certificates> {
    let ca = crate::tls::Ca::new("linked-customer pg-tls test CA")?;
    let mut names: Vec<&str> = name.into_iter().collect();
    names.extend(crate::tls::LOCAL_NAMES);
    Ok(Certificates {
        right: ca.issue(&names)?,
        wrong: ca.issue(&[OTHER_HOST])?,
        ca: ca.pem,
    })
}

/// TLS on, with `certificate`; TCP connections from loopback over TLS only, and none in clear.
fn tls_only(cluster: &Cluster, certificate: &(String, String)) -> Result<()> {
    write_certificate(cluster, certificate)?;
    let data = cluster.data();
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))?;
    std::io::Write::write_all(
        &mut conf,
        // Connections are logged: a refused case must let none in (`authorized`).
        b"\n# cargo xtask pg-tls\nssl = on\nssl_cert_file = 'server.crt'\n\
          ssl_key_file = 'server.key'\nlog_connections = on\n",
    )?;
    // No `host` line: a connection in clear finds no entry and is refused.
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
    )?;
    Ok(())
}

/// `server.crt` and `server.key` in the data folder, the key 0600 and both the cluster's user's
/// (PostgreSQL refuses a key that others may read).
fn write_certificate(cluster: &Cluster, (cert, key): &(String, String)) -> Result<()> {
    let data = cluster.data();
    let (cert_path, key_path) = (data.join("server.crt"), data.join("server.key"));
    bench::write_private(&cert_path, cert)?;
    bench::write_private(&key_path, key)?;
    if crate::util::is_root() {
        let mut chown = Command::new("chown");
        chown
            .arg("postgres:postgres")
            .arg(&cert_path)
            .arg(&key_path);
        crate::util::run(chown)?;
    }
    Ok(())
}

/// The cluster restarted with `certificate` (connections open before are closed by it).
fn swap_certificate(cluster: &Cluster, certificate: &(String, String)) -> Result<()> {
    cluster.stop()?;
    write_certificate(cluster, certificate)?;
    cluster.start()
}

/// The demo fixture imported and subscriber [`USER`] added, both through `url`.
fn prepare(binary: &Path, url: &str, password: &str) -> Result<()> {
    let mut import = Command::new(binary);
    import
        .arg("import")
        .arg(root().join("server/demo/demo.jsonl"))
        .env("DATABASE_URL", url);
    finished(capture_with_input(import, "")?, "the import")?;
    let mut add = Command::new(binary);
    add.args(["subscriber", "add", "--username", USER, "--password-stdin"])
        .args(["--department", DEPARTMENT, "--scope", "customer.search"])
        .env("DATABASE_URL", url);
    finished(
        capture_with_input(add, &format!("{password}\n"))?,
        "adding the subscriber",
    )
}

fn finished(output: std::process::Output, what: &str) -> Result<()> {
    ensure!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn expect_lookup(server: &Server, auth: &str, expected: u16) -> Result<()> {
    let (status, body) = bench::get(&server.address, LOOKUP, Some(auth))?;
    ensure!(
        status == expected && (expected != 200 || body.contains(CUSTOMER)),
        "GET {LOOKUP} answered {status}, not {expected}: {body}"
    );
    println!("GET {LOOKUP}: {status}");
    Ok(())
}

/// The lookup answers 200 within `deadline` (the read connections reopen by themselves).
fn expect_lookup_within(server: &Server, auth: &str, deadline: Duration) -> Result<()> {
    let until = Instant::now() + deadline;
    loop {
        match expect_lookup(server, auth, 200) {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() > until => return Err(err),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Lookups against the wrong certificate: never a 200, and within 15 s a 503 with the
/// certificate named in the server's log. Returns what was seen.
fn refused_lookup(server: &Server, auth: &str, log: &Path) -> Result<String> {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = bench::get(&server.address, LOOKUP, Some(auth))?;
        ensure!(
            status != 200,
            "a lookup was answered 200 through a certificate for {OTHER_HOST}: the read \
             connections did not check it"
        );
        let logged = std::fs::read_to_string(log)?;
        if status == 503
            && let Some(line) = logged
                .lines()
                .find(|line| line.contains("certificate was refused"))
        {
            return Ok(format!("503, and the log says: {}", excerpt(line)));
        }
        ensure!(
            Instant::now() < until,
            "within 15 s no lookup got a 503 with the certificate named in the log (last: {status}; \
             log: {})",
            rel(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `serve` with `url` must exit non-zero without listening, saying `problem` (rustls's word for
/// the certificate's fault) and the server's own explanation, and not `secret`. Returns the
/// message's last line.
fn expect_refused(
    cluster: &Cluster,
    binary: &Path,
    url: &str,
    secret: &str,
    problem: &str,
    work: &Path,
) -> Result<String> {
    let (out, err) = (work.join("refused.out"), work.join("refused.err"));
    let authorized_before = authorized(cluster)?;
    let mut child = Command::new(binary)
        .args(["serve", "--bind", "127.0.0.1:0", "--no-demo"])
        .env("DATABASE_URL", url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&err)?)
        .spawn()
        .context("starting linked-customer-server")?;
    let until = Instant::now() + REFUSAL_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let listening = std::fs::read_to_string(&out)?.contains("listening on");
        if listening || Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the server {} with a certificate that it must refuse ({problem}); stderr: {}",
                if listening {
                    "started"
                } else {
                    "neither started nor stopped"
                },
                rel(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let message = std::fs::read_to_string(&err)? + &std::fs::read_to_string(&out)?;
    ensure!(
        !status.success(),
        "the server exited 0 with a certificate it must refuse: {message}"
    );
    ensure!(
        !message.contains(secret),
        "the refusal shows the database password: {}",
        rel(&err)
    );
    let line = message
        .lines()
        .rev()
        .find(|line| line.contains("certificate was refused"))
        .with_context(|| {
            format!("the refusal does not say the certificate was refused: {message}")
        })?;
    ensure!(
        line.contains(problem),
        "the refusal does not name {problem}: {line}"
    );
    // Each connection path (sqlx's, the read connections') must have refused by itself: had
    // one of them not checked, it would have logged in before the other refused.
    let let_in = authorized(cluster)? - authorized_before;
    ensure!(
        let_in == 0,
        "{let_in} connection(s) logged in to PostgreSQL while the server refused to start: a \
         connection path did not check the certificate ({problem})"
    );
    println!("refused ({status}), no connection let in: {line}");
    Ok(excerpt(line))
}

/// How many connections the cluster has let in so far (`log_connections`).
fn authorized(cluster: &Cluster) -> Result<usize> {
    let log = cluster
        .data()
        .parent()
        .context("the data folder has no parent")?
        .join("postgres.log");
    let text = std::fs::read_to_string(&log)
        .with_context(|| format!("reading the cluster's log {}", log.display()))?;
    Ok(text.matches("connection authorized").count())
}

/// The server's log holds no `secret`.
fn ensure_no_secret(log: &Path, secret: &str) -> Result<()> {
    let text = std::fs::read_to_string(log)?;
    ensure!(
        !text.contains(secret),
        "the server's log shows the database password: {}",
        rel(log)
    );
    Ok(())
}

/// A long message line shortened for the summary.
fn excerpt(line: &str) -> String {
    let at = line.find("PostgreSQL's TLS certificate").unwrap_or(0);
    let line = line[at..].trim_end_matches('"');
    let end = line.char_indices().nth(400).map_or(line.len(), |(i, _)| i);
    line[..end].to_string()
}
