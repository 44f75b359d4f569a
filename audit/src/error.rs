use std::path::PathBuf;

/// Errors the audit crate returns. Tampering found by `verify` is *not* an error: it is a
/// finding, reported in [`crate::VerifyReport`]; these variants are failures to do the work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database failed; inside `append` this must abort the caller's transaction.
    #[error("audit database error: {0}")]
    Database(#[from] sqlx::Error),

    /// A record field is larger than the encoding accepts; the caller built a bad record.
    #[error("audit record field `{field}` is {bytes} bytes, more than the limit of {bytes_max}")]
    FieldTooLarge {
        field: &'static str,
        bytes: usize,
        bytes_max: usize,
    },

    /// A JSON field nests deeper than can be stored and parsed back.
    #[error("audit record field `{field}` nests deeper than {depth_max} levels")]
    JsonTooDeep {
        field: &'static str,
        depth_max: usize,
    },

    /// The timestamp cannot be written as a four-digit-year RFC 3339 string.
    #[error("audit record timestamp year {year} is outside 0000..=9999")]
    TimestampOutOfRange { year: i32 },

    /// More records in one `append` call than the bound allows.
    #[error("{records} audit records in one append, more than the limit of {records_max}")]
    TooManyRecords { records: usize, records_max: usize },

    /// A read was asked for a non-positive number of records.
    #[error("read limit must be at least 1, got {limit}")]
    InvalidLimit { limit: i64 },

    /// The chain ran out of sequence numbers (i64::MAX records); not expected in practice.
    #[error("audit sequence numbers are exhausted")]
    SequenceExhausted,

    /// A stored row cannot be decoded into a record. `verify` reports the same condition as a
    /// broken record instead.
    #[error("audit record {sequence} cannot be decoded: {reason}")]
    CorruptRecord { sequence: i64, reason: String },

    /// A stored `audit_inputs` row cannot be decoded (wrong lengths, bad token list).
    #[error("sealed input of audit record {record_id} cannot be decoded: {reason}")]
    CorruptInput {
        record_id: uuid::Uuid,
        reason: String,
    },

    /// A sink was handed records that skip a sequence number; delivering them would lose records.
    #[error("sink `{sink}` expected sequence {expected} but was given {found}")]
    SinkSequenceGap {
        sink: String,
        expected: i64,
        found: i64,
    },

    /// The decision-log file could not be read or written.
    #[error("decision log {path}: {source}")]
    DecisionLogIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The decision-log file holds a complete line we did not write; we refuse to guess a cursor.
    #[error("decision log {path} is corrupt: {reason}")]
    DecisionLogCorrupt { path: PathBuf, reason: String },

    /// JSON serialisation failed.
    #[error("audit JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),

    /// A blocking file task panicked or was cancelled during shutdown.
    #[error("audit background task failed: {0}")]
    BackgroundTask(#[from] tokio::task::JoinError),

    /// A search or listing of the workspace index was given an invalid parameter.
    #[error("invalid audit query parameter `{parameter}`: {message}")]
    InvalidQuery {
        parameter: &'static str,
        message: String,
    },

    /// The indexer met a sealed record that does not continue the chain the tree was built
    /// on (tampering, or a broken chain): it stops there and commits nothing about it.
    #[error("audit indexer stopped at sequence {sequence}: {reason}")]
    IndexChain { sequence: i64, reason: String },

    /// Another indexer advanced the tree concurrently; this step was rolled back.
    #[error("the audit index was advanced by another indexer; step rolled back")]
    IndexConflict,

    /// A stored row of the workspace tables (tree, checkpoints, cursor) cannot be decoded.
    #[error("audit index is corrupt: {reason}")]
    CorruptIndex { reason: String },

    /// The Merkle tree could not be computed from the stored nodes.
    #[error("merkle tree: {0}")]
    Merkle(#[from] crate::merkle::MerkleError),
}
