//! Storage of the ledger: the [`LedgerStore`] trait, its embedded SQLite implementation, the
//! PostgreSQL implementation ([`PgStore`]) and [`Store`], which holds either.

mod any;
mod invariants;
mod postgres;
mod rows;
mod rules;
mod schema;
mod sqlite;
mod writer;

use std::future::Future;

use countersign_audit::{NewRecord, SealedRecord};
use serde::{Deserialize, Serialize};
use time::Date;
use uuid::Uuid;

pub use any::Store;
pub use invariants::{CurrencyTotals, INVARIANT_VIOLATIONS_REPORTED_MAX, InvariantReport};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use writer::{NO_POLICY_BUNDLE, SYSTEM_SUBJECT};

use crate::account::{Account, AccountId, AccountState, AccountStatus, NewAccount};
use crate::error::LedgerError;
use crate::transfer::{
    SeedTransfer, StoredIdempotency, Transfer, TransferCommand, TransferOutcome,
};

/// Decimals of a currency the ledger knows, for the audit index's amount column (the audit
/// crate parses decimal amounts with it, so it needs no currency table of its own).
pub(crate) fn currency_exponent(code: &str) -> Option<u8> {
    crate::money::Currency::parse(code)
        .ok()
        .map(|currency| currency.minor_units())
}

/// Bounds of the store. Every queue and batch is bounded; the unit is the last word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreLimits {
    /// Commands waiting for the writer. A full queue makes callers wait (backpressure) for up
    /// to `enqueue_timeout_ms`, then fail with `LedgerError::Overloaded`.
    pub queue_commands_max: usize,
    /// Commands committed together in one transaction (group commit), first one included.
    pub batch_commands_max: usize,
    /// How long a caller waits for room in a full queue.
    pub enqueue_timeout_ms: u64,
    /// Connections of the read pool (reads never wait for the writer: WAL).
    pub read_connections_max: u32,
    /// SQLite busy timeout, for readers meeting a checkpoint and a second process. On
    /// PostgreSQL: how long a reader waits for a pooled connection (and a connect attempt).
    pub busy_timeout_ms: u64,
    /// PostgreSQL only: undelivered Kafka outbox rows at which `outbox_full_policy` applies.
    pub outbox_rows_max: u64,
    /// PostgreSQL only: what transfers do while the outbox is full.
    pub outbox_full_policy: OutboxFullPolicy,
}

/// What happens to transfers while the Kafka outbox holds `outbox_rows_max` or more
/// undelivered records (the broker or the relay is down).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxFullPolicy {
    /// Refuse transfers with `LedgerError::OutboxFull` until the backlog drains: the stream
    /// never lags the ledger by more than the bound.
    Refuse,
    /// Keep serving and log a warning: the database keeps the records, the stream lags.
    #[default]
    Serve,
}

/// How a store is opened (not limits: switches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreOptions {
    /// PostgreSQL: apply the embedded migrations on open. Needs a role that owns the schema;
    /// a gateway logging in as a `countersign_app` member sets this false and runs
    /// `Store::migrate` separately. (SQLite always creates its schema.)
    pub migrate_on_start: bool,
    /// PostgreSQL: write a Kafka outbox row with every audit record. Off when no Kafka relay
    /// is configured, so the outbox does not grow without a reader.
    pub outbox_enabled: bool,
    /// PostgreSQL: run a sealer that competes for the sealer lock. Every gateway replica
    /// does (the one holding the lock also streams to Kafka); tools that only read or seed
    /// the database set it false so they never take the lead from a replica.
    pub sealer_enabled: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            migrate_on_start: true,
            outbox_enabled: true,
            sealer_enabled: true,
        }
    }
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            queue_commands_max: 1024,
            batch_commands_max: 128,
            enqueue_timeout_ms: 2_000,
            read_connections_max: 4,
            busy_timeout_ms: 5_000,
            outbox_rows_max: 1_000_000,
            outbox_full_policy: OutboxFullPolicy::Serve,
        }
    }
}

/// Counters of the writer task (monotonic since open, except `queued_commands`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Commands waiting in the queue right now.
    pub queued_commands: usize,
    pub batches_committed: u64,
    /// Commands answered from committed batches (including ones that failed alone).
    pub commands_committed: u64,
    /// Batches rolled back as a whole (storage failure); each caller got `Storage`.
    pub batches_aborted: u64,
}

/// What the gateway needs from a ledger. Futures are `Send` so handlers can be spawned.
///
/// All writes (`submit_transfer`, `create_account`, `seed_transfer`, `append_audit`) are
/// serialised by the store and durable when they return `Ok`; reads see committed data only.
pub trait LedgerStore: Send + Sync {
    /// Decides and (if allowed) posts a transfer, atomically with its audit records and
    /// idempotency row. See [`TransferCommand`] for the order of steps.
    fn submit_transfer(
        &self,
        command: TransferCommand,
    ) -> impl Future<Output = Result<TransferOutcome, LedgerError>> + Send;

    /// Creates an account with balance 0, appending `audit_record` in the same transaction.
    fn create_account(
        &self,
        account: NewAccount,
        audit_record: NewRecord,
    ) -> impl Future<Output = Result<Account, LedgerError>> + Send;

    /// Freezes, unfreezes or closes an account, appending `audit_record` in the same
    /// transaction. A closed account stays closed; only a zero balance can be closed.
    fn set_account_status(
        &self,
        id: &AccountId,
        status: AccountStatus,
        audit_record: NewRecord,
    ) -> impl Future<Output = Result<Account, LedgerError>> + Send;

    /// A system posting without policy (dev/demo funding); audited as a `ledger.seed`
    /// decision by subject "system" plus a posting record.
    fn seed_transfer(
        &self,
        seed: SeedTransfer,
    ) -> impl Future<Output = Result<Transfer, LedgerError>> + Send;

    /// Appends audit records that belong to no ledger write (a request refused before it
    /// reached the ledger). The only way to append besides the commands above: the hash
    /// chain must be extended by the writer alone.
    fn append_audit(
        &self,
        records: Vec<NewRecord>,
    ) -> impl Future<Output = Result<Vec<SealedRecord>, LedgerError>> + Send;

    fn account(
        &self,
        id: &AccountId,
    ) -> impl Future<Output = Result<Option<Account>, LedgerError>> + Send;

    fn account_state(
        &self,
        id: &AccountId,
        business_date: Date,
    ) -> impl Future<Output = Result<Option<AccountState>, LedgerError>> + Send;

    fn transfer(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<Transfer>, LedgerError>> + Send;

    fn idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<StoredIdempotency>, LedgerError>> + Send;

    fn check_invariants(&self)
    -> impl Future<Output = Result<InvariantReport, LedgerError>> + Send;

    /// False after an audit write failed, until a commit with audit records succeeds.
    fn audit_writable(&self) -> bool;

    /// Stops accepting commands, runs the queued ones, then returns.
    fn shutdown(&self) -> impl Future<Output = Result<(), LedgerError>> + Send;
}
