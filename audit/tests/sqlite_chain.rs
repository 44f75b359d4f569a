//! The audit table against a real SQLite file: append, read, verify, and tampering.

mod common;

use common::{append_records, record, temp_pool};
use countersign_audit::{AuditError, BreakKind, ChainHead, GENESIS_PREVIOUS_HASH, sqlite};
use sqlx::SqlitePool;

/// What an attacker with the database file does first: the triggers only stop accidents.
async fn drop_append_only_triggers(pool: &SqlitePool) {
    sqlx::raw_sql("DROP TRIGGER audit_records_no_update; DROP TRIGGER audit_records_no_delete;")
        .execute(pool)
        .await
        .expect("drop triggers");
}

/// Appends 100 records, runs `tamper` against the raw table, and expects verify to name
/// exactly `expected_sequence` with `expected_kind`.
async fn check_tamper(tamper: &'static str, expected_sequence: i64, expected_kind: BreakKind) {
    let (_directory, pool) = temp_pool().await;
    append_records(&pool, 100, 10).await;
    assert!(sqlite::verify(&pool).await.expect("verify").is_intact());

    drop_append_only_triggers(&pool).await;
    sqlx::raw_sql(tamper).execute(&pool).await.expect("tamper");

    let report = sqlite::verify(&pool).await.expect("verify");
    let broken = report
        .first_broken
        .clone()
        .unwrap_or_else(|| panic!("{tamper}: not detected"));
    assert_eq!(broken.sequence, expected_sequence, "{tamper}: {broken:?}");
    assert_eq!(broken.kind, expected_kind, "{tamper}: {broken:?}");
    // Everything before the broken record was checked (nothing, for a row planted before 1).
    let intact_before = u64::try_from(expected_sequence - 1).unwrap_or(0);
    assert_eq!(report.records_checked, intact_before, "{tamper}");
    assert_eq!(
        report.last_verified.map(|head| head.sequence),
        (expected_sequence > 1).then_some(expected_sequence - 1)
    );
}

#[tokio::test]
async fn append_and_verify_100_records() {
    let (_directory, pool) = temp_pool().await;
    let sealed = append_records(&pool, 100, 7).await;

    assert_eq!(sealed.len(), 100);
    assert_eq!(sealed[0].previous_hash, GENESIS_PREVIOUS_HASH);
    for (index, pair) in sealed.windows(2).enumerate() {
        assert_eq!(pair[0].sequence, index as i64 + 1);
        assert_eq!(
            pair[1].previous_hash, pair[0].hash,
            "linkage across transactions"
        );
    }
    for sealed in &sealed {
        assert_eq!(
            sealed.hash,
            countersign_audit::chain_hash(&sealed.previous_hash, sealed.sequence, &sealed.record)
        );
    }

    let report = sqlite::verify(&pool).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records_checked, 100);
    let last = ChainHead {
        sequence: 100,
        hash: sealed[99].hash,
    };
    assert_eq!(report.last_verified, Some(last));
    assert_eq!(sqlite::head(&pool).await.expect("head"), Some(last));
    assert_eq!(sqlite::count(&pool).await.expect("count"), 100);
    assert!(
        sqlite::verify_against_anchor(&pool, &last)
            .await
            .expect("verify")
            .is_intact()
    );

    // What read_after decodes is exactly what append sealed.
    assert_eq!(
        sqlite::read_after(&pool, 0, 1000).await.expect("read"),
        sealed
    );
}

#[tokio::test]
async fn read_after_pages_in_sequence_order() {
    let (_directory, pool) = temp_pool().await;
    let sealed = append_records(&pool, 100, 100).await;

    let page = sqlite::read_after(&pool, 40, 25).await.expect("read");
    assert_eq!(page, sealed[40..65]);
    assert!(
        sqlite::read_after(&pool, 100, 10)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(matches!(
        sqlite::read_after(&pool, 0, 0).await,
        Err(AuditError::InvalidLimit { limit: 0 })
    ));
}

#[tokio::test]
async fn read_after_clamps_the_limit() {
    let (_directory, pool) = temp_pool().await;
    append_records(&pool, 1_005, 1_005).await;
    let page = sqlite::read_after(&pool, 0, i64::MAX).await.expect("read");
    assert_eq!(page.len() as i64, sqlite::READ_RECORDS_MAX);
}

#[tokio::test]
async fn empty_chain_is_intact_and_migrate_is_idempotent() {
    let (_directory, pool) = temp_pool().await;
    let mut conn = pool.acquire().await.expect("connection");
    sqlite::migrate(&mut conn).await.expect("second migrate");
    drop(conn);

    let report = sqlite::verify(&pool).await.expect("verify");
    assert!(report.is_intact());
    assert_eq!(report.records_checked, 0);
    assert_eq!(report.last_verified, None);
    assert_eq!(sqlite::head(&pool).await.expect("head"), None);
    assert_eq!(sqlite::count(&pool).await.expect("count"), 0);
}

#[tokio::test]
async fn rolled_back_append_leaves_the_chain_unchanged() {
    let (_directory, pool) = temp_pool().await;
    let mut tx = pool.begin().await.expect("begin");
    let sealed = sqlite::append(&mut tx, vec![record(1), record(2)])
        .await
        .expect("append");
    assert_eq!(sealed.len(), 2);
    tx.rollback().await.expect("rollback");
    assert_eq!(sqlite::count(&pool).await.expect("count"), 0);

    let sealed = append_records(&pool, 1, 1).await;
    assert_eq!(sealed[0].sequence, 1);
    assert_eq!(sealed[0].previous_hash, GENESIS_PREVIOUS_HASH);
}

#[tokio::test]
async fn duplicate_record_id_fails_the_append() {
    let (_directory, pool) = temp_pool().await;
    append_records(&pool, 3, 3).await;
    let mut tx = pool.begin().await.expect("begin");
    let result = sqlite::append(&mut tx, vec![record(4), record(2)]).await;
    assert!(matches!(result, Err(AuditError::Database(_))), "{result:?}");
    tx.rollback().await.expect("rollback");
    assert!(sqlite::verify(&pool).await.expect("verify").is_intact());
    assert_eq!(sqlite::count(&pool).await.expect("count"), 3);
}

#[tokio::test]
async fn empty_append_writes_nothing() {
    let (_directory, pool) = temp_pool().await;
    let mut conn = pool.acquire().await.expect("connection");
    assert!(
        sqlite::append(&mut conn, Vec::new())
            .await
            .expect("append")
            .is_empty()
    );
    drop(conn);
    assert_eq!(sqlite::count(&pool).await.expect("count"), 0);
}

#[tokio::test]
async fn timestamps_are_stored_in_utc() {
    let (_directory, pool) = temp_pool().await;
    let mut shifted = record(1);
    shifted.timestamp = time::macros::datetime!(2026-03-14 10:00:00.123456789 +01:00);
    let mut tx = pool.begin().await.expect("begin");
    let sealed = sqlite::append(&mut tx, vec![shifted])
        .await
        .expect("append");
    tx.commit().await.expect("commit");

    assert!(sealed[0].record.timestamp.offset().is_utc());
    assert_eq!(
        sealed[0].record.timestamp,
        time::macros::datetime!(2026-03-14 09:00:00.123456789 UTC)
    );
    let stored: String = sqlx::query_scalar("SELECT timestamp FROM audit_records")
        .fetch_one(&pool)
        .await
        .expect("select");
    assert_eq!(stored, "2026-03-14T09:00:00.123456789Z");
    assert_eq!(
        sqlite::read_after(&pool, 0, 10).await.expect("read"),
        sealed
    );
}

#[tokio::test]
async fn triggers_refuse_update_and_delete() {
    let (_directory, pool) = temp_pool().await;
    append_records(&pool, 3, 3).await;
    for statement in [
        "UPDATE audit_records SET outcome = 'allow' WHERE sequence = 2",
        "DELETE FROM audit_records WHERE sequence = 3",
    ] {
        let error = sqlx::raw_sql(statement)
            .execute(&pool)
            .await
            .expect_err(statement);
        assert!(error.to_string().contains("append-only"), "{error}");
    }
    assert!(sqlite::verify(&pool).await.expect("verify").is_intact());
}

#[tokio::test]
async fn detects_changed_outcome() {
    // Record 37 is a denied decision (odd, not a posting); flip it to allow.
    assert_eq!(record(37).outcome, countersign_audit::Outcome::Deny);
    check_tamper(
        "UPDATE audit_records SET outcome = 'allow' WHERE sequence = 37",
        37,
        BreakKind::HashMismatch,
    )
    .await;
}

#[tokio::test]
async fn detects_edited_masked_input() {
    check_tamper(
        "UPDATE audit_records SET masked_input = \
         replace(masked_input, '\"minor_units\":1058', '\"minor_units\":1') WHERE sequence = 58",
        58,
        BreakKind::HashMismatch,
    )
    .await;
    // SQLite's own JSON functions keep key order and drop nothing, but the edit still shows.
    check_tamper(
        "UPDATE audit_records SET masked_input = json_set(masked_input, '$.amount.minor_units', 5) \
         WHERE sequence = 59",
        59,
        BreakKind::HashMismatch,
    )
    .await;
    // An equivalent but re-spelled value is a rewrite too.
    check_tamper(
        "UPDATE audit_records SET result = replace(result, ',', ', ') WHERE sequence = 60",
        60,
        BreakKind::NonCanonical,
    )
    .await;
}

#[tokio::test]
async fn detects_edits_to_every_column() {
    let cases: [(&'static str, BreakKind); 12] = [
        (
            "UPDATE audit_records SET record_id = '0190aaaa-0000-7000-8000-000000000000' WHERE sequence = 40",
            BreakKind::HashMismatch,
        ),
        (
            "UPDATE audit_records SET kind = 'posting' WHERE sequence = 40",
            BreakKind::HashMismatch,
        ),
        (
            "UPDATE audit_records SET decision_id = '0190aaaa-0000-7000-8000-000000000000' WHERE sequence = 40",
            BreakKind::HashMismatch,
        ),
        (
            "UPDATE audit_records SET timestamp = '2026-03-14T09:00:00.000000000Z' WHERE sequence = 40",
            BreakKind::HashMismatch,
        ),
        (
            "UPDATE audit_records SET subject_fingerprint = 'ff' WHERE sequence = 40",
            BreakKind::HashMismatch,
        ),
        (
            "UPDATE audit_records SET subject_common_name = 'forged' WHERE sequence = 40",
            BreakKind::HashMismatch,
        ),
        (
            "UPDATE audit_records SET subject_roles = '[\"admin\"]' WHERE sequence = 40",
            BreakKind::HashMismatch,
        ),
        (
            "UPDATE audit_records SET source_address = '127.0.0.1:1' WHERE sequence = 40",
            BreakKind::HashMismatch,
        ),
        (
            "UPDATE audit_records SET action = 'account.create' WHERE sequence = 40",
            BreakKind::HashMismatch,
        ),
        (
            "UPDATE audit_records SET bundle_revision = 'rev-0' WHERE sequence = 40",
            BreakKind::HashMismatch,
        ),
        (
            "UPDATE audit_records SET previous_hash = zeroblob(32) WHERE sequence = 40",
            BreakKind::PreviousHashMismatch,
        ),
        (
            "UPDATE audit_records SET hash = zeroblob(32) WHERE sequence = 40",
            BreakKind::HashMismatch,
        ),
    ];
    for (tamper, kind) in cases {
        check_tamper(tamper, 40, kind).await;
    }
    // Non-canonical spellings of the same value.
    assert!(
        record(41)
            .record_id
            .to_string()
            .contains(|c: char| c.is_ascii_lowercase())
    );
    check_tamper(
        "UPDATE audit_records SET record_id = upper(record_id) WHERE sequence = 41",
        41,
        BreakKind::NonCanonical,
    )
    .await;
    check_tamper(
        "UPDATE audit_records SET timestamp = replace(timestamp, 'Z', '+00:00') WHERE sequence = 42",
        42,
        BreakKind::NonCanonical,
    )
    .await;
    // Values that are not records at all.
    check_tamper(
        "UPDATE audit_records SET outcome = 'maybe' WHERE sequence = 43",
        43,
        BreakKind::Undecodable,
    )
    .await;
    check_tamper(
        "UPDATE audit_records SET masked_input = '{not json' WHERE sequence = 44",
        44,
        BreakKind::Undecodable,
    )
    .await;
}

#[tokio::test]
async fn detects_deleted_rows() {
    check_tamper(
        "DELETE FROM audit_records WHERE sequence = 50",
        50,
        BreakKind::Missing,
    )
    .await;
    check_tamper(
        "DELETE FROM audit_records WHERE sequence = 1",
        1,
        BreakKind::Missing,
    )
    .await;
    check_tamper(
        "DELETE FROM audit_records WHERE sequence BETWEEN 70 AND 80",
        70,
        BreakKind::Missing,
    )
    .await;
}

#[tokio::test]
async fn detects_swapped_rows() {
    // Whole rows swap places (hashes travel with them).
    check_tamper(
        "UPDATE audit_records SET sequence = -1 WHERE sequence = 20;
         UPDATE audit_records SET sequence = 20 WHERE sequence = 30;
         UPDATE audit_records SET sequence = 30 WHERE sequence = -1;",
        20,
        BreakKind::PreviousHashMismatch,
    )
    .await;
    // Only the contents swap; each row keeps its own hashes.
    check_tamper(
        "CREATE TEMP TABLE swap AS SELECT sequence, outcome, masked_input, result
             FROM audit_records WHERE sequence IN (20, 30);
         UPDATE audit_records SET
             outcome = (SELECT outcome FROM swap WHERE swap.sequence = 50 - audit_records.sequence),
             masked_input = (SELECT masked_input FROM swap WHERE swap.sequence = 50 - audit_records.sequence),
             result = (SELECT result FROM swap WHERE swap.sequence = 50 - audit_records.sequence)
             WHERE sequence IN (20, 30);",
        20,
        BreakKind::HashMismatch,
    )
    .await;
}

#[tokio::test]
async fn detects_planted_rows_before_genesis() {
    check_tamper(
        "INSERT INTO audit_records SELECT 0, 'planted', kind, decision_id, timestamp,
             subject_fingerprint, subject_common_name, subject_roles, source_address, action,
             masked_input, result, bundle_revision, outcome, redaction, previous_hash, hash
         FROM audit_records WHERE sequence = 1",
        0,
        BreakKind::UnexpectedSequence,
    )
    .await;
}

#[tokio::test]
async fn anchor_detects_truncated_and_resealed_tails() {
    let (_directory, pool) = temp_pool().await;
    let sealed = append_records(&pool, 100, 10).await;
    let anchor = sqlite::head(&pool).await.expect("head").expect("non-empty");
    drop_append_only_triggers(&pool).await;

    // Re-seal record 100 with a changed outcome: the chain alone cannot tell.
    let mut forged = sealed[99].record.clone();
    assert_ne!(forged.outcome, countersign_audit::Outcome::Error);
    forged.outcome = countersign_audit::Outcome::Error;
    let forged_hash = countersign_audit::chain_hash(&sealed[99].previous_hash, 100, &forged);
    sqlx::query("UPDATE audit_records SET outcome = ?1, hash = ?2 WHERE sequence = 100")
        .bind(forged.outcome.as_str())
        .bind(forged_hash.to_vec())
        .execute(&pool)
        .await
        .expect("forge");
    assert!(sqlite::verify(&pool).await.expect("verify").is_intact());
    let report = sqlite::verify_against_anchor(&pool, &anchor)
        .await
        .expect("verify");
    let broken = report.first_broken.expect("anchor mismatch detected");
    assert_eq!(
        (broken.sequence, broken.kind),
        (100, BreakKind::AnchorMismatch)
    );

    // Cut the tail off: also invisible to the chain, visible against the anchor.
    sqlx::raw_sql("DELETE FROM audit_records WHERE sequence > 97")
        .execute(&pool)
        .await
        .expect("truncate");
    let report = sqlite::verify(&pool).await.expect("verify");
    assert!(report.is_intact());
    assert_eq!(report.records_checked, 97);
    let report = sqlite::verify_against_anchor(&pool, &anchor)
        .await
        .expect("verify");
    let broken = report.first_broken.expect("truncation detected");
    assert_eq!((broken.sequence, broken.kind), (98, BreakKind::Truncated));
}

#[tokio::test]
async fn verify_streams_across_pages() {
    let (_directory, pool) = temp_pool().await;
    append_records(&pool, 2_500, 500).await;
    let report = sqlite::verify(&pool).await.expect("verify");
    assert!(report.is_intact());
    assert_eq!(report.records_checked, 2_500);

    drop_append_only_triggers(&pool).await;
    sqlx::raw_sql("UPDATE audit_records SET outcome = 'error' WHERE sequence = 2001")
        .execute(&pool)
        .await
        .expect("tamper");
    let broken = sqlite::verify(&pool)
        .await
        .expect("verify")
        .first_broken
        .expect("detected");
    assert_eq!(
        (broken.sequence, broken.kind),
        (2001, BreakKind::HashMismatch)
    );
}
