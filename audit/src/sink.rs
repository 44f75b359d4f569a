//! Delivery of sealed records to consumers outside the database.
//!
//! The `audit_records` table is the source of truth. A relay reads it with
//! [`crate::sqlite::read_after`] from the sink's own cursor ([`AuditSink::delivered_through`])
//! and hands the batch to [`AuditSink::deliver`]; the cursor only moves once the sink has made
//! the batch durable. A crash or a failed delivery therefore means redelivery, never loss, and
//! sinks skip records they already hold, so redelivery never duplicates either.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use sqlx::SqlitePool;

use crate::encoding::{canonical_json, format_timestamp};
use crate::{AuditError, SealedRecord, sqlite};

/// Largest decision-log line we read back when recovering the cursor. A line holds one record,
/// whose fields are each bounded by `encoding::FIELD_BYTES_MAX`; anything longer than this was
/// not written by us.
const LINE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Read size while scanning the decision log backwards for the last line.
const SCAN_CHUNK_BYTES: usize = 64 * 1024;

/// A consumer of sealed records that keeps its own cursor.
pub trait AuditSink: Send {
    /// Short stable name for logs and metrics.
    fn name(&self) -> &str;

    /// Makes `batch` durable in the sink. Records at or below `delivered_through()` are skipped
    /// (redelivery after a restart); the rest must continue the sequence without a gap. On `Err`
    /// the cursor does not move and the same records can be delivered again.
    fn deliver(
        &mut self,
        batch: &[SealedRecord],
    ) -> impl Future<Output = Result<(), AuditError>> + Send;

    /// Highest sequence durably delivered; 0 when nothing has been.
    fn delivered_through(&self) -> i64;
}

/// One relay step: reads up to `batch_records_max` records after the sink's cursor and delivers
/// them. Returns how many records were read; 0 means the sink has caught up. The caller owns the
/// loop, its pacing and its shutdown.
pub async fn relay_batch<S: AuditSink>(
    pool: &SqlitePool,
    sink: &mut S,
    batch_records_max: i64,
) -> Result<usize, AuditError> {
    let batch = sqlite::read_after(pool, sink.delivered_through(), batch_records_max).await?;
    if batch.is_empty() {
        return Ok(0);
    }
    sink.deliver(&batch).await?;
    Ok(batch.len())
}

/// The decision-log `path` for an action: the resource before the first `.`, as in
/// "transfer.create" → "countersign/transfer/decision". The one place this mapping lives.
/// Characters outside `[a-z0-9_]` become `_` so a path is always a valid OPA path.
///
/// Exception: approving or rejecting a held transfer ("transfer.approve", "transfer.reject")
/// is decided by the approval rule, so its events carry that rule's path,
/// "countersign/approval/decision" (OPA consumers group decisions by the rule that made them).
pub fn decision_path(action: &str) -> String {
    if matches!(action, "transfer.approve" | "transfer.reject") {
        return "countersign/approval/decision".to_owned();
    }
    let resource = action
        .split_once('.')
        .map_or(action, |(resource, _)| resource);
    let resource: String = resource
        .chars()
        .map(|character| match character {
            'a'..='z' | '0'..='9' | '_' => character,
            'A'..='Z' => character.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    let resource = if resource.is_empty() {
        "unknown"
    } else {
        &resource
    };
    format!("countersign/{resource}/decision")
}

/// OPA's `labels` block: which instance wrote the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionLogLabels {
    pub id: String,
    pub version: String,
}

impl Default for DecisionLogLabels {
    fn default() -> Self {
        DecisionLogLabels {
            id: "countersign".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// One OPA decision-log event for a sealed record, with our chain fields under `countersign`.
/// Ledger records (posting, reservation, approval, release) are logged too (the log is the
/// complete audit trail); tell them apart by `countersign.kind` and `countersign.outcome`.
pub fn decision_log_event(sealed: &SealedRecord, labels: &DecisionLogLabels) -> Value {
    let record = &sealed.record;
    let redaction = &record.redaction;
    let mut event = json!({
        "decision_id": record.decision_id.hyphenated().to_string(),
        "labels": { "id": labels.id, "version": labels.version },
        "path": decision_path(&record.action),
        "timestamp": format_timestamp(record.timestamp),
        // The record does not carry evaluation timings; OPA consumers expect the key.
        "metrics": {},
        "bundles": { "countersign": { "revision": record.bundle_revision } },
        "requested_by": record.source_address,
        "countersign": {
            "sequence": sealed.sequence,
            "record_id": record.record_id.hyphenated().to_string(),
            "kind": record.kind.as_str(),
            "action": record.action,
            "outcome": record.outcome.as_str(),
            "hash": hex::encode(sealed.hash),
            "previous_hash": hex::encode(sealed.previous_hash),
            "subject": {
                "fingerprint_sha256": record.subject.fingerprint_sha256,
                "common_name": record.subject.common_name,
                "roles": record.subject.roles,
            },
        },
    });
    // As OPA writes a masked event: an erased document is absent, and `erased` / `masked`
    // appear only when the mask did something.
    if !redaction.erased_whole("/input") {
        event["input"] = record.masked_input.clone();
    }
    if !redaction.erased_whole("/result") {
        event["result"] = record.result.clone();
    }
    if !redaction.erased.is_empty() {
        event["erased"] = json!(redaction.erased);
    }
    if !redaction.masked.is_empty() {
        event["masked"] = json!(redaction.masked);
    }
    if let Some(error) = &redaction.error {
        event["countersign"]["mask_error"] = json!(error);
    }
    event
}

/// An append-only JSON Lines decision log: one canonical-JSON event per line, fsynced per batch.
///
/// The file is its own cursor: `open` reads `countersign.sequence` from the last complete line,
/// after cutting off a torn last line left by a crash mid-write (the store redelivers it).
#[derive(Debug)]
pub struct JsonlDecisionLog {
    path: PathBuf,
    // Shared with the blocking write task; `&File` implements `Write`.
    file: Arc<File>,
    labels: DecisionLogLabels,
    delivered_through: i64,
    /// File length covering exactly the delivered lines.
    committed_length_bytes: u64,
    /// Set while a write is in flight or after one failed: the file may end in a partial line
    /// that must be cut back to `committed_length_bytes` before the next write.
    needs_repair: bool,
}

impl JsonlDecisionLog {
    /// Opens or creates the log and recovers its cursor.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let path = path.as_ref().to_path_buf();
        let task_path = path.clone();
        let recovered = tokio::task::spawn_blocking(move || recover(&task_path)).await??;
        if recovered.truncated_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                truncated_bytes = recovered.truncated_bytes,
                delivered_through = recovered.delivered_through,
                "decision log ended in a torn line; cut it off, the records will be redelivered"
            );
        }
        Ok(JsonlDecisionLog {
            path,
            file: Arc::new(recovered.file),
            labels: DecisionLogLabels::default(),
            delivered_through: recovered.delivered_through,
            committed_length_bytes: recovered.length_bytes,
            needs_repair: false,
        })
    }

    /// Replaces the default labels (`countersign`, crate version), e.g. with an instance id.
    pub fn with_labels(mut self, labels: DecisionLogLabels) -> Self {
        self.labels = labels;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, source: io::Error) -> AuditError {
        AuditError::DecisionLogIo {
            path: self.path.clone(),
            source,
        }
    }
}

impl JsonlDecisionLog {
    /// After a retention prune the chain starts at `pruned_through + 1`: a sink behind that
    /// point can never receive the pruned records and continues after them. Returns how many
    /// sequences it skipped (0 when it was not behind; more than its own gap is logged by the
    /// caller).
    pub fn skip_pruned(&mut self, pruned_through: i64) -> i64 {
        if self.delivered_through >= pruned_through {
            return 0;
        }
        let skipped = pruned_through - self.delivered_through;
        self.delivered_through = pruned_through;
        skipped
    }
}

impl AuditSink for JsonlDecisionLog {
    fn name(&self) -> &str {
        "jsonl_decision_log"
    }

    async fn deliver(&mut self, batch: &[SealedRecord]) -> Result<(), AuditError> {
        let mut lines = Vec::new();
        let mut through = self.delivered_through;
        for sealed in batch {
            if sealed.sequence <= through {
                continue;
            }
            // `sealed.sequence > through`, so `through + 1` cannot overflow.
            let expected = through + 1;
            if sealed.sequence != expected {
                return Err(AuditError::SinkSequenceGap {
                    sink: self.name().to_owned(),
                    expected,
                    found: sealed.sequence,
                });
            }
            lines.extend_from_slice(
                canonical_json(&decision_log_event(sealed, &self.labels)).as_bytes(),
            );
            lines.push(b'\n');
            through = sealed.sequence;
        }
        if lines.is_empty() {
            return Ok(());
        }

        let repair_to_bytes = self.needs_repair.then_some(self.committed_length_bytes);
        // Set before awaiting: if this future is dropped mid-write, the next call repairs.
        self.needs_repair = true;
        let written_bytes = lines.len() as u64;
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            if let Some(length_bytes) = repair_to_bytes {
                file.set_len(length_bytes)?;
            }
            // The file is opened in append mode, so this lands after the last complete line.
            (&*file).write_all(&lines)?;
            file.sync_data()
        })
        .await?
        .map_err(|source| self.io_error(source))?;

        self.needs_repair = false;
        self.committed_length_bytes += written_bytes;
        self.delivered_through = through;
        Ok(())
    }

    fn delivered_through(&self) -> i64 {
        self.delivered_through
    }
}

struct Recovered {
    file: File,
    delivered_through: i64,
    length_bytes: u64,
    truncated_bytes: u64,
}

/// Blocking: opens the log, cuts off a torn last line, reads the cursor from the last line.
fn recover(path: &Path) -> Result<Recovered, AuditError> {
    let io_error = |source| AuditError::DecisionLogIo {
        path: path.to_owned(),
        source,
    };
    let corrupt = |reason: String| AuditError::DecisionLogCorrupt {
        path: path.to_owned(),
        reason,
    };

    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error)?;
    if !existed {
        // A new file's directory entry must be durable too, or a crash can lose the whole log.
        sync_parent_directory(path).map_err(io_error)?;
    }
    let length_bytes = file.metadata().map_err(io_error)?.len();

    // Everything after the last newline is a torn write.
    let complete_length_bytes =
        match last_newline_before(&mut file, length_bytes).map_err(io_error)? {
            Some(position) => position + 1,
            None if length_bytes <= LINE_BYTES_MAX => 0,
            None => {
                return Err(corrupt(format!(
                    "no line break in the last {LINE_BYTES_MAX} bytes"
                )));
            }
        };
    let truncated_bytes = length_bytes - complete_length_bytes;
    if truncated_bytes > 0 {
        file.set_len(complete_length_bytes).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
    }
    if complete_length_bytes == 0 {
        return Ok(Recovered {
            file,
            delivered_through: 0,
            length_bytes: 0,
            truncated_bytes,
        });
    }

    let line_end = complete_length_bytes - 1;
    let line_start = last_newline_before(&mut file, line_end)
        .map_err(io_error)?
        .map_or(0, |position| position + 1);
    let line_length_bytes = line_end - line_start;
    if line_length_bytes > LINE_BYTES_MAX {
        return Err(corrupt(format!(
            "last line is {line_length_bytes} bytes, more than {LINE_BYTES_MAX}"
        )));
    }
    let mut line = vec![0; line_length_bytes as usize];
    file.seek(SeekFrom::Start(line_start)).map_err(io_error)?;
    file.read_exact(&mut line).map_err(io_error)?;
    let event: Value = serde_json::from_slice(&line)
        .map_err(|error| corrupt(format!("last complete line is not JSON: {error}")))?;
    let delivered_through = event
        .pointer("/countersign/sequence")
        .and_then(Value::as_i64)
        .ok_or_else(|| corrupt("last line has no integer countersign.sequence".to_owned()))?;
    Ok(Recovered {
        file,
        delivered_through,
        length_bytes: complete_length_bytes,
        truncated_bytes,
    })
}

/// Position of the last `\n` before byte `end`, scanning backwards at most `LINE_BYTES_MAX + 1`
/// bytes (no line we write is longer), or `None`.
fn last_newline_before(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    let scan_floor = end.saturating_sub(LINE_BYTES_MAX + 1);
    let mut chunk = vec![0; SCAN_CHUNK_BYTES];
    let mut chunk_end = end;
    while chunk_end > scan_floor {
        let chunk_start = chunk_end
            .saturating_sub(SCAN_CHUNK_BYTES as u64)
            .max(scan_floor);
        let chunk_length = (chunk_end - chunk_start) as usize;
        file.seek(SeekFrom::Start(chunk_start))?;
        file.read_exact(&mut chunk[..chunk_length])?;
        if let Some(index) = chunk[..chunk_length]
            .iter()
            .rposition(|&byte| byte == b'\n')
        {
            return Ok(Some(chunk_start + index as u64));
        }
        chunk_end = chunk_start;
    }
    Ok(None)
}

fn sync_parent_directory(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all(),
        // A bare file name lives in the current directory.
        _ => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_paths() {
        let cases = [
            ("transfer.create", "countersign/transfer/decision"),
            ("transfer.approve", "countersign/approval/decision"),
            ("transfer.reject", "countersign/approval/decision"),
            ("approval.approve", "countersign/approval/decision"),
            ("ledger.reserve", "countersign/ledger/decision"),
            ("ledger.release.expired", "countersign/ledger/decision"),
            ("account.create", "countersign/account/decision"),
            ("ledger.seed", "countersign/ledger/decision"),
            ("transfer", "countersign/transfer/decision"),
            ("Bad-Name.x", "countersign/bad_name/decision"),
            ("", "countersign/unknown/decision"),
        ];
        for (action, expected) in cases {
            assert_eq!(decision_path(action), expected, "action {action:?}");
        }
    }
}
