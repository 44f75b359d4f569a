//! The ledger's tables. Applied with `CREATE ... IF NOT EXISTS` on every open, on the writer
//! connection, before the audit crate's own migration.
//!
//! Design notes:
//! - `STRICT` tables: SQLite then refuses a text in an INTEGER money column instead of
//!   silently storing it.
//! - Money columns are INTEGER minor units; there is no REAL column.
//! - `transfers` and `entries` are append-only (triggers): a posting is corrected by another
//!   posting, never by an edit.
//! - `entries.business_date` is denormalised from the transfer so the daily-debit sum the policy
//!   needs is one index range scan on `(account_id, direction, business_date)`.

pub(crate) const LEDGER_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS accounts (
    id                TEXT    NOT NULL PRIMARY KEY,
    currency          TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('active', 'frozen', 'closed')),
    overdraft_allowed INTEGER NOT NULL CHECK (overdraft_allowed IN (0, 1)),
    balance_minor     INTEGER NOT NULL,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    CHECK (overdraft_allowed = 1 OR balance_minor >= 0)
) STRICT;

CREATE TABLE IF NOT EXISTS transfers (
    id                    TEXT    NOT NULL PRIMARY KEY,
    debit_account         TEXT    NOT NULL REFERENCES accounts (id),
    credit_account        TEXT    NOT NULL REFERENCES accounts (id),
    amount_minor          INTEGER NOT NULL CHECK (amount_minor > 0),
    currency              TEXT    NOT NULL,
    end_to_end_id         TEXT,
    purpose               TEXT,
    remittance_info       TEXT,
    decision_id           TEXT    NOT NULL,
    initiator_fingerprint TEXT    NOT NULL,
    business_date         TEXT    NOT NULL,
    posted_at             TEXT    NOT NULL,
    CHECK (debit_account <> credit_account)
) STRICT;

CREATE TABLE IF NOT EXISTS entries (
    id                  INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    transfer_id         TEXT    NOT NULL REFERENCES transfers (id),
    account_id          TEXT    NOT NULL REFERENCES accounts (id),
    direction           TEXT    NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount_minor        INTEGER NOT NULL CHECK (amount_minor > 0),
    currency            TEXT    NOT NULL,
    balance_after_minor INTEGER NOT NULL,
    business_date       TEXT    NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS entries_by_account_direction_date
    ON entries (account_id, direction, business_date);
CREATE INDEX IF NOT EXISTS entries_by_transfer ON entries (transfer_id);

CREATE TABLE IF NOT EXISTS idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),
    outcome      TEXT NOT NULL CHECK (outcome IN ('posted', 'denied')),
    transfer_id  TEXT REFERENCES transfers (id),
    decision_id  TEXT NOT NULL,
    reasons_json TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (scope, key),
    CHECK ((outcome = 'posted') = (transfer_id IS NOT NULL))
) STRICT;

CREATE TRIGGER IF NOT EXISTS transfers_append_only_update BEFORE UPDATE ON transfers
BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS transfers_append_only_delete BEFORE DELETE ON transfers
BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_append_only_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_append_only_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END;
"#;
