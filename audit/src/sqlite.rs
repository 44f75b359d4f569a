//! The `audit_records` table: append (inside the ledger's write transaction), read, verify.
//!
//! Rows are never updated or deleted. Triggers refuse UPDATE and DELETE so application bugs
//! cannot rewrite history; someone with raw file access can drop the triggers, which is what
//! the hash chain and [`verify`] are for.

use serde::Serialize;
use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::encoding::{self, GENESIS_PREVIOUS_HASH};
use crate::verify::{ChainWalk, StoredSeal, hash_from_bytes};
use crate::{AuditError, NewRecord, SealedRecord};

/// Most records one `append` call takes. The ledger group-commits a bounded batch of commands,
/// each writing a handful of records; this is far above that and stops a runaway caller from
/// building one enormous transaction.
pub const APPEND_RECORDS_MAX: usize = 10_000;

/// Most records one `read_after` call returns; larger limits are clamped to it so a sink
/// relay's memory per batch stays bounded.
pub const READ_RECORDS_MAX: i64 = 1_000;

/// Records per page while verifying, so a 10M-row table is streamed, not loaded.
const VERIFY_PAGE_RECORDS: i64 = 1_000;

/// Schema, idempotent. STRICT makes SQLite enforce the column types, so a tampered value of
/// the wrong type is refused at write time instead of being silently coerced.
const SCHEMA_STATEMENTS: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS audit_records (
        sequence INTEGER PRIMARY KEY,
        record_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        decision_id TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        subject_fingerprint TEXT NOT NULL,
        subject_common_name TEXT,
        subject_roles TEXT NOT NULL,
        source_address TEXT NOT NULL,
        action TEXT NOT NULL,
        masked_input TEXT NOT NULL,
        result TEXT NOT NULL,
        bundle_revision TEXT NOT NULL,
        outcome TEXT NOT NULL,
        redaction TEXT NOT NULL,
        previous_hash BLOB NOT NULL CHECK (length(previous_hash) = 32),
        hash BLOB NOT NULL CHECK (length(hash) = 32)
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS audit_records_decision_id ON audit_records (decision_id)",
    "CREATE INDEX IF NOT EXISTS audit_records_timestamp ON audit_records (timestamp)",
    "CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
     BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
     BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END",
];

/// Column list shared by every SELECT that decodes a full record.
macro_rules! record_columns {
    () => {
        "sequence, record_id, kind, decision_id, timestamp, subject_fingerprint, \
         subject_common_name, subject_roles, source_address, action, masked_input, result, \
         bundle_revision, outcome, redaction, previous_hash, hash"
    };
}

const INSERT_RECORD: &str = concat!(
    "INSERT INTO audit_records (",
    record_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
);

const SELECT_AFTER: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM audit_records WHERE sequence > ?1 ORDER BY sequence LIMIT ?2"
);

/// The last record of the chain. Keep one outside the database (in a report, a ticket, another
/// system) and pass it to [`verify_against_anchor`] to also detect truncation or a rewritten
/// tail, which no chain can detect on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub sequence: i64,
    #[serde(with = "crate::encoding::hash_hex_serde")]
    pub hash: [u8; 32],
}

/// Result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records verified intact, from sequence 1 up to the first broken one (or the end).
    pub records_checked: u64,
    /// The first record that fails verification; `None` if the whole chain is intact.
    pub first_broken: Option<BrokenRecord>,
    /// The last record verified intact, usable as the next anchor.
    pub last_verified: Option<ChainHead>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Where the chain breaks, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenRecord {
    pub sequence: i64,
    pub kind: BreakKind,
    /// Human-readable detail for the operator.
    pub reason: String,
}

/// The ways a chain can break; callers may alert differently on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakKind {
    /// This sequence number is absent: the row was deleted (or renumbered).
    Missing,
    /// A row with a sequence number below the chain's next one (e.g. 0 or negative).
    UnexpectedSequence,
    /// The row's values cannot be decoded into a record.
    Undecodable,
    /// A column holds an equivalent but non-canonical spelling, so it was rewritten.
    NonCanonical,
    /// `previous_hash` does not equal the hash of the record before: rows were swapped,
    /// reordered or re-chained.
    PreviousHashMismatch,
    /// The recomputed hash differs from the stored one: a field was modified.
    HashMismatch,
    /// The anchor's record no longer exists: the chain was cut short.
    Truncated,
    /// The record at the anchor's sequence has a different hash: the tail was rewritten.
    AnchorMismatch,
}

/// Creates the table, its indexes and the append-only triggers if they do not exist.
pub async fn migrate(conn: &mut SqliteConnection) -> Result<(), AuditError> {
    for statement in SCHEMA_STATEMENTS {
        sqlx::query(statement).execute(&mut *conn).await?;
    }
    crate::inputs::migrate_sqlite(&mut *conn).await?;
    Ok(())
}

/// Seals `records` onto the end of the chain and inserts them, returning them in order.
///
/// Call this inside the caller's write transaction (`append(&mut *tx, ...)`): the ledger writes
/// postings and their audit records atomically, and the transaction's write lock is what makes
/// "read the head, then insert after it" safe. If anything fails, roll the transaction back;
/// the chain is then unchanged. Timestamps are converted to UTC.
pub async fn append(
    conn: &mut SqliteConnection,
    records: Vec<NewRecord>,
) -> Result<Vec<SealedRecord>, AuditError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    if records.len() > APPEND_RECORDS_MAX {
        return Err(AuditError::TooManyRecords {
            records: records.len(),
            records_max: APPEND_RECORDS_MAX,
        });
    }
    // Validate everything before writing anything, so a bad record fails the call cleanly.
    let mut prepared = Vec::with_capacity(records.len());
    for mut record in records {
        record.timestamp = record.timestamp.to_offset(time::UtcOffset::UTC);
        let columns = encoding::validated_columns(&record)?;
        prepared.push((record, columns));
    }

    let head = read_head(&mut *conn).await?;
    let (mut sequence, mut previous_hash) = head.map_or((0, GENESIS_PREVIOUS_HASH), |head| {
        (head.sequence, head.hash)
    });

    let mut sealed = Vec::with_capacity(prepared.len());
    for (record, columns) in prepared {
        sequence = sequence
            .checked_add(1)
            .ok_or(AuditError::SequenceExhausted)?;
        let hash = encoding::hash_columns(&previous_hash, sequence, &columns);
        sqlx::query(INSERT_RECORD)
            .bind(sequence)
            .bind(columns.record_id)
            .bind(columns.kind)
            .bind(columns.decision_id)
            .bind(columns.timestamp)
            .bind(columns.subject_fingerprint)
            .bind(columns.subject_common_name)
            .bind(columns.subject_roles)
            .bind(columns.source_address)
            .bind(columns.action)
            .bind(columns.masked_input)
            .bind(columns.result)
            .bind(columns.bundle_revision)
            .bind(columns.outcome)
            .bind(columns.redaction)
            .bind(previous_hash.to_vec())
            .bind(hash.to_vec())
            .execute(&mut *conn)
            .await?;
        sealed.push(SealedRecord {
            sequence,
            record,
            previous_hash,
            hash,
        });
        previous_hash = hash;
    }
    crate::inputs::insert_sqlite(
        &mut *conn,
        &sealed
            .iter()
            .map(|sealed| &sealed.record)
            .collect::<Vec<_>>(),
    )
    .await?;
    Ok(sealed)
}

/// Checks, inside the caller's open write transaction, that an audit record could be
/// appended right now (disk, permissions, triggers): appends a probe record in a savepoint
/// and rolls it back, so the chain is unchanged whatever happens.
pub async fn probe_writable(conn: &mut SqliteConnection) -> Result<(), AuditError> {
    sqlx::query("SAVEPOINT audit_probe")
        .execute(&mut *conn)
        .await?;
    let probe = NewRecord {
        record_id: uuid::Uuid::nil(),
        kind: crate::RecordKind::Decision,
        decision_id: uuid::Uuid::nil(),
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
    let appended = append(&mut *conn, vec![probe]).await;
    sqlx::query("ROLLBACK TO audit_probe")
        .execute(&mut *conn)
        .await?;
    sqlx::query("RELEASE audit_probe")
        .execute(&mut *conn)
        .await?;
    appended.map(|_| ())
}

/// Records with `sequence > after_sequence`, in sequence order, at most `limit` of them
/// (clamped to [`READ_RECORDS_MAX`]). Sinks pass their cursor as `after_sequence`.
pub async fn read_after(
    pool: &SqlitePool,
    after_sequence: i64,
    limit: i64,
) -> Result<Vec<SealedRecord>, AuditError> {
    if limit < 1 {
        return Err(AuditError::InvalidLimit { limit });
    }
    let rows = sqlx::query(SELECT_AFTER)
        .bind(after_sequence)
        .bind(limit.min(READ_RECORDS_MAX))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            // INTEGER PRIMARY KEY is the rowid: always an integer.
            let sequence: i64 = row.try_get("sequence")?;
            StoredSeal::from_row(row)
                .and_then(|stored| stored.into_sealed(sequence))
                .map_err(|reason| AuditError::CorruptRecord { sequence, reason })
        })
        .collect()
}

/// Number of stored records.
pub async fn count(pool: &SqlitePool) -> Result<i64, AuditError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_records")
        .fetch_one(pool)
        .await?;
    Ok(count)
}

/// The last record's sequence and hash, or `None` for an empty chain.
pub async fn head(pool: &SqlitePool) -> Result<Option<ChainHead>, AuditError> {
    let mut conn = pool.acquire().await?;
    read_head(&mut conn).await
}

async fn read_head(conn: &mut SqliteConnection) -> Result<Option<ChainHead>, AuditError> {
    let row: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT sequence, hash FROM audit_records ORDER BY sequence DESC LIMIT 1")
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

/// Walks the whole chain in sequence order, recomputing every hash from the stored columns,
/// and reports the first broken record. Tampering is a finding in the report, not an `Err`;
/// `Err` means the database could not be read.
pub async fn verify(pool: &SqlitePool) -> Result<VerifyReport, AuditError> {
    verify_inner(pool, None).await
}

/// [`verify`], and also checks that the chain still contains `anchor` (a head recorded
/// earlier) with the same hash, which detects deleted or re-sealed tail records.
pub async fn verify_against_anchor(
    pool: &SqlitePool,
    anchor: &ChainHead,
) -> Result<VerifyReport, AuditError> {
    verify_inner(pool, Some(anchor)).await
}

async fn verify_inner(
    pool: &SqlitePool,
    anchor: Option<&ChainHead>,
) -> Result<VerifyReport, AuditError> {
    let mut walk = ChainWalk::new(anchor);
    // Start below every possible sequence so rows planted at 0 or below are seen too.
    let mut cursor = i64::MIN;
    loop {
        let rows = sqlx::query(SELECT_AFTER)
            .bind(cursor)
            .bind(VERIFY_PAGE_RECORDS)
            .fetch_all(pool)
            .await?;
        let Some(last_row) = rows.last() else { break };
        cursor = last_row.try_get("sequence")?;
        for row in &rows {
            // INTEGER PRIMARY KEY is the rowid: always an integer, so this cannot be tampered
            // into an undecodable value.
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
