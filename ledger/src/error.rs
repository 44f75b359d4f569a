//! Errors of the ledger crate.
//!
//! Two families, kept apart on purpose:
//! - [`DomainError`]: a value from outside (an HTTP body, a CLI flag) is not a valid amount,
//!   currency or account id. Each variant has a stable machine-readable [`DomainError::code`]
//!   that the gateway copies into its error response.
//! - [`LedgerError`]: an operation on a valid request could not be carried out (the account
//!   does not exist, storage failed, the writer queue is full, ...). Callers branch on the
//!   variant.
//!
//! Broken ledger invariants are neither: they are programmer errors and panic.

use std::sync::Arc;

use crate::account::AccountId;

/// A value could not be turned into a domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("amount must be greater than zero")]
    AmountNotPositive,
    #[error("amount has more decimals than {currency} allows ({decimals_max})")]
    AmountTooPrecise {
        currency: &'static str,
        decimals_max: u8,
    },
    #[error("amount must be plain decimal digits with an optional '.' fraction")]
    AmountMalformed,
    #[error("amount is too large")]
    AmountTooLarge,
    #[error("currency is not a known ISO 4217 code (upper case, e.g. \"EUR\")")]
    CurrencyUnknown,
    #[error("account id must be 4 to 34 characters of A-Z, 0-9 and '-'")]
    AccountIdMalformed,
}

impl DomainError {
    /// Stable, machine-readable code; part of the public API of the gateway, never reworded.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::AmountNotPositive => "amount.not_positive",
            DomainError::AmountTooPrecise { .. } => "amount.too_precise",
            DomainError::AmountMalformed => "amount.malformed",
            DomainError::AmountTooLarge => "amount.too_large",
            DomainError::CurrencyUnknown => "currency.unknown",
            DomainError::AccountIdMalformed => "account_id.malformed",
        }
    }
}

/// An operation of the ledger store failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed (I/O, disk full, COMMIT failed, corrupt row). Nothing of the
    /// command was written. `Arc` because one failed COMMIT is reported to every caller of
    /// the batch.
    #[error("ledger storage failed: {0}")]
    Storage(#[source] Arc<sqlx::Error>),
    /// Appending to the audit trail failed; nothing of the command was written.
    #[error("audit trail append failed: {0}")]
    Audit(#[source] Arc<countersign_audit::AuditError>),
    /// A row read back from the database does not parse into a domain value.
    #[error("ledger row is corrupt: {0}")]
    CorruptRow(String),
    #[error("account {} does not exist", .0.masked())]
    AccountNotFound(AccountId),
    #[error("account {} already exists", .0.masked())]
    AccountExists(AccountId),
    #[error("a transfer with id {0} already exists")]
    TransferExists(uuid::Uuid),
    /// No transfer with this id is or was held for approval.
    #[error("no transfer {0} is held for approval")]
    ApprovalNotFound(uuid::Uuid),
    /// The idempotency key was used before with a different request body.
    #[error("idempotency key was already used for a different request")]
    IdempotencyConflict { scope: String, key: String },
    /// The ledger refused a system posting (seed) because it would break an account rule.
    #[error("ledger refused the posting: {reason_code}")]
    Refused { reason_code: &'static str },
    /// The `decide` callback panicked or returned a verdict that contradicts its record.
    /// Only this command was rolled back.
    #[error("transfer decision failed: {0}")]
    DecisionFailed(String),
    /// The writer queue stayed full for `enqueue_timeout_ms`: shed load, retry later.
    #[error("ledger writer is overloaded")]
    Overloaded,
    /// `shutdown()` was called; no new commands are accepted.
    #[error("ledger is shutting down")]
    ShuttingDown,
    /// PostgreSQL only: the Kafka outbox holds `backlog` undelivered records, at or above
    /// `StoreLimits::outbox_rows_max`, and the policy is `OutboxFullPolicy::Refuse`. Nothing
    /// was written; retry once the relay has caught up (the gateway answers 503 `outbox.full`).
    #[error("audit outbox is full ({backlog} undelivered records, limit {rows_max})")]
    OutboxFull { backlog: i64, rows_max: u64 },
    /// The operation does not exist on this back end (e.g. the outbox on SQLite).
    #[error("{operation} is not supported by the {backend} store")]
    Unsupported {
        operation: &'static str,
        backend: &'static str,
    },
    /// The writer task is gone (it panicked on a broken invariant). Fatal for the process.
    #[error("ledger writer stopped")]
    WriterStopped,
}

impl From<sqlx::Error> for LedgerError {
    fn from(error: sqlx::Error) -> Self {
        LedgerError::Storage(Arc::new(error))
    }
}

impl From<countersign_audit::AuditError> for LedgerError {
    fn from(error: countersign_audit::AuditError) -> Self {
        LedgerError::Audit(Arc::new(error))
    }
}
