//! The workspace tables on PostgreSQL (`ledger/migrations/0004_audit_index.sql`; see the
//! parent module for what they hold).
//!
//! The indexer runs on the sealer leader only (the gateway decides); two indexers would not
//! corrupt anything anyway: each step advances the cursor with a conditional UPDATE, and the
//! loser's transaction rolls back with [`AuditError::IndexConflict`]. Queries run in a
//! read-only transaction with `plan_cache_mode = force_custom_plan`: the best index depends
//! on the bound values (a rare outcome vs. a common one, a day vs. a year), which a generic
//! prepared-statement plan cannot know.

use std::collections::HashMap;

use sqlx::{Connection, PgConnection, PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Batch, Bind, CHECKPOINT_COLUMNS, CHECKPOINTS_PAGE_MAX, CheckpointWalk, CheckpointsReport,
    CurrencyExponent, INDEX_BATCH_RECORDS_MAX, IndexStep, NODE_IDS_MAX, StatsBucket, StatsRow,
    StoredRow, append_rows, build_batch, chain_hash_of, decode_checkpoint, decode_sealed,
    dense_stats, floor_micros, frontier_from, leaf_node, minute_bounds, node_hash_of, node_id,
    number_placeholders, parse_tokens, search_plan, sequence_of, size_of, stats_buckets,
};
use crate::checkpoint::{Checkpoint, CheckpointSigner, CheckpointVerifier};
use crate::encoding::{GENESIS_PREVIOUS_HASH, format_timestamp};
use crate::merkle::{Frontier, Hash, NodeId};
use crate::verify::{StoredSeal, hash_from_bytes};
use crate::{AuditError, SealedRecord};

/// Columns of a sealed record: the seal joined with the record text (as `postgres.rs`).
const SEALED_COLUMNS: &str = "s.sequence, s.previous_hash, s.hash, r.record_id::text AS record_id, \
     r.kind, r.decision_id, r.timestamp, r.subject_fingerprint, r.subject_common_name, \
     r.subject_roles, r.source_address, r.action, r.masked_input, r.result, r.bundle_revision, \
     r.outcome, r.redaction";

async fn read_size(conn: &mut PgConnection) -> Result<u64, AuditError> {
    let size: Option<i64> =
        sqlx::query_scalar("SELECT tree_size FROM audit_index_state WHERE singleton")
            .fetch_optional(&mut *conn)
            .await?;
    size_of(size.unwrap_or(0))
}

/// Stored nodes by id; level-0 ids are answered with the leaf hash of the record's chain
/// hash. Ids not stored are absent from the map.
async fn fetch_nodes(
    conn: &mut PgConnection,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, AuditError> {
    let mut found = HashMap::with_capacity(ids.len());
    let (leaves, inner): (Vec<NodeId>, Vec<NodeId>) = ids.iter().partition(|id| id.level == 0);
    if !inner.is_empty() {
        let levels: Vec<i16> = inner.iter().map(|id| i16::from(id.level)).collect();
        let indexes: Vec<i64> = inner
            .iter()
            .map(|id| i64::try_from(id.index).unwrap_or(i64::MAX))
            .collect();
        let rows: Vec<(i16, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT n.level, n.idx, n.hash FROM audit_merkle_nodes n \
             JOIN UNNEST($1::int2[], $2::int8[]) AS wanted (level, idx) \
               ON n.level = wanted.level AND n.idx = wanted.idx",
        )
        .bind(levels)
        .bind(indexes)
        .fetch_all(&mut *conn)
        .await?;
        for (level, index, hash) in rows {
            found.insert(node_id(i64::from(level), index)?, node_hash_of(&hash)?);
        }
    }
    if !leaves.is_empty() {
        let sequences: Vec<i64> = leaves
            .iter()
            .map(|id| i64::try_from(id.index).unwrap_or(i64::MAX - 1) + 1)
            .collect();
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT sequence, hash FROM audit_seals WHERE sequence = ANY($1)")
                .bind(sequences)
                .fetch_all(&mut *conn)
                .await?;
        for (sequence, hash) in rows {
            let (id, leaf) = leaf_node(sequence, &chain_hash_of(sequence, &hash)?)?;
            found.insert(id, leaf);
        }
        // A leaf whose seal was pruned (retention) is still known at a prune anchor: the last
        // pruned record's chain hash, which the anchor's signed checkpoint vouches for.
        let missing: Vec<i64> = leaves
            .iter()
            .filter(|id| !found.contains_key(id))
            .map(|id| i64::try_from(id.index).unwrap_or(i64::MAX - 1) + 1)
            .collect();
        if !missing.is_empty() {
            let anchors: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT pruned_through, last_hash FROM audit_prune_anchors \
                 WHERE pruned_through = ANY($1)",
            )
            .bind(missing)
            .fetch_all(&mut *conn)
            .await?;
            for (sequence, hash) in anchors {
                let chain_hash =
                    hash_from_bytes(&hash).map_err(|reason| AuditError::CorruptRecord {
                        sequence,
                        reason: format!("prune anchor hash: {reason}"),
                    })?;
                let (id, leaf) = leaf_node(sequence, &chain_hash)?;
                found.insert(id, leaf);
            }
        }
    }
    Ok(found)
}

async fn load_frontier(conn: &mut PgConnection, size: u64) -> Result<Frontier, AuditError> {
    let ids = Frontier::node_ids(size);
    let nodes = fetch_nodes(conn, &ids).await?;
    frontier_from(size, &ids, &nodes)
}

async fn chain_hash_at(conn: &mut PgConnection, sequence: i64) -> Result<Hash, AuditError> {
    if sequence == 0 {
        return Ok(GENESIS_PREVIOUS_HASH);
    }
    let hash: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT hash FROM audit_seals WHERE sequence = $1")
            .bind(sequence)
            .fetch_optional(&mut *conn)
            .await?;
    let hash = hash.ok_or_else(|| AuditError::IndexChain {
        sequence,
        reason: "the record the tree ends with is gone from the chain".to_owned(),
    })?;
    chain_hash_of(sequence, &hash)
}

/// Account tokens of records with sealed inputs, and of decision records by decision id.
async fn load_tokens(
    conn: &mut PgConnection,
    records: &[SealedRecord],
) -> Result<(HashMap<Uuid, Vec<String>>, HashMap<Uuid, Vec<String>>), AuditError> {
    let record_ids: Vec<Uuid> = records
        .iter()
        .map(|sealed| sealed.record.record_id)
        .collect();
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT record_id, account_tokens FROM audit_inputs WHERE record_id = ANY($1)",
    )
    .bind(&record_ids)
    .fetch_all(&mut *conn)
    .await?;
    let own: HashMap<Uuid, Vec<String>> = rows
        .into_iter()
        .map(|(record_id, tokens)| (record_id, parse_tokens(&tokens)))
        .collect();
    let mut decision_ids: Vec<String> = records
        .iter()
        .filter(|sealed| !own.contains_key(&sealed.record.record_id))
        .map(|sealed| sealed.record.decision_id.hyphenated().to_string())
        .collect();
    decision_ids.sort();
    decision_ids.dedup();
    let mut by_decision: HashMap<Uuid, Vec<String>> = HashMap::new();
    if !decision_ids.is_empty() {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT r.decision_id, i.account_tokens FROM audit_records r \
             JOIN audit_inputs i ON i.record_id = r.record_id \
             WHERE r.kind = 'decision' AND r.decision_id = ANY($1)",
        )
        .bind(decision_ids)
        .fetch_all(&mut *conn)
        .await?;
        for (decision_id, tokens) in rows {
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
/// after the cursor, in one transaction on `conn`.
pub async fn index_step(
    conn: &mut PgConnection,
    batch_records_max: u32,
    exponent: CurrencyExponent,
) -> Result<IndexStep, AuditError> {
    let limit = i64::from(batch_records_max.clamp(1, INDEX_BATCH_RECORDS_MAX));
    let mut transaction = conn.begin().await?;
    let size = read_size(&mut transaction).await?;
    let size_sequence = sequence_of(size)?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SEALED_COLUMNS} FROM audit_seals s \
         JOIN audit_records r ON r.record_id = s.record_id \
         WHERE s.sequence > $1 ORDER BY s.sequence LIMIT $2"
    )))
    .bind(size_sequence)
    .bind(limit)
    .fetch_all(&mut *transaction)
    .await?;
    if rows.is_empty() {
        transaction.rollback().await?;
        return Ok(IndexStep {
            indexed: 0,
            tree_size: size,
        });
    }
    let mut frontier = load_frontier(&mut transaction, size).await?;
    let previous_hash = chain_hash_at(&mut transaction, size_sequence).await?;
    let stored: Vec<StoredRow> = rows
        .iter()
        .map(|row| {
            let sequence: i64 = row.try_get("sequence")?;
            Ok((sequence, StoredSeal::from_row(row)))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let mut nodes = Vec::new();
    let records = append_rows(&mut frontier, previous_hash, stored, &mut nodes)?;
    let (own, by_decision) = load_tokens(&mut transaction, &records).await?;
    let batch = build_batch(
        &records,
        nodes,
        &own,
        &by_decision,
        exponent,
        frontier.size(),
    );
    write_batch(&mut transaction, size, &batch).await?;
    transaction.commit().await?;
    Ok(IndexStep {
        indexed: batch.entries.len() as u64,
        tree_size: batch.tree_size,
    })
}

async fn write_batch(
    conn: &mut PgConnection,
    size_before: u64,
    batch: &Batch,
) -> Result<(), AuditError> {
    let advanced = sqlx::query(
        "UPDATE audit_index_state SET tree_size = $1 WHERE singleton AND tree_size = $2",
    )
    .bind(sequence_of(batch.tree_size)?)
    .bind(sequence_of(size_before)?)
    .execute(&mut *conn)
    .await?;
    if advanced.rows_affected() != 1 {
        return Err(AuditError::IndexConflict);
    }
    if !batch.nodes.is_empty() {
        let levels: Vec<i16> = batch
            .nodes
            .iter()
            .map(|(id, _)| i16::from(id.level))
            .collect();
        let indexes: Vec<i64> = batch
            .nodes
            .iter()
            .map(|(id, _)| i64::try_from(id.index).unwrap_or(i64::MAX))
            .collect();
        let hashes: Vec<Vec<u8>> = batch.nodes.iter().map(|(_, hash)| hash.to_vec()).collect();
        sqlx::query(
            "INSERT INTO audit_merkle_nodes (level, idx, hash) \
             SELECT * FROM UNNEST($1::int2[], $2::int8[], $3::bytea[])",
        )
        .bind(levels)
        .bind(indexes)
        .bind(hashes)
        .execute(&mut *conn)
        .await?;
    }
    let entries = &batch.entries;
    sqlx::query(
        "INSERT INTO audit_index (sequence, record_id, at, kind, action, outcome, decision_id, \
         subject_fingerprint, subject_common_name, bundle_revision, amount_minor, currency) \
         SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], \
                              $6::text[], $7::uuid[], $8::text[], $9::text[], $10::text[], \
                              $11::int8[], $12::text[])",
    )
    .bind(column(entries, |entry| entry.sequence))
    .bind(column(entries, |entry| entry.record_id))
    .bind(column(entries, |entry| floor_micros(entry.at)))
    .bind(column(entries, |entry| entry.kind.as_str()))
    .bind(column(entries, |entry| entry.action.as_str()))
    .bind(column(entries, |entry| entry.outcome.as_str()))
    .bind(column(entries, |entry| entry.decision_id))
    .bind(column(entries, |entry| entry.subject_fingerprint.as_str()))
    .bind(column(entries, |entry| {
        entry.subject_common_name.as_deref()
    }))
    .bind(column(entries, |entry| entry.bundle_revision.as_str()))
    .bind(column(entries, |entry| entry.amount_minor))
    .bind(column(entries, |entry| entry.currency.as_deref()))
    .execute(&mut *conn)
    .await?;
    let (roles, role_sequences): (Vec<&str>, Vec<i64>) = entries
        .iter()
        .flat_map(|entry| {
            entry
                .roles
                .iter()
                .map(|role| (role.as_str(), entry.sequence))
        })
        .unzip();
    if !roles.is_empty() {
        sqlx::query(
            "INSERT INTO audit_index_roles (role, sequence) \
             SELECT * FROM UNNEST($1::text[], $2::int8[])",
        )
        .bind(roles)
        .bind(role_sequences)
        .execute(&mut *conn)
        .await?;
    }
    if !batch.tokens.is_empty() {
        let (token_sequences, tokens): (Vec<i64>, Vec<&str>) = batch
            .tokens
            .iter()
            .map(|(sequence, token)| (*sequence, token.as_str()))
            .unzip();
        sqlx::query(
            "INSERT INTO audit_index_accounts (token, sequence) \
             SELECT * FROM UNNEST($1::text[], $2::int8[])",
        )
        .bind(tokens)
        .bind(token_sequences)
        .execute(&mut *conn)
        .await?;
    }
    let minutes: Vec<i64> = batch.minutes.keys().copied().collect();
    let deltas: Vec<&super::MinuteDelta> = batch.minutes.values().collect();
    sqlx::query(
        "INSERT INTO audit_index_minutes (minute, first_sequence, last_sequence, records, \
         decisions_allow, decisions_deny, decisions_pending, decisions_error) \
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], \
                              $6::int8[], $7::int8[], $8::int8[]) \
         ON CONFLICT (minute) DO UPDATE SET \
           first_sequence = LEAST(audit_index_minutes.first_sequence, EXCLUDED.first_sequence), \
           last_sequence = GREATEST(audit_index_minutes.last_sequence, EXCLUDED.last_sequence), \
           records = audit_index_minutes.records + EXCLUDED.records, \
           decisions_allow = audit_index_minutes.decisions_allow + EXCLUDED.decisions_allow, \
           decisions_deny = audit_index_minutes.decisions_deny + EXCLUDED.decisions_deny, \
           decisions_pending = audit_index_minutes.decisions_pending + EXCLUDED.decisions_pending, \
           decisions_error = audit_index_minutes.decisions_error + EXCLUDED.decisions_error",
    )
    .bind(minutes)
    .bind(column(&deltas, |delta| delta.first_sequence))
    .bind(column(&deltas, |delta| delta.last_sequence))
    .bind(column(&deltas, |delta| delta.records))
    .bind(column(&deltas, |delta| delta.decisions[0]))
    .bind(column(&deltas, |delta| delta.decisions[1]))
    .bind(column(&deltas, |delta| delta.decisions[2]))
    .bind(column(&deltas, |delta| delta.decisions[3]))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One array per column of `items` for an `UNNEST` insert.
fn column<'a, Item, Value>(items: &'a [Item], pick: impl Fn(&'a Item) -> Value) -> Vec<Value> {
    items.iter().map(pick).collect()
}

/// Signs and stores a checkpoint at the current tree size. `None` for an empty tree; the
/// stored one if a checkpoint at this size exists already.
pub async fn write_checkpoint(
    conn: &mut PgConnection,
    signer: &CheckpointSigner,
    now: OffsetDateTime,
) -> Result<Option<Checkpoint>, AuditError> {
    let mut transaction = conn.begin().await?;
    // The cursor row lock keeps the indexer from moving the tree while we read its frontier.
    let size: Option<i64> =
        sqlx::query_scalar("SELECT tree_size FROM audit_index_state WHERE singleton FOR SHARE")
            .fetch_optional(&mut *transaction)
            .await?;
    let size = size_of(size.unwrap_or(0))?;
    if size == 0 {
        transaction.rollback().await?;
        return Ok(None);
    }
    if let Some(checkpoint) = checkpoint_covering_exact(&mut transaction, size).await? {
        transaction.rollback().await?;
        return Ok(Some(checkpoint));
    }
    let root = load_frontier(&mut transaction, size).await?.root();
    let checkpoint = signer.sign(size, root, now);
    let inserted = sqlx::query(
        "INSERT INTO audit_checkpoints (tree_size, root_hash, timestamp, key_id, signature) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tree_size) DO NOTHING",
    )
    .bind(sequence_of(size)?)
    .bind(checkpoint.root_hash.to_vec())
    .bind(format_timestamp(checkpoint.timestamp))
    .bind(checkpoint.key_id.clone())
    .bind(checkpoint.signature.to_vec())
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    if inserted.rows_affected() == 0 {
        // Another writer (export on another replica) signed this size first: theirs stands.
        return checkpoint_covering_exact(conn, size).await;
    }
    Ok(Some(checkpoint))
}

async fn checkpoint_covering_exact(
    conn: &mut PgConnection,
    size: u64,
) -> Result<Option<Checkpoint>, AuditError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tree_size = $1"
    )))
    .bind(sequence_of(size)?)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(decode_checkpoint).transpose()
}

/// Leaves in the tree (the indexer's cursor).
pub async fn indexed_size(pool: &PgPool) -> Result<u64, AuditError> {
    let mut conn = pool.acquire().await?;
    read_size(&mut conn).await
}

/// Stored nodes for `ids` (at most [`NODE_IDS_MAX`]); level 0 from the chain.
pub async fn merkle_nodes(
    pool: &PgPool,
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
    pool: &PgPool,
    after_tree_size: u64,
    limit: u32,
) -> Result<Vec<Checkpoint>, AuditError> {
    let mut conn = pool.acquire().await?;
    checkpoints_on(&mut conn, after_tree_size, limit).await
}

async fn checkpoints_on(
    conn: &mut PgConnection,
    after_tree_size: u64,
    limit: u32,
) -> Result<Vec<Checkpoint>, AuditError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tree_size > $1 \
         ORDER BY tree_size LIMIT $2"
    )))
    .bind(i64::try_from(after_tree_size).unwrap_or(i64::MAX))
    .bind(i64::from(limit.clamp(1, CHECKPOINTS_PAGE_MAX)))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode_checkpoint).collect()
}

pub async fn latest_checkpoint(pool: &PgPool) -> Result<Option<Checkpoint>, AuditError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1"
    )))
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_checkpoint).transpose()
}

pub async fn checkpoint_covering(
    pool: &PgPool,
    tree_size: u64,
) -> Result<Option<Checkpoint>, AuditError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tree_size >= $1 \
         ORDER BY tree_size LIMIT 1"
    )))
    .bind(i64::try_from(tree_size).unwrap_or(i64::MAX))
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_checkpoint).transpose()
}

async fn time_range(
    conn: &mut PgConnection,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> Result<Option<(i64, i64)>, AuditError> {
    let (from_minute, to_seconds) = minute_bounds(from, to);
    let row: (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT min(first_sequence), max(last_sequence) FROM audit_index_minutes \
         WHERE minute >= $1 AND minute < $2",
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

/// The SQL and binds [`query`] runs, for `EXPLAIN` in benchmarks and tests.
pub fn query_sql(query: &super::AuditQuery, sequence_range: Option<(i64, i64)>) -> String {
    let plan = search_plan(query, sequence_range);
    number_placeholders(
        &format!(
            "SELECT {SEALED_COLUMNS} FROM ({}) page \
             JOIN audit_seals s ON s.sequence = page.sequence \
             JOIN audit_records r ON r.record_id = s.record_id ORDER BY s.sequence",
            plan.sql
        ),
        '$',
    )
}

/// The records matching `query`, ascending by sequence (see [`super::AuditQuery`]).
pub async fn query(
    pool: &PgPool,
    query: &super::AuditQuery,
) -> Result<Vec<SealedRecord>, AuditError> {
    query.validate()?;
    let mut snapshot = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
        .execute(&mut *snapshot)
        .await?;
    let range = if query.from.is_some() || query.to.is_some() {
        match time_range(&mut snapshot, query.from, query.to).await? {
            Some(range) => Some(range),
            None => return Ok(Vec::new()),
        }
    } else {
        None
    };
    let plan = search_plan(query, range);
    let mut statement = sqlx::query(sqlx::AssertSqlSafe(query_sql(query, range)));
    for bind in plan.binds {
        statement = match bind {
            Bind::Text(text) => statement.bind(text),
            Bind::Int(value) => statement.bind(value),
            Bind::At(time) => statement.bind(floor_micros(time)),
            Bind::Uuid(id) => statement.bind(id),
        };
    }
    let rows = statement.fetch_all(&mut *snapshot).await?;
    snapshot.rollback().await?;
    rows.iter().map(decode_sealed).collect()
}

/// Where [`query`] would start and end for a time filter (for benchmarks and EXPLAIN).
pub async fn query_time_range(
    pool: &PgPool,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> Result<Option<(i64, i64)>, AuditError> {
    let mut conn = pool.acquire().await?;
    time_range(&mut conn, from, to).await
}

/// The sealed record with `record_id` (unsealed records are not part of the chain yet).
pub async fn record(pool: &PgPool, record_id: Uuid) -> Result<Option<SealedRecord>, AuditError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SEALED_COLUMNS} FROM audit_seals s \
         JOIN audit_records r ON r.record_id = s.record_id WHERE s.record_id = $1"
    )))
    .bind(record_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_sealed).transpose()
}

/// Decision records by outcome per bucket over `[floor(from), to)`, dense.
pub async fn stats(
    pool: &PgPool,
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
        "SELECT minute - (minute % $1) AS start, sum(decisions_allow)::int8, \
         sum(decisions_deny)::int8, sum(decisions_pending)::int8, sum(decisions_error)::int8 \
         FROM audit_index_minutes WHERE minute >= $2 AND minute < $3 GROUP BY 1 ORDER BY 1",
    )
    .bind(width)
    .bind(first.unix_timestamp())
    .bind(last.unix_timestamp() + width)
    .fetch_all(pool)
    .await?;
    Ok(dense_stats(&starts, rows))
}

/// Verifies the checkpoints and the stored tree against the sealed chain (see
/// [`super::CheckpointsReport`]). Usable with any role that can SELECT the tables.
pub async fn verify_checkpoints(
    pool: &PgPool,
    verifier: &CheckpointVerifier,
) -> Result<CheckpointsReport, AuditError> {
    let mut conn = pool.acquire().await?;
    let indexed = read_size(&mut conn).await?;
    let mut walk = CheckpointWalk::new(verifier, indexed);
    let mut cursor: i64 = 0;
    // After a retention prune the leaves start after the anchor; the tree of the pruned
    // prefix comes from the stored nodes and the anchor's leaf.
    let pruned: Option<i64> =
        sqlx::query_scalar("SELECT MAX(pruned_through) FROM audit_prune_anchors")
            .fetch_one(&mut *conn)
            .await?;
    if let Some(pruned_through) = pruned {
        let frontier = load_frontier(&mut conn, size_of(pruned_through)?).await?;
        walk = walk.starting_after_prune(frontier);
        cursor = pruned_through;
    }
    super::walk_checkpoints(&mut PgTree(&mut conn), walk, cursor, indexed).await
}

/// [`super::TreeReader`] on one connection.
struct PgTree<'c>(&'c mut PgConnection);

impl super::TreeReader for PgTree<'_> {
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
        Ok(sqlx::query_as(
            "SELECT sequence, hash FROM audit_seals WHERE sequence > $1 ORDER BY sequence LIMIT $2",
        )
        .bind(sequence)
        .bind(limit)
        .fetch_all(&mut *self.0)
        .await?)
    }

    async fn nodes(&mut self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, AuditError> {
        fetch_nodes(self.0, ids).await
    }
}
