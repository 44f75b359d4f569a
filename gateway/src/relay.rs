//! The audit relay: reads committed audit records from the store in sequence order and
//! delivers them to the sinks (the JSONL decision log now; Kafka later). The store is the
//! source of truth and each sink resumes from its own cursor, so a slow or failed sink
//! delays records but never drops one. The backlog is exported as a metric.

use std::{path::Path, sync::Arc, time::Duration};

use countersign_audit::{AuditError, AuditSink, JsonlDecisionLog};
use tokio::sync::watch;

use crate::app::AppState;

/// Wait between retries of a failing sink, doubling up to the maximum.
const RETRY_BACKOFF_MS_MIN: u64 = 100;
const RETRY_BACKOFF_MS_MAX: u64 = 5_000;
/// Even without a commit notification, look for new records this often.
const POLL_INTERVAL_MS: u64 = 1_000;

pub async fn open_decision_log(path: &Path) -> Result<JsonlDecisionLog, AuditError> {
    JsonlDecisionLog::open(path).await
}

/// Runs until `stop` turns true and everything committed by then has been delivered.
pub async fn run(
    state: Arc<AppState>,
    mut sink: JsonlDecisionLog,
    mut stop: watch::Receiver<bool>,
) {
    let batch_records_max = state.config.limits.audit_relay_batch_records_max;
    let commits = state.store.sealed();
    match state.store.pruned_through().await {
        Ok(pruned_through) => {
            let skipped = sink.skip_pruned(pruned_through);
            if skipped > 0 && sink.delivered_through() > skipped {
                tracing::warn!(
                    sink = sink.name(),
                    skipped,
                    "records were pruned (retention) before this sink received them"
                );
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot read the prune anchor; the sink starts at its own cursor")
        }
    }
    let mut backoff_ms = RETRY_BACKOFF_MS_MIN;
    loop {
        // Register interest before reading, so a commit between the read and the wait is
        // not missed.
        let notified = commits.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let cursor = sink.delivered_through();
        let batch = state
            .store
            .read_sealed_after(cursor, batch_records_max)
            .await;
        let delivered = match batch {
            Ok(records) if records.is_empty() => 0,
            Ok(records) => match sink.deliver(&records).await {
                Ok(()) => {
                    backoff_ms = RETRY_BACKOFF_MS_MIN;
                    records.len()
                }
                Err(error) => {
                    tracing::error!(sink = sink.name(), error = %error, "audit sink delivery failed; will retry");
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MS_MAX);
                    continue;
                }
            },
            Err(error) => {
                tracing::error!(error = %error, "audit relay cannot read the store; will retry");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MS_MAX);
                continue;
            }
        };
        if let Ok(head) = state.store.audit_head().await {
            let head_sequence = head.map_or(0, |head| head.sequence);
            state
                .metrics
                .audit_backlog_records
                .set(head_sequence.saturating_sub(sink.delivered_through()));
        }
        if delivered > 0 {
            continue;
        }
        if *stop.borrow() {
            // Stopping and nothing left to deliver; the ledger writer has already flushed.
            break;
        }
        tokio::select! {
            () = &mut notified => {}
            _ = tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::info!(
        sink = sink.name(),
        delivered_through = sink.delivered_through(),
        "audit relay stopped"
    );
}
