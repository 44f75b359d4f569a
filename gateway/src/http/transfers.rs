//! `POST /v1/transfers` and `GET /v1/transfers/{id}`.
//!
//! Order of checks, and why: the idempotency key and body shape first (cheap, write nothing),
//! then domain parsing (amount, currency, accounts), then the policy decision and the posting,
//! which the ledger's writer runs in one transaction with the audit records, on the account
//! state it has just read, so policy and ledger never see different balances.

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
    AccountId, AccountState, Amount, Currency, DecisionContext, IdempotencyClaim,
    IdempotencyOutcome, Reason, StoredIdempotency, Transfer, TransferCommand, TransferOutcome,
    Verdict,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ApiError, decode_json};
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

/// A transfer as the API shows it.
#[derive(Debug, Serialize)]
pub struct TransferView {
    pub id: Uuid,
    pub status: &'static str,
    pub debit_account: String,
    pub credit_account: String,
    pub amount: String,
    pub currency: String,
    pub end_to_end_id: Option<String>,
    pub purpose: Option<String>,
    pub remittance_info: Option<String>,
    pub decision_id: Uuid,
    pub posted_at: String,
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
            posted_at: rfc3339(transfer.posted_at),
        }
    }
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

fn optional_text(
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
        TransferOutcome::Replayed(stored) => replay(&state, stored, &request_hash).await,
    }
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
    match stored.transfer_id {
        Some(transfer_id) if stored.outcome == IdempotencyOutcome::Posted => {
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
        _ => Err(ApiError::PolicyDenied {
            decision_id: stored.decision_id,
            reasons: stored.reasons,
        }),
    }
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
    json!({
        "id": state.account.id.as_str(),
        "status": state.account.status,
        "currency": state.account.currency.code(),
        "overdraft_allowed": state.account.overdraft_allowed,
        "balance": countersign_ledger::format_minor(state.account.balance_minor, currency),
        "balance_minor": state.account.balance_minor,
        "debited_today": countersign_ledger::format_minor(state.debited_today_minor, currency),
        "debited_today_minor": state.debited_today_minor,
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
        "transfer": {
            "id": transfer.id,
            "debit_account": transfer.debit_account.as_str(),
            "credit_account": transfer.credit_account.as_str(),
            "amount": transfer.amount.to_decimal_string(),
            "amount_minor": transfer.amount.minor_units(),
            "currency": currency.code(),
            "currency_minor_units": currency.minor_units(),
            "end_to_end_id": transfer.end_to_end_id,
            "purpose": transfer.purpose,
            "remittance_info": transfer.remittance_info,
        },
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

/// Parses the decision document; anything but the documented shape is an error (deny).
pub fn parse_decision(document: &Value) -> Result<(bool, Vec<Reason>), String> {
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
    if allow && !reasons.is_empty() {
        return Err("decision allows but gives deny reasons".to_owned());
    }
    if !allow && reasons.is_empty() {
        // A deny must say why; give the caller something to act on.
        return Ok((
            false,
            vec![Reason {
                code: "policy.denied".into(),
                message: "denied by policy without a stated reason".into(),
            }],
        ));
    }
    Ok((allow, reasons))
}

/// A decision as recorded: what the policy said, or a fail-closed deny when it could not say.
pub struct Decided {
    pub allow: bool,
    pub reasons: Vec<Reason>,
    /// `Allow`, `Deny`, or `Error` when the policy failed (and the answer is a deny).
    pub outcome: Outcome,
    /// The decision document, or `{allow: false, reasons, error}` on failure.
    pub result: Value,
}

/// Evaluates a decision document (`{allow, reasons, ...}`) and fails closed: an evaluation
/// error, a timeout, an undefined or malformed document is a deny with outcome `error`.
/// Records the evaluation time and the decision metrics. Shared by transfers and proxy routes.
pub fn decide_fail_closed(
    state: &AppState,
    action: &str,
    subject_of_refusal: &str,
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
            parse_decision(&document)
                .map(|(allow, reasons)| (allow, reasons, document))
                .map_err(|message| ("policy.error", message))
        }) {
        Ok((allow, reasons, document)) => Decided {
            allow,
            reasons,
            outcome: if allow { Outcome::Allow } else { Outcome::Deny },
            result: document,
        },
        Err((code, message)) => {
            tracing::warn!(error = %message, code, action, "policy evaluation failed; denying");
            let reasons = vec![Reason {
                code: code.to_owned(),
                message: format!(
                    "policy could not decide, {subject_of_refusal} refused: {message}"
                ),
            }];
            let result = json!({"allow": false, "reasons": &reasons, "error": message});
            Decided {
                allow: false,
                reasons,
                outcome: Outcome::Error,
                result,
            }
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
    let Decided {
        allow,
        reasons,
        outcome,
        result,
    } = decide_fail_closed(state, ACTION_TRANSFER, "transfer", || {
        policy.evaluate(&input)
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
        decision_record: NewRecord {
            record_id: Uuid::now_v7(),
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
    let transfer = state.store.transfer(id).await?.ok_or_else(not_found)?;
    Ok(Json(TransferView::from_transfer(&transfer)).into_response())
}
