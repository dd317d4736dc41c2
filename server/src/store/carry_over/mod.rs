//! Carries a database of schema 0001 (a customer spread over six tables) into the documents of
//! schema 0002, once, right after the migrations ran: the document is the wire types'
//! serialisation, which SQL cannot produce. One transaction: a database is carried over whole
//! or left as it was (and carried over at the next start). Frozen with schema 0001.

mod rows;

use crate::model::{Address, CustomerWithVehicles};
use anyhow::{Context, Result};
use rows::{AddressRow, CustomerRow, EmailRow, PhoneNumberRow, VehicleRow};

const SELECT_CUSTOMER_IDS: &str = "SELECT row_id, department_id FROM customers ORDER BY row_id";
const SELECT_CUSTOMER: &str = "
    SELECT ext_id, customer_uuid, customer_key, first_name, middle_name, last_name,
           company, preferred_locale, preferred_communication, has_best_time, best_time_start,
           best_time_end, availability, is_business, customer_number
    FROM customers WHERE row_id = $1";
const SELECT_EMAILS: &str = "
    SELECT email_address, label, ok_to_email, is_preferred, comments
    FROM emails WHERE customer_row_id = $1 ORDER BY position";
const SELECT_PHONE_NUMBERS: &str = "
    SELECT phone_number, label, ok_to_call, ok_to_text, is_preferred, comments
    FROM phone_numbers WHERE customer_row_id = $1 ORDER BY position";
const SELECT_ADDRESSES: &str = "
    SELECT line1, line2, city, zip, address_type, kind, country, update_ts, uuid, is_valid,
           is_preferred, state
    FROM addresses WHERE customer_row_id = $1 ORDER BY position";
const SELECT_VEHICLES: &str = "
    SELECT ext_id, vin, vehicle_key, is_valid, image_url, brand_id, license_plate, color,
           vehicle_model, vehicle_year, vehicle_trim, vehicle_uuid, vehicle_engine,
           estimated_mileage, vehicle_make
    FROM vehicles WHERE customer_row_id = $1 ORDER BY position";
const INSERT_DOCUMENT: &str = "
    INSERT INTO customer_documents (id, department_id, customer_uuid, document)
    VALUES ($1, $2, $3, $4)";
const COPY_LINKS: &str = "
    INSERT INTO links (department_id, entity, entity_id, customer_id)
    SELECT department_id, entity, entity_id, customer_row_id FROM entity_links";
const DROP_OLD_TABLES: [&str; 6] = [
    "DROP TABLE entity_links",
    "DROP TABLE emails",
    "DROP TABLE phone_numbers",
    "DROP TABLE addresses",
    "DROP TABLE vehicles",
    "DROP TABLE customers",
];

macro_rules! carry_over {
    // `$has_old`: a query answering whether the table `customers` of schema 0001 exists;
    // `$after`: statements to run once the documents are in (PostgreSQL's identity sequence).
    ($name:ident, $db:ty, $has_old:expr, $after:expr) => {
        /// Carries the customers of schema 0001 over, if there are any tables of it left.
        pub async fn $name(pool: &sqlx::Pool<$db>) -> Result<()> {
            let has_old: bool = sqlx::query_scalar($has_old).fetch_one(pool).await?;
            if !has_old {
                return Ok(());
            }
            let mut tx = pool.begin().await?;
            let ids: Vec<(i64, i64)> = sqlx::query_as(SELECT_CUSTOMER_IDS)
                .fetch_all(&mut *tx)
                .await?;
            let count = ids.len();
            for (id, department_id) in ids {
                let row: CustomerRow = sqlx::query_as(SELECT_CUSTOMER)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                let emails: Vec<EmailRow> = sqlx::query_as(SELECT_EMAILS)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                let phone_numbers: Vec<PhoneNumberRow> = sqlx::query_as(SELECT_PHONE_NUMBERS)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                let addresses: Vec<AddressRow> = sqlx::query_as(SELECT_ADDRESSES)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                let vehicles: Vec<VehicleRow> = sqlx::query_as(SELECT_VEHICLES)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                let addresses = addresses
                    .into_iter()
                    .map(Address::try_from)
                    .collect::<Result<Vec<_>>>()?;
                let uuid = row.customer_uuid.clone();
                let document = CustomerWithVehicles {
                    customer: row.into_customer(
                        emails.into_iter().map(Into::into).collect(),
                        phone_numbers.into_iter().map(Into::into).collect(),
                        addresses,
                    ),
                    vehicles: vehicles.into_iter().map(Into::into).collect(),
                }
                .to_document();
                sqlx::query(INSERT_DOCUMENT)
                    .bind(id)
                    .bind(department_id)
                    .bind(uuid)
                    .bind(document)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(COPY_LINKS).execute(&mut *tx).await?;
            for statement in DROP_OLD_TABLES.into_iter().chain($after) {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            tx.commit()
                .await
                .context("could not carry the customers of schema 0001 over")?;
            tracing::info!(
                customers = count,
                "carried schema 0001 over to one document per customer"
            );
            Ok(())
        }
    };
}

carry_over!(
    sqlite,
    sqlx::Sqlite,
    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'customers')",
    []
);
carry_over!(
    postgres,
    sqlx::Postgres,
    "SELECT to_regclass('customers') IS NOT NULL",
    [
        "SELECT setval(pg_get_serial_sequence('customer_documents', 'id'), \
        (SELECT coalesce(max(id), 0) + 1 FROM customer_documents), false)"
    ]
);
