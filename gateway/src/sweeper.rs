//! The approval sweeper: expires held transfers whose approval time ran out, releasing their
//! reservations (`Store::expire_approvals`, one release record each).
//!
//! Every replica runs one; the ledger serialises them, so two sweeps never expire the same
//! request twice. Expiry does not depend on the sweeper for correctness: an approve or reject
//! that arrives after the expiry finds the request expired in the same transaction. The
//! sweeper only makes sure funds are released (and the trail says so) without waiting for
//! someone to touch the request.
//!
//! Lifecycle: started with the server, stopped with the connections (before the ledger
//! writer stops, so a last sweep does not race the writer's shutdown).

use std::{sync::Arc, time::Duration};

use countersign_ledger::LedgerError;
use tokio::sync::watch;

use crate::app::AppState;

/// Most back-to-back sweeps per interval when every sweep returns a full batch. A flood of
/// expiries then yields to the interval (and to the stop signal) now and then instead of
/// keeping the writer busy with expiries alone.
const SWEEPS_PER_INTERVAL_MAX: u32 = 100;

/// Runs until `stop` turns true (or its sender is gone).
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.config.approvals.sweep_interval_ms);
    let batch_max = state.config.approvals.sweep_batch_max;
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
            () = tokio::time::sleep(interval) => {}
        }
        for _ in 0..SWEEPS_PER_INTERVAL_MAX {
            if *stop.borrow() {
                break;
            }
            if !sweep_once(&state, batch_max).await {
                break;
            }
        }
    }
    tracing::info!("approval sweeper stopped");
}

/// One sweep. Returns true when it expired a full batch (more may be due at once).
async fn sweep_once(state: &AppState, batch_max: u32) -> bool {
    match state.store.expire_approvals(batch_max).await {
        Ok(expired) => {
            for request in &expired {
                tracing::info!(
                    transfer_id = %request.transfer_id,
                    approval_id = %request.id,
                    initiation_decision_id = %request.initiation_decision_id,
                    approvals = request.approvals().count(),
                    approvals_required = request.approvals_required,
                    "held transfer expired; reservation released"
                );
            }
            state.metrics.approvals_expired.inc_by(expired.len() as u64);
            usize::try_from(batch_max).is_ok_and(|batch_max| expired.len() >= batch_max)
        }
        // Shutting down: the stop signal follows; nothing to report.
        Err(LedgerError::ShuttingDown) => false,
        Err(error) => {
            state.metrics.approval_sweep_failures.inc();
            tracing::warn!(error = %error, "approval sweep failed; retrying after the interval");
            false
        }
    }
}
