//! A generated log (decisions, postings, a held transfer approved later, denials, two
//! currencies) with checkpoints, exported through [`ExportWriter`] and verified offline; then
//! the same export tampered with in every way the issue names, each failure named.

use std::collections::HashMap;

use serde_json::{Value, json};
use time::macros::datetime;

use super::*;
use crate::{
    GENESIS_PREVIOUS_HASH,
    checkpoint::CheckpointSigner,
    merkle::{NodeId, leaf_hash},
};

/// A complete log as the gateway would hold it: records, stored Merkle nodes, checkpoints.
pub(super) struct Log {
    pub signer: CheckpointSigner,
    pub records: Vec<SealedRecord>,
    pub nodes: HashMap<NodeId, Hash>,
    pub checkpoints: Vec<Checkpoint>,
}

fn subject(role: &str) -> Subject {
    Subject {
        fingerprint_sha256: "ab".repeat(32),
        common_name: Some(format!("{role}-client")),
        roles: vec![role.to_owned()],
    }
}

fn new_record(kind: RecordKind, decision_id: Uuid, outcome: Outcome, input: Value) -> NewRecord {
    NewRecord {
        record_id: Uuid::now_v7(),
        kind,
        decision_id,
        timestamp: datetime!(2026-03-14 15:09:26.535897932 UTC),
        subject: subject("channel"),
        source_address: "10.1.2.3:50123".to_owned(),
        action: match kind {
            RecordKind::Posting => "ledger.post",
            RecordKind::Reservation => "ledger.reserve",
            RecordKind::Approval => "transfer.approve",
            RecordKind::Release => "ledger.release",
            RecordKind::Decision => "transfer.create",
        }
        .to_owned(),
        masked_input: input,
        result: json!({"allow": outcome != Outcome::Deny}),
        bundle_revision: "rev-1".to_owned(),
        outcome,
        redaction: Redaction::default(),
        sealed_input: None,
    }
}

fn posting_input(amount: &str, currency: &str) -> Value {
    json!({
        "debit_account": "******************3000",
        "credit_account": "*********************2606",
        "amount": amount,
        "currency": currency,
    })
}

/// The business records of one "story" number `index`: mostly an allowed transfer and its
/// posting; every 7th a denial; every 11th a held transfer approved two stories later.
fn story(index: usize, held: &mut Vec<Uuid>) -> Vec<NewRecord> {
    let decision_id = Uuid::now_v7();
    let currency = if index.is_multiple_of(3) {
        "GBP"
    } else {
        "EUR"
    };
    let amount = format!("{}.{:02}", 10 + index, index % 100);
    let mut records = Vec::new();
    if index % 7 == 3 {
        records.push(new_record(
            RecordKind::Decision,
            decision_id,
            Outcome::Deny,
            json!({"amount": amount}),
        ));
    } else if index % 11 == 5 {
        records.push(new_record(
            RecordKind::Decision,
            decision_id,
            Outcome::Pending,
            json!({"amount": amount}),
        ));
        records.push(new_record(
            RecordKind::Reservation,
            decision_id,
            Outcome::Pending,
            posting_input(&amount, "EUR"),
        ));
        held.push(decision_id);
    } else {
        records.push(new_record(
            RecordKind::Decision,
            decision_id,
            Outcome::Allow,
            json!({"amount": amount}),
        ));
        records.push(new_record(
            RecordKind::Posting,
            decision_id,
            Outcome::Posted,
            posting_input(&amount, currency),
        ));
    }
    // Approve a transfer held earlier: the approver's decision, then the posting under the
    // initiation decision (the maker-checker story).
    if index % 11 == 7
        && let Some(initiation) = held.pop()
    {
        let approval_decision = Uuid::now_v7();
        records.push(new_record(
            RecordKind::Decision,
            approval_decision,
            Outcome::Allow,
            json!({"approve": initiation.to_string()}),
        ));
        records.push(new_record(
            RecordKind::Approval,
            approval_decision,
            Outcome::Allow,
            json!({}),
        ));
        records.push(new_record(
            RecordKind::Posting,
            initiation,
            Outcome::Posted,
            posting_input("1000000.00", "EUR"),
        ));
    }
    records
}

impl Log {
    /// At least `records_min` records, with a checkpoint every `checkpoint_every` records.
    pub fn generate(records_min: usize, checkpoint_every: u64) -> Log {
        let mut log = Log {
            signer: CheckpointSigner::generate().expect("key"),
            records: Vec::new(),
            nodes: HashMap::new(),
            checkpoints: Vec::new(),
        };
        let mut held = Vec::new();
        let mut index = 0;
        while log.records.len() < records_min {
            for record in story(index, &mut held) {
                log.append(record, checkpoint_every);
            }
            index += 1;
        }
        log
    }

    pub fn append(&mut self, record: NewRecord, checkpoint_every: u64) {
        let previous_hash = self
            .records
            .last()
            .map_or(GENESIS_PREVIOUS_HASH, |last| last.hash);
        let sequence = self.records.len() as i64 + 1;
        let hash = chain_hash(&previous_hash, sequence, &record);
        self.records.push(SealedRecord {
            sequence,
            record,
            previous_hash,
            hash,
        });
        let mut frontier = self.frontier(sequence as u64 - 1);
        for (id, node) in frontier.push(leaf_hash(&hash)) {
            self.nodes.insert(id, node);
        }
        if (sequence as u64).is_multiple_of(checkpoint_every) {
            self.checkpoint_now();
        }
    }

    pub fn frontier(&self, size: u64) -> Frontier {
        let hashes = Frontier::node_ids(size)
            .into_iter()
            .map(|id| self.nodes[&id])
            .collect();
        Frontier::from_nodes(size, hashes).expect("frontier shape")
    }

    pub fn checkpoint_now(&mut self) -> Checkpoint {
        let size = self.records.len() as u64;
        let checkpoint = self.signer.sign(
            size,
            self.frontier(size).root(),
            datetime!(2026-03-14 16:00 UTC),
        );
        self.checkpoints.push(checkpoint.clone());
        checkpoint
    }

    /// The export of `first..=last`, as the gateway writes it.
    pub fn export(&mut self, first: u64, last: u64) -> String {
        let covering = match self.checkpoints.iter().find(|c| c.tree_size >= last) {
            Some(checkpoint) => checkpoint.clone(),
            None => self.checkpoint_now(),
        };
        let nodes = &self.nodes;
        let proof =
            merkle::consistency_proof(last, covering.tree_size, &|id| nodes.get(&id).copied())
                .expect("proof");
        let header = ExportHeader::new(first, last, &self.signer.verifier(), None, None);
        let mut writer =
            ExportWriter::new(Vec::new(), &header, &self.frontier(first - 1)).expect("header");
        let mut checkpoints = self
            .checkpoints
            .iter()
            .filter(|c| c.tree_size >= first && c.tree_size <= last)
            .peekable();
        for record in &self.records[first as usize - 1..last as usize] {
            writer.record(record).expect("record");
            while let Some(checkpoint) =
                checkpoints.next_if(|c| c.tree_size == record.sequence as u64)
            {
                writer.checkpoint(checkpoint).expect("checkpoint");
            }
        }
        String::from_utf8(writer.finish(&covering, &proof).expect("finish")).expect("UTF-8")
    }
}

fn verify(export: &str, key: &CheckpointVerifier) -> ExportReport {
    verify_export(export.as_bytes(), key).expect("no I/O error")
}

#[track_caller]
fn check_fails(export: &str, log: &Log, kind: FailureKind, location: Location) -> ExportFailure {
    let report = verify(export, &log.signer.verifier());
    let failure = report
        .failure
        .unwrap_or_else(|| panic!("expected {kind:?} at {location}, but the export verified"));
    assert_eq!(
        (failure.kind, &failure.location),
        (kind, &location),
        "{failure}"
    );
    failure
}

/// The lines of an export, and back.
fn lines(export: &str) -> Vec<String> {
    export.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn line_index_of_record(lines: &[String], sequence: i64) -> usize {
    lines
        .iter()
        .position(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            value["type"] == "record" && value["sequence"] == sequence
        })
        .unwrap_or_else(|| panic!("record {sequence} not in the export"))
}

fn line_index_of_checkpoint(lines: &[String], tree_size: u64) -> usize {
    lines
        .iter()
        .position(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            value["type"] == "checkpoint" && value["tree_size"] == tree_size
        })
        .unwrap_or_else(|| panic!("checkpoint {tree_size} not in the export"))
}

fn edit(line: &str, change: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(line).unwrap();
    change(&mut value);
    serde_json::to_string(&value).unwrap()
}

/// Recomputes `hash` (and `previous_hash` from the line before) for every record line from
/// `from_index` on, as a forger who rewrites the chain would; checkpoint lines stay.
fn rechain(lines: &mut [String], from_index: usize) {
    let mut previous: Option<Hash> = None;
    for (index, line) in lines.iter_mut().enumerate() {
        let value: Value = serde_json::from_str(line).unwrap();
        if value["type"] != "record" {
            continue;
        }
        let sealed = serde_json::from_str::<RecordLine>(line)
            .unwrap()
            .into_sealed()
            .unwrap();
        if index >= from_index {
            let previous_hash = previous.unwrap_or(sealed.previous_hash);
            let hash = chain_hash(&previous_hash, sealed.sequence, &sealed.record);
            *line = edit(line, |value| {
                value["previous_hash"] = json!(hex::encode(previous_hash));
                value["hash"] = json!(hex::encode(hash));
            });
            previous = Some(hash);
        } else {
            previous = Some(sealed.hash);
        }
    }
}

#[test]
fn an_untouched_export_verifies_with_only_the_public_key() {
    let mut log = Log::generate(300, 64);
    let export = log.export(1, 300);
    // The auditor's key comes from PEM text, not from the signer.
    let key = CheckpointVerifier::from_pem(&log.signer.verifier().public_key_pem()).unwrap();
    let report = verify(&export, &key);
    assert_eq!(report.failure, None);
    assert_eq!(report.records, 300);
    assert_eq!(
        (report.first_sequence, report.last_sequence),
        (Some(1), Some(300))
    );
    assert_eq!(
        report.checkpoints,
        4 + 1,
        "64, 128, 192, 256 and the covering one"
    );
    assert_eq!(
        report.covering_checkpoint,
        log.checkpoints.last().map(|c| c.tree_size)
    );
    assert_eq!(report.postings_decided_before_export, 0);
    let expected_decisions = log.records[..300]
        .iter()
        .filter(|r| r.record.kind == RecordKind::Decision)
        .count() as u64;
    let expected_postings = log.records[..300]
        .iter()
        .filter(|r| r.record.kind == RecordKind::Posting)
        .count() as u64;
    assert_eq!(report.decisions, expected_decisions);
    assert_eq!(report.postings, expected_postings);
    // Totals per currency, summed exactly from the decimal strings.
    let mut expected: BTreeMap<&str, i128> = BTreeMap::new();
    for record in &log.records[..300] {
        if record.record.kind == RecordKind::Posting {
            let input = &record.record.masked_input;
            let amount = parse_amount(input["amount"].as_str().unwrap()).unwrap().0;
            *expected
                .entry(input["currency"].as_str().unwrap())
                .or_default() += amount;
        }
    }
    assert_eq!(report.currencies.len(), 2);
    for (currency, totals) in &report.currencies {
        assert!(totals.is_balanced(), "{currency}: {totals:?}");
        assert_eq!(totals.debit_total, totals.credit_total);
        assert_eq!(
            totals.debit_total,
            format_amount(expected[currency.as_str()], 2),
            "{currency}"
        );
    }
    // The held transfer approved later posted under its pending initiation decision.
    assert!(
        log.records[..300]
            .iter()
            .any(|r| r.record.kind == RecordKind::Posting
                && r.record.masked_input["amount"] == "1000000.00")
    );
}

#[test]
fn a_middle_range_verifies_against_a_later_covering_checkpoint() {
    let mut log = Log::generate(300, 64);
    // 100..=200: checkpoints 128 and 192 inside; 256 covers it through a consistency proof.
    let export = log.export(100, 200);
    let report = verify(&export, &log.signer.verifier());
    assert_eq!(report.failure, None, "{export}");
    assert_eq!(report.records, 101);
    assert_eq!(report.checkpoints, 3);
    assert_eq!(report.covering_checkpoint, Some(256));
    // A range that ends exactly on a checkpoint: the proof is empty.
    let export = log.export(129, 192);
    let report = verify(&export, &log.signer.verifier());
    assert_eq!(report.failure, None, "{export}");
    assert_eq!(report.covering_checkpoint, Some(192));
    let last: Value = serde_json::from_str(export.lines().last().unwrap()).unwrap();
    assert_eq!(
        last,
        json!({"type": "consistency", "from": 192, "to": 192, "proof": []})
    );
}

#[test]
fn postings_whose_decision_precedes_the_export_are_counted_apart() {
    let mut log = Log::generate(300, 64);
    // Start right at a posting: its decision is the record before, outside the export.
    let posting = log
        .records
        .iter()
        .skip(10)
        .find(|r| {
            r.record.kind == RecordKind::Posting
                && log.records[r.sequence as usize - 2].record.decision_id == r.record.decision_id
        })
        .unwrap()
        .sequence as u64;
    let export = log.export(posting, 250);
    let report = verify(&export, &log.signer.verifier());
    assert_eq!(report.failure, None);
    assert!(report.postings_decided_before_export >= 1);
}

#[test]
fn an_edited_record_is_named_by_its_hash() {
    let mut log = Log::generate(300, 64);
    let mut lines = lines(&log.export(1, 300));
    let index = line_index_of_record(&lines, 77);
    lines[index] = edit(&lines[index], |v| v["outcome"] = json!("deny"));
    let failure = check_fails(
        &join(&lines),
        &log,
        FailureKind::HashMismatch,
        Location::Record { sequence: 77 },
    );
    assert_eq!(failure.line as usize, index + 1);
    assert!(failure.reason.contains("altered"), "{failure}");
}

#[test]
fn an_edited_and_rehashed_record_breaks_the_next_link() {
    let mut log = Log::generate(300, 64);
    let mut lines = lines(&log.export(1, 300));
    let index = line_index_of_record(&lines, 77);
    lines[index] = edit(&lines[index], |v| {
        v["masked_input"] = json!({"amount": "1.00"})
    });
    // Recompute only this record's hash.
    let sealed = serde_json::from_str::<RecordLine>(&lines[index])
        .unwrap()
        .into_sealed()
        .unwrap();
    let hash = chain_hash(&sealed.previous_hash, 77, &sealed.record);
    lines[index] = edit(&lines[index], |v| v["hash"] = json!(hex::encode(hash)));
    let failure = check_fails(
        &join(&lines),
        &log,
        FailureKind::PreviousHashMismatch,
        Location::Record { sequence: 78 },
    );
    assert!(failure.reason.contains("record 77"), "{failure}");
}

#[test]
fn an_edited_record_with_a_rewritten_chain_fails_at_the_next_checkpoint() {
    let mut log = Log::generate(300, 64);
    let mut lines = lines(&log.export(1, 300));
    let index = line_index_of_record(&lines, 77);
    lines[index] = edit(&lines[index], |v| {
        v["source_address"] = json!("192.0.2.1:1")
    });
    rechain(&mut lines, index);
    let failure = check_fails(
        &join(&lines),
        &log,
        FailureKind::RootMismatch,
        Location::Checkpoint { tree_size: 128 },
    );
    assert!(failure.reason.contains("65..=128"), "{failure}");
}

#[test]
fn a_rewritten_tail_after_the_last_checkpoint_fails_the_consistency_proof() {
    let mut log = Log::generate(300, 64);
    // 100..=200 is covered by checkpoint 256 through the proof only for 193..=200.
    let mut lines = lines(&log.export(100, 200));
    let index = line_index_of_record(&lines, 195);
    lines[index] = edit(&lines[index], |v| v["action"] = json!("account.create"));
    rechain(&mut lines, index);
    let failure = check_fails(
        &join(&lines),
        &log,
        FailureKind::ConsistencyInvalid,
        Location::Checkpoint { tree_size: 256 },
    );
    assert!(failure.reason.contains("193..=200"), "{failure}");
}

#[test]
fn a_deleted_record_is_named() {
    let mut log = Log::generate(300, 64);
    let mut lines = lines(&log.export(1, 300));
    let index = line_index_of_record(&lines, 150);
    lines.remove(index);
    check_fails(
        &join(&lines),
        &log,
        FailureKind::SequenceGap,
        Location::Record { sequence: 150 },
    );
    // Deleting the last record: the export ends early.
    let mut lines = self::lines(&log.export(1, 300));
    let index = line_index_of_record(&lines, 300);
    lines.remove(index);
    check_fails(
        &join(&lines),
        &log,
        FailureKind::SequenceGap,
        Location::Record { sequence: 300 },
    );
    // Cutting the file short.
    let lines = self::lines(&log.export(1, 300));
    let index = line_index_of_record(&lines, 290);
    check_fails(
        &join(&lines[..index]),
        &log,
        FailureKind::Truncated,
        Location::Record { sequence: 290 },
    );
}

#[test]
fn reordered_records_are_named() {
    let mut log = Log::generate(300, 64);
    let mut lines = lines(&log.export(1, 300));
    let index = line_index_of_record(&lines, 150);
    lines.swap(index, index + 1);
    let failure = check_fails(
        &join(&lines),
        &log,
        FailureKind::SequenceGap,
        Location::Record { sequence: 150 },
    );
    assert!(failure.reason.contains("151"), "{failure}");
    // Renumbered to hide the swap: the chain links break instead.
    let (first, second) = (lines[index].clone(), lines[index + 1].clone());
    lines[index] = edit(&first, |v| v["sequence"] = json!(150));
    lines[index + 1] = edit(&second, |v| v["sequence"] = json!(151));
    check_fails(
        &join(&lines),
        &log,
        FailureKind::PreviousHashMismatch,
        Location::Record { sequence: 150 },
    );
}

#[test]
fn an_inserted_record_is_named() {
    let mut log = Log::generate(300, 64);
    let lines = lines(&log.export(1, 300));
    let index = line_index_of_record(&lines, 150);
    // A forged posting, chained correctly onto 150 and taking the number 151.
    let forged = {
        let previous: Value = serde_json::from_str(&lines[index]).unwrap();
        let record = new_record(
            RecordKind::Posting,
            Uuid::now_v7(),
            Outcome::Posted,
            posting_input("5000.00", "EUR"),
        );
        let previous_hash = parse_hash(previous["hash"].as_str().unwrap()).unwrap();
        let sealed = SealedRecord {
            sequence: 151,
            hash: chain_hash(&previous_hash, 151, &record),
            previous_hash,
            record,
        };
        let mut writer_output = Vec::new();
        write_record_line(&mut writer_output, &sealed);
        String::from_utf8(writer_output)
            .unwrap()
            .trim_end()
            .to_owned()
    };
    // Without rewriting the chain: the genuine 151 now comes twice. (The forged posting's
    // decision is not in the log; the sequence check names it first... unless the posting
    // check does: both name a record.)
    let mut inserted = lines.clone();
    inserted.insert(index + 1, forged.clone());
    let report = verify(&join(&inserted), &log.signer.verifier());
    let failure = report.failure.expect("fails");
    assert_eq!(
        failure.location,
        Location::Record { sequence: 151 },
        "{failure}"
    );
    assert_eq!(
        failure.kind,
        FailureKind::PostingWithoutDecision,
        "{failure}"
    );

    // A forged decision (no posting check involved) without rewriting the chain.
    let forged_decision = edit(&forged, |v| {
        v["kind"] = json!("decision");
        v["outcome"] = json!("allow");
    });
    let forged_decision = {
        let sealed = serde_json::from_str::<RecordLine>(&forged_decision)
            .unwrap()
            .into_sealed()
            .unwrap();
        let hash = chain_hash(&sealed.previous_hash, 151, &sealed.record);
        edit(&forged_decision, |v| v["hash"] = json!(hex::encode(hash)))
    };
    let mut inserted = lines.clone();
    inserted.insert(index + 1, forged_decision.clone());
    check_fails(
        &join(&inserted),
        &log,
        FailureKind::SequenceRepeated,
        Location::Record { sequence: 151 },
    );

    // Rewriting the chain: renumber everything after it, rechain, move the checkpoints to
    // follow their sizes again and extend the header. The signed roots still tell.
    let mut forged_log = lines.clone();
    forged_log.insert(index + 1, forged_decision);
    let mut records = Vec::new();
    let mut checkpoints = Vec::new();
    let mut next_sequence = 1;
    for line in &forged_log[2..forged_log.len() - 1] {
        let value: Value = serde_json::from_str(line).unwrap();
        if value["type"] == "record" {
            records.push(edit(line, |v| v["sequence"] = json!(next_sequence)));
            next_sequence += 1;
        } else {
            checkpoints.push((value["tree_size"].as_u64().unwrap(), line.clone()));
        }
    }
    let mut renumbered = vec![
        edit(&forged_log[0], |v| v["last_sequence"] = json!(301)),
        forged_log[1].clone(),
    ];
    for (position, record) in records.into_iter().enumerate() {
        renumbered.push(record);
        let sequence = position as u64 + 1;
        renumbered.extend(
            checkpoints
                .iter()
                .filter(|(size, _)| *size == sequence)
                .map(|(_, line)| line.clone()),
        );
    }
    renumbered.extend(
        checkpoints
            .iter()
            .filter(|(size, _)| *size > 301)
            .map(|(_, line)| line.clone()),
    );
    renumbered.push(forged_log.last().unwrap().clone());
    let index = line_index_of_record(&renumbered, 151);
    rechain(&mut renumbered, index);
    check_fails(
        &join(&renumbered),
        &log,
        FailureKind::RootMismatch,
        Location::Checkpoint { tree_size: 192 },
    );
}

fn write_record_line(out: &mut Vec<u8>, sealed: &SealedRecord) {
    let header = ExportHeader {
        format: EXPORT_FORMAT.into(),
        first_sequence: sealed.sequence as u64,
        last_sequence: sealed.sequence as u64,
        key_id: String::new(),
        public_key_pem: String::new(),
        exported_at: String::new(),
        from: None,
        to: None,
    };
    let frontier = Frontier::from_nodes(
        sealed.sequence as u64 - 1,
        vec![[0; 32]; Frontier::node_ids(sealed.sequence as u64 - 1).len()],
    )
    .unwrap();
    let mut writer = ExportWriter::new(Vec::new(), &header, &frontier).unwrap();
    writer.record(sealed).unwrap();
    let text = String::from_utf8(std::mem::take(writer.get_mut())).unwrap();
    out.extend_from_slice(text.lines().nth(2).unwrap().as_bytes());
    out.push(b'\n');
}

#[test]
fn a_checkpoint_signed_by_another_key_is_named() {
    let mut log = Log::generate(300, 64);
    let mut lines = lines(&log.export(1, 300));
    let other = CheckpointSigner::generate().unwrap();
    let genuine = &log.checkpoints[1];
    assert_eq!(genuine.tree_size, 128);
    let swapped = other.sign(128, genuine.root_hash, genuine.timestamp);
    let index = line_index_of_checkpoint(&lines, 128);
    lines[index] = serde_json::to_string(&CheckpointLine::of(&swapped)).unwrap();
    let failure = check_fails(
        &join(&lines),
        &log,
        FailureKind::WrongKey,
        Location::Checkpoint { tree_size: 128 },
    );
    assert!(failure.reason.contains(other.key_id()), "{failure}");
    // Claiming the other key id in the checkpoint: the signature does not verify.
    lines[index] = edit(&lines[index], |v| v["key_id"] = json!(log.signer.key_id()));
    check_fails(
        &join(&lines),
        &log,
        FailureKind::BadSignature,
        Location::Checkpoint { tree_size: 128 },
    );
    // The whole export re-signed by another key: the pinned key refuses its header.
    let mut forged = Log::generate(10, 4);
    let export = forged.export(1, 10);
    let report = verify(&export, &log.signer.verifier());
    let failure = report.failure.unwrap();
    assert_eq!(
        (failure.kind, failure.location),
        (FailureKind::WrongKey, Location::Header)
    );
}

#[test]
fn an_altered_checkpoint_root_is_named() {
    let mut log = Log::generate(300, 64);
    let mut lines = lines(&log.export(1, 300));
    let index = line_index_of_checkpoint(&lines, 192);
    lines[index] = edit(&lines[index], |v| v["root_hash"] = json!("00".repeat(32)));
    check_fails(
        &join(&lines),
        &log,
        FailureKind::BadSignature,
        Location::Checkpoint { tree_size: 192 },
    );
    // The covering checkpoint too.
    let mut lines = self::lines(&log.export(1, 300));
    let covering = log.checkpoints.last().unwrap().tree_size;
    let index = line_index_of_checkpoint(&lines, covering);
    lines[index] = edit(&lines[index], |v| v["root_hash"] = json!("11".repeat(32)));
    check_fails(
        &join(&lines),
        &log,
        FailureKind::BadSignature,
        Location::Checkpoint {
            tree_size: covering,
        },
    );
}

#[test]
fn a_missing_consistency_proof_or_covering_checkpoint_fails() {
    let mut log = Log::generate(300, 64);
    let export = log.export(100, 200);
    let mut lines = lines(&export);
    lines.pop();
    check_fails(
        &join(&lines),
        &log,
        FailureKind::Truncated,
        Location::Consistency,
    );
    lines.pop();
    check_fails(&join(&lines), &log, FailureKind::Truncated, Location::End);
    // An altered proof.
    let mut lines = self::lines(&export);
    let last = lines.len() - 1;
    lines[last] = edit(&lines[last], |v| v["proof"][0] = json!("22".repeat(32)));
    check_fails(
        &join(&lines),
        &log,
        FailureKind::ConsistencyInvalid,
        Location::Checkpoint { tree_size: 256 },
    );
    // A line after the proof.
    let mut lines = self::lines(&export);
    lines.push(lines[2].clone());
    check_fails(&join(&lines), &log, FailureKind::OutOfPlace, Location::Line);
}

#[test]
fn malformed_lines_are_named() {
    let mut log = Log::generate(100, 32);
    let export = log.export(1, 100);
    let mut lines = lines(&export);
    let index = line_index_of_record(&lines, 40);
    // A field no hash covers.
    lines[index] = edit(&lines[index], |v| v["note"] = json!("trust me"));
    let failure = check_fails(
        &join(&lines),
        &log,
        FailureKind::Malformed,
        Location::Record { sequence: 40 },
    );
    assert!(failure.reason.contains("note"), "{failure}");
    lines[index] = "not json".to_owned();
    check_fails(&join(&lines), &log, FailureKind::Malformed, Location::Line);
    // No header at all.
    let lines = self::lines(&export);
    check_fails(
        &join(&lines[1..]),
        &log,
        FailureKind::OutOfPlace,
        Location::Header,
    );
    check_fails("", &log, FailureKind::Truncated, Location::Header);
    // A frontier that does not fit the range.
    let mut log = Log::generate(100, 32);
    let mut lines = self::lines(&log.export(50, 100));
    lines[1] = edit(&lines[1], |v| v["nodes"][0] = json!("33".repeat(32)));
    check_fails(
        &join(&lines),
        &log,
        FailureKind::RootMismatch,
        Location::Checkpoint { tree_size: 64 },
    );
}

#[test]
fn postings_need_an_earlier_allowing_decision() {
    // A log whose posting cites a denied decision (a gateway bug, or a forgery with a valid
    // chain and a signed root): named even though every hash checks out.
    let mut log = Log::generate(20, 1_000);
    let denied = log
        .records
        .iter()
        .find(|r| r.record.kind == RecordKind::Decision && r.record.outcome == Outcome::Deny)
        .unwrap()
        .record
        .decision_id;
    log.append(
        new_record(
            RecordKind::Posting,
            denied,
            Outcome::Posted,
            posting_input("1.00", "EUR"),
        ),
        1_000,
    );
    let last = log.records.len() as i64;
    let export = log.export(1, last as u64);
    let failure = check_fails(
        &export,
        &log,
        FailureKind::PostingWithoutDecision,
        Location::Record { sequence: last },
    );
    assert!(failure.reason.contains(&denied.to_string()), "{failure}");

    // A posting whose decision comes after it.
    let mut log = Log::generate(20, 1_000);
    let later = Uuid::now_v7();
    log.append(
        new_record(
            RecordKind::Posting,
            later,
            Outcome::Posted,
            posting_input("1.00", "EUR"),
        ),
        1_000,
    );
    let posting = log.records.len() as i64;
    log.append(
        new_record(RecordKind::Decision, later, Outcome::Allow, json!({})),
        1_000,
    );
    let last = log.records.len() as u64;
    check_fails(
        &log.export(1, last),
        &log,
        FailureKind::PostingWithoutDecision,
        Location::Record { sequence: posting },
    );
    // From the middle of the log the posting is first taken as decided before the export;
    // its decision showing up afterwards is named.
    check_fails(
        &log.export(posting as u64, last),
        &log,
        FailureKind::PostingWithoutDecision,
        Location::Record {
            sequence: posting + 1,
        },
    );
}

#[test]
fn a_posting_without_a_leg_is_named_and_unbalances_its_currency() {
    let mut log = Log::generate(20, 1_000);
    let decision = Uuid::now_v7();
    log.append(
        new_record(RecordKind::Decision, decision, Outcome::Allow, json!({})),
        1_000,
    );
    let mut input = posting_input("12.34", "CHF");
    input.as_object_mut().unwrap().remove("credit_account");
    log.append(
        new_record(RecordKind::Posting, decision, Outcome::Posted, input),
        1_000,
    );
    let last = log.records.len() as u64;
    let export = log.export(1, last);
    let report = verify(&export, &log.signer.verifier());
    let failure = report.failure.clone().unwrap();
    assert_eq!(
        (failure.kind, failure.location),
        (
            FailureKind::PostingMalformed,
            Location::Record {
                sequence: last as i64
            }
        )
    );
    let chf = &report.currencies["CHF"];
    assert_eq!((chf.debit_legs, chf.credit_legs), (1, 0));
    assert_eq!(
        (chf.debit_total.as_str(), chf.credit_total.as_str()),
        ("12.34", "0.00")
    );
    assert!(!chf.is_balanced());
}

#[test]
fn amounts_are_exact_decimals() {
    assert_eq!(parse_amount("250.00"), Ok((250_000_000_000, 2)));
    assert_eq!(parse_amount("0.001"), Ok((1_000_000, 3)));
    assert_eq!(parse_amount("7"), Ok((7_000_000_000, 0)));
    for bad in [
        "",
        "-1.00",
        "1.",
        ".5",
        "1e3",
        "0.00",
        "1.0000000001",
        "+1",
        " 1",
    ] {
        assert!(parse_amount(bad).is_err(), "{bad:?}");
    }
    assert_eq!(format_amount(250_000_000_000, 2), "250.00");
    assert_eq!(format_amount(1_000_000, 3), "0.001");
    assert_eq!(format_amount(-1_500_000_000, 2), "-1.50");
    assert_eq!(format_amount(7_000_000_000, 0), "7");
    // 0.1 + 0.2 is exactly 0.3 here.
    let sum = parse_amount("0.1").unwrap().0 + parse_amount("0.2").unwrap().0;
    assert_eq!(format_amount(sum, 1), "0.3");
}

#[test]
fn overlong_lines_are_refused_without_reading_them_whole() {
    let log = Log::generate(1, 1);
    let mut text = String::from("{\"type\":\"header\",\"format\":\"");
    text.push_str(&"x".repeat(LINE_BYTES_MAX + 10));
    let failure = verify(&text, &log.signer.verifier()).failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Malformed);
    assert!(failure.reason.contains("longer than"), "{failure}");
}
