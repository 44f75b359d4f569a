-- The auditors' workspace (issue 6): the Merkle tree over the sealed chain, signed
-- checkpoints and the search index. All of it is DERIVED from the sealed chain by the indexer
-- (gateway/src/auditor.rs → countersign_audit::index::postgres::index_step) and can be rebuilt
-- from it; `countersign audit verify` recomputes the tree and every signed root from the chain.
--
-- One indexing step writes the tree's new nodes, the index rows and the advanced cursor in one
-- transaction, so a crash leaves all of a batch or none of it.

-- The indexer's cursor: leaves in the tree (leaf i = the record with sequence i + 1).
CREATE TABLE audit_index_state (
    singleton BOOLEAN NOT NULL PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    tree_size BIGINT  NOT NULL CHECK (tree_size >= 0)
);
INSERT INTO audit_index_state (singleton, tree_size) VALUES (TRUE, 0);

-- Perfect subtrees of level >= 1 (RFC 6962 node hashes). Leaves (level 0) are not stored:
-- each is SHA-256(0x00 || audit_seals.hash) of its record, one primary-key read away.
CREATE TABLE audit_merkle_nodes (
    level SMALLINT NOT NULL CHECK (level BETWEEN 1 AND 63),
    idx   BIGINT   NOT NULL CHECK (idx >= 0),
    hash  BYTEA    NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- Signed checkpoints (countersign_audit::checkpoint): `timestamp` is the canonical text that
-- was signed, so it is stored as text, never re-formatted.
CREATE TABLE audit_checkpoints (
    tree_size  BIGINT      NOT NULL PRIMARY KEY CHECK (tree_size > 0),
    root_hash  BYTEA       NOT NULL CHECK (octet_length(root_hash) = 32),
    timestamp  TEXT        NOT NULL,
    key_id     TEXT        NOT NULL,
    signature  BYTEA       NOT NULL CHECK (octet_length(signature) = 64),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per indexed record. Every filter of GET /v1/audit/records has a composite index
-- whose second column is `sequence`: an equality filter plus `sequence > after` is one index
-- range scan that yields rows already in page order, so the first page reads ~limit index
-- entries however large the table (EXPLAIN evidence: README "Benchmarks"). `at` keeps the
-- record's timestamp floored to microseconds; time filters use audit_index_minutes below.
CREATE TABLE audit_index (
    sequence            BIGINT      NOT NULL PRIMARY KEY,
    record_id           UUID        NOT NULL,
    at                  TIMESTAMPTZ NOT NULL,
    kind                TEXT        NOT NULL,
    action              TEXT        NOT NULL,
    outcome             TEXT        NOT NULL,
    decision_id         UUID        NOT NULL,
    subject_fingerprint TEXT        NOT NULL,
    subject_common_name TEXT,
    bundle_revision     TEXT        NOT NULL,
    amount_minor        BIGINT,
    currency            TEXT
);
CREATE INDEX audit_index_by_kind ON audit_index (kind, sequence);
CREATE INDEX audit_index_by_outcome ON audit_index (outcome, sequence);
CREATE INDEX audit_index_by_decision_id ON audit_index (decision_id, sequence);
CREATE INDEX audit_index_by_fingerprint ON audit_index (subject_fingerprint, sequence);
CREATE INDEX audit_index_by_common_name ON audit_index (subject_common_name, sequence);
CREATE INDEX audit_index_by_bundle_revision ON audit_index (bundle_revision, sequence);
-- Amount filters need a currency: in sequence order within it (dense ranges), or by amount
-- (rare ranges, e.g. very large transfers) — the planner picks per query.
CREATE INDEX audit_index_by_currency ON audit_index (currency, sequence)
    WHERE currency IS NOT NULL;
CREATE INDEX audit_index_by_amount ON audit_index (currency, amount_minor)
    WHERE amount_minor IS NOT NULL;

-- Multi-valued filters: a record's roles, and the blind-index tokens of its accounts
-- (copied from audit_inputs; postings and the like inherit their decision's tokens).
CREATE TABLE audit_index_roles (
    role     TEXT   NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (role, sequence)
);
CREATE TABLE audit_index_accounts (
    token    TEXT   NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (token, sequence)
);

-- Per UTC minute (unix seconds): the sequence range of the records stamped in it, and the
-- decision records by outcome. Timestamps are only nearly monotone in sequence (replicas'
-- clocks, the time between stamping and sealing), so a time filter cannot be a bound on
-- sequence by itself; min(first_sequence)..max(last_sequence) over the minutes of a range is
-- an exact one. The stats endpoint sums the same rows.
CREATE TABLE audit_index_minutes (
    minute            BIGINT NOT NULL PRIMARY KEY,
    first_sequence    BIGINT NOT NULL,
    last_sequence     BIGINT NOT NULL,
    records           BIGINT NOT NULL,
    decisions_allow   BIGINT NOT NULL,
    decisions_deny    BIGINT NOT NULL,
    decisions_pending BIGINT NOT NULL,
    decisions_error   BIGINT NOT NULL
);

-- The tree and the checkpoints are append-only, like the chain they are derived from. The
-- index rows are never edited (a rebuild may delete and re-derive them: retention).
CREATE TRIGGER audit_merkle_nodes_append_only BEFORE UPDATE OR DELETE ON audit_merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER audit_merkle_nodes_no_truncate BEFORE TRUNCATE ON audit_merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_refuse_change();
CREATE TRIGGER audit_index_no_update BEFORE UPDATE ON audit_index
    FOR EACH ROW EXECUTE FUNCTION countersign_refuse_change();

GRANT SELECT, UPDATE ON audit_index_state TO countersign_app;
GRANT SELECT, INSERT ON audit_merkle_nodes, audit_checkpoints, audit_index,
    audit_index_roles, audit_index_accounts TO countersign_app;
GRANT SELECT, INSERT, UPDATE ON audit_index_minutes TO countersign_app;
