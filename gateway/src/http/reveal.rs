//! Encryption at rest of the unmasked policy input, and its audited reveal.
//!
//! Sealing: with `[audit.encryption]` configured, every decision record the gateway builds for
//! a transfer, an approve/reject step, a proxy route or the Data API carries the input the
//! policy saw, unmasked, sealed with the keyring (`countersign_audit::envelope`), plus the
//! blind-index tokens of the transfer's accounts. The store writes it to `audit_inputs` with
//! the record. The masked input stays in the record: queries and exports use only that.
//! Without the section nothing unmasked is stored at all. A proxy route's input keeps its
//! secret headers redacted even in the sealed copy: credentials are not evidence, and a
//! revealer must never be able to replay them.
//!
//! If sealing fails (the system RNG, or an input larger than any record may be), the record
//! cannot be complete, so the request fails closed: a transfer or approval step becomes a
//! deny with outcome `error` (reason `audit.encryption_failed`); a proxy or Data API request
//! is refused with 503 before the policy's answer is used.
//!
//! Reveal: `GET /v1/audit/records/{record_id}/input`, role `revealer` only. Every attempt —
//! allowed or refused, whatever the reason — is appended to the audit trail (kind decision,
//! action `audit.reveal`, subject = the caller, masked input = `{record_id}`, result =
//! `{allowed, reason}`) **before** the answer is sent; if that append fails the caller gets
//! 503 and nothing is revealed. The revealed input itself is never written anywhere.

use std::borrow::Cow;
use std::sync::Arc;

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use countersign_audit::{
    AuditError, EnvelopeError, Keyring, Outcome, SealedInput, inputs::InputLookup,
};
use countersign_ledger::{LedgerError, Reason, Store};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiError, audit::append_access_record, transfers::Decided};
use crate::app::{AppState, Caller};

pub const ACTION_REVEAL: &str = "audit.reveal";
/// The only role that may reveal.
pub const REVEALER_ROLES: &[&str] = &["revealer"];
/// Longest record id echoed into the reveal's audit record (a UUID is 36 characters); a
/// longer path segment is cut, so a caller cannot bloat the trail.
const REQUESTED_ID_CHARS_MAX: usize = 64;
/// Reason code of a decision refused because its input could not be sealed.
pub const REASON_ENCRYPTION_FAILED: &str = "audit.encryption_failed";

/// An input that could not be sealed: the record cannot be complete, so a request outside the
/// ledger's writer (proxy, Data API) is refused with 503 (`http/error.rs`).
#[derive(Debug, thiserror::Error)]
#[error("the policy input could not be sealed: {0}")]
pub struct SealFailed(#[from] pub EnvelopeError);

/// Seals the input `input()` gives for `record_id` when encryption is configured (`Ok(None)`
/// when it is not: then `input` is not called, so a caller that seals a derived copy — the
/// proxy's redacted input, the admission request — builds it only when it is sealed).
/// `account_ids` are the accounts the input is about (a transfer's debit and credit).
pub fn seal_input<'a>(
    state: &AppState,
    record_id: Uuid,
    input: impl FnOnce() -> Cow<'a, Value>,
    account_ids: &[&str],
) -> Result<Option<SealedInput>, SealFailed> {
    match &state.keyring {
        Some(keyring) => Ok(Some(keyring.seal(record_id, &input(), account_ids)?)),
        None => Ok(None),
    }
}

/// For decisions made inside the ledger's writer (transfers, approval steps), which cannot
/// answer 503: seals the input, and on failure turns the decision into a fail-closed deny
/// (outcome `error`) whose record carries no sealed input.
pub fn seal_decision(
    state: &AppState,
    record_id: Uuid,
    input: &Value,
    account_ids: &[&str],
    decided: Decided,
) -> (Decided, Option<SealedInput>) {
    match seal_input(state, record_id, || Cow::Borrowed(input), account_ids) {
        Ok(sealed) => (decided, sealed),
        Err(error) => {
            tracing::error!(%record_id, error = %error, "cannot seal the policy input; denying");
            let reason = Reason {
                code: REASON_ENCRYPTION_FAILED.to_owned(),
                message: format!(
                    "the input could not be encrypted for the audit trail: {}",
                    error.0
                ),
            };
            let mut refused = Decided::fail_closed(reason, error.0.to_string());
            refused.result["policy_result"] = decided.result;
            (refused, None)
        }
    }
}

/// Why a reveal did not reveal. `http/error.rs` maps each to its status and code.
#[derive(Debug, thiserror::Error)]
pub enum RevealError {
    #[error("the caller lacks the revealer role")]
    RoleRequired,
    #[error("the record id is not a UUID")]
    InvalidRecordId,
    #[error("encryption at rest is not configured")]
    NotConfigured,
    #[error("no audit record {0}")]
    RecordNotFound(Uuid),
    #[error("audit record {0} has no sealed input")]
    NotSealed(Uuid),
    /// Sealed with a KEK the keyring no longer holds.
    #[error("record {record_id}: {source}")]
    KeyUnavailable {
        record_id: Uuid,
        #[source]
        source: EnvelopeError,
    },
    /// Stored bytes that do not authenticate or decode: tampering or damage.
    #[error("record {record_id}: {message}")]
    Unreadable { record_id: Uuid, message: String },
    /// The store could not be read.
    #[error("the audit store could not be read: {0}")]
    Store(String),
    /// The reveal itself could not be audited, so nothing is revealed.
    #[error("the reveal could not be audited: {0}")]
    NotAudited(String),
}

impl RevealError {
    /// The `reason` written into the reveal's audit record, and whether the refusal is the
    /// system's failure (`error`) rather than a refusal of the request (`deny`).
    fn audit_reason(&self) -> (&'static str, Outcome) {
        match self {
            RevealError::RoleRequired => ("role.required", Outcome::Deny),
            RevealError::InvalidRecordId => ("record_id.invalid", Outcome::Deny),
            RevealError::NotConfigured => ("reveal.not_configured", Outcome::Deny),
            RevealError::RecordNotFound(_) => ("audit_record.not_found", Outcome::Deny),
            RevealError::NotSealed(_) => ("audit_input.not_found", Outcome::Deny),
            RevealError::KeyUnavailable { .. } => ("reveal.key_unavailable", Outcome::Error),
            RevealError::Unreadable { .. } => ("reveal.unreadable", Outcome::Error),
            RevealError::Store(_) => ("store.unavailable", Outcome::Error),
            RevealError::NotAudited(_) => ("audit.unavailable", Outcome::Error),
        }
    }
}

/// A successful reveal: the record's input as the policy saw it.
struct Revealed {
    record_id: Uuid,
    kek_id: String,
    input: Value,
}

/// `GET /v1/audit/records/{record_id}/input`.
pub async fn reveal(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(requested): Path<String>,
) -> Result<Response, ApiError> {
    let attempt = open_record(&state, &caller, &requested).await;
    let (result, outcome) = match &attempt {
        Ok(revealed) => (
            json!({"allowed": true, "reason": "revealed", "kek_id": revealed.kek_id}),
            Outcome::Allow,
        ),
        Err(error) => {
            let (reason, outcome) = error.audit_reason();
            (json!({"allowed": false, "reason": reason}), outcome)
        }
    };
    let requested_shown: String = requested.chars().take(REQUESTED_ID_CHARS_MAX).collect();
    // The revealed input is shown once, to this caller; the record never stores it again.
    let appended = append_access_record(
        &state,
        &caller,
        ACTION_REVEAL,
        json!({"record_id": requested_shown}),
        result,
        outcome,
        state.policy.load().revision().to_owned(),
    )
    .await;
    if let Err(error) = appended {
        tracing::error!(requested = %requested_shown, error = %error, "reveal could not be audited; revealing nothing");
        return Err(RevealError::NotAudited(error.to_string()).into());
    }
    let revealed = attempt?;
    tracing::info!(record_id = %revealed.record_id, kek_id = %revealed.kek_id, "input revealed");
    let mut response = Json(json!({
        "record_id": revealed.record_id,
        "kek_id": revealed.kek_id,
        "input": revealed.input,
    }))
    .into_response();
    // Full account numbers and remittance text: no cache along the way may keep them.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Everything a reveal checks, in order: role, id, configuration, record, key, integrity.
async fn open_record(
    state: &AppState,
    caller: &Caller,
    requested: &str,
) -> Result<Revealed, RevealError> {
    if !caller.identity.has_any_role(REVEALER_ROLES) {
        return Err(RevealError::RoleRequired);
    }
    let record_id = Uuid::parse_str(requested).map_err(|_| RevealError::InvalidRecordId)?;
    let keyring: &Keyring = state.keyring.as_deref().ok_or(RevealError::NotConfigured)?;
    let sealed = match lookup(&state.store, record_id).await? {
        InputLookup::RecordNotFound => return Err(RevealError::RecordNotFound(record_id)),
        InputLookup::NotSealed => return Err(RevealError::NotSealed(record_id)),
        InputLookup::Sealed(sealed) => sealed,
    };
    match keyring.open(record_id, &sealed) {
        Ok(input) => Ok(Revealed {
            record_id,
            kek_id: sealed.kek_id,
            input,
        }),
        Err(source @ EnvelopeError::UnknownKey { .. }) => {
            tracing::warn!(%record_id, error = %source, "reveal refused: key not in the keyring");
            Err(RevealError::KeyUnavailable { record_id, source })
        }
        Err(error) => {
            tracing::error!(%record_id, error = %error, "sealed input does not open: tampered or damaged");
            Err(RevealError::Unreadable {
                record_id,
                message: error.to_string(),
            })
        }
    }
}

/// Reads the sealed input through the store's read pool (the audit crate owns the SQL).
async fn lookup(store: &Store, record_id: Uuid) -> Result<InputLookup, RevealError> {
    store
        .audit_input(record_id)
        .await
        .map_err(|error| match error {
            LedgerError::Audit(audit) => match &*audit {
                AuditError::CorruptInput { record_id, reason } => RevealError::Unreadable {
                    record_id: *record_id,
                    message: reason.clone(),
                },
                other => RevealError::Store(other.to_string()),
            },
            // A read, not an append: name the database's error, not the ledger's wrapper.
            LedgerError::Storage(database) => RevealError::Store(database.to_string()),
            other => RevealError::Store(other.to_string()),
        })
}
