//! The single writer task: every write of the ledger and of the audit trail goes through it.
//!
//! Why one writer: SQLite allows one writer at a time anyway, and the audit hash chain needs
//! appends in one order. One task owning one connection makes both explicit instead of
//! leaving them to lock contention and `SQLITE_BUSY` retries.
//!
//! Group commit: the writer takes the first queued command, then whatever is already queued
//! (up to `batch_commands_max` commands in total), and runs them in ONE `BEGIN IMMEDIATE`
//! transaction, so one fsync covers the whole batch. Each command runs inside its own
//! SAVEPOINT: a command that fails is rolled back alone and its neighbours still commit.
//! Replies are sent only after COMMIT returned, so a caller never sees an outcome that is not
//! durable; if COMMIT fails, every caller of the batch gets `LedgerError::Storage`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use countersign_audit::{AuditError, NewRecord, Outcome, RecordKind, SealedRecord, Subject};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Row};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::account::{Account, AccountId, AccountStatus, NewAccount};
use crate::approval::{
    ApprovalCommand, ApprovalContext, ApprovalOutcome, ApprovalRequest, ApprovalStatus,
};
use crate::error::LedgerError;
use crate::money::Currency;
use crate::store::rows::{self, format_date, format_timestamp};
use crate::store::rules::{
    ApprovalStep, Provenance, expire, ledger_refusals, plan_approval, posting_record,
    reservation_record, run_approval_decide, run_decide,
};
use crate::transfer::{
    DecisionContext, IdempotencyClaim, IdempotencyOutcome, Reason, SeedTransfer, Transfer,
    TransferCommand, TransferOutcome, Verdict, reason_codes,
};

/// Subject recorded for system postings (`seed_transfer`), which no client certificate made.
pub const SYSTEM_SUBJECT: &str = "system";
/// `bundle_revision` of records no policy bundle took part in.
pub const NO_POLICY_BUNDLE: &str = "none";

pub(crate) type Reply<T> = oneshot::Sender<Result<T, LedgerError>>;

pub(crate) enum Command {
    Transfer {
        command: TransferCommand,
        reply: Reply<TransferOutcome>,
    },
    CreateAccount {
        account: NewAccount,
        audit_record: NewRecord,
        reply: Reply<Account>,
    },
    Seed {
        seed: SeedTransfer,
        reply: Reply<Transfer>,
    },
    AppendAudit {
        records: Vec<NewRecord>,
        reply: Reply<Vec<SealedRecord>>,
    },
    SetAccountStatus {
        account: AccountId,
        status: AccountStatus,
        audit_record: NewRecord,
        reply: Reply<Account>,
    },
    /// An approve or reject of a held transfer.
    Approval {
        command: ApprovalCommand,
        reply: Reply<ApprovalOutcome>,
    },
    /// Expires up to `limit` pending requests past their expiry; replies with them.
    ExpireApprovals {
        limit: u32,
        reply: Reply<Vec<ApprovalRequest>>,
    },
}

/// State the writer shares with `SqliteStore`.
/// Queues a command for a writer, waiting at most `enqueue_timeout_ms` for room (then
/// `Overloaded`); returns where its reply will arrive. Shared by both stores.
pub(crate) async fn enqueue<T>(
    sender: &mpsc::Sender<Command>,
    enqueue_timeout_ms: u64,
    shutting_down: &AtomicBool,
    command: impl FnOnce(Reply<T>) -> Command,
) -> Result<oneshot::Receiver<Result<T, LedgerError>>, LedgerError> {
    let (reply, response) = oneshot::channel();
    let timeout = std::time::Duration::from_millis(enqueue_timeout_ms);
    match sender.send_timeout(command(reply), timeout).await {
        Ok(()) => Ok(response),
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(LedgerError::Overloaded),
        Err(mpsc::error::SendTimeoutError::Closed(_)) => {
            Err(if shutting_down.load(Ordering::Acquire) {
                LedgerError::ShuttingDown
            } else {
                LedgerError::WriterStopped
            })
        }
    }
}

/// The writer's side of the command queue, shared by both back ends' writers: group commit
/// takes the first queued command, then whatever is already queued, up to a bound.
pub(crate) struct CommandQueue {
    receiver: mpsc::Receiver<Command>,
    shutdown_signal: oneshot::Receiver<()>,
    closing: bool,
    batch_commands_max: usize,
}

impl CommandQueue {
    pub(crate) fn new(
        receiver: mpsc::Receiver<Command>,
        shutdown_signal: oneshot::Receiver<()>,
        batch_commands_max: usize,
    ) -> CommandQueue {
        CommandQueue {
            receiver,
            shutdown_signal,
            closing: false,
            batch_commands_max,
        }
    }

    /// The next batch; `None` once the queue is closed (shutdown signal, or every sender
    /// dropped) and drained.
    pub(crate) async fn next_batch(&mut self) -> Option<Vec<Command>> {
        let first = loop {
            if self.closing {
                break self.receiver.recv().await;
            }
            tokio::select! {
                // Shutdown first: under constant load the queue may never be empty.
                biased;
                _ = &mut self.shutdown_signal => {
                    // Refuse new commands; the ones already queued still run.
                    self.receiver.close();
                    self.closing = true;
                }
                command = self.receiver.recv() => break command,
            }
        }?;
        let mut batch = Vec::with_capacity(self.batch_commands_max);
        batch.push(first);
        while batch.len() < self.batch_commands_max {
            match self.receiver.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        Some(batch)
    }
}

pub(crate) struct Shared {
    /// False after an audit append or a COMMIT failed; true again after a commit that
    /// appended audit records.
    pub(crate) audit_writable: AtomicBool,
    /// Notified after every COMMIT, so the audit relay can wake instead of polling hard.
    pub(crate) commits: Arc<Notify>,
    pub(crate) batches_committed: AtomicU64,
    pub(crate) commands_committed: AtomicU64,
    pub(crate) batches_aborted: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            audit_writable: AtomicBool::new(true),
            commits: Arc::new(Notify::new()),
            batches_committed: AtomicU64::new(0),
            commands_committed: AtomicU64::new(0),
            batches_aborted: AtomicU64::new(0),
        }
    }
}

/// A reply held back until the batch's COMMIT has returned.
trait Deliver: Send {
    fn deliver(self: Box<Self>);
    fn fail(self: Box<Self>, error: LedgerError);
}

struct Pending<T> {
    reply: Reply<T>,
    result: Result<T, LedgerError>,
}

impl<T: Send> Deliver for Pending<T> {
    fn deliver(self: Box<Self>) {
        // A caller that went away (request cancelled) does not undo its command: it is
        // committed, and a retry with the same idempotency key replays it.
        let _ = self.reply.send(self.result);
    }

    fn fail(self: Box<Self>, error: LedgerError) {
        let _ = self.reply.send(Err(error));
    }
}

fn pending<T: Send + 'static>(reply: Reply<T>, result: Result<T, LedgerError>) -> Box<dyn Deliver> {
    Box::new(Pending { reply, result })
}

impl Command {
    /// A command that will not run because its batch is aborted.
    fn into_failed(self, error: LedgerError) -> Box<dyn Deliver> {
        match self {
            Command::Transfer { reply, .. } => pending(reply, Err(error)),
            Command::CreateAccount { reply, .. } => pending(reply, Err(error)),
            Command::Seed { reply, .. } => pending(reply, Err(error)),
            Command::AppendAudit { reply, .. } => pending(reply, Err(error)),
            Command::SetAccountStatus { reply, .. } => pending(reply, Err(error)),
            Command::Approval { reply, .. } => pending(reply, Err(error)),
            Command::ExpireApprovals { reply, .. } => pending(reply, Err(error)),
        }
    }

    /// Runs the command on `connection` (inside its savepoint). Returns the held reply and
    /// whether the savepoint should be released (true) or rolled back (false).
    async fn execute(
        self,
        connection: &mut SqliteConnection,
        shared: &Shared,
        effects: &mut CommandEffects,
    ) -> (Box<dyn Deliver>, bool) {
        match self {
            Command::Transfer { command, reply } => {
                let result = execute_transfer(connection, command, shared, effects).await;
                let succeeded = result.is_ok();
                (pending(reply, result), succeeded)
            }
            Command::CreateAccount {
                account,
                audit_record,
                reply,
            } => {
                let result =
                    execute_create_account(connection, account, audit_record, shared, effects)
                        .await;
                let succeeded = result.is_ok();
                (pending(reply, result), succeeded)
            }
            Command::Seed { seed, reply } => {
                let result = execute_seed(connection, seed, shared, effects).await;
                let succeeded = result.is_ok();
                (pending(reply, result), succeeded)
            }
            Command::AppendAudit { records, reply } => {
                let result = append_audit(connection, records, shared, effects).await;
                let succeeded = result.is_ok();
                (pending(reply, result), succeeded)
            }
            Command::SetAccountStatus {
                account,
                status,
                audit_record,
                reply,
            } => {
                let result = execute_set_account_status(
                    connection,
                    &account,
                    status,
                    audit_record,
                    shared,
                    effects,
                )
                .await;
                let succeeded = result.is_ok();
                (pending(reply, result), succeeded)
            }
            Command::Approval { command, reply } => {
                let result = execute_approval(connection, command, shared, effects).await;
                let succeeded = result.is_ok();
                (pending(reply, result), succeeded)
            }
            Command::ExpireApprovals { limit, reply } => {
                let result = execute_expire(connection, limit, shared, effects).await;
                let succeeded = result.is_ok();
                (pending(reply, result), succeeded)
            }
        }
    }
}

/// What one command wrote, counted only once its savepoint is released.
#[derive(Default)]
struct CommandEffects {
    /// (currency, minor units) of each posted transfer: one debit and one credit entry each.
    postings: Vec<(Currency, i64)>,
    audit_appended: bool,
}

/// Debit and credit totals per currency code, in i128 so a batch can never overflow them.
type EntryTotals = BTreeMap<&'static str, (i128, i128)>;

enum BatchResult {
    Committed {
        pending: Vec<Box<dyn Deliver>>,
        audit_appended: bool,
    },
    Aborted {
        pending: Vec<Box<dyn Deliver>>,
        error: Arc<sqlx::Error>,
    },
}

pub(crate) struct Writer {
    options: SqliteConnectOptions,
    /// `None` after a failed batch: a connection whose transaction failed is not trusted, the
    /// next batch opens a fresh one.
    connection: Option<SqliteConnection>,
    batch_commands_max: usize,
    shared: Arc<Shared>,
}

impl Writer {
    pub(crate) fn new(
        options: SqliteConnectOptions,
        connection: SqliteConnection,
        batch_commands_max: usize,
        shared: Arc<Shared>,
    ) -> Writer {
        assert!(
            batch_commands_max > 0,
            "batch_commands_max must be at least 1"
        );
        Writer {
            options,
            connection: Some(connection),
            batch_commands_max,
            shared,
        }
    }

    /// Runs until the queue is closed (shutdown signal, or every sender dropped) and drained.
    pub(crate) async fn run(
        mut self,
        receiver: mpsc::Receiver<Command>,
        shutdown_signal: oneshot::Receiver<()>,
    ) {
        let mut queue = CommandQueue::new(receiver, shutdown_signal, self.batch_commands_max);
        while let Some(batch) = queue.next_batch().await {
            self.run_batch(batch).await;
        }
        if let Some(connection) = self.connection.take()
            && let Err(error) = connection.close().await
        {
            tracing::warn!(error = %error, "closing the ledger writer connection failed");
        }
        tracing::info!("ledger writer stopped");
    }

    async fn run_batch(&mut self, batch: Vec<Command>) {
        let commands = batch.len();
        if self.connection.is_none() {
            match self.options.connect().await {
                Ok(connection) => self.connection = Some(connection),
                Err(error) => {
                    tracing::error!(error = %error, "ledger writer cannot reopen its connection");
                    self.shared.audit_writable.store(false, Ordering::Release);
                    let error = Arc::new(error);
                    for command in batch {
                        command
                            .into_failed(LedgerError::Storage(error.clone()))
                            .deliver();
                    }
                    return;
                }
            }
        }
        let connection = self
            .connection
            .as_mut()
            .expect("connection was just opened");
        match execute_batch(connection, batch, &self.shared).await {
            BatchResult::Committed {
                pending,
                audit_appended,
            } => {
                if audit_appended {
                    self.shared.audit_writable.store(true, Ordering::Release);
                }
                self.shared
                    .batches_committed
                    .fetch_add(1, Ordering::Relaxed);
                self.shared
                    .commands_committed
                    .fetch_add(commands as u64, Ordering::Relaxed);
                // Wake a waiting relay, and leave a permit for one that is not waiting yet.
                self.shared.commits.notify_waiters();
                self.shared.commits.notify_one();
                tracing::debug!(commands, "ledger batch committed");
                for reply in pending {
                    reply.deliver();
                }
            }
            BatchResult::Aborted { pending, error } => {
                tracing::error!(error = %error, commands, "ledger batch rolled back");
                self.shared.audit_writable.store(false, Ordering::Release);
                self.shared.batches_aborted.fetch_add(1, Ordering::Relaxed);
                if let Some(connection) = self.connection.take() {
                    let _ = connection.close().await;
                }
                for reply in pending {
                    reply.fail(LedgerError::Storage(error.clone()));
                }
            }
        }
    }
}

async fn execute_batch(
    connection: &mut SqliteConnection,
    batch: Vec<Command>,
    shared: &Shared,
) -> BatchResult {
    let mut pending = Vec::with_capacity(batch.len());
    // IMMEDIATE takes the write lock now, so no statement of the batch can hit SQLITE_BUSY
    // half-way through.
    let mut transaction = match connection.begin_with("BEGIN IMMEDIATE").await {
        Ok(transaction) => transaction,
        Err(error) => {
            let error = Arc::new(error);
            pending.extend(
                batch
                    .into_iter()
                    .map(|command| command.into_failed(LedgerError::Storage(error.clone()))),
            );
            return BatchResult::Aborted { pending, error };
        }
    };
    let entries_before: i64 = match sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM entries")
        .fetch_one(&mut *transaction)
        .await
    {
        Ok(id) => id,
        Err(error) => {
            let error = Arc::new(error);
            pending.extend(
                batch
                    .into_iter()
                    .map(|command| command.into_failed(LedgerError::Storage(error.clone()))),
            );
            return BatchResult::Aborted { pending, error };
        }
    };

    // After a failure the trail is marked unwritable, and the policy refuses transfers while
    // it is. Probe it at the start of the next batch so a recovered volume is seen as
    // writable before anything is decided, not one refused transfer later.
    if !shared.audit_writable.load(Ordering::Acquire)
        && countersign_audit::sqlite::probe_writable(&mut transaction)
            .await
            .is_ok()
    {
        shared.audit_writable.store(true, Ordering::Release);
    }

    let mut expected = EntryTotals::new();
    let mut audit_appended = false;
    let mut abort: Option<Arc<sqlx::Error>> = None;
    for command in batch {
        if let Some(error) = &abort {
            pending.push(command.into_failed(LedgerError::Storage(error.clone())));
            continue;
        }
        let mut savepoint = match Connection::begin(&mut *transaction).await {
            Ok(savepoint) => savepoint,
            Err(error) => {
                let error = Arc::new(error);
                pending.push(command.into_failed(LedgerError::Storage(error.clone())));
                abort = Some(error);
                continue;
            }
        };
        let mut effects = CommandEffects::default();
        let (reply, succeeded) = command.execute(&mut savepoint, shared, &mut effects).await;
        // If SQLite rolled the whole transaction back on its own (disk full, I/O error), the
        // savepoint no longer exists and closing it fails: then nothing of the batch can be
        // trusted and it is aborted as a whole.
        let closed = if succeeded {
            savepoint.commit().await
        } else {
            savepoint.rollback().await
        };
        match closed {
            Ok(()) if succeeded => {
                for (currency, minor_units) in effects.postings {
                    let totals = expected.entry(currency.code()).or_default();
                    totals.0 += i128::from(minor_units);
                    totals.1 += i128::from(minor_units);
                }
                audit_appended |= effects.audit_appended;
            }
            Ok(()) => {}
            Err(error) => abort = Some(Arc::new(error)),
        }
        pending.push(reply);
    }

    if abort.is_none() {
        // Read back what the batch wrote, before it becomes durable: the entries must be
        // exactly the postings we made, and balance per currency.
        match entry_totals_after(&mut transaction, entries_before).await {
            Ok(written) => {
                assert_eq!(
                    written, expected,
                    "ledger invariant broken: entries written by the batch differ from its postings"
                );
                for (currency, (debits, credits)) in &written {
                    assert_eq!(
                        debits, credits,
                        "ledger invariant broken: batch debits != credits in {currency}"
                    );
                }
            }
            Err(error) => abort = Some(Arc::new(error)),
        }
    }
    if let Some(error) = abort {
        if let Err(rollback_error) = transaction.rollback().await {
            tracing::error!(error = %rollback_error, "rolling back an aborted ledger batch failed");
        }
        return BatchResult::Aborted { pending, error };
    }
    match transaction.commit().await {
        Ok(()) => BatchResult::Committed {
            pending,
            audit_appended,
        },
        Err(error) => BatchResult::Aborted {
            pending,
            error: Arc::new(error),
        },
    }
}

async fn entry_totals_after(
    connection: &mut SqliteConnection,
    entries_before: i64,
) -> Result<EntryTotals, sqlx::Error> {
    let rows = sqlx::query("SELECT currency, direction, amount_minor FROM entries WHERE id > ?")
        .bind(entries_before)
        .fetch_all(&mut *connection)
        .await?;
    let mut totals = EntryTotals::new();
    for row in rows {
        let currency: String = row.try_get("currency")?;
        let direction: String = row.try_get("direction")?;
        let amount_minor: i64 = row.try_get("amount_minor")?;
        let currency = Currency::parse(&currency)
            .unwrap_or_else(|_| panic!("ledger wrote an entry with unknown currency {currency}"));
        let totals = totals.entry(currency.code()).or_default();
        match direction.as_str() {
            "debit" => totals.0 += i128::from(amount_minor),
            "credit" => totals.1 += i128::from(amount_minor),
            other => panic!("ledger wrote an entry with direction {other}"),
        }
    }
    Ok(totals)
}

async fn execute_transfer(
    connection: &mut SqliteConnection,
    command: TransferCommand,
    shared: &Shared,
    effects: &mut CommandEffects,
) -> Result<TransferOutcome, LedgerError> {
    let TransferCommand {
        transfer_id,
        debit_account,
        credit_account,
        amount,
        end_to_end_id,
        purpose,
        remittance_info,
        initiator_fingerprint,
        initiator_common_name,
        idempotency,
        decide,
    } = command;

    // (1) A key seen before: replay (same request) or conflict (different request).
    if let Some(stored) =
        rows::load_idempotency(connection, &idempotency.scope, &idempotency.key).await?
    {
        if stored.request_hash != idempotency.request_hash {
            return Err(LedgerError::IdempotencyConflict {
                scope: idempotency.scope,
                key: idempotency.key,
            });
        }
        return Ok(TransferOutcome::Replayed(stored));
    }
    if transfer_exists(connection, transfer_id).await? {
        return Err(LedgerError::TransferExists(transfer_id));
    }

    // (2) Fresh state on the writer connection: earlier commands of this batch are visible.
    let now = OffsetDateTime::now_utc();
    let business_date = now.date();
    let debit = rows::load_account_state(connection, &debit_account, business_date)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(debit_account.clone()))?;
    let credit = rows::load_account_state(connection, &credit_account, business_date)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(credit_account.clone()))?;
    let context = DecisionContext {
        debit,
        credit,
        audit_writable: shared.audit_writable.load(Ordering::Acquire),
        now,
    };

    // (3) The policy decides on exactly the state we are about to post against.
    let Verdict {
        allow,
        reasons,
        approval,
        decision_record,
    } = run_decide(decide, &context)?;
    let decision_id = decision_record.decision_id;
    let provenance = Provenance::of(&decision_record);

    // (4) The decision is audited whatever happens next.
    append_audit(connection, vec![decision_record], shared, effects).await?;

    // (5) The ledger keeps its own rules even when the policy allowed: funds held for other
    // transfers awaiting approval are not available.
    let outcome = if !allow {
        tracing::info!(%transfer_id, %decision_id, decision = "deny", "transfer denied by policy");
        TransferOutcome::Denied {
            decision_id,
            reasons,
        }
    } else {
        let refusals = ledger_refusals(
            &context.debit.account,
            &context.credit.account,
            amount,
            context.debit.reserved_minor,
        );
        if let (true, Some(requirement)) = (refusals.is_empty(), approval) {
            // (5a) Held for approval: reserve, don't post.
            let request = ApprovalRequest {
                id: Uuid::now_v7(),
                transfer_id,
                debit_account,
                credit_account,
                amount,
                end_to_end_id,
                purpose,
                remittance_info,
                initiation_decision_id: decision_id,
                initiator_fingerprint,
                initiator_common_name,
                approvals_required: requirement.approvals_required,
                approver_roles: requirement.approver_roles,
                status: ApprovalStatus::Pending,
                created_at: now,
                expires_at: rows::to_milliseconds(requirement.expires_at),
                resolved_at: None,
                resolution_decision_id: None,
                events: Vec::new(),
            };
            rows::insert_approval_request(connection, &request).await?;
            let record = reservation_record(&request, provenance, now);
            append_audit(connection, vec![record], shared, effects).await?;
            tracing::info!(%transfer_id, %decision_id, decision = "pending", "transfer held for approval");
            TransferOutcome::Pending {
                request,
                decision_id,
            }
        } else if refusals.is_empty() {
            let transfer = Transfer {
                id: transfer_id,
                debit_account,
                credit_account,
                amount,
                end_to_end_id,
                purpose,
                remittance_info,
                decision_id,
                initiator_fingerprint,
                business_date,
                posted_at: now,
            };
            post(
                connection,
                &transfer,
                &context.debit.account,
                &context.credit.account,
                effects,
            )
            .await?;
            let record = posting_record(&transfer, provenance, None, now);
            append_audit(connection, vec![record], shared, effects).await?;
            tracing::info!(%transfer_id, %decision_id, decision = "allow", "transfer posted");
            TransferOutcome::Posted {
                transfer,
                decision_id,
            }
        } else {
            tracing::warn!(
                %transfer_id,
                %decision_id,
                reason = refusals[0].code,
                "policy allowed a transfer the ledger refuses"
            );
            TransferOutcome::Denied {
                decision_id,
                reasons: refusals
                    .into_iter()
                    .map(|refusal| Reason::new(refusal.code, refusal.message))
                    .collect(),
            }
        }
    };

    // (6) Remember the outcome for replays of the same key.
    insert_idempotency(connection, &idempotency, &outcome, now).await?;
    Ok(outcome)
}

async fn append_audit(
    connection: &mut SqliteConnection,
    records: Vec<NewRecord>,
    shared: &Shared,
    effects: &mut CommandEffects,
) -> Result<Vec<SealedRecord>, LedgerError> {
    match countersign_audit::sqlite::append(connection, records).await {
        Ok(sealed) => {
            effects.audit_appended = true;
            Ok(sealed)
        }
        Err(error) => {
            // Only a database failure means the trail is not writable; a malformed record
            // (too large, too deep) is the caller's bug and says nothing about the store.
            if matches!(error, AuditError::Database(_)) {
                shared.audit_writable.store(false, Ordering::Release);
            }
            tracing::error!(error = %error, "audit append failed");
            Err(error.into())
        }
    }
}

/// Writes the transfer, its two entries and both balances. Callers have checked
/// `ledger_refusals` is empty, so every check here that fails is a programmer error.
async fn post(
    connection: &mut SqliteConnection,
    transfer: &Transfer,
    debit: &Account,
    credit: &Account,
    effects: &mut CommandEffects,
) -> Result<(), LedgerError> {
    let amount_minor = transfer.amount.minor_units();
    let currency = transfer.amount.currency();
    assert!(debit.id != credit.id, "posting to the same account");
    assert!(
        debit.currency == currency && credit.currency == currency,
        "posting across currencies"
    );
    let debit_after = debit
        .balance_minor
        .checked_sub(amount_minor)
        .expect("debit balance overflow was refused before posting");
    let credit_after = credit
        .balance_minor
        .checked_add(amount_minor)
        .expect("credit balance overflow was refused before posting");
    assert!(
        debit_after >= 0 || debit.overdraft_allowed,
        "overdraft was refused before posting"
    );

    let posted_at = format_timestamp(transfer.posted_at);
    let business_date = format_date(transfer.business_date);
    sqlx::query(
        "INSERT INTO transfers (id, debit_account, credit_account, amount_minor, currency, \
         end_to_end_id, purpose, remittance_info, decision_id, initiator_fingerprint, \
         business_date, posted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(transfer.id.to_string())
    .bind(transfer.debit_account.as_str())
    .bind(transfer.credit_account.as_str())
    .bind(amount_minor)
    .bind(currency.code())
    .bind(transfer.end_to_end_id.as_deref())
    .bind(transfer.purpose.as_deref())
    .bind(transfer.remittance_info.as_deref())
    .bind(transfer.decision_id.to_string())
    .bind(&transfer.initiator_fingerprint)
    .bind(&business_date)
    .bind(&posted_at)
    .execute(&mut *connection)
    .await?;

    for (account, direction, balance_before, balance_after) in [
        (debit, "debit", debit.balance_minor, debit_after),
        (credit, "credit", credit.balance_minor, credit_after),
    ] {
        // `balance_minor = before` turns "nobody else changed this balance since we read it"
        // from an assumption into a check.
        let stored: Option<i64> = sqlx::query_scalar(
            "UPDATE accounts SET balance_minor = ?, updated_at = ? \
             WHERE id = ? AND balance_minor = ? RETURNING balance_minor",
        )
        .bind(balance_after)
        .bind(&posted_at)
        .bind(account.id.as_str())
        .bind(balance_before)
        .fetch_optional(&mut *connection)
        .await?;
        assert_eq!(
            stored,
            Some(balance_after),
            "ledger invariant broken: balance of {} changed under the writer",
            account.id.masked()
        );
        sqlx::query(
            "INSERT INTO entries (transfer_id, account_id, direction, amount_minor, currency, \
             balance_after_minor, business_date) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(transfer.id.to_string())
        .bind(account.id.as_str())
        .bind(direction)
        .bind(amount_minor)
        .bind(currency.code())
        .bind(balance_after)
        .bind(&business_date)
        .execute(&mut *connection)
        .await?;
    }
    effects.postings.push((currency, amount_minor));
    Ok(())
}

async fn transfer_exists(
    connection: &mut SqliteConnection,
    transfer_id: Uuid,
) -> Result<bool, LedgerError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM transfers WHERE id = ?")
        .bind(transfer_id.to_string())
        .fetch_optional(&mut *connection)
        .await?;
    Ok(found.is_some())
}

async fn insert_idempotency(
    connection: &mut SqliteConnection,
    claim: &IdempotencyClaim,
    outcome: &TransferOutcome,
    now: OffsetDateTime,
) -> Result<(), LedgerError> {
    let (stored_outcome, transfer_id, approval_id, decision_id, reasons) = match outcome {
        TransferOutcome::Posted {
            transfer,
            decision_id,
        } => (
            IdempotencyOutcome::Posted,
            Some(transfer.id.to_string()),
            None,
            decision_id,
            &[][..],
        ),
        TransferOutcome::Pending {
            request,
            decision_id,
        } => (
            IdempotencyOutcome::Pending,
            None,
            Some(request.id.to_string()),
            decision_id,
            &[][..],
        ),
        TransferOutcome::Denied {
            decision_id,
            reasons,
        } => (
            IdempotencyOutcome::Denied,
            None,
            None,
            decision_id,
            &reasons[..],
        ),
        TransferOutcome::Replayed(_) => unreachable!("a replay writes nothing"),
    };
    let reasons_json = serde_json::to_string(reasons).expect("reasons serialise to JSON");
    sqlx::query(
        "INSERT INTO idempotency (scope, key, request_hash, outcome, transfer_id, approval_id, \
         decision_id, reasons_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&claim.scope)
    .bind(&claim.key)
    .bind(&claim.request_hash[..])
    .bind(stored_outcome.as_str())
    .bind(transfer_id)
    .bind(approval_id)
    .bind(decision_id.to_string())
    .bind(reasons_json)
    .bind(format_timestamp(now))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

async fn execute_create_account(
    connection: &mut SqliteConnection,
    account: NewAccount,
    audit_record: NewRecord,
    shared: &Shared,
    effects: &mut CommandEffects,
) -> Result<Account, LedgerError> {
    if rows::load_account(connection, &account.id).await?.is_some() {
        return Err(LedgerError::AccountExists(account.id));
    }
    let now = OffsetDateTime::now_utc();
    let timestamp = format_timestamp(now);
    sqlx::query(
        "INSERT INTO accounts (id, currency, status, overdraft_allowed, balance_minor, \
         created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
    )
    .bind(account.id.as_str())
    .bind(account.currency.code())
    .bind(account.status.as_str())
    .bind(account.overdraft_allowed)
    .bind(&timestamp)
    .bind(&timestamp)
    .execute(&mut *connection)
    .await?;
    append_audit(connection, vec![audit_record], shared, effects).await?;
    tracing::info!(account = %account.id.masked(), currency = %account.currency, "account created");
    // Read back rather than echo the input: the caller gets what is stored.
    rows::load_account(connection, &account.id)
        .await?
        .ok_or_else(|| LedgerError::CorruptRow("account vanished after insert".to_owned()))
}

async fn execute_set_account_status(
    connection: &mut SqliteConnection,
    id: &AccountId,
    status: AccountStatus,
    audit_record: NewRecord,
    shared: &Shared,
    effects: &mut CommandEffects,
) -> Result<Account, LedgerError> {
    let account = rows::load_account(connection, id)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(id.clone()))?;
    // Closed is terminal: a closed account's number must never receive money again.
    if account.status == AccountStatus::Closed && status != AccountStatus::Closed {
        return Err(LedgerError::Refused {
            reason_code: reason_codes::ACCOUNT_CLOSED,
        });
    }
    // Closing with money on it would strand that money outside every active account.
    if status == AccountStatus::Closed && account.balance_minor != 0 {
        return Err(LedgerError::Refused {
            reason_code: reason_codes::BALANCE_NOT_ZERO,
        });
    }
    sqlx::query("UPDATE accounts SET status = ?, updated_at = ? WHERE id = ?")
        .bind(status.as_str())
        .bind(format_timestamp(OffsetDateTime::now_utc()))
        .bind(id.as_str())
        .execute(&mut *connection)
        .await?;
    append_audit(connection, vec![audit_record], shared, effects).await?;
    tracing::info!(account = %id.masked(), status = status.as_str(), "account status changed");
    rows::load_account(connection, id)
        .await?
        .ok_or_else(|| LedgerError::CorruptRow("account vanished after update".to_owned()))
}

async fn execute_seed(
    connection: &mut SqliteConnection,
    seed: SeedTransfer,
    shared: &Shared,
    effects: &mut CommandEffects,
) -> Result<Transfer, LedgerError> {
    if transfer_exists(connection, seed.transfer_id).await? {
        return Err(LedgerError::TransferExists(seed.transfer_id));
    }
    let debit = rows::load_account(connection, &seed.debit_account)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(seed.debit_account.clone()))?;
    let credit = rows::load_account(connection, &seed.credit_account)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(seed.credit_account.clone()))?;
    let reserved_minor = rows::reserved_minor(connection, &seed.debit_account).await?;
    if let Some(refusal) = ledger_refusals(&debit, &credit, seed.amount, reserved_minor).first() {
        return Err(LedgerError::Refused {
            reason_code: refusal.code,
        });
    }

    let now = OffsetDateTime::now_utc();
    let decision_id = Uuid::now_v7();
    let masked_input = json!({
        "debit_account": seed.debit_account.masked(),
        "credit_account": seed.credit_account.masked(),
        "amount": seed.amount.to_decimal_string(),
        "currency": seed.amount.currency().code(),
    });
    let decision_record = NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Decision,
        decision_id,
        timestamp: now,
        subject: Subject {
            fingerprint_sha256: SYSTEM_SUBJECT.to_owned(),
            common_name: Some(SYSTEM_SUBJECT.to_owned()),
            roles: vec![SYSTEM_SUBJECT.to_owned()],
        },
        source_address: SYSTEM_SUBJECT.to_owned(),
        action: "ledger.seed".to_owned(),
        masked_input,
        result: json!({ "allow": true, "reasons": [], "note": "system posting without policy" }),
        bundle_revision: NO_POLICY_BUNDLE.to_owned(),
        outcome: Outcome::Allow,
        redaction: Default::default(),
        sealed_input: None,
    };
    let provenance = Provenance::of(&decision_record);
    append_audit(connection, vec![decision_record], shared, effects).await?;

    let transfer = Transfer {
        id: seed.transfer_id,
        debit_account: seed.debit_account,
        credit_account: seed.credit_account,
        amount: seed.amount,
        end_to_end_id: None,
        purpose: None,
        remittance_info: seed.remittance_info,
        decision_id,
        initiator_fingerprint: SYSTEM_SUBJECT.to_owned(),
        business_date: now.date(),
        posted_at: now,
    };
    post(connection, &transfer, &debit, &credit, effects).await?;
    let record = posting_record(&transfer, provenance, None, now);
    append_audit(connection, vec![record], shared, effects).await?;
    tracing::info!(transfer_id = %transfer.id, %decision_id, "seed transfer posted");
    Ok(transfer)
}

/// An approve or reject: the policy decides on the locked request and fresh balances; the
/// shared plan (`rules::plan_approval`) says what changes.
async fn execute_approval(
    connection: &mut SqliteConnection,
    command: ApprovalCommand,
    shared: &Shared,
    effects: &mut CommandEffects,
) -> Result<ApprovalOutcome, LedgerError> {
    let ApprovalCommand {
        transfer_id,
        debit_account,
        credit_account,
        action,
        approver_fingerprint,
        approver_common_name,
        comment,
        decide,
    } = command;
    let mut request = rows::load_approval(connection, transfer_id)
        .await?
        .ok_or(LedgerError::ApprovalNotFound(transfer_id))?;
    if request.debit_account != debit_account || request.credit_account != credit_account {
        return Err(LedgerError::DecisionFailed(
            "the approval command names other accounts than the held transfer".to_owned(),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let mut records = Vec::new();
    if request.status == ApprovalStatus::Pending && request.is_expired_at(now) {
        // Expired before the sweeper got to it: expire it here, in this transaction, so an
        // approval can never win against a timeout that already passed.
        records.push(expire(&mut request, now));
        rows::resolve_approval(connection, &request).await?;
    }
    let business_date = now.date();
    let debit = rows::load_account_state(connection, &debit_account, business_date)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(debit_account.clone()))?;
    let credit = rows::load_account_state(connection, &credit_account, business_date)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(credit_account.clone()))?;
    let (debit_row, credit_row) = (debit.account.clone(), credit.account.clone());
    let context = ApprovalContext {
        request,
        debit,
        credit,
        audit_writable: shared.audit_writable.load(Ordering::Acquire),
        now,
    };
    let verdict = run_approval_decide(decide, &context)?;
    let plan = plan_approval(
        ApprovalStep {
            action,
            approver_fingerprint,
            approver_common_name,
            comment,
        },
        context,
        verdict,
    );
    let request = plan.outcome.request();
    if let Some(event) = &plan.event {
        rows::insert_approval_event(connection, request.id, event).await?;
    }
    if plan.resolves {
        rows::resolve_approval(connection, request).await?;
    }
    if let Some(transfer) = &plan.posting {
        post(connection, transfer, &debit_row, &credit_row, effects).await?;
    }
    records.extend(plan.records);
    append_audit(connection, records, shared, effects).await?;
    Ok(plan.outcome)
}

async fn execute_expire(
    connection: &mut SqliteConnection,
    limit: u32,
    shared: &Shared,
    effects: &mut CommandEffects,
) -> Result<Vec<ApprovalRequest>, LedgerError> {
    let now = OffsetDateTime::now_utc();
    let mut due = rows::due_approvals(connection, now, limit).await?;
    let mut records = Vec::with_capacity(due.len());
    for request in &mut due {
        records.push(expire(request, now));
        rows::resolve_approval(connection, request).await?;
    }
    if !records.is_empty() {
        append_audit(connection, records, shared, effects).await?;
        tracing::info!(expired = due.len(), "held transfers expired");
    }
    Ok(due)
}
