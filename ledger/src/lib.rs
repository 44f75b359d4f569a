//! Countersign's double-entry ledger.
//!
//! Code map:
//! - [`money`], [`account`]: domain types with private fields and fallible constructors
//!   (`Currency::parse`, `Amount::parse`, `AccountId::parse`). Holding one means it is valid.
//! - [`transfer`]: transfers, and the command/outcome types of submitting one.
//! - [`approval`]: maker-checker: transfers held for approval, approve/reject commands,
//!   reservations (pending debits count against the balance).
//! - [`store`]: [`Store`], the one type callers hold: [`SqliteStore`] (one SQLite file, a
//!   single group-committing writer task) or `PgStore` (PostgreSQL: a group-committing writer
//!   per replica, the audit sealer, the Kafka outbox; schema in `ledger/migrations/`).
//!
//! Invariants (asserted; a violation panics the writer rather than posting a wrong balance):
//! - Money is `i64` minor units with checked arithmetic; there is no float.
//! - Every posting writes one debit and one credit entry of the same amount and currency;
//!   per batch, Σ debits == Σ credits per currency, checked on what was written before COMMIT.
//! - A balance changes only together with an entry, and only by the writer.
//! - The policy decision, the posting, their audit records and the idempotency row of a
//!   transfer commit in one transaction, or none of them do.
//! - Without overdraft, `balance - reserved >= 0` (reserved = pending debits held for
//!   approval); an approval request leaves `pending` once (exactly one outcome); nobody
//!   approves their own transfer or acts twice on one request.
//!
//! Deliberately absent: HTTP, TLS, policy evaluation (the gateway passes a `decide` callback),
//! and the encoding of audit records (only `countersign_audit` knows it).
#![forbid(unsafe_code)]

pub mod account;
pub mod approval;
pub mod error;
pub mod money;
pub mod store;
pub mod transfer;

pub use account::{Account, AccountId, AccountState, AccountStatus, NewAccount};
pub use approval::{
    APPROVALS_REQUIRED_MAX, ApprovalAction, ApprovalCommand, ApprovalContext, ApprovalDecide,
    ApprovalEvent, ApprovalOutcome, ApprovalQuery, ApprovalRequest, ApprovalRequirement,
    ApprovalStatus, ApprovalVerdict, approval_reason_codes,
};
pub use error::{DomainError, LedgerError};
pub use money::{Amount, Currency, format_minor};
pub use store::{
    CurrencyTotals, InvariantReport, LedgerStore, NO_POLICY_BUNDLE, OutboxFullPolicy, PgStore,
    SYSTEM_SUBJECT, SqliteStore, Store, StoreLimits, StoreOptions, WriterStats,
};
pub use transfer::{
    Decide, DecisionContext, IdempotencyClaim, IdempotencyOutcome, Reason, SeedTransfer,
    StoredIdempotency, Transfer, TransferCommand, TransferOutcome, Verdict, reason_codes,
};
