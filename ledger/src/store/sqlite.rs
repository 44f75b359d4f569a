//! `SqliteStore`: the embedded ledger store on one SQLite file.
//!
//! Lifecycle: `open` creates/migrates the file on what becomes the writer connection, spawns
//! the writer task (see `writer.rs`) and opens a read-only pool. Reads go to the pool and never
//! wait for the writer (WAL). `shutdown` closes the queue, lets the writer finish what is
//! queued, and closes the pool. Dropping the store without `shutdown` also lets the writer
//! drain and stop, but nobody waits for it.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_audit::{NewRecord, SealedRecord};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, SqliteConnection};
use time::Date;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::account::{Account, AccountId, AccountState, AccountStatus, NewAccount};
use crate::approval::{ApprovalCommand, ApprovalOutcome, ApprovalQuery, ApprovalRequest};
use crate::error::LedgerError;
use crate::store::writer::{Command, Reply, Shared, Writer, enqueue};
use crate::store::{
    InvariantReport, LedgerStore, StoreLimits, WriterStats, invariants, rows, schema,
};
use crate::transfer::{
    SeedTransfer, StoredIdempotency, Transfer, TransferCommand, TransferOutcome,
};

pub struct SqliteStore {
    sender: mpsc::Sender<Command>,
    shutdown_signal: Mutex<Option<oneshot::Sender<()>>>,
    writer_task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    shutting_down: AtomicBool,
    shared: Arc<Shared>,
    read_pool: SqlitePool,
    limits: StoreLimits,
    /// Connection options of the indexer's own write connection (opened on first use).
    /// (Boxed: the options are large, and `Store` holds either store inline.)
    indexer_options: Box<SqliteConnectOptions>,
    /// The auditors' workspace indexer writes through its own connection with short
    /// transactions, so the ledger writer's connection stays the ledger's alone.
    indexer: tokio::sync::Mutex<Option<SqliteConnection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SqliteStore")
            .field("limits", &self.limits)
            .field("audit_writable", &self.audit_writable())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path_or_url`: a file path, or a
    /// `sqlite:` URL. In-memory databases are not supported (the read pool would see another
    /// database). Must be called inside a Tokio runtime: it spawns the writer task.
    ///
    /// Panics if a bound in `limits` is zero (a configuration the caller must reject first).
    pub async fn open(path_or_url: &str, limits: StoreLimits) -> Result<SqliteStore, LedgerError> {
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

        let base = if path_or_url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path_or_url)?
        } else {
            SqliteConnectOptions::new().filename(path_or_url)
        }
        .busy_timeout(Duration::from_millis(limits.busy_timeout_ms))
        .foreign_keys(true);

        // synchronous=FULL: a COMMIT that returned is on disk, even on power loss. The writer
        // replies only after COMMIT, so every Ok the gateway sees is durable.
        let writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let mut connection = writer_options.connect().await?;
        sqlx::raw_sql(schema::LEDGER_SCHEMA)
            .execute(&mut connection)
            .await?;
        schema::upgrade_idempotency(&mut connection).await?;
        countersign_audit::sqlite::migrate(&mut connection).await?;
        countersign_audit::index::sqlite::migrate(&mut connection).await?;

        // Read-only: the single-writer rule is enforced by SQLite, not only by convention.
        let read_pool = SqlitePoolOptions::new()
            .max_connections(limits.read_connections_max)
            .connect_with(base.read_only(true))
            .await?;

        let shared = Arc::new(Shared::new());
        let (sender, receiver) = mpsc::channel(limits.queue_commands_max);
        let (shutdown_sender, shutdown_receiver) = oneshot::channel();
        let indexer_options = Box::new(writer_options.clone());
        let writer = Writer::new(
            writer_options,
            connection,
            limits.batch_commands_max,
            shared.clone(),
        );
        let writer_task = tokio::spawn(writer.run(receiver, shutdown_receiver));
        tracing::info!(
            queue_commands_max = limits.queue_commands_max,
            batch_commands_max = limits.batch_commands_max,
            "ledger store opened"
        );
        Ok(SqliteStore {
            sender,
            shutdown_signal: Mutex::new(Some(shutdown_sender)),
            writer_task: tokio::sync::Mutex::new(Some(writer_task)),
            shutting_down: AtomicBool::new(false),
            shared,
            read_pool,
            limits,
            indexer_options,
            indexer: tokio::sync::Mutex::new(None),
        })
    }

    /// Opens an existing database read-only, without a writer: for offline tools such as
    /// `audit verify` and invariant checks (see [`SqliteStore::check_invariants_in`]), also
    /// while a gateway is writing to the same file. Fails if the file does not exist.
    pub async fn open_read_only(path_or_url: &str) -> Result<SqlitePool, LedgerError> {
        let options = if path_or_url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path_or_url)?
        } else {
            SqliteConnectOptions::new().filename(path_or_url)
        }
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(Duration::from_millis(
            StoreLimits::default().busy_timeout_ms,
        ));
        let pool = SqlitePoolOptions::new()
            .max_connections(StoreLimits::default().read_connections_max)
            .connect_with(options)
            .await?;
        Ok(pool)
    }

    /// [`SqliteStore::check_invariants`] on any pool of a ledger database (e.g. one from
    /// [`SqliteStore::open_read_only`]).
    pub async fn check_invariants_in(pool: &SqlitePool) -> Result<InvariantReport, LedgerError> {
        let mut snapshot = pool.begin().await?;
        let report = invariants::check(&mut snapshot).await?;
        snapshot.rollback().await?;
        Ok(report)
    }

    /// Queues a command and waits for its reply, which comes after the batch's COMMIT.
    ///
    /// Once queued, a command runs even if this future is dropped: cancellation of a request
    /// does not cancel its write (the idempotency row makes a retry safe).
    async fn send<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, LedgerError> {
        let response = enqueue(
            &self.sender,
            self.limits.enqueue_timeout_ms,
            &self.shutting_down,
            command,
        )
        .await?;
        response.await.map_err(|_| LedgerError::WriterStopped)?
    }

    pub async fn submit_transfer(
        &self,
        command: TransferCommand,
    ) -> Result<TransferOutcome, LedgerError> {
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

    /// Freezes, unfreezes or closes an account, appending `audit_record` in the same
    /// transaction. Refused (`LedgerError::Refused`) with `ledger.account_closed` when reopening
    /// a closed account and `ledger.balance_not_zero` when closing one that holds money.
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

    /// Approves or rejects a held transfer (see [`crate::approval`]).
    pub async fn submit_approval(
        &self,
        command: ApprovalCommand,
    ) -> Result<ApprovalOutcome, LedgerError> {
        self.send(|reply| Command::Approval { command, reply })
            .await
    }

    /// Expires up to `limit` held transfers whose time ran out; returns them.
    pub async fn expire_approvals(&self, limit: u32) -> Result<Vec<ApprovalRequest>, LedgerError> {
        self.send(|reply| Command::ExpireApprovals { limit, reply })
            .await
    }

    /// The approval request of held transfer `transfer_id`, with its history.
    pub async fn approval(
        &self,
        transfer_id: Uuid,
    ) -> Result<Option<ApprovalRequest>, LedgerError> {
        let mut snapshot = self.read_pool.begin().await?;
        let request = rows::load_approval(&mut snapshot, transfer_id).await?;
        snapshot.rollback().await?;
        Ok(request)
    }

    /// The approval request with approval id `id`, with its history.
    pub async fn approval_by_id(&self, id: Uuid) -> Result<Option<ApprovalRequest>, LedgerError> {
        let mut snapshot = self.read_pool.begin().await?;
        let request = rows::load_approval_by_id(&mut snapshot, id).await?;
        snapshot.rollback().await?;
        Ok(request)
    }

    /// Approval requests matching `query`, oldest first.
    pub async fn approvals(
        &self,
        query: &ApprovalQuery,
    ) -> Result<Vec<ApprovalRequest>, LedgerError> {
        let mut snapshot = self.read_pool.begin().await?;
        let requests = rows::list_approvals(&mut snapshot, query).await?;
        snapshot.rollback().await?;
        Ok(requests)
    }

    pub async fn append_audit(
        &self,
        records: Vec<NewRecord>,
    ) -> Result<Vec<SealedRecord>, LedgerError> {
        self.send(|reply| Command::AppendAudit { records, reply })
            .await
    }

    /// Whether the audit trail is writable right now. When it was last seen failing, an
    /// empty command goes through the writer, whose batch start probes the trail, so a
    /// recovered volume is noticed before a decision is made on the stale flag.
    pub async fn check_audit_writable(&self) -> bool {
        if !self.audit_writable() {
            let _ = self.append_audit(Vec::new()).await;
        }
        self.audit_writable()
    }

    pub async fn account(&self, id: &AccountId) -> Result<Option<Account>, LedgerError> {
        let mut connection = self.read_pool.acquire().await?;
        rows::load_account(&mut connection, id).await
    }

    /// The account and its debits on `business_date`, read from one snapshot.
    pub async fn account_state(
        &self,
        id: &AccountId,
        business_date: Date,
    ) -> Result<Option<AccountState>, LedgerError> {
        let mut snapshot = self.read_pool.begin().await?;
        let state = rows::load_account_state(&mut snapshot, id, business_date).await?;
        snapshot.rollback().await?;
        Ok(state)
    }

    pub async fn transfer(&self, id: Uuid) -> Result<Option<Transfer>, LedgerError> {
        let mut connection = self.read_pool.acquire().await?;
        rows::load_transfer(&mut connection, id).await
    }

    pub async fn idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredIdempotency>, LedgerError> {
        let mut connection = self.read_pool.acquire().await?;
        rows::load_idempotency(&mut connection, scope, key).await
    }

    /// Checks every ledger invariant on one consistent snapshot.
    pub async fn check_invariants(&self) -> Result<InvariantReport, LedgerError> {
        SqliteStore::check_invariants_in(&self.read_pool).await
    }

    /// The read-only pool, for audit reads (`countersign_audit::sqlite::{read_after, count,
    /// verify}`). Writing through it fails: all writes go through the writer.
    pub fn pool(&self) -> &SqlitePool {
        &self.read_pool
    }

    /// False after an audit append or COMMIT failed, until a commit that appended audit
    /// records succeeds. The gateway can report it on its health endpoint.
    pub fn audit_writable(&self) -> bool {
        self.shared.audit_writable.load(Ordering::Acquire)
    }

    /// Notified after every COMMIT (`notify_waiters` + one stored permit), so an audit relay
    /// can `commits.notified().await` instead of polling tightly. It is a hint: a relay must
    /// still read from its own cursor, and should also wake on a timer.
    pub fn commits(&self) -> Arc<Notify> {
        self.shared.commits.clone()
    }

    /// Counters of the writer, for metrics. `commands_committed / batches_committed` is the
    /// average group-commit size.
    pub fn writer_stats(&self) -> WriterStats {
        WriterStats {
            queued_commands: self.sender.max_capacity() - self.sender.capacity(),
            batches_committed: self.shared.batches_committed.load(Ordering::Relaxed),
            commands_committed: self.shared.commands_committed.load(Ordering::Relaxed),
            batches_aborted: self.shared.batches_aborted.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` on the indexer's write connection (connecting first if needed). A failure
    /// drops the connection, so the next call starts on a fresh one.
    async fn with_indexer<T>(
        &self,
        work: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, countersign_audit::AuditError>,
    ) -> Result<T, LedgerError> {
        let mut slot = self.indexer.lock().await;
        if slot.is_none() {
            *slot = Some(self.indexer_options.connect().await?);
        }
        let result = work(slot.as_mut().expect("connected above")).await;
        if result.is_err() {
            *slot = None;
        }
        Ok(result?)
    }

    /// One step of the auditors' workspace indexer (see `countersign_audit::index`).
    pub async fn audit_index_step(
        &self,
        batch_records_max: u32,
    ) -> Result<countersign_audit::index::IndexStep, LedgerError> {
        self.with_indexer(async |connection| {
            countersign_audit::index::sqlite::index_step(
                connection,
                batch_records_max,
                crate::store::currency_exponent,
            )
            .await
        })
        .await
    }

    /// Signs and stores a checkpoint at the current tree size (the stored one if it exists).
    pub async fn write_checkpoint_now(
        &self,
        signer: &countersign_audit::checkpoint::CheckpointSigner,
    ) -> Result<Option<countersign_audit::checkpoint::Checkpoint>, LedgerError> {
        self.with_indexer(async |connection| {
            countersign_audit::index::sqlite::write_checkpoint(
                connection,
                signer,
                time::OffsetDateTime::now_utc(),
            )
            .await
        })
        .await
    }

    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// Closes the queue (new commands get `LedgerError::ShuttingDown`), waits until the
    /// writer has committed and answered every queued command, then closes the read pool.
    /// Calling it again returns at once. `Err(WriterStopped)` if the writer had panicked.
    /// Stops the writer after it has committed every queued command, then closes the read
    /// pool. Same as `stop_writer` followed by `close_reads`.
    pub async fn shutdown(&self) -> Result<(), LedgerError> {
        let result = self.stop_writer().await;
        self.close_reads().await;
        result
    }

    /// Closes the read pool; call after the last reader (e.g. the audit relay) is done.
    pub async fn close_reads(&self) {
        if let Some(indexer) = self.indexer.lock().await.take() {
            let _ = sqlx::Connection::close(indexer).await;
        }
        self.read_pool.close().await;
    }

    /// Stops the writer after it has committed every queued command. Reads keep working, so
    /// an audit relay can deliver the last committed records before `close_reads`.
    pub async fn stop_writer(&self) -> Result<(), LedgerError> {
        self.shutting_down.store(true, Ordering::Release);
        let signal = self
            .shutdown_signal
            .lock()
            .expect("shutdown signal lock is never poisoned")
            .take();
        if let Some(signal) = signal {
            // The writer may already be gone (panicked); then there is nothing to signal.
            let _ = signal.send(());
        }
        let writer_task = self.writer_task.lock().await.take();
        match writer_task {
            Some(task) => task.await.map_err(|error| {
                tracing::error!(error = %error, "ledger writer task failed");
                LedgerError::WriterStopped
            }),
            None => Ok(()),
        }
    }
}

impl LedgerStore for SqliteStore {
    async fn submit_transfer(
        &self,
        command: TransferCommand,
    ) -> Result<TransferOutcome, LedgerError> {
        SqliteStore::submit_transfer(self, command).await
    }

    async fn create_account(
        &self,
        account: NewAccount,
        audit_record: NewRecord,
    ) -> Result<Account, LedgerError> {
        SqliteStore::create_account(self, account, audit_record).await
    }

    async fn set_account_status(
        &self,
        id: &AccountId,
        status: AccountStatus,
        audit_record: NewRecord,
    ) -> Result<Account, LedgerError> {
        SqliteStore::set_account_status(self, id, status, audit_record).await
    }

    async fn seed_transfer(&self, seed: SeedTransfer) -> Result<Transfer, LedgerError> {
        SqliteStore::seed_transfer(self, seed).await
    }

    async fn append_audit(
        &self,
        records: Vec<NewRecord>,
    ) -> Result<Vec<SealedRecord>, LedgerError> {
        SqliteStore::append_audit(self, records).await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, LedgerError> {
        SqliteStore::account(self, id).await
    }

    async fn account_state(
        &self,
        id: &AccountId,
        business_date: Date,
    ) -> Result<Option<AccountState>, LedgerError> {
        SqliteStore::account_state(self, id, business_date).await
    }

    async fn transfer(&self, id: Uuid) -> Result<Option<Transfer>, LedgerError> {
        SqliteStore::transfer(self, id).await
    }

    async fn idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredIdempotency>, LedgerError> {
        SqliteStore::idempotency(self, scope, key).await
    }

    async fn check_invariants(&self) -> Result<InvariantReport, LedgerError> {
        SqliteStore::check_invariants(self).await
    }

    fn audit_writable(&self) -> bool {
        SqliteStore::audit_writable(self)
    }

    async fn shutdown(&self) -> Result<(), LedgerError> {
        SqliteStore::shutdown(self).await
    }
}
