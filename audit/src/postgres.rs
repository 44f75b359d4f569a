//! The audit trail on PostgreSQL: append (inside the ledger's write transaction), seal, read,
//! verify, and the Kafka outbox.
//!
//! Unlike SQLite, appending does not extend the hash chain. Several gateway replicas write
//! to one database; if every write transaction had to read and extend the chain head, they
//! would all serialise on that one row. Instead:
//! - [`append`] inserts the record text into `audit_records`, a work-queue row into
//!   `audit_unsealed` and (optionally) an `outbox` row, in the caller's transaction.
//! - [`seal_pending`], run by exactly one sealer (the replica holding the advisory lock
//!   [`SEALER_LOCK_KEY`]), takes unsealed records in ingest order, continues the chain from the
//!   last seal and inserts `audit_seals` rows, deleting the work-queue rows in the same
//!   transaction. The chain (sequence, previous_hash, hash) is computed with the same
//!   encoding as on SQLite (`crate::encoding`), over the same column text.
//! - Reads and [`verify`] see only sealed records: the chain is `audit_seals` joined with
//!   `audit_records`, ordered by sequence.
//!
//! The tables and grants are created by the ledger's migrations (`ledger/migrations`); this
//! module only reads and writes them. Both audit tables refuse UPDATE, DELETE and TRUNCATE
//! (triggers), and the application role has no such privileges.

use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::encoding::{self, GENESIS_PREVIOUS_HASH};
use crate::sqlite::{APPEND_RECORDS_MAX, READ_RECORDS_MAX};
use crate::verify::{ChainWalk, StoredSeal, columns_from_row, hash_from_bytes};
use crate::{AuditError, ChainHead, NewRecord, SealedRecord, VerifyReport};

/// Key of the session-level advisory lock (`pg_try_advisory_lock`) whose holder is the one
/// sealer of a database. Fixed so every replica of every version competes for the same lock.
/// ("CSIGSEAL" in ASCII.)
pub const SEALER_LOCK_KEY: i64 = 0x4353_4947_5345_414C;

/// Most records one [`seal_pending`] transaction seals: bounds the transaction and the memory
/// of one sealing step.
pub const SEAL_BATCH_RECORDS_MAX: i64 = 1_000;

/// Records per page while verifying, so a long chain is streamed, not loaded.
const VERIFY_PAGE_RECORDS: i64 = 1_000;

/// Columns of a sealed record: the seal joined with the record text. `record_id::text` is the
/// lowercase hyphenated spelling the hash was computed over.
const SEALED_COLUMNS: &str = "s.sequence, s.previous_hash, s.hash, r.record_id::text AS record_id, \
     r.kind, r.decision_id, r.timestamp, r.subject_fingerprint, r.subject_common_name, \
     r.subject_roles, r.source_address, r.action, r.masked_input, r.result, r.bundle_revision, \
     r.outcome, r.redaction";

/// `record_id` is bound as `uuid[]`; the rest as `text[]`, in the column order of
/// `audit_records`. `WITH ORDINALITY ... ORDER BY` makes `ingest_id` follow the caller's order.
const INSERT_RECORDS: &str = "INSERT INTO audit_records (record_id, kind, decision_id, timestamp, \
     subject_fingerprint, subject_common_name, subject_roles, source_address, action, \
     masked_input, result, bundle_revision, outcome, redaction) \
     SELECT record_id, kind, decision_id, timestamp, subject_fingerprint, subject_common_name, \
            subject_roles, source_address, action, masked_input, result, bundle_revision, \
            outcome, redaction \
     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                 $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
                 $13::text[], $14::text[]) WITH ORDINALITY \
          AS input (record_id, kind, decision_id, timestamp, subject_fingerprint, \
                    subject_common_name, subject_roles, source_address, action, masked_input, \
                    result, bundle_revision, outcome, redaction, position) \
     ORDER BY position \
     RETURNING record_id, ingest_id";

/// A sealed record waiting to be published, with its partition key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxItem {
    pub sealed: SealedRecord,
    /// Kafka message key: the debit account of a transfer's records, the account of an
    /// account record, otherwise the subject fingerprint (chosen by the writer).
    pub key: String,
}

/// The default outbox key of a record that belongs to no account: its subject fingerprint.
pub fn subject_key(record: &NewRecord) -> String {
    record.subject.fingerprint_sha256.clone()
}

/// Inserts `records` (each with its outbox key) into the caller's transaction, unsealed.
/// With `outbox` false no outbox rows are written (no Kafka relay is configured).
///
/// Call inside the write transaction that also writes what the records describe; if anything
/// fails, roll back. Validation happens before anything is written. Returns how many records
/// were inserted.
pub async fn append(
    conn: &mut PgConnection,
    records: Vec<(NewRecord, String)>,
    outbox: bool,
) -> Result<usize, AuditError> {
    if records.is_empty() {
        return Ok(0);
    }
    if records.len() > APPEND_RECORDS_MAX {
        return Err(AuditError::TooManyRecords {
            records: records.len(),
            records_max: APPEND_RECORDS_MAX,
        });
    }
    let count = records.len();
    crate::inputs::insert_postgres(
        &mut *conn,
        &records.iter().map(|(record, _)| record).collect::<Vec<_>>(),
    )
    .await?;
    let mut record_ids = Vec::with_capacity(count);
    let mut keys = Vec::with_capacity(count);
    let mut text: [Vec<String>; 12] = Default::default();
    let mut common_names: Vec<Option<String>> = Vec::with_capacity(count);
    for (record, key) in records {
        let columns = encoding::validated_columns(&record)?;
        record_ids.push(record.record_id);
        keys.push(key);
        common_names.push(columns.subject_common_name);
        for (column, value) in text.iter_mut().zip([
            columns.kind,
            columns.decision_id,
            columns.timestamp,
            columns.subject_fingerprint,
            columns.subject_roles,
            columns.source_address,
            columns.action,
            columns.masked_input,
            columns.result,
            columns.bundle_revision,
            columns.outcome,
            columns.redaction,
        ]) {
            column.push(value);
        }
    }
    let [
        kind,
        decision_id,
        timestamp,
        subject_fingerprint,
        subject_roles,
        source_address,
        action,
        masked_input,
        result,
        bundle_revision,
        outcome,
        redaction,
    ] = text;
    let sql = if outbox {
        sqlx::AssertSqlSafe(format!(
            "WITH inserted AS ({INSERT_RECORDS}), \
             queued AS (INSERT INTO audit_unsealed (record_id, ingest_id) \
                        SELECT record_id, ingest_id FROM inserted) \
             INSERT INTO outbox (record_id, key) \
             SELECT inserted.record_id, keys.key FROM inserted \
             JOIN UNNEST($1::uuid[], $15::text[]) AS keys (record_id, key) \
               ON keys.record_id = inserted.record_id"
        ))
    } else {
        sqlx::AssertSqlSafe(format!(
            "WITH inserted AS ({INSERT_RECORDS}) \
             INSERT INTO audit_unsealed (record_id, ingest_id) \
             SELECT record_id, ingest_id FROM inserted"
        ))
    };
    let mut query = sqlx::query(sql)
        .bind(&record_ids)
        .bind(kind)
        .bind(decision_id)
        .bind(timestamp)
        .bind(subject_fingerprint)
        .bind(common_names)
        .bind(subject_roles)
        .bind(source_address)
        .bind(action)
        .bind(masked_input)
        .bind(result)
        .bind(bundle_revision)
        .bind(outcome)
        .bind(redaction);
    if outbox {
        query = query.bind(keys);
    }
    query.execute(&mut *conn).await?;
    Ok(count)
}

/// Checks, inside the caller's open transaction, that an audit record could be appended right
/// now: appends a probe in a savepoint and rolls it back.
pub async fn probe_writable(conn: &mut PgConnection) -> Result<(), AuditError> {
    let mut savepoint = conn.begin().await?;
    let probe = NewRecord {
        record_id: Uuid::now_v7(),
        kind: crate::RecordKind::Decision,
        decision_id: Uuid::nil(),
        timestamp: time::OffsetDateTime::now_utc(),
        subject: crate::Subject {
            fingerprint_sha256: "probe".into(),
            common_name: None,
            roles: Vec::new(),
        },
        source_address: "probe".into(),
        action: "audit.probe".into(),
        masked_input: serde_json::Value::Null,
        result: serde_json::Value::Null,
        bundle_revision: "probe".into(),
        outcome: crate::Outcome::Error,
        redaction: Default::default(),
        sealed_input: None,
    };
    let appended = append(&mut savepoint, vec![(probe, "probe".to_owned())], true).await;
    savepoint.rollback().await?;
    appended.map(|_| ())
}

/// Seals up to `records_max` unsealed records (clamped to [`SEAL_BATCH_RECORDS_MAX`]) onto the
/// chain, in ingest order, in one transaction on `conn`. Returns how many were sealed.
///
/// Only the holder of the advisory lock [`SEALER_LOCK_KEY`] may call it (on the connection
/// that holds the lock). Two concurrent sealers cannot corrupt the chain anyway: the sequence
/// primary key and the unique record_id make the second one's transaction fail.
pub async fn seal_pending(conn: &mut PgConnection, records_max: i64) -> Result<usize, AuditError> {
    if records_max < 1 {
        return Err(AuditError::InvalidLimit { limit: records_max });
    }
    let mut transaction = conn.begin().await?;
    let head = read_head(&mut transaction).await?;
    let (mut sequence, mut previous_hash) = head.map_or((0, GENESIS_PREVIOUS_HASH), |head| {
        (head.sequence, head.hash)
    });
    let rows = sqlx::query(
        "SELECT r.record_id::text AS record_id, r.kind, r.decision_id, r.timestamp, \
                r.subject_fingerprint, r.subject_common_name, r.subject_roles, r.source_address, \
                r.action, r.masked_input, r.result, r.bundle_revision, r.outcome, r.redaction \
         FROM audit_unsealed u JOIN audit_records r ON r.record_id = u.record_id \
         ORDER BY u.ingest_id LIMIT $1",
    )
    .bind(records_max.min(SEAL_BATCH_RECORDS_MAX))
    .fetch_all(&mut *transaction)
    .await?;
    if rows.is_empty() {
        transaction.rollback().await?;
        return Ok(0);
    }
    let mut sequences = Vec::with_capacity(rows.len());
    let mut record_ids = Vec::with_capacity(rows.len());
    let mut previous_hashes = Vec::with_capacity(rows.len());
    let mut hashes = Vec::with_capacity(rows.len());
    for row in &rows {
        let columns = columns_from_row(row).map_err(|reason| AuditError::CorruptRecord {
            sequence: sequence.saturating_add(1),
            reason,
        })?;
        let record_id =
            Uuid::parse_str(&columns.record_id).map_err(|error| AuditError::CorruptRecord {
                sequence: sequence.saturating_add(1),
                reason: format!("record_id: {error}"),
            })?;
        sequence = sequence
            .checked_add(1)
            .ok_or(AuditError::SequenceExhausted)?;
        // The hash covers exactly the stored text, as on SQLite: verify recomputes it from the
        // same columns.
        let hash = encoding::hash_columns(&previous_hash, sequence, &columns);
        sequences.push(sequence);
        record_ids.push(record_id);
        previous_hashes.push(previous_hash.to_vec());
        hashes.push(hash.to_vec());
        previous_hash = hash;
    }
    sqlx::query(
        "INSERT INTO audit_seals (sequence, record_id, previous_hash, hash) \
         SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::bytea[], $4::bytea[])",
    )
    .bind(&sequences)
    .bind(&record_ids)
    .bind(previous_hashes)
    .bind(hashes)
    .execute(&mut *transaction)
    .await?;
    sqlx::query("DELETE FROM audit_unsealed WHERE record_id = ANY($1)")
        .bind(&record_ids)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(record_ids.len())
}

/// Records appended but not sealed yet.
pub async fn unsealed_count(pool: &PgPool) -> Result<i64, AuditError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_unsealed")
        .fetch_one(pool)
        .await?;
    Ok(count)
}

/// Whether every record whose `ingest_id` is at most `ingest_id` is sealed.
pub async fn sealed_through(pool: &PgPool, ingest_id: i64) -> Result<bool, AuditError> {
    let pending: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM audit_unsealed WHERE ingest_id <= $1)")
            .bind(ingest_id)
            .fetch_one(pool)
            .await?;
    Ok(!pending)
}

/// The highest `ingest_id` appended so far (committed), 0 if none.
pub async fn last_ingest_id(pool: &PgPool) -> Result<i64, AuditError> {
    let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(ingest_id), 0) FROM audit_records")
        .fetch_one(pool)
        .await?;
    Ok(last)
}

/// Sealed records with `sequence > after_sequence`, in order, at most `limit` (clamped to
/// [`READ_RECORDS_MAX`]).
pub async fn read_after(
    pool: &PgPool,
    after_sequence: i64,
    limit: i64,
) -> Result<Vec<SealedRecord>, AuditError> {
    if limit < 1 {
        return Err(AuditError::InvalidLimit { limit });
    }
    let rows = select_after(pool, after_sequence, limit.min(READ_RECORDS_MAX)).await?;
    rows.iter().map(decode_row).collect()
}

async fn select_after(pool: &PgPool, after: i64, limit: i64) -> Result<Vec<PgRow>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {SEALED_COLUMNS} FROM audit_seals s \
         JOIN audit_records r ON r.record_id = s.record_id \
         WHERE s.sequence > $1 ORDER BY s.sequence LIMIT $2"
    ));
    sqlx::query(sql)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
}

fn decode_row(row: &PgRow) -> Result<SealedRecord, AuditError> {
    let sequence: i64 = row.try_get("sequence")?;
    StoredSeal::from_row(row)
        .and_then(|stored| stored.into_sealed(sequence))
        .map_err(|reason| AuditError::CorruptRecord { sequence, reason })
}

/// Number of sealed records.
pub async fn count(pool: &PgPool) -> Result<i64, AuditError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_seals")
        .fetch_one(pool)
        .await?;
    Ok(count)
}

/// The last sealed record's sequence and hash, or `None` for an empty chain.
pub async fn head(pool: &PgPool) -> Result<Option<ChainHead>, AuditError> {
    let mut conn = pool.acquire().await?;
    read_head(&mut conn).await
}

async fn read_head(conn: &mut PgConnection) -> Result<Option<ChainHead>, AuditError> {
    let row: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT sequence, hash FROM audit_seals ORDER BY sequence DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let Some((sequence, hash)) = row else {
        return Ok(None);
    };
    let hash = hash_from_bytes(&hash).map_err(|reason| AuditError::CorruptRecord {
        sequence,
        reason: format!("hash: {reason}"),
    })?;
    Ok(Some(ChainHead { sequence, hash }))
}

/// Walks the sealed chain in sequence order, recomputing every hash from the stored record
/// columns, and reports the first broken record (as `sqlite::verify` does). Records not
/// sealed yet are not part of the chain and not checked. Usable from `audit verify --store
/// postgres://...` with any role that can SELECT the audit tables.
pub async fn verify(pool: &PgPool) -> Result<VerifyReport, AuditError> {
    verify_inner(pool, None).await
}

/// [`verify`], and also checks that the chain still contains `anchor` with the same hash.
pub async fn verify_against_anchor(
    pool: &PgPool,
    anchor: &ChainHead,
) -> Result<VerifyReport, AuditError> {
    verify_inner(pool, Some(anchor)).await
}

async fn verify_inner(
    pool: &PgPool,
    anchor: Option<&ChainHead>,
) -> Result<VerifyReport, AuditError> {
    let mut walk = ChainWalk::new(anchor);
    // After a retention prune the chain starts after the newest prune anchor.
    if let Some(pruned) = crate::retention::latest_anchor(pool).await? {
        walk = walk.starting_after(&ChainHead {
            sequence: pruned.pruned_through,
            hash: pruned.last_hash,
        });
    }
    // The CHECK (sequence > 0) keeps planted rows out, unless it was dropped: start below it.
    let mut cursor = i64::MIN;
    loop {
        let rows = select_after(pool, cursor, VERIFY_PAGE_RECORDS).await?;
        let Some(last_row) = rows.last() else { break };
        cursor = last_row.try_get("sequence")?;
        for row in &rows {
            let sequence: i64 = row.try_get("sequence")?;
            if !walk.check(sequence, StoredSeal::from_row(row)) {
                break;
            }
        }
        if walk.is_broken() {
            break;
        }
    }
    Ok(walk.finish())
}

/// Undelivered outbox items whose records are sealed, in chain order, at most `limit`
/// (clamped to [`READ_RECORDS_MAX`]). Unsealed records wait: consumers see the chain's order.
pub async fn outbox_pending(pool: &PgPool, limit: i64) -> Result<Vec<OutboxItem>, AuditError> {
    if limit < 1 {
        return Err(AuditError::InvalidLimit { limit });
    }
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {SEALED_COLUMNS}, o.key AS outbox_key FROM outbox o \
         JOIN audit_seals s ON s.record_id = o.record_id \
         JOIN audit_records r ON r.record_id = o.record_id \
         WHERE o.delivered_at IS NULL ORDER BY s.sequence LIMIT $1"
    ));
    let rows = sqlx::query(sql)
        .bind(limit.min(READ_RECORDS_MAX))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(OutboxItem {
                sealed: decode_row(row)?,
                key: row.try_get("outbox_key")?,
            })
        })
        .collect()
}

/// Marks outbox items delivered (the broker acknowledged them). Already delivered or unknown
/// ids are ignored. Returns how many rows changed.
pub async fn outbox_mark_delivered(pool: &PgPool, record_ids: &[Uuid]) -> Result<u64, AuditError> {
    if record_ids.is_empty() {
        return Ok(0);
    }
    let result = sqlx::query(
        "UPDATE outbox SET delivered_at = now() \
         WHERE record_id = ANY($1) AND delivered_at IS NULL",
    )
    .bind(record_ids)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Undelivered outbox rows (sealed or not). Counted on the partial index.
pub async fn outbox_backlog(pool: &PgPool) -> Result<i64, AuditError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
        .fetch_one(pool)
        .await?;
    Ok(count)
}
