//! What both stores share when they read sealed rows back: reading the stored text of a row
//! (`StoredSeal::from_row`, generic over the sqlx row type) and walking the chain
//! (`ChainWalk`). One copy, so SQLite and PostgreSQL verify by exactly the same rules.

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::encoding::{self, Columns};
use crate::{
    BreakKind, BrokenRecord, ChainHead, GENESIS_PREVIOUS_HASH, SealedRecord, VerifyReport,
};

/// A sealed row exactly as stored, before interpretation.
pub(crate) struct StoredSeal {
    pub(crate) columns: Columns,
    pub(crate) previous_hash: [u8; 32],
    pub(crate) hash: [u8; 32],
}

impl StoredSeal {
    /// Reads the record columns and both hashes by name; `Err` names the column that has the
    /// wrong type or length.
    pub(crate) fn from_row<R>(row: &R) -> Result<StoredSeal, String>
    where
        R: Row,
        for<'r> &'r str: ColumnIndex<R>,
        for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    {
        let hash = |column: &str| -> Result<[u8; 32], String> {
            let bytes: Vec<u8> = row
                .try_get(column)
                .map_err(|error| format!("{column}: {error}"))?;
            hash_from_bytes(&bytes).map_err(|reason| format!("{column}: {reason}"))
        };
        Ok(StoredSeal {
            columns: columns_from_row(row)?,
            previous_hash: hash("previous_hash")?,
            hash: hash("hash")?,
        })
    }

    /// Interprets the stored text as the record at `sequence`.
    pub(crate) fn into_sealed(self, sequence: i64) -> Result<SealedRecord, String> {
        Ok(SealedRecord {
            sequence,
            record: self.columns.decode()?,
            previous_hash: self.previous_hash,
            hash: self.hash,
        })
    }
}

/// The record text of a row (of `audit_records`, possibly joined), read by column name; `Err`
/// names the column that has the wrong type.
pub(crate) fn columns_from_row<R>(row: &R) -> Result<Columns, String>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |column: &str| -> Result<String, String> {
        row.try_get(column)
            .map_err(|error| format!("{column}: {error}"))
    };
    Ok(Columns {
        record_id: text("record_id")?,
        kind: text("kind")?,
        decision_id: text("decision_id")?,
        timestamp: text("timestamp")?,
        subject_fingerprint: text("subject_fingerprint")?,
        subject_common_name: row
            .try_get("subject_common_name")
            .map_err(|error| format!("subject_common_name: {error}"))?,
        subject_roles: text("subject_roles")?,
        source_address: text("source_address")?,
        action: text("action")?,
        masked_input: text("masked_input")?,
        result: text("result")?,
        bundle_revision: text("bundle_revision")?,
        outcome: text("outcome")?,
        redaction: text("redaction")?,
    })
}

pub(crate) fn hash_from_bytes(bytes: &[u8]) -> Result<[u8; 32], String> {
    <[u8; 32]>::try_from(bytes).map_err(|_| format!("expected 32 bytes, found {}", bytes.len()))
}

/// The walk over a chain's rows in sequence order: feed every row to [`ChainWalk::check`]
/// until it returns false (broken), then take the report with [`ChainWalk::finish`].
pub(crate) struct ChainWalk<'a> {
    report: VerifyReport,
    expected_sequence: i64,
    previous_hash: [u8; 32],
    anchor: Option<&'a ChainHead>,
}

impl<'a> ChainWalk<'a> {
    pub(crate) fn new(anchor: Option<&'a ChainHead>) -> ChainWalk<'a> {
        ChainWalk {
            report: VerifyReport {
                records_checked: 0,
                first_broken: None,
                last_verified: None,
            },
            expected_sequence: 1,
            previous_hash: GENESIS_PREVIOUS_HASH,
            anchor,
        }
    }

    /// A walk that starts after `head` instead of at sequence 1: the chain before it was
    /// pruned (retention), and `head` is the last pruned record's sequence and hash, as the
    /// prune anchor records them (itself proven against a signed checkpoint).
    pub(crate) fn starting_after(mut self, head: &ChainHead) -> ChainWalk<'a> {
        self.expected_sequence = head.sequence.saturating_add(1);
        self.previous_hash = head.hash;
        self
    }

    /// Checks the next stored row; false once the chain is broken (the walk is over).
    pub(crate) fn check(&mut self, sequence: i64, stored: Result<StoredSeal, String>) -> bool {
        let checked = check_row(
            sequence,
            stored,
            self.expected_sequence,
            &self.previous_hash,
        )
        .and_then(|hash| self.check_anchor(sequence, hash).map(|()| hash));
        match checked {
            Ok(hash) => {
                self.report.records_checked += 1;
                self.report.last_verified = Some(ChainHead { sequence, hash });
                self.previous_hash = hash;
                self.expected_sequence = sequence.saturating_add(1);
                true
            }
            Err(broken) => {
                self.report.first_broken = Some(broken);
                false
            }
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.report.first_broken.is_some()
    }

    fn check_anchor(&self, sequence: i64, hash: [u8; 32]) -> Result<(), BrokenRecord> {
        match self.anchor {
            Some(anchor) if anchor.sequence == sequence && anchor.hash != hash => {
                Err(BrokenRecord {
                    sequence,
                    kind: BreakKind::AnchorMismatch,
                    reason: format!(
                        "anchor hash {} but the chain now has {}",
                        hex::encode(anchor.hash),
                        hex::encode(hash)
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// The report; after a complete walk also checks that the chain reaches the anchor.
    pub(crate) fn finish(mut self) -> VerifyReport {
        if self.report.first_broken.is_none()
            && let Some(anchor) = self.anchor
            && anchor.sequence >= self.expected_sequence
        {
            self.report.first_broken = Some(BrokenRecord {
                sequence: self.expected_sequence,
                kind: BreakKind::Truncated,
                reason: format!(
                    "the chain ends at {} but the anchor is at {}",
                    self.expected_sequence - 1,
                    anchor.sequence
                ),
            });
        }
        self.report
    }
}

/// Checks one stored row against the chain so far and returns its (verified) hash.
fn check_row(
    sequence: i64,
    stored: Result<StoredSeal, String>,
    expected_sequence: i64,
    previous_hash: &[u8; 32],
) -> Result<[u8; 32], BrokenRecord> {
    let broken = |sequence, kind, reason: String| BrokenRecord {
        sequence,
        kind,
        reason,
    };
    if sequence < expected_sequence {
        return Err(broken(
            sequence,
            BreakKind::UnexpectedSequence,
            format!("sequence {sequence} precedes the chain's next sequence {expected_sequence}"),
        ));
    }
    if sequence > expected_sequence {
        return Err(broken(
            expected_sequence,
            BreakKind::Missing,
            format!(
                "sequence {expected_sequence} is missing; the next stored record is {sequence}"
            ),
        ));
    }
    let stored = stored.map_err(|reason| broken(sequence, BreakKind::Undecodable, reason))?;
    let record = stored
        .columns
        .decode()
        .map_err(|reason| broken(sequence, BreakKind::Undecodable, reason))?;
    if let Some(column) = stored
        .columns
        .first_difference(&Columns::from_record(&record))
    {
        return Err(broken(
            sequence,
            BreakKind::NonCanonical,
            format!("column {column} is not in the canonical form the record was sealed with"),
        ));
    }
    if stored.previous_hash != *previous_hash {
        return Err(broken(
            sequence,
            BreakKind::PreviousHashMismatch,
            format!(
                "previous_hash {} does not match the hash of record {} ({})",
                hex::encode(stored.previous_hash),
                sequence - 1,
                hex::encode(previous_hash)
            ),
        ));
    }
    let recomputed = encoding::hash_columns(previous_hash, sequence, &stored.columns);
    if recomputed != stored.hash {
        return Err(broken(
            sequence,
            BreakKind::HashMismatch,
            format!(
                "stored hash {} but the record's contents hash to {}",
                hex::encode(stored.hash),
                hex::encode(recomputed)
            ),
        ));
    }
    Ok(stored.hash)
}
