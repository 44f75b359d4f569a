//! The audit export file (`countersign-audit-export/v1`) and its offline verifier.
//!
//! An export is JSON Lines, one object per line, each with a `type`:
//!
//! | line         | fields                                                                   |
//! |--------------|--------------------------------------------------------------------------|
//! | `header`     | `format`, `first_sequence`, `last_sequence`, `key_id`, `public_key_pem`, `exported_at`, `from`, `to` |
//! | `frontier`   | `size` (= first_sequence − 1), `nodes`: hex hashes of the compact range of the prefix |
//! | `record`     | one sealed record, the fields of the query API's record view             |
//! | `checkpoint` | a signed checkpoint, right after the record whose sequence is its `tree_size` |
//! | `consistency`| `from` (= last_sequence), `to` (the covering checkpoint's size), `proof` |
//!
//! In that order: the header, the frontier, the records `first_sequence..=last_sequence` in
//! sequence order with every checkpoint of that range after its last record, then (if none of
//! those has `tree_size == last_sequence`) one checkpoint with `tree_size > last_sequence`, and
//! last the consistency proof from the tree of `last_sequence` leaves to that checkpoint.
//!
//! What the verifier checks with nothing but the signer's public key ([`verify_export`]):
//! - the header's format and key id (the export must name the key the auditor pinned);
//! - every record's hash from its content and its `previous_hash` link to the record before,
//!   and that sequences run without gaps, duplicates or reordering;
//! - the Merkle root at every included checkpoint, recomputed from the frontier and the
//!   records, and each checkpoint's Ed25519 signature;
//! - the consistency proof from the exported range to the covering checkpoint, so the last
//!   records are proven too, even when no checkpoint ends exactly at them;
//! - that every posting's `decision_id` names an earlier decision record whose outcome is
//!   `allow` or `pending` (a held transfer posts under its initiation decision, approved
//!   later); postings whose decision precedes the export are counted apart, not failed;
//! - per currency, that the debit legs and the credit legs of the postings add up to the same
//!   amount (amounts are decimal strings, summed exactly as integers; never floats).
//!
//! The first failure ends the walk and names the record (by sequence) or the checkpoint (by
//! tree size) and why.
//!
//! Memory is bounded whatever the size of the export: the verifier keeps the chain head, the
//! Merkle frontier (at most 64 hashes), counters and per-currency sums, plus one entry per
//! decision record (its 16-byte id and whether it allowed) so postings can be matched to their
//! decisions. That map is the only thing that grows: about 20–40 bytes per decision, under
//! [`DECISION_IDS_MAX`] entries (≈ 800 MB at the bound); an export with more decisions than
//! that is refused as an operating error (split it by range). Lines are read one at a time,
//! each at most [`LINE_BYTES_MAX`] bytes.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    io::{self, BufRead, Write},
};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    NewRecord, Outcome, RecordKind, Redaction, SealedRecord, Subject,
    checkpoint::{Checkpoint, CheckpointError, CheckpointVerifier},
    encoding::{self, chain_hash, format_timestamp},
    merkle::{self, Frontier, Hash},
};

/// The `format` of the header line; a reader refuses any other.
pub const EXPORT_FORMAT: &str = "countersign-audit-export/v1";

/// Longest line the verifier reads. A record has 14 fields of at most
/// [`encoding::FIELD_BYTES_MAX`] bytes each; JSON adds little, so a genuine line is far below.
pub const LINE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Most decision records one verification keeps in memory (see the module docs).
pub const DECISION_IDS_MAX: usize = 20_000_000;

/// Most hashes in a consistency proof: RFC 9162 proofs have at most 2·log2(n) elements.
const CONSISTENCY_PROOF_HASHES_MAX: usize = 128;

/// Digits after the decimal point an amount may have (currencies use 0–3); sums are kept as
/// integers in units of 10^-AMOUNT_FRACTION_DIGITS_MAX.
const AMOUNT_FRACTION_DIGITS_MAX: u32 = 9;

// ---------------------------------------------------------------------------------------------
// Lines
// ---------------------------------------------------------------------------------------------

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// The key id of the checkpoint signer ([`CheckpointVerifier::key_id`]).
    pub key_id: String,
    /// The signer's public key as the gateway knows it. Informational only: an auditor
    /// verifies with the key they pinned, never with one the file brings along.
    pub public_key_pem: String,
    /// When the gateway wrote the export (RFC 3339, UTC).
    pub exported_at: String,
    /// The range as the auditor asked for it (RFC 3339 or a sequence), if given.
    pub from: Option<String>,
    pub to: Option<String>,
}

impl ExportHeader {
    /// A header for `first_sequence..=last_sequence` signed by `key`, written now.
    pub fn new(
        first_sequence: u64,
        last_sequence: u64,
        key: &CheckpointVerifier,
        from: Option<String>,
        to: Option<String>,
    ) -> ExportHeader {
        ExportHeader {
            format: EXPORT_FORMAT.to_owned(),
            first_sequence,
            last_sequence,
            key_id: key.key_id().to_owned(),
            public_key_pem: key.public_key_pem(),
            exported_at: format_timestamp(OffsetDateTime::now_utc()),
            from,
            to,
        }
    }

    /// Records the export holds.
    pub fn record_count(&self) -> u64 {
        self.last_sequence
            .saturating_sub(self.first_sequence)
            .saturating_add(1)
    }
}

/// The header as read: [`ExportHeader`] plus `type`, strictly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderLine {
    #[serde(rename = "type")]
    _line_type: String,
    format: String,
    first_sequence: u64,
    last_sequence: u64,
    key_id: String,
    public_key_pem: String,
    exported_at: String,
    from: Option<String>,
    to: Option<String>,
}

impl HeaderLine {
    fn into_header(self) -> ExportHeader {
        ExportHeader {
            format: self.format,
            first_sequence: self.first_sequence,
            last_sequence: self.last_sequence,
            key_id: self.key_id,
            public_key_pem: self.public_key_pem,
            exported_at: self.exported_at,
            from: self.from,
            to: self.to,
        }
    }
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    line_type: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Serialize)]
struct FrontierLineOut<'a> {
    #[serde(rename = "type")]
    line_type: &'static str,
    size: u64,
    nodes: &'a [String],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontierLine {
    #[serde(rename = "type")]
    _line_type: String,
    size: u64,
    nodes: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyLine {
    #[serde(rename = "type")]
    line_type: String,
    from: u64,
    to: u64,
    proof: Vec<String>,
}

/// A checkpoint line: the checkpoint's JSON form with `"type": "checkpoint"`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    #[serde(rename = "type")]
    line_type: String,
    tree_size: u64,
    root_hash: String,
    timestamp: String,
    key_id: String,
    signature: String,
}

impl CheckpointLine {
    fn of(checkpoint: &Checkpoint) -> CheckpointLine {
        CheckpointLine {
            line_type: "checkpoint".to_owned(),
            tree_size: checkpoint.tree_size,
            root_hash: hex::encode(checkpoint.root_hash),
            timestamp: format_timestamp(checkpoint.timestamp),
            key_id: checkpoint.key_id.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(checkpoint.signature),
        }
    }

    fn into_checkpoint(self) -> Result<Checkpoint, String> {
        let root_hash =
            parse_hash(&self.root_hash).map_err(|error| format!("root_hash: {error}"))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .ok_or_else(|| "signature: expected 64 bytes in standard base64".to_owned())?;
        let timestamp = encoding::parse_timestamp(&self.timestamp)
            .map_err(|error| format!("timestamp: {error}"))?;
        Ok(Checkpoint {
            tree_size: self.tree_size,
            root_hash,
            timestamp,
            key_id: self.key_id,
            signature,
        })
    }
}

/// The subject as exported; strict, so nothing unhashed can ride along in a record.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectLine {
    fingerprint_sha256: String,
    common_name: Option<String>,
    roles: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactionLine {
    erased: Vec<String>,
    masked: Vec<String>,
    error: Option<String>,
}

/// A record line as written: borrowed, so exporting does not copy the JSON documents.
#[derive(Serialize)]
struct RecordLineOut<'a> {
    #[serde(rename = "type")]
    line_type: &'static str,
    sequence: i64,
    record_id: Uuid,
    kind: RecordKind,
    decision_id: Uuid,
    timestamp: String,
    subject: &'a Subject,
    source_address: &'a str,
    action: &'a str,
    masked_input: &'a Value,
    result: &'a Value,
    bundle_revision: &'a str,
    outcome: Outcome,
    redaction: &'a Redaction,
    previous_hash: String,
    hash: String,
}

/// A record line as read. Every field is covered by the record's hash except `type`, so
/// unknown fields are refused rather than silently carried.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordLine {
    #[serde(rename = "type")]
    _line_type: String,
    sequence: i64,
    record_id: Uuid,
    kind: RecordKind,
    decision_id: Uuid,
    timestamp: String,
    subject: SubjectLine,
    source_address: String,
    action: String,
    masked_input: Value,
    result: Value,
    bundle_revision: String,
    outcome: Outcome,
    redaction: RedactionLine,
    previous_hash: String,
    hash: String,
}

impl RecordLine {
    fn into_sealed(self) -> Result<SealedRecord, String> {
        let timestamp = encoding::parse_timestamp(&self.timestamp)
            .map_err(|error| format!("timestamp: {error}"))?;
        Ok(SealedRecord {
            sequence: self.sequence,
            previous_hash: parse_hash(&self.previous_hash)
                .map_err(|error| format!("previous_hash: {error}"))?,
            hash: parse_hash(&self.hash).map_err(|error| format!("hash: {error}"))?,
            record: NewRecord {
                record_id: self.record_id,
                kind: self.kind,
                decision_id: self.decision_id,
                timestamp,
                subject: Subject {
                    fingerprint_sha256: self.subject.fingerprint_sha256,
                    common_name: self.subject.common_name,
                    roles: self.subject.roles,
                },
                source_address: self.source_address,
                action: self.action,
                masked_input: self.masked_input,
                result: self.result,
                bundle_revision: self.bundle_revision,
                outcome: self.outcome,
                redaction: Redaction {
                    erased: self.redaction.erased,
                    masked: self.redaction.masked,
                    error: self.redaction.error,
                },
                sealed_input: None,
            },
        })
    }
}

/// Only the `type` of a line, to pick the right strict parser.
#[derive(Deserialize)]
struct LineType {
    #[serde(rename = "type")]
    line_type: String,
}

/// Only the `sequence` of a line, to name a malformed record.
#[derive(Deserialize)]
struct SequenceOnly {
    sequence: i64,
}

fn parse_hash(text: &str) -> Result<Hash, String> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash)
        .map_err(|_| format!("expected 64 hex characters, got {:?}", truncate(text, 80)))?;
    Ok(hash)
}

fn truncate(text: &str, chars_max: usize) -> String {
    if text.chars().count() <= chars_max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(chars_max).collect();
    short.push('…');
    short
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// Writes an export line by line in the order the format requires. Misuse (records out of
/// order, a checkpoint in the wrong place, finishing early) is a bug in the caller and panics;
/// I/O errors are returned.
///
/// The gateway streams through it page by page: write into a `Vec<u8>`, hand the bytes on
/// (`std::mem::take(writer.get_mut())`), repeat.
pub struct ExportWriter<W: Write> {
    out: W,
    first_sequence: u64,
    last_sequence: u64,
    /// Sequence of the next record to write.
    next_sequence: u64,
    /// Tree size of the last checkpoint written, so the covering one is not written twice.
    last_checkpoint_size: Option<u64>,
}

impl<W: Write> ExportWriter<W> {
    /// Writes the header and the frontier (the compact range of the records before
    /// `first_sequence`; `frontier.size()` must be `first_sequence - 1`).
    pub fn new(
        mut out: W,
        header: &ExportHeader,
        frontier: &Frontier,
    ) -> io::Result<ExportWriter<W>> {
        assert!(
            header.first_sequence >= 1 && header.first_sequence <= header.last_sequence,
            "an export holds at least one record, from sequence 1 on"
        );
        assert_eq!(
            frontier.size() + 1,
            header.first_sequence,
            "the frontier is the prefix before the first record"
        );
        write_line(
            &mut out,
            &Tagged {
                line_type: "header",
                body: header,
            },
        )?;
        let nodes: Vec<String> = frontier
            .nodes()
            .into_iter()
            .map(|(_, hash)| hex::encode(hash))
            .collect();
        write_line(
            &mut out,
            &FrontierLineOut {
                line_type: "frontier",
                size: frontier.size(),
                nodes: &nodes,
            },
        )?;
        Ok(ExportWriter {
            out,
            first_sequence: header.first_sequence,
            last_sequence: header.last_sequence,
            next_sequence: header.first_sequence,
            last_checkpoint_size: None,
        })
    }

    /// The next record; sequences must follow on from the previous one.
    pub fn record(&mut self, sealed: &SealedRecord) -> io::Result<()> {
        assert_eq!(
            u64::try_from(sealed.sequence).ok(),
            Some(self.next_sequence),
            "export records must be written in sequence order"
        );
        assert!(
            self.next_sequence <= self.last_sequence,
            "record {} is past the export's last sequence {}",
            self.next_sequence,
            self.last_sequence
        );
        let record = &sealed.record;
        write_line(
            &mut self.out,
            &RecordLineOut {
                line_type: "record",
                sequence: sealed.sequence,
                record_id: record.record_id,
                kind: record.kind,
                decision_id: record.decision_id,
                timestamp: format_timestamp(record.timestamp),
                subject: &record.subject,
                source_address: &record.source_address,
                action: &record.action,
                masked_input: &record.masked_input,
                result: &record.result,
                bundle_revision: &record.bundle_revision,
                outcome: record.outcome,
                redaction: &record.redaction,
                previous_hash: hex::encode(sealed.previous_hash),
                hash: hex::encode(sealed.hash),
            },
        )?;
        self.next_sequence += 1;
        Ok(())
    }

    /// A checkpoint inside the range: call it right after writing the record whose sequence
    /// is its tree size.
    pub fn checkpoint(&mut self, checkpoint: &Checkpoint) -> io::Result<()> {
        assert_eq!(
            checkpoint.tree_size + 1,
            self.next_sequence,
            "a checkpoint follows the record whose sequence is its tree size"
        );
        assert!(checkpoint.tree_size >= self.first_sequence);
        write_line(&mut self.out, &CheckpointLine::of(checkpoint))?;
        self.last_checkpoint_size = Some(checkpoint.tree_size);
        Ok(())
    }

    /// Ends the export: the covering checkpoint (`tree_size >= last_sequence`; not repeated
    /// if it was just written as the range's last checkpoint) and the consistency proof from
    /// the tree of `last_sequence` leaves to it.
    pub fn finish(mut self, covering: &Checkpoint, consistency_proof: &[Hash]) -> io::Result<W> {
        assert_eq!(
            self.next_sequence,
            self.last_sequence + 1,
            "every record of the range is written before the export ends"
        );
        assert!(
            covering.tree_size >= self.last_sequence,
            "the covering checkpoint must include the last record"
        );
        if self.last_checkpoint_size != Some(covering.tree_size) {
            write_line(&mut self.out, &CheckpointLine::of(covering))?;
        }
        write_line(
            &mut self.out,
            &ConsistencyLine {
                line_type: "consistency".to_owned(),
                from: self.last_sequence,
                to: covering.tree_size,
                proof: consistency_proof.iter().map(hex::encode).collect(),
            },
        )?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// The sink, e.g. to drain a `Vec<u8>` buffer after each page.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Records written so far.
    pub fn records_written(&self) -> u64 {
        self.next_sequence - self.first_sequence
    }
}

fn write_line<W: Write, T: Serialize>(out: &mut W, line: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *out, line).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// What [`verify_export`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    /// The header, once read.
    pub first_sequence: Option<u64>,
    pub last_sequence: Option<u64>,
    pub key_id: Option<String>,
    /// Records whose hash and chain link verified.
    pub records: u64,
    /// Of those, decision records.
    pub decisions: u64,
    /// Of those, posting records.
    pub postings: u64,
    /// Postings whose decision comes before the export (cannot be checked from this file).
    pub postings_decided_before_export: u64,
    /// Checkpoints whose signature (and, inside the range, root) verified.
    pub checkpoints: u64,
    /// The covering checkpoint proven by the consistency proof.
    pub covering_checkpoint: Option<u64>,
    /// Per currency (ISO code as in the records), the posting legs and their totals.
    pub currencies: BTreeMap<String, CurrencyTotals>,
    /// The first failure; `None` means the export verified.
    pub failure: Option<ExportFailure>,
}

impl ExportReport {
    pub fn is_verified(&self) -> bool {
        self.failure.is_none()
    }
}

/// Debit and credit legs of one currency's postings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CurrencyTotals {
    pub debit_legs: u64,
    pub credit_legs: u64,
    /// Decimal text, exact.
    pub debit_total: String,
    pub credit_total: String,
    #[serde(skip)]
    sums: LegSums,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LegSums {
    /// In units of 10^-AMOUNT_FRACTION_DIGITS_MAX.
    debit: i128,
    credit: i128,
    /// Most fraction digits seen, so totals print at the currency's precision.
    fraction_digits: u32,
}

impl CurrencyTotals {
    pub fn is_balanced(&self) -> bool {
        self.debit_legs == self.credit_legs && self.sums.debit == self.sums.credit
    }
}

/// Where an export fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "at", rename_all = "snake_case")]
pub enum Location {
    Header,
    Frontier,
    /// A record, by its sequence.
    Record {
        sequence: i64,
    },
    /// A checkpoint, by its tree size.
    Checkpoint {
        tree_size: u64,
    },
    Consistency,
    /// A line that cannot even be told apart (not JSON, unknown type).
    Line,
    /// The end of the file (truncation, totals).
    End,
    /// A currency's totals.
    Currency {
        currency: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Header => write!(formatter, "header"),
            Location::Frontier => write!(formatter, "frontier"),
            Location::Record { sequence } => write!(formatter, "record {sequence}"),
            Location::Checkpoint { tree_size } => write!(formatter, "checkpoint {tree_size}"),
            Location::Consistency => write!(formatter, "consistency proof"),
            Location::Line => write!(formatter, "line"),
            Location::End => write!(formatter, "end of export"),
            Location::Currency { currency } => write!(formatter, "currency {currency}"),
        }
    }
}

/// The kinds of failure; callers may act differently on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// A line is not JSON, not of a known type, or lacks or adds fields.
    Malformed,
    /// Lines in an order the format does not allow.
    OutOfPlace,
    /// The header's format or key id is not what the verifier expects.
    WrongHeader,
    /// A sequence number is missing (deleted or reordered records).
    SequenceGap,
    /// A sequence number at or below one already read (duplicated or reordered records).
    SequenceRepeated,
    /// A record outside the header's range.
    OutOfRange,
    /// `previous_hash` does not match the hash of the record before.
    PreviousHashMismatch,
    /// The record's content does not hash to its `hash`.
    HashMismatch,
    /// A checkpoint is signed by another key.
    WrongKey,
    /// A checkpoint's signature does not verify.
    BadSignature,
    /// The root recomputed from the records differs from a signed checkpoint's root.
    RootMismatch,
    /// The consistency proof to the covering checkpoint does not verify.
    ConsistencyInvalid,
    /// The export ends early: records, the covering checkpoint or the proof are missing.
    Truncated,
    /// A posting's decision is missing, later than the posting, or did not allow it.
    PostingWithoutDecision,
    /// A posting lacks a leg, or its amount is not a positive decimal.
    PostingMalformed,
    /// Debit and credit totals of a currency differ.
    Unbalanced,
}

/// The first failure of an export: where, what, and a sentence for the auditor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportFailure {
    pub location: Location,
    pub kind: FailureKind,
    /// 1-based line of the export file.
    pub line: u64,
    pub reason: String,
}

impl fmt::Display for ExportFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} (line {}): {}",
            self.location, self.line, self.reason
        )
    }
}

/// Reading the export failed (I/O), or it is too large to verify within the memory bound.
/// Tampering is never an `Err`: it is [`ExportReport::failure`].
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read the export: {0}")]
    Io(#[from] io::Error),
    #[error(
        "the export holds more than {DECISION_IDS_MAX} decision records, more than one \
         verification keeps in memory; export and verify smaller ranges"
    )]
    TooManyDecisions,
}

// ---------------------------------------------------------------------------------------------
// Verifier
// ---------------------------------------------------------------------------------------------

/// Verifies an export read line by line from `reader` with nothing but the signer's public
/// key. `Err` only for I/O errors or an export beyond the memory bound; every finding about
/// the content is in the report.
pub fn verify_export(
    reader: impl BufRead,
    key: &CheckpointVerifier,
) -> Result<ExportReport, ExportError> {
    verify_export_with_progress(reader, key, |_| {})
}

/// [`verify_export`], calling `progress` with the number of records verified so far every
/// [`PROGRESS_RECORDS`] records (for a progress bar).
pub fn verify_export_with_progress(
    mut reader: impl BufRead,
    key: &CheckpointVerifier,
    mut progress: impl FnMut(u64),
) -> Result<ExportReport, ExportError> {
    let mut verifier = ExportVerifier::new(key);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        let read =
            io::Read::take(&mut reader, LINE_BYTES_MAX as u64 + 1).read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() > LINE_BYTES_MAX {
            verifier.fail_line(
                Location::Line,
                FailureKind::Malformed,
                format!("line is longer than {LINE_BYTES_MAX} bytes"),
            );
            break;
        }
        if !verifier.line(&line)? {
            break;
        }
        if verifier.report.records.is_multiple_of(PROGRESS_RECORDS) {
            progress(verifier.report.records);
        }
    }
    let report = verifier.finish();
    progress(report.records);
    Ok(report)
}

/// How often [`verify_export_with_progress`] reports progress, in records.
pub const PROGRESS_RECORDS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Frontier,
    /// Records and the checkpoints among them.
    Body,
    /// All records read and the covering checkpoint verified; the proof comes next.
    Proof,
    Done,
}

/// The streaming verifier behind [`verify_export`]: feed it lines, then `finish`.
pub struct ExportVerifier<'k> {
    key: &'k CheckpointVerifier,
    stage: Stage,
    line: u64,
    first_sequence: u64,
    last_sequence: u64,
    frontier: Frontier,
    /// The last verified record's sequence and hash.
    head: Option<(i64, Hash)>,
    /// Tree size of the last checkpoint whose root matched, for messages.
    last_good_checkpoint: Option<u64>,
    /// The covering checkpoint (tree size ≥ last_sequence), once verified.
    covering: Option<Checkpoint>,
    /// Decision records seen: id → whether its outcome can justify a posting.
    decisions: HashMap<[u8; 16], bool>,
    /// Decisions referenced by postings but not seen (yet): they must precede the export.
    decided_before_export: HashSet<[u8; 16]>,
    report: ExportReport,
}

impl<'k> ExportVerifier<'k> {
    pub fn new(key: &'k CheckpointVerifier) -> ExportVerifier<'k> {
        ExportVerifier {
            key,
            stage: Stage::Header,
            line: 0,
            first_sequence: 0,
            last_sequence: 0,
            frontier: Frontier::new(),
            head: None,
            last_good_checkpoint: None,
            covering: None,
            decisions: HashMap::new(),
            decided_before_export: HashSet::new(),
            report: ExportReport::default(),
        }
    }

    /// The report so far.
    pub fn report(&self) -> &ExportReport {
        &self.report
    }

    /// Checks one line (with or without its newline). `Ok(false)` once the export has failed
    /// (feeding more lines is pointless); `Err` only past the memory bound.
    pub fn line(&mut self, bytes: &[u8]) -> Result<bool, ExportError> {
        if self.report.failure.is_some() {
            return Ok(false);
        }
        self.line += 1;
        let bytes = trim_line_end(bytes);
        match self.stage {
            Stage::Header => self.header_line(bytes),
            Stage::Frontier => self.frontier_line(bytes),
            Stage::Body | Stage::Proof => self.body_line(bytes)?,
            Stage::Done => self.fail_line(
                Location::Line,
                FailureKind::OutOfPlace,
                "a line after the consistency proof, which ends an export".to_owned(),
            ),
        }
        Ok(self.report.failure.is_none())
    }

    /// Ends the walk: checks that nothing is missing and that each currency balances.
    pub fn finish(mut self) -> ExportReport {
        if self.report.failure.is_none() {
            self.line += 1;
            match self.stage {
                Stage::Header => self.fail(
                    Location::Header,
                    FailureKind::Truncated,
                    "the export is empty".to_owned(),
                ),
                Stage::Frontier => self.fail(
                    Location::Frontier,
                    FailureKind::Truncated,
                    "the export ends after its header".to_owned(),
                ),
                Stage::Body if self.frontier.size() < self.last_sequence => {
                    let next = self.frontier.size() + 1;
                    self.fail(
                        Location::Record {
                            sequence: next as i64,
                        },
                        FailureKind::Truncated,
                        format!(
                            "the export ends before record {next}; the header announces records \
                             up to {}",
                            self.last_sequence
                        ),
                    );
                }
                Stage::Body => self.fail(
                    Location::End,
                    FailureKind::Truncated,
                    format!(
                        "no signed checkpoint covers the last record {}: the export ends without \
                         its covering checkpoint and consistency proof",
                        self.last_sequence
                    ),
                ),
                Stage::Proof => {
                    let size = self.covering.as_ref().map_or(0, |c| c.tree_size);
                    self.fail(
                        Location::Consistency,
                        FailureKind::Truncated,
                        format!(
                            "the consistency proof from {} to checkpoint {size} is missing",
                            self.last_sequence
                        ),
                    );
                }
                Stage::Done => {}
            }
        }
        let mut unbalanced = None;
        for (currency, totals) in &mut self.report.currencies {
            totals.debit_total = format_amount(totals.sums.debit, totals.sums.fraction_digits);
            totals.credit_total = format_amount(totals.sums.credit, totals.sums.fraction_digits);
            if unbalanced.is_none() && !totals.is_balanced() {
                unbalanced = Some((currency.clone(), totals.clone()));
            }
        }
        if self.report.failure.is_none()
            && let Some((currency, totals)) = unbalanced
        {
            self.fail(
                Location::Currency { currency },
                FailureKind::Unbalanced,
                format!(
                    "debits {} in {} legs but credits {} in {} legs",
                    totals.debit_total, totals.debit_legs, totals.credit_total, totals.credit_legs
                ),
            );
        }
        self.report
    }

    fn fail(&mut self, location: Location, kind: FailureKind, reason: String) {
        if self.report.failure.is_none() {
            self.report.failure = Some(ExportFailure {
                location,
                kind,
                line: self.line,
                reason,
            });
        }
    }

    fn fail_line(&mut self, location: Location, kind: FailureKind, reason: String) {
        if self.line == 0 {
            self.line = 1;
        }
        self.fail(location, kind, reason);
    }

    fn header_line(&mut self, bytes: &[u8]) {
        let header: HeaderLine = match self.parse_typed(bytes, "header", Location::Header) {
            Some(line) => line,
            None => return,
        };
        let header = header.into_header();
        if header.format != EXPORT_FORMAT {
            return self.fail(
                Location::Header,
                FailureKind::WrongHeader,
                format!(
                    "format {:?}, this verifier reads {EXPORT_FORMAT:?}",
                    truncate(&header.format, 80)
                ),
            );
        }
        self.report.first_sequence = Some(header.first_sequence);
        self.report.last_sequence = Some(header.last_sequence);
        self.report.key_id = Some(header.key_id.clone());
        if header.key_id != self.key.key_id() {
            return self.fail(
                Location::Header,
                FailureKind::WrongKey,
                format!(
                    "the export names checkpoint key {}, but the given public key is {}",
                    truncate(&header.key_id, 80),
                    self.key.key_id()
                ),
            );
        }
        if header.first_sequence == 0
            || header.first_sequence > header.last_sequence
            || header.last_sequence > merkle::TREE_SIZE_MAX
        {
            return self.fail(
                Location::Header,
                FailureKind::WrongHeader,
                format!(
                    "range {}..={} is not a range of sequences (they start at 1)",
                    header.first_sequence, header.last_sequence
                ),
            );
        }
        self.first_sequence = header.first_sequence;
        self.last_sequence = header.last_sequence;
        self.stage = Stage::Frontier;
    }

    fn frontier_line(&mut self, bytes: &[u8]) {
        let line: FrontierLine = match self.parse_typed(bytes, "frontier", Location::Frontier) {
            Some(line) => line,
            None => return,
        };
        if line.size + 1 != self.first_sequence {
            return self.fail(
                Location::Frontier,
                FailureKind::WrongHeader,
                format!(
                    "the frontier is of size {}, the records start at {}",
                    line.size, self.first_sequence
                ),
            );
        }
        let mut nodes = Vec::with_capacity(line.nodes.len().min(64));
        for (index, node) in line.nodes.iter().enumerate() {
            match parse_hash(node) {
                Ok(hash) => nodes.push(hash),
                Err(error) => {
                    return self.fail(
                        Location::Frontier,
                        FailureKind::Malformed,
                        format!("node {index}: {error}"),
                    );
                }
            }
        }
        match Frontier::from_nodes(line.size, nodes) {
            Ok(frontier) => self.frontier = frontier,
            Err(error) => {
                return self.fail(
                    Location::Frontier,
                    FailureKind::Malformed,
                    error.to_string(),
                );
            }
        }
        self.stage = Stage::Body;
    }

    /// Parses a line that must be of `expected` type into `T`, failing at `location`.
    fn parse_typed<T: for<'de> Deserialize<'de>>(
        &mut self,
        bytes: &[u8],
        expected: &str,
        location: Location,
    ) -> Option<T> {
        match serde_json::from_slice::<LineType>(bytes) {
            Ok(parsed) if parsed.line_type == expected => {}
            Ok(parsed) => {
                self.fail(
                    location,
                    FailureKind::OutOfPlace,
                    format!(
                        "expected a {expected} line here, found a {:?} line",
                        truncate(&parsed.line_type, 40)
                    ),
                );
                return None;
            }
            Err(error) => {
                self.fail(location, FailureKind::Malformed, error.to_string());
                return None;
            }
        }
        match serde_json::from_slice::<T>(bytes) {
            Ok(line) => Some(line),
            Err(error) => {
                self.fail(location, FailureKind::Malformed, error.to_string());
                None
            }
        }
    }

    fn body_line(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        // Fast path: the writer puts `type` first, so most lines need no second parse.
        let line_type = if bytes.starts_with(br#"{"type":"record""#) {
            "record".to_owned()
        } else {
            match serde_json::from_slice::<LineType>(bytes) {
                Ok(parsed) => parsed.line_type,
                Err(error) => {
                    self.fail(
                        Location::Line,
                        FailureKind::Malformed,
                        format!("not an export line: {error}"),
                    );
                    return Ok(());
                }
            }
        };
        match line_type.as_str() {
            "record" => self.record_line(bytes)?,
            "checkpoint" => self.checkpoint_line(bytes),
            "consistency" => self.consistency_line(bytes),
            other => self.fail(
                Location::Line,
                FailureKind::OutOfPlace,
                format!(
                    "a {:?} line among the records (expected record, checkpoint or consistency)",
                    truncate(other, 40)
                ),
            ),
        }
        Ok(())
    }

    fn record_line(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        let parsed = serde_json::from_slice::<RecordLine>(bytes)
            .map_err(|error| error.to_string())
            .and_then(RecordLine::into_sealed);
        let sealed = match parsed {
            Ok(sealed) => sealed,
            Err(reason) => {
                let location = match serde_json::from_slice::<SequenceOnly>(bytes) {
                    Ok(only) => Location::Record {
                        sequence: only.sequence,
                    },
                    Err(_) => Location::Line,
                };
                self.fail(location, FailureKind::Malformed, reason);
                return Ok(());
            }
        };
        let sequence = sealed.sequence;
        let here = Location::Record { sequence };
        if self.stage == Stage::Proof {
            self.fail(
                here,
                FailureKind::OutOfRange,
                format!(
                    "a record after the covering checkpoint; the export ends at {}",
                    self.last_sequence
                ),
            );
            return Ok(());
        }
        let expected = self.frontier.size() + 1;
        let expected_i64 = expected as i64;
        if sequence < expected_i64 {
            self.fail(
                here,
                FailureKind::SequenceRepeated,
                format!(
                    "sequence {sequence} comes again or out of order: the next record must be \
                     {expected} (records duplicated, inserted or reordered)"
                ),
            );
            return Ok(());
        }
        if expected > self.last_sequence {
            self.fail(
                here,
                FailureKind::OutOfRange,
                format!(
                    "record {sequence} is past the header's last sequence {}",
                    self.last_sequence
                ),
            );
            return Ok(());
        }
        if sequence > expected_i64 {
            self.fail(
                Location::Record {
                    sequence: expected_i64,
                },
                FailureKind::SequenceGap,
                format!(
                    "record {expected} is missing: the next record in the export is {sequence} \
                     (records deleted or reordered)"
                ),
            );
            return Ok(());
        }
        if let Some((previous_sequence, previous_hash)) = self.head
            && sealed.previous_hash != previous_hash
        {
            self.fail(
                here,
                FailureKind::PreviousHashMismatch,
                format!(
                    "previous_hash {} is not the hash of record {previous_sequence} ({}): record \
                     {previous_sequence} was altered and re-hashed, or this record was moved \
                     or forged",
                    hex::encode(sealed.previous_hash),
                    hex::encode(previous_hash)
                ),
            );
            return Ok(());
        }
        let recomputed = chain_hash(&sealed.previous_hash, sequence, &sealed.record);
        if recomputed != sealed.hash {
            self.fail(
                here,
                FailureKind::HashMismatch,
                format!(
                    "the record's content hashes to {}, not to its hash {}: the record was \
                     altered",
                    hex::encode(recomputed),
                    hex::encode(sealed.hash)
                ),
            );
            return Ok(());
        }
        self.frontier.push(merkle::leaf_hash(&sealed.hash));
        self.head = Some((sequence, sealed.hash));
        self.report.records += 1;
        self.check_business(&sealed)
    }

    /// The posting ↔ decision link and the per-currency legs.
    fn check_business(&mut self, sealed: &SealedRecord) -> Result<(), ExportError> {
        let record = &sealed.record;
        let here = Location::Record {
            sequence: sealed.sequence,
        };
        let decision_id = *record.decision_id.as_bytes();
        match record.kind {
            RecordKind::Decision => {
                self.report.decisions += 1;
                let allows = matches!(record.outcome, Outcome::Allow | Outcome::Pending);
                if self.decided_before_export.contains(&decision_id) {
                    self.fail(
                        here,
                        FailureKind::PostingWithoutDecision,
                        format!(
                            "decision {} comes after a posting that cites it; a decision is \
                             recorded before its posting",
                            record.decision_id
                        ),
                    );
                    return Ok(());
                }
                if !self.decisions.contains_key(&decision_id) {
                    if self.decisions.len() >= DECISION_IDS_MAX {
                        return Err(ExportError::TooManyDecisions);
                    }
                    self.decisions.insert(decision_id, allows);
                }
            }
            RecordKind::Posting => {
                self.report.postings += 1;
                match self.decisions.get(&decision_id) {
                    Some(true) => {}
                    Some(false) => {
                        return {
                            self.fail(
                                here,
                                FailureKind::PostingWithoutDecision,
                                format!(
                                    "posting under decision {}, whose outcome neither allowed \
                                     nor held the transfer",
                                    record.decision_id
                                ),
                            );
                            Ok(())
                        };
                    }
                    None if self.first_sequence == 1 => {
                        self.fail(
                            here,
                            FailureKind::PostingWithoutDecision,
                            format!(
                                "posting under decision {}, but no decision record with that id \
                                 precedes it (the export starts at the beginning of the log)",
                                record.decision_id
                            ),
                        );
                        return Ok(());
                    }
                    None => {
                        // The decision may precede the export; it must then not show up later.
                        if self.decided_before_export.insert(decision_id)
                            && self.decided_before_export.len() >= DECISION_IDS_MAX
                        {
                            return Err(ExportError::TooManyDecisions);
                        }
                        self.report.postings_decided_before_export += 1;
                    }
                }
                if let Err(reason) = self.add_legs(&record.masked_input) {
                    self.fail(here, FailureKind::PostingMalformed, reason);
                }
            }
            RecordKind::Reservation | RecordKind::Approval | RecordKind::Release => {}
        }
        Ok(())
    }

    fn add_legs(&mut self, input: &Value) -> Result<(), String> {
        let text = |field: &str| -> Option<&str> {
            input
                .get(field)
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
        };
        let currency = text("currency").ok_or("the posting has no currency")?;
        let amount_text = text("amount").ok_or("the posting has no amount")?;
        let (amount, fraction_digits) = parse_amount(amount_text)
            .map_err(|reason| format!("amount {:?}: {reason}", truncate(amount_text, 40)))?;
        let has_debit = text("debit_account").is_some();
        let has_credit = text("credit_account").is_some();
        let totals = self
            .report
            .currencies
            .entry(truncate(currency, 16))
            .or_default();
        let sums = &mut totals.sums;
        sums.fraction_digits = sums.fraction_digits.max(fraction_digits);
        // Legs are counted before the missing one is reported, so the totals show it too.
        if has_debit {
            totals.debit_legs += 1;
            sums.debit = sums
                .debit
                .checked_add(amount)
                .ok_or("the debit total overflows")?;
        }
        if has_credit {
            totals.credit_legs += 1;
            sums.credit = sums
                .credit
                .checked_add(amount)
                .ok_or("the credit total overflows")?;
        }
        match (has_debit, has_credit) {
            (true, true) => Ok(()),
            (false, _) => Err("the posting has no debit account".to_owned()),
            (_, false) => Err("the posting has no credit account".to_owned()),
        }
    }

    fn checkpoint_line(&mut self, bytes: &[u8]) {
        let parsed = serde_json::from_slice::<CheckpointLine>(bytes)
            .map_err(|error| error.to_string())
            .and_then(CheckpointLine::into_checkpoint);
        let checkpoint = match parsed {
            Ok(checkpoint) => checkpoint,
            Err(reason) => {
                #[derive(Deserialize)]
                struct SizeOnly {
                    tree_size: u64,
                }
                let location = match serde_json::from_slice::<SizeOnly>(bytes) {
                    Ok(only) => Location::Checkpoint {
                        tree_size: only.tree_size,
                    },
                    Err(_) => Location::Line,
                };
                return self.fail(location, FailureKind::Malformed, reason);
            }
        };
        let size = checkpoint.tree_size;
        let here = Location::Checkpoint { tree_size: size };
        match checkpoint.verify(self.key) {
            Ok(()) => {}
            Err(CheckpointError::WrongKey { expected, found }) => {
                return self.fail(
                    here,
                    FailureKind::WrongKey,
                    format!(
                        "signed by key {}, not by the given public key {expected}",
                        truncate(&found, 80)
                    ),
                );
            }
            Err(error) => {
                return self.fail(
                    here,
                    FailureKind::BadSignature,
                    format!(
                        "the signature does not verify with key {}: {error}",
                        self.key.key_id()
                    ),
                );
            }
        }
        let current = self.frontier.size();
        if self.stage == Stage::Proof {
            return self.fail(
                here,
                FailureKind::OutOfPlace,
                "a second checkpoint after the last record; the consistency proof comes next"
                    .to_owned(),
            );
        }
        if size == current && size >= self.first_sequence {
            let root = self.frontier.root();
            if root != checkpoint.root_hash {
                let since = self
                    .last_good_checkpoint
                    .map_or(self.first_sequence, |good| good + 1);
                return self.fail(
                    here,
                    FailureKind::RootMismatch,
                    format!(
                        "signed root {} but the frontier and records up to {size} hash to {}: \
                         a record in {since}..={size} (or the frontier) differs from the signed \
                         log",
                        hex::encode(checkpoint.root_hash),
                        hex::encode(root)
                    ),
                );
            }
            self.last_good_checkpoint = Some(size);
            self.report.checkpoints += 1;
            if size == self.last_sequence {
                self.covering = Some(checkpoint);
                self.stage = Stage::Proof;
            }
            return;
        }
        if size > current && current == self.last_sequence {
            self.report.checkpoints += 1;
            self.covering = Some(checkpoint);
            self.stage = Stage::Proof;
            return;
        }
        if size > current {
            let next = current + 1;
            return self.fail(
                Location::Record {
                    sequence: next as i64,
                },
                FailureKind::SequenceGap,
                format!(
                    "record {next} is missing: checkpoint {size} follows record {current} \
                     (records deleted)"
                ),
            );
        }
        self.fail(
            here,
            FailureKind::OutOfPlace,
            format!(
                "a checkpoint of size {size} after record {current}: a checkpoint follows the \
                 record whose sequence is its size, or covers the whole export at its end"
            ),
        );
    }

    fn consistency_line(&mut self, bytes: &[u8]) {
        let line: ConsistencyLine = match serde_json::from_slice(bytes) {
            Ok(line) => line,
            Err(error) => {
                return self.fail(
                    Location::Consistency,
                    FailureKind::Malformed,
                    error.to_string(),
                );
            }
        };
        let Some(covering) = self.covering.clone() else {
            let next = self.frontier.size() + 1;
            if self.frontier.size() < self.last_sequence {
                return self.fail(
                    Location::Record {
                        sequence: next as i64,
                    },
                    FailureKind::SequenceGap,
                    format!(
                        "record {next} is missing: the consistency proof follows record {}",
                        next - 1
                    ),
                );
            }
            return self.fail(
                Location::Consistency,
                FailureKind::Truncated,
                format!(
                    "no signed checkpoint covers the last record {}",
                    self.last_sequence
                ),
            );
        };
        if line.from != self.last_sequence || line.to != covering.tree_size {
            return self.fail(
                Location::Consistency,
                FailureKind::ConsistencyInvalid,
                format!(
                    "the proof is from {} to {}, but must lead from the last record {} to \
                     checkpoint {}",
                    line.from, line.to, self.last_sequence, covering.tree_size
                ),
            );
        }
        if line.proof.len() > CONSISTENCY_PROOF_HASHES_MAX {
            return self.fail(
                Location::Consistency,
                FailureKind::Malformed,
                format!(
                    "{} proof hashes, more than any real proof",
                    line.proof.len()
                ),
            );
        }
        let mut proof = Vec::with_capacity(line.proof.len());
        for (index, hash) in line.proof.iter().enumerate() {
            match parse_hash(hash) {
                Ok(hash) => proof.push(hash),
                Err(error) => {
                    return self.fail(
                        Location::Consistency,
                        FailureKind::Malformed,
                        format!("proof hash {index}: {error}"),
                    );
                }
            }
        }
        let root = self.frontier.root();
        if !merkle::verify_consistency(
            self.last_sequence,
            covering.tree_size,
            &root,
            &covering.root_hash,
            &proof,
        ) {
            return self.fail(
                Location::Checkpoint {
                    tree_size: covering.tree_size,
                },
                FailureKind::ConsistencyInvalid,
                format!(
                    "the records up to {} (root {}) are not proven to be a prefix of checkpoint \
                     {}: the consistency proof does not verify (a record in {}..={} differs \
                     from the signed log, or the proof was altered)",
                    self.last_sequence,
                    hex::encode(root),
                    covering.tree_size,
                    self.last_good_checkpoint
                        .map_or(self.first_sequence, |good| good + 1),
                    self.last_sequence
                ),
            );
        }
        self.report.covering_checkpoint = Some(covering.tree_size);
        self.stage = Stage::Done;
    }
}

fn trim_line_end(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// A positive decimal amount (`"1234.56"`) in units of 10^-9, and its number of fraction
/// digits. Integer arithmetic only: money is never a float.
fn parse_amount(text: &str) -> Result<(i128, u32), &'static str> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err("not a positive decimal number");
    }
    if text.contains('.') && fraction.is_empty() {
        return Err("not a positive decimal number");
    }
    if !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err("not a positive decimal number");
    }
    let fraction_digits = fraction.len() as u32;
    if fraction_digits > AMOUNT_FRACTION_DIGITS_MAX {
        return Err("more fraction digits than any currency has");
    }
    // i64 minor units have at most 19 digits; anything longer is not a ledger amount.
    if whole.len() > 20 {
        return Err("larger than any ledger amount");
    }
    let whole: i128 = whole.parse().map_err(|_| "not a decimal number")?;
    let mut fraction_units: i128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| "not a decimal number")?
    };
    for _ in fraction_digits..AMOUNT_FRACTION_DIGITS_MAX {
        fraction_units *= 10;
    }
    let units = whole * 10i128.pow(AMOUNT_FRACTION_DIGITS_MAX) + fraction_units;
    if units <= 0 {
        return Err("not positive");
    }
    Ok((units, fraction_digits))
}

/// Units of 10^-9 as decimal text with `fraction_digits` digits after the point.
fn format_amount(units: i128, fraction_digits: u32) -> String {
    let scale = 10i128.pow(AMOUNT_FRACTION_DIGITS_MAX);
    let sign = if units < 0 { "-" } else { "" };
    let units = units.unsigned_abs();
    let whole = units / scale.unsigned_abs();
    let fraction = units % scale.unsigned_abs();
    if fraction_digits == 0 {
        return format!("{sign}{whole}");
    }
    let fraction = fraction / 10u128.pow(AMOUNT_FRACTION_DIGITS_MAX - fraction_digits);
    format!(
        "{sign}{whole}.{fraction:0width$}",
        width = fraction_digits as usize
    )
}

#[cfg(test)]
mod tests;
