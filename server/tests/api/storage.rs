//! Storage: one document per customer, carried over from schema 0001, written all or nothing.

use crate::helpers::{
    DEPARTMENT, FIXTURE, PASSWORD, TestApp, TestDb, USER, expected_answer, spawn_app, spawn_on,
};
use linked_customer_server::auth::SEARCH_SCOPE;
use serde_json::{Value, json};
use std::str::FromStr;

/// A line of an import file for customer `uuid` of `dept-north`.
fn line(uuid: &str, id: i64, vehicles: Value, links: &[(&str, i64)]) -> String {
    let links: Vec<Value> = links
        .iter()
        .map(|(entity, id)| json!({"entity": entity, "entityId": id}))
        .collect();
    json!({
        "department": DEPARTMENT,
        "customer": {"id": id, "customerUuid": uuid, "emails": [], "phoneNumbers": [], "addresses": []},
        "vehicles": vehicles,
        "links": links,
    })
    .to_string()
}

async fn get(app: &TestApp, entity: &str, id: &str) -> (u16, String) {
    let response = app.get_customer(DEPARTMENT, entity, id).await;
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Applies the migrations up to schema 0001 only, as a database of that release had them.
async fn migrate_to_0001(db: &TestDb) {
    use crate::helpers::Backend;
    match db.backend() {
        Backend::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
                .expect("URL")
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.expect("open");
            sqlx::migrate!("./migrations/sqlite")
                .run_to(1, &pool)
                .await
                .expect("migrate to 0001");
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
            sqlx::migrate!("./migrations/postgres")
                .run_to(1, &pool)
                .await
                .expect("migrate to 0001");
            pool.close().await;
        }
    }
}

on_both_databases! {
    async fn a_database_of_schema_0001_is_carried_over_with_the_same_answers(backend: Backend) {
        let db = TestDb::new(backend).await;
        migrate_to_0001(&db).await;
        db.execute_script(include_str!("../fixtures/schema-0001.sql")).await;
        let migrated = spawn_on(db).await;
        migrated.add_subscriber(USER, PASSWORD, &[DEPARTMENT], SEARCH_SCOPE).await;
        let fresh = spawn_app(backend).await;

        for (entity, id, index) in [
            ("ORDER", "1001", 0),
            ("PAYMENT", "9223372036854775807", 0),
            ("THREAD", "42", 1),
        ] {
            let (status, text) = get(&migrated, entity, id).await;
            assert_eq!(status, 200, "{entity} {id}: {text}");
            let body: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(body, expected_answer(index), "{entity} {id}");
            assert_eq!(
                text,
                get(&fresh, entity, id).await.1,
                "the carried-over document is byte for byte what an import stores"
            );
        }
        assert_eq!(get(&migrated, "ORDER", "1002").await.0, 204);

        // The carried-over database takes imports: two customers are updated in place, one new.
        let summary = migrated.import(FIXTURE).await.expect("import");
        assert_eq!(
            (summary.customers_created, summary.customers_updated),
            (1, 2)
        );
        assert_eq!(get(&migrated, "ORDER", "1001").await, get(&fresh, "ORDER", "1001").await);
    }

    async fn a_failure_while_writing_rolls_the_whole_import_back(backend: Backend) {
        let app = spawn_app(backend).await;
        // The database itself refuses the link to ORDER 666, after everything before it in the
        // file has been written (customers first, then links, on PostgreSQL).
        app.db
            .execute_script(match backend {
                Backend::Sqlite => {
                    "CREATE TRIGGER refuse BEFORE INSERT ON links WHEN NEW.entity_id = 666
                     BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END;"
                }
                Backend::Postgres => {
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                         IF NEW.entity_id = 666 THEN
                             RAISE EXCEPTION 'refused by the test trigger';
                         END IF;
                         RETURN NEW;
                     END $$;
                     CREATE TRIGGER refuse BEFORE INSERT ON links
                     FOR EACH ROW EXECUTE FUNCTION refuse();"
                }
            })
            .await;
        let before = get(&app, "ORDER", "1001").await;
        assert_eq!(before.0, 200);
        let changed = FIXTURE
            .lines()
            .next()
            .expect("line")
            .replacen(r#""firstName": "Maria""#, r#""firstName": "Changed""#, 1);
        let file = [
            line("new-1", 1, json!([]), &[("ORDER", 5001)]),
            changed,
            line("refused", 3, json!([]), &[("ORDER", 5003), ("ORDER", 666)]),
            line("new-4", 4, json!([]), &[("ORDER", 5004)]),
        ]
        .join("\n");

        let err = app.import(&file).await.expect_err("the database refused a link");
        assert!(format!("{err:#}").contains("refused by the test trigger"), "{err:#}");
        for id in ["5001", "5003", "5004"] {
            assert_eq!(get(&app, "ORDER", id).await.0, 204, "ORDER {id} was rolled back");
        }
        assert_eq!(get(&app, "ORDER", "1001").await, before, "the update was rolled back");

        // Nothing is left locked or staged: the next import goes through.
        let summary = app
            .import(&line("new-1", 1, json!([]), &[("ORDER", 5001)]))
            .await
            .expect("a clean import");
        assert_eq!(summary.customers_created, 1);
        assert_eq!(get(&app, "ORDER", "5001").await.0, 200);
    }

    async fn a_reimported_customer_is_replaced_whole(backend: Backend) {
        let app = spawn_app(backend).await;
        let x = line("x", 10, json!([{"id": 1}, {"id": 2}]), &[("ORDER", 501), ("ORDER", 502)]);
        let y = line("y", 11, json!([]), &[("ORDER", 503)]);
        let summary = app.import(&format!("{x}\n{y}\n")).await.expect("import");
        assert_eq!((summary.customers_created, summary.links), (2, 3));

        // x drops a vehicle and ORDER 502, and takes ORDER 503 from y.
        let x = line("x", 10, json!([{"id": 1}]), &[("ORDER", 501), ("ORDER", 503)]);
        let summary = app.import(&x).await.expect("re-import");
        assert_eq!(
            (summary.customers_created, summary.customers_updated, summary.links),
            (0, 1, 2)
        );
        for id in ["501", "503"] {
            let (status, text) = get(&app, "ORDER", id).await;
            assert_eq!(status, 200, "ORDER {id}");
            let body: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(body["customerWithVehicles"]["customer"]["id"], 10, "ORDER {id}");
            assert_eq!(body["customerWithVehicles"]["vehicles"], json!([{"id": 1}]), "ORDER {id}");
        }
        assert_eq!(get(&app, "ORDER", "502").await.0, 204, "the dropped link is gone");
    }

    async fn a_sparse_record_comes_back_without_a_null_at_any_level(backend: Backend) {
        let app = spawn_app(backend).await;
        let customer = json!({
            "id": 3,
            "customerUuid": "sparse-nested",
            "emails": [{}],
            "phoneNumbers": [{}],
            "bestTimeToContact": {},
            "addresses": [{}, {"type": "BILLING"}],
        });
        let vehicles = json!([{"id": 9}]);
        let file = json!({
            "department": DEPARTMENT,
            "customer": customer,
            "vehicles": vehicles,
            "links": [{"entity": "ORDER", "entityId": 601}],
        });
        app.import(&file.to_string()).await.expect("import");
        let (status, text) = get(&app, "ORDER", "601").await;
        assert_eq!(status, 200);
        assert!(!text.contains("null"), "{text}");
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            body["customerWithVehicles"],
            json!({"customer": customer, "vehicles": vehicles})
        );
    }

    // Lookups during a re-import that gives every customer a new id and moves every link to
    // the next customer: each answer is the customer before the import or the one after it,
    // whole (never the new document under the old link, nor a link without its customer), and
    // once the new state has been seen the old one never comes back.
    async fn a_lookup_during_a_reimport_sees_the_before_or_the_after_whole(backend: Backend) {
        const N: i64 = 3000;
        const FIRST_ORDER: i64 = 700_000;
        let app = spawn_app(backend).await;
        let file = |after: bool| {
            (0..N)
                .map(|i| {
                    let (id, order) = if after {
                        (1_000_000 + i, FIRST_ORDER + (i + 1) % N)
                    } else {
                        (i + 1, FIRST_ORDER + i)
                    };
                    line(&format!("snap-{i}"), id, json!([]), &[("ORDER", order)])
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        app.import(&file(false)).await.expect("first import");

        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (client, address) = (app.client.clone(), app.address.clone());
        let reader = {
            let done = done.clone();
            tokio::spawn(async move {
                let (mut seen, mut after_seen, mut j) = (0u32, false, 0i64);
                // Lookups go on for a while after the re-import has returned: those must all
                // see its state.
                let mut since_done = 0;
                while since_done < 20 {
                    let finished = done.load(std::sync::atomic::Ordering::Relaxed);
                    j = (j + 7919) % N;
                    let path = TestApp::customer_path(DEPARTMENT, "ORDER", &(FIRST_ORDER + j).to_string());
                    let response = client
                        .get(format!("{address}{path}"))
                        .basic_auth(USER, Some(PASSWORD))
                        .send()
                        .await
                        .expect("sent");
                    assert_eq!(response.status(), 200, "ORDER {} during the re-import", FIRST_ORDER + j);
                    let body: Value = response.json().await.expect("JSON");
                    let id = body["customerWithVehicles"]["customer"]["id"].as_i64().expect("id");
                    let before = id == j + 1;
                    let after = id == 1_000_000 + (j + N - 1) % N;
                    assert!(before || after, "ORDER {}: a torn customer, id {id}", FIRST_ORDER + j);
                    assert!(!(before && after_seen), "the state before came back after the one after");
                    assert!(after || !finished, "a lookup after the re-import saw the state before it");
                    after_seen |= after;
                    seen += 1;
                    since_done += u32::from(finished);
                }
                (seen, after_seen)
            })
        };
        let summary = app.import(&file(true)).await.expect("re-import");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(summary.customers_updated, N as usize);
        let (seen, after_seen) = reader.await.expect("reader");
        assert!(after_seen, "the re-import's state was never seen ({seen} lookups)");
    }
}
