//! Part of `cargo xtask chaos`: password guessing against a server with its password-check
//! budgets on (`--password-checks-per-username`, `--password-checks-per-address`).
//!
//! 1. One address, one username: 10,000 wrong passwords. At most the username's budget (and
//!    what it refills during the run) runs a password check; the rest are `429`s, answered at
//!    once. Meanwhile other subscribers log in for the first time (uncached) from addresses of
//!    their own, and are let in promptly.
//! 2. Many addresses (loopback addresses: every 127.x.y.z is this machine's), each guessing a
//!    username of its own: at most each pair's budget runs a check; the first logins are
//!    measured the same way.
//!
//! Each client connects from its own source address (the socket is bound before it connects),
//! so the server sees real peers, as it would on a network.

use crate::bench::{self, Server};
use anyhow::{Context, Result, ensure};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The budgets the guessing server runs with: checks per minute, and in a burst.
const PER_USERNAME: u32 = 10;
const PER_ADDRESS: u32 = 60;
const WRONG_PASSWORDS: usize = 10_000;

/// What one load of guesses saw.
struct Guessed {
    checks: u64,
    statuses: Vec<u16>,
    /// Times of the `429` answers.
    throttled: Vec<Duration>,
    /// Times of the other subscribers' first logins, and whether each was let in.
    logins: Vec<(Duration, bool)>,
    took: Duration,
}

/// Runs both loads against a server of its own on `url`; the report's lines.
pub fn run(
    binary: &std::path::Path,
    url: &str,
    work: &std::path::Path,
    release: bool,
) -> Result<Vec<String>> {
    // Subscribers who log in once each, during the loads (`first-N`, password known).
    let logins = if release { 60 } else { 20 };
    let password = format!("pw-{}", crate::util::random_hex(12)?);
    for n in 0..2 * logins {
        bench::add_subscriber(binary, url, &format!("first-{n}"), &password, 1)?;
    }
    let env = vec![
        (
            "LINKED_CUSTOMER_PASSWORD_CHECKS_PER_USERNAME",
            PER_USERNAME.to_string(),
        ),
        (
            "LINKED_CUSTOMER_PASSWORD_CHECKS_PER_ADDRESS",
            PER_ADDRESS.to_string(),
        ),
    ];
    let server = Server::start(binary, url, &env, &work.join("guessing.log"))?;
    let address: SocketAddr = server.address.parse().context("the server's address")?;
    let mut report = Vec::new();

    // 1. One address, one username.
    let attacker = |_: usize| (Ipv4Addr::new(127, 0, 0, 2), "chaos".to_string());
    let first: Vec<String> = (0..logins).map(|n| format!("first-{n}")).collect();
    // Four connections at a time: one guesser, not a crowd (the crowd is the next load), so
    // that the times measure the server's answer rather than sixteen threads sharing two cores.
    let one = guess(
        &server,
        address,
        4,
        WRONG_PASSWORDS,
        1,
        attacker,
        &first,
        &password,
    )?;
    let refilled = refill(PER_USERNAME, one.took);
    let budget = u64::from(PER_USERNAME) + refilled;
    report.push(describe(
        &format!(
            "{WRONG_PASSWORDS} wrong passwords for one username from one address, 4 connections at a time"
        ),
        &one,
        budget,
    ));
    println!("{}", report.last().map_or("", String::as_str));
    ensure!(
        one.checks <= budget,
        "{} password checks ran for one username (budget {PER_USERNAME}, {refilled} refilled)",
        one.checks
    );
    judge(&one, release)?;

    // 2. Many addresses, a username each.
    // ci's debug run keeps this short: every pair's budget is a check that runs.
    let (addresses, guesses) = if release {
        (1000, WRONG_PASSWORDS)
    } else {
        (50, 1000)
    };
    let per_address = guesses / addresses;
    let pair = |i: usize| {
        let octets = (i + 1).to_be_bytes();
        let (b, c) = (octets[octets.len() - 2], octets[octets.len() - 1]);
        (Ipv4Addr::new(127, 1, b, c), format!("guessed-{i}"))
    };
    let second: Vec<String> = (logins..2 * logins).map(|n| format!("first-{n}")).collect();
    let many = guess(
        &server,
        address,
        16,
        per_address,
        addresses,
        pair,
        &second,
        &password,
    )?;
    let per_pair = u64::from(PER_USERNAME.min(PER_ADDRESS)) + refill(PER_USERNAME, many.took);
    let budget = addresses as u64 * per_pair;
    report.push(describe(
        &format!(
            "{} wrong passwords from {addresses} addresses, each for a username of its own",
            per_address * addresses
        ),
        &many,
        budget,
    ));
    println!("{}", report.last().map_or("", String::as_str));
    ensure!(
        many.checks <= budget,
        "{} password checks ran for {addresses} address-username pairs (budget {budget})",
        many.checks
    );
    ensure!(
        many.statuses
            .iter()
            .all(|status| matches!(status, 401 | 429 | 503)),
        "a wrong password was answered otherwise than 401, 429 or 503"
    );
    report.push(format!(
        "- keys counted by the budgets after both loads: {} (bound {} per map)",
        metric(&server, "password_check_budgets")?,
        250_000
    ));
    Ok(report)
}

/// How many checks a budget of `per_minute` refills in `took` (at least one, for the edges).
fn refill(per_minute: u32, took: Duration) -> u64 {
    (took.as_secs_f64() / 60.0 * f64::from(per_minute)).ceil() as u64 + 1
}

/// `per_client` wrong passwords from each of `clients` clients (`who(i)`: its source address
/// and username), over `threads` threads, while `first_logins` log in once each from addresses of
/// their own (127.2.0.x), spread over the load.
#[allow(clippy::too_many_arguments)]
fn guess(
    server: &Server,
    address: SocketAddr,
    threads: usize,
    per_client: usize,
    clients: usize,
    who: impl Fn(usize) -> (Ipv4Addr, String) + Sync,
    first_logins: &[String],
    password: &str,
) -> Result<Guessed> {
    let checks_before = metric(server, "password_checks_total")?;
    let statuses = Mutex::new(Vec::new());
    let throttled = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let total = per_client * clients;
    let started = Instant::now();
    let logins = std::thread::scope(|scope| -> Result<Vec<(Duration, bool)>> {
        let mut guessers = Vec::new();
        for _ in 0..threads {
            guessers.push(scope.spawn(|| -> Result<()> {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok(());
                    }
                    let (source, user) = who(n % clients);
                    let began = Instant::now();
                    let status = get_from(source, address, &basic(&user, "not-the-password"))?;
                    if status == 429 {
                        lock(&throttled).push(began.elapsed());
                    }
                    lock(&statuses).push(status);
                }
            }));
        }
        // The first logins, spread over the load while it lasts.
        let mut logins = Vec::new();
        for (i, user) in first_logins.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(20));
            if next.load(Ordering::Relaxed) >= total {
                break;
            }
            let source = Ipv4Addr::new(127, 2, 0, (i % 250 + 1) as u8);
            let began = Instant::now();
            let status = get_from(source, address, &basic(user, password))?;
            logins.push((began.elapsed(), matches!(status, 200 | 204)));
        }
        for guesser in guessers {
            guesser
                .join()
                .map_err(|_| anyhow::anyhow!("a guessing thread panicked"))??;
        }
        Ok(logins)
    })?;
    let took = started.elapsed();
    let let_in = logins.iter().filter(|(_, ok)| *ok).count() as u64;
    // The first logins' own checks are not the guessers'.
    let checks = metric(server, "password_checks_total")? - checks_before - let_in;
    Ok(Guessed {
        checks,
        statuses: statuses.into_inner().unwrap_or_default(),
        throttled: throttled.into_inner().unwrap_or_default(),
        logins,
        took,
    })
}

fn describe(load: &str, seen: &Guessed, budget: u64) -> String {
    let count = |status: u16| seen.statuses.iter().filter(|s| **s == status).count();
    let mut throttled = seen.throttled.clone();
    let mut logins: Vec<Duration> = seen.logins.iter().map(|(took, _)| *took).collect();
    let let_in = seen.logins.iter().filter(|(_, ok)| *ok).count();
    format!(
        "- {load}, in {:.1} s: {} password checks ran (bound {budget}); {} × 401, {} × 429 (p99 {:.2} ms), {} × 503; meanwhile {let_in} of {} other subscribers' first logins let in, p99 {:.1} ms",
        seen.took.as_secs_f64(),
        seen.checks,
        count(401),
        count(429),
        ms(percentile(&mut throttled, 0.99)),
        count(503),
        seen.logins.len(),
        ms(percentile(&mut logins, 0.99)),
    )
}

/// The release build's promises: a 429 within 5 ms, and first logins let in within 100 ms.
fn judge(seen: &Guessed, release: bool) -> Result<()> {
    ensure!(
        !seen.logins.is_empty(),
        "no first login was made during the load"
    );
    ensure!(
        seen.logins.iter().all(|(_, ok)| *ok),
        "a subscriber's first login was refused while another username was guessed"
    );
    ensure!(
        seen.statuses.iter().filter(|s| **s == 429).count() > 0,
        "no guess was answered 429"
    );
    let mut throttled = seen.throttled.clone();
    let mut logins: Vec<Duration> = seen.logins.iter().map(|(took, _)| *took).collect();
    let (throttled, logins) = (
        percentile(&mut throttled, 0.99),
        percentile(&mut logins, 0.99),
    );
    ensure!(
        !release || throttled < Duration::from_millis(5),
        "429s took {} ms at p99 (bound 5 ms)",
        ms(throttled)
    );
    ensure!(
        !release || logins < Duration::from_millis(100),
        "first logins took {} ms at p99 (bound 100 ms)",
        ms(logins)
    );
    Ok(())
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    if times.is_empty() {
        return Duration::ZERO;
    }
    times.sort_unstable();
    let index = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
    times[index]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// One lookup as `auth` on a new connection from the source address `source`; its status.
fn get_from(source: Ipv4Addr, server: SocketAddr, auth: &str) -> Result<u16> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
    socket.connect_timeout(&server.into(), Duration::from_secs(2))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (status, _) = bench::exchange(
        stream,
        &server.to_string(),
        &bench::lookup_path(0, "ORDER"),
        Some(auth),
    )?;
    Ok(status)
}

use crate::chaos::{basic, lock, metric};
