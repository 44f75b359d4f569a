//! [`Store`]: the one type the gateway holds, whichever back end the configuration names.
//! Each method delegates to the back end; behaviour is the same by contract and by the shared
//! test suite (`ledger/tests`), which runs against every back end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use countersign_audit::checkpoint::{Checkpoint, CheckpointSigner, CheckpointVerifier};
use countersign_audit::index::{
    self, AuditQuery, CheckpointsReport, IndexStep, StatsBucket, StatsRow,
};
use countersign_audit::inputs::{self, InputLookup};
use countersign_audit::merkle::{Hash, NodeId};
use countersign_audit::{ChainHead, NewRecord, OutboxItem, SealedRecord};
use time::{Date, OffsetDateTime};
use tokio::sync::Notify;
use uuid::Uuid;

use super::postgres::{self, PgStore};
use super::{InvariantReport, SqliteStore, StoreLimits, StoreOptions, WriterStats};
use crate::account::{Account, AccountId, AccountState, AccountStatus, NewAccount};
use crate::approval::{ApprovalCommand, ApprovalOutcome, ApprovalQuery, ApprovalRequest};
use crate::error::LedgerError;
use crate::transfer::{
    SeedTransfer, StoredIdempotency, Transfer, TransferCommand, TransferOutcome,
};

/// A ledger and audit store: embedded SQLite or (in production) PostgreSQL.
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.backend())
    }
}

/// Runs the same expression on whichever back end `$store` holds.
macro_rules! on_backend {
    ($store:expr, $inner:ident => $body:expr) => {
        match $store {
            Store::Sqlite($inner) => $body,
            Store::Postgres($inner) => $body,
        }
    };
}

impl Store {
    /// Opens the store a URL names: `postgres://...` / `postgresql://...`, otherwise
    /// `sqlite://path` (or a bare path). With default [`StoreOptions`]: PostgreSQL is migrated
    /// on open and writes the outbox.
    pub async fn open(url: &str, limits: StoreLimits) -> Result<Store, LedgerError> {
        Store::open_with(url, limits, StoreOptions::default()).await
    }

    /// [`Store::open`] with explicit options (`migrate_on_start`, `outbox_enabled`; both
    /// only matter on PostgreSQL).
    pub async fn open_with(
        url: &str,
        limits: StoreLimits,
        options: StoreOptions,
    ) -> Result<Store, LedgerError> {
        if postgres::is_postgres_url(url) {
            Ok(Store::Postgres(PgStore::open(url, limits, options).await?))
        } else {
            Ok(Store::Sqlite(SqliteStore::open(url, limits).await?))
        }
    }

    /// Creates or upgrades the schema of the database `url` names. PostgreSQL: applies the
    /// embedded migrations (`ledger/migrations`); run it as the schema owner. SQLite creates
    /// its schema on every open, so this opens and closes the file.
    pub async fn migrate(url: &str) -> Result<(), LedgerError> {
        if postgres::is_postgres_url(url) {
            postgres::migrate(url).await
        } else {
            SqliteStore::open(url, StoreLimits::default())
                .await?
                .shutdown()
                .await
        }
    }

    /// The last sequence removed by a retention prune (0 if none; SQLite never prunes): the
    /// sealed chain starts after it.
    pub async fn pruned_through(&self) -> Result<i64, LedgerError> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Postgres(store) => Ok(countersign_audit::retention::latest_anchor(store.pool())
                .await?
                .map_or(0, |anchor| anchor.pruned_through)),
        }
    }

    /// `"sqlite"` or `"postgres"`, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn submit_transfer(
        &self,
        command: TransferCommand,
    ) -> Result<TransferOutcome, LedgerError> {
        on_backend!(self, store => store.submit_transfer(command).await)
    }

    pub async fn create_account(
        &self,
        account: NewAccount,
        audit_record: NewRecord,
    ) -> Result<Account, LedgerError> {
        on_backend!(self, store => store.create_account(account, audit_record).await)
    }

    pub async fn set_account_status(
        &self,
        id: &AccountId,
        status: AccountStatus,
        audit_record: NewRecord,
    ) -> Result<Account, LedgerError> {
        on_backend!(self, store => store.set_account_status(id, status, audit_record).await)
    }

    pub async fn seed_transfer(&self, seed: SeedTransfer) -> Result<Transfer, LedgerError> {
        on_backend!(self, store => store.seed_transfer(seed).await)
    }

    /// Approves or rejects a held transfer: a policy decision on the locked request and fresh
    /// balances, plus the ledger's own four-eyes rules (see [`crate::approval`]). Exactly one
    /// outcome wins against concurrent approvals, rejections and expiry.
    pub async fn submit_approval(
        &self,
        command: ApprovalCommand,
    ) -> Result<ApprovalOutcome, LedgerError> {
        on_backend!(self, store => store.submit_approval(command).await)
    }

    /// Expires up to `limit` held transfers whose time ran out (releasing their
    /// reservations, one release record each); returns them. Safe on several replicas.
    pub async fn expire_approvals(&self, limit: u32) -> Result<Vec<ApprovalRequest>, LedgerError> {
        on_backend!(self, store => store.expire_approvals(limit).await)
    }

    /// The approval request of held transfer `transfer_id`, with its history.
    pub async fn approval(
        &self,
        transfer_id: Uuid,
    ) -> Result<Option<ApprovalRequest>, LedgerError> {
        on_backend!(self, store => store.approval(transfer_id).await)
    }

    /// The approval request with approval id `id`, with its history.
    pub async fn approval_by_id(&self, id: Uuid) -> Result<Option<ApprovalRequest>, LedgerError> {
        on_backend!(self, store => store.approval_by_id(id).await)
    }

    /// Approval requests matching `query`, oldest first.
    pub async fn approvals(
        &self,
        query: &ApprovalQuery,
    ) -> Result<Vec<ApprovalRequest>, LedgerError> {
        on_backend!(self, store => store.approvals(query).await)
    }

    /// Appends audit records that belong to no ledger write; durable when it returns.
    /// Returns how many were appended. (Records get their place in the chain at once on
    /// SQLite, and from the sealer shortly after on PostgreSQL.)
    pub async fn append_audit(&self, records: Vec<NewRecord>) -> Result<usize, LedgerError> {
        match self {
            Store::Sqlite(store) => store.append_audit(records).await.map(|sealed| sealed.len()),
            Store::Postgres(store) => store.append_audit(records).await,
        }
    }

    pub async fn check_audit_writable(&self) -> bool {
        on_backend!(self, store => store.check_audit_writable().await)
    }

    pub async fn account(&self, id: &AccountId) -> Result<Option<Account>, LedgerError> {
        on_backend!(self, store => store.account(id).await)
    }

    pub async fn account_state(
        &self,
        id: &AccountId,
        business_date: Date,
    ) -> Result<Option<AccountState>, LedgerError> {
        on_backend!(self, store => store.account_state(id, business_date).await)
    }

    pub async fn transfer(&self, id: Uuid) -> Result<Option<Transfer>, LedgerError> {
        on_backend!(self, store => store.transfer(id).await)
    }

    pub async fn idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredIdempotency>, LedgerError> {
        on_backend!(self, store => store.idempotency(scope, key).await)
    }

    pub async fn check_invariants(&self) -> Result<InvariantReport, LedgerError> {
        on_backend!(self, store => store.check_invariants().await)
    }

    /// Sealed audit records after `sequence`, in order, at most `limit` (clamped).
    pub async fn read_sealed_after(
        &self,
        sequence: i64,
        limit: i64,
    ) -> Result<Vec<SealedRecord>, LedgerError> {
        match self {
            Store::Sqlite(store) => {
                Ok(countersign_audit::sqlite::read_after(store.pool(), sequence, limit).await?)
            }
            Store::Postgres(store) => store.read_sealed_after(sequence, limit).await,
        }
    }

    /// The last sealed record, if any.
    pub async fn audit_head(&self) -> Result<Option<ChainHead>, LedgerError> {
        match self {
            Store::Sqlite(store) => Ok(countersign_audit::sqlite::head(store.pool()).await?),
            Store::Postgres(store) => store.audit_head().await,
        }
    }

    /// How many records the trail holds (sealed; on PostgreSQL unsealed ones are not counted).
    pub async fn audit_count(&self) -> Result<i64, LedgerError> {
        match self {
            Store::Sqlite(store) => Ok(countersign_audit::sqlite::count(store.pool()).await?),
            Store::Postgres(store) => store.audit_count().await,
        }
    }

    // ---- The auditors' workspace (countersign_audit::index): derived from the sealed chain.

    /// Sealed, indexed records matching `query`, ascending by sequence (keyset: `after`,
    /// `limit`). Only indexed records are found; the indexer follows the seal within a batch.
    pub async fn audit_query(&self, query: &AuditQuery) -> Result<Vec<SealedRecord>, LedgerError> {
        Ok(match self {
            Store::Sqlite(store) => index::sqlite::query(store.pool(), query).await?,
            Store::Postgres(store) => index::postgres::query(store.pool(), query).await?,
        })
    }

    /// The sealed record with `record_id` (indexed or not).
    pub async fn audit_record(&self, record_id: Uuid) -> Result<Option<SealedRecord>, LedgerError> {
        Ok(match self {
            Store::Sqlite(store) => index::sqlite::record(store.pool(), record_id).await?,
            Store::Postgres(store) => index::postgres::record(store.pool(), record_id).await?,
        })
    }

    /// The sealed (encrypted) input stored with `record_id`, if any (`[audit.encryption]`).
    pub async fn audit_input(&self, record_id: Uuid) -> Result<InputLookup, LedgerError> {
        Ok(match self {
            Store::Sqlite(store) => {
                let mut connection = store.pool().acquire().await?;
                inputs::lookup_sqlite(&mut connection, record_id).await?
            }
            Store::Postgres(store) => {
                let mut connection = store.pool().acquire().await?;
                inputs::lookup_postgres(&mut connection, record_id).await?
            }
        })
    }

    /// Decision records by outcome per `bucket` over `[floor(from), to)`, one row per bucket.
    pub async fn audit_stats(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        bucket: StatsBucket,
    ) -> Result<Vec<StatsRow>, LedgerError> {
        Ok(match self {
            Store::Sqlite(store) => index::sqlite::stats(store.pool(), from, to, bucket).await?,
            Store::Postgres(store) => {
                index::postgres::stats(store.pool(), from, to, bucket).await?
            }
        })
    }

    /// The Merkle nodes `ids` (level 0 = leaf hashes, from the chain); absent ids are not
    /// stored (yet). At most `countersign_audit::index::NODE_IDS_MAX` per call.
    pub async fn merkle_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, LedgerError> {
        Ok(match self {
            Store::Sqlite(store) => index::sqlite::merkle_nodes(store.pool(), ids).await?,
            Store::Postgres(store) => index::postgres::merkle_nodes(store.pool(), ids).await?,
        })
    }

    /// Leaves in the Merkle tree so far (the indexer's cursor).
    pub async fn indexed_size(&self) -> Result<u64, LedgerError> {
        Ok(match self {
            Store::Sqlite(store) => index::sqlite::indexed_size(store.pool()).await?,
            Store::Postgres(store) => index::postgres::indexed_size(store.pool()).await?,
        })
    }

    /// Checkpoints with `tree_size > after_tree_size`, ascending, at most `limit` (clamped
    /// to `countersign_audit::index::CHECKPOINTS_PAGE_MAX`).
    pub async fn checkpoints(
        &self,
        after_tree_size: u64,
        limit: u32,
    ) -> Result<Vec<Checkpoint>, LedgerError> {
        Ok(match self {
            Store::Sqlite(store) => {
                index::sqlite::checkpoints(store.pool(), after_tree_size, limit).await?
            }
            Store::Postgres(store) => {
                index::postgres::checkpoints(store.pool(), after_tree_size, limit).await?
            }
        })
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, LedgerError> {
        Ok(match self {
            Store::Sqlite(store) => index::sqlite::latest_checkpoint(store.pool()).await?,
            Store::Postgres(store) => index::postgres::latest_checkpoint(store.pool()).await?,
        })
    }

    /// The smallest checkpoint with `tree_size >= tree_size`.
    pub async fn checkpoint_covering(
        &self,
        tree_size: u64,
    ) -> Result<Option<Checkpoint>, LedgerError> {
        Ok(match self {
            Store::Sqlite(store) => {
                index::sqlite::checkpoint_covering(store.pool(), tree_size).await?
            }
            Store::Postgres(store) => {
                index::postgres::checkpoint_covering(store.pool(), tree_size).await?
            }
        })
    }

    /// Signs and stores a checkpoint at the current indexed size (`None` if the tree is
    /// empty; the existing one if that size is checkpointed already). Used by export.
    pub async fn write_checkpoint_now(
        &self,
        signer: &CheckpointSigner,
    ) -> Result<Option<Checkpoint>, LedgerError> {
        on_backend!(self, store => store.write_checkpoint_now(signer).await)
    }

    /// One indexer step: up to `batch_records_max` sealed records into the tree and the
    /// index, in one transaction (see `countersign_audit::index`).
    pub async fn audit_index_step(&self, batch_records_max: u32) -> Result<IndexStep, LedgerError> {
        on_backend!(self, store => store.audit_index_step(batch_records_max).await)
    }

    /// Verifies every checkpoint (signature, root from the chain and from the stored nodes,
    /// consistency with the previous one) and every stored node against the chain's leaves.
    /// Tampering is a finding in the report.
    pub async fn verify_checkpoints(
        &self,
        verifier: &CheckpointVerifier,
    ) -> Result<CheckpointsReport, LedgerError> {
        Ok(match self {
            Store::Sqlite(store) => {
                index::sqlite::verify_checkpoints(store.pool(), verifier).await?
            }
            Store::Postgres(store) => {
                index::postgres::verify_checkpoints(store.pool(), verifier).await?
            }
        })
    }

    /// Re-derives every hash of the chain from the stored columns (PostgreSQL: the sealed
    /// part of the chain).
    pub async fn verify_audit(&self) -> Result<countersign_audit::VerifyReport, LedgerError> {
        match self {
            Store::Sqlite(store) => Ok(countersign_audit::sqlite::verify(store.pool()).await?),
            Store::Postgres(store) => store.verify_audit().await,
        }
    }

    /// Waits until every audit record committed before the call is sealed into the chain, at
    /// most `timeout`; `Ok(false)` on timeout. SQLite seals on append: always `Ok(true)`.
    pub async fn wait_sealed(&self, timeout: Duration) -> Result<bool, LedgerError> {
        match self {
            Store::Sqlite(_) => Ok(true),
            Store::Postgres(store) => store.wait_sealed(timeout).await,
        }
    }

    /// Sealed, undelivered Kafka outbox items in chain order, at most `limit` (clamped).
    /// SQLite has no outbox: `LedgerError::Unsupported`.
    pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<OutboxItem>, LedgerError> {
        match self {
            Store::Sqlite(_) => Err(unsupported("outbox_pending")),
            Store::Postgres(store) => store.outbox_pending(limit).await,
        }
    }

    /// Marks outbox items delivered; returns how many changed. SQLite: `Unsupported`.
    pub async fn outbox_mark_delivered(&self, record_ids: &[Uuid]) -> Result<u64, LedgerError> {
        match self {
            Store::Sqlite(_) => Err(unsupported("outbox_mark_delivered")),
            Store::Postgres(store) => store.outbox_mark_delivered(record_ids).await,
        }
    }

    /// Undelivered outbox rows. SQLite: `Unsupported`.
    pub async fn outbox_backlog(&self) -> Result<i64, LedgerError> {
        match self {
            Store::Sqlite(_) => Err(unsupported("outbox_backlog")),
            Store::Postgres(store) => store.outbox_backlog().await,
        }
    }

    /// Whether this replica holds the sealer's lock (always true on SQLite: one process).
    /// The Kafka relay publishes only on the leader, so one replica at a time streams the
    /// chain and each key's records reach Kafka in chain order.
    pub fn is_sealer_leader(&self) -> bool {
        match self {
            Store::Sqlite(_) => true,
            Store::Postgres(store) => store.is_sealer_leader(),
        }
    }

    /// Whether the database answers right now (a bounded `SELECT 1` on PostgreSQL; the
    /// embedded file is always there). For readiness: `audit_writable` only changes when a
    /// write is tried, and while PostgreSQL is down requests may fail before reaching a write.
    pub async fn reachable(&self) -> bool {
        const PING_TIMEOUT_MS: u64 = 1_000;
        match self {
            Store::Sqlite(_) => true,
            Store::Postgres(store) => matches!(
                tokio::time::timeout(
                    Duration::from_millis(PING_TIMEOUT_MS),
                    sqlx::query("SELECT 1").execute(store.pool()),
                )
                .await,
                Ok(Ok(_))
            ),
        }
    }

    pub fn audit_writable(&self) -> bool {
        on_backend!(self, store => store.audit_writable())
    }

    /// Notified when new records were sealed into the chain (a hint; readers keep a cursor).
    pub fn sealed(&self) -> Arc<Notify> {
        match self {
            Store::Sqlite(store) => store.commits(),
            Store::Postgres(store) => store.sealed(),
        }
    }

    pub fn writer_stats(&self) -> WriterStats {
        on_backend!(self, store => store.writer_stats())
    }

    pub fn limits(&self) -> &StoreLimits {
        on_backend!(self, store => store.limits())
    }

    pub async fn stop_writer(&self) -> Result<(), LedgerError> {
        on_backend!(self, store => store.stop_writer().await)
    }

    pub async fn close_reads(&self) {
        on_backend!(self, store => store.close_reads().await)
    }

    pub async fn shutdown(&self) -> Result<(), LedgerError> {
        on_backend!(self, store => store.shutdown().await)
    }
}

fn unsupported(operation: &'static str) -> LedgerError {
    LedgerError::Unsupported {
        operation,
        backend: "sqlite",
    }
}
