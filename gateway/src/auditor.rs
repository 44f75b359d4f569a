//! The auditors' workspace indexer and checkpointer: walks the sealed chain in sequence order
//! after its cursor, a batch per transaction (`Store::audit_index_step`: Merkle leaves and
//! nodes, the search index, the cursor — all or nothing), and signs a checkpoint
//! (`Store::write_checkpoint_now`) every `[audit.checkpoints] interval_seconds` or at least
//! every `records_max` leaves, whichever comes first, and only when the tree grew.
//!
//! Leadership: on PostgreSQL only the replica holding the sealer lock indexes (as the Kafka
//! relay publishes only there), so one replica walks the chain; a hand-over is safe anyway,
//! because each step advances the cursor conditionally (`AuditError::IndexConflict` for the
//! loser). SQLite has one process: always the leader. There the indexer writes through its
//! own connection with short transactions; the ledger writer waits at most one of them.
//!
//! The tree never commits to a record the chain does not vouch for: a record that does not
//! continue the chain stops the indexer (logged as an error, retried with backoff) until an
//! operator looks — `countersign audit verify` names it.
//!
//! Lifecycle: started with the server; stopped after the ledger writer has flushed (like the
//! relays), so it indexes the last records and, with a key, signs a last checkpoint over them
//! (bounded by `FINAL_STEPS_MAX`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use countersign_audit::{AuditError, checkpoint::CheckpointSigner};
use countersign_ledger::{LedgerError, Store};
use tokio::sync::watch;

use crate::app::AppState;

/// Records per indexing transaction. SQLite shares the file lock with the ledger writer, so
/// its batches are smaller: the writer waits for at most one of them (~a few ms).
const BATCH_RECORDS_SQLITE: u32 = 250;
const BATCH_RECORDS_POSTGRES: u32 = 1_000;
/// Even without a seal notification, look for new records this often.
const POLL_INTERVAL_MS: u64 = 1_000;
/// A follower checks this often whether it became the leader.
const FOLLOWER_POLL_MS: u64 = 1_000;
/// Wait between retries of a failing step, doubling up to the maximum.
const RETRY_BACKOFF_MS_MIN: u64 = 100;
const RETRY_BACKOFF_MS_MAX: u64 = 30_000;
/// Steps the indexer runs after the stop signal, to index what the writer committed last.
const FINAL_STEPS_MAX: usize = 100;

/// The checkpoint schedule, kept between steps.
struct Schedule {
    signer: Option<Arc<CheckpointSigner>>,
    interval: Duration,
    records_max: u64,
    /// Tree size of the last checkpoint, `None` until read (on becoming the leader).
    last_size: Option<u64>,
    last_at: Instant,
}

impl Schedule {
    /// Largest batch that does not carry the tree more than `records_max` past the last
    /// checkpoint, so checkpoints are never further apart than that.
    fn batch(&self, batch_max: u32, tree_size: u64) -> u32 {
        match (&self.signer, self.last_size) {
            (Some(_), Some(last)) => {
                let room = (last + self.records_max).saturating_sub(tree_size).max(1);
                batch_max.min(u32::try_from(room).unwrap_or(u32::MAX))
            }
            _ => batch_max,
        }
    }

    fn due(&self, tree_size: u64) -> bool {
        match (&self.signer, self.last_size) {
            (Some(_), Some(last)) if tree_size > last => {
                tree_size - last >= self.records_max || self.last_at.elapsed() >= self.interval
            }
            _ => false,
        }
    }

    /// How long until the interval makes a checkpoint due (for the wait between polls);
    /// never, while the tree has not grown since the last one.
    fn until_due(&self, tree_size: u64) -> Duration {
        match (&self.signer, self.last_size) {
            (Some(_), Some(last)) if tree_size > last => {
                self.interval.saturating_sub(self.last_at.elapsed())
            }
            _ => Duration::MAX,
        }
    }
}

/// Runs until `stop` turns true, then indexes what is left (bounded) and signs a last
/// checkpoint if the tree grew.
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let config = &state.config.audit.checkpoints;
    let mut schedule = Schedule {
        signer: state.checkpoint_signer.get().cloned(),
        interval: Duration::from_secs(config.interval_seconds),
        records_max: config.records_max,
        last_size: None,
        last_at: Instant::now(),
    };
    let batch_max = match &*state.store {
        Store::Sqlite(_) => BATCH_RECORDS_SQLITE,
        Store::Postgres(_) => BATCH_RECORDS_POSTGRES,
    };
    let sealed = state.store.sealed();
    let mut backoff_ms = RETRY_BACKOFF_MS_MIN;
    let mut tree_size = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let notified = sealed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        if !state.store.is_sealer_leader() {
            // Another replica indexes; re-read the schedule when this one takes over.
            schedule.last_size = None;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(FOLLOWER_POLL_MS)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        match step(&state, &mut schedule, batch_max, tree_size).await {
            Ok((indexed, size)) => {
                backoff_ms = RETRY_BACKOFF_MS_MIN;
                tree_size = size;
                if indexed > 0 {
                    // More may be waiting: go again at once (the select below would wait).
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            Err(error) => {
                log_failure(&error);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                    _ = stop.changed() => {}
                }
                backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MS_MAX);
                continue;
            }
        }
        let wait = Duration::from_millis(POLL_INTERVAL_MS).min(schedule.until_due(tree_size));
        tokio::select! {
            () = &mut notified => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
    // The ledger writer has flushed: index its last records and sign them.
    if state.store.is_sealer_leader() {
        for _ in 0..FINAL_STEPS_MAX {
            match step(&state, &mut schedule, batch_max, tree_size).await {
                Ok((0, _)) => break,
                Ok((_, size)) => tree_size = size,
                Err(error) => {
                    log_failure(&error);
                    break;
                }
            }
        }
        if let Some(signer) = schedule.signer.clone()
            && schedule.last_size.is_some_and(|last| tree_size > last)
        {
            match state.store.write_checkpoint_now(&signer).await {
                Ok(Some(checkpoint)) => tracing::info!(
                    tree_size = checkpoint.tree_size,
                    "audit checkpoint signed at shutdown"
                ),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "cannot sign a checkpoint at shutdown")
                }
            }
        }
    }
    tracing::info!(tree_size, "audit indexer stopped");
}

/// One indexing step and, when due, a checkpoint. Returns (records indexed, tree size).
async fn step(
    state: &AppState,
    schedule: &mut Schedule,
    batch_max: u32,
    tree_size: u64,
) -> Result<(u64, u64), LedgerError> {
    if schedule.signer.is_some() && schedule.last_size.is_none() {
        let latest = state.store.latest_checkpoint().await?;
        schedule.last_size = Some(latest.map_or(0, |checkpoint| checkpoint.tree_size));
        schedule.last_at = Instant::now();
    }
    let step = state
        .store
        .audit_index_step(schedule.batch(batch_max, tree_size))
        .await?;
    if step.indexed > 0 {
        tracing::debug!(
            indexed = step.indexed,
            tree_size = step.tree_size,
            "audit records indexed"
        );
    }
    if schedule.due(step.tree_size)
        && let Some(signer) = schedule.signer.clone()
    {
        if let Some(checkpoint) = state.store.write_checkpoint_now(&signer).await? {
            tracing::info!(
                tree_size = checkpoint.tree_size,
                root_hash = %hex::encode(checkpoint.root_hash),
                key_id = %checkpoint.key_id,
                "audit checkpoint signed"
            );
            schedule.last_size = Some(checkpoint.tree_size);
        }
        schedule.last_at = Instant::now();
    }
    Ok((step.indexed, step.tree_size))
}

fn log_failure(error: &LedgerError) {
    match error {
        LedgerError::Audit(audit) if matches!(**audit, AuditError::IndexConflict) => {
            tracing::info!("another indexer advanced the audit index; continuing after it");
        }
        LedgerError::Audit(audit) if matches!(**audit, AuditError::IndexChain { .. }) => {
            tracing::error!(error = %error, "audit indexer stopped at a record that does not continue the chain; run `countersign audit verify`");
        }
        LedgerError::ShuttingDown => {}
        _ => tracing::warn!(error = %error, "audit indexing failed; will retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(last_size: Option<u64>, signed: bool) -> Schedule {
        Schedule {
            signer: signed.then(|| Arc::new(CheckpointSigner::generate().unwrap())),
            interval: Duration::from_secs(3_600),
            records_max: 100,
            last_size,
            last_at: Instant::now(),
        }
    }

    #[test]
    fn checkpoints_are_never_further_apart_than_records_max() {
        let with_key = schedule(Some(1_000), true);
        assert_eq!(with_key.batch(250, 1_000), 100);
        assert_eq!(with_key.batch(250, 1_060), 40);
        assert_eq!(with_key.batch(250, 1_100), 1);
        assert!(!with_key.due(1_000));
        assert!(!with_key.due(1_099));
        assert!(with_key.due(1_100));
        // Without a key nothing is ever due, and batches are not cut.
        let without = schedule(Some(0), false);
        assert_eq!(without.batch(250, 5_000), 250);
        assert!(!without.due(5_000));
        assert_eq!(without.until_due(5_000), Duration::MAX);
        // The interval makes a checkpoint due only when the tree grew.
        let mut stale = schedule(Some(10), true);
        stale.interval = Duration::ZERO;
        assert!(!stale.due(10));
        assert_eq!(stale.until_due(10), Duration::MAX);
        assert!(stale.due(11));
        assert_eq!(stale.until_due(11), Duration::ZERO);
    }
}
