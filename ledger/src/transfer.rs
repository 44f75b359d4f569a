//! Transfers and the commands/outcomes of submitting one.

use std::fmt;

use countersign_audit::NewRecord;
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::account::{AccountId, AccountState};
use crate::approval::{ApprovalRequest, ApprovalRequirement};
use crate::money::Amount;

/// A posted transfer: one debit entry on `debit_account`, one credit entry on
/// `credit_account`, both of `amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: Uuid,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    pub amount: Amount,
    pub end_to_end_id: Option<String>,
    pub purpose: Option<String>,
    pub remittance_info: Option<String>,
    /// The decision that allowed this posting (links to the audit trail).
    pub decision_id: Uuid,
    pub initiator_fingerprint: String,
    /// UTC calendar date the transfer counts against (daily limits).
    pub business_date: Date,
    pub posted_at: OffsetDateTime,
}

/// Why a transfer was denied, by the policy or by the ledger itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Machine-readable, e.g. "limits.daily_exceeded" or "ledger.insufficient_funds".
    pub code: String,
    pub message: String,
}

impl Reason {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Reason {
        Reason {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Reason codes the ledger itself uses when it refuses a transfer the policy allowed.
pub mod reason_codes {
    pub const ACCOUNT_NOT_ACTIVE: &str = "ledger.account_not_active";
    pub const CURRENCY_MISMATCH: &str = "ledger.currency_mismatch";
    pub const SAME_ACCOUNT: &str = "ledger.same_account";
    pub const INSUFFICIENT_FUNDS: &str = "ledger.insufficient_funds";
    pub const BALANCE_OVERFLOW: &str = "ledger.balance_overflow";
    /// `set_account_status`: a closed account stays closed.
    pub const ACCOUNT_CLOSED: &str = "ledger.account_closed";
    /// `set_account_status`: only an account with balance zero can be closed.
    pub const BALANCE_NOT_ZERO: &str = "ledger.balance_not_zero";
}

/// The (scope, key) an HTTP `Idempotency-Key` maps to, and the SHA-256 of the request it
/// was first used with. Scope is chosen by the caller (e.g. the client fingerprint) so two
/// clients never collide on a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    pub scope: String,
    pub key: String,
    pub request_hash: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdempotencyOutcome {
    Posted,
    Denied,
    /// Held for approval: `approval_id` is set.
    Pending,
}

impl IdempotencyOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            IdempotencyOutcome::Posted => "posted",
            IdempotencyOutcome::Denied => "denied",
            IdempotencyOutcome::Pending => "pending",
        }
    }
}

/// What the first request with an idempotency key produced; replayed to later requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIdempotency {
    pub scope: String,
    pub key: String,
    pub request_hash: [u8; 32],
    pub outcome: IdempotencyOutcome,
    /// Set when `outcome` is `Posted`; read the transfer with `Store::transfer`.
    pub transfer_id: Option<Uuid>,
    /// Set when `outcome` is `Pending`; read the request with `Store::approval_by_id`.
    pub approval_id: Option<Uuid>,
    pub decision_id: Uuid,
    /// Empty when posted.
    pub reasons: Vec<Reason>,
    pub created_at: OffsetDateTime,
}

/// What `decide` sees: both accounts read on the writer connection inside the transaction
/// that will post, so the policy and the ledger judge the same balances.
#[derive(Debug, Clone)]
pub struct DecisionContext {
    pub debit: AccountState,
    pub credit: AccountState,
    /// False if the last audit write failed: a policy can fail closed on it.
    pub audit_writable: bool,
    /// Decision time (UTC); `business_date` of a posting is its date.
    pub now: OffsetDateTime,
}

/// The policy's answer. `decision_record` must be a `RecordKind::Decision` whose outcome is
/// `Pending` when `approval` is set (then `allow` is true), else `Allow` exactly when `allow`
/// is true; the ledger appends it to the audit trail whatever happens next.
#[derive(Debug)]
pub struct Verdict {
    pub allow: bool,
    pub reasons: Vec<Reason>,
    /// Allowed subject to approval (the `require_approval` obligation): hold, don't post.
    pub approval: Option<ApprovalRequirement>,
    pub decision_record: NewRecord,
}

/// Runs on the ledger writer task, inside the write transaction: keep it fast and
/// non-blocking (no I/O, no locks held by request handlers), every write waits for it.
pub type Decide = Box<dyn FnOnce(&DecisionContext) -> Verdict + Send>;

pub struct TransferCommand {
    pub transfer_id: Uuid,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    pub amount: Amount,
    pub end_to_end_id: Option<String>,
    pub purpose: Option<String>,
    pub remittance_info: Option<String>,
    pub initiator_fingerprint: String,
    /// Shown to approvers; kept on the approval request if the transfer is held.
    pub initiator_common_name: Option<String>,
    pub idempotency: IdempotencyClaim,
    pub decide: Decide,
}

impl fmt::Debug for TransferCommand {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TransferCommand")
            .field("transfer_id", &self.transfer_id)
            .field("debit_account", &self.debit_account)
            .field("credit_account", &self.credit_account)
            .field("amount", &self.amount)
            .field("idempotency_key", &self.idempotency.key)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// Decision record, transfer, both entries, posting record and idempotency row committed.
    Posted {
        transfer: Transfer,
        decision_id: Uuid,
    },
    /// Denied by the policy, or allowed by the policy and refused by the ledger (reason codes
    /// `ledger.*`). Decision record and idempotency row committed; nothing posted.
    Denied {
        decision_id: Uuid,
        reasons: Vec<Reason>,
    },
    /// Allowed subject to approval: decision record, approval request (funds reserved),
    /// reservation record and idempotency row committed; nothing posted yet.
    Pending {
        request: ApprovalRequest,
        decision_id: Uuid,
    },
    /// The idempotency key was already used with the same request hash; nothing written.
    Replayed(StoredIdempotency),
}

/// A system posting without policy, for funding demo/dev accounts from an internal account
/// (typically `SYSTEM-FUNDING-<CCY>` with overdraft allowed). Still audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedTransfer {
    pub transfer_id: Uuid,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    pub amount: Amount,
    pub remittance_info: Option<String>,
}
