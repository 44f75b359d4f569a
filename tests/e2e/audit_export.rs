//! The auditor's command line against a running gateway, end to end: the real `countersign`
//! binary talks to the gateway over mutual TLS with the auditor's certificate files.
//!
//! - `audit export` streams a range to a file; `audit verify --offline` checks it with nothing
//!   but the public key fetched from `/v1/audit/public-key` (exit 0), and names the record or
//!   checkpoint of every tampering (exit 1): an edited, deleted, reordered or inserted
//!   record, a checkpoint swapped for one signed by another key.
//! - Exports by sequence and by time; non-auditors get 403; every export is an audit record.
//! - `audit query --format csv` returns exactly the matching rows (RFC 4180).
//! - `audit verify --store URL --public-key PEM` checks the live chain and checkpoints;
//!   `audit keygen` writes a key pair the gateway can sign with.
//!
//! Every test body is `async fn name(backend: Backend)`; `on_both_backends!` at the end makes
//! `audit_export::sqlite::name` and `audit_export::postgres::name` (PostgreSQL from
//! `DATABASE_URL`, a fresh database per test; a note and return without it, a failure under
//! `CI=true`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use countersign::config::CheckpointsConfig;
use countersign_audit::{
    SealedRecord,
    checkpoint::{Checkpoint, CheckpointSigner},
};
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, all_records, on_both_backends, spawn_on_backend};

const BINARY: &str = env!("CARGO_BIN_EXE_countersign");

/// Bound on waiting for the indexer (and the sealer on PostgreSQL) to catch up.
const CATCH_UP_WAIT_MS: u64 = 30_000;

const CORP: &str = "DE44500105175407324931";
const SUPPLIER: &str = "DE89370400440532013000";
const UK_PAYER: &str = "GB29NWBK60161331926819";
const UK_PAYEE: &str = "GB82WEST12345698765432";

/// A gateway with a checkpoint signing key, and the files an auditor's CLI needs.
struct Auditor {
    app: TestApp,
    store_url: String,
    /// The auditor's certificate, key and the CA, as files; the exports go here too.
    files: tempfile::TempDir,
}

impl Auditor {
    async fn spawn(backend: Backend) -> Option<Auditor> {
        let files = tempfile::TempDir::new().unwrap();
        let signer = CheckpointSigner::generate().unwrap();
        let key_path = files.path().join("checkpoint.key");
        std::fs::write(&key_path, signer.private_key_pem()).unwrap();
        let (app, store_url) = spawn_on_backend(backend, move |config| {
            config.audit.checkpoints = CheckpointsConfig {
                signing_key_file: Some(key_path),
                interval_seconds: 1,
                records_max: 8,
            };
        })
        .await?;
        let auditor = &app.pki.clients["auditor"];
        std::fs::write(files.path().join("auditor.crt"), &auditor.certificate_pem).unwrap();
        std::fs::write(files.path().join("auditor.key"), &auditor.private_key_pem).unwrap();
        std::fs::write(files.path().join("ca.crt"), &app.pki.ca_pem).unwrap();
        let channel = &app.pki.clients["channel"];
        std::fs::write(files.path().join("channel.crt"), &channel.certificate_pem).unwrap();
        std::fs::write(files.path().join("channel.key"), &channel.private_key_pem).unwrap();
        Some(Auditor {
            app,
            store_url,
            files,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    /// `--gateway … --cert … --key … --cacert …` for the certificate files `stem`.{crt,key}.
    fn gateway_args(&self, stem: &str) -> Vec<String> {
        vec![
            "--gateway".into(),
            format!("https://127.0.0.1:{}", self.app.address.port()),
            "--cert".into(),
            self.path(&format!("{stem}.crt")).display().to_string(),
            "--key".into(),
            self.path(&format!("{stem}.key")).display().to_string(),
            "--cacert".into(),
            self.path("ca.crt").display().to_string(),
        ]
    }

    /// Waits until every sealed record is in the Merkle tree; returns the indexed size.
    async fn caught_up(&self) -> u64 {
        crate::support::indexed_through_head(&self.app).await
    }

    /// Waits until every appended record is sealed (PostgreSQL seals asynchronously).
    async fn sealed(&self) {
        assert!(
            self.app
                .state
                .store
                .wait_sealed(Duration::from_millis(CATCH_UP_WAIT_MS))
                .await
                .unwrap(),
            "records are sealed"
        );
    }

    /// The checkpoint public key as an auditor pins it: fetched once from the gateway.
    async fn fetch_public_key(&self) -> PathBuf {
        let response = self
            .app
            .client("auditor")
            .get(format!("{}/v1/audit/public-key", self.app.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let pem = response.text().await.unwrap();
        assert!(pem.contains("BEGIN PUBLIC KEY"), "{pem}");
        let path = self.path("checkpoint.pub");
        std::fs::write(&path, pem).unwrap();
        path
    }
}

/// Output of one run of the real binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `countersign args…` off the async workers (the gateway runs on them).
async fn countersign(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(BINARY)
            .args(&args)
            .output()
            .expect("countersign runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn body(debit: &str, credit: &str, amount: &str, currency: &str) -> Value {
    json!({"debit_account": debit, "credit_account": credit, "amount": amount, "currency": currency})
}

/// Allowed transfers in two currencies, a denial, and a transfer held for approval and then
/// approved (its posting cites the initiation decision, outcome pending).
async fn build_trail(app: &TestApp) {
    app.open_account(CORP, "EUR", "30000000.00").await;
    app.open_account(SUPPLIER, "EUR", "0").await;
    app.open_account(UK_PAYER, "GBP", "5000.00").await;
    app.open_account(UK_PAYEE, "GBP", "0").await;
    for (index, amount) in ["100.00", "2500.50", "99999.99"].into_iter().enumerate() {
        let (status, answer) = app
            .post_transfer(
                &format!("eur-{index}"),
                &body(CORP, SUPPLIER, amount, "EUR"),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    let (status, answer) = app
        .post_transfer("gbp-1", &body(UK_PAYER, UK_PAYEE, "12.34", "GBP"))
        .await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = app
        .post_transfer("deny-1", &body(UK_PAYER, UK_PAYEE, "9999.00", "GBP"))
        .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = app
        .post_transfer("held-1", &body(CORP, SUPPLIER, "2000000.00", "EUR"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let transfer_id = answer["transfer"]["id"].as_str().unwrap().to_owned();
    let approved = app
        .client("approver")
        .post(format!(
            "{}/v1/transfers/{transfer_id}/approve",
            app.base_url
        ))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(approved.status().is_success());
    let answer: Value = approved.json().await.unwrap();
    assert_eq!(answer["approval"]["status"], "posted", "{answer}");
}

/// The export's lines, parsed.
fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn write_lines(path: &Path, lines: &[Value]) {
    let mut text = String::new();
    for line in lines {
        text.push_str(&serde_json::to_string(line).unwrap());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn record_index(lines: &[Value], sequence: u64) -> usize {
    lines
        .iter()
        .position(|line| line["type"] == "record" && line["sequence"] == sequence)
        .unwrap_or_else(|| panic!("record {sequence} in the export"))
}

async fn verify_offline(export: &Path, public_key: &Path) -> Run {
    countersign(vec![
        "audit".into(),
        "verify".into(),
        "--offline".into(),
        export.display().to_string(),
        "--public-key".into(),
        public_key.display().to_string(),
    ])
    .await
}

/// Writes `lines` to a fresh file, verifies it, and expects exit 1 naming `named`.
async fn expect_tampered(
    auditor: &Auditor,
    public_key: &Path,
    name: &str,
    lines: &[Value],
    named: &str,
) {
    let path = auditor.path(&format!("tampered-{name}.jsonl"));
    write_lines(&path, lines);
    let run = verify_offline(&path, public_key).await;
    assert_eq!(run.code, 1, "{name}: {run}");
    assert!(
        run.stdout.contains(&format!("FAILED at {named} ")),
        "{name}: expected the failure at {named}: {run}"
    );
}

async fn exports_verify_offline_and_tampering_is_named(backend: Backend) {
    let Some(auditor) = Auditor::spawn(backend).await else {
        return;
    };
    build_trail(&auditor.app).await;
    let indexed = auditor.caught_up().await;
    let public_key = auditor.fetch_public_key().await;

    // The whole trail.
    let export = auditor.path("export.jsonl");
    let mut command = args(&["audit", "export", "-o"]);
    command.push(export.display().to_string());
    command.extend(auditor.gateway_args("auditor"));
    let run = countersign(command).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("exported records 1..="), "{run}");
    let lines = read_lines(&export);
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[0]["format"], "countersign-audit-export/v1");
    let last = lines[0]["last_sequence"].as_u64().unwrap();
    assert!(last >= indexed, "{} < {indexed}", last);
    assert_eq!(
        lines.iter().filter(|line| line["type"] == "record").count() as u64,
        last
    );
    assert_eq!(lines.last().unwrap()["type"], "consistency");

    let run = verify_offline(&export, &public_key).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("OK: every record"), "{run}");
    assert!(run.stdout.contains("EUR"), "{run}");
    assert!(run.stdout.contains("GBP"), "{run}");
    assert!(run.stdout.contains("balanced"), "{run}");

    // The export is itself an audit record, with the range and the count.
    auditor.sealed().await;
    let records = all_records(&auditor.app).await;
    let audited = records
        .iter()
        .rev()
        .find(|record| record.record.action == "audit.export")
        .expect("the export is audited");
    assert_eq!(
        audited.record.result["count"], last,
        "{:?}",
        audited.record.result
    );
    assert_eq!(audited.record.result["first_sequence"], 1);

    // Tampering, each named: (name, the tampered export, what verification must name).
    let mut tampered_exports: Vec<(&str, Vec<Value>, String)> = Vec::new();
    let posting = records
        .iter()
        .find(|record| record.record.action == "ledger.post" && (record.sequence as u64) < last - 2)
        .expect("a posting in the export")
        .sequence as u64;
    let mut edited = lines.clone();
    let index = record_index(&edited, posting);
    edited[index]["masked_input"]["amount"] = json!("1.00");
    tampered_exports.push(("edited", edited, format!("record {posting}")));

    let mut deleted = lines.clone();
    deleted.remove(record_index(&deleted, posting));
    tampered_exports.push(("deleted", deleted, format!("record {posting}")));

    let mut reordered = lines.clone();
    let index = record_index(&reordered, posting);
    reordered.swap(index, index + 1);
    if reordered[index]["type"] != "record" {
        // A checkpoint followed the posting; swap with the record after it instead.
        reordered = lines.clone();
        reordered.swap(index, index + 2);
    }
    tampered_exports.push(("reordered", reordered, format!("record {posting}")));

    // A forged copy of the posting inserted after it, renumbered to take the next place.
    let mut inserted = lines.clone();
    let index = record_index(&inserted, posting);
    let mut forged = inserted[index].clone();
    forged["sequence"] = json!(posting + 1);
    forged["previous_hash"] = inserted[index]["hash"].clone();
    inserted.insert(index + 1, forged);
    tampered_exports.push(("inserted", inserted, format!("record {}", posting + 1)));

    // The covering checkpoint re-signed by another key.
    let mut swapped = lines.clone();
    let index = swapped
        .iter()
        .rposition(|line| line["type"] == "checkpoint")
        .expect("a checkpoint in the export");
    let mut checkpoint_json = swapped[index].clone();
    checkpoint_json.as_object_mut().unwrap().remove("type");
    let genuine: Checkpoint = serde_json::from_value(checkpoint_json).unwrap();
    let other = CheckpointSigner::generate().unwrap();
    let forged = other.sign(genuine.tree_size, genuine.root_hash, genuine.timestamp);
    let mut forged_json = serde_json::to_value(&forged).unwrap();
    forged_json["type"] = json!("checkpoint");
    swapped[index] = forged_json;
    tampered_exports.push((
        "swapped-checkpoint",
        swapped,
        format!("checkpoint {}", genuine.tree_size),
    ));
    for (name, tampered, expected) in &tampered_exports {
        expect_tampered(&auditor, &public_key, name, tampered, expected).await;
    }

    // The wrong public key refuses the untouched export; a missing file is exit 2.
    let other_key = auditor.path("other.pub");
    std::fs::write(&other_key, other.verifier().public_key_pem()).unwrap();
    let run = verify_offline(&export, &other_key).await;
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("FAILED at header"), "{run}");
    let run = verify_offline(&auditor.path("missing.jsonl"), &public_key).await;
    assert_eq!(run.code, 2, "{run}");
}

async fn exports_by_sequence_and_time_and_refusals(backend: Backend) {
    let Some(auditor) = Auditor::spawn(backend).await else {
        return;
    };
    build_trail(&auditor.app).await;
    let indexed = auditor.caught_up().await;
    let public_key = auditor.fetch_public_key().await;
    let records: Vec<SealedRecord> = all_records(&auditor.app).await;

    // A middle range by sequence: the frontier carries the prefix, a later checkpoint (or one
    // signed for the export) covers it through the consistency proof.
    let (first, last) = (3, indexed - 2);
    let export = auditor.path("middle.jsonl");
    let mut command = args(&["audit", "export", "--from", &first.to_string(), "--to"]);
    command.push(last.to_string());
    command.push("-o".into());
    command.push(export.display().to_string());
    command.extend(auditor.gateway_args("auditor"));
    let run = countersign(command).await;
    assert_eq!(run.code, 0, "{run}");
    let lines = read_lines(&export);
    assert_eq!(lines[0]["first_sequence"], first);
    assert_eq!(lines[0]["last_sequence"], last);
    assert_eq!(lines[1]["size"], first - 1);
    let run = verify_offline(&export, &public_key).await;
    assert_eq!(run.code, 0, "{run}");

    // By time: from the timestamp of record 5 to that of the next record stamped a
    // microsecond or more later (exclusive); records of one transaction share a timestamp.
    let micros = |sequence: usize| {
        let text =
            countersign_audit::encoding::format_timestamp(records[sequence - 1].record.timestamp);
        format!("{}Z", &text[..26])
    };
    let until = (6..=records.len())
        .find(|sequence| micros(*sequence) > micros(5))
        .expect("a later timestamp in the trail");
    let export = auditor.path("by-time.jsonl");
    let mut command = args(&["audit", "export", "--from"]);
    command.push(micros(5));
    command.push("--to".into());
    command.push(micros(until));
    command.push("-o".into());
    command.push(export.display().to_string());
    command.extend(auditor.gateway_args("auditor"));
    let run = countersign(command).await;
    assert_eq!(run.code, 0, "{run}");
    let lines = read_lines(&export);
    let (first, last) = (
        lines[0]["first_sequence"].as_u64().unwrap(),
        lines[0]["last_sequence"].as_u64().unwrap(),
    );
    assert!(
        first <= 5 && last >= 5 && last < until as u64,
        "{first}..={last} for 5..{until}"
    );
    let run = verify_offline(&export, &public_key).await;
    assert_eq!(run.code, 0, "{run}");

    // Only auditors export; the refusal is audited too.
    let mut command = args(&["audit", "export", "-o"]);
    command.push(auditor.path("refused.jsonl").display().to_string());
    command.extend(auditor.gateway_args("channel"));
    let run = countersign(command).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("role.required"), "{run}");
    assert!(!auditor.path("refused.jsonl").exists());
    let response = auditor
        .app
        .client("teller")
        .get(format!("{}/v1/audit/export", auditor.app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    auditor.sealed().await;
    let refusals = all_records(&auditor.app)
        .await
        .into_iter()
        .filter(|record| {
            record.record.action == "audit.export"
                && record.record.outcome == countersign_audit::Outcome::Deny
        })
        .count();
    assert_eq!(refusals, 2);
    // Bad ranges are 400/404 with their code, nothing streamed.
    for (query, status, code) in [
        ("?from=yesterday", 400, "query.invalid"),
        ("?from=999999999", 404, "export.empty"),
        ("?color=blue", 400, "query.invalid"),
    ] {
        let response = auditor
            .app
            .client("auditor")
            .get(format!("{}/v1/audit/export{query}", auditor.app.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{query}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["code"], code, "{query}: {answer}");
    }
}

async fn query_prints_the_matching_rows(backend: Backend) {
    let Some(auditor) = Auditor::spawn(backend).await else {
        return;
    };
    build_trail(&auditor.app).await;
    let indexed = auditor.caught_up().await;
    let records = all_records(&auditor.app).await;
    let expected: Vec<i64> = records
        .iter()
        .filter(|record| {
            record.record.kind == countersign_audit::RecordKind::Posting
                && record.sequence as u64 <= indexed
        })
        .map(|record| record.sequence)
        .collect();
    assert!(expected.len() >= 5, "{expected:?}");

    // CSV of every match (--all pages through the results).
    let mut command = args(&[
        "audit", "query", "--kind", "posting", "--format", "csv", "--all",
    ]);
    command.extend(auditor.gateway_args("auditor"));
    let run = countersign(command).await;
    assert_eq!(run.code, 0, "{run}");
    let rows: Vec<&str> = run
        .stdout
        .split("\r\n")
        .filter(|row| !row.is_empty())
        .collect();
    assert!(
        rows[0].starts_with("sequence,timestamp,kind,action,outcome,subject_cn,"),
        "{run}"
    );
    let sequences: Vec<i64> = rows[1..]
        .iter()
        .map(|row| row.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(sequences, expected, "{run}");
    for row in &rows[1..] {
        assert!(row.contains(",posting,ledger.post,posted,"), "{row}");
        // The masked input is one quoted field with doubled quotes.
        assert!(row.contains(r#""{""amount"":"#), "{row}");
    }

    // --limit caps the rows; JSON lines parse back.
    let mut command = args(&[
        "audit", "query", "--kind", "posting", "--format", "jsonl", "--limit", "3",
    ]);
    command.extend(auditor.gateway_args("auditor"));
    let run = countersign(command).await;
    assert_eq!(run.code, 0, "{run}");
    let views: Vec<Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(views.len(), 3);
    assert_eq!(views[2]["sequence"], expected[2]);

    // The table is aligned under its header.
    let mut command = args(&["audit", "query", "--outcome", "deny"]);
    command.extend(auditor.gateway_args("auditor"));
    let run = countersign(command).await;
    assert_eq!(run.code, 0, "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("SEQUENCE  TIMESTAMP"), "{run}");
    assert!(lines.len() >= 2, "{run}");
    assert_eq!(lines[0].find("KIND"), lines[1].find("decision"), "{run}");

    // Every page was an audited query.
    auditor.sealed().await;
    let queries = all_records(&auditor.app)
        .await
        .into_iter()
        .filter(|record| record.record.action == "audit.query")
        .count();
    assert!(queries >= 3, "{queries}");

    // Not an auditor: exit 2 with the gateway's code.
    let mut command = args(&["audit", "query"]);
    command.extend(auditor.gateway_args("channel"));
    let run = countersign(command).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("role.required"), "{run}");
}

async fn live_verify_checks_the_chain_and_the_checkpoints(backend: Backend) {
    let Some(auditor) = Auditor::spawn(backend).await else {
        return;
    };
    build_trail(&auditor.app).await;
    auditor.caught_up().await;
    let public_key = auditor.fetch_public_key().await;
    let store_url = auditor.store_url.clone();
    let files = auditor.files;
    let _directory = auditor.app.stop().await;
    let run = countersign(vec![
        "audit".into(),
        "verify".into(),
        "--store".into(),
        store_url.clone(),
        "--public-key".into(),
        public_key.display().to_string(),
    ])
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("audit chain OK"), "{run}");
    assert!(run.stdout.contains("checkpoints OK"), "{run}");
    // Without a key: the chain only, and a hint.
    let run = countersign(vec![
        "audit".into(),
        "verify".into(),
        "--store".into(),
        store_url,
    ])
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("--public-key"), "{run}");

    // keygen: a key pair the gateway can load, never overwritten.
    let keys = files.path().join("keys");
    let mut command = args(&["audit", "keygen", "--out"]);
    command.push(keys.display().to_string());
    let run = countersign(command.clone()).await;
    assert_eq!(run.code, 0, "{run}");
    let signer = CheckpointSigner::from_pem_file(&keys.join("audit-checkpoint.key")).unwrap();
    assert!(run.stdout.contains(signer.key_id()), "{run}");
    let run = countersign(command).await;
    assert_eq!(run.code, 2, "{run}");
}

/// More records than one page of the export's reader (1,000) and hundreds of checkpoints
/// interleaved: the stream pages through both and still verifies.
async fn a_large_export_streams_page_by_page(backend: Backend) {
    let Some(auditor) = Auditor::spawn(backend).await else {
        return;
    };
    build_trail(&auditor.app).await;
    let bulk_records = 2_600;
    for batch in 0..(bulk_records / 650) {
        let records = (0..650)
            .map(|index| {
                countersign::dev::system_record(
                    "test.bulk",
                    json!({"batch": batch, "index": index}),
                    "test",
                )
            })
            .collect();
        auditor.app.state.store.append_audit(records).await.unwrap();
    }
    let indexed = auditor.caught_up().await;
    assert!(indexed > bulk_records, "{indexed}");
    let public_key = auditor.fetch_public_key().await;
    let export = auditor.path("large.jsonl");
    let mut command = args(&["audit", "export", "--from", "2", "-o"]);
    command.push(export.display().to_string());
    command.extend(auditor.gateway_args("auditor"));
    let run = countersign(command).await;
    assert_eq!(run.code, 0, "{run}");
    let lines = read_lines(&export);
    let records = lines.iter().filter(|line| line["type"] == "record").count() as u64;
    let checkpoints = lines
        .iter()
        .filter(|line| line["type"] == "checkpoint")
        .count();
    assert_eq!(records, lines[0]["last_sequence"].as_u64().unwrap() - 1);
    assert!(records >= indexed - 1, "{records} of {indexed}");
    assert!(checkpoints > 10, "{checkpoints} checkpoints interleaved");
    let run = verify_offline(&export, &public_key).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout
            .contains(&format!("records      {records} verified")),
        "{run}"
    );
}

on_both_backends!(
    exports_verify_offline_and_tampering_is_named,
    exports_by_sequence_and_time_and_refusals,
    query_prints_the_matching_rows,
    live_verify_checks_the_chain_and_the_checkpoints,
    a_large_export_streams_page_by_page,
);
