//! Liveness, readiness and metrics.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde_json::json;

use crate::app::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let policy = state.policy.load();
    let audit_writable = state.store.audit_writable();
    let store_reachable = state.store.reachable().await;
    let ready = state.is_ready() && store_reachable;
    let body = Json(json!({
        "ready": ready,
        "audit_writable": audit_writable,
        "store_reachable": store_reachable,
        "policy": {
            "revision": policy.revision(),
            "evaluator": policy.evaluator(),
            "last_reload": &*state.lock_reload_status(),
        },
    }));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
