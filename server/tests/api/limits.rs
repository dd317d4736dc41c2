//! Deadlines and database faults: a stuck or missing database is a prompt 503 with
//! `Retry-After`, never a hang or a 500; a connection that stops making progress is closed.

use crate::helpers::{
    Backend, DEPARTMENT, PASSWORD, TestApp, TestDb, USER, error_codes, spawn_app, spawn_with,
};
use linked_customer_server::auth::SEARCH_SCOPE;
use linked_customer_server::limits::HttpLimits;
use linked_customer_server::store::DatabaseLimits;
use sqlx::Connection;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A 503 with `Retry-After` and error code 5003.
async fn assert_unavailable(response: reqwest::Response, context: &str) {
    assert_eq!(response.status(), 503, "{context}");
    assert_eq!(response.headers()["retry-after"], "1", "{context}");
    assert_eq!(error_codes(response).await, vec![5003], "{context}");
}

/// Within 3 s of `started`.
fn assert_prompt(started: Instant) {
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

async fn rollback<C: sqlx::Connection>(holder: &mut C)
where
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    sqlx::raw_sql("ROLLBACK")
        .execute(holder)
        .await
        .expect("unlock");
}

/// The fixture app on a fresh database of `backend`, with these limits.
async fn spawn_limited(backend: Backend, database: DatabaseLimits, http: HttpLimits) -> TestApp {
    let app = spawn_with(TestDb::new(backend).await, database, http).await;
    app.import(crate::helpers::FIXTURE).await.expect("fixture");
    app.add_subscriber(USER, PASSWORD, &[DEPARTMENT], SEARCH_SCOPE)
        .await;
    app
}

#[tokio::test]
async fn a_postgresql_database_out_of_reach_is_a_prompt_503_and_readyz_says_so() {
    let app = spawn_app(Backend::Postgres).await;
    let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
    assert_eq!(response.status(), 200, "the credential is cached now");

    app.db.make_unreachable().await;
    for attempt in 0..3 {
        let started = Instant::now();
        let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
        assert_unavailable(response, &format!("lookup {attempt}")).await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
    app.readyz_becomes(503).await;
}

#[tokio::test]
async fn a_statement_past_the_postgresql_statement_timeout_is_a_503() {
    let limits = DatabaseLimits {
        statement_timeout: Duration::from_millis(300),
        ..DatabaseLimits::default()
    };
    let app = spawn_limited(Backend::Postgres, limits, HttpLimits::default()).await;
    let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
    assert_eq!(response.status(), 200);

    // Another session holds the customer table: the lookup waits for it until PostgreSQL
    // cancels it at the statement timeout.
    let mut holder = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE customer_documents IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .expect("lock");
    let started = Instant::now();
    let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
    assert_unavailable(response, "locked table").await;
    assert_prompt(started);
    rollback(&mut holder).await;
    let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
    assert_eq!(response.status(), 200, "served again once the lock is gone");
}

#[tokio::test]
async fn a_request_past_its_deadline_is_a_503() {
    // The database would wait 30 s; the request deadline is 1 s.
    let database = DatabaseLimits {
        statement_timeout: Duration::from_secs(30),
        lock_timeout: Duration::from_secs(30),
        ..DatabaseLimits::default()
    };
    let http = HttpLimits {
        request_timeout: Duration::from_secs(1),
        ..crate::helpers::test_limits()
    };
    let app = spawn_limited(Backend::Postgres, database, http).await;
    let mut holder = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE subscribers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .expect("lock");
    let started = Instant::now();
    let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
    assert_unavailable(response, "past the deadline").await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("unlock");
}

#[tokio::test]
async fn sqlite_readyz_needs_the_schema_not_only_the_file() {
    let app = spawn_app(Backend::Sqlite).await;
    app.readyz_becomes(200).await;
    app.db
        .execute("ALTER TABLE subscribers RENAME TO subscribers_gone")
        .await;
    app.readyz_becomes(503).await;
    app.db
        .execute("ALTER TABLE subscribers_gone RENAME TO subscribers")
        .await;
    app.readyz_becomes(200).await;
}

/// An import in another process holds SQLite's write lock: lookups go on as before, and a
/// subscriber change fails within the lock timeout, saying why.
#[tokio::test]
async fn a_locked_sqlite_database_serves_lookups_and_refuses_writes_promptly() {
    let limits = DatabaseLimits {
        lock_timeout: Duration::from_millis(300),
        ..DatabaseLimits::default()
    };
    let app = spawn_limited(Backend::Sqlite, limits, HttpLimits::default()).await;
    let mut holder = sqlx::SqliteConnection::connect(&app.db.url)
        .await
        .expect("open");
    sqlx::raw_sql("BEGIN IMMEDIATE; DELETE FROM links")
        .execute(&mut holder)
        .await
        .expect("write lock");

    let started = Instant::now();
    let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
    assert_eq!(response.status(), 200, "the reader sees the last commit");
    let err = app
        .store
        .set_password_hash(USER, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA")
        .await
        .expect_err("the write lock is taken");
    assert!(format!("{err:#}").contains("locked"), "{err:#}");
    assert_prompt(started);
    rollback(&mut holder).await;
    let response = app.get_customer(DEPARTMENT, "ORDER", "1001").await;
    assert_eq!(response.status(), 200);
}

/// Limits of one second each, so that a stalled connection is closed after about 3 s.
fn one_second_limits() -> HttpLimits {
    HttpLimits {
        request_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(1),
        keep_alive: Duration::from_secs(1),
        ..crate::helpers::test_limits()
    }
}

/// A raw connection to `app` with a read timeout of `timeout`.
fn raw_connection(app: &TestApp, timeout: Duration) -> std::net::TcpStream {
    let address = app.address.trim_start_matches("http://");
    let socket = std::net::TcpStream::connect(address).expect("connect");
    socket.set_read_timeout(Some(timeout)).expect("timeout");
    socket
}

/// Sends `GET /healthz` on `socket` and checks the 200.
fn healthz_on(socket: &mut std::net::TcpStream, context: &str) {
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut buffer = [0u8; 4096];
    let read = socket.read(&mut buffer).expect("answer");
    assert!(
        buffer[..read].starts_with(b"HTTP/1.1 200"),
        "{context}: {:?}",
        &buffer[..read]
    );
}

/// A client that gets an answer, then sends one byte of its next request and nothing more, is
/// disconnected once keep-alive, the head deadline and the request deadline have all passed.
#[tokio::test]
async fn a_connection_that_stops_mid_request_is_closed() {
    let app = spawn_limited(
        Backend::Sqlite,
        DatabaseLimits::default(),
        one_second_limits(),
    )
    .await;
    let mut socket = raw_connection(&app, Duration::from_secs(15));
    let closed_after = tokio::task::spawn_blocking(move || {
        healthz_on(&mut socket, "first request");
        socket.write_all(b"G").expect("one byte");
        let started = Instant::now();
        let mut buffer = [0u8; 4096];
        loop {
            match socket.read(&mut buffer) {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("client thread");
    assert!(
        closed_after < Duration::from_secs(8),
        "closed after {closed_after:?}"
    );
}

/// The watchdog leaves a connection alone while it is used: requests every 300 ms for twice the
/// time after which an idle one would be closed all go through on the same socket.
#[tokio::test]
async fn a_busy_connection_is_not_closed() {
    let app = spawn_limited(
        Backend::Sqlite,
        DatabaseLimits::default(),
        one_second_limits(),
    )
    .await;
    let mut socket = raw_connection(&app, Duration::from_secs(5));
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(6) {
            healthz_on(&mut socket, &format!("after {:?}", started.elapsed()));
            std::thread::sleep(Duration::from_millis(300));
        }
    })
    .await
    .expect("client thread");
}

/// A SQLite database read through a memory map answers exactly as one read page by page.
#[tokio::test]
async fn a_memory_mapped_sqlite_database_gives_the_same_answers() {
    let limits = DatabaseLimits {
        sqlite_mmap_size: 64 << 20,
        ..DatabaseLimits::default()
    };
    let mapped = spawn_limited(Backend::Sqlite, limits, HttpLimits::default()).await;
    let plain = spawn_app(Backend::Sqlite).await;
    for (entity, id) in [("ORDER", "1001"), ("THREAD", "42"), ("ORDER", "1002")] {
        let (a, b) = (
            mapped.get_customer(DEPARTMENT, entity, id).await,
            plain.get_customer(DEPARTMENT, entity, id).await,
        );
        assert_eq!(a.status(), b.status(), "{entity} {id}");
        assert_eq!(
            a.bytes().await.unwrap(),
            b.bytes().await.unwrap(),
            "{entity} {id}"
        );
    }
}

/// With the connection limit reached, a further connection waits in the listen backlog without
/// an answer, and is served as soon as one of the others goes.
#[tokio::test]
async fn connections_past_the_limit_wait_until_one_goes() {
    // actix-web counts connections per worker: one per worker, as many workers as cores.
    let limit = std::thread::available_parallelism().map_or(2, usize::from);
    let http = HttpLimits {
        max_connections: limit,
        ..crate::helpers::test_limits()
    };
    let app = spawn_limited(Backend::Sqlite, DatabaseLimits::default(), http).await;
    let mut held: Vec<std::net::TcpStream> = (0..limit)
        .map(|_| raw_connection(&app, Duration::from_secs(5)))
        .collect();
    let held_ok = tokio::task::spawn_blocking(move || {
        for (index, socket) in held.iter_mut().enumerate() {
            healthz_on(socket, &format!("held connection {index}"));
        }
        held
    });
    let mut held = held_ok.await.expect("client thread");

    let mut waiting = raw_connection(&app, Duration::from_millis(800));
    let waited = tokio::task::spawn_blocking(move || {
        waiting
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut buffer = [0u8; 256];
        let early = waiting.read(&mut buffer);
        assert!(
            early.is_err(),
            "answered past the limit of {limit}: {early:?}"
        );
        waiting
    });
    let mut waiting = waited.await.expect("client thread");

    drop(held.pop());
    tokio::task::spawn_blocking(move || {
        waiting
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut buffer = [0u8; 256];
        let read = waiting
            .read(&mut buffer)
            .expect("served once a connection went");
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    })
    .await
    .expect("client thread");
    drop(held);
}
