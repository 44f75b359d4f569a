//! The assembled application: shared state and the router. `server` puts it behind mTLS;
//! tests drive exactly this code through a real TLS listener.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use countersign_ledger::Store;
use tower_http::timeout::TimeoutLayer;

use crate::{config::Config, http, metrics::Metrics, policy::PolicyEngine, tls::Identity};

/// Per-connection facts the TLS layer established, attached to every request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Arc<Identity>,
    pub remote_address: SocketAddr,
}

/// State shared by every request.
pub struct AppState {
    pub config: Config,
    pub store: Arc<Store>,
    /// Swapped atomically on reload; each decision uses the engine it loaded at its start.
    pub policy: ArcSwap<PolicyEngine>,
    pub metrics: Metrics,
    /// Seals each decision's unmasked input and opens it for reveals (`[audit.encryption]`);
    /// `None`: nothing unmasked is stored. Loaded once at start.
    pub keyring: Option<Arc<countersign_audit::Keyring>>,
    /// Signs the auditors' workspace checkpoints (`[audit.checkpoints] signing_key_file`);
    /// unset: records are indexed and searchable, but nothing is signed. Set once by
    /// `Gateway::build` (a cell, so adding it did not change `AppState::new`).
    pub checkpoint_signer:
        std::sync::OnceLock<Arc<countersign_audit::checkpoint::CheckpointSigner>>,
    /// The admission webhook's compiled Gatekeeper policies (`[admission]`); unset: the
    /// webhook answers 409 `admission.not_configured`. Set once by `Gateway::build`.
    pub admission: std::sync::OnceLock<Arc<http::admission::AdmissionPolicies>>,
    /// Idempotency keys whose first request is still being processed, per caller.
    in_flight: Mutex<HashSet<(String, String)>>,
    /// One reload at a time; requests never wait for it.
    pub reload_lock: tokio::sync::Mutex<()>,
    reload_status: Mutex<crate::reload::ReloadStatus>,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(
        config: Config,
        store: Arc<Store>,
        policy: PolicyEngine,
        keyring: Option<countersign_audit::Keyring>,
    ) -> Arc<AppState> {
        let metrics = Metrics::new();
        metrics.set_policy_bundle(policy.revision(), policy.evaluator());
        Arc::new(AppState {
            config,
            store,
            policy: ArcSwap::from_pointee(policy),
            metrics,
            keyring: keyring.map(Arc::new),
            checkpoint_signer: std::sync::OnceLock::new(),
            admission: std::sync::OnceLock::new(),
            in_flight: Mutex::new(HashSet::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            reload_status: Mutex::new(crate::reload::ReloadStatus::default()),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Claims an idempotency key for the duration of one request; `None` when another
    /// request with the same key from the same caller is still in flight.
    pub fn claim_idempotency_key(
        self: &Arc<Self>,
        scope: &str,
        key: &str,
    ) -> Option<InFlightGuard> {
        let entry = (scope.to_owned(), key.to_owned());
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if !in_flight.insert(entry.clone()) {
            return None;
        }
        Some(InFlightGuard {
            state: self.clone(),
            entry,
        })
    }

    /// Makes `engine` the active policy. Requests that already hold the old one finish with it.
    pub fn install_policy(&self, engine: Arc<PolicyEngine>) {
        self.metrics
            .set_policy_bundle(engine.revision(), engine.evaluator());
        self.policy.store(engine);
    }

    pub fn lock_reload_status(&self) -> std::sync::MutexGuard<'_, crate::reload::ReloadStatus> {
        self.reload_status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Ready to take transfers: not draining and the audit trail is writable.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::SeqCst) && self.store.audit_writable()
    }
}

/// Releases an in-flight idempotency key when the request finishes, however it finishes.
pub struct InFlightGuard {
    state: Arc<AppState>,
    entry: (String, String),
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.state
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.entry);
    }
}

/// Headers through which a client could try to claim another identity. We never read them,
/// and strip them so nothing downstream (logs, a proxied upstream) can be fooled.
pub(crate) const IDENTITY_HEADERS: &[&str] = &[
    "x-forwarded-client-cert",
    "x-client-cert",
    "x-client-verify",
    "x-client-dn",
    "x-ssl-client-cert",
    "x-ssl-client-dn",
    "x-ssl-client-verify",
    "ssl-client-cert",
    "ssl-client-verify",
    "x-remote-user",
    "x-authenticated-user",
    "x-countersign-identity",
    "x-countersign-roles",
];

async fn strip_identity_headers(mut request: Request, next: Next) -> Response {
    let headers = request.headers_mut();
    for name in IDENTITY_HEADERS {
        headers.remove(*name);
    }
    next.run(request).await
}

async fn record_latency(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .http_request_duration
        .get_or_create(&vec![
            ("route", route),
            ("method", method),
            ("status", response.status().as_u16().to_string()),
        ])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The application router (behind mTLS). Layers run outside-in in the order listed last-first:
/// latency is recorded around everything, identity headers are stripped before any handler,
/// and the body limit applies before a handler buffers a byte.
pub fn router(state: Arc<AppState>) -> Router {
    let body_bytes_max = state.config.limits.body_bytes_max;
    let admission_body_bytes_max = state
        .config
        .admission
        .as_ref()
        .map_or(body_bytes_max, |admission| admission.body_bytes_max);
    let request_timeout = Duration::from_millis(state.config.limits.request_timeout_ms);
    Router::new()
        .route("/v1/transfers", post(http::transfers::create))
        .route("/v1/transfers/{id}", get(http::transfers::show))
        .route("/v1/transfers/{id}/approve", post(http::approvals::approve))
        .route("/v1/transfers/{id}/reject", post(http::approvals::reject))
        .route("/v1/approvals", get(http::approvals::list))
        .route("/v1/accounts", post(http::accounts::create))
        .route("/v1/accounts/{id}", get(http::accounts::show))
        .route("/v1/data/{*path}", post(http::opa::data))
        // The admission webhook (role `admission`). An AdmissionReview carries a whole
        // Kubernetes object (twice on UPDATE): its own body bound, which replaces the general
        // one below because the innermost `DefaultBodyLimit` is the one extractors see.
        .route(
            "/v1/admission",
            post(http::admission::review).layer(DefaultBodyLimit::max(admission_body_bytes_max)),
        )
        .route(
            "/v1/audit/records/{record_id}/input",
            get(http::reveal::reveal),
        )
        // The auditors' workspace (auditor role; every call audited): http/audit.rs.
        .route("/v1/audit/records", get(http::audit::records))
        .route("/v1/audit/records/{record_id}", get(http::audit::record))
        .route("/v1/audit/checkpoints", get(http::audit::checkpoints))
        .route(
            "/v1/audit/checkpoints/latest",
            get(http::audit::latest_checkpoint),
        )
        .route(
            "/v1/audit/proofs/consistency",
            get(http::audit::consistency),
        )
        .route("/v1/audit/stats", get(http::audit::stats))
        .route("/v1/audit/public-key", get(http::audit::public_key))
        // The export streams its body after the headers, so the request timeout below bounds
        // only its preparation; the body is bounded by pages in flight (http/export.rs).
        .route("/v1/audit/export", get(http::export::export))
        .route("/health", get(http::opa::health))
        .route("/v1/admin/policy/reload", post(http::admin::reload_policy))
        .merge(ops_routes())
        // The auditor console (static page; its role check and security headers are its own).
        .merge(crate::console::router())
        // Proxy routes sit inside every layer below: identity headers are stripped before
        // the policy sees the request, the request timeout bounds decision + upstream
        // headers, and latency is recorded per route. `DefaultBodyLimit` only bounds
        // extractors that buffer; the proxy streams and applies its per-route bound.
        .merge(crate::proxy::router(&state))
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(middleware::from_fn(strip_identity_headers))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_latency,
        ))
        .with_state(state)
}

fn ops_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(http::ops::healthz))
        .route("/readyz", get(http::ops::readyz))
        .route("/metrics", get(http::ops::metrics))
}

/// The plain-HTTP operations router (probes and metrics only; no business routes).
pub fn ops_router(state: Arc<AppState>) -> Router {
    ops_routes()
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_latency,
        ))
        .with_state(state)
}
