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
//! - Maker-checker: `approval_requests` holds transfers awaiting approval. A pending request's
//!   amount is *reserved* on its debit account: the reservation is not a column but the sum
//!   over pending requests (partial index), so it can never drift from the requests. A request
//!   leaves `pending` once (trigger); `approval_events` is append-only and allows one action
//!   per person per request (unique key). `expires_at_ms` is Unix milliseconds so the sweeper's
//!   range scan compares integers, not texts.
//! - `idempotency` gained outcome `pending` (with `approval_id`); databases created before are
//!   rebuilt once by [`upgrade_idempotency`].

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


CREATE TABLE IF NOT EXISTS approval_requests (
    id                     TEXT    NOT NULL PRIMARY KEY,
    transfer_id            TEXT    NOT NULL UNIQUE,
    debit_account          TEXT    NOT NULL REFERENCES accounts (id),
    credit_account         TEXT    NOT NULL REFERENCES accounts (id),
    amount_minor           INTEGER NOT NULL CHECK (amount_minor > 0),
    currency               TEXT    NOT NULL,
    end_to_end_id          TEXT,
    purpose                TEXT,
    remittance_info        TEXT,
    initiation_decision_id TEXT    NOT NULL,
    initiator_fingerprint  TEXT    NOT NULL,
    initiator_common_name  TEXT,
    approvals_required     INTEGER NOT NULL CHECK (approvals_required BETWEEN 1 AND 10),
    approver_roles         TEXT    NOT NULL,
    status                 TEXT    NOT NULL
        CHECK (status IN ('pending', 'posted', 'rejected', 'expired', 'failed')),
    created_at             TEXT    NOT NULL,
    expires_at_ms          INTEGER NOT NULL,
    resolved_at            TEXT,
    resolution_decision_id TEXT,
    CHECK ((status = 'pending') = (resolved_at IS NULL)),
    CHECK (debit_account <> credit_account)
) STRICT;

CREATE INDEX IF NOT EXISTS approval_requests_reserved
    ON approval_requests (debit_account) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS approval_requests_due
    ON approval_requests (expires_at_ms) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS approval_requests_by_status ON approval_requests (status, id);

CREATE TABLE IF NOT EXISTS approval_events (
    id                   INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    approval_id          TEXT    NOT NULL REFERENCES approval_requests (id),
    action               TEXT    NOT NULL CHECK (action IN ('approve', 'reject')),
    approver_fingerprint TEXT    NOT NULL,
    approver_common_name TEXT,
    decision_id          TEXT    NOT NULL,
    comment              TEXT,
    created_at           TEXT    NOT NULL,
    UNIQUE (approval_id, approver_fingerprint)
) STRICT;

CREATE TRIGGER IF NOT EXISTS approval_events_append_only_update BEFORE UPDATE ON approval_events
BEGIN SELECT RAISE(ABORT, 'approval events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS approval_events_append_only_delete BEFORE DELETE ON approval_events
BEGIN SELECT RAISE(ABORT, 'approval events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS approval_requests_no_delete BEFORE DELETE ON approval_requests
BEGIN SELECT RAISE(ABORT, 'approval requests are never deleted'); END;
-- Only the outcome columns change, and only once: pending -> a final status.
CREATE TRIGGER IF NOT EXISTS approval_requests_resolve_once BEFORE UPDATE ON approval_requests
WHEN OLD.status <> 'pending' OR NEW.status = 'pending'
    OR NEW.id IS NOT OLD.id OR NEW.transfer_id IS NOT OLD.transfer_id
    OR NEW.debit_account IS NOT OLD.debit_account OR NEW.credit_account IS NOT OLD.credit_account
    OR NEW.amount_minor IS NOT OLD.amount_minor OR NEW.currency IS NOT OLD.currency
    OR NEW.initiator_fingerprint IS NOT OLD.initiator_fingerprint
    OR NEW.initiation_decision_id IS NOT OLD.initiation_decision_id
    OR NEW.approvals_required IS NOT OLD.approvals_required
    OR NEW.expires_at_ms IS NOT OLD.expires_at_ms
BEGIN SELECT RAISE(ABORT, 'an approval request leaves pending once, and only its outcome changes'); END;

CREATE TRIGGER IF NOT EXISTS transfers_append_only_update BEFORE UPDATE ON transfers
BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS transfers_append_only_delete BEFORE DELETE ON transfers
BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_append_only_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_append_only_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END;
"#;

/// The idempotency table (also the target of [`upgrade_idempotency`]).
pub(crate) const IDEMPOTENCY_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),
    outcome      TEXT NOT NULL CHECK (outcome IN ('posted', 'denied', 'pending')),
    transfer_id  TEXT REFERENCES transfers (id),
    approval_id  TEXT REFERENCES approval_requests (id),
    decision_id  TEXT NOT NULL,
    reasons_json TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (scope, key),
    CHECK ((outcome = 'posted') = (transfer_id IS NOT NULL)),
    CHECK ((outcome = 'pending') = (approval_id IS NOT NULL))
) STRICT;
"#;

/// Rebuilds an `idempotency` table made before outcome `pending` existed (SQLite cannot alter
/// a CHECK). Runs in one transaction; a no-op on a current database.
pub(crate) async fn upgrade_idempotency(
    connection: &mut sqlx::SqliteConnection,
) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let table_sql: Option<String> = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'idempotency'",
    )
    .fetch_optional(&mut *connection)
    .await?;
    match table_sql {
        Some(sql) if !sql.contains("approval_id") => {
            let mut transaction = connection.begin().await?;
            sqlx::raw_sql("ALTER TABLE idempotency RENAME TO idempotency_before_approvals")
                .execute(&mut *transaction)
                .await?;
            sqlx::raw_sql(IDEMPOTENCY_TABLE)
                .execute(&mut *transaction)
                .await?;
            sqlx::raw_sql(
                "INSERT INTO idempotency (scope, key, request_hash, outcome, transfer_id, \
                 decision_id, reasons_json, created_at) \
                 SELECT scope, key, request_hash, outcome, transfer_id, decision_id, \
                 reasons_json, created_at FROM idempotency_before_approvals; \
                 DROP TABLE idempotency_before_approvals;",
            )
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            tracing::info!("idempotency table upgraded for held transfers");
            Ok(())
        }
        Some(_) => Ok(()),
        None => sqlx::raw_sql(IDEMPOTENCY_TABLE)
            .execute(&mut *connection)
            .await
            .map(|_| ()),
    }
}
