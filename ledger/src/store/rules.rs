//! The ledger's rules and records shared by both writers (SQLite and PostgreSQL): calling the
//! policy callback safely, the refusals the ledger applies whatever the policy said, and the
//! posting record. One copy, so the back ends cannot drift apart.

use std::panic::AssertUnwindSafe;

use countersign_audit::{NewRecord, Outcome, RecordKind, Subject};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::account::{Account, AccountStatus};
use crate::approval::{
    APPROVALS_REQUIRED_MAX, ApprovalAction, ApprovalContext, ApprovalDecide, ApprovalEvent,
    ApprovalOutcome, ApprovalRequest, ApprovalStatus, ApprovalVerdict, approval_reason_codes,
};
use crate::error::LedgerError;
use crate::money::Amount;
use crate::store::writer::{NO_POLICY_BUNDLE, SYSTEM_SUBJECT};
use crate::transfer::{Decide, DecisionContext, Reason, Transfer, Verdict, reason_codes};

/// Calls the policy callback. A panic or a self-contradicting verdict fails this command only:
/// a bug in the policy glue must not take the ledger writer (and every other request) down.
pub(crate) fn run_decide(
    decide: Decide,
    context: &DecisionContext,
) -> Result<Verdict, LedgerError> {
    let verdict = std::panic::catch_unwind(AssertUnwindSafe(|| decide(context)))
        .map_err(|_| LedgerError::DecisionFailed("the decide callback panicked".to_owned()))?;
    let record = &verdict.decision_record;
    if record.kind != RecordKind::Decision {
        return Err(LedgerError::DecisionFailed(
            "decision_record.kind must be decision".to_owned(),
        ));
    }
    match &verdict.approval {
        None if verdict.allow != (record.outcome == Outcome::Allow) => {
            return Err(LedgerError::DecisionFailed(
                "verdict.allow disagrees with decision_record.outcome".to_owned(),
            ));
        }
        None => {}
        Some(approval) => {
            if !verdict.allow || record.outcome != Outcome::Pending {
                return Err(LedgerError::DecisionFailed(
                    "a verdict requiring approval must allow, with outcome pending".to_owned(),
                ));
            }
            if !(1..=APPROVALS_REQUIRED_MAX).contains(&approval.approvals_required) {
                return Err(LedgerError::DecisionFailed(format!(
                    "approvals_required must be 1..={APPROVALS_REQUIRED_MAX}"
                )));
            }
            if approval.expires_at <= context.now {
                return Err(LedgerError::DecisionFailed(
                    "an approval request must expire after it is made".to_owned(),
                ));
            }
        }
    }
    Ok(verdict)
}

/// [`run_decide`] for an approve/reject decision.
pub(crate) fn run_approval_decide(
    decide: ApprovalDecide,
    context: &ApprovalContext,
) -> Result<ApprovalVerdict, LedgerError> {
    let verdict = std::panic::catch_unwind(AssertUnwindSafe(|| decide(context)))
        .map_err(|_| LedgerError::DecisionFailed("the decide callback panicked".to_owned()))?;
    let record = &verdict.decision_record;
    if record.kind != RecordKind::Decision {
        return Err(LedgerError::DecisionFailed(
            "decision_record.kind must be decision".to_owned(),
        ));
    }
    if verdict.allow != (record.outcome == Outcome::Allow) {
        return Err(LedgerError::DecisionFailed(
            "verdict.allow disagrees with decision_record.outcome".to_owned(),
        ));
    }
    Ok(verdict)
}

/// Who and what a posting record is attributed to: copied from its decision record.
pub(crate) struct Provenance {
    pub(crate) decision_id: Uuid,
    pub(crate) subject: Subject,
    pub(crate) source_address: String,
    pub(crate) bundle_revision: String,
}

impl Provenance {
    pub(crate) fn of(record: &NewRecord) -> Provenance {
        Provenance {
            decision_id: record.decision_id,
            subject: record.subject.clone(),
            source_address: record.source_address.clone(),
            bundle_revision: record.bundle_revision.clone(),
        }
    }
}

/// The posting record of a transfer; `approval` is the request it was held under, if any
/// (its id and the approving decisions go into the result, linking the story).
pub(crate) fn posting_record(
    transfer: &Transfer,
    provenance: Provenance,
    approval: Option<&ApprovalRequest>,
    now: OffsetDateTime,
) -> NewRecord {
    let amount = transfer.amount.to_decimal_string();
    let currency = transfer.amount.currency().code();
    let mut result = json!({
        "transfer_id": transfer.id.to_string(),
        "amount": amount,
        "currency": currency,
    });
    if let Some(request) = approval {
        result["approval_id"] = json!(request.id.to_string());
        result["initiation_decision_id"] = json!(request.initiation_decision_id.to_string());
        result["approval_decision_ids"] = request
            .approvals()
            .map(|event| json!(event.decision_id.to_string()))
            .collect();
    }
    NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Posting,
        decision_id: provenance.decision_id,
        timestamp: now,
        subject: provenance.subject,
        source_address: provenance.source_address,
        action: "ledger.post".to_owned(),
        masked_input: json!({
            "debit_account": transfer.debit_account.masked(),
            "credit_account": transfer.credit_account.masked(),
            "amount": amount,
            "currency": currency,
        }),
        result,
        bundle_revision: provenance.bundle_revision,
        outcome: Outcome::Posted,
        redaction: Default::default(),
        sealed_input: None,
    }
}

/// A rule of the ledger itself that a posting would break.
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// The ledger's own rules, checked on the fresh state right before posting (or reserving),
/// whatever the policy said. `reserved_minor` is what other held transfers have reserved on
/// the debit account: without overdraft, `balance - reserved - amount` may not go negative.
/// Empty means the posting is allowed and its balance arithmetic cannot overflow.
pub(crate) fn ledger_refusals(
    debit: &Account,
    credit: &Account,
    amount: Amount,
    reserved_minor: i64,
) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    if debit.id == credit.id {
        refusals.push(Refusal {
            code: reason_codes::SAME_ACCOUNT,
            message: "debit and credit account are the same".to_owned(),
        });
        return refusals;
    }
    for (side, account) in [("debit", debit), ("credit", credit)] {
        if account.status != AccountStatus::Active {
            refusals.push(Refusal {
                code: reason_codes::ACCOUNT_NOT_ACTIVE,
                message: format!("{side} account is {}", account.status.as_str()),
            });
        }
        if account.currency != amount.currency() {
            refusals.push(Refusal {
                code: reason_codes::CURRENCY_MISMATCH,
                message: format!(
                    "{side} account is in {}, the amount in {}",
                    account.currency,
                    amount.currency()
                ),
            });
        }
    }
    match debit.balance_minor.checked_sub(amount.minor_units()) {
        None => refusals.push(Refusal {
            code: reason_codes::BALANCE_OVERFLOW,
            message: "debit balance would overflow".to_owned(),
        }),
        Some(after)
            if i128::from(after) - i128::from(reserved_minor) < 0 && !debit.overdraft_allowed =>
        {
            refusals.push(Refusal {
                code: reason_codes::INSUFFICIENT_FUNDS,
                message: if reserved_minor > 0 {
                    "debit account has insufficient funds (part of its balance is reserved for \
                     transfers awaiting approval)"
                        .to_owned()
                } else {
                    "debit account has insufficient funds".to_owned()
                },
            })
        }
        Some(_) => {}
    }
    if credit
        .balance_minor
        .checked_add(amount.minor_units())
        .is_none()
    {
        refusals.push(Refusal {
            code: reason_codes::BALANCE_OVERFLOW,
            message: "credit balance would overflow".to_owned(),
        });
    }
    refusals
}

fn system_subject() -> Subject {
    Subject {
        fingerprint_sha256: SYSTEM_SUBJECT.to_owned(),
        common_name: Some(SYSTEM_SUBJECT.to_owned()),
        roles: vec![SYSTEM_SUBJECT.to_owned()],
    }
}

/// The masked facts of a held transfer, as its approval, reservation and release records
/// show them.
fn request_summary(request: &ApprovalRequest) -> serde_json::Value {
    json!({
        "transfer_id": request.transfer_id.to_string(),
        "approval_id": request.id.to_string(),
        "initiation_decision_id": request.initiation_decision_id.to_string(),
        "debit_account": request.debit_account.masked(),
        "credit_account": request.credit_account.masked(),
        "amount": request.amount.to_decimal_string(),
        "currency": request.amount.currency().code(),
    })
}

/// The reservation record of a transfer held for approval: same decision id as the decision
/// that held it.
pub(crate) fn reservation_record(
    request: &ApprovalRequest,
    provenance: Provenance,
    now: OffsetDateTime,
) -> NewRecord {
    NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Reservation,
        decision_id: provenance.decision_id,
        timestamp: now,
        subject: provenance.subject,
        source_address: provenance.source_address,
        action: "ledger.reserve".to_owned(),
        masked_input: request_summary(request),
        result: json!({
            "transfer_id": request.transfer_id.to_string(),
            "approval_id": request.id.to_string(),
            "initiation_decision_id": request.initiation_decision_id.to_string(),
            "status": request.status.as_str(),
            "approvals_required": request.approvals_required,
            "approver_roles": request.approver_roles,
            "expires_at": countersign_audit::encoding::format_timestamp(request.expires_at),
            "reserved": request.amount.to_decimal_string(),
            "currency": request.amount.currency().code(),
        }),
        bundle_revision: provenance.bundle_revision,
        outcome: Outcome::Pending,
        redaction: Default::default(),
        sealed_input: None,
    }
}

/// Why a held transfer was voided, as its release record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReleaseCause {
    Rejected,
    Expired,
    /// The ledger refused to post at the last approval.
    Refused,
}

impl ReleaseCause {
    fn as_str(self) -> &'static str {
        match self {
            ReleaseCause::Rejected => "rejected",
            ReleaseCause::Expired => "expired",
            ReleaseCause::Refused => "refused",
        }
    }
}

/// The release record of a voided held transfer. Its decision id is the initiation
/// decision's; `by` is the step that caused it (none for expiry, which the system does).
pub(crate) fn release_record(
    request: &ApprovalRequest,
    cause: ReleaseCause,
    by: Option<&Provenance>,
    reasons: &[Reason],
    now: OffsetDateTime,
) -> NewRecord {
    let (subject, source_address, bundle_revision, by_decision) = match by {
        Some(step) => (
            step.subject.clone(),
            step.source_address.clone(),
            step.bundle_revision.clone(),
            json!(step.decision_id.to_string()),
        ),
        None => (
            system_subject(),
            SYSTEM_SUBJECT.to_owned(),
            NO_POLICY_BUNDLE.to_owned(),
            serde_json::Value::Null,
        ),
    };
    NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Release,
        decision_id: request.initiation_decision_id,
        timestamp: now,
        subject,
        source_address,
        action: format!("ledger.release.{}", cause.as_str()),
        masked_input: request_summary(request),
        result: json!({
            "transfer_id": request.transfer_id.to_string(),
            "approval_id": request.id.to_string(),
            "initiation_decision_id": request.initiation_decision_id.to_string(),
            "status": request.status.as_str(),
            "cause": cause.as_str(),
            "by_decision_id": by_decision,
            "reasons": reasons,
            "released": request.amount.to_decimal_string(),
            "currency": request.amount.currency().code(),
        }),
        bundle_revision,
        outcome: Outcome::Voided,
        redaction: Default::default(),
        sealed_input: None,
    }
}

/// The record of an approve/reject the policy allowed: accepted (outcome allow) or refused by
/// the ledger's own rules (outcome deny, with the reasons).
fn approval_record(
    request: &ApprovalRequest,
    action: ApprovalAction,
    step: &Provenance,
    reasons: &[Reason],
    now: OffsetDateTime,
) -> NewRecord {
    let accepted = reasons.is_empty();
    NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Approval,
        decision_id: step.decision_id,
        timestamp: now,
        subject: step.subject.clone(),
        source_address: step.source_address.clone(),
        action: format!("approval.{}", action.as_str()),
        masked_input: request_summary(request),
        result: json!({
            "transfer_id": request.transfer_id.to_string(),
            "approval_id": request.id.to_string(),
            "initiation_decision_id": request.initiation_decision_id.to_string(),
            "accepted": accepted,
            "reasons": reasons,
            "approvals": request.approvals().count(),
            "approvals_required": request.approvals_required,
            "status": request.status.as_str(),
        }),
        bundle_revision: step.bundle_revision.clone(),
        outcome: if accepted {
            Outcome::Allow
        } else {
            Outcome::Deny
        },
        redaction: Default::default(),
        sealed_input: None,
    }
}

/// The ledger's own rules for an approve/reject, whatever the policy said: four eyes (the
/// initiator never acts on their own transfer), one action per person per request, and only
/// a pending request changes.
pub(crate) fn approval_refusals(
    request: &ApprovalRequest,
    approver_fingerprint: &str,
) -> Vec<Reason> {
    let mut refusals = Vec::new();
    if request.status != ApprovalStatus::Pending {
        refusals.push(Reason::new(
            approval_reason_codes::NOT_PENDING,
            format!(
                "the transfer is no longer pending approval (status: {})",
                request.status.as_str()
            ),
        ));
    }
    if request.initiator_fingerprint == approver_fingerprint {
        refusals.push(Reason::new(
            approval_reason_codes::SELF_APPROVAL,
            "four eyes: the initiator of a transfer may not approve or reject it",
        ));
    }
    if request
        .events
        .iter()
        .any(|event| event.approver_fingerprint == approver_fingerprint)
    {
        refusals.push(Reason::new(
            approval_reason_codes::ALREADY_DECIDED,
            "this approver already acted on this transfer",
        ));
    }
    refusals
}

/// What the writer does for one approve/reject. Decided here, from the locked request, the
/// fresh state and the verdict, so both back ends apply the same rules; the back end only
/// executes it, in this order: insert `event`, store the final status if `resolves`, post
/// `posting`, append `records`.
pub(crate) struct ApprovalPlan {
    pub(crate) event: Option<ApprovalEvent>,
    /// The step ended the request: its final status, time and deciding step are those of the
    /// request in `outcome`.
    pub(crate) resolves: bool,
    pub(crate) posting: Option<Transfer>,
    pub(crate) records: Vec<NewRecord>,
    pub(crate) outcome: ApprovalOutcome,
}

/// The approver's side of an approval command.
pub(crate) struct ApprovalStep {
    pub(crate) action: ApprovalAction,
    pub(crate) approver_fingerprint: String,
    pub(crate) approver_common_name: Option<String>,
    pub(crate) comment: Option<String>,
}

pub(crate) fn plan_approval(
    step: ApprovalStep,
    context: ApprovalContext,
    verdict: ApprovalVerdict,
) -> ApprovalPlan {
    let ApprovalContext {
        mut request,
        debit,
        credit,
        now,
        ..
    } = context;
    let ApprovalVerdict {
        allow,
        reasons,
        decision_record,
    } = verdict;
    let decision_id = decision_record.decision_id;
    let provenance = Provenance::of(&decision_record);
    let mut records = vec![decision_record];
    let denied = |request, records, reasons| ApprovalPlan {
        event: None,
        resolves: false,
        posting: None,
        records,
        outcome: ApprovalOutcome::Denied {
            request,
            decision_id,
            reasons,
        },
    };
    if !allow {
        return denied(request, records, reasons);
    }
    let refusals = approval_refusals(&request, &step.approver_fingerprint);
    if !refusals.is_empty() {
        tracing::warn!(
            transfer_id = %request.transfer_id,
            %decision_id,
            reason = %refusals[0].code,
            "policy allowed an approval step the ledger refuses"
        );
        records.push(approval_record(
            &request,
            step.action,
            &provenance,
            &refusals,
            now,
        ));
        return denied(request, records, refusals);
    }

    let event = ApprovalEvent {
        action: step.action,
        approver_fingerprint: step.approver_fingerprint,
        approver_common_name: step.approver_common_name,
        decision_id,
        comment: step.comment,
        at: now,
    };
    request.events.push(event.clone());
    let mut resolution = None;
    let mut posting = None;
    let mut release = None;
    let mut refusals = Vec::new();
    match step.action {
        ApprovalAction::Reject => {
            resolution = Some(ApprovalStatus::Rejected);
            release = Some(ReleaseCause::Rejected);
        }
        ApprovalAction::Approve => {
            let approvals = request.approvals().count();
            if approvals >= request.approvals_required as usize {
                // This request's own reservation becomes the debit: only the others count.
                let reserved_by_others = debit.reserved_minor - request.amount.minor_units();
                assert!(
                    reserved_by_others >= 0,
                    "ledger invariant broken: a pending request is not part of its account's reservations"
                );
                refusals = ledger_refusals(
                    &debit.account,
                    &credit.account,
                    request.amount,
                    reserved_by_others,
                )
                .into_iter()
                .map(|refusal| Reason::new(refusal.code, refusal.message))
                .collect();
                if refusals.is_empty() {
                    resolution = Some(ApprovalStatus::Posted);
                    posting = Some(Transfer {
                        id: request.transfer_id,
                        debit_account: request.debit_account.clone(),
                        credit_account: request.credit_account.clone(),
                        amount: request.amount,
                        end_to_end_id: request.end_to_end_id.clone(),
                        purpose: request.purpose.clone(),
                        remittance_info: request.remittance_info.clone(),
                        decision_id: request.initiation_decision_id,
                        initiator_fingerprint: request.initiator_fingerprint.clone(),
                        business_date: now.date(),
                        posted_at: now,
                    });
                } else {
                    tracing::warn!(
                        transfer_id = %request.transfer_id,
                        reason = %refusals[0].code,
                        "approved transfer refused by the ledger at posting"
                    );
                    resolution = Some(ApprovalStatus::Failed);
                    release = Some(ReleaseCause::Refused);
                }
            }
        }
    }
    if let Some(status) = resolution {
        request.status = status;
        request.resolved_at = Some(now);
        request.resolution_decision_id = Some(decision_id);
    }
    records.push(approval_record(
        &request,
        step.action,
        &provenance,
        &[],
        now,
    ));
    if let Some(transfer) = &posting {
        let posting_provenance = Provenance {
            decision_id: request.initiation_decision_id,
            ..provenance
        };
        records.push(posting_record(
            transfer,
            posting_provenance,
            Some(&request),
            now,
        ));
    } else if let Some(cause) = release {
        records.push(release_record(
            &request,
            cause,
            Some(&provenance),
            &refusals,
            now,
        ));
    }
    ApprovalPlan {
        event: Some(event),
        resolves: resolution.is_some(),
        posting: posting.clone(),
        records,
        outcome: ApprovalOutcome::Accepted {
            request,
            decision_id,
            transfer: posting,
            refusals,
        },
    }
}

/// Marks `request` expired in memory and returns its release record; the back end sets the
/// stored status (only if it is still pending) and appends the record.
pub(crate) fn expire(request: &mut ApprovalRequest, now: OffsetDateTime) -> NewRecord {
    assert_eq!(
        request.status,
        ApprovalStatus::Pending,
        "only a pending request expires"
    );
    request.status = ApprovalStatus::Expired;
    request.resolved_at = Some(now);
    release_record(request, ReleaseCause::Expired, None, &[], now)
}
