//! Operator endpoints (admin role).

use std::sync::Arc;

use axum::{
    Extension, Json,
    extract::State,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::ApiError;
use crate::{
    app::{AppState, Caller},
    reload::{self, ReloadTrigger},
};

const ADMIN_ROLES: &[&str] = &["admin"];

/// `POST /v1/admin/policy/reload`: load, test, compile and activate the bundle now.
pub async fn reload_policy(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    if !caller.identity.has_any_role(ADMIN_ROLES) {
        return Err(ApiError::RoleRequired { roles: ADMIN_ROLES });
    }
    tracing::info!(common_name = ?caller.identity.common_name, "policy reload requested");
    match reload::reload(&state, ReloadTrigger::Admin).await {
        Ok(engine) => Ok(Json(json!({
            "revision": engine.revision(),
            "evaluator": engine.evaluator(),
        }))
        .into_response()),
        Err(error) => Err(ApiError::unprocessable(
            "policy.reload_refused",
            format!(
                "{error}; revision {} stays active",
                state.policy.load().revision()
            ),
        )),
    }
}
