//! Countersign's tamper-evident audit trail.
//!
//! This is the only crate that knows how an audit record is encoded. Every record is sealed
//! into a SHA-256 hash chain when it is appended (`hash = SHA-256(previous_hash || encoding)`),
//! so editing, deleting or reordering a stored row is detectable by [`sqlite::verify`].
//!
//! Code map:
//! - [`encoding`]: the canonical byte encoding and [`chain_hash`]; changing it changes every hash.
//! - [`sqlite`]: the `audit_records` table; `append` runs inside the ledger's write transaction.
//! - [`postgres`]: the same trail on PostgreSQL, sealed asynchronously by one leader, plus the
//!   Kafka outbox.
//! - [`merkle`]: the RFC 6962 Merkle tree over the chain (leaf = the record's chain hash):
//!   roots, inclusion and consistency proofs from stored perfect subtrees.
//! - [`checkpoint`]: Ed25519-signed checkpoints (tree size, root, time) and their keys.
//! - [`index`]: the auditors' workspace store, derived from the sealed chain: the tree's
//!   nodes, signed checkpoints, the search index, the indexer step and checkpoint verification.
//! - [`envelope`]: AES-256-GCM envelope encryption of the unmasked policy input (keyring,
//!   KEK rotation, account tokens); [`inputs`] stores the sealed inputs in `audit_inputs`.
//! - [`export`]: the export file (JSONL: header, frontier, records, checkpoints, consistency
//!   proof) and its streaming offline verifier, which needs only the checkpoint public key.
//! - [`sink`]: delivery of sealed records to external consumers (OPA-style decision logs).
//!   Sinks pull from the table with a cursor, so the table stays the single source of truth.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod encoding;
pub mod envelope;
mod error;
pub mod export;
pub mod index;
pub mod inputs;
pub mod merkle;
pub mod postgres;
pub mod retention;
pub mod sink;
pub mod sqlite;
mod verify;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub use encoding::{GENESIS_PREVIOUS_HASH, canonical_json, chain_hash};
pub use envelope::{EnvelopeError, KeyFile, Keyring, KeyringError, SealedInput};
pub use error::AuditError;
pub use postgres::OutboxItem;
pub use sink::{AuditSink, DecisionLogLabels, JsonlDecisionLog, decision_path};
pub use sqlite::{BreakKind, BrokenRecord, ChainHead, VerifyReport};

/// Why an audit record exists: a policy decision, or what the ledger did after one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Decision,
    /// A transfer posted (two entries written).
    Posting,
    /// Funds reserved for a transfer held for approval (maker-checker).
    Reservation,
    /// An approve/reject the policy allowed, accepted or refused by the ledger.
    Approval,
    /// A held transfer voided (rejected, expired, or refused at posting); reservation released.
    Release,
}

impl RecordKind {
    /// The spelling used in the database, the hash encoding and JSON. Never change it: it is
    /// part of every stored hash.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Decision => "decision",
            RecordKind::Posting => "posting",
            RecordKind::Reservation => "reservation",
            RecordKind::Approval => "approval",
            RecordKind::Release => "release",
        }
    }

    /// Inverse of [`RecordKind::as_str`]; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "decision" => Some(RecordKind::Decision),
            "posting" => Some(RecordKind::Posting),
            "reservation" => Some(RecordKind::Reservation),
            "approval" => Some(RecordKind::Approval),
            "release" => Some(RecordKind::Release),
            _ => None,
        }
    }
}

/// What happened to the request the record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    Error,
    Posted,
    /// Allowed subject to approval: held, funds reserved.
    Pending,
    /// A held transfer that will never post.
    Voided,
}

impl Outcome {
    /// The spelling used in the database, the hash encoding and JSON. Never change it: it is
    /// part of every stored hash.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
            Outcome::Posted => "posted",
            Outcome::Pending => "pending",
            Outcome::Voided => "voided",
        }
    }

    /// Inverse of [`Outcome::as_str`]; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "allow" => Some(Outcome::Allow),
            "deny" => Some(Outcome::Deny),
            "error" => Some(Outcome::Error),
            "posted" => Some(Outcome::Posted),
            "pending" => Some(Outcome::Pending),
            "voided" => Some(Outcome::Voided),
            _ => None,
        }
    }
}

/// The authenticated client (mTLS certificate) that caused the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Lowercase hex SHA-256 of the client certificate (DER).
    pub fingerprint_sha256: String,
    pub common_name: Option<String>,
    /// Kept in the order the caller gives them; the order is part of the hash.
    pub roles: Vec<String>,
}

/// A record as the caller builds it, before it has a place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRecord {
    pub record_id: Uuid,
    pub kind: RecordKind,
    pub decision_id: Uuid,
    /// Stored and hashed in UTC; `append` converts other offsets to UTC (same instant).
    #[serde(with = "encoding::timestamp_serde")]
    pub timestamp: OffsetDateTime,
    pub subject: Subject,
    pub source_address: String,
    /// e.g. "transfer.create", "account.create", "ledger.seed".
    pub action: String,
    /// Already masked by the caller: this crate stores it verbatim (in canonical form).
    pub masked_input: serde_json::Value,
    /// The policy decision document or the posting summary.
    pub result: serde_json::Value,
    pub bundle_revision: String,
    pub outcome: Outcome,
    /// What the bundle's decision-log mask policy removed or replaced (OPA's `erased` and
    /// `masked`); empty when the bundle has no `system.log.mask` rule or the record is not a
    /// policy decision.
    #[serde(default)]
    pub redaction: Redaction,
    /// The unmasked policy input, encrypted ([`envelope::Keyring::seal`]). Both stores'
    /// `append` write it to `audit_inputs` in the same transaction as the record. It is not
    /// part of the record's hash (an auditor verifies the chain without the key) and never
    /// appears in JSON; records read back from a store carry `None`.
    #[serde(skip)]
    pub sealed_input: Option<SealedInput>,
}

/// The decision-log mask's effect on one record, as JSON pointers under `/input` and `/result`.
///
/// An erased `/input` (or `/result`) is stored as JSON `null`; the pointer in `erased` is what
/// tells it apart from a policy input that was `null`. When the mask policy itself failed, the
/// record is still written, with the whole input erased and the failure in `error`: a mask
/// error never drops a record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    /// Pointers removed, in the order the mask applied them.
    pub erased: Vec<String>,
    /// Pointers whose value the mask replaced (upsert), in order.
    pub masked: Vec<String>,
    /// Why masking failed, if it did.
    pub error: Option<String>,
}

impl Redaction {
    pub fn is_empty(&self) -> bool {
        self.erased.is_empty() && self.masked.is_empty() && self.error.is_none()
    }

    /// True if the whole document at `pointer` (`/input` or `/result`) was erased.
    pub fn erased_whole(&self, pointer: &str) -> bool {
        self.erased.iter().any(|erased| erased == pointer)
    }

    /// The canonical JSON stored in the `redaction` column (and hashed).
    pub fn to_canonical_json(&self) -> String {
        let strings = |items: &[String]| {
            serde_json::Value::Array(
                items
                    .iter()
                    .map(|item| serde_json::Value::String(item.clone()))
                    .collect(),
            )
        };
        let mut object = serde_json::Map::new();
        object.insert("erased".to_owned(), strings(&self.erased));
        object.insert("masked".to_owned(), strings(&self.masked));
        object.insert(
            "error".to_owned(),
            self.error
                .clone()
                .map_or(serde_json::Value::Null, serde_json::Value::String),
        );
        canonical_json(&serde_json::Value::Object(object))
    }
}

/// A record with its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRecord {
    /// 1 for the first record, then consecutive with no gaps.
    pub sequence: i64,
    pub record: NewRecord,
    #[serde(with = "encoding::hash_hex_serde")]
    pub previous_hash: [u8; 32],
    #[serde(with = "encoding::hash_hex_serde")]
    pub hash: [u8; 32],
}

/// Masks an account number for logs and audit input: only the last 4 characters stay readable,
/// which is enough for a human to tell accounts apart without exposing the number.
/// Strings of 4 characters or fewer are masked completely, because their last 4 characters
/// would be the whole number. Counts characters, not bytes, so the output never splits a
/// UTF-8 sequence.
pub fn mask_account_number(account: &str) -> String {
    const VISIBLE_CHARS: usize = 4;
    let length_chars = account.chars().count();
    if length_chars <= VISIBLE_CHARS {
        return "*".repeat(length_chars);
    }
    let hidden_chars = length_chars - VISIBLE_CHARS;
    let mut masked = "*".repeat(hidden_chars);
    masked.extend(account.chars().skip(hidden_chars));
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_account_number_keeps_last_four() {
        let cases = [
            ("DE89370400440532013000", "******************3000"),
            ("12345", "*2345"),
            ("1234", "****"),
            ("123", "***"),
            ("", ""),
            ("ÄÖÜß12345", "*****2345"),
        ];
        for (input, expected) in cases {
            assert_eq!(mask_account_number(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn enum_spellings_round_trip() {
        for kind in [
            RecordKind::Decision,
            RecordKind::Posting,
            RecordKind::Reservation,
            RecordKind::Approval,
            RecordKind::Release,
        ] {
            assert_eq!(RecordKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).ok(),
                Some(serde_json::Value::from(kind.as_str()))
            );
        }
        for outcome in [
            Outcome::Allow,
            Outcome::Deny,
            Outcome::Error,
            Outcome::Posted,
            Outcome::Pending,
            Outcome::Voided,
        ] {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
            assert_eq!(
                serde_json::to_value(outcome).ok(),
                Some(serde_json::Value::from(outcome.as_str()))
            );
        }
        assert_eq!(Outcome::parse("ALLOW"), None);
    }
}
