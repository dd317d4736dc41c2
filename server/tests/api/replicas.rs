//! Read replicas (`--database-read-url`): lookups read the replicas, writes go to the primary,
//! a replica out of reach is left for the primary (or a 503 when that is forbidden) and used
//! again when it is back. The "replica" here is a second PostgreSQL database with the same
//! schema that the test fills itself, so that which database answered shows in the answer;
//! `cargo xtask cluster --test` does the same with a real streaming replica.

use crate::cli::{Served, get};
use crate::helpers::{
    Backend, DEPARTMENT, FIXTURE, PASSWORD, TestApp, TestDb, USER, error_codes, spawn_app,
};
use linked_customer_server::auth::SEARCH_SCOPE;
use linked_customer_server::limits::HttpLimits;
use linked_customer_server::store::{self, DatabaseLimits, ReadReplicas, Store};
use linked_customer_server::test_support;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A customer only the replica has, on ORDER 777 of `dept-north`.
const ONLY_ON_THE_REPLICA: &str = r#"{"department": "dept-north", "customer": {"id": 777, "customerUuid": "replica-only", "emails": [], "phoneNumbers": [], "addresses": []}, "vehicles": [], "links": [{"entity": "ORDER", "entityId": 777}]}"#;
/// A customer only the primary has, on ORDER 888 of `dept-north`.
const ONLY_ON_THE_PRIMARY: &str = r#"{"department": "dept-north", "customer": {"id": 888, "customerUuid": "primary-only", "emails": [], "phoneNumbers": [], "addresses": []}, "vehicles": [], "links": [{"entity": "ORDER", "entityId": 888}]}"#;

/// A database playing the replica: migrated, holding the fixture, `reader`, and ORDER 777.
async fn replica() -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::new(Backend::Postgres).await;
    let store = store::open(&db.url)
        .await
        .expect("the replica's schema")
        .store;
    let data = format!("{FIXTURE}{ONLY_ON_THE_REPLICA}\n");
    test_support::import(store.as_ref(), &data)
        .await
        .expect("replica data");
    add_reader(store.as_ref()).await;
    (db, store)
}

/// `reader` with one password hash on every database of a test, as streaming replication
/// would have it: a request's password check (on one database) and its document read (on
/// the next in turn) meet the same hash.
async fn add_reader(store: &dyn Store) {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash =
        HASH.get_or_init(|| linked_customer_server::auth::hash_password(PASSWORD).expect("hash"));
    let department =
        linked_customer_server::domain::DepartmentToken::parse(DEPARTMENT).expect("token");
    store
        .add_subscriber(USER, hash, &[department], &[SEARCH_SCOPE.to_string()])
        .await
        .expect("add reader");
}

/// The server on a primary holding the fixture, `reader` and ORDER 888, reading `replica`.
async fn spawn_reading(replica: &TestDb, fall_back_to_primary: bool) -> TestApp {
    let replicas = ReadReplicas {
        urls: vec![replica.url.clone()],
        fall_back_to_primary,
    };
    let test_support::Spawned { address, store, db } = test_support::spawn_replicated(
        TestDb::new(Backend::Postgres).await,
        &replicas,
        DatabaseLimits::default(),
        HttpLimits::default(),
    )
    .await;
    let app = TestApp {
        address,
        store,
        client: reqwest::Client::new(),
        db,
    };
    app.import(&format!("{FIXTURE}{ONLY_ON_THE_PRIMARY}\n"))
        .await
        .expect("primary data");
    add_reader(app.store.as_ref()).await;
    app
}

async fn status_of(app: &TestApp, order: &str) -> u16 {
    app.get_customer(DEPARTMENT, "ORDER", order)
        .await
        .status()
        .as_u16()
}

/// The value of the metric line that starts with `series` (name and labels).
async fn metric(app: &TestApp, series: &str) -> f64 {
    metric_in(&app.get_text("/metrics").await, series)
}

fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// `/readyz` answers `status` with `first_line` and a line per database of `databases`
/// (name, reachable), and `database_up` says the same of each.
async fn assert_states(app: &TestApp, status: u16, first_line: &str, databases: &[(&str, bool)]) {
    let mut expected = format!("{first_line}\n");
    for (name, up) in databases {
        expected.push_str(&format!(
            "{name} {}\n",
            if *up { "up" } else { "unreachable" }
        ));
    }
    // `/readyz` answers from the server's last probe (one a second): wait for it to say so.
    let started = Instant::now();
    loop {
        let response = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        let seen = (
            response.status().as_u16(),
            response.text().await.expect("body"),
        );
        if seen == (status, expected.clone()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/readyz said {seen:?} for 10 s, not {:?}",
            (status, expected)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = app.get_text("/metrics").await;
    for (name, up) in databases {
        let series = format!("database_up{{database=\"{name}\"}}");
        assert_eq!(
            metric_in(&metrics, &series),
            f64::from(u8::from(*up)),
            "{series}"
        );
    }
}

/// Polls until `order` answers `status`, for at most `within`; meanwhile only `503` may come
/// (`tolerate_503`) or no 5xx at all.
async fn wait_for(
    app: &TestApp,
    order: &str,
    status: u16,
    within: Duration,
    tolerate_503: bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let now = status_of(app, order).await;
        assert!(
            now < 500 || (tolerate_503 && now == 503),
            "ORDER {order}: {now} while waiting"
        );
        if now == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "ORDER {order} did not answer {status} within {within:?} (last {now})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn lookups_read_the_replica_and_writes_go_to_the_primary() {
    let (replica, _replica_store) = replica().await;
    let app = spawn_reading(&replica, true).await;

    assert_eq!(
        status_of(&app, "777").await,
        200,
        "the replica's customer is served"
    );
    assert_eq!(
        status_of(&app, "888").await,
        204,
        "the primary's is not read"
    );
    assert_eq!(status_of(&app, "1001").await, 200);

    // An import through the server's store (as `import` does) lands on the primary only.
    app.import(r#"{"department": "dept-north", "customer": {"id": 999, "customerUuid": "new", "emails": [], "phoneNumbers": [], "addresses": []}, "vehicles": [], "links": [{"entity": "ORDER", "entityId": 999}]}
"#)
        .await
        .expect("import");
    let on = |url: &str| {
        pg_throwaway::query_i64(
            url,
            "SELECT count(*) FROM links WHERE entity = 'ORDER' AND entity_id = 999",
        )
        .expect("count")
    };
    assert_eq!((on(&app.db.url), on(&replica.url)), (1, 0));
    assert_eq!(
        status_of(&app, "999").await,
        204,
        "not replicated here, so not served"
    );

    assert_eq!(
        metric(&app, r#"database_lookups_total{database="primary"}"#).await,
        0.0
    );
    // Four requests, and the first one's document read after its password check.
    assert_eq!(
        metric(&app, r#"database_lookups_total{database="replica1"}"#).await,
        5.0
    );
    assert_eq!(
        metric(&app, r#"replication_lag_seconds{database="replica1"}"#).await,
        0.0,
        "a database that is not a standby has nothing to replay"
    );
    assert_states(&app, 200, "ready", &[("primary", true), ("replica1", true)]).await;
}

#[tokio::test]
async fn a_replica_out_of_reach_is_left_for_the_primary_and_used_again_when_back() {
    let (replica, _replica_store) = replica().await;
    let app = spawn_reading(&replica, true).await;
    assert_eq!(status_of(&app, "777").await, 200);

    replica.make_unreachable().await;
    let started = Instant::now();
    // The first lookup after the failure meets the broken connection and is sent on to the
    // primary: no lookup fails, and each is prompt.
    for _ in 0..5 {
        assert_eq!(status_of(&app, "888").await, 200, "read from the primary");
        assert_eq!(
            status_of(&app, "777").await,
            204,
            "the primary has no ORDER 777"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The primary serves.
    assert_states(
        &app,
        200,
        "ready",
        &[("primary", true), ("replica1", false)],
    )
    .await;
    assert!(metric(&app, r#"database_lookups_total{database="primary"}"#).await >= 10.0);

    replica.make_reachable().await;
    let back = wait_for(&app, "777", 200, Duration::from_secs(5), false).await;
    assert_eq!(
        status_of(&app, "888").await,
        204,
        "reading the replica again"
    );
    assert_states(&app, 200, "ready", &[("primary", true), ("replica1", true)]).await;
    eprintln!("the replica was back in the rotation after {back:?}");
}

#[tokio::test]
async fn a_primary_out_of_reach_leaves_lookups_to_the_replica_and_says_so() {
    let (replica, _replica_store) = replica().await;
    let app = spawn_reading(&replica, true).await;
    assert_states(&app, 200, "ready", &[("primary", true), ("replica1", true)]).await;

    app.db.make_unreachable().await;
    // The replica serves.
    assert_states(
        &app,
        200,
        "ready",
        &[("primary", false), ("replica1", true)],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(status_of(&app, "777").await, 200, "read from the replica");
    }

    app.db.make_reachable().await;
    assert_states(&app, 200, "ready", &[("primary", true), ("replica1", true)]).await;
}

#[tokio::test]
async fn without_fall_back_a_replica_out_of_reach_is_a_prompt_503() {
    let (replica, _replica_store) = replica().await;
    let app = spawn_reading(&replica, false).await;
    assert_eq!(status_of(&app, "777").await, 200);

    replica.make_unreachable().await;
    for attempt in 0..3 {
        let started = Instant::now();
        let response = app.get_customer(DEPARTMENT, "ORDER", "888").await;
        assert_eq!(response.status(), 503, "attempt {attempt}");
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(error_codes(response).await, vec![5003]);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    let states = [("primary", true), ("replica1", false)];
    assert_states(&app, 503, "database unreachable", &states).await;
    replica.make_reachable().await;
    wait_for(&app, "777", 200, Duration::from_secs(5), true).await;
}

#[tokio::test]
async fn a_revoked_subscriber_stops_working_once_the_replica_has_it() {
    let (replica, replica_store) = replica().await;
    let app = spawn_reading(&replica, true).await;
    assert_eq!(
        status_of(&app, "1001").await,
        200,
        "and the credential is cached"
    );
    // Removed on the primary: the replica has not replayed it yet, so it still serves.
    assert!(app.store.remove_subscriber(USER).await.expect("remove"));
    assert_eq!(status_of(&app, "1001").await, 200);
    // Replayed: refused at once, though the credential is cached.
    assert!(replica_store.remove_subscriber(USER).await.expect("remove"));
    assert_eq!(status_of(&app, "1001").await, 401);
}

#[tokio::test]
async fn read_urls_are_given_as_a_list_and_only_for_postgresql() {
    let (first, _a) = replica().await;
    let (second, _b) = replica().await;
    let primary = spawn_app(Backend::Postgres).await;
    let served = Served::start_with(
        &primary.db.url,
        &[],
        &[(
            "DATABASE_READ_URL",
            &format!("{},{}", first.url, second.url),
        )],
        None,
    );
    assert!(
        served.banner.contains("read replica1 postgres://"),
        "{}",
        served.banner
    );
    assert!(
        served.banner.contains("read replica2 postgres://"),
        "{}",
        served.banner
    );
    for line in served
        .banner
        .lines()
        .filter(|line| line.starts_with("read replica"))
    {
        assert!(line.contains(":***@"), "the password is not shown: {line}");
    }
    let ready = reqwest::get(format!("{}/readyz", served.base))
        .await
        .expect("readyz");
    assert_eq!(
        ready.text().await.expect("body"),
        "ready\nprimary up\nreplica1 up\nreplica2 up\n"
    );
    // Both replicas take lookups in turn.
    for _ in 0..4 {
        let response = get(
            &served.base,
            "/customer/v2/department/dept-north/entity/ORDER/777/customer",
            USER,
            PASSWORD,
        )
        .await;
        assert_eq!(response.status(), 200);
    }
    let metrics = reqwest::get(format!("{}/metrics", served.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    // Both replicas take lookups in turn: one per request, one more for the first request's
    // document (read after its password check) and one for the start-up's check for the demo
    // subscriber.
    let count = |replica: &str| {
        metric_in(
            &metrics,
            &format!("database_lookups_total{{database=\"{replica}\"}}"),
        )
    };
    let (one, two) = (count("replica1"), count("replica2"));
    assert!(one >= 2.0 && two >= 2.0 && one + two == 6.0, "{metrics}");
    assert_eq!(count("primary"), 0.0, "{metrics}");
    drop(served);

    let sqlite = tempfile::tempdir().expect("dir");
    let sqlite_url = format!("sqlite://{}", sqlite.path().join("db.sqlite").display());
    for (database_url, read_url, says) in [
        (
            sqlite_url.as_str(),
            first.url.as_str(),
            "read replicas are for PostgreSQL",
        ),
        (
            primary.db.url.as_str(),
            "sqlite://elsewhere.db",
            "a read replica URL must start with postgres://",
        ),
    ] {
        let output = crate::cli::server(
            &[
                "serve",
                "--database-url",
                database_url,
                "--database-read-url",
                read_url,
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(says), "{stderr}");
    }
}
