//! `PgStore`: the ledger and the audit trail on PostgreSQL, for several gateway replicas
//! sharing one database.
//!
//! Per replica (per `PgStore`):
//! - one writer task with its own connection, group-committing batches (`writer.rs`);
//! - one sealer task, which seals audit records into the hash chain while its replica holds
//!   the leader lock (`sealer.rs`);
//! - a read pool for everything else (reads reconnect on their own).
//!
//! Lifecycle: `open` (optionally migrates), then `stop_writer` (commits what is queued, then
//! waits a bounded time for its records to be sealed), then `close_reads` (stops the sealer
//! after a last sealing pass, closes the pool). `shutdown` does both. Dropping the store
//! without `shutdown` stops the sealer and lets the writer drain, but nobody waits for them.
//!
//! When PostgreSQL is unreachable, commands fail with `LedgerError::Storage` (the gateway
//! answers 503) and `audit_writable()` turns false; the writer reconnects with a bounded
//! backoff and the pool on demand, so service resumes by itself.

mod invariants;
mod rows;
mod sealer;
mod writer;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use countersign_audit::{ChainHead, NewRecord, OutboxItem, SealedRecord, VerifyReport};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use time::Date;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::account::{Account, AccountId, AccountState, AccountStatus, NewAccount};
use crate::approval::{ApprovalCommand, ApprovalOutcome, ApprovalQuery, ApprovalRequest};
use crate::error::LedgerError;
use crate::store::writer::{Command, Reply, Shared, enqueue};
use crate::store::{InvariantReport, OutboxFullPolicy, StoreLimits, StoreOptions, WriterStats};
use crate::transfer::{
    SeedTransfer, StoredIdempotency, Transfer, TransferCommand, TransferOutcome,
};
use sealer::{Sealer, SealerState};
use writer::{CONNECT_TIMEOUT_MS, PgWriter, WRITER_SESSION_OPTIONS};

/// The migrations in `ledger/migrations`, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How stale the cached outbox backlog may be before a transfer refreshes it.
const OUTBOX_BACKLOG_REFRESH_MS: u64 = 100;
/// How long `stop_writer` waits for this replica's last records to be sealed.
const SHUTDOWN_SEAL_WAIT_MS: u64 = 5_000;
/// Poll interval while waiting for seals (the sealed notification usually comes first).
const SEAL_WAIT_POLL_MS: u64 = 50;

/// True for the URLs `PgStore` opens.
pub(crate) fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Applies the embedded migrations to the database at `url` (idempotent; concurrent callers
/// are serialised by sqlx's migration lock).
pub(crate) async fn migrate(url: &str) -> Result<(), LedgerError> {
    let options = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let migrated = MIGRATOR.run(&pool).await;
    pool.close().await;
    migrated.map_err(sqlx::Error::from)?;
    Ok(())
}

/// The cached undelivered-outbox count and the policy applied to it.
struct OutboxGate {
    enabled: bool,
    rows_max: u64,
    policy: OutboxFullPolicy,
    backlog: AtomicI64,
    /// Milliseconds after `opened` of the last refresh; `u64::MAX` before the first.
    refreshed_at_ms: AtomicU64,
    opened: Instant,
    refreshing: tokio::sync::Mutex<()>,
}

impl OutboxGate {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// `Err(OutboxFull)` when the policy refuses. At most one caller at a time refreshes the
    /// count, at most every `OUTBOX_BACKLOG_REFRESH_MS`; the others use the cached value.
    async fn check(&self, pool: &PgPool) -> Result<(), LedgerError> {
        if !self.enabled {
            return Ok(());
        }
        let refreshed_at = self.refreshed_at_ms.load(Ordering::Acquire);
        let now = self.elapsed_ms();
        let stale = refreshed_at == u64::MAX
            || now.saturating_sub(refreshed_at) >= OUTBOX_BACKLOG_REFRESH_MS;
        let mut refreshed = false;
        if stale && let Ok(_guard) = self.refreshing.try_lock() {
            match countersign_audit::postgres::outbox_backlog(pool).await {
                Ok(backlog) => {
                    self.backlog.store(backlog, Ordering::Release);
                    refreshed = true;
                }
                // The transfer itself will meet the failure and report it.
                Err(error) => tracing::debug!(error = %error, "outbox backlog refresh failed"),
            }
            self.refreshed_at_ms
                .store(self.elapsed_ms(), Ordering::Release);
        }
        let backlog = self.backlog.load(Ordering::Acquire);
        if u64::try_from(backlog).unwrap_or(0) < self.rows_max {
            return Ok(());
        }
        match self.policy {
            OutboxFullPolicy::Refuse => Err(LedgerError::OutboxFull {
                backlog,
                rows_max: self.rows_max,
            }),
            OutboxFullPolicy::Serve => {
                // Logged once per refresh, not once per transfer.
                if refreshed {
                    tracing::warn!(
                        backlog,
                        outbox_rows_max = self.rows_max,
                        "audit outbox is full; serving anyway (outbox_full_policy = serve)"
                    );
                }
                Ok(())
            }
        }
    }
}

pub struct PgStore {
    sender: mpsc::Sender<Command>,
    shutdown_signal: Mutex<Option<oneshot::Sender<()>>>,
    writer_task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// False once the writer task has ended (returned or panicked).
    writer_running: Arc<AtomicBool>,
    sealer_stop: watch::Sender<bool>,
    sealer_task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    sealer_state: Arc<SealerState>,
    shutting_down: AtomicBool,
    shared: Arc<Shared>,
    pool: PgPool,
    outbox: OutboxGate,
    limits: StoreLimits,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PgStore")
            .field("limits", &self.limits)
            .field("audit_writable", &self.audit_writable())
            .field("sealer_leader", &self.is_sealer_leader())
            .finish_non_exhaustive()
    }
}

/// Sets `writer_running` false when the writer task ends, also by panic.
struct RunningGuard(Arc<AtomicBool>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://...`), migrates if `options.migrate_on_start`, and starts
    /// the writer and the sealer. Must be called inside a Tokio runtime.
    ///
    /// Panics if a bound in `limits` is zero (a configuration the caller must reject first).
    pub async fn open(
        url: &str,
        limits: StoreLimits,
        options: StoreOptions,
    ) -> Result<PgStore, LedgerError> {
        assert!(
            limits.queue_commands_max > 0,
            "queue_commands_max must be at least 1"
        );
        assert!(
            limits.batch_commands_max > 0,
            "batch_commands_max must be at least 1"
        );
        assert!(
            limits.read_connections_max > 0,
            "read_connections_max must be at least 1"
        );
        if options.migrate_on_start {
            migrate(url).await?;
        }
        let connect_options = PgConnectOptions::from_str(url)?.application_name("countersign");
        let pool = PgPoolOptions::new()
            .max_connections(limits.read_connections_max)
            .acquire_timeout(Duration::from_millis(limits.busy_timeout_ms))
            .connect_with(connect_options.clone())
            .await?;
        let writer_options = connect_options.clone().options(WRITER_SESSION_OPTIONS);
        let connection = match tokio::time::timeout(
            Duration::from_millis(CONNECT_TIMEOUT_MS),
            writer_options.connect(),
        )
        .await
        {
            Ok(connection) => connection?,
            Err(_) => return Err(LedgerError::Storage(Arc::new(sqlx::Error::PoolTimedOut))),
        };

        let shared = Arc::new(Shared::new());
        let (sender, receiver) = mpsc::channel(limits.queue_commands_max);
        let (shutdown_sender, shutdown_receiver) = oneshot::channel();
        let writer = PgWriter::new(
            writer_options,
            connection,
            limits.batch_commands_max,
            options.outbox_enabled,
            shared.clone(),
        );
        let writer_running = Arc::new(AtomicBool::new(true));
        let guard = RunningGuard(writer_running.clone());
        let writer_task = tokio::spawn(async move {
            let _guard = guard;
            writer.run(receiver, shutdown_receiver).await;
        });

        let sealer_state = Arc::new(SealerState::new());
        let (sealer_stop, sealer_stop_receiver) = watch::channel(false);
        let sealer = Sealer {
            options: connect_options,
            pool: pool.clone(),
            commits: shared.commits.clone(),
            state: sealer_state.clone(),
        };
        let sealer_task = options
            .sealer_enabled
            .then(|| tokio::spawn(sealer.run(sealer_stop_receiver)));

        tracing::info!(
            queue_commands_max = limits.queue_commands_max,
            batch_commands_max = limits.batch_commands_max,
            outbox_enabled = options.outbox_enabled,
            "ledger store opened (postgres)"
        );
        Ok(PgStore {
            sender,
            shutdown_signal: Mutex::new(Some(shutdown_sender)),
            writer_task: tokio::sync::Mutex::new(Some(writer_task)),
            writer_running,
            sealer_stop,
            sealer_task: tokio::sync::Mutex::new(sealer_task),
            sealer_state,
            shutting_down: AtomicBool::new(false),
            shared,
            outbox: OutboxGate {
                enabled: options.outbox_enabled,
                rows_max: limits.outbox_rows_max,
                policy: limits.outbox_full_policy,
                backlog: AtomicI64::new(0),
                refreshed_at_ms: AtomicU64::new(u64::MAX),
                opened: Instant::now(),
                refreshing: tokio::sync::Mutex::new(()),
            },
            pool,
            limits,
        })
    }

    /// Queues a command and waits for its reply, which comes after the batch's COMMIT.
    /// Once queued, a command runs even if this future is dropped.
    async fn send<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, LedgerError> {
        let response = enqueue(
            &self.sender,
            self.limits.enqueue_timeout_ms,
            &self.shutting_down,
            command,
        )
        .await?;
        match response.await {
            Ok(result) => result,
            // The writer dropped the reply without answering: its batch timed out (the
            // writer lives on) or the writer died.
            Err(_) if self.writer_running.load(Ordering::Acquire) => {
                Err(LedgerError::Storage(Arc::new(sqlx::Error::Io(
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "ledger batch timed out"),
                ))))
            }
            Err(_) => Err(LedgerError::WriterStopped),
        }
    }

    /// Decides and (if allowed) posts a transfer. Refused with `LedgerError::OutboxFull` while
    /// the outbox is full and the policy is `Refuse`.
    pub async fn submit_transfer(
        &self,
        command: TransferCommand,
    ) -> Result<TransferOutcome, LedgerError> {
        self.outbox.check(&self.pool).await?;
        self.send(|reply| Command::Transfer { command, reply })
            .await
    }

    pub async fn create_account(
        &self,
        account: NewAccount,
        audit_record: NewRecord,
    ) -> Result<Account, LedgerError> {
        self.send(|reply| Command::CreateAccount {
            account,
            audit_record,
            reply,
        })
        .await
    }

    pub async fn set_account_status(
        &self,
        id: &AccountId,
        status: AccountStatus,
        audit_record: NewRecord,
    ) -> Result<Account, LedgerError> {
        let account = id.clone();
        self.send(|reply| Command::SetAccountStatus {
            account,
            status,
            audit_record,
            reply,
        })
        .await
    }

    pub async fn seed_transfer(&self, seed: SeedTransfer) -> Result<Transfer, LedgerError> {
        self.send(|reply| Command::Seed { seed, reply }).await
    }

    /// Approves or rejects a held transfer; refused like transfers while the outbox is full.
    pub async fn submit_approval(
        &self,
        command: ApprovalCommand,
    ) -> Result<ApprovalOutcome, LedgerError> {
        self.outbox.check(&self.pool).await?;
        self.send(|reply| Command::Approval { command, reply })
            .await
    }

    /// Expires up to `limit` held transfers whose time ran out. Runs even while the outbox is
    /// full: releasing a reservation must not wait for Kafka.
    pub async fn expire_approvals(&self, limit: u32) -> Result<Vec<ApprovalRequest>, LedgerError> {
        self.send(|reply| Command::ExpireApprovals { limit, reply })
            .await
    }

    /// The approval request of held transfer `transfer_id`, with its history (one snapshot).
    pub async fn approval(
        &self,
        transfer_id: Uuid,
    ) -> Result<Option<ApprovalRequest>, LedgerError> {
        let mut snapshot = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let request = rows::load_approval(&mut snapshot, transfer_id, false).await?;
        snapshot.rollback().await?;
        Ok(request)
    }

    pub async fn approval_by_id(&self, id: Uuid) -> Result<Option<ApprovalRequest>, LedgerError> {
        let mut snapshot = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let request = rows::load_approval_by_id(&mut snapshot, id).await?;
        snapshot.rollback().await?;
        Ok(request)
    }

    pub async fn approvals(
        &self,
        query: &ApprovalQuery,
    ) -> Result<Vec<ApprovalRequest>, LedgerError> {
        let mut snapshot = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let requests = rows::list_approvals(&mut snapshot, query).await?;
        snapshot.rollback().await?;
        Ok(requests)
    }

    /// Appends audit records that belong to no ledger write; durable (not yet sealed) when it
    /// returns. Returns how many were appended.
    pub async fn append_audit(&self, records: Vec<NewRecord>) -> Result<usize, LedgerError> {
        let appended = records.len();
        self.send(|reply| Command::AppendAudit { records, reply })
            .await?;
        Ok(appended)
    }

    /// Whether the audit trail is writable right now; when it was last seen failing, an empty
    /// command goes through the writer, whose batch start probes the trail.
    pub async fn check_audit_writable(&self) -> bool {
        if !self.audit_writable() {
            let _ = self.append_audit(Vec::new()).await;
        }
        self.audit_writable()
    }

    pub async fn account(&self, id: &AccountId) -> Result<Option<Account>, LedgerError> {
        let mut connection = self.pool.acquire().await?;
        rows::load_account(&mut connection, id).await
    }

    /// The account and its debits on `business_date`, read from one snapshot.
    pub async fn account_state(
        &self,
        id: &AccountId,
        business_date: Date,
    ) -> Result<Option<AccountState>, LedgerError> {
        let mut snapshot = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let state = rows::load_account_state(&mut snapshot, id, business_date).await?;
        snapshot.rollback().await?;
        Ok(state)
    }

    pub async fn transfer(&self, id: Uuid) -> Result<Option<Transfer>, LedgerError> {
        let mut connection = self.pool.acquire().await?;
        rows::load_transfer(&mut connection, id).await
    }

    pub async fn idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredIdempotency>, LedgerError> {
        let mut connection = self.pool.acquire().await?;
        rows::load_idempotency(&mut connection, scope, key).await
    }

    /// Checks every ledger invariant on one consistent snapshot.
    pub async fn check_invariants(&self) -> Result<InvariantReport, LedgerError> {
        PgStore::check_invariants_in(&self.pool).await
    }

    /// [`PgStore::check_invariants`] on any pool of a ledger database (offline tools).
    pub async fn check_invariants_in(pool: &PgPool) -> Result<InvariantReport, LedgerError> {
        let mut snapshot = pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let report = invariants::check(&mut snapshot).await?;
        snapshot.rollback().await?;
        Ok(report)
    }

    /// The pool (for `countersign_audit::postgres` reads and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn read_sealed_after(
        &self,
        sequence: i64,
        limit: i64,
    ) -> Result<Vec<SealedRecord>, LedgerError> {
        Ok(countersign_audit::postgres::read_after(&self.pool, sequence, limit).await?)
    }

    pub async fn audit_head(&self) -> Result<Option<ChainHead>, LedgerError> {
        Ok(countersign_audit::postgres::head(&self.pool).await?)
    }

    /// Sealed records (records not sealed yet are not counted).
    pub async fn audit_count(&self) -> Result<i64, LedgerError> {
        Ok(countersign_audit::postgres::count(&self.pool).await?)
    }

    pub async fn verify_audit(&self) -> Result<VerifyReport, LedgerError> {
        Ok(countersign_audit::postgres::verify(&self.pool).await?)
    }

    /// One step of the auditors' workspace indexer (see `countersign_audit::index`), on a
    /// pool connection. The gateway runs it on the sealer leader only.
    pub async fn audit_index_step(
        &self,
        batch_records_max: u32,
    ) -> Result<countersign_audit::index::IndexStep, LedgerError> {
        let mut connection = self.pool.acquire().await?;
        Ok(countersign_audit::index::postgres::index_step(
            &mut connection,
            batch_records_max,
            crate::store::currency_exponent,
        )
        .await?)
    }

    /// Signs and stores a checkpoint at the current tree size (the stored one if it exists).
    pub async fn write_checkpoint_now(
        &self,
        signer: &countersign_audit::checkpoint::CheckpointSigner,
    ) -> Result<Option<countersign_audit::checkpoint::Checkpoint>, LedgerError> {
        let mut connection = self.pool.acquire().await?;
        Ok(countersign_audit::index::postgres::write_checkpoint(
            &mut connection,
            signer,
            time::OffsetDateTime::now_utc(),
        )
        .await?)
    }

    /// Waits until every audit record committed before the call (by any replica) is sealed,
    /// at most `timeout`. `Ok(false)` on timeout (no sealer leader, or it is behind).
    pub async fn wait_sealed(&self, timeout: Duration) -> Result<bool, LedgerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let target = countersign_audit::postgres::last_ingest_id(&self.pool).await?;
        loop {
            let notified = self.sealer_state.sealed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if countersign_audit::postgres::sealed_through(&self.pool, target).await? {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let poll = (deadline - now).min(Duration::from_millis(SEAL_WAIT_POLL_MS));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Sealed outbox items not delivered yet, in chain order.
    pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<OutboxItem>, LedgerError> {
        Ok(countersign_audit::postgres::outbox_pending(&self.pool, limit).await?)
    }

    /// Marks outbox items delivered; returns how many changed.
    pub async fn outbox_mark_delivered(&self, record_ids: &[Uuid]) -> Result<u64, LedgerError> {
        Ok(countersign_audit::postgres::outbox_mark_delivered(&self.pool, record_ids).await?)
    }

    /// Undelivered outbox rows, counted now (not the cached value transfers check).
    pub async fn outbox_backlog(&self) -> Result<i64, LedgerError> {
        Ok(countersign_audit::postgres::outbox_backlog(&self.pool).await?)
    }

    /// Whether this replica's sealer holds the leader lock right now.
    pub fn is_sealer_leader(&self) -> bool {
        self.sealer_state.is_leader.load(Ordering::Acquire)
    }

    /// Records this replica's sealer has sealed since open (for the sealing-rate metric).
    pub fn records_sealed(&self) -> u64 {
        self.sealer_state.records_sealed.load(Ordering::Relaxed)
    }

    /// False after an audit append or a COMMIT failed (or PostgreSQL was unreachable), until
    /// a commit that appended audit records succeeds.
    pub fn audit_writable(&self) -> bool {
        self.shared.audit_writable.load(Ordering::Acquire)
    }

    /// Notified when records were sealed (by this replica, or seen sealed by the leader).
    pub fn sealed(&self) -> Arc<Notify> {
        self.sealer_state.sealed.clone()
    }

    pub fn writer_stats(&self) -> WriterStats {
        WriterStats {
            queued_commands: self.sender.max_capacity() - self.sender.capacity(),
            batches_committed: self.shared.batches_committed.load(Ordering::Relaxed),
            commands_committed: self.shared.commands_committed.load(Ordering::Relaxed),
            batches_aborted: self.shared.batches_aborted.load(Ordering::Relaxed),
        }
    }

    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// Same as `stop_writer` followed by `close_reads`.
    pub async fn shutdown(&self) -> Result<(), LedgerError> {
        let result = self.stop_writer().await;
        self.close_reads().await;
        result
    }

    /// Stops the writer after it has committed every queued command, then waits (bounded) for
    /// those records to be sealed, so an audit relay can deliver them before `close_reads`.
    pub async fn stop_writer(&self) -> Result<(), LedgerError> {
        self.shutting_down.store(true, Ordering::Release);
        let signal = self
            .shutdown_signal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(signal) = signal {
            let _ = signal.send(());
        }
        let writer_task = self.writer_task.lock().await.take();
        let Some(task) = writer_task else {
            return Ok(());
        };
        let result = task.await.map_err(|error| {
            tracing::error!(error = %error, "ledger writer task failed");
            LedgerError::WriterStopped
        });
        match self
            .wait_sealed(Duration::from_millis(SHUTDOWN_SEAL_WAIT_MS))
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "audit records of this replica are not sealed yet; the next sealer leader will seal them"
            ),
            Err(error) => tracing::warn!(error = %error, "cannot wait for audit sealing"),
        }
        result
    }

    /// Stops the sealer (after a last pass if it leads) and closes the pool.
    pub async fn close_reads(&self) {
        let _ = self.sealer_stop.send(true);
        if let Some(task) = self.sealer_task.lock().await.take()
            && let Err(error) = task.await
        {
            tracing::error!(error = %error, "audit sealer task failed");
        }
        self.pool.close().await;
    }
}
