-- linked-customer schema, SQLite flavour (keep in step with ../postgres/0001_init.sql).

CREATE TABLE departments (
    id    INTEGER PRIMARY KEY,
    token TEXT NOT NULL UNIQUE
);

-- Service subscribers: only argon2 password hashes (PHC strings) are kept.
CREATE TABLE subscribers (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL
);

CREATE TABLE grants (
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    department_id INTEGER NOT NULL REFERENCES departments (id) ON DELETE CASCADE,
    scope         TEXT NOT NULL,
    PRIMARY KEY (subscriber_id, department_id, scope)
);

-- A customer belongs to one department and is identified there by its customerUuid.
CREATE TABLE customers (
    row_id                  INTEGER PRIMARY KEY,
    department_id           INTEGER NOT NULL REFERENCES departments (id) ON DELETE CASCADE,
    customer_uuid           TEXT NOT NULL,
    ext_id                  BIGINT NOT NULL,
    customer_key            TEXT,
    first_name              TEXT,
    middle_name             TEXT,
    last_name               TEXT,
    company                 TEXT,
    preferred_locale        TEXT,
    preferred_communication TEXT,
    has_best_time           BOOLEAN NOT NULL,
    best_time_start         TEXT,
    best_time_end           TEXT,
    availability            INTEGER,
    is_business             BOOLEAN,
    customer_number         TEXT,
    UNIQUE (department_id, customer_uuid)
);

-- Child rows keep the order they were imported in (position).
CREATE TABLE emails (
    customer_row_id INTEGER NOT NULL REFERENCES customers (row_id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    email_address   TEXT,
    label           TEXT,
    ok_to_email     BOOLEAN,
    is_preferred    BOOLEAN,
    comments        TEXT,
    PRIMARY KEY (customer_row_id, position)
);

CREATE TABLE phone_numbers (
    customer_row_id INTEGER NOT NULL REFERENCES customers (row_id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    phone_number    TEXT,
    label           TEXT,
    ok_to_call      BOOLEAN,
    ok_to_text      BOOLEAN,
    is_preferred    BOOLEAN,
    comments        TEXT,
    PRIMARY KEY (customer_row_id, position)
);

CREATE TABLE addresses (
    customer_row_id INTEGER NOT NULL REFERENCES customers (row_id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    line1           TEXT,
    line2           TEXT,
    city            TEXT,
    zip             TEXT,
    address_type    TEXT,
    kind            TEXT CHECK (kind IN ('COMMON', 'PRIMARY', 'BILLING', 'OTHER')),
    country         TEXT,
    update_ts       TEXT,
    uuid            TEXT,
    is_valid        BOOLEAN,
    is_preferred    BOOLEAN,
    state           TEXT,
    PRIMARY KEY (customer_row_id, position)
);

CREATE TABLE vehicles (
    customer_row_id   INTEGER NOT NULL REFERENCES customers (row_id) ON DELETE CASCADE,
    position          INTEGER NOT NULL,
    ext_id            BIGINT NOT NULL,
    vin               TEXT,
    vehicle_key       TEXT,
    is_valid          BOOLEAN,
    image_url         TEXT,
    brand_id          BIGINT,
    license_plate     TEXT,
    color             TEXT,
    vehicle_model     TEXT,
    vehicle_year      TEXT,
    vehicle_trim      TEXT,
    vehicle_uuid      TEXT,
    vehicle_engine    TEXT,
    estimated_mileage TEXT,
    vehicle_make      TEXT,
    PRIMARY KEY (customer_row_id, position)
);

-- (department, entity, entityId) -> customer: the lookup of getLinkedCustomer.
CREATE TABLE entity_links (
    department_id   INTEGER NOT NULL REFERENCES departments (id) ON DELETE CASCADE,
    entity          TEXT NOT NULL CHECK (entity IN ('ORDER', 'APPOINTMENT', 'THREAD', 'PAYMENT')),
    entity_id       BIGINT NOT NULL CHECK (entity_id >= 1),
    customer_row_id INTEGER NOT NULL REFERENCES customers (row_id) ON DELETE CASCADE,
    PRIMARY KEY (department_id, entity, entity_id)
);
CREATE INDEX entity_links_customer ON entity_links (customer_row_id);
