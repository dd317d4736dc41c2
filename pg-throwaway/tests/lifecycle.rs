//! Against the PostgreSQL server of `TEST_POSTGRES_URL` (`cargo xtask test` provides one).

use pg_throwaway::{Throwaway, execute, query_i64};

fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .expect("TEST_POSTGRES_URL is not set: run the tests with `cargo xtask test`")
}

fn exists(admin: &str, name: &str) -> bool {
    query_i64(
        admin,
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    )
    .unwrap()
        == 1
}

#[test]
fn a_throwaway_database_is_usable_and_gone_after_its_handle() {
    let admin = admin_url();
    let database = Throwaway::create(&admin, "lc_selftest").unwrap();
    let name = database.name().to_string();
    assert!(name.starts_with("lc_selftest_"), "{name}");
    assert!(exists(&admin, &name));

    execute(
        database.url(),
        "CREATE TABLE t (n bigint); INSERT INTO t VALUES (1), (2), (3)",
    )
    .unwrap();
    assert_eq!(
        query_i64(database.url(), "SELECT sum(n)::bigint FROM t").unwrap(),
        6
    );
    let elsewhere = query_i64(&admin, "SELECT count(*) FROM t").unwrap_err();
    assert!(
        format!("{elsewhere:#}").contains("does not exist"),
        "the table is in the throwaway database, not the admin one: {elsewhere:#}"
    );

    drop(database);
    assert!(!exists(&admin, &name), "{name} is dropped with its handle");
}

#[test]
fn an_unreachable_database_refuses_connections_until_reachable_and_is_still_dropped() {
    let admin = admin_url();
    let database = Throwaway::create(&admin, "lc_selftest").unwrap();
    let name = database.name().to_string();
    assert_eq!(query_i64(database.url(), "SELECT 1::bigint").unwrap(), 1);
    database.make_unreachable().unwrap();
    let refused = query_i64(database.url(), "SELECT 1::bigint").unwrap_err();
    assert!(
        format!("{refused:#}").contains("not currently accepting connections"),
        "{refused:#}"
    );
    database.make_reachable().unwrap();
    assert_eq!(query_i64(database.url(), "SELECT 1::bigint").unwrap(), 1);
    database.make_unreachable().unwrap();
    drop(database);
    assert!(!exists(&admin, &name));
}

#[test]
fn a_bad_admin_url_is_an_error_not_a_panic() {
    let refused = Throwaway::create(
        "postgres://nobody:wrong@127.0.0.1:1/postgres",
        "lc_selftest",
    );
    assert!(refused.is_err());
}
