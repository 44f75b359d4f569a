//! Hot reload of the policy bundle: on a file change (watch), on SIGHUP, or on an admin
//! request. The new bundle is loaded, optionally tested (its own `test_*` rules must pass),
//! and compiled off the request path; only then is it swapped in atomically. In-flight
//! decisions finish on the engine they started with (`ArcSwap` keeps it alive), so a swap
//! never fails a request. A bundle that does not load, compile or pass its tests leaves the
//! active one in place and is reported in `/readyz`, the logs, the metrics and the audit trail.

use std::{path::PathBuf, sync::Arc, time::Duration};

use countersign_audit::{NewRecord, Outcome, RecordKind, Subject};
use notify::{RecursiveMode, Watcher};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::{
    app::AppState,
    policy::{Bundle, PolicyEngine, TRANSFER_DECISION},
};

/// What asked for the reload (recorded in logs, metrics and the audit record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadTrigger {
    FileWatch,
    Signal,
    Admin,
}

impl ReloadTrigger {
    fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::FileWatch => "file_watch",
            ReloadTrigger::Signal => "signal",
            ReloadTrigger::Admin => "admin",
        }
    }
}

/// The outcome of the last reload attempt, for `/readyz`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub attempts: u64,
    pub failures: u64,
    /// `None` when the last attempt succeeded (or there was none).
    pub last_error: Option<String>,
    pub last_attempt_at: Option<String>,
    /// The revision the last failed attempt tried to activate, when it got that far.
    pub rejected_revision: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("bundle {revision} refused: {failed} of its tests fail: {names}")]
    TestsFailed {
        revision: String,
        failed: usize,
        names: String,
    },
    #[error("reload task failed: {0}")]
    Task(String),
}

/// Loads, tests and compiles a bundle without touching the active one.
pub fn prepare(
    policy_config: &crate::config::PolicyConfig,
    timeout: Duration,
    require_passing_tests: bool,
    routes: &[crate::config::RouteConfig],
) -> Result<PolicyEngine, ReloadError> {
    // The configured loader: signature verification and v0 settings apply to reloads too.
    let bundle = Bundle::load_configured(policy_config)?;
    if require_passing_tests {
        let outcomes = crate::policy::run_bundle_tests(&bundle)?;
        let failed: Vec<&str> = outcomes
            .iter()
            .filter(|outcome| !outcome.passed)
            .map(|outcome| outcome.name.as_str())
            .collect();
        if !failed.is_empty() {
            return Err(ReloadError::TestsFailed {
                revision: bundle.revision.clone(),
                failed: failed.len(),
                names: failed.join(", "),
            });
        }
    }
    let engine = PolicyEngine::compile(&bundle, TRANSFER_DECISION, timeout)?;
    // The proxy routes' rules are compiled now too: a bundle that lacks one is refused, and
    // no request pays for a compile after the swap.
    crate::proxy::prepare_policy(&engine, routes)?;
    crate::http::approvals::prepare_policy(&engine);
    Ok(engine)
}

/// Reloads the bundle from the configured path. Reloads are serialized; the swap is atomic.
pub async fn reload(
    state: &Arc<AppState>,
    trigger: ReloadTrigger,
) -> Result<Arc<PolicyEngine>, ReloadError> {
    let _serialized = state.reload_lock.lock().await;
    let previous = state.policy.load_full();
    let policy_config = state.config.policy.clone();
    let timeout = Duration::from_millis(state.config.policy.decision_timeout_ms);
    let require_tests = state.config.policy.reload_requires_passing_tests;
    let routes = state.config.routes.clone();
    // Loading, testing and compiling are CPU work of tens of milliseconds: keep them off the
    // async workers that serve requests.
    let prepared = tokio::task::spawn_blocking(move || {
        prepare(&policy_config, timeout, require_tests, &routes)
    })
    .await
    .map_err(|error| ReloadError::Task(error.to_string()))
    .and_then(|result| result);
    let now = crate::http::transfers::rfc3339(OffsetDateTime::now_utc());
    let result = match prepared {
        Ok(engine) => {
            let engine = Arc::new(engine);
            state.install_policy(engine.clone());
            {
                let mut status = state.lock_reload_status();
                status.attempts += 1;
                status.last_error = None;
                status.rejected_revision = None;
                status.last_attempt_at = Some(now);
            }
            tracing::info!(
                trigger = trigger.as_str(),
                from_revision = previous.revision(),
                to_revision = engine.revision(),
                evaluator = ?engine.evaluator(),
                "policy bundle reloaded"
            );
            Ok(engine)
        }
        Err(error) => {
            {
                let mut status = state.lock_reload_status();
                status.attempts += 1;
                status.failures += 1;
                status.last_error = Some(error.to_string());
                status.rejected_revision = match &error {
                    ReloadError::TestsFailed { revision, .. } => Some(revision.clone()),
                    _ => None,
                };
                status.last_attempt_at = Some(now);
            }
            tracing::error!(
                trigger = trigger.as_str(),
                active_revision = previous.revision(),
                error = %error,
                "policy bundle refused; the active bundle keeps serving"
            );
            Err(error)
        }
    };
    let outcome = if result.is_ok() { "ok" } else { "refused" };
    state
        .metrics
        .policy_reloads
        .get_or_create(&vec![
            ("trigger", trigger.as_str().to_owned()),
            ("result", outcome.to_owned()),
        ])
        .inc();
    // A policy change is an event auditors ask about: record it in the trail.
    let active = state.policy.load_full();
    let record = NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Decision,
        decision_id: Uuid::now_v7(),
        timestamp: OffsetDateTime::now_utc(),
        subject: Subject {
            fingerprint_sha256: "system".into(),
            common_name: Some("countersign-policy-reload".into()),
            roles: vec!["system".into()],
        },
        source_address: "local".into(),
        action: "policy.reload".into(),
        masked_input: json!({"trigger": trigger, "from_revision": previous.revision()}),
        result: match &result {
            Ok(engine) => json!({"activated": true, "revision": engine.revision()}),
            Err(error) => json!({"activated": false, "error": error.to_string()}),
        },
        bundle_revision: active.revision().to_owned(),
        outcome: if result.is_ok() {
            Outcome::Allow
        } else {
            Outcome::Error
        },
        redaction: Default::default(),
        sealed_input: None,
    };
    if let Err(error) = state.store.append_audit(vec![record]).await {
        tracing::error!(error = %error, "cannot audit the policy reload");
    }
    result
}

/// A watch on the bundle path, established before the server accepts its first connection so
/// a change made right after start-up is never missed. Run it with [`BundleWatch::run`].
pub struct BundleWatch {
    // Kept alive for as long as the watch runs; dropping it ends the OS watch.
    _watcher: notify::RecommendedWatcher,
    changed: mpsc::Receiver<()>,
}

impl BundleWatch {
    /// Starts watching `state.config.policy.bundle`; `None` (logged) if the OS refuses.
    pub fn start(state: &AppState) -> Option<BundleWatch> {
        let path = &state.config.policy.bundle;
        // One pending signal is enough: a reload reads the whole bundle anyway.
        let (changed_sender, changed) = mpsc::channel::<()>(1);
        let mut watcher = match notify::recommended_watcher(
            move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|event| !event.kind.is_access()) {
                    let _ = changed_sender.try_send(());
                }
            },
        ) {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::error!(error = %error, "cannot watch the policy bundle; reload with SIGHUP or the admin endpoint");
                return None;
            }
        };
        let (target, mode) = watch_target(path);
        if let Err(error) = watcher.watch(&target, mode) {
            tracing::error!(error = %error, path = %target.display(), "cannot watch the policy bundle");
            return None;
        }
        tracing::info!(path = %target.display(), "watching the policy bundle for changes");
        Some(BundleWatch {
            _watcher: watcher,
            changed,
        })
    }

    /// Reloads after each burst of changes settles, until `stop`.
    pub async fn run(mut self, state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
        let debounce = Duration::from_millis(state.config.policy.watch_debounce_ms);
        loop {
            tokio::select! {
                received = self.changed.recv() => {
                    if received.is_none() {
                        return;
                    }
                }
                _ = stop.changed() => return,
            }
            // Let the burst settle, then drop the signals it left behind.
            tokio::time::sleep(debounce).await;
            while self.changed.try_recv().is_ok() {}
            if *stop.borrow() {
                return;
            }
            let _ = reload(&state, ReloadTrigger::FileWatch).await;
        }
    }
}

/// A directory is watched recursively; a bundle file through its parent directory, so an
/// atomic replace (write + rename) is seen too.
fn watch_target(path: &std::path::Path) -> (PathBuf, RecursiveMode) {
    if path.is_dir() {
        (path.to_owned(), RecursiveMode::Recursive)
    } else {
        let parent = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        (parent.to_owned(), RecursiveMode::NonRecursive)
    }
}

/// Reloads on SIGHUP until `stop`.
#[cfg(unix)]
pub async fn reload_on_hangup(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(error = %error, "cannot listen for SIGHUP");
            return;
        }
    };
    loop {
        tokio::select! {
            received = hangup.recv() => {
                if received.is_none() {
                    return;
                }
                let _ = reload(&state, ReloadTrigger::Signal).await;
            }
            _ = stop.changed() => return,
        }
    }
}
