//! `GET /v1/audit/export?from=&to=` (auditor role): a contiguous range of the audit trail as
//! the export file of [`countersign_audit::export`] — header, frontier of the prefix, the
//! records, the checkpoints inside the range, a checkpoint covering it and the consistency
//! proof to it — streamed as JSON Lines, so an auditor can verify it offline with only the
//! checkpoint public key (`countersign audit verify --offline`).
//!
//! - `from` / `to`: a sequence number (inclusive) or an RFC 3339 instant (`from` inclusive,
//!   `to` exclusive; at most microsecond precision). A time range becomes the contiguous
//!   sequence range from the first record stamped at or after `from` up to the record before
//!   the first one stamped at or after `to` (the index's exact per-minute mapping); records
//!   are stamped nearly, not strictly, in sequence order, so one stamped a moment across an
//!   edge may land on the other side. The header names the exact sequences. Only indexed
//!   records (those in the Merkle tree) are exported: `to` is clamped to the indexed size, and
//!   `from` to the oldest record still stored (after a retention prune).
//! - At most [`EXPORT_RECORDS_MAX`] records per request (a larger range is 422
//!   `export.range_too_large`: export it in parts); 404 `export.empty` if the range holds none.
//! - The covering checkpoint is the smallest stored one at or past the last record, signed by
//!   the current key; if there is none yet the handler signs one now
//!   (`Store::write_checkpoint_now`). Without a signing key configured: 409
//!   `export.signing_key_missing`.
//! - Memory is bounded: records are read a page at a time (`read_sealed_after`), encoded into
//!   a buffer and handed to the connection through a channel of [`EXPORT_CHANNEL_PAGES`]
//!   pages; a slow client slows the reader down instead of growing a buffer.
//! - Every call is itself audited like the query API's (action `audit.export`; the requested
//!   range, the sequences and the record count) before the first byte is sent: no audit
//!   record, no export (503). Refused calls are audited too (outcome `deny`).

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    Extension,
    body::Body,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use countersign_audit::{
    Outcome, SealedRecord,
    checkpoint::{Checkpoint, CheckpointSigner},
    encoding::parse_timestamp,
    export::{ExportHeader, ExportWriter},
    index::AuditQuery,
    merkle::{self, Frontier, Hash},
};
use hyper::body::Frame;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use countersign_ledger::NO_POLICY_BUNDLE;

use super::{
    ApiError,
    audit::{AUDITOR_ROLES, append_access_record, with_nodes},
};
use crate::app::{AppState, Caller};

pub const ACTION_AUDIT_EXPORT: &str = "audit.export";

/// Most records one export request may cover. At about 1 KB per record that is ~10 GB and a
/// few minutes of streaming; it bounds how long one response holds a connection and a reader.
pub const EXPORT_RECORDS_MAX: u64 = 10_000_000;
/// Records read from the store per page (`read_sealed_after` clamps to 1,000).
const EXPORT_PAGE_RECORDS: i64 = 1_000;
/// Encoded pages waiting for the connection; the export's memory is this many pages.
pub const EXPORT_CHANNEL_PAGES: usize = 4;
/// Checkpoints fetched per page while interleaving them.
const CHECKPOINT_PAGE: u32 = 1_000;
/// Longest `from`/`to` value accepted.
const RANGE_TEXT_BYTES_MAX: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// One end of the requested range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Sequence(u64),
    Time(OffsetDateTime),
}

fn parse_bound(name: &'static str, text: &str) -> Result<Bound, ApiError> {
    let invalid = |message: String| ApiError::bad_request("query.invalid", message);
    if text.is_empty() || text.len() > RANGE_TEXT_BYTES_MAX {
        return Err(invalid(format!(
            "{name} must be 1 to {RANGE_TEXT_BYTES_MAX} bytes"
        )));
    }
    if text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .ok()
            .filter(|sequence| *sequence <= merkle::TREE_SIZE_MAX)
            .map(Bound::Sequence)
            .ok_or_else(|| invalid(format!("{name}: sequence out of range")));
    }
    let time = parse_timestamp(text).map_err(|error| {
        invalid(format!(
            "{name} must be a sequence number or an RFC 3339 instant: {error}"
        ))
    })?;
    if time.nanosecond() % 1_000 != 0 {
        return Err(invalid(format!(
            "{name} must have at most microsecond precision"
        )));
    }
    Ok(Bound::Time(time))
}

/// The sequence range to export, resolved against the index.
struct Range {
    first: u64,
    last: u64,
}

/// Everything the stream needs, prepared (and every refusal decided) before the call is
/// audited and the first byte sent.
struct Prepared {
    range: Range,
    signer: Arc<CheckpointSigner>,
    covering: Checkpoint,
    frontier: Frontier,
    proof: Vec<Hash>,
}

pub async fn export(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (request, prepared) = match params {
        Ok(Query(params)) => {
            let request = json!({"from": params.from, "to": params.to});
            (request, prepare(&state, &caller, &params).await)
        }
        Err(rejection) => (
            json!({"query": "unreadable"}),
            Err(ApiError::bad_request(
                "query.invalid",
                rejection.body_text(),
            )),
        ),
    };
    // No audit record, no export: the look (or the refused attempt) is recorded before
    // anything is sent.
    let (result, outcome) = match &prepared {
        Ok(prepared) => (
            json!({
                "allowed": true,
                "reason": "answered",
                "count": prepared.range.last - prepared.range.first + 1,
                "first_sequence": prepared.range.first,
                "last_sequence": prepared.range.last,
                "covering_checkpoint": prepared.covering.tree_size,
            }),
            Outcome::Allow,
        ),
        Err(error) => {
            let outcome = match error.status() {
                StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => Outcome::Deny,
                status if status.is_server_error() => Outcome::Error,
                _ => Outcome::Allow,
            };
            let reason = error.body()["code"].clone();
            (
                json!({"allowed": outcome != Outcome::Deny, "reason": reason, "count": 0}),
                outcome,
            )
        }
    };
    // Decided by the gateway's role rule, not by a policy bundle.
    let appended = append_access_record(
        &state,
        &caller,
        ACTION_AUDIT_EXPORT,
        request.clone(),
        result,
        outcome,
        NO_POLICY_BUNDLE.to_owned(),
    )
    .await;
    if let Err(error) = appended {
        tracing::error!(error = %error, "audit export could not be audited; sending nothing");
        return Err(ApiError::Unavailable {
            code: "audit.unavailable",
            message: "the export could not be recorded in the audit trail; nothing was sent".into(),
        });
    }
    let prepared = prepared?;
    let Range { first, last } = prepared.range;
    let records = last - first + 1;
    tracing::info!(
        first_sequence = first,
        last_sequence = last,
        records,
        covering_checkpoint = prepared.covering.tree_size,
        caller = %caller.identity.fingerprint_sha256,
        "audit export started"
    );
    let header = ExportHeader::new(
        first,
        last,
        &prepared.signer.verifier(),
        request["from"].as_str().map(str::to_owned),
        request["to"].as_str().map(str::to_owned),
    );
    let (sender, receiver) = mpsc::channel(EXPORT_CHANNEL_PAGES);
    tokio::spawn(stream_export(
        state.clone(),
        header,
        prepared.frontier,
        prepared.covering,
        prepared.proof,
        prepared.signer.key_id().to_owned(),
        sender,
    ));
    let mut response = Response::new(Body::new(ExportBody { receiver }));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"countersign-audit-{first}-{last}.jsonl\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert("x-countersign-export-records", HeaderValue::from(records));
    Ok(response.into_response())
}

/// Checks the caller and the parameters and reads everything the stream starts from.
async fn prepare(
    state: &AppState,
    caller: &Caller,
    params: &ExportParams,
) -> Result<Prepared, ApiError> {
    if !caller.identity.has_any_role(AUDITOR_ROLES) {
        return Err(ApiError::RoleRequired {
            roles: AUDITOR_ROLES,
        });
    }
    let from = params
        .from
        .as_deref()
        .map(|text| parse_bound("from", text))
        .transpose()?;
    let to = params
        .to
        .as_deref()
        .map(|text| parse_bound("to", text))
        .transpose()?;
    let signer = state
        .checkpoint_signer
        .get()
        .cloned()
        .ok_or_else(|| ApiError::Conflict {
            code: "export.signing_key_missing",
            message:
                "no checkpoint signing key is configured ([audit.checkpoints] signing_key_file); \
                  an export cannot be verified without a signed checkpoint"
                    .into(),
        })?;
    let range = resolve_range(state, from, to).await?;
    let records = range.last - range.first + 1;
    if records > EXPORT_RECORDS_MAX {
        return Err(ApiError::unprocessable(
            "export.range_too_large",
            format!(
                "the range {}..={} holds {records} records, more than {EXPORT_RECORDS_MAX} per \
                 export; export it in parts",
                range.first, range.last
            ),
        ));
    }
    let covering = covering_checkpoint(state, &signer, range.last).await?;
    let frontier = prefix_frontier(state, range.first - 1).await?;
    let proof = consistency(state, range.last, covering.tree_size).await?;
    Ok(Prepared {
        range,
        signer,
        covering,
        frontier,
        proof,
    })
}

fn empty_range() -> ApiError {
    ApiError::NotFound {
        code: "export.empty",
        message: "no indexed audit records in the requested range".into(),
    }
}

/// Turns the requested bounds into `first..=last`, inside the indexed part of the chain.
async fn resolve_range(
    state: &AppState,
    from: Option<Bound>,
    to: Option<Bound>,
) -> Result<Range, ApiError> {
    let indexed = state.store.indexed_size().await?;
    if indexed == 0 {
        return Err(empty_range());
    }
    // After a retention prune the chain starts later: never ask for what is gone.
    let oldest = state
        .store
        .read_sealed_after(0, 1)
        .await?
        .first()
        .map_or(1, record_sequence);
    let first = match from {
        None => oldest,
        Some(Bound::Sequence(sequence)) => sequence.max(oldest),
        Some(Bound::Time(time)) => first_stamped_at_or_after(state, time)
            .await?
            .ok_or_else(empty_range)?
            .max(oldest),
    };
    let last = match to {
        None => indexed,
        Some(Bound::Sequence(sequence)) => sequence.min(indexed),
        Some(Bound::Time(time)) => match first_stamped_at_or_after(state, time).await? {
            Some(sequence) => (sequence - 1).min(indexed),
            None => indexed,
        },
    };
    if first > last {
        return Err(empty_range());
    }
    Ok(Range { first, last })
}

/// The sequence of the first indexed record stamped at or after `time`.
async fn first_stamped_at_or_after(
    state: &AppState,
    time: OffsetDateTime,
) -> Result<Option<u64>, ApiError> {
    let query = AuditQuery {
        from: Some(time),
        limit: 1,
        ..AuditQuery::default()
    };
    let found = state.store.audit_query(&query).await?;
    Ok(found
        .first()
        .and_then(|record| u64::try_from(record.sequence).ok()))
}

/// The smallest checkpoint at or past `last`, signed by the current key; signs one at the
/// indexed size if none exists yet.
async fn covering_checkpoint(
    state: &AppState,
    signer: &CheckpointSigner,
    last: u64,
) -> Result<Checkpoint, ApiError> {
    let mut after = last - 1;
    loop {
        let page = state.store.checkpoints(after, CHECKPOINT_PAGE).await?;
        if let Some(found) = page.iter().find(|c| c.key_id == signer.key_id()) {
            return Ok(found.clone());
        }
        match page.last() {
            Some(checkpoint) if page.len() as u32 >= CHECKPOINT_PAGE => {
                after = checkpoint.tree_size;
            }
            _ => break,
        }
    }
    match state.store.write_checkpoint_now(signer).await? {
        Some(checkpoint)
            if checkpoint.tree_size >= last && checkpoint.key_id == signer.key_id() =>
        {
            Ok(checkpoint)
        }
        Some(checkpoint) if checkpoint.tree_size >= last => Err(ApiError::Conflict {
            code: "export.key_rotated",
            message: format!(
                "the newest checkpoint (tree size {}) is signed by key {}, not the current key {}; \
                 retry after the next checkpoint",
                checkpoint.tree_size,
                checkpoint.key_id,
                signer.key_id()
            ),
        }),
        _ => Err(ApiError::Unavailable {
            code: "export.checkpoint_unavailable",
            message: "no checkpoint covers the range yet; retry shortly".into(),
        }),
    }
}

/// The compact range of the first `size` leaves, from the stored nodes.
async fn prefix_frontier(state: &AppState, size: u64) -> Result<Frontier, ApiError> {
    let ids = Frontier::node_ids(size);
    let nodes = state.store.merkle_nodes(&ids).await?;
    let hashes = ids
        .iter()
        .map(|id| nodes.get(id).copied().ok_or_else(|| missing_node(*id)))
        .collect::<Result<Vec<Hash>, ApiError>>()?;
    Frontier::from_nodes(size, hashes).map_err(|error| ApiError::Internal {
        message: format!("frontier of {size}: {error}"),
    })
}

/// The consistency proof from the tree of `old_size` leaves to `new_size`.
async fn consistency(
    state: &AppState,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ApiError> {
    if old_size == new_size {
        return Ok(Vec::new());
    }
    Ok(with_nodes(
        state,
        merkle::consistency_node_ids(old_size, new_size),
        |node| merkle::consistency_proof(old_size, new_size, node),
    )
    .await?)
}

fn missing_node(id: merkle::NodeId) -> ApiError {
    ApiError::Internal {
        message: format!("merkle node {id:?} is not stored"),
    }
}

/// The reader task: pages of records (and the checkpoints among them) into the channel.
async fn stream_export(
    state: Arc<AppState>,
    header: ExportHeader,
    frontier: Frontier,
    covering: Checkpoint,
    proof: Vec<Hash>,
    key_id: String,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let (first, last) = (header.first_sequence, header.last_sequence);
    let outcome = write_export(&state, header, frontier, covering, proof, &key_id, &sender).await;
    match outcome {
        Ok(true) => tracing::info!(
            first_sequence = first,
            last_sequence = last,
            "audit export sent"
        ),
        Ok(false) => tracing::info!(
            first_sequence = first,
            last_sequence = last,
            "audit export abandoned by the client"
        ),
        Err(error) => {
            tracing::error!(first_sequence = first, last_sequence = last, error = %error, "audit export failed");
            // Breaks the response off: the client sees an incomplete export, never a short
            // one that looks whole (the verifier would also refuse it).
            let _ = sender.send(Err(std::io::Error::other(error))).await;
        }
    }
}

/// Writes the export; `Ok(false)` if the client went away.
async fn write_export(
    state: &AppState,
    header: ExportHeader,
    frontier: Frontier,
    covering: Checkpoint,
    proof: Vec<Hash>,
    key_id: &str,
    sender: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<bool, String> {
    let (first, last) = (header.first_sequence, header.last_sequence);
    let mut writer = ExportWriter::new(Vec::with_capacity(1 << 20), &header, &frontier)
        .map_err(|e| e.to_string())?;
    let mut checkpoints = InRangeCheckpoints::new(first, last, key_id);
    let mut cursor = first - 1;
    while cursor < last {
        let page = state
            .store
            .read_sealed_after(cursor as i64, EXPORT_PAGE_RECORDS)
            .await
            .map_err(|error| format!("reading records after {cursor}: {error}"))?;
        if page.is_empty() {
            return Err(format!("the chain ends at {cursor}, before {last}"));
        }
        for record in page {
            let sequence = record_sequence(&record);
            if sequence > last {
                break;
            }
            if sequence != cursor + 1 {
                return Err(format!(
                    "the chain has no record {}: the next stored one is {sequence}",
                    cursor + 1
                ));
            }
            writer.record(&record).map_err(|error| error.to_string())?;
            cursor = sequence;
            while let Some(checkpoint) = checkpoints.next_at(state, sequence).await? {
                writer
                    .checkpoint(&checkpoint)
                    .map_err(|error| error.to_string())?;
            }
        }
        let bytes = std::mem::take(writer.get_mut());
        if sender.send(Ok(Bytes::from(bytes))).await.is_err() {
            return Ok(false);
        }
    }
    let bytes = writer
        .finish(&covering, &proof)
        .map_err(|error| error.to_string())?;
    Ok(sender.send(Ok(Bytes::from(bytes))).await.is_ok())
}

fn record_sequence(record: &SealedRecord) -> u64 {
    u64::try_from(record.sequence).expect("sealed sequences are positive")
}

/// The checkpoints with `first <= tree_size <= last` signed by the current key, fetched a
/// page at a time as the records reach them. Checkpoints by an earlier key are left out: the
/// export names one key, and the covering checkpoint proves the range on its own.
struct InRangeCheckpoints {
    queue: VecDeque<Checkpoint>,
    /// Tree size after which the next page starts.
    after: u64,
    last: u64,
    exhausted: bool,
    key_id: String,
}

impl InRangeCheckpoints {
    fn new(first: u64, last: u64, key_id: &str) -> InRangeCheckpoints {
        InRangeCheckpoints {
            queue: VecDeque::new(),
            after: first - 1,
            last,
            exhausted: false,
            key_id: key_id.to_owned(),
        }
    }

    /// The next checkpoint whose tree size is `sequence`, if any.
    async fn next_at(
        &mut self,
        state: &AppState,
        sequence: u64,
    ) -> Result<Option<Checkpoint>, String> {
        loop {
            if self.queue.is_empty() && !self.exhausted {
                let page = state
                    .store
                    .checkpoints(self.after, CHECKPOINT_PAGE)
                    .await
                    .map_err(|error| {
                        format!("reading checkpoints after {}: {error}", self.after)
                    })?;
                self.exhausted = (page.len() as u32) < CHECKPOINT_PAGE;
                if let Some(last) = page.last() {
                    self.after = last.tree_size;
                }
                self.queue.extend(
                    page.into_iter()
                        .filter(|c| c.tree_size <= self.last && c.key_id == self.key_id),
                );
                if self.after >= self.last {
                    self.exhausted = true;
                }
            }
            match self.queue.front() {
                Some(checkpoint) if checkpoint.tree_size < sequence => {
                    // Cannot happen with a complete record stream; skip rather than misplace.
                    self.queue.pop_front();
                }
                Some(checkpoint) if checkpoint.tree_size == sequence => {
                    return Ok(self.queue.pop_front());
                }
                Some(_) => return Ok(None),
                None if self.exhausted => return Ok(None),
                None => {}
            }
        }
    }
}

/// The response body: pages from the reader task, in order. Dropping it (the client went
/// away) closes the channel, which stops the reader.
struct ExportBody {
    receiver: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl hyper::body::Body for ExportBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut()
            .receiver
            .poll_recv(context)
            .map(|item| item.map(|result| result.map(Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_sequences_or_instants() {
        assert_eq!(parse_bound("from", "42").ok(), Some(Bound::Sequence(42)));
        assert_eq!(
            parse_bound("from", "2026-03-14T15:09:26.123456Z").ok(),
            Some(Bound::Time(
                time::macros::datetime!(2026-03-14 15:09:26.123456 UTC)
            ))
        );
        for bad in [
            "",
            "-1",
            "2026-03-14",
            "2026-03-14T15:09:26.123456789Z",
            "99999999999999999999",
            "yesterday",
        ] {
            assert!(parse_bound("from", bad).is_err(), "{bad:?}");
        }
    }
}
