//! Retention on PostgreSQL: dropping whole monthly partitions of `audit_records` (migration
//! 0005) once they are past the retention period, so that what remains still verifies.
//!
//! A prune, run as the schema owner (`countersign audit prune`):
//! 1. refuses a cutoff younger than the retention period (the caller checks the date),
//! 2. plans: the partitions entirely before the cutoff month, the last sequence `S` they hold,
//!    and refuses if any of their records is unsealed or if a record of a kept month was sealed
//!    at or before `S` (the chain would get a hole); the caller then writes a signed
//!    checkpoint covering `S` (so "the log held these records" stays provable),
//! 3. in one transaction: records the anchor (`S`, the chain hash at `S`, the checkpoint, the
//!    inclusion proof of leaf `S` under it), deletes the per-record rows of the pruned records
//!    from the small tables (seals, index, inputs, outbox), and detaches and drops the
//!    partitions.
//!
//! `postgres::verify` starts the chain after the newest anchor; [`verify_anchor`] proves the
//! anchor's leaf against its signed checkpoint, so an anchor cannot be made up to hide a cut.

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Connection, Row};
use time::Date;

use crate::AuditError;
use crate::checkpoint::{Checkpoint, CheckpointVerifier};
use crate::index::{CHECKPOINT_COLUMNS, decode_checkpoint};
use crate::merkle::{self, Hash};

/// Where the remaining chain starts after a prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneAnchor {
    /// The last pruned sequence; the chain continues at `pruned_through + 1`.
    pub pruned_through: i64,
    /// Chain hash of the record at `pruned_through`.
    pub last_hash: Hash,
    /// The signed checkpoint (written before the prune) that includes that record.
    pub checkpoint_tree_size: i64,
    /// Inclusion proof of leaf `pruned_through - 1` in the tree of `checkpoint_tree_size`.
    pub inclusion_proof: Vec<Hash>,
}

/// What a prune would drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    /// Records ingested before this month (UTC) go.
    pub before_month: Date,
    /// Partition tables to drop, oldest first.
    pub partitions: Vec<String>,
    pub records: i64,
    /// Last sequence pruned; 0 when there is nothing to prune.
    pub pruned_through: i64,
    pub last_hash: Hash,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Refused(String),
}

impl From<sqlx::Error> for RetentionError {
    fn from(error: sqlx::Error) -> Self {
        RetentionError::Audit(AuditError::from(error))
    }
}

/// The newest prune anchor, `None` if nothing was ever pruned (or the table does not exist:
/// a database from before migration 0005).
pub async fn latest_anchor(pool: &PgPool) -> Result<Option<PruneAnchor>, AuditError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('audit_prune_anchors') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT pruned_through, last_hash, checkpoint_tree_size, inclusion_proof \
         FROM audit_prune_anchors ORDER BY pruned_through DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let corrupt = |what: &str| AuditError::CorruptRecord {
        sequence: 0,
        reason: format!("prune anchor: {what}"),
    };
    let last_hash: Vec<u8> = row.try_get("last_hash")?;
    let proof: Vec<Vec<u8>> = row.try_get("inclusion_proof")?;
    Ok(Some(PruneAnchor {
        pruned_through: row.try_get("pruned_through")?,
        last_hash: Hash::try_from(last_hash).map_err(|_| corrupt("last_hash"))?,
        checkpoint_tree_size: row.try_get("checkpoint_tree_size")?,
        inclusion_proof: proof
            .into_iter()
            .map(|hash| Hash::try_from(hash).map_err(|_| corrupt("inclusion_proof")))
            .collect::<Result<_, _>>()?,
    }))
}

/// Checks the newest anchor against its checkpoint: the checkpoint is signed by `key`, and the
/// anchor's record (its chain hash) is leaf `pruned_through - 1` of that checkpoint's tree.
/// `Ok(None)` when nothing was pruned; `Ok(Some(Err(reason)))` names what is wrong.
pub async fn verify_anchor(
    pool: &PgPool,
    key: &CheckpointVerifier,
) -> Result<Option<Result<PruneAnchor, String>>, AuditError> {
    let Some(anchor) = latest_anchor(pool).await? else {
        return Ok(None);
    };
    let checkpoint = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tree_size = $1"
    )))
    .bind(anchor.checkpoint_tree_size)
    .fetch_optional(pool)
    .await?;
    let Some(row) = checkpoint else {
        return Ok(Some(Err(format!(
            "the checkpoint of tree size {} that vouches for the prune anchor is missing",
            anchor.checkpoint_tree_size
        ))));
    };
    // A checkpoint row that does not decode is a finding about the anchor, not an I/O error.
    let checkpoint = match decode_checkpoint(&row).map_err(|error| error.to_string()) {
        Ok(checkpoint) => checkpoint,
        Err(reason) => return Ok(Some(Err(reason))),
    };
    if let Err(error) = checkpoint.verify(key) {
        return Ok(Some(Err(format!(
            "checkpoint {} of the prune anchor: {error}",
            checkpoint.tree_size
        ))));
    }
    let included = merkle::verify_inclusion(
        &merkle::leaf_hash(&anchor.last_hash),
        (anchor.pruned_through - 1) as u64,
        checkpoint.tree_size,
        &anchor.inclusion_proof,
        &checkpoint.root_hash,
    );
    if !included {
        return Ok(Some(Err(format!(
            "the prune anchor's record {} is not in checkpoint {} (forged or altered anchor)",
            anchor.pruned_through, checkpoint.tree_size
        ))));
    }
    Ok(Some(Ok(anchor)))
}

/// The partitions of `audit_records` named `audit_records_YYYY_MM`, with their month.
async fn month_partitions(conn: &mut PgConnection) -> Result<Vec<(String, Date)>, AuditError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_records'::regclass ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let format = time::macros::format_description!("[year]_[month]_[day]");
    let mut months = Vec::new();
    for name in names {
        if let Some(suffix) = name.strip_prefix("audit_records_")
            && let Ok(month) = Date::parse(&format!("{suffix}_01"), format)
        {
            months.push((name, month));
        }
    }
    Ok(months)
}

/// What pruning everything ingested before `before_month` would drop; refuses when it would
/// leave a hole in the chain or take unsealed records.
pub async fn plan_prune(
    conn: &mut PgConnection,
    before_month: Date,
) -> Result<PrunePlan, RetentionError> {
    if before_month.day() != 1 {
        return Err(RetentionError::Refused(format!(
            "--before must be the first day of a month, got {before_month}"
        )));
    }
    let partitions: Vec<String> = month_partitions(conn)
        .await?
        .into_iter()
        .filter(|(_, month)| *month < before_month)
        .map(|(name, _)| name)
        .collect();
    let cutoff = format!("{before_month} 00:00:00+00");
    let row = sqlx::query(
        "SELECT COUNT(*) AS records, COUNT(s.sequence) AS sealed, \
                COALESCE(MAX(s.sequence), 0) AS last_sequence \
         FROM audit_records r LEFT JOIN audit_seals s ON s.record_id = r.record_id \
         WHERE r.ingested_at < $1::timestamptz",
    )
    .bind(&cutoff)
    .fetch_one(&mut *conn)
    .await?;
    let records: i64 = row.try_get("records")?;
    let sealed: i64 = row.try_get("sealed")?;
    let pruned_through: i64 = row.try_get("last_sequence")?;
    if records != sealed {
        return Err(RetentionError::Refused(format!(
            "{} records ingested before {before_month} are not sealed yet; run the gateway \
             (its sealer) and try again",
            records - sealed
        )));
    }
    let in_default: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_records_default WHERE ingested_at < $1::timestamptz",
    )
    .bind(&cutoff)
    .fetch_one(&mut *conn)
    .await?;
    if in_default > 0 {
        return Err(RetentionError::Refused(format!(
            "{in_default} records before {before_month} sit in the default partition (no monthly \
             partition existed for them); they cannot be dropped by month"
        )));
    }
    if records == 0 {
        return Ok(PrunePlan {
            before_month,
            partitions,
            records: 0,
            pruned_through: 0,
            last_hash: [0; 32],
        });
    }
    // Every sequence up to `pruned_through` must belong to a pruned record: a record of a kept
    // month sealed in between would be left without its predecessors.
    let through_count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_seals WHERE sequence <= $1")
            .bind(pruned_through)
            .fetch_one(&mut *conn)
            .await?;
    if through_count != records {
        return Err(RetentionError::Refused(format!(
            "{} records of later months were sealed before sequence {pruned_through}; pruning \
             before {before_month} would cut the chain. Prune one month earlier.",
            through_count - records
        )));
    }
    let last_hash: Vec<u8> = sqlx::query_scalar("SELECT hash FROM audit_seals WHERE sequence = $1")
        .bind(pruned_through)
        .fetch_one(&mut *conn)
        .await?;
    Ok(PrunePlan {
        before_month,
        partitions,
        records,
        pruned_through,
        last_hash: Hash::try_from(last_hash).map_err(|_| {
            RetentionError::Refused(format!("seal {pruned_through} has a malformed hash"))
        })?,
    })
}

/// Carries out `plan` in one transaction, anchored by `checkpoint` (written by the caller
/// after planning; it must include `plan.pruned_through`) and `inclusion_proof` (of leaf
/// `pruned_through - 1` under it, computed by the caller from the stored Merkle nodes and
/// checked here). Needs the schema owner: it disables the append-only triggers for the
/// deletes of this transaction only. Returns the anchor.
pub async fn execute_prune(
    conn: &mut PgConnection,
    plan: &PrunePlan,
    checkpoint: &Checkpoint,
    inclusion_proof: Vec<Hash>,
) -> Result<PruneAnchor, RetentionError> {
    assert!(plan.pruned_through > 0, "nothing to prune");
    if checkpoint.tree_size < plan.pruned_through as u64 {
        return Err(RetentionError::Refused(format!(
            "checkpoint {} does not cover sequence {}; wait for the indexer to catch up",
            checkpoint.tree_size, plan.pruned_through
        )));
    }
    if !merkle::verify_inclusion(
        &merkle::leaf_hash(&plan.last_hash),
        (plan.pruned_through - 1) as u64,
        checkpoint.tree_size,
        &inclusion_proof,
        &checkpoint.root_hash,
    ) {
        return Err(RetentionError::Refused(format!(
            "record {} is not included in checkpoint {} as stored: the Merkle tree disagrees \
             with the chain; run `audit verify` before pruning",
            plan.pruned_through, checkpoint.tree_size
        )));
    }
    let mut transaction = conn.begin().await?;
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *transaction)
        .await?;
    let proof: Vec<Vec<u8>> = inclusion_proof.iter().map(|hash| hash.to_vec()).collect();
    sqlx::query(
        "INSERT INTO audit_prune_anchors (pruned_through, last_hash, checkpoint_tree_size, \
         inclusion_proof, before_month, records_pruned) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(plan.pruned_through)
    .bind(plan.last_hash.to_vec())
    .bind(checkpoint.tree_size as i64)
    .bind(&proof)
    .bind(plan.before_month)
    .bind(plan.records)
    .execute(&mut *transaction)
    .await?;
    let cutoff = format!("{} 00:00:00+00", plan.before_month);
    for statement in [
        "DELETE FROM outbox WHERE record_id IN \
         (SELECT record_id FROM audit_records WHERE ingested_at < $1::timestamptz)",
        "DELETE FROM audit_unsealed WHERE record_id IN \
         (SELECT record_id FROM audit_records WHERE ingested_at < $1::timestamptz)",
        "DELETE FROM audit_inputs WHERE record_id IN \
         (SELECT record_id FROM audit_records WHERE ingested_at < $1::timestamptz)",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(&cutoff)
            .execute(&mut *transaction)
            .await?;
    }
    for statement in [
        "DELETE FROM audit_index_roles WHERE sequence <= $1",
        "DELETE FROM audit_index_accounts WHERE sequence <= $1",
        "DELETE FROM audit_index WHERE sequence <= $1",
        "DELETE FROM audit_seals WHERE sequence <= $1",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(plan.pruned_through)
            .execute(&mut *transaction)
            .await?;
    }
    for partition in &plan.partitions {
        assert!(
            partition.starts_with("audit_records_")
                && partition[14..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'_'),
            "partition names come from the catalogue and are audit_records_YYYY_MM"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE audit_records DETACH PARTITION {partition}; DROP TABLE {partition};"
        )))
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await?;
    tracing::info!(
        pruned_through = plan.pruned_through,
        records = plan.records,
        partitions = plan.partitions.len(),
        "audit records pruned"
    );
    Ok(PruneAnchor {
        pruned_through: plan.pruned_through,
        last_hash: plan.last_hash,
        checkpoint_tree_size: checkpoint.tree_size as i64,
        inclusion_proof,
    })
}
