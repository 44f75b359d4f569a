-- Encryption at rest (issue 6, item 5): the unmasked policy input of a decision record, kept
-- only encrypted (countersign_audit::envelope: AES-256-GCM under a per-record data key, the
-- data key wrapped with a key-encryption key named by kek_id). audit_records keeps the masked
-- input, which is what is hashed, queried and exported; nothing here is readable without the
-- keyring. account_tokens (JSON array) are HMAC blind-index tokens of the accounts, copied by
-- the query indexer. Written by countersign_audit::postgres::append in the record's
-- transaction; the foreign key is checked at commit so the two inserts may come in any order.
CREATE TABLE audit_inputs (
    record_id      UUID        NOT NULL PRIMARY KEY
                               REFERENCES audit_records (record_id) DEFERRABLE INITIALLY DEFERRED,
    kek_id         TEXT        NOT NULL CHECK (length(kek_id) BETWEEN 1 AND 64),
    wrapped_dek    BYTEA       NOT NULL CHECK (octet_length(wrapped_dek) = 60),
    nonce          BYTEA       NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext     BYTEA       NOT NULL,
    account_tokens TEXT        NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Append-only like the other audit tables: a sealed input is never re-written, not even on a
-- key rotation (old rows keep their kek_id and open as long as that key is in the keyring).
CREATE TRIGGER audit_inputs_append_only BEFORE UPDATE OR DELETE ON audit_inputs
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER audit_inputs_no_truncate BEFORE TRUNCATE ON audit_inputs
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_refuse_change();

GRANT SELECT, INSERT ON audit_inputs TO countersign_app;
