//! The workspace tables on SQLite (see the parent module for what they hold).
//!
//! The indexer writes through its own connection ([`index_step`], [`write_checkpoint`]): it
//! reads what it needs first, in a read transaction, and takes the write lock
//! (`BEGIN IMMEDIATE`) only for the inserts, so the ledger's writer waits at most one short
//! insert transaction for the file lock (both use the busy timeout). Reads take a pool
//! connection (the store's read-only pool).

use std::collections::HashMap;

use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Batch, Bind, CHECKPOINT_COLUMNS, CHECKPOINTS_PAGE_MAX, CheckpointWalk, CheckpointsReport,
    CurrencyExponent, INDEX_BATCH_RECORDS_MAX, IndexStep, NODE_IDS_MAX, StatsBucket, StatsRow,
    StoredRow, append_rows, build_batch, chain_hash_of, decode_checkpoint, decode_sealed,
    dense_stats, frontier_from, leaf_node, minute_bounds, node_hash_of, node_id,
    number_placeholders, parse_tokens, search_plan, sequence_of, size_of, stats_buckets,
};
use crate::checkpoint::{Checkpoint, CheckpointSigner, CheckpointVerifier};
use crate::encoding::{GENESIS_PREVIOUS_HASH, format_timestamp};
use crate::merkle::{Frontier, Hash, NodeId};
use crate::verify::StoredSeal;
use crate::{AuditError, SealedRecord};

/// Rows per multi-row INSERT: well inside SQLite's bound-variable limit (12 columns each).
const INSERT_ROWS_PER_STATEMENT: usize = 200;

/// Schema, idempotent. STRICT so a tampered value of the wrong type is refused. The tree and
/// the checkpoints are append-only (triggers); the index rows are derived data that a rebuild
/// may replace, but never edit.
const SCHEMA_STATEMENTS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit_index_state (
        singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
        tree_size INTEGER NOT NULL CHECK (tree_size >= 0)
    ) STRICT",
    "INSERT OR IGNORE INTO audit_index_state (singleton, tree_size) VALUES (1, 0)",
    "CREATE TABLE IF NOT EXISTS audit_merkle_nodes (
        level INTEGER NOT NULL CHECK (level BETWEEN 1 AND 63),
        idx INTEGER NOT NULL CHECK (idx >= 0),
        hash BLOB NOT NULL CHECK (length(hash) = 32),
        PRIMARY KEY (level, idx)
    ) STRICT, WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS audit_checkpoints (
        tree_size INTEGER NOT NULL PRIMARY KEY CHECK (tree_size > 0),
        root_hash BLOB NOT NULL CHECK (length(root_hash) = 32),
        timestamp TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature BLOB NOT NULL CHECK (length(signature) = 64)
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS audit_index (
        sequence INTEGER NOT NULL PRIMARY KEY,
        record_id TEXT NOT NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        decision_id TEXT NOT NULL,
        subject_fingerprint TEXT NOT NULL,
        subject_common_name TEXT,
        bundle_revision TEXT NOT NULL,
        amount_minor INTEGER,
        currency TEXT
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS audit_index_by_kind ON audit_index (kind, sequence)",
    "CREATE INDEX IF NOT EXISTS audit_index_by_outcome ON audit_index (outcome, sequence)",
    "CREATE INDEX IF NOT EXISTS audit_index_by_decision_id ON audit_index (decision_id, sequence)",
    "CREATE INDEX IF NOT EXISTS audit_index_by_fingerprint ON audit_index (subject_fingerprint, sequence)",
    "CREATE INDEX IF NOT EXISTS audit_index_by_common_name ON audit_index (subject_common_name, sequence)",
    "CREATE INDEX IF NOT EXISTS audit_index_by_bundle_revision ON audit_index (bundle_revision, sequence)",
    "CREATE INDEX IF NOT EXISTS audit_index_by_currency ON audit_index (currency, sequence)
     WHERE currency IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS audit_index_by_amount ON audit_index (currency, amount_minor)
     WHERE amount_minor IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS audit_index_roles (
        role TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        PRIMARY KEY (role, sequence)
    ) STRICT, WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS audit_index_accounts (
        token TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        PRIMARY KEY (token, sequence)
    ) STRICT, WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS audit_index_minutes (
        minute INTEGER NOT NULL PRIMARY KEY,
        first_sequence INTEGER NOT NULL,
        last_sequence INTEGER NOT NULL,
        records INTEGER NOT NULL,
        decisions_allow INTEGER NOT NULL,
        decisions_deny INTEGER NOT NULL,
        decisions_pending INTEGER NOT NULL,
        decisions_error INTEGER NOT NULL
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS audit_merkle_nodes_no_update BEFORE UPDATE ON audit_merkle_nodes
     BEGIN SELECT RAISE(ABORT, 'audit_merkle_nodes is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_merkle_nodes_no_delete BEFORE DELETE ON audit_merkle_nodes
     BEGIN SELECT RAISE(ABORT, 'audit_merkle_nodes is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
     BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
     BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_index_no_update BEFORE UPDATE ON audit_index
     BEGIN SELECT RAISE(ABORT, 'audit_index rows are never edited'); END",
];

/// Columns of a full record, for `StoredSeal::from_row`.
const RECORD_COLUMNS: &str = "r.sequence, r.record_id, r.kind, r.decision_id, r.timestamp, \
     r.subject_fingerprint, r.subject_common_name, r.subject_roles, r.source_address, r.action, \
     r.masked_input, r.result, r.bundle_revision, r.outcome, r.redaction, r.previous_hash, r.hash";

/// Creates the tables, indexes and triggers if they do not exist (on the writer connection,
/// at open).
pub async fn migrate(conn: &mut SqliteConnection) -> Result<(), AuditError> {
    for statement in SCHEMA_STATEMENTS {
        sqlx::query(*statement).execute(&mut *conn).await?;
    }
    Ok(())
}

async fn read_size(conn: &mut SqliteConnection) -> Result<u64, AuditError> {
    let size: Option<i64> =
        sqlx::query_scalar("SELECT tree_size FROM audit_index_state WHERE singleton = 1")
            .fetch_optional(&mut *conn)
            .await?;
    size_of(size.unwrap_or(0))
}

/// Stored nodes by id; level-0 ids are answered with the leaf hash of the record's chain
/// hash. Ids not stored are absent from the map.
async fn fetch_nodes(
    conn: &mut SqliteConnection,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, AuditError> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(INSERT_ROWS_PER_STATEMENT) {
        let (leaves, inner): (Vec<NodeId>, Vec<NodeId>) =
            chunk.iter().partition(|id| id.level == 0);
        if !inner.is_empty() {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT level, idx, hash FROM audit_merkle_nodes WHERE ");
            let mut separated = builder.separated(" OR ");
            for id in &inner {
                separated.push("(level = ");
                separated.push_bind_unseparated(i64::from(id.level));
                separated.push_unseparated(" AND idx = ");
                separated.push_bind_unseparated(i64::try_from(id.index).unwrap_or(i64::MAX));
                separated.push_unseparated(")");
            }
            for row in builder.build().fetch_all(&mut *conn).await? {
                let (level, index, hash): (i64, i64, Vec<u8>) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                found.insert(node_id(level, index)?, node_hash_of(&hash)?);
            }
        }
        if !leaves.is_empty() {
            let mut builder: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT sequence, hash FROM audit_records WHERE sequence IN (");
            let mut separated = builder.separated(", ");
            for id in &leaves {
                separated.push_bind(i64::try_from(id.index).unwrap_or(i64::MAX - 1) + 1);
            }
            builder.push(")");
            for row in builder.build().fetch_all(&mut *conn).await? {
                let (sequence, hash): (i64, Vec<u8>) = (row.try_get(0)?, row.try_get(1)?);
                let (id, leaf) = leaf_node(sequence, &chain_hash_of(sequence, &hash)?)?;
                found.insert(id, leaf);
            }
        }
    }
    Ok(found)
}

async fn load_frontier(conn: &mut SqliteConnection, size: u64) -> Result<Frontier, AuditError> {
    let ids = Frontier::node_ids(size);
    let nodes = fetch_nodes(conn, &ids).await?;
    frontier_from(size, &ids, &nodes)
}

async fn chain_hash_at(conn: &mut SqliteConnection, sequence: i64) -> Result<Hash, AuditError> {
    if sequence == 0 {
        return Ok(GENESIS_PREVIOUS_HASH);
    }
    let hash: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT hash FROM audit_records WHERE sequence = ?1")
            .bind(sequence)
            .fetch_optional(&mut *conn)
            .await?;
    let hash = hash.ok_or_else(|| AuditError::IndexChain {
        sequence,
        reason: "the record the tree ends with is gone from the chain".to_owned(),
    })?;
    chain_hash_of(sequence, &hash)
}

/// Account tokens of the records with sealed inputs among `record_ids`, and of the decision
/// records of `decision_ids` (inherited by postings and the like).
async fn load_tokens(
    conn: &mut SqliteConnection,
    records: &[SealedRecord],
) -> Result<(HashMap<Uuid, Vec<String>>, HashMap<Uuid, Vec<String>>), AuditError> {
    let mut own = HashMap::new();
    let mut by_decision: HashMap<Uuid, Vec<String>> = HashMap::new();
    for chunk in records.chunks(INSERT_ROWS_PER_STATEMENT) {
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT record_id, account_tokens FROM audit_inputs WHERE record_id IN (",
        );
        let mut separated = builder.separated(", ");
        for sealed in chunk {
            separated.push_bind(sealed.record.record_id.hyphenated().to_string());
        }
        builder.push(")");
        for row in builder.build().fetch_all(&mut *conn).await? {
            let (record_id, tokens): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if let Ok(record_id) = Uuid::parse_str(&record_id) {
                own.insert(record_id, parse_tokens(&tokens));
            }
        }
        let mut decision_ids: Vec<String> = chunk
            .iter()
            .filter(|sealed| !own.contains_key(&sealed.record.record_id))
            .map(|sealed| sealed.record.decision_id.hyphenated().to_string())
            .collect();
        decision_ids.sort();
        decision_ids.dedup();
        if decision_ids.is_empty() {
            continue;
        }
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT r.decision_id, i.account_tokens FROM audit_records r \
             JOIN audit_inputs i ON i.record_id = r.record_id \
             WHERE r.kind = 'decision' AND r.decision_id IN (",
        );
        let mut separated = builder.separated(", ");
        for decision_id in decision_ids {
            separated.push_bind(decision_id);
        }
        builder.push(")");
        for row in builder.build().fetch_all(&mut *conn).await? {
            let (decision_id, tokens): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if let Ok(decision_id) = Uuid::parse_str(&decision_id) {
                by_decision
                    .entry(decision_id)
                    .or_default()
                    .extend(parse_tokens(&tokens));
            }
        }
    }
    Ok((own, by_decision))
}

/// Indexes up to `batch_records_max` (clamped to [`INDEX_BATCH_RECORDS_MAX`]) sealed records
/// after the cursor, on `conn` — a write connection of the indexer's own. See the parent
/// module for the guarantees.
pub async fn index_step(
    conn: &mut SqliteConnection,
    batch_records_max: u32,
    exponent: CurrencyExponent,
) -> Result<IndexStep, AuditError> {
    let limit = i64::from(batch_records_max.clamp(1, INDEX_BATCH_RECORDS_MAX));
    // Read phase: one snapshot, no write lock.
    let mut snapshot = conn.begin().await?;
    let size = read_size(&mut snapshot).await?;
    let size_sequence = sequence_of(size)?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM audit_records r WHERE r.sequence > ?1 ORDER BY r.sequence LIMIT ?2"
    )))
    .bind(size_sequence)
    .bind(limit)
    .fetch_all(&mut *snapshot)
    .await?;
    if rows.is_empty() {
        snapshot.rollback().await?;
        return Ok(IndexStep {
            indexed: 0,
            tree_size: size,
        });
    }
    let mut frontier = load_frontier(&mut snapshot, size).await?;
    let previous_hash = chain_hash_at(&mut snapshot, size_sequence).await?;
    let stored: Vec<StoredRow> = rows
        .iter()
        .map(|row| {
            let sequence: i64 = row.try_get("sequence")?;
            Ok((sequence, StoredSeal::from_row(row)))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let mut nodes = Vec::new();
    let records = append_rows(&mut frontier, previous_hash, stored, &mut nodes)?;
    let (own, by_decision) = load_tokens(&mut snapshot, &records).await?;
    snapshot.rollback().await?;
    let batch = build_batch(
        &records,
        nodes,
        &own,
        &by_decision,
        exponent,
        frontier.size(),
    );

    // Write phase: the file lock only for the inserts.
    let mut transaction = conn.begin_with("BEGIN IMMEDIATE").await?;
    write_batch(&mut transaction, size, &batch).await?;
    transaction.commit().await?;
    Ok(IndexStep {
        indexed: batch.entries.len() as u64,
        tree_size: batch.tree_size,
    })
}

async fn write_batch(
    conn: &mut SqliteConnection,
    size_before: u64,
    batch: &Batch,
) -> Result<(), AuditError> {
    let advanced = sqlx::query(
        "UPDATE audit_index_state SET tree_size = ?1 WHERE singleton = 1 AND tree_size = ?2",
    )
    .bind(sequence_of(batch.tree_size)?)
    .bind(sequence_of(size_before)?)
    .execute(&mut *conn)
    .await?;
    if advanced.rows_affected() != 1 {
        return Err(AuditError::IndexConflict);
    }
    for chunk in batch.nodes.chunks(INSERT_ROWS_PER_STATEMENT) {
        let mut builder: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO audit_merkle_nodes (level, idx, hash) ");
        builder.push_values(chunk, |mut row, (id, hash)| {
            row.push_bind(i64::from(id.level))
                .push_bind(i64::try_from(id.index).unwrap_or(i64::MAX))
                .push_bind(hash.to_vec());
        });
        builder.build().execute(&mut *conn).await?;
    }
    for chunk in batch.entries.chunks(INSERT_ROWS_PER_STATEMENT) {
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO audit_index (sequence, record_id, at, kind, action, outcome, decision_id, \
             subject_fingerprint, subject_common_name, bundle_revision, amount_minor, currency) ",
        );
        builder.push_values(chunk, |mut row, entry| {
            row.push_bind(entry.sequence)
                .push_bind(entry.record_id.hyphenated().to_string())
                .push_bind(format_timestamp(entry.at))
                .push_bind(entry.kind.as_str())
                .push_bind(entry.action.clone())
                .push_bind(entry.outcome.as_str())
                .push_bind(entry.decision_id.hyphenated().to_string())
                .push_bind(entry.subject_fingerprint.clone())
                .push_bind(entry.subject_common_name.clone())
                .push_bind(entry.bundle_revision.clone())
                .push_bind(entry.amount_minor)
                .push_bind(entry.currency.clone());
        });
        builder.build().execute(&mut *conn).await?;
    }
    let roles: Vec<(&str, i64)> = batch
        .entries
        .iter()
        .flat_map(|entry| {
            entry
                .roles
                .iter()
                .map(|role| (role.as_str(), entry.sequence))
        })
        .collect();
    for chunk in roles.chunks(INSERT_ROWS_PER_STATEMENT) {
        let mut builder: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO audit_index_roles (role, sequence) ");
        builder.push_values(chunk, |mut row, (role, sequence)| {
            row.push_bind(*role).push_bind(*sequence);
        });
        builder.build().execute(&mut *conn).await?;
    }
    for chunk in batch.tokens.chunks(INSERT_ROWS_PER_STATEMENT) {
        let mut builder: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO audit_index_accounts (token, sequence) ");
        builder.push_values(chunk, |mut row, (sequence, token)| {
            row.push_bind(token.clone()).push_bind(*sequence);
        });
        builder.build().execute(&mut *conn).await?;
    }
    for (minute, delta) in &batch.minutes {
        sqlx::query(
            "INSERT INTO audit_index_minutes (minute, first_sequence, last_sequence, records, \
             decisions_allow, decisions_deny, decisions_pending, decisions_error) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (minute) DO UPDATE SET \
               first_sequence = min(first_sequence, excluded.first_sequence), \
               last_sequence = max(last_sequence, excluded.last_sequence), \
               records = records + excluded.records, \
               decisions_allow = decisions_allow + excluded.decisions_allow, \
               decisions_deny = decisions_deny + excluded.decisions_deny, \
               decisions_pending = decisions_pending + excluded.decisions_pending, \
               decisions_error = decisions_error + excluded.decisions_error",
        )
        .bind(minute)
        .bind(delta.first_sequence)
        .bind(delta.last_sequence)
        .bind(delta.records)
        .bind(delta.decisions[0])
        .bind(delta.decisions[1])
        .bind(delta.decisions[2])
        .bind(delta.decisions[3])
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Signs and stores a checkpoint at the current tree size, on the indexer's connection.
/// `None` for an empty tree; the stored one if a checkpoint at this size exists already.
pub async fn write_checkpoint(
    conn: &mut SqliteConnection,
    signer: &CheckpointSigner,
    now: OffsetDateTime,
) -> Result<Option<Checkpoint>, AuditError> {
    let mut transaction = conn.begin_with("BEGIN IMMEDIATE").await?;
    let size = read_size(&mut transaction).await?;
    if size == 0 {
        transaction.rollback().await?;
        return Ok(None);
    }
    let size_i64 = sequence_of(size)?;
    let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tree_size = ?1"
    )))
    .bind(size_i64)
    .fetch_optional(&mut *transaction)
    .await?;
    if let Some(row) = existing {
        let checkpoint = decode_checkpoint(&row)?;
        transaction.rollback().await?;
        return Ok(Some(checkpoint));
    }
    let root = load_frontier(&mut transaction, size).await?.root();
    let checkpoint = signer.sign(size, root, now);
    sqlx::query(
        "INSERT INTO audit_checkpoints (tree_size, root_hash, timestamp, key_id, signature) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(size_i64)
    .bind(checkpoint.root_hash.to_vec())
    .bind(format_timestamp(checkpoint.timestamp))
    .bind(checkpoint.key_id.clone())
    .bind(checkpoint.signature.to_vec())
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(Some(checkpoint))
}

/// Leaves in the tree (the indexer's cursor).
pub async fn indexed_size(pool: &SqlitePool) -> Result<u64, AuditError> {
    let mut conn = pool.acquire().await?;
    read_size(&mut conn).await
}

/// Stored nodes for `ids` (at most [`NODE_IDS_MAX`]); level 0 from the chain.
pub async fn merkle_nodes(
    pool: &SqlitePool,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, AuditError> {
    if ids.len() > NODE_IDS_MAX {
        return Err(AuditError::InvalidQuery {
            parameter: "node_ids",
            message: format!("at most {NODE_IDS_MAX} nodes per call"),
        });
    }
    let mut conn = pool.acquire().await?;
    fetch_nodes(&mut conn, ids).await
}

/// Checkpoints with `tree_size > after_tree_size`, ascending, at most `limit` (clamped to
/// [`CHECKPOINTS_PAGE_MAX`]).
pub async fn checkpoints(
    pool: &SqlitePool,
    after_tree_size: u64,
    limit: u32,
) -> Result<Vec<Checkpoint>, AuditError> {
    let mut conn = pool.acquire().await?;
    checkpoints_on(&mut conn, after_tree_size, limit).await
}

async fn checkpoints_on(
    conn: &mut SqliteConnection,
    after_tree_size: u64,
    limit: u32,
) -> Result<Vec<Checkpoint>, AuditError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tree_size > ?1 \
         ORDER BY tree_size LIMIT ?2"
    )))
    .bind(i64::try_from(after_tree_size).unwrap_or(i64::MAX))
    .bind(i64::from(limit.clamp(1, CHECKPOINTS_PAGE_MAX)))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode_checkpoint).collect()
}

/// The checkpoint with the largest tree size.
pub async fn latest_checkpoint(pool: &SqlitePool) -> Result<Option<Checkpoint>, AuditError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1"
    )))
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_checkpoint).transpose()
}

/// The smallest checkpoint with `tree_size >= tree_size`.
pub async fn checkpoint_covering(
    pool: &SqlitePool,
    tree_size: u64,
) -> Result<Option<Checkpoint>, AuditError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tree_size >= ?1 \
         ORDER BY tree_size LIMIT 1"
    )))
    .bind(i64::try_from(tree_size).unwrap_or(i64::MAX))
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_checkpoint).transpose()
}

/// The exact sequence range of the records stamped in `[from, to)`, from the minute table;
/// `None` when no record falls in it.
async fn time_range(
    conn: &mut SqliteConnection,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> Result<Option<(i64, i64)>, AuditError> {
    let (from_minute, to_seconds) = minute_bounds(from, to);
    let row: (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT min(first_sequence), max(last_sequence) FROM audit_index_minutes \
         WHERE minute >= ?1 AND minute < ?2",
    )
    .bind(from_minute)
    .bind(to_seconds)
    .fetch_one(&mut *conn)
    .await?;
    Ok(match row {
        (Some(first), Some(last)) => Some((first, last)),
        _ => None,
    })
}

/// The records matching `query`, ascending by sequence (see [`super::AuditQuery`]).
pub async fn query(
    pool: &SqlitePool,
    query: &super::AuditQuery,
) -> Result<Vec<SealedRecord>, AuditError> {
    query.validate()?;
    let mut snapshot = pool.begin().await?;
    let range = if query.from.is_some() || query.to.is_some() {
        match time_range(&mut snapshot, query.from, query.to).await? {
            Some(range) => Some(range),
            None => return Ok(Vec::new()),
        }
    } else {
        None
    };
    let plan = search_plan(query, range);
    let sql = number_placeholders(
        &format!(
            "SELECT {RECORD_COLUMNS} FROM audit_records r WHERE r.sequence IN ({}) ORDER BY r.sequence",
            plan.sql
        ),
        '?',
    );
    let mut statement = sqlx::query(sqlx::AssertSqlSafe(sql));
    for bind in plan.binds {
        statement = match bind {
            Bind::Text(text) => statement.bind(text),
            Bind::Int(value) => statement.bind(value),
            Bind::At(time) => statement.bind(format_timestamp(time)),
            Bind::Uuid(id) => statement.bind(id.hyphenated().to_string()),
        };
    }
    let rows = statement.fetch_all(&mut *snapshot).await?;
    snapshot.rollback().await?;
    rows.iter().map(decode_sealed).collect()
}

/// The sealed record with `record_id`, if any.
pub async fn record(
    pool: &SqlitePool,
    record_id: Uuid,
) -> Result<Option<SealedRecord>, AuditError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM audit_records r WHERE r.record_id = ?1"
    )))
    .bind(record_id.hyphenated().to_string())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_sealed).transpose()
}

/// Decision records by outcome per bucket over `[floor(from), to)`, dense (empty buckets
/// are zeros).
pub async fn stats(
    pool: &SqlitePool,
    from: OffsetDateTime,
    to: OffsetDateTime,
    bucket: StatsBucket,
) -> Result<Vec<StatsRow>, AuditError> {
    let starts = stats_buckets(from, to, bucket)?;
    let (Some(first), Some(last)) = (starts.first(), starts.last()) else {
        return Ok(Vec::new());
    };
    let width = bucket.seconds();
    let rows: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT minute - (minute % ?1) AS start, sum(decisions_allow), sum(decisions_deny), \
         sum(decisions_pending), sum(decisions_error) FROM audit_index_minutes \
         WHERE minute >= ?2 AND minute < ?3 GROUP BY start ORDER BY start",
    )
    .bind(width)
    .bind(first.unix_timestamp())
    .bind(last.unix_timestamp() + width)
    .fetch_all(pool)
    .await?;
    Ok(dense_stats(&starts, rows))
}

/// Verifies the checkpoints and the stored tree against the chain (see
/// [`super::CheckpointsReport`]). Tampering is a finding in the report; `Err` means the
/// database could not be read. Works on a read-only pool.
pub async fn verify_checkpoints(
    pool: &SqlitePool,
    verifier: &CheckpointVerifier,
) -> Result<CheckpointsReport, AuditError> {
    let mut conn = pool.acquire().await?;
    let indexed = read_size(&mut conn).await?;
    let walk = CheckpointWalk::new(verifier, indexed);
    super::walk_checkpoints(&mut SqliteTree(&mut conn), walk, 0, indexed).await
}

/// [`super::TreeReader`] on one connection.
struct SqliteTree<'c>(&'c mut SqliteConnection);

impl super::TreeReader for SqliteTree<'_> {
    async fn checkpoints_after(
        &mut self,
        after_tree_size: u64,
        limit: u32,
    ) -> Result<Vec<Checkpoint>, AuditError> {
        checkpoints_on(self.0, after_tree_size, limit).await
    }

    async fn chain_hashes_after(
        &mut self,
        sequence: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, AuditError> {
        Ok(sqlx::query_as("SELECT sequence, hash FROM audit_records WHERE sequence > ?1 ORDER BY sequence LIMIT ?2")
            .bind(sequence)
            .bind(limit)
            .fetch_all(&mut *self.0)
            .await?)
    }

    async fn nodes(&mut self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, AuditError> {
        fetch_nodes(self.0, ids).await
    }
}
