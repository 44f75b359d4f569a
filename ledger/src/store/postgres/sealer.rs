//! The sealer: a background task in every `PgStore`; only the leader seals.
//!
//! Leadership is the session-level advisory lock `countersign_audit::postgres::SEALER_LOCK_KEY`,
//! taken with `pg_try_advisory_lock` on a dedicated connection. Sealing runs on that same
//! connection, so losing the connection loses the lock and no seal can be written after it.
//! Followers retry every `FOLLOWER_RETRY_MS`; meanwhile they watch the chain head so their
//! `sealed()` waiters still wake when the leader (on another replica) seals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use countersign_audit::postgres::{SEAL_BATCH_RECORDS_MAX, SEALER_LOCK_KEY};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Notify, watch};

use super::writer::CONNECT_TIMEOUT_MS;

/// How often a follower tries to become the leader (the leader may have died).
const FOLLOWER_RETRY_MS: u64 = 1_000;
/// How often a follower checks the chain head to wake its `sealed()` waiters.
const FOLLOWER_HEAD_POLL_MS: u64 = 200;
/// How often the leader looks for records other replicas appended (its own replica's commits
/// wake it at once).
const LEADER_POLL_MS: u64 = 100;
/// Sealing steps the leader runs on stop, to seal what its replica wrote last.
const FINAL_SEAL_STEPS_MAX: usize = 100;

/// What the sealer shares with its `PgStore`.
pub(crate) struct SealerState {
    pub(crate) is_leader: AtomicBool,
    pub(crate) records_sealed: AtomicU64,
    /// Notified after records were sealed (by this replica, or seen sealed by another).
    pub(crate) sealed: Arc<Notify>,
}

impl SealerState {
    pub(crate) fn new() -> SealerState {
        SealerState {
            is_leader: AtomicBool::new(false),
            records_sealed: AtomicU64::new(0),
            sealed: Arc::new(Notify::new()),
        }
    }

    fn notify(&self) {
        // Wake current waiters, and leave a permit for one that is about to wait.
        self.sealed.notify_waiters();
        self.sealed.notify_one();
    }
}

/// Stop was requested, or the store was dropped (the sender is gone).
fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

pub(crate) struct Sealer {
    pub(crate) options: PgConnectOptions,
    pub(crate) pool: PgPool,
    /// The local writer's commit notification.
    pub(crate) commits: Arc<Notify>,
    pub(crate) state: Arc<SealerState>,
}

impl Sealer {
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut last_head = 0;
        loop {
            if stopped(&stop) {
                break;
            }
            match self.try_lead().await {
                Ok(Some(connection)) => {
                    tracing::info!("audit sealer is the leader");
                    self.state.is_leader.store(true, Ordering::Release);
                    self.lead(connection, &mut stop).await;
                    self.state.is_leader.store(false, Ordering::Release);
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "audit sealer cannot reach PostgreSQL; will retry");
                }
            }
            // Follower: wait for the next attempt, watching the head meanwhile.
            let polls = FOLLOWER_RETRY_MS / FOLLOWER_HEAD_POLL_MS;
            for _ in 0..polls {
                tokio::select! {
                    _ = stop.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(FOLLOWER_HEAD_POLL_MS)) => {}
                }
                if stopped(&stop) {
                    break;
                }
                if let Ok(Some(head)) = countersign_audit::postgres::head(&self.pool).await
                    && head.sequence > last_head
                {
                    last_head = head.sequence;
                    self.state.notify();
                }
            }
        }
        tracing::info!("audit sealer stopped");
    }

    /// A connection holding the leader lock, `None` if another session holds it.
    async fn try_lead(&self) -> Result<Option<PgConnection>, sqlx::Error> {
        let connect = self.options.connect();
        let mut connection =
            match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect).await {
                Ok(connection) => connection?,
                Err(_) => return Err(sqlx::Error::PoolTimedOut),
            };
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SEALER_LOCK_KEY)
            .fetch_one(&mut connection)
            .await?;
        if locked {
            Ok(Some(connection))
        } else {
            let _ = connection.close().await;
            Ok(None)
        }
    }

    /// Seals until stopped or the connection fails (which ends the leadership).
    async fn lead(&self, mut connection: PgConnection, stop: &mut watch::Receiver<bool>) {
        let mut partitions_checked: Option<std::time::Instant> = None;
        loop {
            // The leader keeps the next months' audit partitions ready (migration 0005).
            if partitions_checked.is_none_or(|checked| {
                checked.elapsed() >= Duration::from_millis(PARTITION_CHECK_MS)
            }) {
                partitions_checked = Some(std::time::Instant::now());
                if let Err(error) = ensure_partitions(&mut connection).await {
                    tracing::warn!(error = %error, "could not create the next audit partitions");
                }
            }
            // Register before sealing, so a commit during the step is not missed.
            let committed = self.commits.notified();
            tokio::pin!(committed);
            committed.as_mut().enable();

            let sealed = match self.step(&mut connection).await {
                Ok(sealed) => sealed,
                Err(()) => return,
            };
            if stopped(stop) {
                // Seal what this replica wrote last, then hand the lock back.
                for _ in 0..FINAL_SEAL_STEPS_MAX {
                    match self.step(&mut connection).await {
                        Ok(0) | Err(()) => break,
                        Ok(_) => {}
                    }
                }
                let _ = connection.close().await;
                return;
            }
            if sealed as i64 >= SEAL_BATCH_RECORDS_MAX {
                continue;
            }
            tokio::select! {
                () = &mut committed => {}
                _ = stop.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(LEADER_POLL_MS)) => {}
            }
        }
    }

    async fn step(&self, connection: &mut PgConnection) -> Result<usize, ()> {
        match countersign_audit::postgres::seal_pending(connection, SEAL_BATCH_RECORDS_MAX).await {
            Ok(sealed) => {
                if sealed > 0 {
                    self.state
                        .records_sealed
                        .fetch_add(sealed as u64, Ordering::Relaxed);
                    self.state.notify();
                    tracing::debug!(records = sealed, "audit records sealed");
                }
                Ok(sealed)
            }
            Err(error) => {
                // The connection (and with it the lock) is given up; another replica, or
                // this one on its next attempt, continues from the last seal.
                tracing::error!(error = %error, "audit sealing failed; giving up leadership");
                Err(())
            }
        }
    }
}

/// How often the leader makes sure the audit partitions of this month and the next three exist.
const PARTITION_CHECK_MS: u64 = 3_600_000;
/// Months of audit partitions kept ready, this one included.
const PARTITION_MONTHS_AHEAD: i32 = 4;

/// Creates the missing monthly audit partitions from this month on (a no-op when they exist).
async fn ensure_partitions(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    let created: i32 = sqlx::query_scalar(
        "SELECT countersign_audit_partitions((now() AT TIME ZONE 'UTC')::date, $1)",
    )
    .bind(PARTITION_MONTHS_AHEAD)
    .fetch_one(&mut *connection)
    .await?;
    if created > 0 {
        tracing::info!(created, "audit partitions created");
    }
    Ok(())
}
