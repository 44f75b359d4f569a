//! Policy-guarded reverse-proxy routes: the front door for channel traffic that is not a
//! transfer, replacing an Envoy + OPA `ext_authz` pair with one process.
//!
//! Per request, in this order, and why:
//! 1. the path is checked for dot segments and encoded separators (400): the policy decides
//!    on the path, so the upstream must not be able to read it differently;
//! 2. a declared body larger than the route's bound is refused (413) — nothing is decided
//!    or written for a request that cannot be forwarded;
//! 3. the route's rule decides on an OPA-Envoy-like input (`input.rs`), in-process, with the
//!    engine that is active when the request starts;
//! 4. the decision record is appended to the audit trail **before** anything happens: a
//!    denial is audited before the 403, an allow before the first byte goes upstream, and
//!    if the trail cannot be written the request is not forwarded (503, fail closed);
//! 5. allowed requests are forwarded (`forward.rs`) with streamed bodies.
//!
//! The forwarding outcome (status, bytes) is not audited: the trail records decisions, as
//! OPA's decision log does for Envoy.

mod forward;
mod input;

use std::borrow::Cow;
use std::sync::Arc;

use crate::policy::mask::mask_decision;
use axum::{
    Extension, Router,
    extract::{Request, State},
    response::Response,
    routing::any,
};
use countersign_audit::{NewRecord, RecordKind, decision_path};
use time::OffsetDateTime;
use uuid::Uuid;

pub use forward::CLIENT_HEADER;

use crate::{
    app::{AppState, Caller},
    config::RouteConfig,
    http::{
        ApiError,
        transfers::{Decided, Honours, decide_fail_closed, subject_of},
    },
    policy::{PolicyEngine, PolicyError},
};

/// Audit and metrics action of a route: `proxy.<route name>`.
pub fn action_of(route: &RouteConfig) -> String {
    format!("proxy.{}", route.name)
}

/// Compiles every route's decision rule for `engine` (kept with the engine, so once per
/// bundle). Called when a bundle is built or reloaded: a bundle without a route's rule is
/// refused there rather than denying every request of that route.
pub fn prepare_policy(engine: &PolicyEngine, routes: &[RouteConfig]) -> Result<(), PolicyError> {
    for route in routes {
        engine.for_entrypoint(&route.decision)?;
    }
    Ok(())
}

/// One configured route, ready to serve: its config and its upstream client.
struct Route {
    config: RouteConfig,
    action: String,
    upstream: forward::Upstream,
}

/// The proxy routes, merged into the application router by `app::router`. Each prefix is
/// registered as itself, itself with a trailing `/`, and everything below it, so the
/// latency metric is labelled by route and the gateway's own paths can never be shadowed
/// (config validation keeps prefixes off them).
pub fn router(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let mut router = Router::new();
    for config in &state.config.routes {
        let route = Arc::new(Route {
            action: action_of(config),
            upstream: forward::Upstream::new(config),
            config: config.clone(),
        });
        let handler = move |State(state): State<Arc<AppState>>,
                            Extension(caller): Extension<Caller>,
                            request: Request| {
            let route = route.clone();
            async move { handle(&state, &caller, &route, request).await }
        };
        let prefix = &config.path_prefix;
        router = router
            .route(prefix, any(handler.clone()))
            .route(&format!("{prefix}/"), any(handler.clone()))
            .route(&format!("{prefix}/{{*rest}}"), any(handler));
    }
    router
}

async fn handle(
    state: &Arc<AppState>,
    caller: &Caller,
    route: &Route,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    forward::check_path(parts.uri.path())?;
    if let Some(declared) = forward::declared_length(&parts.headers)
        && declared > route.config.request_body_bytes_max
    {
        return Err(ApiError::PayloadTooLarge {
            limit_bytes: usize::try_from(route.config.request_body_bytes_max).unwrap_or(usize::MAX),
        });
    }
    let permit = route.upstream.reserve()?;
    let decision_id = decide_and_audit(state, caller, route, &parts).await?;
    route
        .upstream
        .forward(permit, caller, decision_id, parts, body)
        .await
}

/// Decides the request and appends the decision record; `Ok(decision_id)` only for an
/// audited allow.
async fn decide_and_audit(
    state: &AppState,
    caller: &Caller,
    route: &Route,
    parts: &axum::http::request::Parts,
) -> Result<Uuid, ApiError> {
    let now = OffsetDateTime::now_utc();
    let request_id = Uuid::now_v7();
    let audit_enabled = state.store.check_audit_writable().await;
    let input = input::policy_input(
        &route.config,
        caller,
        parts,
        input::Context {
            now,
            request_id,
            audit_enabled,
        },
    );
    // The engine active when the request started decides it, even if a reload swaps it
    // meanwhile; the sibling for the route's rule was compiled when that engine was built.
    let engine = state.policy.load_full();
    // A route has nothing to honour an obligation with: a decision carrying one is refused.
    let Decided {
        allow,
        reasons,
        outcome,
        result,
        ..
    } = decide_fail_closed(state, &route.action, "request", Honours::Nothing, || {
        engine
            .for_entrypoint(&route.config.decision)
            .and_then(|decider| decider.evaluate(&input))
    });
    let decision_id = Uuid::now_v7();
    // The input, encrypted, goes with the record (when `[audit.encryption]` is set) — with
    // its secret headers redacted even there: credentials are not evidence. A record that
    // cannot be complete is not written, and the request is not forwarded (503).
    let record_id = Uuid::now_v7();
    let sealed_input = crate::http::reveal::seal_input(
        state,
        record_id,
        || Cow::Owned(input::mask(input.clone())),
        &[],
    )
    .map_err(|error| {
                tracing::error!(route = %route.config.name, %decision_id, error = %error, "cannot seal the proxy input; not forwarding");
                ApiError::from(error)
            })?;
    let masked = mask_decision(
        &engine,
        &decision_path(&route.action),
        decision_id,
        input,
        result,
    );
    let record = NewRecord {
        record_id,
        kind: RecordKind::Decision,
        decision_id,
        timestamp: now,
        subject: subject_of(caller),
        source_address: caller.remote_address.to_string(),
        action: route.action.clone(),
        // Our own redaction of secret headers applies on top of the bundle's mask.
        masked_input: input::mask(masked.input),
        result: masked.result,
        bundle_revision: engine.revision().to_owned(),
        outcome,
        redaction: masked.redaction,
        sealed_input,
    };
    if let Err(error) = state.store.append_audit(vec![record]).await {
        tracing::error!(route = %route.config.name, %decision_id, error = %error, "proxy decision could not be audited; not forwarding");
        return Err(ApiError::from(error));
    }
    let reason_codes: Vec<String> = reasons.iter().map(|reason| reason.code.clone()).collect();
    if allow {
        tracing::debug!(route = %route.config.name, %decision_id, decision = "allow", "proxy request allowed");
        Ok(decision_id)
    } else {
        tracing::info!(route = %route.config.name, %decision_id, decision = "deny", reasons = ?reason_codes, "proxy request refused");
        Err(ApiError::PolicyDenied {
            decision_id,
            reasons,
        })
    }
}
