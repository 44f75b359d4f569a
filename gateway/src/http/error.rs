//! The one place where errors become HTTP responses: status, machine-readable `code`,
//! human `message`, and extra fields for policy denials. Handlers return `ApiError` and
//! never build error responses themselves.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use countersign_ledger::{DomainError, LedgerError, Reason};
use serde_json::json;
use uuid::Uuid;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is not well-formed (missing header, unparseable JSON).
    BadRequest {
        code: &'static str,
        message: String,
    },
    /// 400 `query.invalid`: a query parameter is unknown, repeated or malformed; the body
    /// names it in `parameter`.
    QueryInvalid {
        parameter: String,
        message: String,
    },
    /// 401: no identity (should not happen behind mTLS; defensive).
    Unauthenticated,
    /// 403: the caller lacks a role the gateway itself requires.
    RoleRequired {
        roles: &'static [&'static str],
    },
    /// 403: the policy refused; carries the decision id and reasons.
    PolicyDenied {
        decision_id: Uuid,
        reasons: Vec<Reason>,
    },
    NotFound {
        code: &'static str,
        message: String,
    },
    /// 409: conflicts with the current state (duplicate, in flight).
    Conflict {
        code: &'static str,
        message: String,
    },
    PayloadTooLarge {
        limit_bytes: usize,
    },
    UnsupportedMediaType,
    /// 422: well-formed but semantically invalid; nothing was written.
    Unprocessable {
        code: &'static str,
        message: String,
    },
    /// 503: the store or audit trail cannot take writes; nothing was written (fail closed).
    Unavailable {
        code: &'static str,
        message: String,
    },
    /// 500: the policy could not be evaluated for a Data API query (audited as an error).
    PolicyFailed {
        decision_id: Uuid,
        message: String,
    },
    Internal {
        message: String,
    },
    /// 502: a proxy route's upstream could not be reached or broke off the exchange.
    BadGateway {
        code: &'static str,
        message: String,
    },
    /// 504: a proxy route's upstream did not send its response headers in time.
    GatewayTimeout {
        code: &'static str,
        message: String,
    },
}

impl ApiError {
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::QueryInvalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::RoleRequired { .. } | ApiError::PolicyDenied { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } | ApiError::PolicyFailed { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The JSON body; also what an idempotent replay of a denial returns.
    pub fn body(&self) -> serde_json::Value {
        match self {
            ApiError::BadRequest { code, message }
            | ApiError::NotFound { code, message }
            | ApiError::Conflict { code, message }
            | ApiError::Unprocessable { code, message }
            | ApiError::Unavailable { code, message }
            | ApiError::BadGateway { code, message }
            | ApiError::GatewayTimeout { code, message } => {
                json!({"code": code, "message": message})
            }
            ApiError::QueryInvalid { parameter, message } => json!({
                "code": "query.invalid",
                "message": format!("parameter `{parameter}`: {message}"),
                "parameter": parameter,
            }),
            ApiError::Unauthenticated => json!({
                "code": "identity.missing",
                "message": "a verified client certificate is required",
            }),
            ApiError::RoleRequired { roles } => json!({
                "code": "role.required",
                "message": format!("this operation requires one of the roles: {}", roles.join(", ")),
            }),
            ApiError::PolicyDenied {
                decision_id,
                reasons,
            } => json!({
                "code": "policy.denied",
                "message": "refused by policy",
                "decision_id": decision_id,
                "reasons": reasons,
            }),
            ApiError::PayloadTooLarge { limit_bytes } => json!({
                "code": "body.too_large",
                "message": format!("request body exceeds {limit_bytes} bytes"),
            }),
            ApiError::UnsupportedMediaType => json!({
                "code": "content_type.unsupported",
                "message": "Content-Type must be application/json",
            }),
            ApiError::PolicyFailed {
                decision_id,
                message,
            } => json!({
                "code": "policy.evaluation_failed",
                "message": message,
                "decision_id": decision_id,
            }),
            ApiError::Internal { .. } => json!({
                "code": "internal",
                "message": "internal error; the request was not completed",
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal { message } = &self {
            tracing::error!(error = %message, "internal error");
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::Unavailable { .. }) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<super::reveal::SealFailed> for ApiError {
    fn from(_: super::reveal::SealFailed) -> Self {
        ApiError::Unavailable {
            code: "audit.unavailable",
            message: "the decision could not be recorded in the audit trail (its input could not be encrypted); nothing was answered or forwarded".into(),
        }
    }
}

impl From<super::reveal::RevealError> for ApiError {
    fn from(error: super::reveal::RevealError) -> Self {
        use super::reveal::{REVEALER_ROLES, RevealError};
        match error {
            RevealError::RoleRequired => ApiError::RoleRequired {
                roles: REVEALER_ROLES,
            },
            RevealError::InvalidRecordId => ApiError::bad_request(
                "record_id.invalid",
                "the record id must be a UUID",
            ),
            RevealError::NotConfigured => ApiError::Conflict {
                code: "reveal.not_configured",
                message: "encryption at rest ([audit.encryption]) is not configured, so no unmasked input is stored".into(),
            },
            RevealError::RecordNotFound(_) => ApiError::NotFound {
                code: "audit_record.not_found",
                message: "no audit record with this id".into(),
            },
            RevealError::NotSealed(_) => ApiError::NotFound {
                code: "audit_input.not_found",
                message: "this audit record has no sealed input (postings, reservations, approvals, releases and non-policy records have none, nor do records written while encryption was off)".into(),
            },
            // Not transient: an operator must put the named key back into the keyring.
            RevealError::KeyUnavailable { source, .. } => ApiError::Conflict {
                code: "reveal.key_unavailable",
                message: source.to_string(),
            },
            // Tampered or damaged stored bytes: logged as an error, never detailed to the caller.
            error @ RevealError::Unreadable { .. } => ApiError::Internal {
                message: error.to_string(),
            },
            RevealError::Store(message) => ApiError::Unavailable {
                code: "store.unavailable",
                message: format!("the audit store cannot be read ({message})"),
            },
            RevealError::NotAudited(_) => ApiError::Unavailable {
                code: "audit.unavailable",
                message: "the reveal could not be written to the audit trail; nothing was revealed".into(),
            },
        }
    }
}

impl From<super::audit::WorkspaceError> for ApiError {
    fn from(error: super::audit::WorkspaceError) -> Self {
        use super::audit::{AUDITOR_ROLES, WorkspaceError};
        match error {
            WorkspaceError::RoleRequired => ApiError::RoleRequired {
                roles: AUDITOR_ROLES,
            },
            WorkspaceError::InvalidQuery { parameter, message } => {
                ApiError::QueryInvalid { parameter, message }
            }
            WorkspaceError::RecordNotFound(_) => ApiError::NotFound {
                code: "audit_record.not_found",
                message: "no sealed audit record with this id".into(),
            },
            WorkspaceError::NoCheckpoint => ApiError::NotFound {
                code: "checkpoint.not_found",
                message: "no checkpoint has been signed yet; the first follows within [audit.checkpoints] interval_seconds of the first records".into(),
            },
            WorkspaceError::NotConfigured => ApiError::Conflict {
                code: "checkpoints.not_configured",
                message: "no checkpoint signing key is configured ([audit.checkpoints] signing_key_file): records are indexed and searchable, but no checkpoint is signed and nothing can be proved".into(),
            },
            WorkspaceError::Store(error) => ApiError::from(error),
            // The stored tree lacks a node the proof needs: a bug or damage, not an outage.
            error @ WorkspaceError::Tree(_) => ApiError::Internal {
                message: error.to_string(),
            },
            WorkspaceError::NotAudited(_) => ApiError::Unavailable {
                code: "audit.unavailable",
                message: "this call could not be written to the audit trail; no data was returned".into(),
            },
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        ApiError::Unprocessable {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::AccountNotFound(id) => ApiError::Unprocessable {
                code: "account.not_found",
                message: format!(
                    "account {} does not exist",
                    countersign_audit::mask_account_number(&id.to_string())
                ),
            },
            LedgerError::ApprovalNotFound(_) => ApiError::NotFound {
                code: "transfer.not_found",
                message: "no transfer with this id is held for approval".into(),
            },
            LedgerError::AccountExists(id) => ApiError::Conflict {
                code: "account.exists",
                message: format!("account {id} already exists"),
            },
            LedgerError::IdempotencyConflict { .. } => ApiError::Unprocessable {
                code: "idempotency_key.reused",
                message: "this Idempotency-Key was already used with a different request body"
                    .into(),
            },
            LedgerError::Overloaded => ApiError::Unavailable {
                code: "ledger.overloaded",
                message: "the ledger queue is full; retry shortly".into(),
            },
            LedgerError::OutboxFull { backlog, rows_max } => ApiError::Unavailable {
                code: "outbox.full",
                message: format!(
                    "the audit stream is {backlog} records behind (limit {rows_max}); nothing was posted, retry once it has caught up"
                ),
            },
            LedgerError::ShuttingDown => ApiError::Unavailable {
                code: "ledger.shutting_down",
                message: "the gateway is shutting down".into(),
            },
            // A bug on our side (a decision callback or a stored row that breaks its own
            // contract), not an outage: retrying will not help.
            error @ (LedgerError::DecisionFailed(_) | LedgerError::CorruptRow(_)) => {
                ApiError::Internal {
                    message: format!("nothing was written: {error}"),
                }
            }
            other => ApiError::Unavailable {
                code: "store.unavailable",
                message: format!(
                    "the ledger or audit trail cannot be written; nothing was posted or forwarded ({other})"
                ),
            },
        }
    }
}
