//! Measures the offline verifier: writes an export of N generated records (transfer
//! decisions and their postings, realistic sizes, a checkpoint every 10,000 records) to a
//! file, then verifies it from the file with only the public key and prints records/s.
//!
//! ```text
//! cargo run --release -p countersign-audit --example export_verify_rate -- 1000000 [DIR]
//! ```
//!
//! With DIR the export (`DIR/export.jsonl`) and the public key (`DIR/checkpoint.pub`) are
//! kept, so the CLI can be timed on the same file:
//! `time countersign audit verify --offline DIR/export.jsonl --public-key DIR/checkpoint.pub`.
#![forbid(unsafe_code)]

use std::{
    fs::File,
    io::{BufReader, BufWriter},
    path::PathBuf,
    time::Instant,
};

use countersign_audit::{
    GENESIS_PREVIOUS_HASH, NewRecord, Outcome, RecordKind, Redaction, SealedRecord, Subject,
    chain_hash,
    checkpoint::CheckpointSigner,
    export::{ExportHeader, ExportWriter, verify_export},
    merkle::{Frontier, leaf_hash},
};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

const CHECKPOINT_EVERY_RECORDS: u64 = 10_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let records: u64 = args
        .next()
        .map(|text| text.parse().expect("record count"))
        .unwrap_or(1_000_000);
    assert!(records > 0, "at least one record");
    let temporary = tempfile::TempDir::new().expect("temporary directory");
    let directory = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| temporary.path().to_owned());
    std::fs::create_dir_all(&directory).expect("output directory");
    let export_path = directory.join("export.jsonl");
    let key_path = directory.join("checkpoint.pub");

    let signer = CheckpointSigner::generate().expect("key");
    std::fs::write(&key_path, signer.verifier().public_key_pem()).expect("public key");

    let started = Instant::now();
    let header = ExportHeader::new(1, records, &signer.verifier(), None, None);
    let file = BufWriter::with_capacity(1 << 20, File::create(&export_path).expect("export file"));
    let mut writer = ExportWriter::new(file, &header, &Frontier::new()).expect("header");
    let mut frontier = Frontier::new();
    let mut previous_hash = GENESIS_PREVIOUS_HASH;
    let mut decision_id = Uuid::now_v7();
    let mut last_checkpoint = None;
    for sequence in 1..=records {
        let record = if sequence % 2 == 1 {
            decision_id = Uuid::now_v7();
            decision(decision_id, sequence)
        } else {
            posting(decision_id, sequence)
        };
        let sequence = i64::try_from(sequence).expect("sequence fits i64");
        let hash = chain_hash(&previous_hash, sequence, &record);
        let sealed = SealedRecord {
            sequence,
            record,
            previous_hash,
            hash,
        };
        frontier.push(leaf_hash(&hash));
        writer.record(&sealed).expect("write record");
        previous_hash = hash;
        let size = frontier.size();
        if size.is_multiple_of(CHECKPOINT_EVERY_RECORDS) {
            let checkpoint = signer.sign(size, frontier.root(), OffsetDateTime::now_utc());
            writer.checkpoint(&checkpoint).expect("write checkpoint");
            last_checkpoint = Some(checkpoint);
        }
    }
    let covering = match last_checkpoint {
        Some(checkpoint) if checkpoint.tree_size == records => checkpoint,
        _ => signer.sign(records, frontier.root(), OffsetDateTime::now_utc()),
    };
    writer.finish(&covering, &[]).expect("finish");
    let written = started.elapsed();
    let bytes = std::fs::metadata(&export_path).expect("export size").len();
    println!(
        "wrote {records} records ({:.1} MiB) in {:.2} s",
        bytes as f64 / (1 << 20) as f64,
        written.as_secs_f64()
    );

    let key = countersign_audit::checkpoint::CheckpointVerifier::from_pem_file(&key_path)
        .expect("public key");
    let started = Instant::now();
    let file = BufReader::with_capacity(1 << 20, File::open(&export_path).expect("export"));
    let report = verify_export(file, &key).expect("readable export");
    let elapsed = started.elapsed().as_secs_f64();
    assert!(report.is_verified(), "{:?}", report.failure);
    assert_eq!(report.records, records);
    println!(
        "verified {} records, {} checkpoints in {elapsed:.2} s: {:.0} records/s, {:.1} MiB/s",
        report.records,
        report.checkpoints,
        report.records as f64 / elapsed,
        bytes as f64 / (1 << 20) as f64 / elapsed
    );
    if directory != temporary.path() {
        println!("kept {} and {}", export_path.display(), key_path.display());
    }
}

fn subject() -> Subject {
    Subject {
        fingerprint_sha256: "3f".repeat(32),
        common_name: Some("mobile-banking".to_owned()),
        roles: vec!["channel".to_owned()],
    }
}

/// A transfer decision with a policy input and result of typical size (~1 KB).
fn decision(decision_id: Uuid, sequence: u64) -> NewRecord {
    NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Decision,
        decision_id,
        timestamp: OffsetDateTime::now_utc(),
        subject: subject(),
        source_address: "10.20.30.40:51234".to_owned(),
        action: "transfer.create".to_owned(),
        masked_input: json!({
            "action": "transfer.create",
            "transfer": {
                "debit_account": "******************3000",
                "credit_account": "***********************2606",
                "amount": format!("{}.{:02}", sequence % 10_000, sequence % 100),
                "amount_minor": sequence % 1_000_000,
                "currency": "EUR",
                "purpose": "SUPP",
                "remittance_info": "invoice 2026-03",
            },
            "debit_account_state": {"status": "active", "currency": "EUR", "available_minor": 250_000_000},
            "credit_account_state": {"status": "active", "currency": "EUR"},
            "caller": {"common_name": "mobile-banking", "roles": ["channel"]},
            "daily_total_minor": 1_234_500,
        }),
        result: json!({"allow": true, "reasons": [], "obligations": [], "rule": "within limits"}),
        bundle_revision: "2026-03-01.1".to_owned(),
        outcome: Outcome::Allow,
        redaction: Redaction::default(),
        sealed_input: None,
    }
}

fn posting(decision_id: Uuid, sequence: u64) -> NewRecord {
    let amount = format!("{}.{:02}", (sequence - 1) % 10_000, (sequence - 1) % 100);
    NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Posting,
        decision_id,
        timestamp: OffsetDateTime::now_utc(),
        subject: subject(),
        source_address: "10.20.30.40:51234".to_owned(),
        action: "ledger.post".to_owned(),
        masked_input: json!({
            "debit_account": "******************3000",
            "credit_account": "***********************2606",
            "amount": amount,
            "currency": "EUR",
        }),
        result: json!({"transfer_id": Uuid::now_v7().to_string(), "amount": amount, "currency": "EUR"}),
        bundle_revision: "2026-03-01.1".to_owned(),
        outcome: Outcome::Posted,
        redaction: Redaction::default(),
        sealed_input: None,
    }
}
