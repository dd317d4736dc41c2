//! Wire types: one Rust type per component schema of `openapi.yaml`, same names, camelCase
//! fields. Optional values are omitted when absent, never sent as `null`: serde_with's
//! `skip_serializing_none` on each struct leaves out every `None`, and `#[schema(nullable =
//! false)]` on each optional field says so in utoipa's document (an absent key, not a null).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The kind of entity a customer can be linked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Entity {
    Order,
    Appointment,
    Thread,
    Payment,
}

impl Entity {
    pub const ALL: [Entity; 4] = [
        Entity::Order,
        Entity::Appointment,
        Entity::Thread,
        Entity::Payment,
    ];

    /// The name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Order => "ORDER",
            Entity::Appointment => "APPOINTMENT",
            Entity::Thread => "THREAD",
            Entity::Payment => "PAYMENT",
        }
    }

    /// The one parser of an entity kind (path parameter and import file alike), with a
    /// message that lists the allowed values.
    pub fn parse(text: &str) -> Result<Entity, String> {
        Entity::ALL
            .into_iter()
            .find(|entity| entity.as_str() == text)
            .ok_or_else(|| {
                let allowed: Vec<&str> = Entity::ALL.iter().map(|e| e.as_str()).collect();
                format!("entity must be one of {}.", allowed.join(", "))
            })
    }
}

/// The answer to a successful lookup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkedCustomerResponse {
    pub errors: Vec<Error>,
    pub warnings: Vec<Warning>,
    pub customer_with_vehicles: CustomerWithVehicles,
}

/// A customer and the vehicles they own or drive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerWithVehicles {
    pub customer: Customer,
    pub vehicles: Vec<Vehicle>,
}

impl CustomerWithVehicles {
    /// The stored form of a customer: this serialisation, kept as text and sent as it is in
    /// the `customerWithVehicles` of a 200 (see `LinkedCustomerResponse::json_around`).
    pub fn to_document(&self) -> String {
        serde_json::to_string(self).expect("the wire types always serialise")
    }
}

impl LinkedCustomerResponse {
    /// The body of a 200 around a stored document, which is not parsed again: the document was
    /// made by [`CustomerWithVehicles::to_document`] when it was imported.
    pub fn json_around(document: &str) -> Vec<u8> {
        const HEAD: &[u8] = br#"{"errors":[],"warnings":[],"customerWithVehicles":"#;
        let mut body = Vec::with_capacity(HEAD.len() + document.len() + 1);
        body.extend_from_slice(HEAD);
        body.extend_from_slice(document.as_bytes());
        body.push(b'}');
        body
    }
}

/// A person or business that is a customer of the dealership.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub id: i64,
    #[schema(nullable = false)]
    pub customer_key: Option<String>,
    #[schema(nullable = false)]
    pub first_name: Option<String>,
    #[schema(nullable = false)]
    pub middle_name: Option<String>,
    #[schema(nullable = false)]
    pub last_name: Option<String>,
    #[schema(nullable = false)]
    pub company: Option<String>,
    #[schema(nullable = false)]
    pub preferred_locale: Option<String>,
    pub emails: Vec<Email>,
    pub phone_numbers: Vec<PhoneNumber>,
    #[schema(nullable = false)]
    pub preferred_communication: Option<String>,
    #[schema(nullable = false)]
    pub best_time_to_contact: Option<BestTimeToContact>,
    pub addresses: Vec<Address>,
    #[schema(nullable = false)]
    pub availability: Option<i32>,
    #[schema(nullable = false)]
    pub is_business: Option<bool>,
    pub customer_uuid: String,
    #[schema(nullable = false)]
    pub customer_id: Option<String>,
}

/// An email address of a customer.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Email {
    #[schema(nullable = false)]
    pub email_address: Option<String>,
    #[schema(nullable = false)]
    pub label: Option<String>,
    #[schema(nullable = false)]
    pub ok_to_email: Option<bool>,
    #[schema(nullable = false)]
    pub is_preferred: Option<bool>,
    #[schema(nullable = false)]
    pub comments: Option<String>,
}

/// A phone number of a customer.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneNumber {
    #[schema(nullable = false)]
    pub phone_number: Option<String>,
    #[schema(nullable = false)]
    pub label: Option<String>,
    #[schema(nullable = false)]
    pub ok_to_call: Option<bool>,
    #[schema(nullable = false)]
    pub ok_to_text: Option<bool>,
    #[schema(nullable = false)]
    pub is_preferred: Option<bool>,
    #[schema(nullable = false)]
    pub comments: Option<String>,
}

/// The time of day when the customer prefers to be contacted.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BestTimeToContact {
    #[schema(nullable = false)]
    pub start_time: Option<String>,
    #[schema(nullable = false)]
    pub end_time: Option<String>,
}

/// The role of an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AddressType {
    Common,
    Primary,
    Billing,
    Other,
}

impl AddressType {
    pub const ALL: [AddressType; 4] = [
        AddressType::Common,
        AddressType::Primary,
        AddressType::Billing,
        AddressType::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AddressType::Common => "COMMON",
            AddressType::Primary => "PRIMARY",
            AddressType::Billing => "BILLING",
            AddressType::Other => "OTHER",
        }
    }

    pub fn parse(text: &str) -> Option<AddressType> {
        AddressType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// A postal address of a customer.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    #[schema(nullable = false)]
    pub line1: Option<String>,
    #[schema(nullable = false)]
    pub line2: Option<String>,
    #[schema(nullable = false)]
    pub city: Option<String>,
    #[schema(nullable = false)]
    pub zip: Option<String>,
    #[schema(nullable = false)]
    pub address_type: Option<String>,
    #[serde(rename = "type")]
    #[schema(nullable = false)]
    pub kind: Option<AddressType>,
    #[schema(nullable = false)]
    pub country: Option<String>,
    /// RFC 3339, UTC.
    #[serde(
        default,
        rename = "updateTS",
        skip_serializing_if = "Option::is_none",
        with = "rfc3339_utc"
    )]
    #[schema(nullable = false, value_type = Option<String>, format = DateTime)]
    pub update_ts: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(nullable = false)]
    pub uuid: Option<String>,
    #[schema(nullable = false)]
    pub is_valid: Option<bool>,
    #[schema(nullable = false)]
    pub is_preferred: Option<bool>,
    #[schema(nullable = false)]
    pub state: Option<String>,
}

/// A vehicle of a customer.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Vehicle {
    pub id: i64,
    #[schema(nullable = false)]
    pub vin: Option<String>,
    #[schema(nullable = false)]
    pub vehicle_key: Option<String>,
    #[schema(nullable = false)]
    pub is_valid: Option<bool>,
    #[schema(nullable = false)]
    pub image_url: Option<String>,
    #[schema(nullable = false)]
    pub brand_id: Option<i64>,
    #[schema(nullable = false)]
    pub license_plate: Option<String>,
    #[schema(nullable = false)]
    pub color: Option<String>,
    #[schema(nullable = false)]
    pub vehicle_model: Option<String>,
    #[schema(nullable = false)]
    pub vehicle_year: Option<String>,
    #[schema(nullable = false)]
    pub vehicle_trim: Option<String>,
    #[schema(nullable = false)]
    pub vehicle_uuid: Option<String>,
    #[schema(nullable = false)]
    pub vehicle_engine: Option<String>,
    #[schema(nullable = false)]
    pub estimated_mileage: Option<String>,
    #[schema(nullable = false)]
    pub vehicle_make: Option<String>,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    pub errors: Vec<Error>,
    pub warnings: Vec<Warning>,
}

/// One problem with a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Error {
    pub error_code: i32,
    pub error_title: String,
    pub error_message: String,
}

/// Something worth knowing about an answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    pub warning_code: i32,
    pub warning_title: String,
    pub warning_message: String,
}

/// `updateTS` is always written as RFC 3339 in UTC with a `Z`, whatever offset it was given in.
mod rfc3339_utc {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => {
                serializer.serialize_str(&value.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        DateTime::parse_from_rfc3339(&text)
            .map(|value| Some(value.with_timezone(&Utc)))
            .map_err(|err| serde::de::Error::custom(format!("not an RFC 3339 date-time: {err}")))
    }
}
