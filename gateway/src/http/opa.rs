//! OPA-compatible Data API, so any service can ask Countersign as it would ask OPA:
//! `POST /v1/data/{path}` with `{"input": ...}` → `{"result": ..., "decision_id": ...}`
//! (no `result` when the document is undefined), and `GET /health`. Callers need the
//! `policy_client` role; every answer is audited like a transfer decision, and if the audit
//! trail cannot take the record the caller gets 503 and no answer (fail closed).

use std::borrow::Cow;
use std::sync::Arc;

use crate::policy::mask::mask_decision;
use axum::{
    Extension, Json,
    extract::{Path, State, rejection::BytesRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use countersign_audit::{NewRecord, Outcome, RecordKind};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ApiError, decode_json, transfers::subject_of};
use crate::app::{AppState, Caller};

pub const ACTION_DATA: &str = "policy.data";
const POLICY_CLIENT_ROLES: &[&str] = &["policy_client"];
/// Path segments in one query; OPA documents are never this deep in practice.
const PATH_SEGMENTS_MAX: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataRequest {
    #[serde(default)]
    input: Option<Value>,
}

/// `a/b/c` → `data.a.b.c`; only Rego identifiers, so the path cannot smuggle an expression.
fn rule_path(path: &str) -> Result<String, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let valid = |segment: &&str| {
        let mut chars = segment.chars();
        chars
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if segments.is_empty() || segments.len() > PATH_SEGMENTS_MAX || !segments.iter().all(valid) {
        return Err(ApiError::bad_request(
            "path.invalid",
            "the data path must be 1 to 32 Rego identifiers separated by '/'",
        ));
    }
    Ok(format!("data.{}", segments.join(".")))
}

/// The audit outcome of a Data API answer: a boolean `false` or an `allow: false` is a deny.
fn outcome_of(result: &Option<Value>) -> Outcome {
    match result {
        Some(Value::Bool(false)) => Outcome::Deny,
        Some(Value::Object(object)) if object.get("allow") == Some(&Value::Bool(false)) => {
            Outcome::Deny
        }
        _ => Outcome::Allow,
    }
}

pub async fn data(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !caller.identity.has_any_role(POLICY_CLIENT_ROLES) {
        return Err(ApiError::RoleRequired {
            roles: POLICY_CLIENT_ROLES,
        });
    }
    let query = rule_path(&path)?;
    let empty_body = matches!(&body, Ok(bytes) if bytes.is_empty());
    let request: DataRequest = if empty_body {
        DataRequest { input: None }
    } else {
        decode_json(&headers, body, state.config.limits.body_bytes_max)?
    };
    let engine = state.policy.load_full();
    let evaluated = engine.query(&query, request.input.as_ref());
    let decision_id = Uuid::now_v7();
    let (outcome, result_document) = match &evaluated {
        Ok(result) => (
            outcome_of(result),
            json!({"path": query, "result": result, "defined": result.is_some()}),
        ),
        Err(error) => (
            Outcome::Error,
            json!({"path": query, "error": error.to_string(), "code": error.code()}),
        ),
    };
    // The unmasked input, encrypted, goes with the record (when `[audit.encryption]` is set).
    // A record that cannot be complete is not written, and the answer is not given (503).
    let record_id = Uuid::now_v7();
    let sealed_input = super::reveal::seal_input(
        &state,
        record_id,
        || Cow::Borrowed(request.input.as_ref().unwrap_or(&Value::Null)),
        &[],
    )
    .map_err(|error| {
        tracing::error!(%decision_id, error = %error, "cannot seal the Data API input; not answering");
        ApiError::from(error)
    })?;
    // The mask sees what OPA's sees: the request's input and the decision.
    let masked = mask_decision(
        &engine,
        &query.trim_start_matches("data.").replace('.', "/"),
        decision_id,
        request.input.unwrap_or(Value::Null),
        result_document,
    );
    let record = NewRecord {
        record_id,
        kind: RecordKind::Decision,
        decision_id,
        timestamp: OffsetDateTime::now_utc(),
        subject: subject_of(&caller),
        source_address: caller.remote_address.to_string(),
        action: ACTION_DATA.to_owned(),
        masked_input: masked.input,
        result: masked.result,
        bundle_revision: engine.revision().to_owned(),
        outcome,
        redaction: masked.redaction,
        sealed_input,
    };
    state.store.append_audit(vec![record]).await?;
    state
        .metrics
        .record_decision(ACTION_DATA, outcome.as_str(), &[]);
    match evaluated {
        Ok(Some(result)) => {
            Ok(Json(json!({"result": result, "decision_id": decision_id})).into_response())
        }
        Ok(None) => Ok(Json(json!({"decision_id": decision_id})).into_response()),
        Err(error) => Err(ApiError::PolicyFailed {
            decision_id,
            message: error.to_string(),
        }),
    }
}

/// OPA's `GET /health`: 200 with `{}` while a policy is loaded and the trail is writable.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        Json(json!({})).into_response()
    } else {
        ApiError::Unavailable {
            code: "not_ready",
            message: "the audit trail is not writable or the gateway is shutting down".into(),
        }
        .into_response()
    }
}
