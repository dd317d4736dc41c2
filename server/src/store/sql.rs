//! The SQL behind [`Store`](super::Store). SQLite and PostgreSQL run the same statements, so
//! the implementation is written once, as a macro instantiated for each pool type.

use super::rows::{AccessRow, AddressRow, CustomerRow, EmailRow, PhoneNumberRow, VehicleRow};
use super::{ImportSummary, Store, SubscriberAccess};
use crate::domain::{DepartmentToken, EntityId};
use crate::import::ImportRecord;
use crate::model::{Address, CustomerWithVehicles, Entity};
use anyhow::{Context, Result};

const SELECT_LINKED_CUSTOMER: &str = "
    SELECT c.row_id, c.ext_id, c.customer_uuid, c.customer_key, c.first_name, c.middle_name,
           c.last_name, c.company, c.preferred_locale, c.preferred_communication,
           c.has_best_time, c.best_time_start, c.best_time_end, c.availability, c.is_business,
           c.customer_number
    FROM entity_links l
    JOIN departments d ON d.id = l.department_id
    JOIN customers c ON c.row_id = l.customer_row_id
    WHERE d.token = $1 AND l.entity = $2 AND l.entity_id = $3";
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
const SELECT_ACCESS: &str = "
    SELECT s.id, s.password_hash,
           EXISTS (SELECT 1 FROM grants g JOIN departments d ON d.id = g.department_id
                   WHERE g.subscriber_id = s.id AND d.token = $2 AND g.scope = $3) AS granted
    FROM subscribers s WHERE s.username = $1";
const UPSERT_DEPARTMENT: &str = "
    INSERT INTO departments (token) VALUES ($1)
    ON CONFLICT (token) DO UPDATE SET token = excluded.token
    RETURNING id";
const FIND_CUSTOMER: &str =
    "SELECT row_id FROM customers WHERE department_id = $1 AND customer_uuid = $2";
const UPSERT_CUSTOMER: &str = "
    INSERT INTO customers (department_id, customer_uuid, ext_id, customer_key, first_name,
        middle_name, last_name, company, preferred_locale, preferred_communication,
        has_best_time, best_time_start, best_time_end, availability, is_business,
        customer_number)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
    ON CONFLICT (department_id, customer_uuid) DO UPDATE SET
        ext_id = excluded.ext_id, customer_key = excluded.customer_key,
        first_name = excluded.first_name, middle_name = excluded.middle_name,
        last_name = excluded.last_name, company = excluded.company,
        preferred_locale = excluded.preferred_locale,
        preferred_communication = excluded.preferred_communication,
        has_best_time = excluded.has_best_time, best_time_start = excluded.best_time_start,
        best_time_end = excluded.best_time_end, availability = excluded.availability,
        is_business = excluded.is_business, customer_number = excluded.customer_number
    RETURNING row_id";
/// A re-imported customer's record replaces the old one whole: its child rows and links first go.
const DELETE_CHILDREN: [&str; 5] = [
    "DELETE FROM emails WHERE customer_row_id = $1",
    "DELETE FROM phone_numbers WHERE customer_row_id = $1",
    "DELETE FROM addresses WHERE customer_row_id = $1",
    "DELETE FROM vehicles WHERE customer_row_id = $1",
    "DELETE FROM entity_links WHERE customer_row_id = $1",
];
const INSERT_EMAIL: &str = "
    INSERT INTO emails (customer_row_id, position, email_address, label, ok_to_email,
        is_preferred, comments)
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
const INSERT_PHONE_NUMBER: &str = "
    INSERT INTO phone_numbers (customer_row_id, position, phone_number, label, ok_to_call,
        ok_to_text, is_preferred, comments)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const INSERT_ADDRESS: &str = "
    INSERT INTO addresses (customer_row_id, position, line1, line2, city, zip, address_type,
        kind, country, update_ts, uuid, is_valid, is_preferred, state)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
const INSERT_VEHICLE: &str = "
    INSERT INTO vehicles (customer_row_id, position, ext_id, vin, vehicle_key, is_valid,
        image_url, brand_id, license_plate, color, vehicle_model, vehicle_year, vehicle_trim,
        vehicle_uuid, vehicle_engine, estimated_mileage, vehicle_make)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";
const UPSERT_LINK: &str = "
    INSERT INTO entity_links (department_id, entity, entity_id, customer_row_id)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (department_id, entity, entity_id)
    DO UPDATE SET customer_row_id = excluded.customer_row_id";
const INSERT_SUBSCRIBER: &str =
    "INSERT INTO subscribers (username, password_hash) VALUES ($1, $2) RETURNING id";
const INSERT_GRANT: &str = "
    INSERT INTO grants (subscriber_id, department_id, scope) VALUES ($1, $2, $3)
    ON CONFLICT DO NOTHING";
const DELETE_SUBSCRIBER: &str = "DELETE FROM subscribers WHERE username = $1";
const UPDATE_PASSWORD: &str = "UPDATE subscribers SET password_hash = $2 WHERE username = $1";

/// The position of a child row, as stored.
fn position(index: usize) -> Result<i32> {
    i32::try_from(index).context("too many child rows for one customer")
}

macro_rules! sql_store {
    // `$snapshot`: the statement, if any, that makes a transaction read from one snapshot.
    ($name:ident, $db:ty, $snapshot:expr) => {
        pub struct $name {
            pool: sqlx::Pool<$db>,
        }

        impl $name {
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                Self { pool }
            }
        }

        #[async_trait::async_trait]
        impl Store for $name {
            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn linked_customer(
                &self,
                department: &DepartmentToken,
                entity: Entity,
                entity_id: EntityId,
            ) -> Result<Option<CustomerWithVehicles>> {
                // One transaction, so that a re-import running meanwhile is seen whole or not
                // at all: the customer row and its child rows come from one snapshot.
                let mut tx = self.pool.begin().await?;
                if let Some(statement) = $snapshot {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
                let Some(row) = sqlx::query_as::<_, CustomerRow>(SELECT_LINKED_CUSTOMER)
                    .bind(department.as_str())
                    .bind(entity.as_str())
                    .bind(entity_id.get())
                    .fetch_optional(&mut *tx)
                    .await?
                else {
                    return Ok(None);
                };
                let id = row.row_id;
                let emails = sqlx::query_as::<_, EmailRow>(SELECT_EMAILS)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                let phone_numbers = sqlx::query_as::<_, PhoneNumberRow>(SELECT_PHONE_NUMBERS)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                let addresses = sqlx::query_as::<_, AddressRow>(SELECT_ADDRESSES)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                let vehicles = sqlx::query_as::<_, VehicleRow>(SELECT_VEHICLES)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                let addresses = addresses
                    .into_iter()
                    .map(Address::try_from)
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(CustomerWithVehicles {
                    customer: row.into_customer(
                        emails.into_iter().map(Into::into).collect(),
                        phone_numbers.into_iter().map(Into::into).collect(),
                        addresses,
                    ),
                    vehicles: vehicles.into_iter().map(Into::into).collect(),
                }))
            }

            async fn subscriber_access(
                &self,
                username: &str,
                department: &DepartmentToken,
                scope: &str,
            ) -> Result<Option<SubscriberAccess>> {
                let row = sqlx::query_as::<_, AccessRow>(SELECT_ACCESS)
                    .bind(username)
                    .bind(department.as_str())
                    .bind(scope)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|row| SubscriberAccess {
                    subscriber_id: row.id,
                    password_hash: row.password_hash,
                    granted: row.granted,
                }))
            }

            async fn import(&self, records: &[ImportRecord]) -> Result<ImportSummary> {
                let mut summary = ImportSummary::default();
                let mut tx = self.pool.begin().await?;
                for record in records {
                    let department_id: i64 = sqlx::query_scalar(UPSERT_DEPARTMENT)
                        .bind(record.department.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                    let c = &record.customer;
                    let existing: Option<i64> = sqlx::query_scalar(FIND_CUSTOMER)
                        .bind(department_id)
                        .bind(&c.customer_uuid)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let best_time = c.best_time_to_contact.as_ref();
                    let row_id: i64 = sqlx::query_scalar(UPSERT_CUSTOMER)
                        .bind(department_id)
                        .bind(&c.customer_uuid)
                        .bind(c.id)
                        .bind(&c.customer_key)
                        .bind(&c.first_name)
                        .bind(&c.middle_name)
                        .bind(&c.last_name)
                        .bind(&c.company)
                        .bind(&c.preferred_locale)
                        .bind(&c.preferred_communication)
                        .bind(best_time.is_some())
                        .bind(best_time.and_then(|t| t.start_time.clone()))
                        .bind(best_time.and_then(|t| t.end_time.clone()))
                        .bind(c.availability)
                        .bind(c.is_business)
                        .bind(&c.customer_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    if existing.is_some() {
                        for statement in DELETE_CHILDREN {
                            sqlx::query(statement)
                                .bind(row_id)
                                .execute(&mut *tx)
                                .await?;
                        }
                        summary.customers_updated += 1;
                    } else {
                        summary.customers_created += 1;
                    }
                    for (index, e) in c.emails.iter().enumerate() {
                        sqlx::query(INSERT_EMAIL)
                            .bind(row_id)
                            .bind(position(index)?)
                            .bind(&e.email_address)
                            .bind(&e.label)
                            .bind(e.ok_to_email)
                            .bind(e.is_preferred)
                            .bind(&e.comments)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for (index, p) in c.phone_numbers.iter().enumerate() {
                        sqlx::query(INSERT_PHONE_NUMBER)
                            .bind(row_id)
                            .bind(position(index)?)
                            .bind(&p.phone_number)
                            .bind(&p.label)
                            .bind(p.ok_to_call)
                            .bind(p.ok_to_text)
                            .bind(p.is_preferred)
                            .bind(&p.comments)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for (index, a) in c.addresses.iter().enumerate() {
                        sqlx::query(INSERT_ADDRESS)
                            .bind(row_id)
                            .bind(position(index)?)
                            .bind(&a.line1)
                            .bind(&a.line2)
                            .bind(&a.city)
                            .bind(&a.zip)
                            .bind(&a.address_type)
                            .bind(a.kind.map(|kind| kind.as_str()))
                            .bind(&a.country)
                            .bind(a.update_ts)
                            .bind(&a.uuid)
                            .bind(a.is_valid)
                            .bind(a.is_preferred)
                            .bind(&a.state)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for (index, v) in record.vehicles.iter().enumerate() {
                        sqlx::query(INSERT_VEHICLE)
                            .bind(row_id)
                            .bind(position(index)?)
                            .bind(v.id)
                            .bind(&v.vin)
                            .bind(&v.vehicle_key)
                            .bind(v.is_valid)
                            .bind(&v.image_url)
                            .bind(v.brand_id)
                            .bind(&v.license_plate)
                            .bind(&v.color)
                            .bind(&v.vehicle_model)
                            .bind(&v.vehicle_year)
                            .bind(&v.vehicle_trim)
                            .bind(&v.vehicle_uuid)
                            .bind(&v.vehicle_engine)
                            .bind(&v.estimated_mileage)
                            .bind(&v.vehicle_make)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for link in &record.links {
                        sqlx::query(UPSERT_LINK)
                            .bind(department_id)
                            .bind(link.entity.as_str())
                            .bind(link.entity_id.get())
                            .bind(row_id)
                            .execute(&mut *tx)
                            .await?;
                        summary.links += 1;
                    }
                }
                tx.commit().await?;
                Ok(summary)
            }

            async fn add_subscriber(
                &self,
                username: &str,
                password_hash: &str,
                departments: &[DepartmentToken],
                scopes: &[String],
            ) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                let subscriber_id: i64 = sqlx::query_scalar(INSERT_SUBSCRIBER)
                    .bind(username)
                    .bind(password_hash)
                    .fetch_one(&mut *tx)
                    .await
                    .with_context(|| {
                        format!("could not add subscriber {username:?} (is the name taken?)")
                    })?;
                for department in departments {
                    let department_id: i64 = sqlx::query_scalar(UPSERT_DEPARTMENT)
                        .bind(department.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                    for scope in scopes {
                        sqlx::query(INSERT_GRANT)
                            .bind(subscriber_id)
                            .bind(department_id)
                            .bind(scope)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn remove_subscriber(&self, username: &str) -> Result<bool> {
                let done = sqlx::query(DELETE_SUBSCRIBER)
                    .bind(username)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_password_hash(&self, username: &str, password_hash: &str) -> Result<bool> {
                let done = sqlx::query(UPDATE_PASSWORD)
                    .bind(username)
                    .bind(password_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

// A read transaction in SQLite (WAL) already sees one snapshot; PostgreSQL's default, READ
// COMMITTED, takes a new one per statement.
sql_store!(SqliteStore, sqlx::Sqlite, None::<&'static str>);
sql_store!(
    PgStore,
    sqlx::Postgres,
    Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
);
