//! The canonical byte encoding of an audit record, and the hash chain built on it.
//!
//! Layout (format v2; v2 added field 16), every field written as `u32 big-endian length || bytes`:
//!
//! | # | field                | bytes                                                     |
//! |---|----------------------|-----------------------------------------------------------|
//! | 1 | format version tag   | `countersign-audit/v2`                                    |
//! | 2 | sequence             | 8 bytes, i64 big-endian                                   |
//! | 3 | record_id            | UUID, lowercase hyphenated text                           |
//! | 4 | kind                 | `decision` / `posting`                                    |
//! | 5 | decision_id          | UUID, lowercase hyphenated text                           |
//! | 6 | timestamp            | `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC, always 9 digits)    |
//! | 7 | subject fingerprint  | text                                                      |
//! | 8 | subject common name  | presence byte `0x00` (absent) or `0x01` then a text field |
//! | 9 | subject roles        | canonical JSON array of strings                           |
//! |10 | source_address       | text                                                      |
//! |11 | action               | text                                                      |
//! |12 | masked_input         | canonical JSON                                            |
//! |13 | result               | canonical JSON                                            |
//! |14 | bundle_revision      | text                                                      |
//! |15 | outcome              | `allow` / `deny` / `error` / `posted`                     |
//! |16 | redaction            | canonical JSON `{"erased":[..],"error":..,"masked":[..]}` |
//!
//! Fields 3–16 are byte-for-byte the text stored in the `audit_records` columns. That is
//! deliberate: an auditor can re-check the chain with nothing but SQLite and SHA-256, without
//! reimplementing our UUID, time or JSON handling.
//!
//! `hash = SHA-256(previous_hash || encoding)`, with 32 zero bytes before the first record.
//! Any change to this layout must bump the version tag, because it changes every hash.

use serde_json::Value;
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};

use crate::{AuditError, NewRecord};

/// Identifies the layout above; part of every hash so a future layout can never collide.
pub const FORMAT_VERSION_TAG: &[u8] = b"countersign-audit/v2";

/// The `previous_hash` of the first record in the chain.
pub const GENESIS_PREVIOUS_HASH: [u8; 32] = [0; 32];

/// Largest encoded field `append` accepts. Policy inputs and decisions are a few KiB; the bound
/// keeps one bad record from bloating the table and every decision-log line, and keeps lengths
/// far inside the u32 length prefix.
pub const FIELD_BYTES_MAX: usize = 1024 * 1024;

/// Deepest JSON nesting `append` accepts. serde_json refuses to parse beyond 128 levels, so a
/// deeper value could be written but never read back or verified.
pub const JSON_DEPTH_MAX: usize = 64;

/// Presence byte for an absent optional field.
const ABSENT: u8 = 0x00;
/// Presence byte for a present optional field; a length-prefixed value follows.
const PRESENT: u8 = 0x01;

/// `hash = SHA-256(previous || canonical_encoding(sequence, record))`.
///
/// # Panics
/// If a field is longer than `u32::MAX` bytes. `sqlite::append` rejects anything over
/// [`FIELD_BYTES_MAX`] first, so that only happens when called directly with such a record.
pub fn chain_hash(previous: &[u8; 32], sequence: i64, record: &NewRecord) -> [u8; 32] {
    hash_columns(previous, sequence, &Columns::from_record(record))
}

/// The exact bytes hashed for a record at `sequence` (see the module docs for the layout).
///
/// # Panics
/// As [`chain_hash`].
pub fn canonical_encoding(sequence: i64, record: &NewRecord) -> Vec<u8> {
    encode_columns(sequence, &Columns::from_record(record))
}

pub(crate) fn hash_columns(previous: &[u8; 32], sequence: i64, columns: &Columns) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(encode_columns(sequence, columns));
    hasher.finalize().into()
}

/// A record as the text stored in (and hashed from) the `audit_records` columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Columns {
    pub record_id: String,
    pub kind: String,
    pub decision_id: String,
    pub timestamp: String,
    pub subject_fingerprint: String,
    pub subject_common_name: Option<String>,
    pub subject_roles: String,
    pub source_address: String,
    pub action: String,
    pub masked_input: String,
    pub result: String,
    pub bundle_revision: String,
    pub outcome: String,
    pub redaction: String,
}

impl Columns {
    pub(crate) fn from_record(record: &NewRecord) -> Self {
        let roles = Value::Array(
            record
                .subject
                .roles
                .iter()
                .map(|role| Value::String(role.clone()))
                .collect(),
        );
        Columns {
            record_id: record.record_id.hyphenated().to_string(),
            kind: record.kind.as_str().to_owned(),
            decision_id: record.decision_id.hyphenated().to_string(),
            timestamp: format_timestamp(record.timestamp),
            subject_fingerprint: record.subject.fingerprint_sha256.clone(),
            subject_common_name: record.subject.common_name.clone(),
            subject_roles: canonical_json(&roles),
            source_address: record.source_address.clone(),
            action: record.action.clone(),
            masked_input: canonical_json(&record.masked_input),
            result: canonical_json(&record.result),
            bundle_revision: record.bundle_revision.clone(),
            outcome: record.outcome.as_str().to_owned(),
            redaction: record.redaction.to_canonical_json(),
        }
    }

    /// Every field with its column name, for size checks and error messages.
    fn named_fields(&self) -> [(&'static str, Option<&str>); 14] {
        [
            ("record_id", Some(&self.record_id)),
            ("kind", Some(&self.kind)),
            ("decision_id", Some(&self.decision_id)),
            ("timestamp", Some(&self.timestamp)),
            ("subject_fingerprint", Some(&self.subject_fingerprint)),
            ("subject_common_name", self.subject_common_name.as_deref()),
            ("subject_roles", Some(&self.subject_roles)),
            ("source_address", Some(&self.source_address)),
            ("action", Some(&self.action)),
            ("masked_input", Some(&self.masked_input)),
            ("result", Some(&self.result)),
            ("bundle_revision", Some(&self.bundle_revision)),
            ("outcome", Some(&self.outcome)),
            ("redaction", Some(&self.redaction)),
        ]
    }

    /// Interprets stored column text as a record; `Err` names the column that does not parse.
    /// Used by the PostgreSQL store, whose rows are read into `Columns` before sealing and
    /// verifying.
    pub(crate) fn decode(&self) -> Result<NewRecord, String> {
        let uuid = |column: &str, text: &str| {
            uuid::Uuid::parse_str(text).map_err(|error| format!("{column}: {error}"))
        };
        let json = |column: &str, text: &str| {
            serde_json::from_str::<Value>(text).map_err(|error| format!("{column}: {error}"))
        };
        Ok(NewRecord {
            record_id: uuid("record_id", &self.record_id)?,
            kind: crate::RecordKind::parse(&self.kind)
                .ok_or_else(|| format!("kind: unknown value {:?}", self.kind))?,
            decision_id: uuid("decision_id", &self.decision_id)?,
            timestamp: parse_timestamp(&self.timestamp)
                .map_err(|error| format!("timestamp: {error}"))?,
            subject: crate::Subject {
                fingerprint_sha256: self.subject_fingerprint.clone(),
                common_name: self.subject_common_name.clone(),
                roles: serde_json::from_str(&self.subject_roles)
                    .map_err(|error| format!("subject_roles: {error}"))?,
            },
            source_address: self.source_address.clone(),
            action: self.action.clone(),
            masked_input: json("masked_input", &self.masked_input)?,
            result: json("result", &self.result)?,
            bundle_revision: self.bundle_revision.clone(),
            outcome: crate::Outcome::parse(&self.outcome)
                .ok_or_else(|| format!("outcome: unknown value {:?}", self.outcome))?,
            redaction: serde_json::from_str(&self.redaction)
                .map_err(|error| format!("redaction: {error}"))?,
            sealed_input: None,
        })
    }

    /// Returns the first column whose stored text differs from `canonical`, if any.
    pub(crate) fn first_difference(&self, canonical: &Columns) -> Option<&'static str> {
        self.named_fields()
            .into_iter()
            .zip(canonical.named_fields())
            .find(|((_, stored), (_, expected))| stored != expected)
            .map(|((name, _), _)| name)
    }
}

fn encode_columns(sequence: i64, columns: &Columns) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        256 + columns.masked_input.len() + columns.result.len() + columns.subject_roles.len(),
    );
    push_field(&mut out, FORMAT_VERSION_TAG);
    push_field(&mut out, &sequence.to_be_bytes());
    push_field(&mut out, columns.record_id.as_bytes());
    push_field(&mut out, columns.kind.as_bytes());
    push_field(&mut out, columns.decision_id.as_bytes());
    push_field(&mut out, columns.timestamp.as_bytes());
    push_field(&mut out, columns.subject_fingerprint.as_bytes());
    // The presence byte keeps `None` and `Some("")` apart.
    match &columns.subject_common_name {
        None => push_field(&mut out, &[ABSENT]),
        Some(common_name) => {
            push_field(&mut out, &[PRESENT]);
            push_field(&mut out, common_name.as_bytes());
        }
    }
    push_field(&mut out, columns.subject_roles.as_bytes());
    push_field(&mut out, columns.source_address.as_bytes());
    push_field(&mut out, columns.action.as_bytes());
    push_field(&mut out, columns.masked_input.as_bytes());
    push_field(&mut out, columns.result.as_bytes());
    push_field(&mut out, columns.bundle_revision.as_bytes());
    push_field(&mut out, columns.outcome.as_bytes());
    push_field(&mut out, columns.redaction.as_bytes());
    out
}

fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    let Ok(length) = u32::try_from(bytes.len()) else {
        panic!(
            "audit field of {} bytes exceeds the u32 length prefix; append validates records first",
            bytes.len()
        );
    };
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Checks the bounds that make a record storable and re-readable, and returns its columns.
pub(crate) fn validated_columns(record: &NewRecord) -> Result<Columns, AuditError> {
    // Depth first: canonicalising an absurdly deep value would recurse without bound.
    for (field, value) in [
        ("masked_input", &record.masked_input),
        ("result", &record.result),
    ] {
        if nests_deeper_than(value, JSON_DEPTH_MAX) {
            return Err(AuditError::JsonTooDeep {
                field,
                depth_max: JSON_DEPTH_MAX,
            });
        }
    }
    let year = record.timestamp.to_offset(UtcOffset::UTC).year();
    if !(0..=9999).contains(&year) {
        return Err(AuditError::TimestampOutOfRange { year });
    }
    let columns = Columns::from_record(record);
    for (field, text) in columns.named_fields() {
        let bytes = text.map_or(0, str::len);
        if bytes > FIELD_BYTES_MAX {
            return Err(AuditError::FieldTooLarge {
                field,
                bytes,
                bytes_max: FIELD_BYTES_MAX,
            });
        }
    }
    Ok(columns)
}

/// True if `value` has containers nested more than `depth_max` levels deep. Recursion stops at
/// `depth_max`, so the check itself is bounded.
fn nests_deeper_than(value: &Value, depth_max: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(map) => Box::new(map.values()),
        _ => return false,
    };
    match depth_max.checked_sub(1) {
        None => true,
        Some(remaining) => children
            .into_iter()
            .any(|child| nests_deeper_than(child, remaining)),
    }
}

/// Canonical JSON: object keys sorted by code point, no whitespace, numbers as serde_json
/// prints them, strings escaped exactly like serde_json. We sort keys ourselves instead of
/// trusting `serde_json::Map`, whose order flips to insertion order if any crate in the build
/// enables serde_json's `preserve_order` feature.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => out.push_str(&number.to_string()),
        Value::String(text) => write_json_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // `str` ordering is UTF-8 byte order, which is the same as code point order.
            entries.sort_unstable_by(|left, right| left.0.cmp(right.0));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json_string(out, key);
                out.push(':');
                write_canonical(out, item);
            }
            out.push('}');
        }
    }
}

/// Escapes like serde_json (the short escapes, `\u00XX` in lowercase hex for other control
/// characters, everything else verbatim), written out here so the hashed bytes can never change
/// with a dependency upgrade.
fn write_json_string(out: &mut String, text: &str) {
    const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            control if u32::from(control) < 0x20 => {
                let code = u32::from(control) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX_DIGITS[code >> 4]));
                out.push(char::from(HEX_DIGITS[code & 0x0f]));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

/// RFC 3339 in UTC with exactly nine fraction digits, e.g. `2026-01-02T03:04:05.000000006Z`.
/// Fixed width, so the text (which is hashed) has one spelling per instant. Written by hand
/// because it cannot fail, unlike `time`'s formatter.
pub fn format_timestamp(timestamp: OffsetDateTime) -> String {
    let utc = timestamp.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.nanosecond()
    )
}

/// Parses any RFC 3339 timestamp and converts it to UTC.
pub fn parse_timestamp(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    Ok(OffsetDateTime::parse(text, &Rfc3339)?.to_offset(UtcOffset::UTC))
}

/// serde adapter: timestamps as [`format_timestamp`] text.
pub(crate) mod timestamp_serde {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(
        timestamp: &OffsetDateTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_timestamp(*timestamp))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_timestamp(&text).map_err(D::Error::custom)
    }
}

/// serde adapter: 32-byte hashes as lowercase hex text rather than an array of numbers.
pub(crate) mod hash_hex_serde {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(hash: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = hex::decode(&text).map_err(D::Error::custom)?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| D::Error::custom(format!("expected 32 bytes, got {}", bytes.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Outcome, RecordKind, Subject};
    use serde_json::json;
    use time::macros::datetime;
    use uuid::uuid;

    fn fixed_record() -> NewRecord {
        NewRecord {
            record_id: uuid!("0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"),
            kind: RecordKind::Decision,
            decision_id: uuid!("0190a5b2-7c3d-7e4f-8a1b-000000000001"),
            timestamp: datetime!(2026-03-14 15:09:26.535897932 UTC),
            subject: Subject {
                fingerprint_sha256: "ab".repeat(32),
                common_name: Some("teller-01.branch.example".to_owned()),
                roles: vec!["teller".to_owned(), "reader".to_owned()],
            },
            source_address: "10.1.2.3:50123".to_owned(),
            action: "transfer.create".to_owned(),
            masked_input: json!({
                "source_account": "******************3000",
                "target_account": "******************0001",
                "amount": {"minor_units": 12345, "currency": "EUR"},
                "note": "rent \"March\"\n",
            }),
            result: json!({"allow": false, "reasons": ["limit_exceeded"], "limit_minor_units": 10000}),
            bundle_revision: "rev-2026-03-01".to_owned(),
            outcome: Outcome::Deny,
            redaction: Default::default(),
            sealed_input: None,
        }
    }

    /// Pins the format: if this changes, every stored chain stops verifying. Bump
    /// FORMAT_VERSION_TAG instead of editing the expected value. The value was also reproduced
    /// independently from the module-docs layout (Python: struct.pack + json.dumps with sorted
    /// keys), which is how an outside auditor would check it.
    #[test]
    fn chain_hash_snapshot_is_stable() {
        let hash = chain_hash(&GENESIS_PREVIOUS_HASH, 1, &fixed_record());
        assert_eq!(
            hex::encode(hash),
            "937e877cd04c25b9ac4248d41dd35648e85c806639c4e82b0d0882796339db26"
        );
    }

    #[test]
    fn chain_hash_depends_on_previous_hash_and_sequence() {
        let record = fixed_record();
        let genesis = chain_hash(&GENESIS_PREVIOUS_HASH, 1, &record);
        assert_ne!(genesis, chain_hash(&GENESIS_PREVIOUS_HASH, 2, &record));
        assert_ne!(genesis, chain_hash(&[1; 32], 1, &record));
    }

    #[test]
    fn chain_hash_ignores_json_key_order_and_timestamp_offset() {
        let record = fixed_record();
        let mut reordered = record.clone();
        // Same content, keys inserted in reverse order, nested objects too.
        let mut input = serde_json::Map::new();
        input.insert("note".into(), json!("rent \"March\"\n"));
        input.insert(
            "amount".into(),
            serde_json::from_str(r#"{"minor_units":12345,"currency":"EUR"}"#).expect("valid JSON"),
        );
        input.insert("target_account".into(), json!("******************0001"));
        input.insert("source_account".into(), json!("******************3000"));
        reordered.masked_input = Value::Object(input);
        reordered.timestamp = datetime!(2026-03-14 16:09:26.535897932 +01:00);
        assert_eq!(
            chain_hash(&GENESIS_PREVIOUS_HASH, 1, &record),
            chain_hash(&GENESIS_PREVIOUS_HASH, 1, &reordered)
        );
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = fixed_record();
        let base_hash = chain_hash(&GENESIS_PREVIOUS_HASH, 1, &base);
        type Edit = Box<dyn Fn(&mut NewRecord)>;
        let edits: Vec<(&str, Edit)> = vec![
            ("record_id", Box::new(|r| r.record_id = uuid::Uuid::nil())),
            ("kind", Box::new(|r| r.kind = RecordKind::Posting)),
            (
                "decision_id",
                Box::new(|r| r.decision_id = uuid::Uuid::nil()),
            ),
            (
                "timestamp",
                Box::new(|r| r.timestamp += time::Duration::nanoseconds(1)),
            ),
            (
                "fingerprint",
                Box::new(|r| r.subject.fingerprint_sha256.push('0')),
            ),
            (
                "common_name none",
                Box::new(|r| r.subject.common_name = None),
            ),
            (
                "common_name empty",
                Box::new(|r| r.subject.common_name = Some(String::new())),
            ),
            ("roles order", Box::new(|r| r.subject.roles.reverse())),
            ("source_address", Box::new(|r| r.source_address.push('1'))),
            ("action", Box::new(|r| r.action = "account.create".into())),
            (
                "masked_input",
                Box::new(|r| r.masked_input["amount"]["minor_units"] = json!(12346)),
            ),
            ("result", Box::new(|r| r.result["allow"] = json!(true))),
            ("bundle_revision", Box::new(|r| r.bundle_revision.push('x'))),
            ("outcome", Box::new(|r| r.outcome = Outcome::Allow)),
        ];
        for (name, edit) in edits {
            let mut edited = base.clone();
            edit(&mut edited);
            assert_ne!(
                chain_hash(&GENESIS_PREVIOUS_HASH, 1, &edited),
                base_hash,
                "editing {name} must change the hash"
            );
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        // Moving bytes from one field to the next must not produce the same encoding.
        let mut left = fixed_record();
        left.source_address = "ab".into();
        left.action = "c".into();
        let mut right = fixed_record();
        right.source_address = "a".into();
        right.action = "bc".into();
        assert_ne!(canonical_encoding(1, &left), canonical_encoding(1, &right));
    }

    #[test]
    fn encoding_starts_with_version_and_sequence() {
        let encoding = canonical_encoding(7, &fixed_record());
        let tag_length = FORMAT_VERSION_TAG.len();
        assert_eq!(&encoding[..4], &(tag_length as u32).to_be_bytes());
        assert_eq!(&encoding[4..4 + tag_length], FORMAT_VERSION_TAG);
        let sequence_at = 4 + tag_length;
        assert_eq!(&encoding[sequence_at..sequence_at + 4], &8u32.to_be_bytes());
        assert_eq!(
            &encoding[sequence_at + 4..sequence_at + 12],
            &7i64.to_be_bytes()
        );
    }

    #[test]
    fn canonical_json_cases() {
        check_canonical(json!(null), "null");
        check_canonical(
            json!([true, false, 0, -7, 18446744073709551615u64]),
            "[true,false,0,-7,18446744073709551615]",
        );
        check_canonical(
            json!({"b": 1, "a": {"d": [], "c": {}}}),
            r#"{"a":{"c":{},"d":[]},"b":1}"#,
        );
        // Code point order: uppercase before lowercase, "é" (U+00E9) after "z".
        check_canonical(
            json!({"z": 1, "é": 2, "Z": 3, "": 4}),
            r#"{"":4,"Z":3,"z":1,"é":2}"#,
        );
        check_canonical(
            json!("q\"b\\n\n\t\r\u{8}\u{c}\u{1}\u{1f}/é😀"),
            r#""q\"b\\n\n\t\r\b\f\u0001\u001f/é😀""#,
        );
        check_canonical(json!(1.5), "1.5");
    }

    fn check_canonical(value: Value, expected: &str) {
        let canonical = canonical_json(&value);
        assert_eq!(canonical, expected);
        // Our escaping must agree with serde_json's, so the text parses back to the same value.
        assert_eq!(
            serde_json::from_str::<Value>(&canonical).ok(),
            Some(value.clone())
        );
        assert_eq!(
            serde_json::to_string(&value).ok().map(|s| s.len()),
            Some(canonical.len())
        );
    }

    #[test]
    fn timestamps_always_have_nine_fraction_digits() {
        assert_eq!(
            format_timestamp(datetime!(2026-01-02 03:04:05 UTC)),
            "2026-01-02T03:04:05.000000000Z"
        );
        assert_eq!(
            format_timestamp(datetime!(2026-01-02 03:04:05.000000006 -02:00)),
            "2026-01-02T05:04:05.000000006Z"
        );
        let parsed = parse_timestamp("2026-01-02T05:04:05.000000006Z").ok();
        assert_eq!(parsed, Some(datetime!(2026-01-02 05:04:05.000000006 UTC)));
    }

    #[test]
    fn validation_rejects_unstorable_records() {
        let mut deep = json!(0);
        for _ in 0..=JSON_DEPTH_MAX {
            deep = json!([deep]);
        }
        let mut record = fixed_record();
        record.result = deep;
        assert!(matches!(
            validated_columns(&record),
            Err(AuditError::JsonTooDeep {
                field: "result",
                ..
            })
        ));

        let mut record = fixed_record();
        record.action = "x".repeat(FIELD_BYTES_MAX + 1);
        assert!(matches!(
            validated_columns(&record),
            Err(AuditError::FieldTooLarge {
                field: "action",
                ..
            })
        ));

        assert!(validated_columns(&fixed_record()).is_ok());
    }

    #[test]
    fn sealed_record_serde_round_trip() {
        let sealed = crate::SealedRecord {
            sequence: 1,
            record: fixed_record(),
            previous_hash: GENESIS_PREVIOUS_HASH,
            hash: chain_hash(&GENESIS_PREVIOUS_HASH, 1, &fixed_record()),
        };
        let text = serde_json::to_string(&sealed).expect("serialize");
        assert!(
            text.contains(r#""timestamp":"2026-03-14T15:09:26.535897932Z""#),
            "{text}"
        );
        assert!(
            text.contains(&format!(r#""previous_hash":"{}""#, "0".repeat(64))),
            "{text}"
        );
        let back: crate::SealedRecord =
            serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(back, sealed);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                ".*".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    prop::collection::vec((".*", inner), 0..8)
                        .prop_map(|entries| Value::Object(entries.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// The stored text must parse back to the same value and re-canonicalise to the
            /// same bytes, otherwise verify would report intact records as broken.
            #[test]
            fn canonical_json_round_trips(value in json_value()) {
                let canonical = canonical_json(&value);
                let parsed: Value = serde_json::from_str(&canonical).map_err(|error| TestCaseError::fail(error.to_string()))?;
                prop_assert_eq!(&parsed, &value);
                prop_assert_eq!(canonical_json(&parsed), canonical);
            }
        }
    }
}
