//! `cargo xtask chaos`: the release server under faults and abuse, on a PostgreSQL cluster of
//! its own (made with the installed `initdb`, on a free loopback port, removed afterwards).
//!
//! 1. The database goes away under load (`pg_ctl stop -m fast`): every answer is a 5xx in the
//!    error envelope within the deadlines (no hang), `/readyz` says 503, the process stays up;
//!    the database comes back and the server serves again by itself, without a restart.
//! 2. The abuse of the reliability issue, measured again: a flood of requests with random
//!    usernames whose connections are reset after 10 ms; a burst of a valid user on a
//!    department it is not granted; the time to refuse a right and a wrong password there.
//!    The server's memory stays within 150 MiB throughout, and a refusal costs the same
//!    whatever the password.
//! 3. Password guessing against the budgets per username and per address (`guessing.rs`).
//!
//! Prints what it saw and writes it into BENCHMARKS.md (section `chaos`); fails on any miss.

use crate::bench::{self, Server};
use crate::pgcluster::Cluster;
use crate::util::{banner, rel};
use anyhow::{Context, Result, ensure};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CUSTOMERS: usize = 2000;
const USER: &str = "chaos";
/// Granted `customer.search` on the first department only.
const PARTIAL: &str = "partial";
const MEMORY_BOUND_MIB: u64 = 150;
/// The server's settings for the run: deadlines short enough to see in seconds.
const REQUEST_TIMEOUT_SECONDS: u64 = 5;
const ACQUIRE_TIMEOUT_MS: u64 = 1000;
/// Password-check budgets the floods cannot reach.
const UNBUDGETED: u32 = 100_000_000;

/// `debug_build`: the debug server the tests built (ci), and BENCHMARKS.md left alone.
pub fn run(debug_build: bool) -> Result<()> {
    let work = crate::util::target_dir().join("xtask/chaos");
    std::fs::create_dir_all(&work)?;
    let binary = if debug_build {
        banner("building the server (debug)");
        crate::server::build()?
    } else {
        banner("building the release server");
        bench::build_release()?
    };
    let data = bench::dataset(&work, CUSTOMERS)?;

    banner("a PostgreSQL cluster of its own");
    let cluster = Cluster::create()?;
    cluster.start()?;
    let url = cluster.url();
    bench::import(
        &binary,
        &bench::time_program()?,
        &url,
        &data,
        CUSTOMERS,
        &work,
    )?;
    let password = format!("pw-{}", crate::util::random_hex(12)?);
    bench::add_subscriber(&binary, &url, USER, &password, bench::DEPARTMENTS)?;
    bench::add_subscriber(&binary, &url, PARTIAL, &password, 1)?;

    let log = work.join("server.log");
    let env = vec![
        (
            "LINKED_CUSTOMER_REQUEST_TIMEOUT_SECONDS",
            REQUEST_TIMEOUT_SECONDS.to_string(),
        ),
        // The floods below measure the password-check queue, which budgets per username and
        // per address would hide; the guessing stage has a server of its own with them on.
        (
            "LINKED_CUSTOMER_PASSWORD_CHECKS_PER_USERNAME",
            UNBUDGETED.to_string(),
        ),
        (
            "LINKED_CUSTOMER_PASSWORD_CHECKS_PER_ADDRESS",
            UNBUDGETED.to_string(),
        ),
        (
            "LINKED_CUSTOMER_DB_ACQUIRE_TIMEOUT_MS",
            ACQUIRE_TIMEOUT_MS.to_string(),
        ),
    ];
    let server = Server::start(&binary, &url, &env, &log)?;
    let auth = basic(USER, &password);
    let mut report = Vec::new();

    banner("the database goes away under load, and comes back");
    report.extend(database_outage(&server, &cluster, &auth)?);

    banner("health checks under load: the database healthy, slow and stopped");
    report.extend(checks_under_load(&server, &cluster, &auth, !debug_build)?);
    wait_until_served(&server, &auth)?;

    banner("abuse: reset flood, ungranted burst, timing of refusals");
    // The memory bound and the timing are properties of the release build; a debug build only
    // reports them.
    let release = !debug_build;
    report.extend(abuse(&server, &password, release)?);

    banner("guessing: password-check budgets per username and per address");
    report.extend(crate::guessing::run(&binary, &url, &work, release)?);

    let peak = server.peak_kib()?;
    let anon = server.anon_peak.load(Ordering::Relaxed);
    report.push(format!(
        "- server peak RSS over the whole run: {} (anonymous {}); bound {MEMORY_BOUND_MIB} MiB",
        bench::mib(peak),
        bench::mib(anon)
    ));
    drop(server);
    println!("\n{}", report.join("\n"));
    ensure!(
        !release || peak <= MEMORY_BOUND_MIB * 1024,
        "the server's peak RSS was {}, over {MEMORY_BOUND_MIB} MiB (log: {})",
        bench::mib(peak),
        rel(&log)
    );
    if debug_build {
        println!("\nchaos: every check held (debug build: BENCHMARKS.md left alone)");
    } else {
        write_markdown(&report)?;
        println!("\nchaos: every check held; wrote BENCHMARKS.md (section chaos)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. The database goes away

/// One answer seen by the load: when it was sent (since the start), how long it took, and its
/// status (`None`: no answer at all, a hang or a broken connection).
struct Seen {
    at: Duration,
    took: Duration,
    status: Option<u16>,
    enveloped: bool,
}

/// A lookup answered as usual: the customer, or no customer.
fn served(seen: &Seen) -> bool {
    matches!(seen.status, Some(200 | 204))
}

fn database_outage(server: &Server, cluster: &Cluster, auth: &str) -> Result<Vec<String>> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let load: Vec<_> = (0..8)
        .map(|thread| {
            let (stop, seen) = (stop.clone(), seen.clone());
            let (address, auth) = (server.address.clone(), auth.to_string());
            std::thread::spawn(move || {
                let mut index = thread * 7919;
                while !stop.load(Ordering::Relaxed) {
                    index = (index + 104_729) % CUSTOMERS;
                    let path = bench::lookup_path(index, "ORDER");
                    let at = started.elapsed();
                    let answer = bench::get(&address, &path, Some(&auth));
                    let took = started.elapsed() - at;
                    let (status, enveloped) = match &answer {
                        Ok((status, body)) => (Some(*status), body.contains("\"errorCode\"")),
                        Err(_) => (None, false),
                    };
                    seen.lock().expect("seen").push(Seen {
                        at,
                        took,
                        status,
                        enveloped,
                    });
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(3));
    let stopped_at = started.elapsed();
    cluster.stop()?;
    println!("database stopped at {:.1} s", stopped_at.as_secs_f64());
    // `/readyz` answers from the server's probes (one a second; not ready after three failed
    // in a row): it must say 503 within a few seconds of the stop.
    let down_since = Instant::now();
    let ready_down = loop {
        let (status, _) = bench::get(&server.address, "/readyz", None)?;
        if status == 503 || down_since.elapsed() > Duration::from_millis(4500) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let unready_after = down_since.elapsed();
    std::thread::sleep(Duration::from_secs(5).saturating_sub(down_since.elapsed()));
    let restarted_at = started.elapsed();
    cluster.start()?;
    println!("database started at {:.1} s", restarted_at.as_secs_f64());
    // Back when a lookup sent after the start gets a 200 or 204.
    let recovered_at = loop {
        let at = started.elapsed();
        let (status, _) = bench::get(&server.address, &bench::lookup_path(1, "ORDER"), Some(auth))?;
        if status == 200 {
            break at;
        }
        ensure!(
            at - restarted_at < Duration::from_secs(15),
            "the server did not recover within 15 s of the database's start (status {status})"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
    }
    let (ready_up, _) = bench::get(&server.address, "/readyz", None)?;

    let seen = seen.lock().expect("seen");
    let before: Vec<&Seen> = seen.iter().filter(|s| s.at < stopped_at).collect();
    let during: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at >= stopped_at && s.at < restarted_at)
        .collect();
    let after: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at >= recovered_at + Duration::from_millis(500))
        .collect();
    let no_answer = seen.iter().filter(|s| s.status.is_none()).count();
    let slowest_down = during.iter().map(|s| s.took).max().unwrap_or_default();
    let mut statuses_down: Vec<(u16, usize)> = Vec::new();
    for s in &during {
        let status = s.status.unwrap_or(0);
        match statuses_down.iter_mut().find(|(code, _)| *code == status) {
            Some((_, count)) => *count += 1,
            None => statuses_down.push((status, 1)),
        }
    }
    statuses_down.sort_unstable();
    let report = vec![
        format!(
            "- before the stop: {} answers, {} of them 200/204",
            before.len(),
            before.iter().filter(|s| served(s)).count()
        ),
        format!(
            "- database down ({:.1} s): {} answers by status {:?} (0: none), slowest {} ms; `/readyz` {ready_down} ({} ms after the stop)",
            (restarted_at - stopped_at).as_secs_f64(),
            during.len(),
            statuses_down,
            slowest_down.as_millis(),
            unready_after.as_millis()
        ),
        format!(
            "- database started again: served again after {} ms, with no restart of the server; afterwards {} answers, {} of them 200/204; `/readyz` {ready_up}",
            (recovered_at - restarted_at).as_millis(),
            after.len(),
            after.iter().filter(|s| served(s)).count()
        ),
    ];
    println!("{}", report.join("\n"));
    ensure!(
        !before.is_empty() && before.iter().all(|s| served(s)),
        "before the stop, not every lookup was answered 200/204"
    );
    ensure!(no_answer == 0, "{no_answer} requests got no answer at all");
    ensure!(
        during
            .iter()
            .all(|s| served(s) || (matches!(s.status, Some(500 | 503)) && s.enveloped)),
        "with the database down, an answer was neither 200/204 nor a 500/503 envelope: {statuses_down:?}"
    );
    ensure!(
        during.iter().any(|s| s.status == Some(503)),
        "with the database down, no lookup was answered 503"
    );
    ensure!(
        slowest_down <= Duration::from_secs(REQUEST_TIMEOUT_SECONDS + 1),
        "with the database down, an answer took {} ms, past the request deadline",
        slowest_down.as_millis()
    );
    ensure!(
        ready_down == 503,
        "/readyz said {ready_down} with the database down"
    );
    ensure!(
        !after.is_empty() && after.iter().all(|s| served(s)),
        "after the recovery, not every lookup was answered 200/204"
    );
    ensure!(
        ready_up == 200,
        "/readyz said {ready_up} after the recovery"
    );
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// 2. Abuse

fn abuse(server: &Server, password: &str, release: bool) -> Result<Vec<String>> {
    let address: SocketAddr = server.address.parse().context("the server's address")?;
    let ungranted = bench::lookup_path(1, "ORDER");
    let mut report = Vec::new();

    // A flood of unknown usernames, each connection reset 10 ms after its request.
    let checks_before = password_checks(server)?;
    let flood_for = Duration::from_secs(8);
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flood: Vec<_> = (0..32)
        .map(|thread| {
            let sent = sent.clone();
            let started = Instant::now();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while started.elapsed() < flood_for {
                    n += 1;
                    let user = format!("flood-{thread}-{n}");
                    if reset_after_request(address, &user, "guess").is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for thread in flood {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a flood thread panicked"))?;
    }
    let after_flood = server.peak_kib()?;
    let checks_flood = password_checks(server)? - checks_before;
    // Right after: how soon a wrong password is refused again (checks still queued for requests
    // that have not yet gone are answered 503 meanwhile, for at most the 2 s a check may wait),
    // and then how long a refusal takes.
    let wrong = || {
        bench::get(
            &server.address,
            &bench::lookup_path(0, "ORDER"),
            Some(&basic(USER, "wrong")),
        )
    };
    let ended = Instant::now();
    let drained = loop {
        let (status, _) = wrong()?;
        if status == 401 {
            break ended.elapsed();
        }
        ensure!(
            status == 503,
            "a wrong password after the flood got {status}, not 401 or 503"
        );
        ensure!(
            ended.elapsed() < Duration::from_secs(5),
            "a wrong password was still answered 503 5 s after the flood"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let wrong_after = median_time(5, wrong)?;
    // Every flood request is gone: the checks they shared must have gone with them.
    let shared_left = metric(server, "password_checks_shared")?;
    report.push(format!(
        "- reset flood: {} requests with random usernames in {} s over 32 connections, each reset 10 ms after sending; {checks_flood} password checks ran (the others were skipped: their requests had gone); shared password checks left after it: {shared_left}; server peak RSS so far {}; a wrong password refused again {} ms after the flood, then in {:.1} ms (median of 5)",
        sent.load(Ordering::Relaxed),
        flood_for.as_secs(),
        bench::mib(after_flood),
        drained.as_millis(),
        wrong_after.0.as_secs_f64() * 1000.0
    ));
    ensure!(
        shared_left == 0,
        "{shared_left} shared password checks were left behind by the flood's requests"
    );
    ensure!(
        wrong_after.1 == 401,
        "a wrong password after the flood got {}",
        wrong_after.1
    );
    ensure!(
        !release
            || (wrong_after.0 < Duration::from_millis(500)
                && drained < Duration::from_millis(2500)),
        "after the flood, a wrong password was refused again after {} ms and then took {} ms",
        drained.as_millis(),
        wrong_after.0.as_millis()
    );

    // 64 connections of a valid user on a department it is not granted, for 5 s.
    let burst_for = Duration::from_secs(5);
    let statuses = Arc::new(Mutex::new(Vec::<u16>::new()));
    let burst: Vec<_> = (0..64)
        .map(|_| {
            let statuses = statuses.clone();
            let (address, path) = (server.address.clone(), ungranted.clone());
            let auth = basic(PARTIAL, password);
            let started = Instant::now();
            std::thread::spawn(move || {
                while started.elapsed() < burst_for {
                    let status = bench::get(&address, &path, Some(&auth)).map_or(0, |(s, _)| s);
                    statuses.lock().expect("statuses").push(status);
                }
            })
        })
        .collect();
    for thread in burst {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a burst thread panicked"))?;
    }
    let statuses = statuses.lock().expect("statuses");
    let refused = statuses.iter().filter(|&&s| s == 401).count();
    let busy = statuses.iter().filter(|&&s| s == 503).count();
    let other = statuses.len() - refused - busy;
    let rss_after_burst = server.rss_kib()?;
    report.push(format!(
        "- ungranted burst: 64 connections of `{PARTIAL}` on a department it is not granted for {} s: {} answers, {refused} `401`, {busy} `503` (checks saturated), {other} other; RSS afterwards {}",
        burst_for.as_secs(),
        statuses.len(),
        bench::mib(rss_after_burst)
    ));
    ensure!(
        other == 0,
        "the ungranted burst got {other} answers other than 401/503"
    );
    drop(statuses);

    // The time to refuse a right and a wrong password on the ungranted department, alternating.
    std::thread::sleep(Duration::from_millis(500));
    let checks_before = password_checks(server)?;
    let mut right = Vec::new();
    let mut wrong = Vec::new();
    for _ in 0..25 {
        for (times, secret) in [(&mut right, password), (&mut wrong, "not-the-password")] {
            let started = Instant::now();
            let (status, _) =
                bench::get(&server.address, &ungranted, Some(&basic(PARTIAL, secret)))?;
            times.push(started.elapsed());
            ensure!(
                status == 401,
                "a refusal on the ungranted department got {status}"
            );
        }
    }
    let checks = password_checks(server)? - checks_before;
    let (right, wrong) = (median(&mut right), median(&mut wrong));
    let gap = (right.as_secs_f64() - wrong.as_secs_f64()).abs() / wrong.as_secs_f64();
    report.push(format!(
        "- timing on the ungranted department: right password refused in {:.1} ms, wrong one in {:.1} ms (medians of 25 each; gap {:.0} %); {checks} password checks for the 50 refusals",
        right.as_secs_f64() * 1000.0,
        wrong.as_secs_f64() * 1000.0,
        gap * 100.0
    ));
    ensure!(
        !release || gap < 0.25,
        "a right and a wrong password are refused in visibly different times"
    );
    ensure!(
        checks == 50,
        "50 refusals cost {checks} password checks, not 50"
    );
    Ok(report)
}

/// Sends one request as `user` and resets the connection (RST, not FIN) 10 ms later.
fn reset_after_request(address: SocketAddr, user: &str, password: &str) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: chaos\r\nAuthorization: {}\r\n\r\n",
        bench::lookup_path(0, "ORDER"),
        basic(user, password)
    );
    stream.write_all(request.as_bytes())?;
    std::thread::sleep(Duration::from_millis(10));
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

/// The median time of `n` calls of `request`, and the last status.
fn median_time(n: usize, request: impl Fn() -> Result<(u16, String)>) -> Result<(Duration, u16)> {
    let mut times = Vec::new();
    let mut status = 0;
    for _ in 0..n {
        let started = Instant::now();
        status = request()?.0;
        times.push(started.elapsed());
    }
    Ok((median(&mut times), status))
}

fn password_checks(server: &Server) -> Result<u64> {
    metric(server, "password_checks_total")
}

/// The value of the unlabelled metric `name` in the server's `/metrics`.
pub(crate) fn metric(server: &Server, name: &str) -> Result<u64> {
    let (status, text) = bench::get(&server.address, "/metrics", None)?;
    ensure!(status == 200, "/metrics answered {status}");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .with_context(|| format!("no {name} in /metrics"))
}

pub(crate) fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", bench::base64(&format!("{user}:{password}")))
}

fn write_markdown(report: &[String]) -> Result<()> {
    let path = crate::util::root().join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).context("reading BENCHMARKS.md")?;
    let body = format!(
        "## Faults and abuse (`cargo xtask chaos`)\n\n{}, {}; the release server on a PostgreSQL \
         cluster of its own with {CUSTOMERS} customers, request deadline {REQUEST_TIMEOUT_SECONDS} s, \
         connection wait {ACQUIRE_TIMEOUT_MS} ms.\n\n{}\n",
        bench::today()?,
        bench::machine()?,
        report.join("\n")
    );
    let text = bench::replace_section(&text, "chaos", &body);
    std::fs::write(&path, text).context("writing BENCHMARKS.md")
}

// ---------------------------------------------------------------------------------------------
// Health checks under load

/// `/readyz` against `/healthz` while the server is saturated by lookups, with the database
/// healthy, slow (a session holds a lock on the subscribers, so lookups and probes wait) and
/// stopped: `/readyz` answers from kept state, so its p99 must be no worse than `/healthz`'s
/// in the same load (held on the release build, with a little room for noise).
fn checks_under_load(
    server: &Server,
    cluster: &Cluster,
    auth: &str,
    release: bool,
) -> Result<Vec<String>> {
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    const PHASES: [&str; 3] = ["healthy", "slow (subscribers locked)", "stopped"];
    let load: Vec<_> = (0..8)
        .map(|thread| {
            let stop = stop.clone();
            let (address, auth) = (server.address.clone(), auth.to_string());
            std::thread::spawn(move || {
                let mut index = thread * 7919;
                while !stop.load(Ordering::Relaxed) {
                    index = (index + 104_729) % CUSTOMERS;
                    let _ = bench::get(&address, &bench::lookup_path(index, "ORDER"), Some(&auth));
                }
            })
        })
        .collect();
    // (phase, path, time) of each check, `/readyz` and `/healthz` in turn.
    let checks = Arc::new(Mutex::new(Vec::<(usize, &'static str, Duration)>::new()));
    let prober = {
        let (stop, phase, checks) = (stop.clone(), phase.clone(), checks.clone());
        let address = server.address.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for path in ["/readyz", "/healthz"] {
                    let began = Instant::now();
                    if bench::get(&address, path, None).is_ok() {
                        let now = phase.load(Ordering::Relaxed);
                        lock(&checks).push((now, path, began.elapsed()));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(4));
    // Slow: a session holds an exclusive lock on the subscribers; every lookup and every probe
    // of the primary waits for it (lookups until the lock timeout, probes until their deadline).
    let mut locker = std::process::Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", &cluster.url()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("psql, to hold a lock")?;
    let mut stdin = locker.stdin.take().context("psql's stdin")?;
    stdin.write_all(b"BEGIN; LOCK TABLE subscribers IN ACCESS EXCLUSIVE MODE;\n")?;
    stdin.flush()?;
    phase.store(1, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(4));
    stdin.write_all(b"ROLLBACK;\n")?;
    drop(stdin);
    let _ = locker.wait();
    phase.store(2, Ordering::Relaxed);
    cluster.stop()?;
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for thread in load.into_iter().chain([prober]) {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
    }
    cluster.start()?;

    let checks = lock(&checks);
    let mut report = Vec::new();
    let mut misses = Vec::new();
    for (index, name) in PHASES.iter().enumerate() {
        let p99 = |path: &str| {
            let mut times: Vec<Duration> = checks
                .iter()
                .filter(|(at, p, _)| *at == index && *p == path)
                .map(|(_, _, took)| *took)
                .collect();
            times.sort_unstable();
            let at = ((times.len() as f64 * 0.99).ceil() as usize).clamp(1, times.len().max(1)) - 1;
            (times.get(at).copied().unwrap_or_default(), times.len())
        };
        let ((ready, n), (health, _)) = (p99("/readyz"), p99("/healthz"));
        report.push(format!(
            "- checks under a lookup load of 8 connections, database {name}: `/readyz` p99 {:.2} ms, `/healthz` p99 {:.2} ms ({n} of each)",
            ready.as_secs_f64() * 1000.0,
            health.as_secs_f64() * 1000.0
        ));
        if n == 0 || ready > health + health / 4 + Duration::from_millis(1) {
            misses.push(*name);
        }
    }
    println!("{}", report.join("\n"));
    ensure!(
        !release || misses.is_empty(),
        "`/readyz` was slower than `/healthz` at p99 with the database {misses:?}"
    );
    Ok(report)
}

/// Waits (15 s at most) for a lookup to be answered 200 again after the database is back.
fn wait_until_served(server: &Server, auth: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let (status, _) = bench::get(&server.address, &bench::lookup_path(1, "ORDER"), Some(auth))?;
        if status == 200 {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(15),
            "the server did not serve again within 15 s of the database's start ({status})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
