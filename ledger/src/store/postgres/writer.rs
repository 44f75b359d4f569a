//! The PostgreSQL writer task of one replica: group commit, like the SQLite writer.
//!
//! Each replica has one writer with one connection. It takes the first queued command plus
//! whatever is already queued (up to `batch_commands_max`), and runs them in ONE transaction:
//! - At batch start it locks every account the batch names, `ORDER BY id FOR UPDATE`. Every
//!   replica locks in the same (id) order, so two batches on different replicas wait for each
//!   other instead of deadlocking, and the state a command reads after that is the committed
//!   state no other replica can change before our COMMIT.
//! - Each command runs in its own SAVEPOINT: a command that fails is rolled back alone.
//! - Replies are sent after COMMIT; if COMMIT fails, every caller of the batch gets `Storage`.
//!
//! - Before the account locks it takes a transaction-level advisory lock per idempotency key
//!   of the batch, in sorted order on every replica, so two batches holding each other's keys
//!   wait instead of deadlocking on the `idempotency` primary key.
//!
//! Across replicas, an idempotency key is single-use because of the primary key of
//! `idempotency`: a second replica inserting the same key waits for the first transaction,
//! then fails with a unique violation; its savepoint (decision record included) is rolled
//! back and it answers with the stored row (replay, or conflict if the request differs).
//!
//! Held transfers (maker-checker): an approve/reject names its request's accounts, which are
//! locked at batch start like a transfer's, then locks the request row (`FOR UPDATE`); a
//! concurrent step on another replica waits and then sees the outcome. Expiry locks only the
//! due requests (`FOR UPDATE SKIP LOCKED`, no account locks: releasing a reservation only
//! makes funds available), so it never waits in a lock cycle with a batch.
//!
//! `batch_commands_max = 1` gives one transaction per transfer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use countersign_audit::{AuditError, NewRecord, Outcome, RecordKind, Subject};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::rows::{self, to_microseconds};
use crate::account::{Account, AccountId, AccountStatus, NewAccount};
use crate::approval::{
    ApprovalCommand, ApprovalContext, ApprovalOutcome, ApprovalRequest, ApprovalStatus,
};
use crate::error::LedgerError;
use crate::money::Currency;
use crate::store::rules::{
    ApprovalStep, Provenance, expire, ledger_refusals, plan_approval, posting_record,
    reservation_record, run_approval_decide, run_decide,
};
use crate::store::writer::{
    Command, CommandQueue, NO_POLICY_BUNDLE, Reply, SYSTEM_SUBJECT, Shared,
};
use crate::transfer::{
    DecisionContext, IdempotencyClaim, IdempotencyOutcome, Reason, SeedTransfer, Transfer,
    TransferCommand, TransferOutcome, Verdict, reason_codes,
};

/// First wait before reconnecting after the writer lost its connection; doubles per failure.
const RECONNECT_BACKOFF_MS_MIN: u64 = 100;
/// Longest wait between reconnect attempts. While waiting, commands fail at once with
/// `Storage` (the gateway answers 503) instead of piling up behind a dead database.
const RECONNECT_BACKOFF_MS_MAX: u64 = 2_000;
/// Longest one connect attempt may take.
pub(crate) const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Longest one batch may take, end to end. Past it the connection is dropped (the server
/// rolls the transaction back unless COMMIT was already under way) and the callers get
/// `Storage`; a retry with the same idempotency key is safe either way.
const BATCH_TIMEOUT_MS: u64 = 30_000;

/// Session settings of the writer connection. `lock_timeout` bounds a wait for account rows
/// another replica holds; `idle_in_transaction_session_timeout` frees rows a hung replica
/// holds, so one stuck process cannot block the others forever.
pub(crate) const WRITER_SESSION_OPTIONS: [(&str, &str); 2] = [
    ("lock_timeout", "10s"),
    ("idle_in_transaction_session_timeout", "60s"),
];

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
        // A caller that went away does not undo its command; a retry replays it.
        let _ = self.reply.send(self.result);
    }

    fn fail(self: Box<Self>, error: LedgerError) {
        let _ = self.reply.send(Err(error));
    }
}

fn pending<T: Send + 'static>(reply: Reply<T>, result: Result<T, LedgerError>) -> Box<dyn Deliver> {
    Box::new(Pending { reply, result })
}

fn into_failed(command: Command, error: LedgerError) -> Box<dyn Deliver> {
    match command {
        Command::Transfer { reply, .. } => pending(reply, Err(error)),
        Command::CreateAccount { reply, .. } => pending(reply, Err(error)),
        Command::Seed { reply, .. } => pending(reply, Err(error)),
        Command::AppendAudit { reply, .. } => pending(reply, Err(error)),
        Command::SetAccountStatus { reply, .. } => pending(reply, Err(error)),
        Command::Approval { reply, .. } => pending(reply, Err(error)),
        Command::ExpireApprovals { reply, .. } => pending(reply, Err(error)),
    }
}

/// The accounts a command reads or writes, locked at batch start.
fn touched_accounts(command: &Command, into: &mut Vec<String>) {
    match command {
        Command::Transfer { command, .. } => {
            into.push(command.debit_account.as_str().to_owned());
            into.push(command.credit_account.as_str().to_owned());
        }
        Command::Seed { seed, .. } => {
            into.push(seed.debit_account.as_str().to_owned());
            into.push(seed.credit_account.as_str().to_owned());
        }
        Command::CreateAccount { account, .. } => into.push(account.id.as_str().to_owned()),
        Command::SetAccountStatus { account, .. } => into.push(account.as_str().to_owned()),
        // The request's accounts as the caller read them (immutable; the writer checks them
        // against the locked request): an approval may post.
        Command::Approval { command, .. } => {
            into.push(command.debit_account.as_str().to_owned());
            into.push(command.credit_account.as_str().to_owned());
        }
        // Expiry only releases reservations (makes more funds available), so it needs no
        // account lock: it locks the requests alone, skipping ones another replica holds.
        Command::AppendAudit { .. } | Command::ExpireApprovals { .. } => {}
    }
}

/// Advisory-lock namespace (first key of the two-key form) of idempotency keys.
const IDEMPOTENCY_LOCK_NAMESPACE: i32 = 0x4353_4b31; // "CSK1"

/// The idempotency keys of a batch's transfers as advisory-lock keys, sorted and unique.
/// FNV-1a (32 bit) over scope, a separator and key: stable across builds, so every replica
/// maps a key to the same lock. A collision only makes two unrelated keys wait for each other.
fn idempotency_lock_keys(batch: &[Command]) -> Vec<i32> {
    let mut keys: Vec<i32> = batch
        .iter()
        .filter_map(|command| match command {
            Command::Transfer { command, .. } => Some(&command.idempotency),
            _ => None,
        })
        .map(|claim| {
            let mut hash: u32 = 0x811c_9dc5;
            for byte in claim
                .scope
                .bytes()
                .chain(std::iter::once(0))
                .chain(claim.key.bytes())
            {
                hash ^= u32::from(byte);
                hash = hash.wrapping_mul(0x0100_0193);
            }
            i32::from_ne_bytes(hash.to_ne_bytes())
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// What one command wrote, counted only once its savepoint is released.
#[derive(Default)]
struct CommandEffects {
    /// (transfer id, currency, minor units) of each posting.
    postings: Vec<(Uuid, Currency, i64)>,
    audit_appended: bool,
}

/// Debit and credit totals per currency code, in i128 so a batch can never overflow them.
type EntryTotals = BTreeMap<&'static str, (i128, i128)>;

/// How one command ended inside its savepoint.
enum Executed {
    Done {
        reply: Box<dyn Deliver>,
        succeeded: bool,
    },
    /// Another replica committed this idempotency key while we ran: answer from its row after
    /// rolling our savepoint back.
    IdempotencyRace {
        claim: IdempotencyClaim,
        reply: Reply<TransferOutcome>,
        error: LedgerError,
    },
}

struct Context<'a> {
    shared: &'a Shared,
    outbox_enabled: bool,
}

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

pub(crate) struct PgWriter {
    options: PgConnectOptions,
    /// `None` after a failed batch or a lost connection; reopened with backoff.
    connection: Option<PgConnection>,
    batch_commands_max: usize,
    outbox_enabled: bool,
    shared: Arc<Shared>,
    reconnect_backoff_ms: u64,
    /// While set and in the future, commands fail at once with the last connect error.
    reconnect_not_before: Option<(Instant, Arc<sqlx::Error>)>,
}

impl PgWriter {
    pub(crate) fn new(
        options: PgConnectOptions,
        connection: PgConnection,
        batch_commands_max: usize,
        outbox_enabled: bool,
        shared: Arc<Shared>,
    ) -> PgWriter {
        assert!(
            batch_commands_max > 0,
            "batch_commands_max must be at least 1"
        );
        PgWriter {
            options,
            connection: Some(connection),
            batch_commands_max,
            outbox_enabled,
            shared,
            reconnect_backoff_ms: RECONNECT_BACKOFF_MS_MIN,
            reconnect_not_before: None,
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

    /// The connection, reopened if needed; `Err` (the connect error) while PostgreSQL is
    /// unreachable, without a new attempt before the backoff has passed.
    async fn connection(&mut self) -> Result<&mut PgConnection, Arc<sqlx::Error>> {
        if self.connection.is_none() {
            if let Some((not_before, error)) = &self.reconnect_not_before
                && Instant::now() < *not_before
            {
                return Err(error.clone());
            }
            let connect = self.options.connect();
            let connected = match tokio::time::timeout(
                Duration::from_millis(CONNECT_TIMEOUT_MS),
                connect,
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(sqlx::Error::PoolTimedOut),
            };
            match connected {
                Ok(connection) => {
                    tracing::info!("ledger writer reconnected");
                    self.connection = Some(connection);
                    self.reconnect_backoff_ms = RECONNECT_BACKOFF_MS_MIN;
                    self.reconnect_not_before = None;
                }
                Err(error) => {
                    tracing::error!(error = %error, "ledger writer cannot reach PostgreSQL");
                    let error = Arc::new(error);
                    self.reconnect_not_before = Some((
                        Instant::now() + Duration::from_millis(self.reconnect_backoff_ms),
                        error.clone(),
                    ));
                    self.reconnect_backoff_ms =
                        (self.reconnect_backoff_ms * 2).min(RECONNECT_BACKOFF_MS_MAX);
                    return Err(error);
                }
            }
        }
        match self.connection.as_mut() {
            Some(connection) => Ok(connection),
            None => Err(Arc::new(sqlx::Error::PoolClosed)),
        }
    }

    async fn run_batch(&mut self, batch: Vec<Command>) {
        let commands = batch.len();
        let shared = self.shared.clone();
        let outbox_enabled = self.outbox_enabled;
        let connection = match self.connection().await {
            Ok(connection) => connection,
            Err(error) => {
                shared.audit_writable.store(false, Ordering::Release);
                for command in batch {
                    into_failed(command, LedgerError::Storage(error.clone())).deliver();
                }
                return;
            }
        };
        let context = Context {
            shared: &shared,
            outbox_enabled,
        };
        // If the batch times out its future is dropped with the replies inside it: those
        // callers see a closed reply channel, which `PgStore` reports as `Storage`.
        let result = tokio::time::timeout(
            Duration::from_millis(BATCH_TIMEOUT_MS),
            execute_batch(connection, batch, &context),
        )
        .await;
        match result {
            Ok(BatchResult::Committed {
                pending,
                audit_appended,
            }) => {
                if audit_appended {
                    shared.audit_writable.store(true, Ordering::Release);
                }
                shared.batches_committed.fetch_add(1, Ordering::Relaxed);
                shared
                    .commands_committed
                    .fetch_add(commands as u64, Ordering::Relaxed);
                // Wakes the sealer of this replica.
                shared.commits.notify_waiters();
                shared.commits.notify_one();
                for reply in pending {
                    reply.deliver();
                }
            }
            Ok(BatchResult::Aborted { pending, error }) => {
                tracing::error!(error = %error, commands, "ledger batch rolled back");
                shared.audit_writable.store(false, Ordering::Release);
                shared.batches_aborted.fetch_add(1, Ordering::Relaxed);
                self.drop_connection().await;
                for reply in pending {
                    reply.fail(LedgerError::Storage(error.clone()));
                }
            }
            Err(_) => {
                tracing::error!(
                    commands,
                    batch_timeout_ms = BATCH_TIMEOUT_MS,
                    "ledger batch timed out"
                );
                shared.audit_writable.store(false, Ordering::Release);
                shared.batches_aborted.fetch_add(1, Ordering::Relaxed);
                // Not closed politely: the connection is in an unknown state mid-protocol.
                self.connection = None;
            }
        }
    }

    async fn drop_connection(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = tokio::time::timeout(
                Duration::from_millis(CONNECT_TIMEOUT_MS),
                connection.close(),
            )
            .await;
        }
    }
}

fn abort_all(
    mut pending: Vec<Box<dyn Deliver>>,
    batch: Vec<Command>,
    error: sqlx::Error,
) -> BatchResult {
    let error = Arc::new(error);
    pending.extend(
        batch
            .into_iter()
            .map(|command| into_failed(command, LedgerError::Storage(error.clone()))),
    );
    BatchResult::Aborted { pending, error }
}

async fn execute_batch(
    connection: &mut PgConnection,
    batch: Vec<Command>,
    context: &Context<'_>,
) -> BatchResult {
    let mut pending = Vec::with_capacity(batch.len());
    let mut transaction = match connection.begin().await {
        Ok(transaction) => transaction,
        Err(error) => return abort_all(pending, batch, error),
    };

    // Idempotency keys first, in sorted order on every replica. Without this, two replicas'
    // batches holding each other's keys would deadlock on the primary key of `idempotency`
    // (each waits for the other's uncommitted insert). Held until COMMIT.
    let lock_keys = idempotency_lock_keys(&batch);
    if !lock_keys.is_empty() {
        let locked = sqlx::query(
            "SELECT pg_advisory_xact_lock($1, key) \
             FROM unnest($2::int4[]) WITH ORDINALITY AS keys(key, position) ORDER BY position",
        )
        .bind(IDEMPOTENCY_LOCK_NAMESPACE)
        .bind(&lock_keys)
        .fetch_all(&mut *transaction)
        .await;
        if let Err(error) = locked {
            return abort_all(pending, batch, error);
        }
    }

    let mut accounts = Vec::with_capacity(batch.len() * 2);
    for command in &batch {
        touched_accounts(command, &mut accounts);
    }
    accounts.sort_unstable();
    accounts.dedup();
    if !accounts.is_empty() {
        // Fixed (id) order on every replica: no deadlocks between batches. Rows that do not
        // exist yet (accounts being created) are not locked; their insert is guarded by the
        // primary key instead.
        let locked =
            sqlx::query("SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&accounts)
                .fetch_all(&mut *transaction)
                .await;
        if let Err(error) = locked {
            return abort_all(pending, batch, error);
        }
    }

    // After a failure the trail is marked unwritable (a policy can refuse on it). Probe it at
    // batch start so a recovered database is seen as writable before anything is decided.
    if !context.shared.audit_writable.load(Ordering::Acquire)
        && countersign_audit::postgres::probe_writable(&mut transaction)
            .await
            .is_ok()
    {
        context.shared.audit_writable.store(true, Ordering::Release);
    }

    let mut expected = EntryTotals::new();
    let mut posted_transfers = Vec::new();
    let mut audit_appended = false;
    let mut abort: Option<Arc<sqlx::Error>> = None;
    for command in batch {
        if let Some(error) = &abort {
            pending.push(into_failed(command, LedgerError::Storage(error.clone())));
            continue;
        }
        let mut savepoint = match Connection::begin(&mut *transaction).await {
            Ok(savepoint) => savepoint,
            Err(error) => {
                let error = Arc::new(error);
                pending.push(into_failed(command, LedgerError::Storage(error.clone())));
                abort = Some(error);
                continue;
            }
        };
        let mut effects = CommandEffects::default();
        let executed = execute(command, &mut savepoint, context, &mut effects).await;
        let (reply, succeeded) = match executed {
            Executed::Done { reply, succeeded } => (reply, succeeded),
            Executed::IdempotencyRace {
                claim,
                reply,
                error,
            } => {
                if let Err(rollback_error) = savepoint.rollback().await {
                    let error = Arc::new(rollback_error);
                    pending.push(self::pending(
                        reply,
                        Err(LedgerError::Storage(error.clone())),
                    ));
                    abort = Some(error);
                    continue;
                }
                let result = replay_race(&mut transaction, claim, error).await;
                pending.push(self::pending(reply, result));
                continue;
            }
        };
        let closed = if succeeded {
            savepoint.commit().await
        } else {
            savepoint.rollback().await
        };
        match closed {
            Ok(()) if succeeded => {
                for (transfer_id, currency, minor_units) in effects.postings {
                    let totals = expected.entry(currency.code()).or_default();
                    totals.0 += i128::from(minor_units);
                    totals.1 += i128::from(minor_units);
                    posted_transfers.push(transfer_id);
                }
                audit_appended |= effects.audit_appended;
            }
            Ok(()) => {}
            Err(error) => abort = Some(Arc::new(error)),
        }
        pending.push(reply);
    }

    if abort.is_none() && !posted_transfers.is_empty() {
        // Read back what the batch wrote, before it becomes durable: the entries must be
        // exactly the postings we made, and balance per currency.
        match entry_totals_of(&mut transaction, &posted_transfers).await {
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

/// Answers a transfer whose idempotency key another replica committed first.
async fn replay_race(
    connection: &mut PgConnection,
    claim: IdempotencyClaim,
    error: LedgerError,
) -> Result<TransferOutcome, LedgerError> {
    match rows::load_idempotency(connection, &claim.scope, &claim.key).await? {
        Some(stored) if stored.request_hash == claim.request_hash => {
            tracing::info!(idempotency_key = %claim.key, "idempotency key committed by another replica; replayed");
            Ok(TransferOutcome::Replayed(stored))
        }
        Some(_) => Err(LedgerError::IdempotencyConflict {
            scope: claim.scope,
            key: claim.key,
        }),
        // The other transaction rolled back after all: report the original failure; a retry
        // will post.
        None => Err(error),
    }
}

async fn entry_totals_of(
    connection: &mut PgConnection,
    transfer_ids: &[Uuid],
) -> Result<EntryTotals, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT currency, direction, amount_minor FROM entries WHERE transfer_id = ANY($1)",
    )
    .bind(transfer_ids)
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

fn is_unique_violation(error: &LedgerError, constraint: &str) -> bool {
    let LedgerError::Storage(error) = error else {
        return false;
    };
    match error.as_database_error() {
        Some(database) => {
            database.is_unique_violation() && database.constraint() == Some(constraint)
        }
        None => false,
    }
}

async fn execute(
    command: Command,
    connection: &mut PgConnection,
    context: &Context<'_>,
    effects: &mut CommandEffects,
) -> Executed {
    fn done<T: Send + 'static>(reply: Reply<T>, result: Result<T, LedgerError>) -> Executed {
        let succeeded = result.is_ok();
        Executed::Done {
            reply: pending(reply, result),
            succeeded,
        }
    }
    match command {
        Command::Transfer { command, reply } => {
            let claim = command.idempotency.clone();
            let transfer_id = command.transfer_id;
            match execute_transfer(connection, command, context, effects).await {
                Err(error) if is_unique_violation(&error, "idempotency_pkey") => {
                    Executed::IdempotencyRace {
                        claim,
                        reply,
                        error,
                    }
                }
                Err(error) if is_unique_violation(&error, "transfers_pkey") => {
                    done(reply, Err(LedgerError::TransferExists(transfer_id)))
                }
                result => done(reply, result),
            }
        }
        Command::CreateAccount {
            account,
            audit_record,
            reply,
        } => {
            let id = account.id.clone();
            let result =
                match execute_create_account(connection, account, audit_record, context, effects)
                    .await
                {
                    Err(error) if is_unique_violation(&error, "accounts_pkey") => {
                        Err(LedgerError::AccountExists(id))
                    }
                    result => result,
                };
            done(reply, result)
        }
        Command::Seed { seed, reply } => {
            let transfer_id = seed.transfer_id;
            let result = match execute_seed(connection, seed, context, effects).await {
                Err(error) if is_unique_violation(&error, "transfers_pkey") => {
                    Err(LedgerError::TransferExists(transfer_id))
                }
                result => result,
            };
            done(reply, result)
        }
        Command::AppendAudit { records, reply } => {
            let keyed = records
                .into_iter()
                .map(|record| {
                    let key = countersign_audit::postgres::subject_key(&record);
                    (record, key)
                })
                .collect();
            let result = append_audit(connection, keyed, context, effects)
                .await
                // Sealed later by the sealer: the caller learns only that they are durable.
                .map(|_| Vec::new());
            done(reply, result)
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
                context,
                effects,
            )
            .await;
            done(reply, result)
        }
        Command::Approval { command, reply } => {
            let result = execute_approval(connection, command, context, effects).await;
            done(reply, result)
        }
        Command::ExpireApprovals { limit, reply } => {
            let result = execute_expire(connection, limit, context, effects).await;
            done(reply, result)
        }
    }
}

async fn append_audit(
    connection: &mut PgConnection,
    records: Vec<(NewRecord, String)>,
    context: &Context<'_>,
    effects: &mut CommandEffects,
) -> Result<usize, LedgerError> {
    match countersign_audit::postgres::append(connection, records, context.outbox_enabled).await {
        Ok(appended) => {
            effects.audit_appended = true;
            Ok(appended)
        }
        Err(error) => {
            // Only a database failure means the trail is not writable; a malformed record is
            // the caller's bug and says nothing about the store.
            if matches!(error, AuditError::Database(_)) {
                context
                    .shared
                    .audit_writable
                    .store(false, Ordering::Release);
            }
            tracing::error!(error = %error, "audit append failed");
            Err(error.into())
        }
    }
}

async fn execute_transfer(
    connection: &mut PgConnection,
    command: TransferCommand,
    context: &Context<'_>,
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

    // (1) A key seen before (by any replica): replay or conflict.
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
    // A reused transfer id is caught by the primary key of `transfers` (mapped to
    // `TransferExists` in `execute`, savepoint rolled back): no lookup per transfer.

    // (2) Fresh state: the rows are locked by this batch, earlier commands of it are visible.
    let now = to_microseconds(OffsetDateTime::now_utc());
    let business_date = now.date();
    let debit = rows::load_account_state(connection, &debit_account, business_date)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(debit_account.clone()))?;
    let credit = rows::load_account_state(connection, &credit_account, business_date)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(credit_account.clone()))?;
    let decision_context = DecisionContext {
        debit,
        credit,
        audit_writable: context.shared.audit_writable.load(Ordering::Acquire),
        now,
    };

    // (3) The policy decides on exactly the state we are about to post against.
    let Verdict {
        allow,
        reasons,
        approval,
        decision_record,
    } = run_decide(decide, &decision_context)?;
    let decision_id = decision_record.decision_id;
    let provenance = Provenance::of(&decision_record);
    let key = debit_account.as_str().to_owned();

    // (4) The decision is audited whatever happens next: it goes into the trail with the
    // posting record (one round trip), or alone when nothing is posted. The savepoint makes
    // the two one unit either way.
    let mut records = vec![(decision_record, key.clone())];

    // (5) The ledger keeps its own rules even when the policy allowed.
    let outcome = if !allow {
        tracing::info!(%transfer_id, %decision_id, decision = "deny", "transfer denied by policy");
        TransferOutcome::Denied {
            decision_id,
            reasons,
        }
    } else {
        // Funds held for other transfers awaiting approval are not available.
        let refusals = ledger_refusals(
            &decision_context.debit.account,
            &decision_context.credit.account,
            amount,
            decision_context.debit.reserved_minor,
        );
        if let (true, Some(requirement)) = (refusals.is_empty(), approval) {
            // Held for approval: reserve, don't post.
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
                expires_at: to_microseconds(requirement.expires_at),
                resolved_at: None,
                resolution_decision_id: None,
                events: Vec::new(),
            };
            rows::insert_approval_request(connection, &request).await?;
            records.push((reservation_record(&request, provenance, now), key));
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
                &decision_context.debit.account,
                &decision_context.credit.account,
                effects,
            )
            .await?;
            records.push((posting_record(&transfer, provenance, None, now), key));
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

    append_audit(connection, records, context, effects).await?;

    // (6) Remember the outcome for replays of the same key (the primary key makes it
    // single-use across replicas; see the module docs).
    insert_idempotency(connection, &idempotency, &outcome, now).await?;
    Ok(outcome)
}

/// Writes the transfer, its two entries and both balances. Callers have checked
/// `ledger_refusals` is empty, so every check here that fails is a programmer error.
async fn post(
    connection: &mut PgConnection,
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

    sqlx::query(
        "INSERT INTO transfers (id, debit_account, credit_account, amount_minor, currency, \
         end_to_end_id, purpose, remittance_info, decision_id, initiator_fingerprint, \
         business_date, posted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(transfer.id)
    .bind(transfer.debit_account.as_str())
    .bind(transfer.credit_account.as_str())
    .bind(amount_minor)
    .bind(currency.code())
    .bind(transfer.end_to_end_id.as_deref())
    .bind(transfer.purpose.as_deref())
    .bind(transfer.remittance_info.as_deref())
    .bind(transfer.decision_id)
    .bind(&transfer.initiator_fingerprint)
    .bind(transfer.business_date)
    .bind(transfer.posted_at)
    .execute(&mut *connection)
    .await?;

    // Both balances in one statement (one round trip). The batch holds the row locks, so
    // `balance_minor = before` can only fail on a bug (or a writer that does not lock): a
    // check, not an assumption.
    let updated: Vec<(String, i64)> = sqlx::query_as(
        "UPDATE accounts AS a SET balance_minor = v.after, updated_at = $1 \
         FROM (VALUES ($2::text, $3::int8, $4::int8), ($5::text, $6::int8, $7::int8)) \
              AS v (id, before, after) \
         WHERE a.id = v.id AND a.balance_minor = v.before \
         RETURNING a.id, a.balance_minor",
    )
    .bind(transfer.posted_at)
    .bind(debit.id.as_str())
    .bind(debit.balance_minor)
    .bind(debit_after)
    .bind(credit.id.as_str())
    .bind(credit.balance_minor)
    .bind(credit_after)
    .fetch_all(&mut *connection)
    .await?;
    for (account, balance_after) in [(debit, debit_after), (credit, credit_after)] {
        assert!(
            updated
                .iter()
                .any(|(id, balance)| id == account.id.as_str() && *balance == balance_after),
            "ledger invariant broken: balance of {} changed under the writer",
            account.id.masked()
        );
    }
    // Both entries in one statement (one round trip).
    sqlx::query(
        "INSERT INTO entries (transfer_id, account_id, direction, amount_minor, currency, \
         balance_after_minor, business_date) \
         VALUES ($1, $2, 'debit', $4, $5, $6, $8), ($1, $3, 'credit', $4, $5, $7, $8)",
    )
    .bind(transfer.id)
    .bind(debit.id.as_str())
    .bind(credit.id.as_str())
    .bind(amount_minor)
    .bind(currency.code())
    .bind(debit_after)
    .bind(credit_after)
    .bind(transfer.business_date)
    .execute(&mut *connection)
    .await?;
    effects.postings.push((transfer.id, currency, amount_minor));
    Ok(())
}

async fn insert_idempotency(
    connection: &mut PgConnection,
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
            Some(transfer.id),
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
            Some(request.id),
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
         decision_id, reasons_json, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&claim.scope)
    .bind(&claim.key)
    .bind(&claim.request_hash[..])
    .bind(stored_outcome.as_str())
    .bind(transfer_id)
    .bind(approval_id)
    .bind(*decision_id)
    .bind(reasons_json)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

async fn execute_create_account(
    connection: &mut PgConnection,
    account: NewAccount,
    audit_record: NewRecord,
    context: &Context<'_>,
    effects: &mut CommandEffects,
) -> Result<Account, LedgerError> {
    if rows::load_account(connection, &account.id).await?.is_some() {
        return Err(LedgerError::AccountExists(account.id));
    }
    let now = to_microseconds(OffsetDateTime::now_utc());
    sqlx::query(
        "INSERT INTO accounts (id, currency, status, overdraft_allowed, balance_minor, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, 0, $5, $5)",
    )
    .bind(account.id.as_str())
    .bind(account.currency.code())
    .bind(account.status.as_str())
    .bind(account.overdraft_allowed)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    let key = account.id.as_str().to_owned();
    append_audit(connection, vec![(audit_record, key)], context, effects).await?;
    tracing::info!(account = %account.id.masked(), currency = %account.currency, "account created");
    rows::load_account(connection, &account.id)
        .await?
        .ok_or_else(|| LedgerError::CorruptRow("account vanished after insert".to_owned()))
}

async fn execute_set_account_status(
    connection: &mut PgConnection,
    id: &AccountId,
    status: AccountStatus,
    audit_record: NewRecord,
    context: &Context<'_>,
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
    sqlx::query("UPDATE accounts SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status.as_str())
        .bind(to_microseconds(OffsetDateTime::now_utc()))
        .bind(id.as_str())
        .execute(&mut *connection)
        .await?;
    let key = id.as_str().to_owned();
    append_audit(connection, vec![(audit_record, key)], context, effects).await?;
    tracing::info!(account = %id.masked(), status = status.as_str(), "account status changed");
    rows::load_account(connection, id)
        .await?
        .ok_or_else(|| LedgerError::CorruptRow("account vanished after update".to_owned()))
}

async fn execute_seed(
    connection: &mut PgConnection,
    seed: SeedTransfer,
    context: &Context<'_>,
    effects: &mut CommandEffects,
) -> Result<Transfer, LedgerError> {
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

    let now = to_microseconds(OffsetDateTime::now_utc());
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
    let key = seed.debit_account.as_str().to_owned();
    append_audit(
        connection,
        vec![(decision_record, key.clone())],
        context,
        effects,
    )
    .await?;

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
    append_audit(connection, vec![(record, key)], context, effects).await?;
    tracing::info!(transfer_id = %transfer.id, %decision_id, "seed transfer posted");
    Ok(transfer)
}

/// An approve or reject: the accounts are locked (batch start), then the request (`FOR
/// UPDATE`): a concurrent step or expiry on another replica waits for our COMMIT and then
/// sees the outcome. The policy decides on the locked request and fresh balances; the shared
/// plan (`rules::plan_approval`) says what changes.
async fn execute_approval(
    connection: &mut PgConnection,
    command: ApprovalCommand,
    context: &Context<'_>,
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
    let mut request = rows::load_approval(connection, transfer_id, true)
        .await?
        .ok_or(LedgerError::ApprovalNotFound(transfer_id))?;
    if request.debit_account != debit_account || request.credit_account != credit_account {
        return Err(LedgerError::DecisionFailed(
            "the approval command names other accounts than the held transfer".to_owned(),
        ));
    }
    let key = debit_account.as_str().to_owned();
    let now = to_microseconds(OffsetDateTime::now_utc());
    let mut records = Vec::new();
    if request.status == ApprovalStatus::Pending && request.is_expired_at(now) {
        // Expired before a sweeper got to it: expire it here, in this transaction, so an
        // approval can never win against a timeout that already passed.
        records.push((expire(&mut request, now), key.clone()));
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
    let approval_context = ApprovalContext {
        request,
        debit,
        credit,
        audit_writable: context.shared.audit_writable.load(Ordering::Acquire),
        now,
    };
    let verdict = run_approval_decide(decide, &approval_context)?;
    let plan = plan_approval(
        ApprovalStep {
            action,
            approver_fingerprint,
            approver_common_name,
            comment,
        },
        approval_context,
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
    records.extend(plan.records.into_iter().map(|record| (record, key.clone())));
    append_audit(connection, records, context, effects).await?;
    Ok(plan.outcome)
}

async fn execute_expire(
    connection: &mut PgConnection,
    limit: u32,
    context: &Context<'_>,
    effects: &mut CommandEffects,
) -> Result<Vec<ApprovalRequest>, LedgerError> {
    let now = to_microseconds(OffsetDateTime::now_utc());
    let mut due = rows::lock_due_approvals(connection, now, limit).await?;
    let mut records = Vec::with_capacity(due.len());
    for request in &mut due {
        let record = expire(request, now);
        rows::resolve_approval(connection, request).await?;
        records.push((record, request.debit_account.as_str().to_owned()));
    }
    if !records.is_empty() {
        append_audit(connection, records, context, effects).await?;
        tracing::info!(expired = due.len(), "held transfers expired");
    }
    Ok(due)
}
