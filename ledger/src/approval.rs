//! Maker-checker: transfers held for approval by other people than their initiator.
//!
//! Life of an approval request (one per held transfer):
//! - The transfer decision allows with a `require_approval` obligation: the writer records an
//!   [`ApprovalRequest`] in state `pending` instead of posting. Its amount is *reserved* on
//!   the debit account: every check of funds uses `balance - reserved` (see
//!   [`crate::AccountState::available_minor`]), so no later transfer can spend it.
//! - Each approve/reject is a policy decision of its own ([`ApprovalCommand`]), run by the
//!   writer on the locked request and fresh account state. The ledger also enforces, whatever
//!   the policy says: the approver is not the initiator, nobody acts twice on one request,
//!   and only a pending, unexpired request changes.
//! - Enough approvals → the transfer posts (`posted`); a rejection → `rejected`; the timeout
//!   → `expired` (swept by [`crate::Store::expire_approvals`], or found expired by the next
//!   command that touches the request); the ledger refusing the posting at the last approval
//!   (e.g. the account was frozen meanwhile) → `failed`. Every end but `posted` releases the
//!   reservation. A request leaves `pending` once, in one transaction: exactly one outcome.
//!
//! Audit records of the story, all linked to the initiation decision id (`decision_id` of
//! the reservation, posting and release records; `initiation_decision_id` in the input of
//! each approve/reject decision and in the result of each approval record):
//! decision (outcome pending) → reservation → per step: decision (allow/deny/error) and, when
//! the policy allowed, an approval record (allow = accepted, deny = refused by the ledger)
//! → posting, or release (outcome voided).

use std::fmt;

use countersign_audit::NewRecord;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::account::{AccountId, AccountState};
use crate::money::Amount;
use crate::transfer::{Reason, Transfer};

/// Most approvals a request may require: a policy asking for more is a policy bug.
pub const APPROVALS_REQUIRED_MAX: u32 = 10;

/// What the transfer decision's `require_approval` obligation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequirement {
    /// 1..=[`APPROVALS_REQUIRED_MAX`].
    pub approvals_required: u32,
    /// Roles the obligation allows to approve (the approval policy checks them).
    pub approver_roles: Vec<String>,
    /// When the request expires if it is still pending.
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Posted,
    Rejected,
    Expired,
    Failed,
}

impl ApprovalStatus {
    /// The stored and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Posted => "posted",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<ApprovalStatus> {
        match text {
            "pending" => Some(ApprovalStatus::Pending),
            "posted" => Some(ApprovalStatus::Posted),
            "rejected" => Some(ApprovalStatus::Rejected),
            "expired" => Some(ApprovalStatus::Expired),
            "failed" => Some(ApprovalStatus::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalAction {
    Approve,
    Reject,
}

impl ApprovalAction {
    /// The stored and JSON spelling, also the policy input's `action`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalAction::Approve => "approve",
            ApprovalAction::Reject => "reject",
        }
    }

    pub fn parse(text: &str) -> Option<ApprovalAction> {
        match text {
            "approve" => Some(ApprovalAction::Approve),
            "reject" => Some(ApprovalAction::Reject),
            _ => None,
        }
    }
}

/// One accepted approve or reject (refused attempts are only in the audit trail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalEvent {
    pub action: ApprovalAction,
    pub approver_fingerprint: String,
    pub approver_common_name: Option<String>,
    /// The approve/reject decision that allowed it.
    pub decision_id: Uuid,
    pub comment: Option<String>,
    pub at: OffsetDateTime,
}

/// A transfer held for approval, with what happened to it so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    /// The approval id.
    pub id: Uuid,
    /// The id the transfer posts under.
    pub transfer_id: Uuid,
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    pub amount: Amount,
    pub end_to_end_id: Option<String>,
    pub purpose: Option<String>,
    pub remittance_info: Option<String>,
    /// The transfer decision that asked for approval: the thread of the audit story.
    pub initiation_decision_id: Uuid,
    pub initiator_fingerprint: String,
    pub initiator_common_name: Option<String>,
    pub approvals_required: u32,
    pub approver_roles: Vec<String>,
    pub status: ApprovalStatus,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// Set when the status left `pending`.
    pub resolved_at: Option<OffsetDateTime>,
    /// The decision that ended it (last approval, rejection); `None` for expiry.
    pub resolution_decision_id: Option<Uuid>,
    /// Accepted approvals and rejections, oldest first.
    pub events: Vec<ApprovalEvent>,
}

impl ApprovalRequest {
    /// Accepted approvals so far.
    pub fn approvals(&self) -> impl Iterator<Item = &ApprovalEvent> {
        self.events
            .iter()
            .filter(|event| event.action == ApprovalAction::Approve)
    }

    /// True once `now` is at or past the expiry.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        now >= self.expires_at
    }
}

/// What the approval decision callback sees, read by the writer inside the transaction that
/// will apply the outcome. `request.status` is already `expired` if the request ran out.
#[derive(Debug, Clone)]
pub struct ApprovalContext {
    pub request: ApprovalRequest,
    pub debit: AccountState,
    pub credit: AccountState,
    pub audit_writable: bool,
    pub now: OffsetDateTime,
}

/// The approval decision's answer: `decision_record` must be a `RecordKind::Decision` whose
/// outcome is `Allow` exactly when `allow` is true.
pub type ApprovalDecide = Box<dyn FnOnce(&ApprovalContext) -> ApprovalVerdict + Send>;

#[derive(Debug)]
pub struct ApprovalVerdict {
    pub allow: bool,
    pub reasons: Vec<Reason>,
    pub decision_record: NewRecord,
}

pub struct ApprovalCommand {
    /// The held transfer's id (`/v1/transfers/{id}/approve`).
    pub transfer_id: Uuid,
    /// The request's accounts as the caller read them: the PostgreSQL writer locks them at
    /// batch start. The writer refuses the command if they differ from the stored request.
    pub debit_account: AccountId,
    pub credit_account: AccountId,
    pub action: ApprovalAction,
    pub approver_fingerprint: String,
    pub approver_common_name: Option<String>,
    pub comment: Option<String>,
    pub decide: ApprovalDecide,
}

impl fmt::Debug for ApprovalCommand {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ApprovalCommand")
            .field("transfer_id", &self.transfer_id)
            .field("action", &self.action)
            .field("approver_fingerprint", &self.approver_fingerprint)
            .finish_non_exhaustive()
    }
}

// One value per request, moved once into a response: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// The approval or rejection was accepted. `request.status` says where the request stands
    /// now: still `pending` (more approvals needed), `posted` (then `transfer` is set),
    /// `rejected`, or `failed` (the ledger refused to post; `refusals` says why).
    Accepted {
        request: ApprovalRequest,
        decision_id: Uuid,
        transfer: Option<Transfer>,
        refusals: Vec<Reason>,
    },
    /// Refused by the policy, or by the ledger's own rules (reason codes `ledger.*`, e.g.
    /// [`approval_reason_codes::SELF_APPROVAL`]). Nothing changed but the audit trail (and an
    /// expired request being marked expired).
    Denied {
        request: ApprovalRequest,
        decision_id: Uuid,
        reasons: Vec<Reason>,
    },
}

impl ApprovalOutcome {
    /// The request as it stands after the step, whichever way it went.
    pub fn request(&self) -> &ApprovalRequest {
        match self {
            ApprovalOutcome::Accepted { request, .. } | ApprovalOutcome::Denied { request, .. } => {
                request
            }
        }
    }
}

/// Reason codes the ledger uses when it refuses an approve/reject the policy allowed.
pub mod approval_reason_codes {
    /// Four eyes: the initiator may not approve or reject their own transfer.
    pub const SELF_APPROVAL: &str = "ledger.self_approval";
    /// The same person already approved or rejected this request.
    pub const ALREADY_DECIDED: &str = "ledger.approval_already_decided";
    /// The request is no longer pending (posted, rejected, expired or failed).
    pub const NOT_PENDING: &str = "ledger.approval_not_pending";
}

/// `GET /v1/approvals` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalQuery {
    pub status: Option<ApprovalStatus>,
    /// Keyset pagination: requests created strictly after this approval id (ids are UUIDv7,
    /// so their order is creation order).
    pub after: Option<Uuid>,
    /// 1..=1000.
    pub limit: u32,
}
