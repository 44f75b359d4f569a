//! The auditors' workspace store: the Merkle tree over the sealed chain, signed checkpoints
//! and the search index, all **derived** from the sealed chain and rebuilt from it.
//!
//! Tables (PostgreSQL: `ledger/migrations/0004_audit_index.sql`; SQLite: [`sqlite::migrate`]):
//! - `audit_index_state`: one row, `tree_size` = leaves in the tree = the indexer's cursor
//!   (leaf `i` is the record with sequence `i + 1`).
//! - `audit_merkle_nodes(level, idx, hash)`: every perfect subtree of level >= 1. Level-0
//!   nodes (leaf hashes) are **not** stored: a leaf is `merkle::leaf_hash` of the record's
//!   chain hash, one primary-key read away, and storing it would double the table (10M rows
//!   per 10M records). [`sqlite::merkle_nodes`] / [`postgres::merkle_nodes`] serve level-0 ids
//!   from the chain, so callers see every perfect node.
//! - `audit_checkpoints(tree_size, root_hash, timestamp, key_id, signature)`.
//! - `audit_index` (one row per record: time, kind, action, outcome, decision id, subject,
//!   bundle revision, amount and currency) with one composite index per filter whose second
//!   column is `sequence`, so the first page of any single-filter query is an index range scan
//!   in sequence order; `audit_index_roles(role, sequence)` and
//!   `audit_index_accounts(token, sequence)` for the multi-valued filters.
//! - `audit_index_minutes(minute, first_sequence, last_sequence, counts…)`: per UTC minute, the
//!   sequence range of the records stamped in it and their decision counts by outcome. A time
//!   filter becomes an exact sequence range (`sequence BETWEEN min(first) AND max(last)` over
//!   the minutes of the range, then `at` filters the edges) even though timestamps are only
//!   nearly monotone in sequence; `/v1/audit/stats` sums the same rows.
//!
//! One indexing step ([`sqlite::index_step`] / [`postgres::index_step`]) runs in ONE
//! transaction: it re-reads the cursor and the frontier from the stored nodes, reads the next
//! sealed records, checks that each continues the chain (previous hash and recomputed hash —
//! the tree never commits to a record the chain does not vouch for), appends their leaves,
//! and writes the completed nodes, the index rows and the advanced cursor together. A crash
//! leaves either all of it or none; the cursor update is conditional on the old value, so two
//! indexers (a leadership hand-over) can never both advance it.
//!
//! [`verify_checkpoints`]-style checks ([`sqlite::verify_checkpoints`],
//! [`postgres::verify_checkpoints`]) recompute every node from the chain's leaves, every
//! signed root from the chain and from the stored nodes, and the consistency of each pair of
//! consecutive checkpoints, and name the first checkpoint (or node) that fails.

pub mod postgres;
pub mod sqlite;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sqlx::{ColumnIndex, Decode, Row, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::checkpoint::{Checkpoint, CheckpointVerifier};
use crate::merkle::{self, Frontier, Hash, NodeId};
use crate::verify::StoredSeal;
use crate::{AuditError, NewRecord, Outcome, RecordKind, SealedRecord, encoding};

/// Most records one query page returns (the API's `limit` bound).
pub const QUERY_LIMIT_MAX: u32 = 1_000;
/// Page size when the caller does not say.
pub const QUERY_LIMIT_DEFAULT: u32 = 100;
/// Longest text filter value accepted (common names, revisions, roles, tokens).
pub const QUERY_TEXT_BYTES_MAX: usize = 256;
/// Most records one indexing step takes: bounds the transaction (and, on SQLite, how long the
/// ledger writer can wait for the file lock).
pub const INDEX_BATCH_RECORDS_MAX: u32 = 5_000;
/// Most checkpoints one listing returns.
pub const CHECKPOINTS_PAGE_MAX: u32 = 1_000;
/// Most node ids one [`sqlite::merkle_nodes`] call takes (a proof needs O(log² n)).
pub const NODE_IDS_MAX: usize = 4_096;
/// Most buckets one stats call returns (a year of hours is 8,784).
pub const STATS_BUCKETS_MAX: usize = 10_000;
/// Most account tokens indexed per record (a transfer has two accounts).
pub const ACCOUNT_TOKENS_PER_RECORD_MAX: usize = 16;
/// Most roles indexed per record (the rest are still in the record itself).
pub const ROLES_PER_RECORD_MAX: usize = 32;
/// Records (and their nodes) per page while verifying checkpoints.
const VERIFY_PAGE_RECORDS: i64 = 1_000;

/// Number of minor-unit decimals of an ISO 4217 code, `None` for a code the caller does not
/// know. The ledger passes its own currency table, so this crate needs no copy of it.
pub type CurrencyExponent = fn(&str) -> Option<u8>;

/// A search over the index. Every filter is optional and they combine with AND; results are
/// ascending by sequence, after `after`, at most `limit` (keyset pagination: pass the last
/// sequence of a page as the next `after`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditQuery {
    /// Records stamped at or after this instant (microsecond precision; see [`Self::validate`]).
    pub from: Option<OffsetDateTime>,
    /// Records stamped strictly before this instant.
    pub to: Option<OffsetDateTime>,
    pub kind: Option<RecordKind>,
    pub outcome: Option<Outcome>,
    pub subject_common_name: Option<String>,
    pub subject_fingerprint: Option<String>,
    pub role: Option<String>,
    /// The blind-index token of an account (`envelope::Keyring::account_token`), never the
    /// account number itself.
    pub account_token: Option<String>,
    pub currency: Option<String>,
    /// Inclusive bounds in minor units of `currency` (required with them).
    pub amount_min_minor: Option<i64>,
    pub amount_max_minor: Option<i64>,
    pub bundle_revision: Option<String>,
    pub decision_id: Option<Uuid>,
    /// Sequence of the last record of the previous page; 0 for the first page.
    pub after: i64,
    /// 1..=[`QUERY_LIMIT_MAX`] + 1 (one more than a page, to learn whether another follows).
    pub limit: u32,
}

impl Default for AuditQuery {
    fn default() -> Self {
        AuditQuery {
            from: None,
            to: None,
            kind: None,
            outcome: None,
            subject_common_name: None,
            subject_fingerprint: None,
            role: None,
            account_token: None,
            currency: None,
            amount_min_minor: None,
            amount_max_minor: None,
            bundle_revision: None,
            decision_id: None,
            after: 0,
            limit: QUERY_LIMIT_DEFAULT,
        }
    }
}

impl AuditQuery {
    /// Checks the bounds; the error names the parameter. The HTTP layer validates first with
    /// its own messages; this is the store's own guard.
    pub fn validate(&self) -> Result<(), AuditError> {
        let invalid = |parameter: &'static str, message: &str| {
            Err(AuditError::InvalidQuery {
                parameter,
                message: message.to_owned(),
            })
        };
        if self.limit == 0 || self.limit > QUERY_LIMIT_MAX + 1 {
            return invalid("limit", "must be 1..=1000");
        }
        if self.after < 0 {
            return invalid("after", "must be a sequence number >= 0");
        }
        for (parameter, time) in [("from", self.from), ("to", self.to)] {
            if let Some(time) = time
                && !time.nanosecond().is_multiple_of(1_000)
            {
                // PostgreSQL keeps microseconds; a finer bound could not be compared exactly.
                return invalid(parameter, "must have at most microsecond precision");
            }
        }
        for (parameter, text) in [
            ("subject_cn", &self.subject_common_name),
            ("subject_fingerprint", &self.subject_fingerprint),
            ("role", &self.role),
            ("account", &self.account_token),
            ("currency", &self.currency),
            ("bundle_revision", &self.bundle_revision),
        ] {
            if text
                .as_ref()
                .is_some_and(|text| text.is_empty() || text.len() > QUERY_TEXT_BYTES_MAX)
            {
                return invalid(parameter, "must be 1 to 256 bytes");
            }
        }
        if (self.amount_min_minor.is_some() || self.amount_max_minor.is_some())
            && self.currency.is_none()
        {
            return invalid(
                "currency",
                "is required with amount_min/amount_max (amounts compare in minor units of one currency)",
            );
        }
        Ok(())
    }
}

/// Width of a stats bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatsBucket {
    Hour,
    Day,
}

impl StatsBucket {
    pub fn parse(text: &str) -> Option<StatsBucket> {
        match text {
            "hour" => Some(StatsBucket::Hour),
            "day" => Some(StatsBucket::Day),
            _ => None,
        }
    }

    pub(crate) fn seconds(self) -> i64 {
        match self {
            StatsBucket::Hour => 3_600,
            StatsBucket::Day => 86_400,
        }
    }

    /// The start of the bucket holding `time` (UTC).
    pub fn floor(self, time: OffsetDateTime) -> OffsetDateTime {
        let seconds = time.unix_timestamp();
        let floored = seconds - seconds.rem_euclid(self.seconds());
        OffsetDateTime::from_unix_timestamp(floored).expect("a floored valid time is valid")
    }
}

/// Decision records (kind `decision`) by outcome in one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsRow {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub allow: u64,
    pub deny: u64,
    pub pending: u64,
    pub error: u64,
}

/// What one indexing step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IndexStep {
    /// Records indexed (leaves appended) by this step.
    pub indexed: u64,
    /// Leaves in the tree after it.
    pub tree_size: u64,
}

/// Checks the stats range and returns the bucket starts it covers: `[floor(from), to)`
/// rounded out to whole buckets.
pub fn stats_buckets(
    from: OffsetDateTime,
    to: OffsetDateTime,
    bucket: StatsBucket,
) -> Result<Vec<OffsetDateTime>, AuditError> {
    if to <= from {
        return Err(AuditError::InvalidQuery {
            parameter: "to",
            message: "must be after from".to_owned(),
        });
    }
    let first = bucket.floor(from);
    let step = time::Duration::seconds(bucket.seconds());
    let span = (to - first).whole_seconds();
    let count =
        span.div_euclid(bucket.seconds()) + i64::from(span.rem_euclid(bucket.seconds()) != 0);
    if count > STATS_BUCKETS_MAX as i64 {
        return Err(AuditError::InvalidQuery {
            parameter: "to",
            message: format!("the range spans {count} buckets, more than {STATS_BUCKETS_MAX}"),
        });
    }
    Ok((0..count)
        .map(|index| first + step * index as i32)
        .collect())
}

/// Dense stats rows for `starts` from the sparse rows both back ends' stats query returns:
/// `(bucket start unix seconds, allow, deny, pending, error)` sums.
fn dense_stats(starts: &[OffsetDateTime], sums: Vec<(i64, i64, i64, i64, i64)>) -> Vec<StatsRow> {
    let count = |value: i64| u64::try_from(value).unwrap_or(0);
    let sparse: HashMap<i64, [u64; 4]> = sums
        .into_iter()
        .map(|(start, allow, deny, pending, error)| {
            (
                start,
                [count(allow), count(deny), count(pending), count(error)],
            )
        })
        .collect();
    starts
        .iter()
        .map(|start| {
            let [allow, deny, pending, error] = sparse
                .get(&start.unix_timestamp())
                .copied()
                .unwrap_or_default();
            StatsRow {
                start: *start,
                allow,
                deny,
                pending,
                error,
            }
        })
        .collect()
}

/// Parses a plain decimal amount (`^[0-9]+(\.[0-9]+)?$`) into minor units of a currency with
/// `exponent` decimals: "1500.5" with 2 → 150050. `None` for anything else, for more decimals
/// than the currency has (never rounded) and for values that overflow `i64`. Integer
/// arithmetic only.
pub fn decimal_to_minor_units(text: &str, exponent: u8) -> Option<i64> {
    let (integer, fraction) = match text.split_once('.') {
        Some((integer, fraction)) if !fraction.is_empty() => (integer, fraction),
        Some(_) => return None,
        None => (text, ""),
    };
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if integer.is_empty() || !digits(integer) || !digits(fraction) {
        return None;
    }
    let exponent = usize::from(exponent);
    if fraction.len() > exponent {
        return None;
    }
    let padding = exponent - fraction.len();
    let mut value: i64 = 0;
    for digit in integer
        .trim_start_matches('0')
        .bytes()
        .chain(fraction.bytes())
        .chain(std::iter::repeat_n(b'0', padding))
    {
        value = value
            .checked_mul(10)?
            .checked_add(i64::from(digit - b'0'))?;
    }
    Some(value)
}

/// An ISO 4217-shaped code: three upper-case ASCII letters.
fn currency_code(value: &serde_json::Value) -> Option<&str> {
    value
        .as_str()
        .filter(|code| code.len() == 3 && code.bytes().all(|byte| byte.is_ascii_uppercase()))
}

/// The amount a record is about, as (minor units, currency), from what the record itself
/// says: a transfer or approval decision's input (`transfer.amount_minor` + `currency`), a
/// posting's result (`amount` + `currency`), or the masked summary of posting, reservation,
/// release and approval records (`amount` + `currency`). Decimal text is converted with the
/// currency's exponent; a currency the ledger does not know keeps its code without amount.
pub(crate) fn amount_of(
    record: &NewRecord,
    exponent: CurrencyExponent,
) -> (Option<i64>, Option<String>) {
    let input = &record.masked_input;
    if let Some(transfer) = input.get("transfer")
        && let Some(currency) = transfer.get("currency").and_then(currency_code)
    {
        let minor = transfer
            .get("amount_minor")
            .and_then(serde_json::Value::as_i64)
            .or_else(|| {
                let text = transfer.get("amount")?.as_str()?;
                decimal_to_minor_units(text, exponent(currency)?)
            });
        return (minor, Some(currency.to_owned()));
    }
    for document in [&record.result, input] {
        if let Some(currency) = document.get("currency").and_then(currency_code)
            && let Some(text) = document.get("amount").and_then(serde_json::Value::as_str)
        {
            let minor =
                exponent(currency).and_then(|exponent| decimal_to_minor_units(text, exponent));
            return (minor, Some(currency.to_owned()));
        }
    }
    (None, None)
}

/// A record's index row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) sequence: i64,
    pub(crate) record_id: Uuid,
    /// The record's timestamp (UTC, full precision; PostgreSQL floors it to microseconds).
    pub(crate) at: OffsetDateTime,
    pub(crate) kind: RecordKind,
    pub(crate) action: String,
    pub(crate) outcome: Outcome,
    pub(crate) decision_id: Uuid,
    pub(crate) subject_fingerprint: String,
    pub(crate) subject_common_name: Option<String>,
    pub(crate) bundle_revision: String,
    pub(crate) amount_minor: Option<i64>,
    pub(crate) currency: Option<String>,
    pub(crate) roles: Vec<String>,
}

/// The minute a record falls in, as unix seconds (UTC).
pub(crate) fn minute_of(time: OffsetDateTime) -> i64 {
    let seconds = time.unix_timestamp();
    seconds - seconds.rem_euclid(60)
}

/// One row of `audit_index_minutes`, as the delta a batch adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MinuteDelta {
    pub(crate) first_sequence: i64,
    pub(crate) last_sequence: i64,
    pub(crate) records: i64,
    /// Decision records by outcome: allow, deny, pending, error.
    pub(crate) decisions: [i64; 4],
}

/// Everything one indexing step writes.
pub(crate) struct Batch {
    pub(crate) entries: Vec<IndexEntry>,
    /// Completed perfect nodes of level >= 1.
    pub(crate) nodes: Vec<(NodeId, Hash)>,
    /// (sequence, token), deduplicated per record.
    pub(crate) tokens: Vec<(i64, String)>,
    /// Keyed by minute (unix seconds).
    pub(crate) minutes: BTreeMap<i64, MinuteDelta>,
    pub(crate) tree_size: u64,
}

/// A record read for indexing: its sequence and stored row.
pub(crate) type StoredRow = (i64, Result<StoredSeal, String>);

/// Checks that `rows` continue the chain after the leaf `frontier.size()` (whose chain hash is
/// `previous_hash`), decodes them and appends their leaves. Stops at the first row that does
/// not continue the chain: `Err(IndexChain)` when it is the very first, otherwise the rows
/// before it are kept (the next step reports it).
pub(crate) fn append_rows(
    frontier: &mut Frontier,
    mut previous_hash: Hash,
    rows: Vec<StoredRow>,
    nodes: &mut Vec<(NodeId, Hash)>,
) -> Result<Vec<SealedRecord>, AuditError> {
    let mut records = Vec::with_capacity(rows.len());
    for (sequence, stored) in rows {
        let expected = i64::try_from(frontier.size())
            .ok()
            .and_then(|size| size.checked_add(1))
            .ok_or(AuditError::SequenceExhausted)?;
        let checked = check_continues(sequence, expected, &previous_hash, stored);
        let sealed = match checked {
            Ok(sealed) => sealed,
            Err(reason) if records.is_empty() => {
                return Err(AuditError::IndexChain {
                    sequence: expected,
                    reason,
                });
            }
            Err(_) => break,
        };
        previous_hash = sealed.hash;
        nodes.extend(
            frontier
                .push(merkle::leaf_hash(&sealed.hash))
                .into_iter()
                .filter(|(id, _)| id.level > 0),
        );
        records.push(sealed);
    }
    Ok(records)
}

fn check_continues(
    sequence: i64,
    expected: i64,
    previous_hash: &Hash,
    stored: Result<StoredSeal, String>,
) -> Result<SealedRecord, String> {
    if sequence != expected {
        return Err(format!(
            "sequence {expected} is missing; the next sealed record is {sequence}"
        ));
    }
    let stored = stored?;
    if stored.previous_hash != *previous_hash {
        return Err(format!(
            "previous_hash does not match the hash of record {}",
            sequence - 1
        ));
    }
    let recomputed = encoding::hash_columns(previous_hash, sequence, &stored.columns);
    if recomputed != stored.hash {
        return Err("the stored hash does not match the record's contents".to_owned());
    }
    stored.into_sealed(sequence)
}

/// Builds the index rows of `records` (already appended to the tree). `own_tokens` are the
/// account tokens of records that have a sealed input; `decision_tokens` those of decision
/// records by decision id, inherited by records without their own (postings, reservations,
/// approvals, releases).
pub(crate) fn build_batch(
    records: &[SealedRecord],
    nodes: Vec<(NodeId, Hash)>,
    own_tokens: &HashMap<Uuid, Vec<String>>,
    decision_tokens: &HashMap<Uuid, Vec<String>>,
    exponent: CurrencyExponent,
    tree_size: u64,
) -> Batch {
    let mut entries = Vec::with_capacity(records.len());
    let mut tokens = Vec::new();
    let mut minutes: BTreeMap<i64, MinuteDelta> = BTreeMap::new();
    for sealed in records {
        let record = &sealed.record;
        let at = record.timestamp.to_offset(time::UtcOffset::UTC);
        let (amount_minor, currency) = amount_of(record, exponent);
        let mut roles: Vec<String> = record
            .subject
            .roles
            .iter()
            .filter(|role| !role.is_empty() && role.len() <= QUERY_TEXT_BYTES_MAX)
            .take(ROLES_PER_RECORD_MAX)
            .cloned()
            .collect();
        roles.sort();
        roles.dedup();
        let record_tokens = own_tokens
            .get(&record.record_id)
            .or_else(|| decision_tokens.get(&record.decision_id));
        if let Some(record_tokens) = record_tokens {
            let mut unique: Vec<&String> = record_tokens
                .iter()
                .take(ACCOUNT_TOKENS_PER_RECORD_MAX)
                .collect();
            unique.sort();
            unique.dedup();
            tokens.extend(
                unique
                    .into_iter()
                    .map(|token| (sealed.sequence, token.clone())),
            );
        }
        let delta = minutes.entry(minute_of(at)).or_insert(MinuteDelta {
            first_sequence: sealed.sequence,
            last_sequence: sealed.sequence,
            records: 0,
            decisions: [0; 4],
        });
        delta.first_sequence = delta.first_sequence.min(sealed.sequence);
        delta.last_sequence = delta.last_sequence.max(sealed.sequence);
        delta.records += 1;
        if record.kind == RecordKind::Decision {
            let slot = match record.outcome {
                Outcome::Allow => Some(0),
                Outcome::Deny => Some(1),
                Outcome::Pending => Some(2),
                Outcome::Error => Some(3),
                Outcome::Posted | Outcome::Voided => None,
            };
            if let Some(slot) = slot {
                delta.decisions[slot] += 1;
            }
        }
        entries.push(IndexEntry {
            sequence: sealed.sequence,
            record_id: record.record_id,
            at,
            kind: record.kind,
            action: record.action.clone(),
            outcome: record.outcome,
            decision_id: record.decision_id,
            subject_fingerprint: record.subject.fingerprint_sha256.clone(),
            subject_common_name: record.subject.common_name.clone(),
            bundle_revision: record.bundle_revision.clone(),
            amount_minor,
            currency,
            roles,
        });
    }
    Batch {
        entries,
        nodes,
        tokens,
        minutes,
        tree_size,
    }
}

/// Parses the `account_tokens` JSON array of an `audit_inputs` row; malformed entries are
/// skipped (the record is still indexed, just not findable by those accounts), and the
/// bound applies.
pub(crate) fn parse_tokens(text: &str) -> Vec<String> {
    let Ok(tokens) = serde_json::from_str::<Vec<String>>(text) else {
        tracing::warn!("audit_inputs.account_tokens is not a JSON array of strings; not indexed");
        return Vec::new();
    };
    tokens
        .into_iter()
        .filter(|token| {
            !token.is_empty()
                && token.len() <= QUERY_TEXT_BYTES_MAX
                && token.bytes().all(|byte| byte.is_ascii_hexdigit())
        })
        .take(ACCOUNT_TOKENS_PER_RECORD_MAX)
        .collect()
}

/// Floors a time to microseconds (PostgreSQL's `timestamptz` precision).
pub(crate) fn floor_micros(time: OffsetDateTime) -> OffsetDateTime {
    time.replace_nanosecond(time.nanosecond() / 1_000 * 1_000)
        .expect("a floored nanosecond is in range")
}

/// The minute keys a time filter covers, `[minute_of(from), to)` (unbounded ends are the
/// extremes): every minute that starts before `to`, with a fraction of a second rounding up.
pub(crate) fn minute_bounds(
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> (i64, i64) {
    let from_minute = from.map_or(i64::MIN, minute_of);
    let to_seconds = to.map_or(i64::MAX, |to| {
        let seconds = to.unix_timestamp();
        if to.nanosecond() == 0 {
            seconds
        } else {
            seconds + 1
        }
    });
    (from_minute, to_seconds)
}

/// A tree size (or cursor) read from a signed database column.
pub(crate) fn size_of(value: i64) -> Result<u64, AuditError> {
    u64::try_from(value).map_err(|_| AuditError::CorruptIndex {
        reason: format!("negative tree size {value}"),
    })
}

/// A tree size as the signed sequence the databases store.
pub(crate) fn sequence_of(size: u64) -> Result<i64, AuditError> {
    i64::try_from(size).map_err(|_| AuditError::SequenceExhausted)
}

/// A stored node id, checked.
pub(crate) fn node_id(level: i64, index: i64) -> Result<NodeId, AuditError> {
    match (u8::try_from(level), u64::try_from(index)) {
        (Ok(level), Ok(index)) if level < 64 => Ok(NodeId { level, index }),
        _ => Err(AuditError::CorruptIndex {
            reason: format!("stored node id ({level}, {index}) is out of range"),
        }),
    }
}

/// A stored node hash, checked.
pub(crate) fn node_hash_of(bytes: &[u8]) -> Result<Hash, AuditError> {
    crate::verify::hash_from_bytes(bytes).map_err(|reason| AuditError::CorruptIndex {
        reason: format!("stored node hash: {reason}"),
    })
}

/// The chain hash of the sealed record at `sequence`, from its `hash` column.
pub(crate) fn chain_hash_of(sequence: i64, bytes: &[u8]) -> Result<Hash, AuditError> {
    crate::verify::hash_from_bytes(bytes).map_err(|reason| AuditError::CorruptRecord {
        sequence,
        reason: format!("hash: {reason}"),
    })
}

/// The level-0 node of the record at `sequence` (leaf `sequence - 1`): its chain hash's
/// leaf hash.
pub(crate) fn leaf_node(sequence: i64, chain_hash: &Hash) -> Result<(NodeId, Hash), AuditError> {
    let id = NodeId {
        level: 0,
        index: size_of(sequence - 1)?,
    };
    Ok((id, merkle::leaf_hash(chain_hash)))
}

/// The frontier of a tree of `size` leaves from the fetched `nodes` of
/// `ids = Frontier::node_ids(size)`.
pub(crate) fn frontier_from(
    size: u64,
    ids: &[NodeId],
    nodes: &HashMap<NodeId, Hash>,
) -> Result<Frontier, AuditError> {
    let hashes = ids
        .iter()
        .map(|id| {
            nodes
                .get(id)
                .copied()
                .ok_or(merkle::MerkleError::MissingNode(*id))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Frontier::from_nodes(size, hashes)?)
}

/// A sealed record from a row with its `sequence`, the record columns and both hashes (each
/// back end selects them under these names).
pub(crate) fn decode_sealed<R>(row: &R) -> Result<SealedRecord, AuditError>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let sequence: i64 = row.try_get("sequence")?;
    StoredSeal::from_row(row)
        .and_then(|stored| stored.into_sealed(sequence))
        .map_err(|reason| AuditError::CorruptRecord { sequence, reason })
}

/// Columns of `audit_checkpoints`, in the order [`decode_checkpoint`] reads them by name.
pub(crate) const CHECKPOINT_COLUMNS: &str = "tree_size, root_hash, timestamp, key_id, signature";

/// A checkpoint from an `audit_checkpoints` row ([`CHECKPOINT_COLUMNS`]).
pub(crate) fn decode_checkpoint<R>(row: &R) -> Result<Checkpoint, AuditError>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let tree_size: i64 = row.try_get("tree_size")?;
    let corrupt = |reason: String| AuditError::CorruptIndex {
        reason: format!("checkpoint at tree size {tree_size}: {reason}"),
    };
    let root: Vec<u8> = row.try_get("root_hash")?;
    let timestamp: String = row.try_get("timestamp")?;
    let signature: Vec<u8> = row.try_get("signature")?;
    Ok(Checkpoint {
        tree_size: size_of(tree_size)?,
        root_hash: crate::verify::hash_from_bytes(&root).map_err(corrupt)?,
        timestamp: encoding::parse_timestamp(&timestamp)
            .map_err(|error| corrupt(error.to_string()))?,
        key_id: row.try_get("key_id")?,
        signature: <[u8; 64]>::try_from(signature.as_slice())
            .map_err(|_| corrupt(format!("signature has {} bytes", signature.len())))?,
    })
}

/// The ways the checkpoints of a live store can fail verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckpointBreakKind {
    /// Signed by another key, or the signature does not verify.
    Signature,
    /// The signed root is not the root of the chain's first `tree_size` leaves.
    RootMismatch,
    /// The signed root differs from the root recomputed from the stored nodes (the nodes that
    /// proofs are built from).
    StoredRootMismatch,
    /// A stored node is not the hash of its children (or of its leaves).
    NodeMismatch,
    /// A node the tree needs is not stored.
    MissingNode,
    /// The consistency proof from the previous checkpoint does not verify.
    Inconsistent,
    /// The checkpoint covers more records than the chain (or the index) holds.
    BeyondChain,
    /// A stored row cannot be decoded.
    Undecodable,
}

/// Where checkpoint verification failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointBreak {
    pub kind: CheckpointBreakKind,
    /// The checkpoint (by tree size) that fails, when one does.
    pub checkpoint_tree_size: Option<u64>,
    /// The node that fails, when one does.
    pub node: Option<NodeId>,
    /// The first and last sequence the failing node covers.
    pub sequences: Option<(i64, i64)>,
    pub reason: String,
}

/// Result of verifying the checkpoints and the tree of a live store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointsReport {
    pub checkpoints_checked: u64,
    /// Leaves (records) whose chain hash was folded into the recomputed tree.
    pub leaves_checked: u64,
    /// Stored nodes compared with their recomputed value.
    pub nodes_checked: u64,
    /// The indexed tree size (the cursor) when the walk started.
    pub indexed_size: u64,
    pub first_broken: Option<CheckpointBreak>,
}

impl CheckpointsReport {
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// The walk over the chain's leaves in order, recomputing the tree and comparing every
/// stored node and signed checkpoint with it. Back ends feed it pages of leaves, stored nodes
/// and checkpoints; failures are found in chain order, so the first one named is the
/// earliest.
pub(crate) struct CheckpointWalk<'a> {
    verifier: &'a CheckpointVerifier,
    frontier: Frontier,
    /// Checkpoints ascending by tree size, loaded but not reached yet.
    pending: std::collections::VecDeque<Checkpoint>,
    /// The last checkpoint reached (for consistency with the next).
    previous: Option<Checkpoint>,
    report: CheckpointsReport,
    /// Leaves pruned by retention (0 if none): the walk starts after them, from the stored
    /// frontier; checkpoints below can only have their signature checked.
    pruned_size: u64,
}

/// A checkpoint the walk reached intact (signature and chain root), with the one before it:
/// the back end then checks it against the stored nodes ([`CheckpointWalk::check_stored`]).
pub(crate) struct Reached {
    pub(crate) previous: Option<Checkpoint>,
    pub(crate) checkpoint: Checkpoint,
}

impl Reached {
    /// The stored nodes [`CheckpointWalk::check_stored`] reads.
    pub(crate) fn node_ids(&self) -> Vec<NodeId> {
        let size = self.checkpoint.tree_size;
        let mut ids = merkle::root_node_ids(size);
        if let Some(previous) = &self.previous {
            ids.extend(merkle::consistency_node_ids(previous.tree_size, size));
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl<'a> CheckpointWalk<'a> {
    pub(crate) fn new(verifier: &'a CheckpointVerifier, indexed_size: u64) -> CheckpointWalk<'a> {
        CheckpointWalk {
            verifier,
            frontier: Frontier::new(),
            pending: std::collections::VecDeque::new(),
            previous: None,
            report: CheckpointsReport {
                checkpoints_checked: 0,
                leaves_checked: 0,
                nodes_checked: 0,
                indexed_size,
                first_broken: None,
            },
            pruned_size: 0,
        }
    }

    /// A walk that starts after a retention prune: `frontier` is the tree of the pruned
    /// prefix, rebuilt from the stored nodes and the prune anchor's leaf.
    pub(crate) fn starting_after_prune(mut self, frontier: Frontier) -> CheckpointWalk<'a> {
        self.pruned_size = frontier.size();
        self.frontier = frontier;
        self
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.report.first_broken.is_some()
    }

    pub(crate) fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The tree size of the last checkpoint loaded (0 before any).
    pub(crate) fn loaded_through(&self) -> Option<u64> {
        self.pending
            .back()
            .or(self.previous.as_ref())
            .map(|checkpoint| checkpoint.tree_size)
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Adds the next page of checkpoints (ascending by tree size).
    pub(crate) fn add_checkpoints(&mut self, page: Vec<Checkpoint>) {
        for checkpoint in page {
            if checkpoint.tree_size > self.pruned_size {
                self.pending.push_back(checkpoint);
                continue;
            }
            // Before (or at) the prune anchor: the leaves are gone, the signature still counts.
            let signed = checkpoint.verify(self.verifier);
            let root_ok = checkpoint.tree_size < self.pruned_size
                || checkpoint.root_hash == self.frontier.root();
            match (signed, root_ok) {
                (Err(error), _) => self.fail(CheckpointBreak {
                    kind: CheckpointBreakKind::Signature,
                    checkpoint_tree_size: Some(checkpoint.tree_size),
                    node: None,
                    sequences: None,
                    reason: error.to_string(),
                }),
                (Ok(()), false) => self.fail(CheckpointBreak {
                    kind: CheckpointBreakKind::RootMismatch,
                    checkpoint_tree_size: Some(checkpoint.tree_size),
                    node: None,
                    sequences: None,
                    reason: "the signed root is not the root of the pruned prefix".to_owned(),
                }),
                (Ok(()), true) => {
                    self.report.checkpoints_checked += 1;
                    if checkpoint.tree_size == self.pruned_size {
                        self.previous = Some(checkpoint);
                    }
                }
            }
        }
    }

    fn fail(&mut self, broken: CheckpointBreak) {
        if self.report.first_broken.is_none() {
            self.report.first_broken = Some(broken);
        }
    }

    /// Folds the next leaves (chain hashes of consecutive sequences starting at `size() + 1`)
    /// into the tree, compares the level >= 1 nodes they complete with `stored` (nodes
    /// entirely below the indexed size must be stored), and checks each checkpoint the tree
    /// reaches (signature, root). Returns the checkpoints reached intact.
    pub(crate) fn push_leaves(
        &mut self,
        leaves: &[(i64, Hash)],
        stored: &HashMap<NodeId, Hash>,
    ) -> Vec<Reached> {
        let mut reached = Vec::new();
        for (sequence, chain_hash) in leaves {
            if self.is_broken() {
                break;
            }
            let expected = self.frontier.size() as i64 + 1;
            if *sequence != expected {
                self.fail(CheckpointBreak {
                    kind: CheckpointBreakKind::BeyondChain,
                    checkpoint_tree_size: None,
                    node: None,
                    sequences: Some((expected, expected)),
                    reason: format!("sequence {expected} is missing from the chain"),
                });
                break;
            }
            for (id, hash) in self.frontier.push(merkle::leaf_hash(chain_hash)) {
                if id.level == 0 || id.first_leaf() + id.leaves() > self.report.indexed_size {
                    // Leaves are not stored; nodes past the cursor are not written yet.
                    continue;
                }
                self.report.nodes_checked += 1;
                let range = node_sequences(id);
                match stored.get(&id) {
                    Some(stored_hash) if *stored_hash == hash => {}
                    Some(_) => self.fail(CheckpointBreak {
                        kind: CheckpointBreakKind::NodeMismatch,
                        checkpoint_tree_size: None,
                        node: Some(id),
                        sequences: Some(range),
                        reason: format!(
                            "stored node (level {}, index {}) is not the hash of records {}..={} as the chain holds them now",
                            id.level, id.index, range.0, range.1
                        ),
                    }),
                    None => self.fail(CheckpointBreak {
                        kind: CheckpointBreakKind::MissingNode,
                        checkpoint_tree_size: None,
                        node: Some(id),
                        sequences: Some(range),
                        reason: format!(
                            "node (level {}, index {}) over records {}..={} is not stored",
                            id.level, id.index, range.0, range.1
                        ),
                    }),
                }
            }
            self.report.leaves_checked += 1;
            self.reach_checkpoints(&mut reached);
        }
        reached
    }

    /// Checks every checkpoint whose size the walk has just reached: signature, then root.
    fn reach_checkpoints(&mut self, reached: &mut Vec<Reached>) {
        while let Some(next) = self.pending.front() {
            if next.tree_size > self.frontier.size() || self.is_broken() {
                return;
            }
            let checkpoint = self.pending.pop_front().expect("front exists");
            let size = checkpoint.tree_size;
            if let Err(error) = checkpoint.verify(self.verifier) {
                return self.fail(CheckpointBreak {
                    kind: CheckpointBreakKind::Signature,
                    checkpoint_tree_size: Some(size),
                    node: None,
                    sequences: None,
                    reason: format!("checkpoint at tree size {size}: {error}"),
                });
            }
            let root = self.frontier.root();
            if size != self.frontier.size() || root != checkpoint.root_hash {
                return self.fail(CheckpointBreak {
                    kind: CheckpointBreakKind::RootMismatch,
                    checkpoint_tree_size: Some(size),
                    node: None,
                    sequences: None,
                    reason: format!(
                        "checkpoint at tree size {size} signs root {} but the chain's first {size} records hash to {}",
                        hex::encode(checkpoint.root_hash),
                        hex::encode(root)
                    ),
                });
            }
            self.report.checkpoints_checked += 1;
            reached.push(Reached {
                previous: self.previous.replace(checkpoint.clone()),
                checkpoint,
            });
        }
    }

    /// Checks, from the stored nodes alone (what the proof API serves), that a reached
    /// checkpoint's root is recomputable and consistent with the checkpoint before it.
    /// `nodes` must hold [`Reached::node_ids`].
    pub(crate) fn check_stored(&mut self, reached: &Reached, nodes: &HashMap<NodeId, Hash>) {
        if self.is_broken() {
            return;
        }
        let checkpoint = &reached.checkpoint;
        let lookup = |id: NodeId| nodes.get(&id).copied();
        let size = checkpoint.tree_size;
        match merkle::root_at(size, &lookup) {
            Ok(root) if root == checkpoint.root_hash => {}
            Ok(root) => {
                return self.fail(CheckpointBreak {
                    kind: CheckpointBreakKind::StoredRootMismatch,
                    checkpoint_tree_size: Some(size),
                    node: None,
                    sequences: None,
                    reason: format!(
                        "checkpoint at tree size {size} signs root {} but the stored nodes give {}",
                        hex::encode(checkpoint.root_hash),
                        hex::encode(root)
                    ),
                });
            }
            Err(error) => {
                return self.fail(CheckpointBreak {
                    kind: CheckpointBreakKind::MissingNode,
                    checkpoint_tree_size: Some(size),
                    node: None,
                    sequences: None,
                    reason: format!("checkpoint at tree size {size}: {error}"),
                });
            }
        }
        if let Some(previous) = &reached.previous {
            let proof = merkle::consistency_proof(previous.tree_size, size, &lookup);
            let consistent = proof.as_ref().is_ok_and(|proof| {
                merkle::verify_consistency(
                    previous.tree_size,
                    size,
                    &previous.root_hash,
                    &checkpoint.root_hash,
                    proof,
                )
            });
            if !consistent {
                self.fail(CheckpointBreak {
                    kind: CheckpointBreakKind::Inconsistent,
                    checkpoint_tree_size: Some(size),
                    node: None,
                    sequences: None,
                    reason: format!(
                        "checkpoint at tree size {size} is not an append-only extension of the checkpoint at tree size {}",
                        previous.tree_size
                    ),
                });
            }
        }
    }

    /// The report; a checkpoint the chain never reached is `BeyondChain` (records removed).
    pub(crate) fn finish(mut self) -> CheckpointsReport {
        if let Some(unreached) = self.pending.front().cloned() {
            let size = unreached.tree_size;
            let chain = self.frontier.size();
            self.fail(CheckpointBreak {
                kind: CheckpointBreakKind::BeyondChain,
                checkpoint_tree_size: Some(size),
                node: None,
                sequences: Some((chain as i64 + 1, size as i64)),
                reason: format!(
                    "checkpoint at tree size {size} covers records {}..={size}, but the chain ends at {chain}: records were removed",
                    chain + 1
                ),
            });
        }
        self.report
    }
}

/// A value bound into a query, typed per back end when bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    /// A record timestamp bound: canonical text on SQLite, `timestamptz` on PostgreSQL.
    At(OffsetDateTime),
    /// A UUID: hyphenated text on SQLite, `uuid` on PostgreSQL.
    Uuid(Uuid),
}

/// The search part of a query, shared by both back ends: the joins and conditions on
/// `audit_index i` (plus `ro` roles, `ac` accounts), with `?` for each bind in order; each
/// back end numbers the placeholders its own way. `sequence_range` is the exact range the
/// time filter maps to (from `audit_index_minutes`).
pub(crate) struct SearchPlan {
    pub(crate) sql: String,
    pub(crate) binds: Vec<Bind>,
}

/// Builds `SELECT <driving>.sequence FROM … WHERE … ORDER BY <driving>.sequence LIMIT ?`.
///
/// The driving table (whose `(filter, sequence)` index yields rows in sequence order) is the
/// account table when an account is filtered, else the role table, else `audit_index`: both
/// multi-valued tables are far more selective than the single-valued columns they are joined
/// with, and joining on the primary key keeps the order.
pub(crate) fn search_plan(query: &AuditQuery, sequence_range: Option<(i64, i64)>) -> SearchPlan {
    // Placeholders are numbered in text order: the role's `?` sits in FROM, before WHERE.
    let mut binds = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    let driving = if query.account_token.is_some() {
        "ac"
    } else if query.role.is_some() {
        "ro"
    } else {
        "i"
    };
    let mut from = if query.account_token.is_some() {
        "audit_index_accounts ac JOIN audit_index i ON i.sequence = ac.sequence".to_owned()
    } else {
        "audit_index i".to_owned()
    };
    if let Some(role) = &query.role {
        from.push_str(" JOIN audit_index_roles ro ON ro.sequence = i.sequence AND ro.role = ?");
        binds.push(Bind::Text(role.clone()));
    }
    if let Some(token) = &query.account_token {
        conditions.push("ac.token = ?".to_owned());
        binds.push(Bind::Text(token.clone()));
    }
    conditions.push(format!("{driving}.sequence > ?"));
    binds.push(Bind::Int(query.after));
    if let Some((first, last)) = sequence_range {
        conditions.push(format!("{driving}.sequence BETWEEN ? AND ?"));
        binds.push(Bind::Int(first));
        binds.push(Bind::Int(last));
    }
    let mut push = |condition: &str, bind: Bind| {
        conditions.push(condition.to_owned());
        binds.push(bind);
    };
    if let Some(from_time) = query.from {
        push("i.at >= ?", Bind::At(from_time));
    }
    if let Some(to_time) = query.to {
        push("i.at < ?", Bind::At(to_time));
    }
    if let Some(kind) = query.kind {
        push("i.kind = ?", Bind::Text(kind.as_str().to_owned()));
    }
    if let Some(outcome) = query.outcome {
        push("i.outcome = ?", Bind::Text(outcome.as_str().to_owned()));
    }
    if let Some(name) = &query.subject_common_name {
        push("i.subject_common_name = ?", Bind::Text(name.clone()));
    }
    if let Some(fingerprint) = &query.subject_fingerprint {
        push("i.subject_fingerprint = ?", Bind::Text(fingerprint.clone()));
    }
    if let Some(currency) = &query.currency {
        push("i.currency = ?", Bind::Text(currency.clone()));
    }
    if let Some(minimum) = query.amount_min_minor {
        push("i.amount_minor >= ?", Bind::Int(minimum));
    }
    if let Some(maximum) = query.amount_max_minor {
        push("i.amount_minor <= ?", Bind::Int(maximum));
    }
    if let Some(revision) = &query.bundle_revision {
        push("i.bundle_revision = ?", Bind::Text(revision.clone()));
    }
    if let Some(decision_id) = query.decision_id {
        push("i.decision_id = ?", Bind::Uuid(decision_id));
    }
    binds.push(Bind::Int(i64::from(query.limit)));
    SearchPlan {
        sql: format!(
            "SELECT {driving}.sequence AS sequence FROM {from} WHERE {} ORDER BY {driving}.sequence LIMIT ?",
            conditions.join(" AND ")
        ),
        binds,
    }
}

/// Replaces each `?` of `sql` with `prefix` + its 1-based position (`$1` or `?1`).
pub(crate) fn number_placeholders(sql: &str, prefix: char) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut position = 0;
    for character in sql.chars() {
        if character == '?' {
            position += 1;
            out.push(prefix);
            out.push_str(&position.to_string());
        } else {
            out.push(character);
        }
    }
    out
}

/// The first and last sequence a node covers.
fn node_sequences(id: NodeId) -> (i64, i64) {
    let first = id.first_leaf() as i64 + 1;
    (first, first + id.leaves() as i64 - 1)
}

/// What checkpoint verification reads from a back end, on one connection.
pub(crate) trait TreeReader {
    /// Checkpoints with a tree size above `after_tree_size`, ascending, at most `limit`.
    async fn checkpoints_after(
        &mut self,
        after_tree_size: u64,
        limit: u32,
    ) -> Result<Vec<Checkpoint>, AuditError>;
    /// `(sequence, chain hash)` of the sealed records after `sequence`, ascending.
    async fn chain_hashes_after(
        &mut self,
        sequence: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, AuditError>;
    /// The stored nodes among `ids` (at most [`NODE_IDS_MAX`]).
    async fn nodes(&mut self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, AuditError>;
}

/// Walks the chain after `cursor` page by page through `walk`, loading checkpoints ahead of
/// the leaves and comparing every completed node with the stored one. One driver for both
/// back ends, so they cannot verify differently.
pub(crate) async fn walk_checkpoints(
    reader: &mut impl TreeReader,
    mut walk: CheckpointWalk<'_>,
    mut cursor: i64,
    indexed: u64,
) -> Result<CheckpointsReport, AuditError> {
    let mut checkpoints_exhausted = false;
    loop {
        // Keep at least the checkpoints up to the next page's end loaded.
        while !checkpoints_exhausted
            && walk
                .loaded_through()
                .is_none_or(|through| through <= walk.size() + VERIFY_PAGE_RECORDS as u64)
        {
            let page = reader
                .checkpoints_after(walk.loaded_through().unwrap_or(0), CHECKPOINTS_PAGE_MAX)
                .await?;
            checkpoints_exhausted = page.len() < CHECKPOINTS_PAGE_MAX as usize;
            walk.add_checkpoints(page);
        }
        let rows = reader
            .chain_hashes_after(cursor, VERIFY_PAGE_RECORDS)
            .await?;
        let Some((last, _)) = rows.last() else { break };
        cursor = *last;
        let leaves = rows
            .iter()
            .map(|(sequence, hash)| chain_hash_of(*sequence, hash).map(|hash| (*sequence, hash)))
            .collect::<Result<Vec<_>, _>>()?;
        let start = walk.size();
        let end = start + leaves.len() as u64;
        let ids: Vec<NodeId> = completed_node_ids(start, end)
            .into_iter()
            .filter(|id| id.first_leaf() + id.leaves() <= indexed)
            .collect();
        let mut stored = HashMap::new();
        for chunk in ids.chunks(NODE_IDS_MAX) {
            stored.extend(reader.nodes(chunk).await?);
        }
        for reached in walk.push_leaves(&leaves, &stored) {
            let nodes = reader.nodes(&reached.node_ids()).await?;
            walk.check_stored(&reached, &nodes);
        }
        if walk.is_broken() {
            break;
        }
    }
    if !walk.is_broken() && !walk.has_pending() && !checkpoints_exhausted {
        let page = reader
            .checkpoints_after(walk.loaded_through().unwrap_or(0), 1)
            .await?;
        walk.add_checkpoints(page);
    }
    Ok(walk.finish())
}

/// Node ids of level >= 1 completed by leaves `[start, end)` (what `push_leaves` compares).
pub(crate) fn completed_node_ids(start: u64, end: u64) -> Vec<NodeId> {
    let mut ids = Vec::new();
    for leaf in start..end {
        let mut level = 1u8;
        // A node of `level` completes at the leaf that ends it.
        while level < 64 && (leaf + 1).is_multiple_of(1u64 << level) {
            ids.push(NodeId {
                level,
                index: (leaf + 1) / (1u64 << level) - 1,
            });
            level += 1;
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_amounts_become_exact_minor_units() {
        let cases: &[(&str, u8, Option<i64>)] = &[
            ("1500.00", 2, Some(150_000)),
            ("1500.5", 2, Some(150_050)),
            ("1500", 2, Some(150_000)),
            ("0.01", 2, Some(1)),
            ("007.10", 2, Some(710)),
            ("1500", 0, Some(1_500)),
            ("1.500", 3, Some(1_500)),
            ("1.505", 2, None),
            ("1.", 2, None),
            (".5", 2, None),
            ("-1.00", 2, None),
            ("1e3", 2, None),
            ("1,000.00", 2, None),
            (" 1.00", 2, None),
            ("", 2, None),
            ("92233720368547758.07", 2, Some(i64::MAX)),
            ("92233720368547758.08", 2, None),
            ("99999999999999999999", 0, None),
        ];
        for (text, exponent, expected) in cases {
            assert_eq!(
                decimal_to_minor_units(text, *exponent),
                *expected,
                "{text} with {exponent} decimals"
            );
        }
    }

    fn exponent(code: &str) -> Option<u8> {
        match code {
            "EUR" => Some(2),
            "JPY" => Some(0),
            _ => None,
        }
    }

    fn record(masked_input: serde_json::Value, result: serde_json::Value) -> NewRecord {
        NewRecord {
            record_id: Uuid::nil(),
            kind: RecordKind::Posting,
            decision_id: Uuid::nil(),
            timestamp: OffsetDateTime::UNIX_EPOCH,
            subject: crate::Subject {
                fingerprint_sha256: "f".into(),
                common_name: None,
                roles: vec![],
            },
            source_address: "x".into(),
            action: "x".into(),
            masked_input,
            result,
            bundle_revision: "r".into(),
            outcome: Outcome::Posted,
            redaction: Default::default(),
            sealed_input: None,
        }
    }

    #[test]
    fn amounts_are_found_where_each_record_kind_keeps_them() {
        use serde_json::json;
        let cases = [
            (
                json!({"transfer": {"amount": "12.34", "amount_minor": 1234, "currency": "EUR"}}),
                json!({}),
                (Some(1234), Some("EUR")),
            ),
            (
                json!({"transfer": {"amount": "12.34", "currency": "EUR"}}),
                json!({}),
                (Some(1234), Some("EUR")),
            ),
            (
                json!({}),
                json!({"amount": "250.00", "currency": "EUR"}),
                (Some(25_000), Some("EUR")),
            ),
            (
                json!({"amount": "500", "currency": "JPY"}),
                json!({"reserved": "500", "currency": "JPY"}),
                (Some(500), Some("JPY")),
            ),
            (
                json!({"amount": "5.00", "currency": "XAU"}),
                json!({}),
                (None, Some("XAU")),
            ),
            (
                json!({"amount": "5.00", "currency": "eur"}),
                json!({}),
                (None, None),
            ),
            (
                serde_json::Value::Null,
                json!({"allow": true}),
                (None, None),
            ),
        ];
        for (input, result, (minor, currency)) in cases {
            let (found_minor, found_currency) = amount_of(&record(input.clone(), result), exponent);
            assert_eq!(
                (found_minor, found_currency.as_deref()),
                (minor, currency),
                "{input}"
            );
        }
    }

    #[test]
    fn completed_node_ids_match_the_frontier() {
        let mut frontier = Frontier::new();
        let mut pushed = Vec::new();
        for leaf in 0..37u64 {
            pushed.extend(
                frontier
                    .push([leaf as u8; 32])
                    .into_iter()
                    .filter(|(id, _)| id.level > 0)
                    .map(|(id, _)| id),
            );
        }
        assert_eq!(completed_node_ids(0, 37), pushed);
        let mut tail = completed_node_ids(0, 20);
        tail.extend(completed_node_ids(20, 37));
        assert_eq!(tail, pushed);
    }

    #[test]
    fn stats_buckets_round_out_and_are_bounded() {
        use time::macros::datetime;
        let starts = stats_buckets(
            datetime!(2026-03-01 10:30 UTC),
            datetime!(2026-03-01 12:00:01 UTC),
            StatsBucket::Hour,
        )
        .unwrap();
        assert_eq!(
            starts,
            vec![
                datetime!(2026-03-01 10:00 UTC),
                datetime!(2026-03-01 11:00 UTC),
                datetime!(2026-03-01 12:00 UTC)
            ]
        );
        assert!(
            stats_buckets(
                datetime!(2026-03-01 10:00 UTC),
                datetime!(2026-03-01 10:00 UTC),
                StatsBucket::Day
            )
            .is_err()
        );
        assert!(
            stats_buckets(
                datetime!(2000-01-01 0:00 UTC),
                datetime!(2030-01-01 0:00 UTC),
                StatsBucket::Hour
            )
            .is_err()
        );
    }
}
