-- A customer is stored as one document: its whole CustomerWithVehicles, validated through the
-- wire types at import and kept as the JSON text that import wrote. The server never filters on
-- a customer field, so a lookup is one indexed read, and a new optional field needs no change
-- here. (Keep in step with ../postgres/0002_customer_documents.sql.)
--
-- The rows of schema 0001 (customers and their child tables, entity_links) are carried into
-- these tables by the server right after this migration (store/carry_over.rs), because the
-- document is the wire types' serialisation; it then drops the old tables.

CREATE TABLE customer_documents (
    id            INTEGER PRIMARY KEY,
    department_id INTEGER NOT NULL REFERENCES departments (id) ON DELETE CASCADE,
    customer_uuid TEXT NOT NULL,
    document      TEXT NOT NULL,
    UNIQUE (department_id, customer_uuid)
);

-- (department, entity, entityId) -> customer: the lookup of getLinkedCustomer.
CREATE TABLE links (
    department_id INTEGER NOT NULL REFERENCES departments (id) ON DELETE CASCADE,
    entity        TEXT NOT NULL CHECK (entity IN ('ORDER', 'APPOINTMENT', 'THREAD', 'PAYMENT')),
    entity_id     INTEGER NOT NULL CHECK (entity_id >= 1),
    customer_id   INTEGER NOT NULL REFERENCES customer_documents (id) ON DELETE CASCADE,
    PRIMARY KEY (department_id, entity, entity_id)
) WITHOUT ROWID;
CREATE INDEX links_customer ON links (customer_id);
