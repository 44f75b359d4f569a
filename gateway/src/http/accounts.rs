//! `POST /v1/accounts` (admin role) and `GET /v1/accounts/{id}`.

use std::sync::Arc;

use axum::{
    Extension, Json,
    extract::{Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use countersign_audit::{NewRecord, Outcome, RecordKind};
use countersign_ledger::{Account, AccountId, AccountStatus, Currency, NewAccount, format_minor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    ApiError, decode_json,
    transfers::{READ_ROLES, subject_of},
};
use crate::app::{AppState, Caller};

pub const ACTION_ACCOUNT_CREATE: &str = "account.create";
const ADMIN_ROLES: &[&str] = &["admin"];

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRequest {
    pub id: String,
    pub currency: String,
    #[serde(default)]
    pub overdraft_allowed: bool,
    #[serde(default)]
    pub status: Option<AccountStatus>,
}

#[derive(Debug, Serialize)]
pub struct AccountView {
    pub id: String,
    pub currency: String,
    pub status: AccountStatus,
    pub overdraft_allowed: bool,
    pub balance: String,
    pub balance_minor: i64,
}

impl AccountView {
    pub fn from_account(account: &Account) -> AccountView {
        AccountView {
            id: account.id.as_str().to_owned(),
            currency: account.currency.code().to_owned(),
            status: account.status,
            overdraft_allowed: account.overdraft_allowed,
            balance: format_minor(account.balance_minor, account.currency),
            balance_minor: account.balance_minor,
        }
    }
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !caller.identity.has_any_role(ADMIN_ROLES) {
        return Err(ApiError::RoleRequired { roles: ADMIN_ROLES });
    }
    let request: AccountRequest = decode_json(&headers, body, state.config.limits.body_bytes_max)?;
    let account = NewAccount {
        id: AccountId::parse(&request.id)?,
        currency: Currency::parse(&request.currency)?,
        overdraft_allowed: request.overdraft_allowed,
        status: request.status.unwrap_or(AccountStatus::Active),
    };
    let input = json!({
        "action": ACTION_ACCOUNT_CREATE,
        "account": {
            "id": countersign_audit::mask_account_number(account.id.as_str()),
            "currency": account.currency.code(),
            "overdraft_allowed": account.overdraft_allowed,
            "status": account.status,
        },
    });
    let record = NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Decision,
        decision_id: Uuid::now_v7(),
        timestamp: OffsetDateTime::now_utc(),
        subject: subject_of(&caller),
        source_address: caller.remote_address.to_string(),
        action: ACTION_ACCOUNT_CREATE.to_owned(),
        masked_input: input,
        result: json!({"allow": true, "reasons": [], "rule": "role admin required"}),
        bundle_revision: state.policy.load().revision().to_owned(),
        outcome: Outcome::Allow,
        redaction: Default::default(),
        sealed_input: None,
    };
    let created = state.store.create_account(account, record).await?;
    state
        .metrics
        .record_decision(ACTION_ACCOUNT_CREATE, "allow", &[]);
    Ok((
        StatusCode::CREATED,
        Json(AccountView::from_account(&created)),
    )
        .into_response())
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
        code: "account.not_found",
        message: "no account with this id".into(),
    };
    let id = AccountId::parse(&id).map_err(|_| not_found())?;
    let account = state.store.account(&id).await?.ok_or_else(not_found)?;
    Ok(Json(AccountView::from_account(&account)).into_response())
}
