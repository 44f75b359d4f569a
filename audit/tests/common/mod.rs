//! Shared fixtures: a fresh SQLite file per test and deterministic records.
#![allow(dead_code)] // each test binary uses a different subset

use countersign_audit::{NewRecord, Outcome, RecordKind, SealedRecord, Subject, sqlite};
use serde_json::json;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tempfile::TempDir;
use time::macros::datetime;
use uuid::Uuid;

/// A migrated database in its own temporary directory; keep the `TempDir` alive.
pub async fn temp_pool() -> (TempDir, SqlitePool) {
    let directory = tempfile::tempdir().expect("temp dir");
    let options = SqliteConnectOptions::new()
        .filename(directory.path().join("audit.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("open sqlite");
    let mut conn = pool.acquire().await.expect("connection");
    sqlite::migrate(&mut conn).await.expect("migrate");
    (directory, pool)
}

/// A distinct, deterministic record; every third one is a posting.
pub fn record(number: u32) -> NewRecord {
    let posting = number % 3 == 2;
    NewRecord {
        record_id: Uuid::from_u128(0x0190_abcd_ef00_7000_8000_0000_0000_0000 + u128::from(number)),
        kind: if posting {
            RecordKind::Posting
        } else {
            RecordKind::Decision
        },
        decision_id: Uuid::from_u128(
            0x0190_0000_0000_7000_9000_0000_0000_0000 + u128::from(number / 3),
        ),
        timestamp: datetime!(2026-03-14 09:00:00 UTC)
            + time::Duration::milliseconds(i64::from(number)),
        subject: Subject {
            fingerprint_sha256: format!("{number:064x}"),
            common_name: (!number.is_multiple_of(5)).then(|| format!("teller-{number}.example")),
            roles: vec!["teller".to_owned(), format!("branch-{}", number % 4)],
        },
        source_address: format!("10.0.0.{}:4433", number % 250),
        action: "transfer.create".to_owned(),
        masked_input: json!({
            "source_account": "******************3000",
            "target_account": "******************0001",
            "amount": { "minor_units": 1000 + number, "currency": "EUR" },
        }),
        result: if posting {
            json!({ "posting_id": number, "status": "posted" })
        } else {
            json!({ "allow": number.is_multiple_of(2), "reasons": [] })
        },
        bundle_revision: "rev-1".to_owned(),
        outcome: match (posting, number.is_multiple_of(2)) {
            (true, _) => Outcome::Posted,
            (false, true) => Outcome::Allow,
            (false, false) => Outcome::Deny,
        },
        redaction: Default::default(),
        sealed_input: None,
    }
}

/// Appends `count` records in transactions of `batch` records, as the ledger would.
pub async fn append_records(pool: &SqlitePool, count: u32, batch: u32) -> Vec<SealedRecord> {
    let mut sealed = Vec::new();
    let mut next = 1;
    while next <= count {
        let last = (next + batch - 1).min(count);
        let mut tx = pool.begin().await.expect("begin");
        let records = (next..=last).map(record).collect();
        sealed.extend(sqlite::append(&mut tx, records).await.expect("append"));
        tx.commit().await.expect("commit");
        next = last + 1;
    }
    sealed
}
