//! Rows of schema 0001 as the database returns them, and their conversion to wire types.

use crate::model::{
    Address, AddressType, BestTimeToContact, Customer, Email, PhoneNumber, Vehicle,
};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

#[derive(sqlx::FromRow)]
pub struct CustomerRow {
    pub ext_id: i64,
    pub customer_uuid: String,
    pub customer_key: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub preferred_locale: Option<String>,
    pub preferred_communication: Option<String>,
    pub has_best_time: bool,
    pub best_time_start: Option<String>,
    pub best_time_end: Option<String>,
    pub availability: Option<i32>,
    pub is_business: Option<bool>,
    pub customer_number: Option<String>,
}

impl CustomerRow {
    pub fn into_customer(
        self,
        emails: Vec<Email>,
        phone_numbers: Vec<PhoneNumber>,
        addresses: Vec<Address>,
    ) -> Customer {
        Customer {
            id: self.ext_id,
            customer_key: self.customer_key,
            first_name: self.first_name,
            middle_name: self.middle_name,
            last_name: self.last_name,
            company: self.company,
            preferred_locale: self.preferred_locale,
            emails,
            phone_numbers,
            preferred_communication: self.preferred_communication,
            best_time_to_contact: self.has_best_time.then_some(BestTimeToContact {
                start_time: self.best_time_start,
                end_time: self.best_time_end,
            }),
            addresses,
            availability: self.availability,
            is_business: self.is_business,
            customer_uuid: self.customer_uuid,
            customer_id: self.customer_number,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct EmailRow {
    pub email_address: Option<String>,
    pub label: Option<String>,
    pub ok_to_email: Option<bool>,
    pub is_preferred: Option<bool>,
    pub comments: Option<String>,
}

impl From<EmailRow> for Email {
    fn from(row: EmailRow) -> Email {
        Email {
            email_address: row.email_address,
            label: row.label,
            ok_to_email: row.ok_to_email,
            is_preferred: row.is_preferred,
            comments: row.comments,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct PhoneNumberRow {
    pub phone_number: Option<String>,
    pub label: Option<String>,
    pub ok_to_call: Option<bool>,
    pub ok_to_text: Option<bool>,
    pub is_preferred: Option<bool>,
    pub comments: Option<String>,
}

impl From<PhoneNumberRow> for PhoneNumber {
    fn from(row: PhoneNumberRow) -> PhoneNumber {
        PhoneNumber {
            phone_number: row.phone_number,
            label: row.label,
            ok_to_call: row.ok_to_call,
            ok_to_text: row.ok_to_text,
            is_preferred: row.is_preferred,
            comments: row.comments,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct AddressRow {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub zip: Option<String>,
    pub address_type: Option<String>,
    pub kind: Option<String>,
    pub country: Option<String>,
    pub update_ts: Option<DateTime<Utc>>,
    pub uuid: Option<String>,
    pub is_valid: Option<bool>,
    pub is_preferred: Option<bool>,
    pub state: Option<String>,
}

impl TryFrom<AddressRow> for Address {
    type Error = anyhow::Error;

    fn try_from(row: AddressRow) -> Result<Address> {
        let kind = match row.kind {
            Some(kind) => Some(
                AddressType::parse(&kind)
                    .with_context(|| format!("address type {kind:?} in the database"))?,
            ),
            None => None,
        };
        Ok(Address {
            line1: row.line1,
            line2: row.line2,
            city: row.city,
            zip: row.zip,
            address_type: row.address_type,
            kind,
            country: row.country,
            update_ts: row.update_ts,
            uuid: row.uuid,
            is_valid: row.is_valid,
            is_preferred: row.is_preferred,
            state: row.state,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct VehicleRow {
    pub ext_id: i64,
    pub vin: Option<String>,
    pub vehicle_key: Option<String>,
    pub is_valid: Option<bool>,
    pub image_url: Option<String>,
    pub brand_id: Option<i64>,
    pub license_plate: Option<String>,
    pub color: Option<String>,
    pub vehicle_model: Option<String>,
    pub vehicle_year: Option<String>,
    pub vehicle_trim: Option<String>,
    pub vehicle_uuid: Option<String>,
    pub vehicle_engine: Option<String>,
    pub estimated_mileage: Option<String>,
    pub vehicle_make: Option<String>,
}

impl From<VehicleRow> for Vehicle {
    fn from(row: VehicleRow) -> Vehicle {
        Vehicle {
            id: row.ext_id,
            vin: row.vin,
            vehicle_key: row.vehicle_key,
            is_valid: row.is_valid,
            image_url: row.image_url,
            brand_id: row.brand_id,
            license_plate: row.license_plate,
            color: row.color,
            vehicle_model: row.vehicle_model,
            vehicle_year: row.vehicle_year,
            vehicle_trim: row.vehicle_trim,
            vehicle_uuid: row.vehicle_uuid,
            vehicle_engine: row.vehicle_engine,
            estimated_mileage: row.estimated_mileage,
            vehicle_make: row.vehicle_make,
        }
    }
}
