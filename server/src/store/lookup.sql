-- getLinkedCustomer in one statement (one snapshot, one round trip): the subscriber's password
-- hash, whether it holds the scope on the department, and the linked customer's document, which
-- is read only when the grant is there and the stored hash is the one the caller's password was
-- verified against ($6, from the credential cache; NULL before a check): a wrong password never
-- moves a document. No row: no such subscriber.
-- $1 username, $2 department token, $3 scope, $4 entity, $5 entityId, $6 verified hash. SQLite
-- binds these by name; `cargo xtask bench` runs this same text through pgbench.
SELECT s.id, s.password_hash, g.scope IS NOT NULL AS granted, c.document
FROM subscribers s
LEFT JOIN departments d ON d.token = $2
LEFT JOIN grants g ON g.subscriber_id = s.id AND g.department_id = d.id AND g.scope = $3
LEFT JOIN links l
    ON g.scope IS NOT NULL AND s.password_hash = $6 AND l.department_id = d.id AND l.entity = $4 AND l.entity_id = $5
LEFT JOIN customer_documents c ON c.id = l.customer_id
WHERE s.username = $1
