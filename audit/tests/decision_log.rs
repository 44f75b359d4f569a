//! The JSON Lines decision-log sink: format, durability cursor, crash recovery.

mod common;

use std::io::Write;

use common::{append_records, temp_pool};
use countersign_audit::sink::{decision_log_event, relay_batch};
use countersign_audit::{
    AuditError, AuditSink, DecisionLogLabels, JsonlDecisionLog, SealedRecord, sqlite,
};
use serde_json::{Value, json};

fn read_lines(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read log");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "log must end with a newline"
    );
    text.lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect()
}

async fn sealed_records(count: u32) -> Vec<SealedRecord> {
    let (_directory, pool) = temp_pool().await;
    append_records(&pool, count, count).await
}

#[tokio::test]
async fn writes_opa_decision_log_events() {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("decisions.jsonl");
    let sealed = sealed_records(3).await;
    let mut log = JsonlDecisionLog::open(&path)
        .await
        .expect("open")
        .with_labels(DecisionLogLabels {
            id: "gateway-1".to_owned(),
            version: "9.9.9".to_owned(),
        });
    assert_eq!(log.delivered_through(), 0);
    log.deliver(&sealed).await.expect("deliver");
    assert_eq!(log.delivered_through(), 3);

    let lines = read_lines(&path);
    assert_eq!(lines.len(), 3);
    let first = &sealed[0];
    let record = &first.record;
    assert_eq!(
        lines[0],
        json!({
            "decision_id": record.decision_id.to_string(),
            "labels": { "id": "gateway-1", "version": "9.9.9" },
            "path": "countersign/transfer/decision",
            "input": record.masked_input,
            "result": record.result,
            "timestamp": "2026-03-14T09:00:00.001000000Z",
            "metrics": {},
            "bundles": { "countersign": { "revision": "rev-1" } },
            "requested_by": "10.0.0.1:4433",
            "countersign": {
                "sequence": 1,
                "record_id": record.record_id.to_string(),
                "kind": "decision",
                "action": "transfer.create",
                "outcome": "deny",
                "hash": hex::encode(first.hash),
                "previous_hash": "0".repeat(64),
                "subject": {
                    "fingerprint_sha256": record.subject.fingerprint_sha256,
                    "common_name": "teller-1.example",
                    "roles": ["teller", "branch-1"],
                },
            },
        })
    );
    assert_eq!(lines[1]["countersign"]["kind"], "posting");
    assert_eq!(lines[1]["countersign"]["outcome"], "posted");
    // Lines are canonical JSON, so the file is byte-for-byte reproducible.
    let text = std::fs::read_to_string(&path).expect("read");
    let expected_first_line = countersign_audit::canonical_json(&decision_log_event(
        first,
        &DecisionLogLabels {
            id: "gateway-1".to_owned(),
            version: "9.9.9".to_owned(),
        },
    ));
    assert_eq!(text.lines().next(), Some(expected_first_line.as_str()));
}

#[tokio::test]
async fn reopen_recovers_the_cursor_and_skips_redelivery() {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("decisions.jsonl");
    let sealed = sealed_records(10).await;

    let mut log = JsonlDecisionLog::open(&path).await.expect("open");
    log.deliver(&sealed[..4]).await.expect("deliver");
    drop(log);

    let mut log = JsonlDecisionLog::open(&path).await.expect("reopen");
    assert_eq!(log.delivered_through(), 4);
    // A relay restarting from an older cursor redelivers 1..=10; only 5..=10 are new.
    log.deliver(&sealed).await.expect("deliver");
    assert_eq!(log.delivered_through(), 10);
    let sequences: Vec<i64> = read_lines(&path)
        .iter()
        .map(|line| line["countersign"]["sequence"].as_i64().expect("sequence"))
        .collect();
    assert_eq!(sequences, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn torn_last_line_is_cut_off_on_open() {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("decisions.jsonl");
    let sealed = sealed_records(6).await;

    let mut log = JsonlDecisionLog::open(&path).await.expect("open");
    log.deliver(&sealed[..3]).await.expect("deliver");
    drop(log);
    let intact_length = std::fs::metadata(&path).expect("metadata").len();
    // A crash in the middle of writing record 4.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    file.write_all(br#"{"bundles":{"countersign":{"revision":"rev-1"}},"countersign":{"sequ"#)
        .expect("write torn line");
    drop(file);

    let mut log = JsonlDecisionLog::open(&path).await.expect("reopen");
    assert_eq!(log.delivered_through(), 3);
    assert_eq!(
        std::fs::metadata(&path).expect("metadata").len(),
        intact_length
    );
    log.deliver(&sealed[3..]).await.expect("deliver");
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[3]["countersign"]["sequence"], 4);
}

#[tokio::test]
async fn file_that_is_only_a_torn_line_starts_over() {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("decisions.jsonl");
    std::fs::write(&path, b"{\"decision_id\":").expect("write");
    let log = JsonlDecisionLog::open(&path).await.expect("open");
    assert_eq!(log.delivered_through(), 0);
    assert_eq!(std::fs::metadata(&path).expect("metadata").len(), 0);
}

#[tokio::test]
async fn complete_garbage_line_is_refused() {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("decisions.jsonl");
    std::fs::write(&path, b"not json\n").expect("write");
    let result = JsonlDecisionLog::open(&path).await;
    assert!(
        matches!(result, Err(AuditError::DecisionLogCorrupt { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn gaps_are_refused_not_skipped() {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("decisions.jsonl");
    let sealed = sealed_records(5).await;
    let mut log = JsonlDecisionLog::open(&path).await.expect("open");
    log.deliver(&sealed[..2]).await.expect("deliver");
    let result = log.deliver(&sealed[3..]).await;
    assert!(
        matches!(
            result,
            Err(AuditError::SinkSequenceGap {
                expected: 3,
                found: 4,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(log.delivered_through(), 2);
    assert_eq!(read_lines(&path).len(), 2);
}

#[tokio::test]
async fn relay_delivers_everything_from_the_store() {
    let (_database_directory, pool) = temp_pool().await;
    append_records(&pool, 25, 5).await;
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("decisions.jsonl");
    let mut log = JsonlDecisionLog::open(&path).await.expect("open");

    let mut relayed = 0;
    loop {
        let batch = relay_batch(&pool, &mut log, 10).await.expect("relay");
        if batch == 0 {
            break;
        }
        relayed += batch;
    }
    assert_eq!(relayed, 25);
    assert_eq!(log.delivered_through(), 25);

    // Hashes in the log chain up exactly like the table.
    let lines = read_lines(&path);
    let stored = sqlite::read_after(&pool, 0, 100).await.expect("read");
    for (line, sealed) in lines.iter().zip(&stored) {
        assert_eq!(line["countersign"]["hash"], hex::encode(sealed.hash));
        assert_eq!(
            line["countersign"]["previous_hash"],
            hex::encode(sealed.previous_hash)
        );
    }
    assert_eq!(lines.len(), stored.len());
}
