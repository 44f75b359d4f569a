//! `POST /v1/transfers` and `GET /v1/transfers/{id}`.
//!
//! Order of checks, and why: the idempotency key and body shape first (cheap, write nothing),
//! then domain parsing (amount, currency, accounts), then the policy decision and the posting,
//! which the ledger's writer runs in one transaction with the audit records, on the account
//! state it has just read, so policy and ledger never see different balances.
//!
//! Maker-checker: a decision that allows with a `require_approval` obligation holds the
//! transfer instead (202, funds reserved by the ledger); `http/approvals.rs` takes it from
//! there. The decision-document parser below is shared by every decision path and knows which
//! obligations each path can honour ([`Honours`]): an allow under an obligation the path
//! cannot honour is not an allow (fail closed).

use std::{sync::Arc, time::Instant};

use crate::policy::mask::mask_decision;
use axum::{
    Extension, Json,
    extract::{Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use countersign_audit::{NewRecord, Outcome, RecordKind, Subject, decision_path};
use countersign_ledger::{
    APPROVALS_REQUIRED_MAX, AccountId, AccountState, Amount, ApprovalRequest, ApprovalRequirement,
    ApprovalStatus, Currency, DecisionContext, IdempotencyClaim, IdempotencyOutcome, Reason,
    StoredIdempotency, Transfer, TransferCommand, TransferOutcome, Verdict,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ApiError, approvals::ApprovalView, decode_json};
use crate::{
    app::{AppState, Caller},
    policy::PolicyEngine,
};

pub const ACTION_TRANSFER: &str = "transfer.create";
/// Longest Idempotency-Key accepted.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// ISO 20022 end-to-end identification is at most 35 characters.
const END_TO_END_ID_CHARS_MAX: usize = 35;
const PURPOSE_CHARS_MAX: usize = 35;
/// SEPA unstructured remittance information is at most 140 characters.
const REMITTANCE_INFO_CHARS_MAX: usize = 140;
/// Roles that may read transfers and accounts.
pub const READ_ROLES: &[&str] = &["channel", "teller", "approver", "auditor", "admin"];
/// The one obligation the transfer path honours: hold the transfer for approval.
pub const OBLIGATION_REQUIRE_APPROVAL: &str = "require_approval";
/// Most obligations one decision may carry; more is a policy bug, not a plan.
const OBLIGATIONS_MAX: usize = 8;
/// Most approver roles one `require_approval` may name, and the longest role name.
const APPROVER_ROLES_MAX: usize = 16;
const APPROVER_ROLE_BYTES_MAX: usize = 64;
/// Longest free-text `reason` of an obligation (it is informational; the audit record keeps it).
const OBLIGATION_REASON_CHARS_MAX: usize = 1024;

/// The request body as it arrives. Strings only: amounts are never JSON numbers.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub debit_account: String,
    pub credit_account: String,
    pub amount: String,
    pub currency: String,
    #[serde(default)]
    pub end_to_end_id: Option<String>,
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub remittance_info: Option<String>,
}

/// A transfer as the API shows it: posted, or held for approval (then `status` says where the
/// approval stands and `posted_at` is null until it posts).
#[derive(Debug, Serialize)]
pub struct TransferView {
    pub id: Uuid,
    /// `posted`, or for a held transfer `pending_approval`, `posted`, `rejected`, `expired`,
    /// `failed`.
    pub status: &'static str,
    pub debit_account: String,
    pub credit_account: String,
    pub amount: String,
    pub currency: String,
    pub end_to_end_id: Option<String>,
    pub purpose: Option<String>,
    pub remittance_info: Option<String>,
    /// The decision that allowed the transfer (for a held one: the initiation decision).
    pub decision_id: Uuid,
    pub posted_at: Option<String>,
}

impl TransferView {
    pub fn from_transfer(transfer: &Transfer) -> TransferView {
        TransferView {
            id: transfer.id,
            status: "posted",
            debit_account: transfer.debit_account.as_str().to_owned(),
            credit_account: transfer.credit_account.as_str().to_owned(),
            amount: transfer.amount.to_decimal_string(),
            currency: transfer.amount.currency().code().to_owned(),
            end_to_end_id: transfer.end_to_end_id.clone(),
            purpose: transfer.purpose.clone(),
            remittance_info: transfer.remittance_info.clone(),
            decision_id: transfer.decision_id,
            posted_at: Some(rfc3339(transfer.posted_at)),
        }
    }

    /// A held transfer; `posted` is its transfer row once the approval posted it.
    pub fn from_held(request: &ApprovalRequest, posted: Option<&Transfer>) -> TransferView {
        TransferView {
            id: request.transfer_id,
            status: held_status(request.status),
            debit_account: request.debit_account.as_str().to_owned(),
            credit_account: request.credit_account.as_str().to_owned(),
            amount: request.amount.to_decimal_string(),
            currency: request.amount.currency().code().to_owned(),
            end_to_end_id: request.end_to_end_id.clone(),
            purpose: request.purpose.clone(),
            remittance_info: request.remittance_info.clone(),
            decision_id: request.initiation_decision_id,
            posted_at: posted.map(|transfer| rfc3339(transfer.posted_at)),
        }
    }
}

/// The transfer status of a held transfer: `pending` reads `pending_approval` on a transfer
/// (the approval itself is `pending`); the final states keep their names.
fn held_status(status: ApprovalStatus) -> &'static str {
    match status {
        ApprovalStatus::Pending => "pending_approval",
        other => other.as_str(),
    }
}

/// `GET /v1/transfers/{id}`: the transfer and, for a held one, its approval (else null).
#[derive(Debug, Serialize)]
pub struct TransferDetail {
    #[serde(flatten)]
    pub transfer: TransferView,
    pub approval: Option<ApprovalView>,
}

pub fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .expect("UTC timestamps always format as RFC 3339")
}

/// A validated transfer request: domain types only.
struct ValidTransfer {
    debit_account: AccountId,
    credit_account: AccountId,
    amount: Amount,
    end_to_end_id: Option<String>,
    purpose: Option<String>,
    remittance_info: Option<String>,
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers.get("idempotency-key").ok_or_else(|| {
        ApiError::bad_request(
            "idempotency_key.missing",
            "the Idempotency-Key header is required for POST /v1/transfers",
        )
    })?;
    let key = value
        .to_str()
        .ok()
        .filter(|key| {
            !key.is_empty()
                && key.len() <= IDEMPOTENCY_KEY_BYTES_MAX
                && key.bytes().all(|byte| byte.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "idempotency_key.malformed",
                format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters"),
            )
        })?;
    Ok(key.to_owned())
}

pub(crate) fn optional_text(
    value: Option<String>,
    field: &'static str,
    code: &'static str,
    chars_max: usize,
) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(text) if text.chars().count() > chars_max => Err(ApiError::unprocessable(
            code,
            format!("{field} must be at most {chars_max} characters"),
        )),
        Some(text) if text.chars().any(char::is_control) => Err(ApiError::unprocessable(
            code,
            format!("{field} must not contain control characters"),
        )),
        Some(text) => Ok(Some(text)),
    }
}

fn validate(request: TransferRequest) -> Result<ValidTransfer, ApiError> {
    let currency = Currency::parse(&request.currency)?;
    let amount = Amount::parse(&request.amount, currency)?;
    let debit_account = AccountId::parse(&request.debit_account)?;
    let credit_account = AccountId::parse(&request.credit_account)?;
    if debit_account == credit_account {
        return Err(ApiError::unprocessable(
            "accounts.same",
            "debit_account and credit_account must differ",
        ));
    }
    Ok(ValidTransfer {
        debit_account,
        credit_account,
        amount,
        end_to_end_id: optional_text(
            request.end_to_end_id,
            "end_to_end_id",
            "end_to_end_id.invalid",
            END_TO_END_ID_CHARS_MAX,
        )?,
        purpose: optional_text(
            request.purpose,
            "purpose",
            "purpose.invalid",
            PURPOSE_CHARS_MAX,
        )?,
        remittance_info: optional_text(
            request.remittance_info,
            "remittance_info",
            "remittance_info.invalid",
            REMITTANCE_INFO_CHARS_MAX,
        )?,
    })
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let request: TransferRequest = decode_json(&headers, body, state.config.limits.body_bytes_max)?;
    // The hash is over our own re-serialisation, so whitespace or key order in the client's
    // JSON does not make a retry look like a different request.
    let request_hash: [u8; 32] =
        Sha256::digest(serde_json::to_vec(&request).expect("request serializes")).into();
    let scope = caller.identity.fingerprint_sha256.clone();

    let Some(_in_flight) = state.claim_idempotency_key(&scope, &key) else {
        return Err(ApiError::Conflict {
            code: "idempotency_key.in_flight",
            message: "a request with this Idempotency-Key is still being processed".into(),
        });
    };
    if let Some(stored) = state.store.idempotency(&scope, &key).await? {
        return replay(&state, stored, &request_hash).await;
    }

    let transfer = validate(request)?;
    let debit = state.store.account(&transfer.debit_account).await?;
    let credit = state.store.account(&transfer.credit_account).await?;
    let (Some(debit), Some(credit)) = (debit, credit) else {
        return Err(ApiError::unprocessable(
            "account.not_found",
            "debit_account or credit_account does not exist",
        ));
    };
    let currency = transfer.amount.currency();
    if debit.currency != currency || credit.currency != currency {
        return Err(ApiError::unprocessable(
            "currency.mismatch",
            format!(
                "both accounts must be in {}; debit is {}, credit is {}",
                currency.code(),
                debit.currency.code(),
                credit.currency.code()
            ),
        ));
    }

    let transfer_id = Uuid::now_v7();
    let request_id = Uuid::now_v7();
    let policy = state.policy.load_full();
    let decide_state = state.clone();
    let decide_caller = caller.clone();
    let decide_transfer = TransferFacts {
        id: transfer_id,
        debit_account: transfer.debit_account.clone(),
        credit_account: transfer.credit_account.clone(),
        amount: transfer.amount,
        end_to_end_id: transfer.end_to_end_id.clone(),
        purpose: transfer.purpose.clone(),
        remittance_info: transfer.remittance_info.clone(),
    };
    let command = TransferCommand {
        transfer_id,
        debit_account: transfer.debit_account,
        credit_account: transfer.credit_account,
        amount: transfer.amount,
        end_to_end_id: transfer.end_to_end_id,
        purpose: transfer.purpose,
        remittance_info: transfer.remittance_info,
        initiator_fingerprint: scope.clone(),
        // Shown to approvers next to the fingerprint; the fingerprint is what four eyes
        // compares.
        initiator_common_name: caller.identity.common_name.clone(),
        idempotency: IdempotencyClaim {
            scope,
            key,
            request_hash,
        },
        decide: Box::new(move |context: &DecisionContext| {
            decide_transfer_now(
                &decide_state,
                &policy,
                &decide_caller,
                &decide_transfer,
                request_id,
                context,
            )
        }),
    };
    let started = Instant::now();
    let outcome = state.store.submit_transfer(command).await;
    state
        .metrics
        .ledger_commit_duration
        .observe(started.elapsed().as_secs_f64());
    match outcome? {
        TransferOutcome::Posted {
            transfer,
            decision_id,
        } => {
            tracing::info!(transfer_id = %transfer.id, %decision_id, decision = "allow", "transfer posted");
            Ok(posted_response(&transfer))
        }
        TransferOutcome::Denied {
            decision_id,
            reasons,
        } => {
            tracing::info!(%decision_id, decision = "deny", reasons = ?reason_codes(&reasons), "transfer refused");
            Err(ApiError::PolicyDenied {
                decision_id,
                reasons,
            })
        }
        TransferOutcome::Pending {
            request,
            decision_id,
        } => {
            tracing::info!(
                transfer_id = %request.transfer_id,
                approval_id = %request.id,
                %decision_id,
                decision = "pending",
                approvals_required = request.approvals_required,
                "transfer held for approval"
            );
            Ok(held_response(&request, None))
        }
        TransferOutcome::Replayed(stored) => replay(&state, stored, &request_hash).await,
    }
}

/// 202: the transfer is held for approval. The body shows the approval as it stands now, so
/// a replay after approvers acted shows their progress (and `posted` once it posted).
fn held_response(request: &ApprovalRequest, posted: Option<&Transfer>) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "transfer": TransferView::from_held(request, posted),
            "approval": ApprovalView::from_request(request),
            "decision_id": request.initiation_decision_id,
        })),
    )
        .into_response()
}

fn posted_response(transfer: &Transfer) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({
            "transfer": TransferView::from_transfer(transfer),
            "decision_id": transfer.decision_id,
        })),
    )
        .into_response()
}

/// Answers a retry with the first response, rebuilt from what was stored with it.
async fn replay(
    state: &AppState,
    stored: StoredIdempotency,
    request_hash: &[u8; 32],
) -> Result<Response, ApiError> {
    if stored.request_hash != *request_hash {
        return Err(ApiError::unprocessable(
            "idempotency_key.reused",
            "this Idempotency-Key was already used with a different request body",
        ));
    }
    match (stored.outcome, stored.transfer_id, stored.approval_id) {
        (IdempotencyOutcome::Posted, Some(transfer_id), _) => {
            let transfer =
                state
                    .store
                    .transfer(transfer_id)
                    .await?
                    .ok_or_else(|| ApiError::Internal {
                        message: format!(
                            "idempotency row points at missing transfer {transfer_id}"
                        ),
                    })?;
            Ok(posted_response(&transfer))
        }
        (IdempotencyOutcome::Pending, _, Some(approval_id)) => {
            let request = state
                .store
                .approval_by_id(approval_id)
                .await?
                .ok_or_else(|| ApiError::Internal {
                    message: format!(
                        "idempotency row points at missing approval request {approval_id}"
                    ),
                })?;
            let posted = posted_transfer_of(state, &request).await?;
            Ok(held_response(&request, posted.as_ref()))
        }
        (IdempotencyOutcome::Denied, _, _) => Err(ApiError::PolicyDenied {
            decision_id: stored.decision_id,
            reasons: stored.reasons,
        }),
        (outcome, transfer_id, approval_id) => Err(ApiError::Internal {
            message: format!(
                "idempotency row with outcome {} lacks its reference (transfer {transfer_id:?}, approval {approval_id:?})",
                outcome.as_str()
            ),
        }),
    }
}

/// The transfer row of a held transfer that posted (for `posted_at`); `None` otherwise.
pub(crate) async fn posted_transfer_of(
    state: &AppState,
    request: &ApprovalRequest,
) -> Result<Option<Transfer>, ApiError> {
    if request.status != ApprovalStatus::Posted {
        return Ok(None);
    }
    let transfer = state.store.transfer(request.transfer_id).await?;
    if transfer.is_none() {
        return Err(ApiError::Internal {
            message: format!(
                "approval request {} is posted but transfer {} is missing",
                request.id, request.transfer_id
            ),
        });
    }
    Ok(transfer)
}

fn reason_codes(reasons: &[Reason]) -> Vec<String> {
    reasons.iter().map(|reason| reason.code.clone()).collect()
}

struct TransferFacts {
    id: Uuid,
    debit_account: AccountId,
    credit_account: AccountId,
    amount: Amount,
    end_to_end_id: Option<String>,
    purpose: Option<String>,
    remittance_info: Option<String>,
}

fn account_input(state: &AccountState, currency: Currency) -> Value {
    let available_minor = available_minor_i64(state);
    json!({
        "id": state.account.id.as_str(),
        "status": state.account.status,
        "currency": state.account.currency.code(),
        "overdraft_allowed": state.account.overdraft_allowed,
        "balance": countersign_ledger::format_minor(state.account.balance_minor, currency),
        "balance_minor": state.account.balance_minor,
        "debited_today": countersign_ledger::format_minor(state.debited_today_minor, currency),
        "debited_today_minor": state.debited_today_minor,
        // Debits held for approval: spoken for, not yet posted. Funds checks use `available`.
        "reserved": countersign_ledger::format_minor(state.reserved_minor, currency),
        "reserved_minor": state.reserved_minor,
        "available": countersign_ledger::format_minor(available_minor, currency),
        "available_minor": available_minor,
    })
}

/// `balance - reserved` as a JSON-safe integer. The ledger computes it in `i128`; outside the
/// `i64` range (only a huge overdraft plus huge reservations could get there) it saturates,
/// and the saturated value then disagrees with `balance_minor - reserved_minor`, which the
/// policy checks: the transfer is denied as invalid input instead of decided on a wrong number.
fn available_minor_i64(state: &AccountState) -> i64 {
    let available = state.available_minor();
    i64::try_from(available).unwrap_or(if available < 0 { i64::MIN } else { i64::MAX })
}

/// The `transfer` document of a policy input (transfer and approval decisions alike).
#[allow(clippy::too_many_arguments)]
pub(crate) fn transfer_document(
    id: Uuid,
    debit_account: &AccountId,
    credit_account: &AccountId,
    amount: Amount,
    end_to_end_id: Option<&str>,
    purpose: Option<&str>,
    remittance_info: Option<&str>,
) -> Value {
    let currency = amount.currency();
    json!({
        "id": id,
        "debit_account": debit_account.as_str(),
        "credit_account": credit_account.as_str(),
        "amount": amount.to_decimal_string(),
        "amount_minor": amount.minor_units(),
        "currency": currency.code(),
        "currency_minor_units": currency.minor_units(),
        "end_to_end_id": end_to_end_id,
        "purpose": purpose,
        "remittance_info": remittance_info,
    })
}

/// Builds the policy input from the fresh ledger state (see policies/README.md).
fn policy_input(
    caller: &Caller,
    transfer: &TransferFacts,
    request_id: Uuid,
    context: &DecisionContext,
) -> Value {
    let currency = transfer.amount.currency();
    json!({
        "action": ACTION_TRANSFER,
        "transfer": transfer_document(
            transfer.id,
            &transfer.debit_account,
            &transfer.credit_account,
            transfer.amount,
            transfer.end_to_end_id.as_deref(),
            transfer.purpose.as_deref(),
            transfer.remittance_info.as_deref(),
        ),
        "subject": &*caller.identity,
        "accounts": {
            "debit": account_input(&context.debit, currency),
            "credit": account_input(&context.credit, currency),
        },
        "context": {
            "time": rfc3339(context.now),
            "request_id": request_id,
            "channel": caller.identity.common_name,
            "source_address": caller.remote_address.to_string(),
            "audit": {"enabled": context.audit_writable},
        },
    })
}

/// The input as it is kept in the audit trail: account numbers masked to their last four
/// characters, free text (remittance information) redacted.
pub fn mask_input(mut input: Value) -> Value {
    let mask = |value: &mut Value| {
        if let Some(text) = value.as_str() {
            *value = Value::String(countersign_audit::mask_account_number(text));
        }
    };
    if let Some(transfer) = input.get_mut("transfer") {
        transfer.get_mut("debit_account").map(mask);
        transfer.get_mut("credit_account").map(mask);
        if let Some(remittance) = transfer.get_mut("remittance_info")
            && let Some(text) = remittance.as_str()
        {
            *remittance = Value::String(format!("[redacted: {} characters]", text.chars().count()));
        }
    }
    if let Some(accounts) = input.get_mut("accounts") {
        for side in ["debit", "credit"] {
            if let Some(id) = accounts
                .get_mut(side)
                .and_then(|account| account.get_mut("id"))
            {
                mask(id);
            }
        }
    }
    input
}

/// Which obligations a decision path can honour. An obligation is a condition of an allow;
/// an allow whose condition the gateway cannot meet is no allow, so a decision carrying any
/// other obligation is a policy error (deny, outcome `error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Honours {
    /// Proxy routes and approve/reject steps: no obligation at all.
    Nothing,
    /// Transfers: `require_approval` (hold the transfer until approvers agree).
    RequireApproval,
}

/// A `require_approval` obligation as the policy stated it (the expiry is the gateway's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredApproval {
    /// 1..=[`APPROVALS_REQUIRED_MAX`].
    pub approvals_required: u32,
    /// Non-empty, each a non-empty role name.
    pub approver_roles: Vec<String>,
}

/// A well-formed decision document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDecision {
    pub allow: bool,
    pub reasons: Vec<Reason>,
    /// Set when the decision allows under a `require_approval` obligation. A deny wins over
    /// its obligations (they are still checked for shape).
    pub approval: Option<RequiredApproval>,
}

/// Parses the decision document; anything but the documented shape is an error (deny).
pub fn parse_decision(document: &Value, honours: Honours) -> Result<ParsedDecision, String> {
    let allow = document
        .get("allow")
        .and_then(Value::as_bool)
        .ok_or("decision.allow is missing or not a boolean")?;
    let reasons = match document.get("reasons") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let code = item.get("code").and_then(Value::as_str);
                let message = item.get("message").and_then(Value::as_str);
                match (code, message) {
                    (Some(code), message) => Ok(Reason {
                        code: code.to_owned(),
                        message: message.unwrap_or(code).to_owned(),
                    }),
                    _ => Err("decision.reasons[] needs a string code".to_owned()),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("decision.reasons is not an array".to_owned()),
    };
    let approval = parse_obligations(document.get("obligations"), honours)?;
    if allow && !reasons.is_empty() {
        return Err("decision allows but gives deny reasons".to_owned());
    }
    if !allow && reasons.is_empty() {
        // A deny must say why; give the caller something to act on.
        return Ok(ParsedDecision {
            allow: false,
            reasons: vec![Reason {
                code: "policy.denied".into(),
                message: "denied by policy without a stated reason".into(),
            }],
            approval: None,
        });
    }
    Ok(ParsedDecision {
        allow,
        reasons,
        approval: if allow { approval } else { None },
    })
}

/// Checks `decision.obligations` (absent, null or an array) against what the path honours.
fn parse_obligations(
    obligations: Option<&Value>,
    honours: Honours,
) -> Result<Option<RequiredApproval>, String> {
    let items = match obligations {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err("decision.obligations is not an array".to_owned()),
    };
    if items.len() > OBLIGATIONS_MAX {
        return Err(format!(
            "decision.obligations has {} entries, more than {OBLIGATIONS_MAX}",
            items.len()
        ));
    }
    let mut approval = None;
    for (index, item) in items.iter().enumerate() {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("decision.obligations[{index}] needs a string type"))?;
        match (kind, honours) {
            (OBLIGATION_REQUIRE_APPROVAL, Honours::RequireApproval) => {
                if approval.is_some() {
                    return Err(format!(
                        "decision.obligations holds more than one {OBLIGATION_REQUIRE_APPROVAL}"
                    ));
                }
                approval = Some(parse_require_approval(item, index)?);
            }
            (kind, Honours::RequireApproval) => {
                return Err(format!(
                    "decision.obligations[{index}] has type {kind:?}, which the gateway does not know"
                ));
            }
            (kind, Honours::Nothing) => {
                return Err(format!(
                    "decision.obligations[{index}] has type {kind:?}; this decision cannot carry obligations"
                ));
            }
        }
    }
    Ok(approval)
}

fn parse_require_approval(item: &Value, index: usize) -> Result<RequiredApproval, String> {
    let field = |name: &str| format!("decision.obligations[{index}].{name}");
    let Value::Object(members) = item else {
        return Err(format!("decision.obligations[{index}] is not an object"));
    };
    // Unknown members could be conditions we would silently drop: refuse them.
    if let Some(unknown) = members.keys().find(|key| {
        !matches!(
            key.as_str(),
            "type" | "approvals_required" | "approver_roles" | "reason"
        )
    }) {
        return Err(format!(
            "{} is not a member of {OBLIGATION_REQUIRE_APPROVAL}",
            field(unknown)
        ));
    }
    let approvals_required = members
        .get("approvals_required")
        .and_then(Value::as_u64)
        .and_then(|count| u32::try_from(count).ok())
        .filter(|count| (1..=APPROVALS_REQUIRED_MAX).contains(count))
        .ok_or_else(|| {
            format!(
                "{} must be an integer 1..={APPROVALS_REQUIRED_MAX}",
                field("approvals_required")
            )
        })?;
    let roles = members
        .get("approver_roles")
        .and_then(Value::as_array)
        .filter(|roles| (1..=APPROVER_ROLES_MAX).contains(&roles.len()))
        .ok_or_else(|| {
            format!(
                "{} must be an array of 1..={APPROVER_ROLES_MAX} role names",
                field("approver_roles")
            )
        })?;
    let approver_roles = roles
        .iter()
        .map(|role| {
            role.as_str()
                .filter(|role| !role.is_empty() && role.len() <= APPROVER_ROLE_BYTES_MAX)
                .map(str::to_owned)
                .ok_or_else(|| {
                    format!(
                        "{} must hold strings of 1..={APPROVER_ROLE_BYTES_MAX} bytes",
                        field("approver_roles")
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    match members.get("reason") {
        None | Some(Value::Null) => {}
        Some(Value::String(reason)) if reason.chars().count() <= OBLIGATION_REASON_CHARS_MAX => {}
        Some(_) => {
            return Err(format!(
                "{} must be a string of at most {OBLIGATION_REASON_CHARS_MAX} characters",
                field("reason")
            ));
        }
    }
    Ok(RequiredApproval {
        approvals_required,
        approver_roles,
    })
}

/// A decision as recorded: what the policy said, or a fail-closed deny when it could not say.
pub struct Decided {
    pub allow: bool,
    pub reasons: Vec<Reason>,
    /// Set when the policy allowed under a `require_approval` obligation (transfers only).
    pub approval: Option<RequiredApproval>,
    /// `Allow`, `Pending` (allowed subject to approval), `Deny`, or `Error` when the policy
    /// failed (and the answer is a deny).
    pub outcome: Outcome,
    /// The decision document, or `{allow: false, reasons, error}` on failure.
    pub result: Value,
}

impl Decided {
    /// A fail-closed deny (outcome `error`) for one reason; its result is
    /// `{allow: false, reasons, error}`.
    pub fn fail_closed(reason: Reason, error: String) -> Decided {
        let reasons = vec![reason];
        let result = json!({"allow": false, "reasons": &reasons, "error": error});
        Decided {
            allow: false,
            reasons,
            approval: None,
            outcome: Outcome::Error,
            result,
        }
    }
}

/// Evaluates a decision document (`{allow, reasons, obligations}`) and fails closed: an
/// evaluation error, a timeout, an undefined or malformed document, or an obligation the
/// path does not honour is a deny with outcome `error`. Records the evaluation time and the
/// decision metrics. Shared by transfers, approve/reject steps and proxy routes.
pub fn decide_fail_closed(
    state: &AppState,
    action: &str,
    subject_of_refusal: &str,
    honours: Honours,
    evaluate: impl FnOnce() -> Result<Value, crate::policy::PolicyError>,
) -> Decided {
    let started = Instant::now();
    let evaluated = evaluate();
    state
        .metrics
        .policy_evaluation_duration
        .observe(started.elapsed().as_secs_f64());
    let decided = match evaluated
        .map_err(|error| (error.code(), error.to_string()))
        .and_then(|document| {
            parse_decision(&document, honours)
                .map(|parsed| (parsed, document))
                .map_err(|message| ("policy.error", message))
        }) {
        Ok((parsed, document)) => Decided {
            outcome: match (parsed.allow, &parsed.approval) {
                (true, Some(_)) => Outcome::Pending,
                (true, None) => Outcome::Allow,
                (false, _) => Outcome::Deny,
            },
            allow: parsed.allow,
            reasons: parsed.reasons,
            approval: parsed.approval,
            result: document,
        },
        Err((code, message)) => {
            tracing::warn!(error = %message, code, action, "policy evaluation failed; denying");
            let reason = Reason {
                code: code.to_owned(),
                message: format!(
                    "policy could not decide, {subject_of_refusal} refused: {message}"
                ),
            };
            Decided::fail_closed(reason, message)
        }
    };
    state.metrics.record_decision(
        action,
        decided.outcome.as_str(),
        &reason_codes(&decided.reasons),
    );
    decided
}

pub fn subject_of(caller: &Caller) -> Subject {
    Subject {
        fingerprint_sha256: caller.identity.fingerprint_sha256.clone(),
        common_name: caller.identity.common_name.clone(),
        roles: caller.identity.roles.clone(),
    }
}

/// Runs inside the ledger's write transaction: evaluate the policy on the fresh state and
/// build the decision record. Any policy failure is a deny with outcome `error` (fail closed).
fn decide_transfer_now(
    state: &AppState,
    policy: &PolicyEngine,
    caller: &Caller,
    transfer: &TransferFacts,
    request_id: Uuid,
    context: &DecisionContext,
) -> Verdict {
    let input = policy_input(caller, transfer, request_id, context);
    let decided = decide_fail_closed(
        state,
        ACTION_TRANSFER,
        "transfer",
        Honours::RequireApproval,
        || policy.evaluate(&input),
    );
    // The unmasked input, encrypted, goes with the record (when `[audit.encryption]` is set);
    // if it cannot be sealed the transfer is denied (fail closed).
    let record_id = Uuid::now_v7();
    let (decided, sealed_input) = super::reveal::seal_decision(
        state,
        record_id,
        &input,
        &[
            transfer.debit_account.as_str(),
            transfer.credit_account.as_str(),
        ],
        decided,
    );
    let Decided {
        allow,
        reasons,
        approval,
        outcome,
        result,
    } = decided;
    // The clock of the writer's transaction starts the wait; config bounds it to 1 s..30 days.
    let timeout = time::Duration::seconds(
        i64::try_from(state.config.approvals.timeout_seconds).unwrap_or(i64::MAX),
    );
    let approval = approval.map(|required| ApprovalRequirement {
        approvals_required: required.approvals_required,
        approver_roles: required.approver_roles,
        expires_at: context.now + timeout,
    });
    let decision_id = Uuid::now_v7();
    let masked = mask_decision(
        policy,
        &decision_path(ACTION_TRANSFER),
        decision_id,
        input,
        result,
    );
    Verdict {
        allow,
        reasons,
        approval,
        decision_record: NewRecord {
            record_id,
            kind: RecordKind::Decision,
            decision_id,
            timestamp: context.now,
            subject: subject_of(caller),
            source_address: caller.remote_address.to_string(),
            action: ACTION_TRANSFER.to_owned(),
            masked_input: mask_input(masked.input),
            result: masked.result,
            bundle_revision: policy.revision().to_owned(),
            outcome,
            redaction: masked.redaction,
            sealed_input,
        },
    }
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !caller.identity.has_any_role(READ_ROLES) {
        return Err(ApiError::RoleRequired { roles: READ_ROLES });
    }
    let not_found = || ApiError::NotFound {
        code: "transfer.not_found",
        message: "no transfer with this id".into(),
    };
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    // The approval first: a held transfer's row appears only when the approval posts it (same
    // transaction), so reading in this order never shows a posted request without its row.
    let detail = match state.store.approval(id).await? {
        Some(request) => {
            let posted = posted_transfer_of(&state, &request).await?;
            TransferDetail {
                transfer: TransferView::from_held(&request, posted.as_ref()),
                approval: Some(ApprovalView::from_request(&request)),
            }
        }
        None => {
            let transfer = state.store.transfer(id).await?.ok_or_else(not_found)?;
            TransferDetail {
                transfer: TransferView::from_transfer(&transfer),
                approval: None,
            }
        }
    };
    Ok(Json(detail).into_response())
}

#[cfg(test)]
mod tests {
    use countersign_ledger::{Account, AccountStatus};
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_fail_closed_decision_is_a_deny_with_outcome_error_and_its_one_reason() {
        let reason = Reason {
            code: "policy.error".to_owned(),
            message: "policy could not decide, transfer refused: timeout".to_owned(),
        };
        let decided = Decided::fail_closed(reason, "timeout".to_owned());
        assert!(!decided.allow);
        assert!(decided.approval.is_none());
        assert_eq!(decided.outcome, Outcome::Error);
        assert_eq!(
            reason_codes(&decided.reasons),
            vec!["policy.error".to_owned()]
        );
        assert_eq!(
            decided.result,
            json!({
                "allow": false,
                "reasons": [{"code": "policy.error", "message": "policy could not decide, transfer refused: timeout"}],
                "error": "timeout",
            })
        );
    }

    fn approval(approvals_required: Value, approver_roles: Value) -> Value {
        json!({
            "allow": true,
            "reasons": [],
            "obligations": [{
                "type": "require_approval",
                "approvals_required": approvals_required,
                "approver_roles": approver_roles,
                "reason": "above the single-transfer limit",
            }],
        })
    }

    /// Parses `document` on a path honouring `honours`; `Err` holds the message.
    fn check(document: Value, honours: Honours) -> Result<ParsedDecision, String> {
        parse_decision(&document, honours)
    }

    #[test]
    fn decisions_without_obligations_parse_on_every_path() {
        for honours in [Honours::Nothing, Honours::RequireApproval] {
            for document in [
                json!({"allow": true, "reasons": []}),
                json!({"allow": true, "reasons": [], "obligations": []}),
                json!({"allow": true, "obligations": null}),
            ] {
                assert_eq!(
                    check(document, honours),
                    Ok(ParsedDecision {
                        allow: true,
                        reasons: vec![],
                        approval: None
                    })
                );
            }
        }
        let denied = check(
            json!({"allow": false, "reasons": [{"code": "x.y", "message": "no"}], "obligations": []}),
            Honours::Nothing,
        )
        .unwrap();
        assert!(!denied.allow);
        assert_eq!(denied.reasons, vec![Reason::new("x.y", "no")]);
    }

    #[test]
    fn require_approval_is_honoured_on_the_transfer_path() {
        let parsed = check(
            approval(json!(2), json!(["approver"])),
            Honours::RequireApproval,
        );
        assert_eq!(
            parsed,
            Ok(ParsedDecision {
                allow: true,
                reasons: vec![],
                approval: Some(RequiredApproval {
                    approvals_required: 2,
                    approver_roles: vec!["approver".into()],
                }),
            })
        );
        // Bounds are inclusive.
        let most = check(
            approval(json!(APPROVALS_REQUIRED_MAX), json!(["a", "b"])),
            Honours::RequireApproval,
        )
        .unwrap();
        assert_eq!(
            most.approval.unwrap().approvals_required,
            APPROVALS_REQUIRED_MAX
        );
        // A deny wins over its obligations: nothing is held.
        let mut denied = approval(json!(1), json!(["approver"]));
        denied["allow"] = json!(false);
        denied["reasons"] = json!([{"code": "funds.insufficient", "message": "no"}]);
        let denied = check(denied, Honours::RequireApproval).unwrap();
        assert_eq!((denied.allow, denied.approval), (false, None));
    }

    #[test]
    fn malformed_or_unknown_obligations_are_errors() {
        let too_many_roles: Vec<String> = (0..=APPROVER_ROLES_MAX)
            .map(|index| format!("r{index}"))
            .collect();
        let cases: Vec<(Value, Honours, &str)> = vec![
            // approvals_required not an integer 1..=max
            (
                approval(json!(0), json!(["approver"])),
                Honours::RequireApproval,
                "approvals_required",
            ),
            (
                approval(json!(APPROVALS_REQUIRED_MAX + 1), json!(["approver"])),
                Honours::RequireApproval,
                "approvals_required",
            ),
            (
                approval(json!(-1), json!(["approver"])),
                Honours::RequireApproval,
                "approvals_required",
            ),
            (
                approval(json!(1.5), json!(["approver"])),
                Honours::RequireApproval,
                "approvals_required",
            ),
            (
                approval(json!("2"), json!(["approver"])),
                Honours::RequireApproval,
                "approvals_required",
            ),
            (
                approval(Value::Null, json!(["approver"])),
                Honours::RequireApproval,
                "approvals_required",
            ),
            // roles not a non-empty array of non-empty strings
            (
                approval(json!(1), json!([])),
                Honours::RequireApproval,
                "approver_roles",
            ),
            (
                approval(json!(1), json!("approver")),
                Honours::RequireApproval,
                "approver_roles",
            ),
            (
                approval(json!(1), json!([7])),
                Honours::RequireApproval,
                "approver_roles",
            ),
            (
                approval(json!(1), json!([""])),
                Honours::RequireApproval,
                "approver_roles",
            ),
            (
                approval(json!(1), json!(too_many_roles)),
                Honours::RequireApproval,
                "approver_roles",
            ),
            // members we do not know could be conditions we would drop
            (
                {
                    let mut document = approval(json!(1), json!(["approver"]));
                    document["obligations"][0]["amount_max"] = json!(5);
                    document
                },
                Honours::RequireApproval,
                "amount_max",
            ),
            (
                {
                    let mut document = approval(json!(1), json!(["approver"]));
                    document["obligations"][0]["reason"] = json!(42);
                    document
                },
                Honours::RequireApproval,
                "reason",
            ),
            // two holds are ambiguous
            (
                {
                    let mut document = approval(json!(1), json!(["approver"]));
                    let first = document["obligations"][0].clone();
                    document["obligations"] = json!([first.clone(), first]);
                    document
                },
                Honours::RequireApproval,
                "more than one",
            ),
            // unknown type, on the transfer path and elsewhere
            (
                json!({"allow": true, "reasons": [], "obligations": [{"type": "notify_compliance"}]}),
                Honours::RequireApproval,
                "\"notify_compliance\"",
            ),
            (
                json!({"allow": true, "reasons": [], "obligations": [{"type": "notify_compliance"}]}),
                Honours::Nothing,
                "\"notify_compliance\"",
            ),
            // a path that honours nothing refuses even require_approval
            (
                approval(json!(1), json!(["approver"])),
                Honours::Nothing,
                "\"require_approval\"",
            ),
            // shape
            (
                json!({"allow": true, "reasons": [], "obligations": [{"approvals_required": 1}]}),
                Honours::RequireApproval,
                "needs a string type",
            ),
            (
                json!({"allow": true, "reasons": [], "obligations": {"type": "require_approval"}}),
                Honours::RequireApproval,
                "not an array",
            ),
            (
                json!({"allow": true, "reasons": [], "obligations": vec![json!({"type": "x"}); OBLIGATIONS_MAX + 1]}),
                Honours::RequireApproval,
                "more than",
            ),
            // unknown obligations are errors even on a deny: the document is malformed
            (
                json!({"allow": false, "reasons": [{"code": "a.b"}], "obligations": [{"type": "x"}]}),
                Honours::Nothing,
                "\"x\"",
            ),
        ];
        for (document, honours, fragment) in cases {
            let error = check(document.clone(), honours).expect_err(&document.to_string());
            assert!(error.contains(fragment), "{document}: {error}");
        }
    }

    #[test]
    fn account_input_shows_reservations_and_what_is_available() {
        let eur = Currency::parse("EUR").unwrap();
        let state = AccountState {
            account: Account {
                id: AccountId::parse("DE89370400440532013000").unwrap(),
                currency: eur,
                status: AccountStatus::Active,
                overdraft_allowed: false,
                balance_minor: 250_000_000,
                created_at: datetime!(2026-01-01 0:00 UTC),
                updated_at: datetime!(2026-01-01 0:00 UTC),
            },
            debited_today_minor: 25_000,
            reserved_minor: 200_000_000,
        };
        let input = account_input(&state, eur);
        assert_eq!(input["balance"], "2500000.00");
        assert_eq!(input["reserved"], "2000000.00");
        assert_eq!(input["reserved_minor"], 200_000_000);
        assert_eq!(input["available"], "500000.00");
        assert_eq!(input["available_minor"], 50_000_000);
        assert_eq!(input["debited_today_minor"], 25_000);

        // Out of the i64 range the value saturates (and then disagrees with balance -
        // reserved, which the policy refuses as invalid input).
        let overdrawn = AccountState {
            account: Account {
                balance_minor: i64::MIN,
                overdraft_allowed: true,
                ..state.account.clone()
            },
            reserved_minor: 1,
            ..state
        };
        assert_eq!(available_minor_i64(&overdrawn), i64::MIN);
    }
}
