//! The auditors' workspace (issue 6) end to end, over real mutual TLS, on SQLite and on
//! PostgreSQL: every filter of `GET /v1/audit/records` returns exactly the matching records of
//! a varied trail (transfers allowed, denied, held and approved, by different certificates, in
//! two currencies), keyset pagination visits every match once, non-auditors get 403, every
//! call is itself an audit record, a record's inclusion proof verifies against a checkpoint
//! whose signature verifies with the key from `/v1/audit/public-key`, and a consistency proof
//! between two checkpoints verifies.
//!
//! Tamper tests on the live store: editing, deleting, reordering or inserting one record, or
//! swapping a checkpoint's root or signature, makes verification (chain + checkpoints) fail
//! and name the record or checkpoint; a capable attacker who re-seals the chain after an edit
//! is still caught by the checkpoints.
//!
//! Every test body is `async fn name(backend: Backend)`; `on_both_backends!` at the end makes
//! `audit_api::sqlite::name` and `audit_api::postgres::name` (PostgreSQL from `DATABASE_URL`,
//! a fresh database per test; a note and return without it, a failure under `CI=true`).

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use countersign::config::{CheckpointsConfig, EncryptionConfig};
use countersign_audit::{
    Keyring, SealedRecord,
    checkpoint::{Checkpoint, CheckpointSigner, CheckpointVerifier},
    index::{CheckpointBreakKind, CheckpointsReport},
    merkle,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{
    Backend, TestApp, all_records, fingerprint, on_both_backends, spawn_on_backend,
};

/// Bound on waiting for the indexer (and the sealer on PostgreSQL) to catch up, and for a
/// checkpoint to cover a record: generous for a slow CI machine, still a bound.
const CATCH_UP_WAIT_MS: u64 = 30_000;
const POLL_INTERVAL_MS: u64 = 50;

/// Accounts of the trail. The account filter is checked on the pair CORP → SUPPLIER, used by
/// nothing but their own transfers.
const CORP: &str = "DE44500105175407324931";
const SUPPLIER: &str = "DE89370400440532013000";
const SHOP: &str = "FR1420041010050500013M02606";
const UK_PAYER: &str = "GB29NWBK60161331926819";
const UK_PAYEE: &str = "GB82WEST12345698765432";

/// A gateway with a checkpoint key and an encryption keyring, and its store URL.
struct Workspace {
    app: TestApp,
    store_url: String,
    verifier: CheckpointVerifier,
    keyring: Keyring,
    /// Holds the key files for the gateway's lifetime.
    _keys: tempfile::TempDir,
}

impl Workspace {
    async fn spawn(backend: Backend) -> Option<Workspace> {
        let keys = tempfile::TempDir::new().unwrap();
        let signer = CheckpointSigner::generate().unwrap();
        let key_path = keys.path().join("checkpoint.key");
        std::fs::write(&key_path, signer.private_key_pem()).unwrap();
        let keyring_path = keys.path().join("keyring.json");
        std::fs::write(
            &keyring_path,
            countersign_audit::KeyFile::generate("test-kek-1")
                .unwrap()
                .to_json(),
        )
        .unwrap();
        let keyring = Keyring::load(&keyring_path).unwrap();
        let (app, store_url) = spawn_on_backend(backend, move |config| {
            config.audit.checkpoints = CheckpointsConfig {
                signing_key_file: Some(key_path),
                interval_seconds: 1,
                records_max: 16,
            };
            config.audit.encryption = Some(EncryptionConfig {
                key_file: keyring_path,
            });
        })
        .await?;
        Some(Workspace {
            app,
            store_url,
            verifier: signer.verifier(),
            keyring,
            _keys: keys,
        })
    }

    async fn get_as(&self, role: &str, path_and_query: &str) -> (u16, Value) {
        let response = self
            .app
            .client(role)
            .get(format!("{}{path_and_query}", self.app.base_url))
            .send()
            .await
            .expect("request reaches the gateway");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        self.get_as("auditor", path_and_query).await
    }

    /// Waits until every sealed record is indexed; returns the indexed size.
    async fn caught_up(&self) -> u64 {
        crate::support::indexed_through_head(&self.app).await
    }

    /// Waits for a checkpoint with `tree_size >= size`.
    async fn checkpoint_covering(&self, size: u64) -> Checkpoint {
        let deadline = Instant::now() + Duration::from_millis(CATCH_UP_WAIT_MS);
        loop {
            if let Some(checkpoint) = self.app.state.store.latest_checkpoint().await.unwrap()
                && checkpoint.tree_size >= size
            {
                return checkpoint;
            }
            assert!(
                Instant::now() < deadline,
                "a checkpoint covers {size} records"
            );
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }

    /// Every record matching `query` via the API, following `next_after` with `limit`.
    async fn walk(&self, query: &str, limit: u32) -> Vec<Value> {
        let mut after = 0;
        let mut records = Vec::new();
        for _ in 0..10_000 {
            let (status, body) = self
                .get(&format!(
                    "/v1/audit/records?{query}&limit={limit}&after={after}"
                ))
                .await;
            assert_eq!(status, 200, "{query}: {body}");
            let page = body["records"].as_array().unwrap().clone();
            assert!(page.len() <= limit as usize, "{query}: page within limit");
            records.extend(page);
            match body["next_after"].as_i64() {
                Some(next) => {
                    assert_eq!(
                        Some(next),
                        records
                            .last()
                            .and_then(|record| record["sequence"].as_i64()),
                        "next_after is the last sequence of the page"
                    );
                    after = next;
                }
                None => return records,
            }
        }
        panic!("{query}: pagination did not end");
    }
}

/// What the trail contains, for computing the expected answer of each filter.
struct Trail {
    /// Decision ids of the transfers between CORP and SUPPLIER.
    corp_supplier_decisions: BTreeSet<Uuid>,
    /// Decision id of the transfer held for approval and then approved.
    held_decision: Uuid,
}

async fn post(workspace: &Workspace, role: &str, key: &str, body: Value) -> (u16, Value) {
    workspace.app.post_transfer_as(role, key, &body).await
}

fn body(debit: &str, credit: &str, amount: &str, currency: &str) -> Value {
    json!({"debit_account": debit, "credit_account": credit, "amount": amount, "currency": currency})
}

/// A varied trail: allowed, denied and held+approved transfers by the channel and the teller
/// certificates, in EUR and GBP.
async fn build_trail(workspace: &Workspace) -> Trail {
    let app = &workspace.app;
    app.open_account(CORP, "EUR", "30000000.00").await;
    app.open_account(SUPPLIER, "EUR", "0").await;
    app.open_account(SHOP, "EUR", "1000.00").await;
    app.open_account(UK_PAYER, "GBP", "5000.00").await;
    app.open_account(UK_PAYEE, "GBP", "0").await;
    let mut corp_supplier = BTreeSet::new();
    let decision =
        |body: &Value| -> Uuid { body["decision_id"].as_str().unwrap().parse().unwrap() };
    for (index, amount) in ["100.00", "2500.50", "99999.99"].into_iter().enumerate() {
        let (status, answer) = post(
            workspace,
            "channel",
            &format!("cs-{index}"),
            body(CORP, SUPPLIER, amount, "EUR"),
        )
        .await;
        assert_eq!(status, 201, "{answer}");
        corp_supplier.insert(decision(&answer));
    }
    // Denied: more than SHOP holds (by the teller certificate).
    let (status, answer) = post(
        workspace,
        "teller",
        "shop-1",
        body(SHOP, SUPPLIER, "5000.00", "EUR"),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = post(
        workspace,
        "teller",
        "shop-2",
        body(SHOP, CORP, "10.00", "EUR"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    // GBP by the teller.
    for (index, amount) in ["12.34", "250.00"].into_iter().enumerate() {
        let (status, answer) = post(
            workspace,
            "teller",
            &format!("uk-{index}"),
            body(UK_PAYER, UK_PAYEE, amount, "GBP"),
        )
        .await;
        assert_eq!(status, 201, "{answer}");
    }
    // Held for approval (above 1,000,000.00), then approved by the approver certificate.
    let (status, answer) = post(
        workspace,
        "channel",
        "held-1",
        body(CORP, SUPPLIER, "2000000.00", "EUR"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let held_decision = decision(&answer);
    corp_supplier.insert(held_decision);
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
    let status = approved.status().as_u16();
    let answer: Value = approved.json().await.unwrap();
    assert!((200..300).contains(&status), "{answer}");
    assert_eq!(answer["approval"]["status"], "posted", "{answer}");
    Trail {
        corp_supplier_decisions: corp_supplier,
        held_decision,
    }
}

/// The amount of a record as the index derives it, recomputed here independently: minor
/// units of EUR/GBP (2 decimals) from the transfer input or the posting's summary.
fn amount_of(record: &SealedRecord) -> Option<(String, i64)> {
    let input = &record.record.masked_input;
    if let Some(transfer) = input.get("transfer") {
        return Some((
            transfer["currency"].as_str()?.to_owned(),
            transfer["amount_minor"].as_i64()?,
        ));
    }
    for document in [&record.record.result, input] {
        if let (Some(currency), Some(amount)) =
            (document["currency"].as_str(), document["amount"].as_str())
        {
            let (units, cents) = amount.split_once('.').unwrap_or((amount, "00"));
            return Some((
                currency.to_owned(),
                units.parse::<i64>().ok()? * 100 + cents.parse::<i64>().ok()?,
            ));
        }
    }
    None
}

fn sequences(records: &[Value]) -> Vec<i64> {
    records
        .iter()
        .map(|record| record["sequence"].as_i64().unwrap())
        .collect()
}

/// Checks one filter: the answer's records up to `indexed` are exactly the expected ones, in
/// ascending order, and every record answered (also newer ones) matches.
async fn check(
    workspace: &Workspace,
    all: &[SealedRecord],
    indexed: u64,
    query: &str,
    matches: impl Fn(&SealedRecord) -> bool,
) -> usize {
    let answered = workspace.walk(query, 1_000).await;
    let answered_sequences = sequences(&answered);
    assert!(
        answered_sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "{query}: ascending, no repeats"
    );
    let expected: Vec<i64> = all
        .iter()
        .filter(|record| record.sequence as u64 <= indexed && matches(record))
        .map(|record| record.sequence)
        .collect();
    let answered_indexed: Vec<i64> = answered_sequences
        .iter()
        .copied()
        .filter(|sequence| *sequence as u64 <= indexed)
        .collect();
    assert_eq!(answered_indexed, expected, "{query}");
    assert!(!expected.is_empty(), "{query}: the trail has matches");
    expected.len()
}

async fn every_filter_returns_exactly_the_matching_records(backend: Backend) {
    let Some(workspace) = Workspace::spawn(backend).await else {
        return;
    };
    let trail = build_trail(&workspace).await;
    let indexed = workspace.caught_up().await;
    let all = all_records(&workspace.app).await;
    let channel = fingerprint(&workspace.app.pki.clients["channel"].certificate_pem);
    let teller = fingerprint(&workspace.app.pki.clients["teller"].certificate_pem);
    let revision = all
        .iter()
        .find(|record| record.record.action == "transfer.create")
        .unwrap()
        .record
        .bundle_revision
        .clone();
    let middle = &all[all.len() / 2].record.timestamp;
    let middle_text = middle
        .replace_nanosecond(middle.nanosecond() / 1_000 * 1_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let from_floor = middle
        .replace_nanosecond(middle.nanosecond() / 1_000 * 1_000)
        .unwrap();

    for kind in ["posting", "reservation", "approval"] {
        check(&workspace, &all, indexed, &format!("kind={kind}"), |r| {
            r.record.kind.as_str() == kind
        })
        .await;
    }
    for outcome in ["deny", "pending", "posted"] {
        check(
            &workspace,
            &all,
            indexed,
            &format!("outcome={outcome}"),
            |r| r.record.outcome.as_str() == outcome,
        )
        .await;
    }
    check(&workspace, &all, indexed, "subject_cn=teller-client", |r| {
        r.record.subject.common_name.as_deref() == Some("teller-client")
    })
    .await;
    check(
        &workspace,
        &all,
        indexed,
        &format!("subject_fingerprint={channel}"),
        |r| r.record.subject.fingerprint_sha256 == channel,
    )
    .await;
    check(&workspace, &all, indexed, "role=approver", |r| {
        r.record.subject.roles.iter().any(|role| role == "approver")
    })
    .await;
    check(
        &workspace,
        &all,
        indexed,
        &format!("role=teller&subject_fingerprint={teller}&kind=decision"),
        |r| {
            r.record.subject.roles.iter().any(|role| role == "teller")
                && r.record.subject.fingerprint_sha256 == teller
                && r.record.kind.as_str() == "decision"
        },
    )
    .await;
    check(
        &workspace,
        &all,
        indexed,
        &format!("bundle_revision={revision}&outcome=allow"),
        |r| r.record.bundle_revision == revision && r.record.outcome.as_str() == "allow",
    )
    .await;
    check(
        &workspace,
        &all,
        indexed,
        &format!("decision_id={}", trail.held_decision),
        |r| r.record.decision_id == trail.held_decision,
    )
    .await;
    check(&workspace, &all, indexed, "currency=GBP", |r| {
        amount_of(r).is_some_and(|(currency, _)| currency == "GBP")
    })
    .await;
    check(
        &workspace,
        &all,
        indexed,
        "currency=EUR&amount_min=2500.50&amount_max=100000",
        |r| {
            amount_of(r).is_some_and(|(currency, minor)| {
                currency == "EUR" && (250_050..=10_000_000).contains(&minor)
            })
        },
    )
    .await;
    check(
        &workspace,
        &all,
        indexed,
        "currency=EUR&amount_min=1000000.01",
        |r| amount_of(r).is_some_and(|(currency, minor)| currency == "EUR" && minor > 100_000_000),
    )
    .await;
    let from_query = middle_text.replace('+', "%2B").replace(':', "%3A");
    check(
        &workspace,
        &all,
        indexed,
        &format!("from={from_query}&kind=posting"),
        |r| r.record.timestamp >= from_floor && r.record.kind.as_str() == "posting",
    )
    .await;
    check(
        &workspace,
        &all,
        indexed,
        &format!("to={from_query}"),
        |r| r.record.timestamp < from_floor,
    )
    .await;
    // The account filter: the pair's transfers (decisions, postings, the reservation and the
    // approval story of the held one) and nothing else.
    let (status, answer) = workspace
        .get(&format!("/v1/audit/records?account={SUPPLIER}&limit=1000"))
        .await;
    assert_eq!(status, 200, "{answer}");
    let found: Vec<Value> = answer["records"].as_array().unwrap().clone();
    let found_decisions: BTreeSet<Uuid> = found
        .iter()
        .filter(|record| record["kind"] == "decision" && record["action"] == "transfer.create")
        .map(|record| record["decision_id"].as_str().unwrap().parse().unwrap())
        .collect();
    // The denied SHOP → SUPPLIER transfer names SUPPLIER too.
    assert!(
        trail.corp_supplier_decisions.is_subset(&found_decisions),
        "{found_decisions:?}"
    );
    assert_eq!(
        found_decisions.len(),
        trail.corp_supplier_decisions.len() + 1
    );
    for record in &found {
        let decision_id: Uuid = record["decision_id"].as_str().unwrap().parse().unwrap();
        let kind = record["kind"].as_str().unwrap();
        assert!(
            kind != "decision" || record["action"] != "audit.query",
            "audit calls carry no account tokens"
        );
        if kind == "posting" || kind == "reservation" {
            assert!(
                trail.corp_supplier_decisions.contains(&decision_id)
                    || found_decisions.contains(&decision_id)
                    || found
                        .iter()
                        .any(|other| other["decision_id"] == record["decision_id"]
                            && other["kind"] == "decision"),
                "{record}"
            );
        }
    }
    let postings = found
        .iter()
        .filter(|record| record["kind"] == "posting")
        .count();
    assert_eq!(
        postings, 4,
        "three straight-through postings and the approved one"
    );
    // An account that exists but was never touched finds nothing; without a keyring the
    // filter is refused (see invalid_parameters_are_refused_naming_them).
    let (status, answer) = workspace
        .get(&format!(
            "/v1/audit/records?account={UK_PAYEE}&kind=posting"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["records"].as_array().unwrap().len(), 2);
    assert_eq!(workspace.keyring.account_token(SUPPLIER).len(), 32);
    workspace.app.stop().await;
}

async fn pagination_visits_every_record_once(backend: Backend) {
    let Some(workspace) = Workspace::spawn(backend).await else {
        return;
    };
    build_trail(&workspace).await;
    let indexed = workspace.caught_up().await;
    let all = all_records(&workspace.app).await;
    for (query, matches) in [
        (
            "kind=posting",
            &(|r: &SealedRecord| r.record.kind.as_str() == "posting")
                as &dyn Fn(&SealedRecord) -> bool,
        ),
        ("role=channel", &|r: &SealedRecord| {
            r.record.subject.roles.iter().any(|role| role == "channel")
        }),
        ("currency=EUR", &|r: &SealedRecord| {
            amount_of(r).is_some_and(|(currency, _)| currency == "EUR")
        }),
    ] {
        let expected: Vec<i64> = all
            .iter()
            .filter(|record| record.sequence as u64 <= indexed && matches(record))
            .map(|record| record.sequence)
            .collect();
        for limit in [1, 2, 3, 7] {
            let walked = sequences(&workspace.walk(query, limit).await);
            assert!(
                walked.windows(2).all(|pair| pair[0] < pair[1]),
                "{query} by {limit}: no repeats"
            );
            let walked_indexed: Vec<i64> = walked
                .into_iter()
                .filter(|s| *s as u64 <= indexed)
                .collect();
            assert_eq!(walked_indexed, expected, "{query} by {limit}: no gaps");
        }
    }
    // The unfiltered walk sees the whole chain in order.
    let walked = sequences(
        &workspace
            .walk("kind=decision&outcome=allow&role=system", 5)
            .await,
    );
    let expected: Vec<i64> = all
        .iter()
        .filter(|record| {
            record.sequence as u64 <= indexed
                && record.record.kind.as_str() == "decision"
                && record.record.outcome.as_str() == "allow"
                && record
                    .record
                    .subject
                    .roles
                    .iter()
                    .any(|role| role == "system")
        })
        .map(|record| record.sequence)
        .collect();
    assert_eq!(
        walked
            .into_iter()
            .filter(|s| *s as u64 <= indexed)
            .collect::<Vec<_>>(),
        expected
    );
    workspace.app.stop().await;
}

async fn only_auditors_get_in_and_every_call_is_audited(backend: Backend) {
    let Some(workspace) = Workspace::spawn(backend).await else {
        return;
    };
    build_trail(&workspace).await;
    workspace.caught_up().await;
    let some_record = all_records(&workspace.app).await[3].record.record_id;
    let paths = [
        "/v1/audit/records?kind=posting".to_owned(),
        format!("/v1/audit/records/{some_record}"),
        "/v1/audit/checkpoints".to_owned(),
        "/v1/audit/checkpoints/latest".to_owned(),
        "/v1/audit/proofs/consistency?from=1&to=2".to_owned(),
        "/v1/audit/stats?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z".to_owned(),
        "/v1/audit/public-key".to_owned(),
    ];
    for role in [
        "channel",
        "teller",
        "approver",
        "admin",
        "policy_client",
        "revealer",
    ] {
        for path in &paths {
            let (status, body) = workspace.get_as(role, path).await;
            assert_eq!(status, 403, "{role} {path}: {body}");
            assert_eq!(body["code"], "role.required", "{role} {path}");
        }
    }
    // The refusals are in the trail: one per call, outcome deny, subject = the caller.
    workspace.caught_up().await;
    let all = all_records(&workspace.app).await;
    let refused: Vec<&SealedRecord> = all
        .iter()
        .filter(|record| {
            record.record.action.starts_with("audit.") && record.record.outcome.as_str() == "deny"
        })
        .collect();
    assert_eq!(refused.len(), 6 * paths.len());
    assert!(
        refused
            .iter()
            .all(|record| record.record.result["reason"] == "role.required"
                && record.record.result["allowed"] == false)
    );
    let channel = fingerprint(&workspace.app.pki.clients["channel"].certificate_pem);
    assert_eq!(
        refused
            .iter()
            .filter(|record| record.record.subject.fingerprint_sha256 == channel)
            .count(),
        paths.len()
    );

    // An auditor's query: who, what filter (the account as its token, never the number),
    // how many records.
    let auditor = fingerprint(&workspace.app.pki.clients["auditor"].certificate_pem);
    let (status, answer) = workspace
        .get(&format!(
            "/v1/audit/records?account={SUPPLIER}&kind=posting&limit=2"
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    let returned = sequences(answer["records"].as_array().unwrap());
    assert_eq!(returned.len(), 2);
    workspace.caught_up().await;
    let all = all_records(&workspace.app).await;
    let query_record = all
        .iter()
        .rev()
        .find(|record| {
            record.record.action == "audit.query"
                && record.record.subject.fingerprint_sha256 == auditor
        })
        .expect("the query is audited");
    let token = workspace.keyring.account_token(SUPPLIER);
    assert_eq!(
        query_record.record.masked_input,
        json!({"path": "/v1/audit/records", "query": {"account": {"token": token}, "kind": "posting", "limit": "2"}})
    );
    assert!(
        !query_record
            .record
            .masked_input
            .to_string()
            .contains(SUPPLIER)
    );
    assert_eq!(query_record.record.result["count"], 2);
    assert_eq!(query_record.record.result["sequences"], json!(returned));
    assert_eq!(query_record.record.outcome.as_str(), "allow");
    assert_eq!(
        query_record.record.subject.roles,
        vec!["auditor".to_owned()]
    );
    // Reads, proofs and stats are audited with their own actions.
    for (path, action) in [
        (format!("/v1/audit/records/{some_record}"), "audit.read"),
        ("/v1/audit/checkpoints?limit=1".to_owned(), "audit.proof"),
        (
            "/v1/audit/stats?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z&bucket=hour"
                .to_owned(),
            "audit.stats",
        ),
    ] {
        let (status, body) = workspace.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        workspace.caught_up().await;
        let last = all_records(&workspace.app).await.pop().unwrap();
        assert_eq!(last.record.action, action, "{path}");
        assert_eq!(last.record.subject.fingerprint_sha256, auditor);
    }
    workspace.app.stop().await;
}

async fn invalid_parameters_are_refused_naming_them(backend: Backend) {
    let Some(workspace) = Workspace::spawn(backend).await else {
        return;
    };
    for (query, parameter) in [
        ("kind=transfer", "kind"),
        ("outcome=maybe", "outcome"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=-1", "after"),
        ("from=yesterday", "from"),
        ("from=2026-01-01T00:00:00.0000001Z", "from"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("amount_min=5", "amount_min"),
        ("currency=EUR&amount_min=5.001", "amount_min"),
        ("currency=EUR&amount_min=5&amount_max=4", "amount_max"),
        ("currency=eur", "currency"),
        ("decision_id=42", "decision_id"),
        ("account=not%20an%20account", "account"),
        ("kind=posting&kind=decision", "kind"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = workspace.get(&format!("/v1/audit/records?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], "query.invalid", "{query}");
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(parameter),
            "{query}: {body}"
        );
    }
    for (path, parameter) in [
        ("/v1/audit/proofs/consistency?from=1", "to"),
        ("/v1/audit/stats?from=2026-01-01T00:00:00Z", "to"),
        (
            "/v1/audit/stats?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&bucket=week",
            "bucket",
        ),
        ("/v1/audit/checkpoints?limit=abc", "limit"),
    ] {
        let (status, body) = workspace.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["parameter"], parameter, "{path}");
    }
    let (status, body) = workspace
        .get(&format!("/v1/audit/records/{}", Uuid::now_v7()))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("audit_record.not_found"))
    );
    workspace.app.stop().await;

    // Without a keyring the account filter is refused, saying what is missing.
    let app = TestApp::spawn().await;
    let response = app
        .client("auditor")
        .get(format!(
            "{}/v1/audit/records?account={SUPPLIER}",
            app.base_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["parameter"], "account");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("[audit.encryption]"),
        "{body}"
    );
    // …and without a signing key the proof endpoints say so.
    let response = app
        .client("auditor")
        .get(format!("{}/v1/audit/public-key", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "checkpoints.not_configured");
    app.stop().await;
}

async fn proofs_verify_against_signed_checkpoints(backend: Backend) {
    let Some(workspace) = Workspace::spawn(backend).await else {
        return;
    };
    build_trail(&workspace).await;
    let indexed = workspace.caught_up().await;
    let first = workspace.checkpoint_covering(indexed).await;

    // The public key from the API is the one that signs.
    let response = workspace
        .app
        .client("auditor")
        .get(format!("{}/v1/audit/public-key", workspace.app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let pem = response.text().await.unwrap();
    let verifier = CheckpointVerifier::from_pem(&pem).unwrap();
    assert_eq!(verifier.key_id(), workspace.verifier.key_id());

    // Every record of the trail proves its inclusion under the latest checkpoint.
    let all = all_records(&workspace.app).await;
    for sealed in all
        .iter()
        .filter(|sealed| sealed.sequence as u64 <= first.tree_size)
        .step_by(3)
    {
        let (status, body) = workspace
            .get(&format!("/v1/audit/records/{}", sealed.record.record_id))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["proof_status"], "proved", "{body}");
        assert_eq!(body["record"]["hash"], hex::encode(sealed.hash));
        let proof = &body["proof"];
        let checkpoint: Checkpoint = serde_json::from_value(proof["checkpoint"].clone()).unwrap();
        checkpoint
            .verify(&verifier)
            .expect("checkpoint signature verifies");
        let leaf = merkle::leaf_hash(&sealed.hash);
        assert_eq!(proof["leaf_hash"], hex::encode(leaf));
        assert_eq!(proof["leaf_index"], sealed.sequence - 1);
        assert_eq!(proof["tree_size"], checkpoint.tree_size);
        let path: Vec<merkle::Hash> = proof["inclusion"]
            .as_array()
            .unwrap()
            .iter()
            .map(|hash| {
                hex::decode(hash.as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap()
            })
            .collect();
        assert!(merkle::verify_inclusion(
            &leaf,
            sealed.sequence as u64 - 1,
            checkpoint.tree_size,
            &path,
            &checkpoint.root_hash
        ));
        // A proof for another record's hash does not verify.
        let other = merkle::leaf_hash(&all[0].hash);
        assert!(
            sealed.sequence == 1
                || !merkle::verify_inclusion(
                    &other,
                    sealed.sequence as u64 - 1,
                    checkpoint.tree_size,
                    &path,
                    &checkpoint.root_hash
                )
        );
    }

    // More records, a later checkpoint, and the consistency proof between the two.
    let (status, answer) = post(
        &workspace,
        "channel",
        "later-1",
        body(CORP, SUPPLIER, "1.00", "EUR"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let indexed = workspace.caught_up().await;
    let second = workspace
        .checkpoint_covering(indexed.max(first.tree_size + 1))
        .await;
    let (status, listed) = workspace
        .get(&format!(
            "/v1/audit/checkpoints?after={}",
            first.tree_size - 1
        ))
        .await;
    assert_eq!(status, 200, "{listed}");
    let listed: Vec<Checkpoint> = serde_json::from_value(listed["checkpoints"].clone()).unwrap();
    assert_eq!(listed.first(), Some(&first));
    assert!(listed.contains(&second));
    for checkpoint in &listed {
        checkpoint.verify(&verifier).unwrap();
    }
    let (status, body) = workspace
        .get(&format!(
            "/v1/audit/proofs/consistency?from={}&to={}",
            first.tree_size, second.tree_size
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let proof: Vec<merkle::Hash> = body["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hash| {
            hex::decode(hash.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    assert!(merkle::verify_consistency(
        first.tree_size,
        second.tree_size,
        &first.root_hash,
        &second.root_hash,
        &proof
    ));
    assert!(!merkle::verify_consistency(
        first.tree_size,
        second.tree_size,
        &second.root_hash,
        &first.root_hash,
        &proof
    ));
    let (status, latest) = workspace.get("/v1/audit/checkpoints/latest").await;
    assert_eq!(status, 200);
    assert!(latest["tree_size"].as_u64().unwrap() >= second.tree_size);

    // Stats: the trail's decisions by outcome, in whole hours.
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let from = (now - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let to = (now + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, stats) = workspace
        .get(&format!(
            "/v1/audit/stats?from={}&to={}&bucket=hour",
            from.replace(':', "%3A"),
            to.replace(':', "%3A")
        ))
        .await;
    assert_eq!(status, 200, "{stats}");
    let buckets = stats["buckets"].as_array().unwrap();
    assert!((2..=3).contains(&buckets.len()), "{stats}");
    let total = |outcome: &str| -> u64 {
        buckets
            .iter()
            .map(|bucket| bucket[outcome].as_u64().unwrap())
            .sum()
    };
    assert!(
        total("deny") >= 1 && total("pending") >= 1 && total("allow") >= 5,
        "{stats}"
    );

    // The live verification passes on the untouched store.
    let report = workspace
        .app
        .state
        .store
        .verify_checkpoints(&verifier)
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert!(report.checkpoints_checked >= 2);
    workspace.app.stop().await;
}

// ------------------------------------------------------------------------------------------
// Tamper tests on the live store
// ------------------------------------------------------------------------------------------

/// Runs raw SQL on the store with the append-only guards out of the way, as an attacker with
/// database access would: PostgreSQL in `session_replication_role = replica` (triggers off),
/// SQLite with the triggers dropped.
async fn tamper(store_url: &str, sql: &str) {
    use sqlx::Connection as _;
    if let Some(path) = store_url.strip_prefix("sqlite://") {
        let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
            .await
            .unwrap();
        let triggers: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                .fetch_all(&mut connection)
                .await
                .unwrap();
        for trigger in triggers {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TRIGGER {trigger}")))
                .execute(&mut connection)
                .await
                .unwrap();
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut connection)
            .await
            .expect("tamper");
        connection.close().await.unwrap();
    } else {
        let mut connection = sqlx::PgConnection::connect(store_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET session_replication_role = replica; {sql}"
        )))
        .execute(&mut connection)
        .await
        .expect("tamper");
        connection.close().await.unwrap();
    }
}

/// The chain and checkpoint reports of the store at `url`, read as `audit verify --store`
/// does (a read-only connection; the gateway is stopped).
async fn verify(
    url: &str,
    verifier: &CheckpointVerifier,
) -> (countersign_audit::VerifyReport, CheckpointsReport) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let pool = countersign_ledger::SqliteStore::open_read_only(path)
            .await
            .unwrap();
        let chain = countersign_audit::sqlite::verify(&pool).await.unwrap();
        let checkpoints = countersign_audit::index::sqlite::verify_checkpoints(&pool, verifier)
            .await
            .unwrap();
        pool.close().await;
        (chain, checkpoints)
    } else {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .unwrap();
        let chain = countersign_audit::postgres::verify(&pool).await.unwrap();
        let checkpoints = countersign_audit::index::postgres::verify_checkpoints(&pool, verifier)
            .await
            .unwrap();
        pool.close().await;
        (chain, checkpoints)
    }
}

/// SQL that rewrites the record at `sequence` (its text) on either back end.
fn record_where(url: &str, sequence: i64) -> String {
    if url.starts_with("sqlite://") {
        format!("sequence = {sequence}")
    } else {
        format!("record_id = (SELECT record_id FROM audit_seals WHERE sequence = {sequence})")
    }
}

/// A stopped gateway's store with a trail, every record indexed and checkpointed, copied
/// (SQLite) or used in place (PostgreSQL, one fresh database per scenario).
struct Tampered {
    url: String,
    verifier: CheckpointVerifier,
    checkpoints: Vec<Checkpoint>,
    _directory: Option<tempfile::TempDir>,
}

async fn checkpointed_store(backend: Backend) -> Option<Tampered> {
    let workspace = Workspace::spawn(backend).await?;
    build_trail(&workspace).await;
    let indexed = workspace.caught_up().await;
    workspace.checkpoint_covering(indexed).await;
    let verifier = workspace.verifier.clone();
    let url = workspace.store_url.clone();
    let directory = workspace.app.stop().await;
    let checkpoints = {
        let (chain, report) = verify(&url, &verifier).await;
        assert!(chain.is_intact(), "{chain:?}");
        assert!(report.is_intact(), "{report:?}");
        assert!(report.checkpoints_checked >= 2, "{report:?}");
        list_checkpoints(&url).await
    };
    Some(Tampered {
        url,
        verifier,
        checkpoints,
        _directory: Some(directory),
    })
}

async fn list_checkpoints(url: &str) -> Vec<Checkpoint> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let pool = countersign_ledger::SqliteStore::open_read_only(path)
            .await
            .unwrap();
        let listed = countersign_audit::index::sqlite::checkpoints(&pool, 0, 1_000)
            .await
            .unwrap();
        pool.close().await;
        listed
    } else {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .unwrap();
        let listed = countersign_audit::index::postgres::checkpoints(&pool, 0, 1_000)
            .await
            .unwrap();
        pool.close().await;
        listed
    }
}

fn seals_table(url: &str) -> &'static str {
    if url.starts_with("sqlite://") {
        "audit_records"
    } else {
        "audit_seals"
    }
}

async fn tampering_with_records_is_named(backend: Backend) {
    // Edit one record: the chain names it.
    let Some(store) = checkpointed_store(backend).await else {
        return;
    };
    tamper(
        &store.url,
        &format!(
            "UPDATE audit_records SET source_address = '10.6.6.6:1' WHERE {}",
            record_where(&store.url, 7)
        ),
    )
    .await;
    let (chain, _) = verify(&store.url, &store.verifier).await;
    let broken = chain.first_broken.expect("edit found");
    assert_eq!(
        (broken.sequence, broken.kind),
        (7, countersign_audit::BreakKind::HashMismatch)
    );

    // Delete one record (its seal): the chain names the gap; the checkpoints, whose tree no
    // longer matches a chain that skips it, fail too.
    let Some(store) = checkpointed_store(backend).await else {
        return;
    };
    tamper(
        &store.url,
        &format!("DELETE FROM {} WHERE sequence = 5", seals_table(&store.url)),
    )
    .await;
    let (chain, checkpoints) = verify(&store.url, &store.verifier).await;
    let broken = chain.first_broken.expect("deletion found");
    assert_eq!(
        (broken.sequence, broken.kind),
        (5, countersign_audit::BreakKind::Missing)
    );
    let broken = checkpoints.first_broken.expect("deletion breaks the tree");
    assert_eq!(broken.sequences, Some((5, 5)), "{broken:?}");

    // Reorder two records (swap their places): the chain names the first.
    let Some(store) = checkpointed_store(backend).await else {
        return;
    };
    let swap = if store.url.starts_with("sqlite://") {
        "UPDATE audit_records SET sequence = 999999 WHERE sequence = 3; \
         UPDATE audit_records SET sequence = 3 WHERE sequence = 4; \
         UPDATE audit_records SET sequence = 4 WHERE sequence = 999999;"
            .to_owned()
    } else {
        "UPDATE audit_seals SET sequence = 999999 WHERE sequence = 3; \
         UPDATE audit_seals SET sequence = 3 WHERE sequence = 4; \
         UPDATE audit_seals SET sequence = 4 WHERE sequence = 999999;"
            .to_owned()
    };
    tamper(&store.url, &swap).await;
    let (chain, checkpoints) = verify(&store.url, &store.verifier).await;
    let broken = chain.first_broken.expect("reordering found");
    assert_eq!(broken.sequence, 3, "{broken:?}");
    assert!(!checkpoints.is_intact(), "{checkpoints:?}");

    // Insert one record at the end, with a made-up seal: the chain names it.
    let Some(store) = checkpointed_store(backend).await else {
        return;
    };
    let head: i64 = {
        let (chain, _) = verify(&store.url, &store.verifier).await;
        chain.last_verified.unwrap().sequence
    };
    let insert = if store.url.starts_with("sqlite://") {
        format!(
            "INSERT INTO audit_records SELECT {next}, '{id}', kind, decision_id, timestamp, \
             subject_fingerprint, subject_common_name, subject_roles, source_address, action, \
             masked_input, result, bundle_revision, outcome, redaction, hash, hash \
             FROM audit_records WHERE sequence = {head}",
            next = head + 1,
            id = Uuid::now_v7()
        )
    } else {
        let id = Uuid::now_v7();
        format!(
            "INSERT INTO audit_records (record_id, kind, decision_id, timestamp, subject_fingerprint, \
             subject_common_name, subject_roles, source_address, action, masked_input, result, \
             bundle_revision, outcome, redaction) SELECT '{id}', kind, decision_id, timestamp, \
             subject_fingerprint, subject_common_name, subject_roles, source_address, action, \
             masked_input, result, bundle_revision, outcome, redaction FROM audit_records \
             WHERE record_id = (SELECT record_id FROM audit_seals WHERE sequence = {head}); \
             INSERT INTO audit_seals (sequence, record_id, previous_hash, hash) \
             SELECT {next}, '{id}', hash, hash FROM audit_seals WHERE sequence = {head};",
            next = head + 1
        )
    };
    tamper(&store.url, &insert).await;
    let (chain, _) = verify(&store.url, &store.verifier).await;
    let broken = chain.first_broken.expect("insertion found");
    assert_eq!(
        (broken.sequence, broken.kind),
        (head + 1, countersign_audit::BreakKind::HashMismatch)
    );
}

async fn tampering_with_checkpoints_is_named(backend: Backend) {
    // Swap a checkpoint's root for another's.
    let Some(store) = checkpointed_store(backend).await else {
        return;
    };
    let (first, second) = (&store.checkpoints[0], &store.checkpoints[1]);
    tamper(
        &store.url,
        &format!(
            "UPDATE audit_checkpoints SET root_hash = (SELECT root_hash FROM audit_checkpoints WHERE tree_size = {}) WHERE tree_size = {}",
            second.tree_size, first.tree_size
        ),
    )
    .await;
    let (chain, checkpoints) = verify(&store.url, &store.verifier).await;
    assert!(chain.is_intact(), "the chain itself is untouched");
    let broken = checkpoints.first_broken.expect("swapped root found");
    assert_eq!(
        broken.checkpoint_tree_size,
        Some(first.tree_size),
        "{broken:?}"
    );
    // Root and signature no longer match each other: the signature check names it first.
    assert_eq!(broken.kind, CheckpointBreakKind::Signature, "{broken:?}");

    // Swap a checkpoint's signature for another's.
    let Some(store) = checkpointed_store(backend).await else {
        return;
    };
    let (first, second) = (&store.checkpoints[0], &store.checkpoints[1]);
    tamper(
        &store.url,
        &format!(
            "UPDATE audit_checkpoints SET signature = (SELECT signature FROM audit_checkpoints WHERE tree_size = {}) WHERE tree_size = {}",
            first.tree_size, second.tree_size
        ),
    )
    .await;
    let (_, checkpoints) = verify(&store.url, &store.verifier).await;
    let broken = checkpoints.first_broken.expect("swapped signature found");
    assert_eq!(
        (broken.checkpoint_tree_size, broken.kind),
        (Some(second.tree_size), CheckpointBreakKind::Signature)
    );

    // A checkpoint signed by a key the auditor does not trust.
    let Some(store) = checkpointed_store(backend).await else {
        return;
    };
    let stranger = CheckpointSigner::generate().unwrap().verifier();
    let (_, checkpoints) = verify(&store.url, &stranger).await;
    let broken = checkpoints.first_broken.expect("foreign key found");
    assert_eq!(
        (broken.checkpoint_tree_size, broken.kind),
        (
            Some(store.checkpoints[0].tree_size),
            CheckpointBreakKind::Signature
        )
    );

    // A capable attacker edits a record and re-seals the chain after it: the chain verifies,
    // the signed checkpoints do not, and the verification names the records.
    let Some(store) = checkpointed_store(backend).await else {
        return;
    };
    reseal_after_edit(&store.url, 6).await;
    let (chain, checkpoints) = verify(&store.url, &store.verifier).await;
    assert!(
        chain.is_intact(),
        "the re-sealed chain verifies on its own: {chain:?}"
    );
    let broken = checkpoints.first_broken.expect("re-sealed edit found");
    let (first, last) = broken.sequences.expect("names the records");
    assert!(first <= 6 && 6 <= last, "{broken:?}");
    assert_eq!(broken.kind, CheckpointBreakKind::NodeMismatch, "{broken:?}");

    // Records removed at the tail (truncation): the checkpoints beyond the chain are named.
    let Some(store) = checkpointed_store(backend).await else {
        return;
    };
    let last = store.checkpoints.last().unwrap().tree_size;
    tamper(
        &store.url,
        &format!(
            "DELETE FROM {} WHERE sequence > {}",
            seals_table(&store.url),
            last - 2
        ),
    )
    .await;
    let (chain, checkpoints) = verify(&store.url, &store.verifier).await;
    assert!(chain.is_intact(), "a truncated chain verifies on its own");
    let broken = checkpoints.first_broken.expect("truncation found");
    assert_eq!(broken.kind, CheckpointBreakKind::BeyondChain, "{broken:?}");
    assert_eq!(broken.checkpoint_tree_size, Some(last));
}

/// Edits record `sequence` and recomputes every hash after it, as someone with write access
/// and the (public) encoding would.
async fn reseal_after_edit(url: &str, sequence: i64) {
    let records: Vec<SealedRecord> = if let Some(path) = url.strip_prefix("sqlite://") {
        let pool = countersign_ledger::SqliteStore::open_read_only(path)
            .await
            .unwrap();
        let records = countersign_audit::sqlite::read_after(&pool, 0, 1_000)
            .await
            .unwrap();
        pool.close().await;
        records
    } else {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .unwrap();
        let records = countersign_audit::postgres::read_after(&pool, 0, 1_000)
            .await
            .unwrap();
        pool.close().await;
        records
    };
    let mut previous = records[(sequence - 2) as usize].hash;
    let mut sql = format!(
        "UPDATE audit_records SET source_address = '10.6.6.6:1' WHERE {};",
        record_where(url, sequence)
    );
    for sealed in records.iter().filter(|sealed| sealed.sequence >= sequence) {
        let mut record = sealed.record.clone();
        if sealed.sequence == sequence {
            record.source_address = "10.6.6.6:1".to_owned();
        }
        let hash = countersign_audit::chain_hash(&previous, sealed.sequence, &record);
        let table = seals_table(url);
        let literal = |bytes: &[u8]| {
            if url.starts_with("sqlite://") {
                format!("X'{}'", hex::encode(bytes))
            } else {
                format!("'\\x{}'::bytea", hex::encode(bytes))
            }
        };
        sql.push_str(&format!(
            "UPDATE {table} SET previous_hash = {}, hash = {} WHERE sequence = {};",
            literal(&previous),
            literal(&hash),
            sealed.sequence
        ));
        previous = hash;
    }
    tamper(url, &sql).await;
}

on_both_backends!(
    every_filter_returns_exactly_the_matching_records,
    pagination_visits_every_record_once,
    only_auditors_get_in_and_every_call_is_audited,
    invalid_parameters_are_refused_naming_them,
    proofs_verify_against_signed_checkpoints,
    tampering_with_records_is_named,
    tampering_with_checkpoints_is_named,
);
