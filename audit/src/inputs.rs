//! The `audit_inputs` table: one encrypted unmasked policy input per record that has one
//! ([`crate::NewRecord::sealed_input`], sealed by [`crate::envelope::Keyring::seal`]).
//!
//! Written by both stores' `append`, in the caller's transaction, so a record and its sealed
//! input are committed together or not at all. Rows are never updated or deleted (triggers on
//! both back ends; on PostgreSQL the application role has no such privilege either). The
//! table holds nothing readable without the keyring: the KEK id, the wrapped data key, the
//! nonce, the ciphertext and one-way account tokens (the query index copies them).
//!
//! Columns: `record_id` (the record's id; SQLite: hyphenated text, PostgreSQL: UUID),
//! `kek_id` TEXT, `wrapped_dek` BLOB/BYTEA (60 bytes), `nonce` BLOB/BYTEA (12 bytes),
//! `ciphertext` BLOB/BYTEA, `account_tokens` TEXT (JSON array of hex strings). The
//! PostgreSQL schema is `ledger/migrations/0003_audit_inputs.sql`.

use sqlx::{PgConnection, Row, SqliteConnection};
use uuid::Uuid;

use crate::envelope::{
    ACCOUNT_TOKEN_HEX_CHARS, ACCOUNT_TOKENS_MAX, KEY_ID_BYTES_MAX, NONCE_BYTES,
    PLAINTEXT_BYTES_MAX, SealedInput, TAG_BYTES, WRAPPED_DEK_BYTES,
};
use crate::{AuditError, NewRecord};

/// SQLite schema, idempotent; run by [`crate::sqlite::migrate`]. The record must exist
/// (foreign key), and is inserted first by `sqlite::append`.
const SQLITE_SCHEMA_STATEMENTS: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS audit_inputs (
        record_id TEXT NOT NULL PRIMARY KEY REFERENCES audit_records (record_id),
        kek_id TEXT NOT NULL,
        wrapped_dek BLOB NOT NULL CHECK (length(wrapped_dek) = 60),
        nonce BLOB NOT NULL CHECK (length(nonce) = 12),
        ciphertext BLOB NOT NULL,
        account_tokens TEXT NOT NULL
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS audit_inputs_no_update BEFORE UPDATE ON audit_inputs
     BEGIN SELECT RAISE(ABORT, 'audit_inputs is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_inputs_no_delete BEFORE DELETE ON audit_inputs
     BEGIN SELECT RAISE(ABORT, 'audit_inputs is append-only'); END",
];

/// What the store holds for a record id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputLookup {
    /// No audit record has this id.
    RecordNotFound,
    /// The record exists but has no sealed input: a posting, reservation, approval or release
    /// record, a record of a non-policy action, or one written while encryption was off.
    NotSealed,
    /// The record's sealed input.
    Sealed(SealedInput),
}

/// Creates the SQLite table and its append-only triggers if they do not exist.
pub async fn migrate_sqlite(conn: &mut SqliteConnection) -> Result<(), AuditError> {
    for statement in SQLITE_SCHEMA_STATEMENTS {
        sqlx::query(statement).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Checks the bounds of a sealed input before it is written, so a bad one fails the append
/// with a clear error instead of a constraint violation (or, for the ciphertext, at all).
fn check(sealed: &SealedInput) -> Result<(), AuditError> {
    let too_large = |field: &'static str, bytes: usize, bytes_max: usize| {
        Err(AuditError::FieldTooLarge {
            field,
            bytes,
            bytes_max,
        })
    };
    if sealed.ciphertext.len() > PLAINTEXT_BYTES_MAX + TAG_BYTES {
        return too_large(
            "sealed_input.ciphertext",
            sealed.ciphertext.len(),
            PLAINTEXT_BYTES_MAX + TAG_BYTES,
        );
    }
    if sealed.kek_id.len() > KEY_ID_BYTES_MAX {
        return too_large("sealed_input.kek_id", sealed.kek_id.len(), KEY_ID_BYTES_MAX);
    }
    if sealed.account_tokens.len() > ACCOUNT_TOKENS_MAX {
        return too_large(
            "sealed_input.account_tokens",
            sealed.account_tokens.len(),
            ACCOUNT_TOKENS_MAX,
        );
    }
    Ok(())
}

fn tokens_json(tokens: &[String]) -> String {
    serde_json::to_string(tokens).expect("a list of strings serializes")
}

/// Inserts the sealed inputs of `records` (those that have one) on SQLite. Call inside the
/// transaction that inserts the records, after them (foreign key). Returns how many rows.
pub async fn insert_sqlite(
    conn: &mut SqliteConnection,
    records: &[&NewRecord],
) -> Result<usize, AuditError> {
    let mut inserted = 0;
    for record in records {
        let Some(sealed) = &record.sealed_input else {
            continue;
        };
        check(sealed)?;
        sqlx::query(
            "INSERT INTO audit_inputs (record_id, kek_id, wrapped_dek, nonce, ciphertext, \
             account_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(record.record_id.hyphenated().to_string())
        .bind(&sealed.kek_id)
        .bind(&sealed.wrapped_dek)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(tokens_json(&sealed.account_tokens))
        .execute(&mut *conn)
        .await?;
        inserted += 1;
    }
    Ok(inserted)
}

/// Inserts the sealed inputs of `records` on PostgreSQL, in one statement. Call inside the
/// transaction that inserts the records; the foreign key to `audit_records` is checked at
/// commit, so it may run before or after them. Returns how many rows.
pub async fn insert_postgres(
    conn: &mut PgConnection,
    records: &[&NewRecord],
) -> Result<usize, AuditError> {
    let mut record_ids: Vec<Uuid> = Vec::new();
    let mut kek_ids: Vec<&str> = Vec::new();
    let mut wrapped_deks: Vec<&[u8]> = Vec::new();
    let mut nonces: Vec<&[u8]> = Vec::new();
    let mut ciphertexts: Vec<&[u8]> = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    for record in records {
        let Some(sealed) = &record.sealed_input else {
            continue;
        };
        check(sealed)?;
        record_ids.push(record.record_id);
        kek_ids.push(&sealed.kek_id);
        wrapped_deks.push(&sealed.wrapped_dek);
        nonces.push(&sealed.nonce);
        ciphertexts.push(&sealed.ciphertext);
        tokens.push(tokens_json(&sealed.account_tokens));
    }
    if record_ids.is_empty() {
        // Most appends (postings, approvals, records of non-policy actions) carry none: no
        // round trip for them.
        return Ok(0);
    }
    let count = record_ids.len();
    sqlx::query(
        "INSERT INTO audit_inputs (record_id, kek_id, wrapped_dek, nonce, ciphertext, \
         account_tokens) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::bytea[], $5::bytea[], \
                              $6::text[])",
    )
    .bind(&record_ids)
    .bind(&kek_ids)
    .bind(&wrapped_deks)
    .bind(&nonces)
    .bind(&ciphertexts)
    .bind(&tokens)
    .execute(&mut *conn)
    .await?;
    Ok(count)
}

/// Decodes and checks one stored row.
fn decode(
    record_id: Uuid,
    kek_id: String,
    wrapped_dek: Vec<u8>,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    account_tokens: &str,
) -> Result<SealedInput, AuditError> {
    let corrupt = |reason: String| AuditError::CorruptInput { record_id, reason };
    if wrapped_dek.len() != WRAPPED_DEK_BYTES {
        return Err(corrupt(format!(
            "wrapped_dek is {} bytes, expected {WRAPPED_DEK_BYTES}",
            wrapped_dek.len()
        )));
    }
    if nonce.len() != NONCE_BYTES {
        return Err(corrupt(format!(
            "nonce is {} bytes, expected {NONCE_BYTES}",
            nonce.len()
        )));
    }
    let account_tokens: Vec<String> = serde_json::from_str(account_tokens)
        .map_err(|error| corrupt(format!("account_tokens: {error}")))?;
    if account_tokens.len() > ACCOUNT_TOKENS_MAX
        || account_tokens
            .iter()
            .any(|token| token.len() != ACCOUNT_TOKEN_HEX_CHARS)
    {
        return Err(corrupt("account_tokens: not a list of tokens".into()));
    }
    Ok(SealedInput {
        kek_id,
        wrapped_dek,
        nonce,
        ciphertext,
        account_tokens,
    })
}

const SELECT_INPUT_SQLITE: &str = "SELECT kek_id, wrapped_dek, nonce, ciphertext, account_tokens \
     FROM audit_inputs WHERE record_id = ?1";

/// The sealed input of `record_id` on SQLite, or why there is none.
pub async fn lookup_sqlite(
    conn: &mut SqliteConnection,
    record_id: Uuid,
) -> Result<InputLookup, AuditError> {
    let id = record_id.hyphenated().to_string();
    if let Some(row) = sqlx::query(SELECT_INPUT_SQLITE)
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await?
    {
        let tokens: String = row.try_get("account_tokens")?;
        return decode(
            record_id,
            row.try_get("kek_id")?,
            row.try_get("wrapped_dek")?,
            row.try_get("nonce")?,
            row.try_get("ciphertext")?,
            &tokens,
        )
        .map(InputLookup::Sealed);
    }
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM audit_records WHERE record_id = ?1")
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(if exists.is_some() {
        InputLookup::NotSealed
    } else {
        InputLookup::RecordNotFound
    })
}

/// The sealed input of `record_id` on PostgreSQL, or why there is none. Unsealed records
/// (not yet in the chain) are found too: the input is committed with the record.
pub async fn lookup_postgres(
    conn: &mut PgConnection,
    record_id: Uuid,
) -> Result<InputLookup, AuditError> {
    if let Some(row) = sqlx::query(
        "SELECT kek_id, wrapped_dek, nonce, ciphertext, account_tokens \
         FROM audit_inputs WHERE record_id = $1",
    )
    .bind(record_id)
    .fetch_optional(&mut *conn)
    .await?
    {
        let tokens: String = row.try_get("account_tokens")?;
        return decode(
            record_id,
            row.try_get("kek_id")?,
            row.try_get("wrapped_dek")?,
            row.try_get("nonce")?,
            row.try_get("ciphertext")?,
            &tokens,
        )
        .map(InputLookup::Sealed);
    }
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM audit_records WHERE record_id = $1")
            .bind(record_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(if exists.is_some() {
        InputLookup::NotSealed
    } else {
        InputLookup::RecordNotFound
    })
}
