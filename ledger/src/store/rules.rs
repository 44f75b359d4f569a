//! The ledger's rules and records shared by both writers (SQLite and PostgreSQL): calling the
//! policy callback safely, the refusals the ledger applies whatever the policy said, and the
//! posting record. One copy, so the back ends cannot drift apart.

use std::panic::AssertUnwindSafe;

use countersign_audit::{NewRecord, Outcome, RecordKind, Subject};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::account::{Account, AccountStatus};
use crate::error::LedgerError;
use crate::money::Amount;
use crate::transfer::{Decide, DecisionContext, Transfer, Verdict, reason_codes};

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

pub(crate) fn posting_record(
    transfer: &Transfer,
    provenance: Provenance,
    now: OffsetDateTime,
) -> NewRecord {
    let amount = transfer.amount.to_decimal_string();
    let currency = transfer.amount.currency().code();
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
        result: json!({
            "transfer_id": transfer.id.to_string(),
            "amount": amount,
            "currency": currency,
        }),
        bundle_revision: provenance.bundle_revision,
        outcome: Outcome::Posted,
        redaction: Default::default(),
    }
}

/// A rule of the ledger itself that a posting would break.
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// The ledger's own rules, checked on the fresh state right before posting, whatever the
/// policy said. Empty means the posting is allowed and its balance arithmetic cannot overflow.
pub(crate) fn ledger_refusals(debit: &Account, credit: &Account, amount: Amount) -> Vec<Refusal> {
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
        Some(after) if after < 0 && !debit.overdraft_allowed => refusals.push(Refusal {
            code: reason_codes::INSUFFICIENT_FUNDS,
            message: "debit account has insufficient funds".to_owned(),
        }),
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
