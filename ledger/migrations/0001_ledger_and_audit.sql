-- Countersign on PostgreSQL: the ledger, the audit trail and the Kafka outbox.
--
-- Applied by `Store::migrate(url)` (and by `Store::open` when `migrate_on_start` is set), as
-- the owner of the schema, never as the application role.
--
-- Roles. The migration creates the NOLOGIN role `countersign_app` and grants it exactly what
-- the gateway needs. The gateway logs in as a user that is a member of it, e.g.
--     CREATE ROLE countersign_gateway LOGIN PASSWORD '...' IN ROLE countersign_app;
-- and opens the store with `migrate_on_start = false`. That user cannot UPDATE, DELETE or
-- TRUNCATE the audit trail or the postings (no privilege), and even the owner is stopped by
-- the append-only triggers below (they can be dropped by the owner, which is what the hash
-- chain and `audit verify` are for).
--
-- Money is BIGINT minor units; there is no numeric or float money column.

CREATE TABLE accounts (
    id                TEXT        NOT NULL PRIMARY KEY,
    currency          TEXT        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status            TEXT        NOT NULL CHECK (status IN ('active', 'frozen', 'closed')),
    overdraft_allowed BOOLEAN     NOT NULL,
    balance_minor     BIGINT      NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    CHECK (overdraft_allowed OR balance_minor >= 0)
);

CREATE TABLE transfers (
    id                    UUID        NOT NULL PRIMARY KEY,
    debit_account         TEXT        NOT NULL REFERENCES accounts (id),
    credit_account        TEXT        NOT NULL REFERENCES accounts (id),
    amount_minor          BIGINT      NOT NULL CHECK (amount_minor > 0),
    currency              TEXT        NOT NULL,
    end_to_end_id         TEXT,
    purpose               TEXT,
    remittance_info       TEXT,
    decision_id           UUID        NOT NULL,
    initiator_fingerprint TEXT        NOT NULL,
    business_date         DATE        NOT NULL,
    posted_at             TIMESTAMPTZ NOT NULL,
    CHECK (debit_account <> credit_account)
);

CREATE TABLE entries (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id         UUID   NOT NULL REFERENCES transfers (id),
    account_id          TEXT   NOT NULL REFERENCES accounts (id),
    direction           TEXT   NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
    currency            TEXT   NOT NULL,
    balance_after_minor BIGINT NOT NULL,
    business_date       DATE   NOT NULL
);

-- The policy's daily-debit sum is one range scan on this index.
CREATE INDEX entries_by_account_direction_date ON entries (account_id, direction, business_date);
CREATE INDEX entries_by_transfer ON entries (transfer_id);

CREATE TABLE idempotency (
    scope        TEXT        NOT NULL,
    key          TEXT        NOT NULL,
    request_hash BYTEA       NOT NULL CHECK (octet_length(request_hash) = 32),
    outcome      TEXT        NOT NULL CHECK (outcome IN ('posted', 'denied')),
    transfer_id  UUID        REFERENCES transfers (id),
    decision_id  UUID        NOT NULL,
    reasons_json TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    -- The primary key is what makes a key single-use across replicas: the second insert
    -- waits for the first transaction and then fails, and the writer replays the stored row.
    PRIMARY KEY (scope, key),
    CHECK ((outcome = 'posted') = (transfer_id IS NOT NULL))
);

-- Audit records, as the text the hash is computed over (see countersign_audit::encoding).
-- Inserted by the ledger's write transaction WITHOUT a place in the chain: the sealer gives
-- them one later, so writers on several replicas never serialise on the chain head.
CREATE TABLE audit_records (
    record_id           UUID        NOT NULL PRIMARY KEY,
    kind                TEXT        NOT NULL,
    decision_id         TEXT        NOT NULL,
    timestamp           TEXT        NOT NULL,
    subject_fingerprint TEXT        NOT NULL,
    subject_common_name TEXT,
    subject_roles       TEXT        NOT NULL,
    source_address      TEXT        NOT NULL,
    action              TEXT        NOT NULL,
    masked_input        TEXT        NOT NULL,
    result              TEXT        NOT NULL,
    bundle_revision     TEXT        NOT NULL,
    outcome             TEXT        NOT NULL,
    redaction           TEXT        NOT NULL,
    ingest_id           BIGSERIAL   NOT NULL UNIQUE,
    ingested_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_records_decision_id ON audit_records (decision_id);

-- The hash chain: sequence 1..n without gaps, one seal per record.
CREATE TABLE audit_seals (
    sequence      BIGINT      NOT NULL PRIMARY KEY CHECK (sequence > 0),
    record_id     UUID        NOT NULL UNIQUE REFERENCES audit_records (record_id),
    previous_hash BYTEA       NOT NULL CHECK (octet_length(previous_hash) = 32),
    hash          BYTEA       NOT NULL CHECK (octet_length(hash) = 32),
    sealed_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Work queue of the sealer: inserted with the record, deleted in the transaction that seals it.
CREATE TABLE audit_unsealed (
    record_id UUID   NOT NULL PRIMARY KEY REFERENCES audit_records (record_id),
    ingest_id BIGINT NOT NULL
);
CREATE INDEX audit_unsealed_by_ingest_id ON audit_unsealed (ingest_id);

-- Records to publish to Kafka, written with the record; `delivered_at` is set once the broker
-- acknowledged. Only sealed records are handed out, in chain order.
CREATE TABLE outbox (
    record_id    UUID        NOT NULL PRIMARY KEY REFERENCES audit_records (record_id),
    key          TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at TIMESTAMPTZ
);
-- Keeps the backlog count and the pending scan proportional to the backlog, not the history.
CREATE INDEX outbox_undelivered ON outbox (record_id) WHERE delivered_at IS NULL;

-- Append-only: refuses UPDATE, DELETE and TRUNCATE, whoever asks.
CREATE FUNCTION countersign_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON transfers
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER transfers_no_truncate BEFORE TRUNCATE ON transfers
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER audit_seals_append_only BEFORE UPDATE OR DELETE ON audit_seals
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_refuse_change();

-- The outbox row may only move from undelivered to delivered.
CREATE FUNCTION countersign_outbox_mark_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.record_id <> OLD.record_id OR NEW.key <> OLD.key
        OR NEW.created_at <> OLD.created_at OR OLD.delivered_at IS NOT NULL
        OR NEW.delivered_at IS NULL THEN
        RAISE EXCEPTION 'outbox rows may only be marked delivered'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER outbox_mark_only BEFORE UPDATE ON outbox
    FOR EACH ROW EXECUTE FUNCTION countersign_outbox_mark_only();

-- Roles are cluster-wide and migrations of several databases may run at once: tolerate a
-- concurrent creation.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'countersign_app') THEN
        CREATE ROLE countersign_app NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END;
$$;

GRANT SELECT, INSERT, UPDATE ON accounts TO countersign_app;
GRANT SELECT, INSERT ON transfers, entries, idempotency TO countersign_app;
GRANT SELECT, INSERT ON audit_records, audit_seals TO countersign_app;
GRANT SELECT, INSERT, DELETE ON audit_unsealed TO countersign_app;
GRANT SELECT, INSERT, UPDATE ON outbox TO countersign_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO countersign_app;
