//! Maker-checker over HTTP: `POST /v1/transfers/{id}/approve`, `POST /v1/transfers/{id}/reject`
//! and `GET /v1/approvals`. (`GET /v1/transfers/{id}` shows a held transfer's approval too;
//! that handler lives in `transfers.rs`.)
//!
//! An approve or reject, in this order, and why:
//! 1. the id and the optional body (`{"comment"}`) are checked first: bad input writes nothing;
//! 2. the held transfer is read (404 if there is none) for its accounts, which the PostgreSQL
//!    writer locks at batch start; the ledger re-checks them against the stored request;
//! 3. the ledger's writer locks the request, reads fresh balances and calls back into
//!    [`decide_approval_now`]: `data.countersign.approval.decision` decides on the request as
//!    it stands *now* (status, approvals so far), and the decision is audited whatever happens
//!    next;
//! 4. the ledger applies its own four-eyes rules even when the policy allowed (the initiator
//!    never acts on their own transfer, one action per person, only a pending unexpired
//!    request changes), then posts at the last approval or releases the reservation.
//!
//! No role is checked here: every call by an authenticated client is a policy decision of its
//! own and audited, so a non-approver's attempt is on the record too.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Extension, Json,
    extract::{
        Path, Query, State,
        rejection::{BytesRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use countersign_audit::{NewRecord, RecordKind, decision_path};
use countersign_ledger::{
    ApprovalAction, ApprovalCommand, ApprovalContext, ApprovalEvent, ApprovalOutcome,
    ApprovalQuery, ApprovalRequest, ApprovalStatus, ApprovalVerdict, Reason, approval_reason_codes,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    ApiError, decode_json,
    transfers::{
        Decided, Honours, TransferView, decide_fail_closed, mask_input, optional_text, rfc3339,
        subject_of, transfer_document,
    },
};
use crate::{
    app::{AppState, Caller},
    policy::{APPROVAL_DECISION, PolicyEngine, mask::mask_decision},
    tls::Identity,
};

/// Audit and metrics action of an approval step.
pub const ACTION_APPROVE: &str = "transfer.approve";
pub const ACTION_REJECT: &str = "transfer.reject";
/// Longest approver comment, in characters.
pub const COMMENT_CHARS_MAX: usize = 280;
/// `GET /v1/approvals` page size: default and bound.
pub const LIST_LIMIT_DEFAULT: u32 = 100;
pub const LIST_LIMIT_MAX: u32 = 1_000;
/// Roles that may list approval requests (approvers find their work; auditors and admins
/// oversee it).
pub const LIST_ROLES: &[&str] = &["approver", "auditor", "admin"];

/// The audit action of an approve or reject.
pub fn action_name(action: ApprovalAction) -> &'static str {
    match action {
        ApprovalAction::Approve => ACTION_APPROVE,
        ApprovalAction::Reject => ACTION_REJECT,
    }
}

/// Compiles the approval rule with `engine` (kept with it, so once per bundle) so no
/// approve/reject pays for a compile. A bundle without the rule is still served: held
/// transfers then cannot be approved (every step is denied with outcome `error`) and expire,
/// which fails closed; the warning says why. (Refusing such a bundle would refuse every
/// bundle that predates maker-checker.)
pub fn prepare_policy(engine: &PolicyEngine) {
    if let Err(error) = engine.for_entrypoint(APPROVAL_DECISION) {
        tracing::warn!(
            entrypoint = APPROVAL_DECISION,
            error = %error,
            "the policy bundle has no usable approval rule; approve/reject steps will be denied"
        );
    }
}

/// Who initiated or approved, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartyView {
    pub fingerprint_sha256: String,
    pub common_name: Option<String>,
}

/// One accepted approve or reject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalHistoryView {
    pub action: &'static str,
    pub approver: PartyView,
    pub decision_id: Uuid,
    pub comment: Option<String>,
    pub at: String,
}

/// An approval request as the API shows it (contract: maker-checker-http.md, ApprovalView).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalView {
    pub id: Uuid,
    pub transfer_id: Uuid,
    /// `pending`, `posted`, `rejected`, `expired`, `failed`.
    pub status: &'static str,
    pub debit_account: String,
    pub credit_account: String,
    pub amount: String,
    pub currency: String,
    pub approvals_required: u32,
    pub approvals_received: usize,
    pub approver_roles: Vec<String>,
    pub initiator: PartyView,
    pub initiation_decision_id: Uuid,
    pub created_at: String,
    pub expires_at: String,
    pub resolved_at: Option<String>,
    pub resolution_decision_id: Option<Uuid>,
    /// Accepted approvals and rejections, oldest first (refused attempts are only in the
    /// audit trail).
    pub history: Vec<ApprovalHistoryView>,
}

impl ApprovalView {
    pub fn from_request(request: &ApprovalRequest) -> ApprovalView {
        ApprovalView {
            id: request.id,
            transfer_id: request.transfer_id,
            status: request.status.as_str(),
            debit_account: request.debit_account.as_str().to_owned(),
            credit_account: request.credit_account.as_str().to_owned(),
            amount: request.amount.to_decimal_string(),
            currency: request.amount.currency().code().to_owned(),
            approvals_required: request.approvals_required,
            approvals_received: request.approvals().count(),
            approver_roles: request.approver_roles.clone(),
            initiator: PartyView {
                fingerprint_sha256: request.initiator_fingerprint.clone(),
                common_name: request.initiator_common_name.clone(),
            },
            initiation_decision_id: request.initiation_decision_id,
            created_at: rfc3339(request.created_at),
            expires_at: rfc3339(request.expires_at),
            resolved_at: request.resolved_at.map(rfc3339),
            resolution_decision_id: request.resolution_decision_id,
            history: request.events.iter().map(history_entry).collect(),
        }
    }
}

fn history_entry(event: &ApprovalEvent) -> ApprovalHistoryView {
    ApprovalHistoryView {
        action: event.action.as_str(),
        approver: PartyView {
            fingerprint_sha256: event.approver_fingerprint.clone(),
            common_name: event.approver_common_name.clone(),
        },
        decision_id: event.decision_id,
        comment: event.comment.clone(),
        at: rfc3339(event.at),
    }
}

/// The optional body of an approve/reject.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepRequest {
    #[serde(default)]
    comment: Option<String>,
}

/// The approver's comment: no body (or an empty one) is no comment; otherwise a JSON body
/// `{"comment": ...}` of at most [`COMMENT_CHARS_MAX`] characters without control characters.
fn step_comment(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    body_bytes_max: usize,
) -> Result<Option<String>, ApiError> {
    if matches!(&body, Ok(bytes) if bytes.is_empty()) {
        return Ok(None);
    }
    let request: StepRequest = decode_json(headers, body, body_bytes_max)?;
    optional_text(
        request.comment,
        "comment",
        "comment.invalid",
        COMMENT_CHARS_MAX,
    )
}

fn not_held() -> ApiError {
    ApiError::NotFound {
        code: "transfer.not_found",
        message: "no transfer with this id is held for approval".into(),
    }
}

pub async fn approve(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    step(state, caller, &id, &headers, body, ApprovalAction::Approve).await
}

pub async fn reject(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    step(state, caller, &id, &headers, body, ApprovalAction::Reject).await
}

/// What the approval decision knows about the step besides the ledger's context.
struct StepFacts {
    action: ApprovalAction,
    comment: Option<String>,
    request_id: Uuid,
}

async fn step(
    state: Arc<AppState>,
    caller: Caller,
    id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    action: ApprovalAction,
) -> Result<Response, ApiError> {
    let transfer_id = Uuid::parse_str(id).map_err(|_| not_held())?;
    let comment = step_comment(headers, body, state.config.limits.body_bytes_max)?;
    let held = state
        .store
        .approval(transfer_id)
        .await?
        .ok_or_else(not_held)?;

    // The engine active now decides, even if a reload swaps it before the writer gets to us.
    let policy = state.policy.load_full();
    let facts = StepFacts {
        action,
        comment: comment.clone(),
        request_id: Uuid::now_v7(),
    };
    let decide_state = state.clone();
    let decide_caller = caller.clone();
    let command = ApprovalCommand {
        transfer_id,
        debit_account: held.debit_account,
        credit_account: held.credit_account,
        action,
        approver_fingerprint: caller.identity.fingerprint_sha256.clone(),
        approver_common_name: caller.identity.common_name.clone(),
        comment,
        decide: Box::new(move |context: &ApprovalContext| {
            decide_approval_now(&decide_state, &policy, &decide_caller, &facts, context)
        }),
    };
    let started = Instant::now();
    let outcome = state.store.submit_approval(command).await;
    state
        .metrics
        .ledger_commit_duration
        .observe(started.elapsed().as_secs_f64());
    match outcome? {
        ApprovalOutcome::Accepted {
            request,
            decision_id,
            transfer,
            refusals,
        } => {
            state
                .metrics
                .record_approval_step(action.as_str(), "accepted");
            tracing::info!(
                %transfer_id,
                approval_id = %request.id,
                %decision_id,
                action = action.as_str(),
                status = request.status.as_str(),
                approvals = request.approvals().count(),
                approvals_required = request.approvals_required,
                "approval step accepted"
            );
            Ok((
                StatusCode::OK,
                Json(json!({
                    "approval": ApprovalView::from_request(&request),
                    "decision_id": decision_id,
                    "transfer": transfer.as_ref().map(TransferView::from_transfer),
                    "refusals": refusals,
                })),
            )
                .into_response())
        }
        ApprovalOutcome::Denied {
            request,
            decision_id,
            reasons,
        } => {
            let outcome = if refused_by_ledger(&reasons) {
                "refused"
            } else {
                "denied"
            };
            state.metrics.record_approval_step(action.as_str(), outcome);
            tracing::info!(
                %transfer_id,
                approval_id = %request.id,
                %decision_id,
                action = action.as_str(),
                outcome,
                reasons = ?reasons.iter().map(|reason| reason.code.as_str()).collect::<Vec<_>>(),
                "approval step refused"
            );
            Err(ApiError::PolicyDenied {
                decision_id,
                reasons,
            })
        }
    }
}

/// True when the ledger's own rules refused a step the policy allowed.
fn refused_by_ledger(reasons: &[Reason]) -> bool {
    reasons.iter().any(|reason| {
        [
            approval_reason_codes::SELF_APPROVAL,
            approval_reason_codes::ALREADY_DECIDED,
            approval_reason_codes::NOT_PENDING,
        ]
        .contains(&reason.code.as_str())
    })
}

/// Runs inside the ledger's write transaction, on the locked request: evaluate the approval
/// rule and build the decision record. Any policy failure is a deny with outcome `error`.
fn decide_approval_now(
    state: &AppState,
    policy: &PolicyEngine,
    caller: &Caller,
    step: &StepFacts,
    context: &ApprovalContext,
) -> ApprovalVerdict {
    let action = action_name(step.action);
    let input = approval_input(&caller.identity, caller.remote_address, step, context);
    // The approval rule is a sibling of the transfer rule in the same bundle, compiled when
    // the bundle was (`prepare_policy`).
    let decided = decide_fail_closed(state, action, "approval step", Honours::Nothing, || {
        policy
            .for_entrypoint(APPROVAL_DECISION)
            .and_then(|engine| engine.evaluate(&input))
    });
    // The unmasked input, encrypted, goes with the record (when `[audit.encryption]` is set);
    // if it cannot be sealed the step is denied (fail closed).
    let record_id = Uuid::now_v7();
    let (decided, sealed_input) = super::reveal::seal_decision(
        state,
        record_id,
        &input,
        &[
            context.request.debit_account.as_str(),
            context.request.credit_account.as_str(),
        ],
        decided,
    );
    let Decided {
        allow,
        reasons,
        outcome,
        result,
        ..
    } = decided;
    let decision_id = Uuid::now_v7();
    // The bundle's mask rule sees the approval rule's path; our own masking (account
    // numbers, remittance information) applies on top, as for transfers.
    let masked = mask_decision(policy, &decision_path(action), decision_id, input, result);
    ApprovalVerdict {
        allow,
        reasons,
        decision_record: NewRecord {
            record_id,
            kind: RecordKind::Decision,
            decision_id,
            timestamp: context.now,
            subject: subject_of(caller),
            source_address: caller.remote_address.to_string(),
            action: action.to_owned(),
            masked_input: mask_input(masked.input),
            result: masked.result,
            bundle_revision: policy.revision().to_owned(),
            outcome,
            redaction: masked.redaction,
            sealed_input,
        },
    }
}

/// The approval rule's input (contract: maker-checker-http.md, "Approval decision"), built
/// from the request as the ledger's writer has just read it.
fn approval_input(
    approver: &Identity,
    source_address: SocketAddr,
    step: &StepFacts,
    context: &ApprovalContext,
) -> Value {
    let request = &context.request;
    let approvals: Vec<Value> = request
        .approvals()
        .map(|event| {
            json!({
                "fingerprint_sha256": event.approver_fingerprint,
                "common_name": event.approver_common_name,
                "decision_id": event.decision_id,
                "at": rfc3339(event.at),
            })
        })
        .collect();
    json!({
        "action": step.action.as_str(),
        "approver": approver,
        "initiator": {
            "fingerprint_sha256": request.initiator_fingerprint,
            "common_name": request.initiator_common_name,
        },
        "transfer": transfer_document(
            request.transfer_id,
            &request.debit_account,
            &request.credit_account,
            request.amount,
            request.end_to_end_id.as_deref(),
            request.purpose.as_deref(),
            request.remittance_info.as_deref(),
        ),
        "approval": {
            "id": request.id,
            "status": request.status.as_str(),
            "approvals_required": request.approvals_required,
            "approver_roles": request.approver_roles,
            "approvals": approvals,
            "expires_at": rfc3339(request.expires_at),
            "initiation_decision_id": request.initiation_decision_id,
        },
        "comment": step.comment,
        "context": {
            "time": rfc3339(context.now),
            "request_id": step.request_id,
            "source_address": source_address.to_string(),
            "audit": {"enabled": context.audit_writable},
        },
    })
}

/// `GET /v1/approvals` query parameters as they arrive (strings, so errors can name them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    after: Option<String>,
}

fn query_invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("query.invalid", message)
}

fn parse_list_query(params: ListParams) -> Result<ApprovalQuery, ApiError> {
    let status = params
        .status
        .map(|text| {
            ApprovalStatus::parse(&text).ok_or_else(|| {
                query_invalid("status must be one of pending, posted, rejected, expired, failed")
            })
        })
        .transpose()?;
    let limit = match params.limit {
        None => LIST_LIMIT_DEFAULT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=LIST_LIMIT_MAX).contains(limit))
            .ok_or_else(|| {
                query_invalid(format!("limit must be an integer 1..={LIST_LIMIT_MAX}"))
            })?,
    };
    let after = params
        .after
        .map(|text| {
            Uuid::parse_str(&text)
                .map_err(|_| query_invalid("after must be an approval id (a UUID)"))
        })
        .transpose()?;
    Ok(ApprovalQuery {
        status,
        after,
        limit,
    })
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    if !caller.identity.has_any_role(LIST_ROLES) {
        return Err(ApiError::RoleRequired { roles: LIST_ROLES });
    }
    let Query(params) = params.map_err(|rejection| query_invalid(rejection.body_text()))?;
    let query = parse_list_query(params)?;
    let requests = state.store.approvals(&query).await?;
    Ok(Json(list_page(&requests, query.limit)).into_response())
}

/// One page: `next_after` is the last id when the page is full (there may be more).
fn list_page(requests: &[ApprovalRequest], limit: u32) -> Value {
    let full = usize::try_from(limit).is_ok_and(|limit| requests.len() >= limit);
    let next_after = if full {
        requests.last().map(|request| request.id)
    } else {
        None
    };
    json!({
        "approvals": requests.iter().map(ApprovalView::from_request).collect::<Vec<_>>(),
        "next_after": next_after,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::Uri;
    use countersign_ledger::{
        Account, AccountId, AccountState, AccountStatus, Amount, ApprovalEvent, Currency,
    };
    use time::macros::datetime;

    use super::*;

    const DEBIT: &str = "DE89370400440532013000";
    const CREDIT: &str = "FR1420041010050500013M02606";

    fn request(status: ApprovalStatus, events: Vec<ApprovalEvent>) -> ApprovalRequest {
        let eur = Currency::parse("EUR").unwrap();
        ApprovalRequest {
            id: Uuid::from_u128(1),
            transfer_id: Uuid::from_u128(2),
            debit_account: AccountId::parse(DEBIT).unwrap(),
            credit_account: AccountId::parse(CREDIT).unwrap(),
            amount: Amount::parse("2000000.00", eur).unwrap(),
            end_to_end_id: Some("E2E-1".into()),
            purpose: Some("SUPP".into()),
            remittance_info: Some("invoice 4711".into()),
            initiation_decision_id: Uuid::from_u128(3),
            initiator_fingerprint: "aa".into(),
            initiator_common_name: Some("teller-0042".into()),
            approvals_required: 2,
            approver_roles: vec!["approver".into()],
            status,
            created_at: datetime!(2026-03-01 10:00:00 UTC),
            expires_at: datetime!(2026-03-02 10:00:00 UTC),
            resolved_at: None,
            resolution_decision_id: None,
            events,
        }
    }

    fn approval_by(fingerprint: &str, decision: u128) -> ApprovalEvent {
        ApprovalEvent {
            action: ApprovalAction::Approve,
            approver_fingerprint: fingerprint.into(),
            approver_common_name: Some(format!("cn-{fingerprint}")),
            decision_id: Uuid::from_u128(decision),
            comment: Some("checked the invoice".into()),
            at: datetime!(2026-03-01 11:00:00 UTC),
        }
    }

    fn state_of(id: &str, balance_minor: i64, reserved_minor: i64) -> AccountState {
        AccountState {
            account: Account {
                id: AccountId::parse(id).unwrap(),
                currency: Currency::parse("EUR").unwrap(),
                status: AccountStatus::Active,
                overdraft_allowed: false,
                balance_minor,
                created_at: datetime!(2026-01-01 0:00 UTC),
                updated_at: datetime!(2026-01-01 0:00 UTC),
            },
            debited_today_minor: 0,
            reserved_minor,
        }
    }

    fn approver() -> Identity {
        Identity {
            common_name: Some("approver-dave".into()),
            organization: vec!["Countersign Dev Bank".into()],
            organizational_units: vec!["approver".into()],
            san_uris: vec![],
            serial: "01".into(),
            fingerprint_sha256: "dd".into(),
            roles: vec!["approver".into()],
        }
    }

    #[test]
    fn approval_input_follows_the_contract() {
        let context = ApprovalContext {
            request: request(ApprovalStatus::Pending, vec![approval_by("bb", 4)]),
            debit: state_of(DEBIT, 300_000_000, 200_000_000),
            credit: state_of(CREDIT, 0, 0),
            audit_writable: true,
            now: datetime!(2026-03-01 12:00:00 UTC),
        };
        let step = StepFacts {
            action: ApprovalAction::Approve,
            comment: Some("ok".into()),
            request_id: Uuid::from_u128(9),
        };
        let input = approval_input(
            &approver(),
            "127.0.0.1:5000".parse().unwrap(),
            &step,
            &context,
        );
        let expected = json!({
            "action": "approve",
            "approver": {
                "common_name": "approver-dave",
                "organization": ["Countersign Dev Bank"],
                "organizational_units": ["approver"],
                "san_uris": [],
                "serial": "01",
                "fingerprint_sha256": "dd",
                "roles": ["approver"],
            },
            "initiator": {"fingerprint_sha256": "aa", "common_name": "teller-0042"},
            "transfer": {
                "id": Uuid::from_u128(2),
                "debit_account": DEBIT,
                "credit_account": CREDIT,
                "amount": "2000000.00",
                "amount_minor": 200_000_000,
                "currency": "EUR",
                "currency_minor_units": 2,
                "end_to_end_id": "E2E-1",
                "purpose": "SUPP",
                "remittance_info": "invoice 4711",
            },
            "approval": {
                "id": Uuid::from_u128(1),
                "status": "pending",
                "approvals_required": 2,
                "approver_roles": ["approver"],
                "approvals": [{
                    "fingerprint_sha256": "bb",
                    "common_name": "cn-bb",
                    "decision_id": Uuid::from_u128(4),
                    "at": "2026-03-01T11:00:00Z",
                }],
                "expires_at": "2026-03-02T10:00:00Z",
                "initiation_decision_id": Uuid::from_u128(3),
            },
            "comment": "ok",
            "context": {
                "time": "2026-03-01T12:00:00Z",
                "request_id": Uuid::from_u128(9),
                "source_address": "127.0.0.1:5000",
                "audit": {"enabled": true},
            },
        });
        assert_eq!(input, expected);

        // The audit copy: account numbers masked, remittance information redacted, the
        // thread to the initiation decision kept.
        let masked = mask_input(input);
        assert_eq!(
            masked["transfer"]["debit_account"],
            "******************3000"
        );
        assert_eq!(
            masked["transfer"]["credit_account"],
            "***********************2606"
        );
        assert_eq!(
            masked["transfer"]["remittance_info"],
            "[redacted: 12 characters]"
        );
        assert_eq!(
            masked["approval"]["initiation_decision_id"],
            json!(Uuid::from_u128(3))
        );
    }

    #[test]
    fn a_rejection_is_not_an_approval_in_the_input() {
        let mut rejection = approval_by("cc", 5);
        rejection.action = ApprovalAction::Reject;
        let context = ApprovalContext {
            request: request(ApprovalStatus::Rejected, vec![rejection]),
            debit: state_of(DEBIT, 300_000_000, 0),
            credit: state_of(CREDIT, 0, 0),
            audit_writable: false,
            now: datetime!(2026-03-01 12:00:00 UTC),
        };
        let step = StepFacts {
            action: ApprovalAction::Reject,
            comment: None,
            request_id: Uuid::from_u128(9),
        };
        let input = approval_input(
            &approver(),
            "127.0.0.1:5000".parse().unwrap(),
            &step,
            &context,
        );
        assert_eq!(input["action"], "reject");
        assert_eq!(input["approval"]["status"], "rejected");
        assert_eq!(input["approval"]["approvals"], json!([]));
        assert_eq!(input["comment"], Value::Null);
        assert_eq!(input["context"]["audit"]["enabled"], false);
    }

    #[test]
    fn approval_view_serialises_per_contract() {
        let mut rejection = approval_by("cc", 5);
        rejection.action = ApprovalAction::Reject;
        rejection.comment = None;
        let mut rejected = request(
            ApprovalStatus::Rejected,
            vec![approval_by("bb", 4), rejection],
        );
        rejected.resolved_at = Some(datetime!(2026-03-01 12:00:00 UTC));
        rejected.resolution_decision_id = Some(Uuid::from_u128(5));
        let view = serde_json::to_value(ApprovalView::from_request(&rejected)).unwrap();
        assert_eq!(
            view,
            json!({
                "id": Uuid::from_u128(1),
                "transfer_id": Uuid::from_u128(2),
                "status": "rejected",
                "debit_account": DEBIT,
                "credit_account": CREDIT,
                "amount": "2000000.00",
                "currency": "EUR",
                "approvals_required": 2,
                "approvals_received": 1,
                "approver_roles": ["approver"],
                "initiator": {"fingerprint_sha256": "aa", "common_name": "teller-0042"},
                "initiation_decision_id": Uuid::from_u128(3),
                "created_at": "2026-03-01T10:00:00Z",
                "expires_at": "2026-03-02T10:00:00Z",
                "resolved_at": "2026-03-01T12:00:00Z",
                "resolution_decision_id": Uuid::from_u128(5),
                "history": [
                    {
                        "action": "approve",
                        "approver": {"fingerprint_sha256": "bb", "common_name": "cn-bb"},
                        "decision_id": Uuid::from_u128(4),
                        "comment": "checked the invoice",
                        "at": "2026-03-01T11:00:00Z",
                    },
                    {
                        "action": "reject",
                        "approver": {"fingerprint_sha256": "cc", "common_name": "cn-cc"},
                        "decision_id": Uuid::from_u128(5),
                        "comment": null,
                        "at": "2026-03-01T11:00:00Z",
                    },
                ],
            })
        );

        // The transfer of a held request: pending reads pending_approval, not posted yet.
        let pending = request(ApprovalStatus::Pending, Vec::new());
        let transfer = serde_json::to_value(TransferView::from_held(&pending, None)).unwrap();
        assert_eq!(transfer["status"], "pending_approval");
        assert_eq!(transfer["posted_at"], Value::Null);
        assert_eq!(transfer["decision_id"], json!(Uuid::from_u128(3)));
        assert_eq!(transfer["id"], json!(Uuid::from_u128(2)));
    }

    #[test]
    fn list_pages_say_where_to_go_on() {
        let requests = vec![
            request(ApprovalStatus::Pending, Vec::new()),
            request(ApprovalStatus::Pending, Vec::new()),
        ];
        assert_eq!(
            list_page(&requests, 2)["next_after"],
            json!(Uuid::from_u128(1))
        );
        assert_eq!(list_page(&requests, 3)["next_after"], Value::Null);
        assert_eq!(list_page(&[], 1)["next_after"], Value::Null);
        assert_eq!(
            list_page(&requests, 3)["approvals"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    fn check_query(query: &str) -> Result<ApprovalQuery, String> {
        let uri: Uri = format!("/v1/approvals?{query}").parse().unwrap();
        let Query(params) = Query::<ListParams>::try_from_uri(&uri)
            .map_err(|rejection| format!("query.invalid: {}", rejection.body_text()))?;
        parse_list_query(params).map_err(|error| {
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            error.body()["message"].as_str().unwrap().to_owned()
        })
    }

    #[test]
    fn list_query_is_parsed_strictly() {
        let defaults = check_query("").unwrap();
        assert_eq!(
            defaults,
            ApprovalQuery {
                status: None,
                after: None,
                limit: LIST_LIMIT_DEFAULT
            }
        );
        let after = Uuid::from_u128(7);
        assert_eq!(
            check_query(&format!("status=expired&limit=1000&after={after}")).unwrap(),
            ApprovalQuery {
                status: Some(ApprovalStatus::Expired),
                after: Some(after),
                limit: 1000
            }
        );
        for (query, fragment) in [
            ("status=open", "status must be one of"),
            ("limit=0", "limit must be an integer 1..=1000"),
            ("limit=1001", "limit must be an integer"),
            ("limit=ten", "limit must be an integer"),
            ("limit=", "limit must be an integer"),
            ("after=42", "after must be an approval id"),
            ("colour=red", "unknown field"),
            ("limit=1&limit=2", "duplicate field"),
        ] {
            let error = check_query(query).expect_err(query);
            assert!(error.contains(fragment), "{query}: {error}");
        }
    }

    #[test]
    fn comments_are_bounded() {
        let json_headers = {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", "application/json".parse().unwrap());
            headers
        };
        let comment =
            |body: &str| step_comment(&json_headers, Ok(Bytes::from(body.to_owned())), 16_384);
        assert_eq!(
            step_comment(&HeaderMap::new(), Ok(Bytes::new()), 16_384).unwrap(),
            None
        );
        assert_eq!(comment("{}").unwrap(), None);
        assert_eq!(comment(r#"{"comment": null}"#).unwrap(), None);
        assert_eq!(
            comment(r#"{"comment": "fine"}"#).unwrap().as_deref(),
            Some("fine")
        );
        let longest = "é".repeat(COMMENT_CHARS_MAX);
        assert!(comment(&json!({"comment": longest}).to_string()).is_ok());
        for (body, status, code) in [
            (
                json!({"comment": "é".repeat(COMMENT_CHARS_MAX + 1)}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "comment.invalid",
            ),
            (
                json!({"comment": "line\nbreak"}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "comment.invalid",
            ),
            (
                json!({"comment": "x", "approve": true}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "body.invalid",
            ),
            (
                json!({"comment": 7}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "body.invalid",
            ),
            (
                "{".to_owned(),
                StatusCode::BAD_REQUEST,
                "body.malformed_json",
            ),
        ] {
            let error = comment(&body).expect_err(&body);
            assert_eq!(
                (error.status(), error.body()["code"].as_str()),
                (status, Some(code)),
                "{body}"
            );
        }
        let error = step_comment(&HeaderMap::new(), Ok(Bytes::from("{}")), 16_384).unwrap_err();
        assert_eq!(error.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn ledger_refusals_are_told_apart_from_policy_denials() {
        assert!(refused_by_ledger(&[Reason::new(
            approval_reason_codes::SELF_APPROVAL,
            "four eyes"
        )]));
        assert!(!refused_by_ledger(&[Reason::new(
            "approval.role_not_authorized",
            "not an approver"
        )]));
    }

    #[test]
    fn approval_decisions_are_logged_under_the_approval_rule() {
        let rule_path = APPROVAL_DECISION
            .strip_prefix("data.")
            .unwrap()
            .replace('.', "/");
        assert_eq!(decision_path(ACTION_APPROVE), rule_path);
        assert_eq!(decision_path(ACTION_REJECT), rule_path);
    }
}
