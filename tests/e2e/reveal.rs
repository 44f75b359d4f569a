//! Encryption at rest and reveal (issue 6, item 5) end to end, over real mutual TLS, on SQLite
//! and on PostgreSQL: the unmasked policy input of a transfer, an approval step, a proxy route
//! and a Data API query is stored only encrypted (the raw row, read with plain SQL, holds no
//! account number and no remittance text); the `revealer` role — and only it — gets the full
//! input back, exactly what the policy saw; every reveal, allowed or refused, is an audit
//! record; after a key rotation (restart with a keyring whose active key is new and which
//! still holds the old one) old records still reveal and new ones use the new key; a keyring
//! without the old key refuses old records with a clear error naming the key.
//!
//! The PostgreSQL variant gets a fresh database on the server of `DATABASE_URL`; without it
//! the test prints a note and returns, and under `CI=true` it fails.

use std::{path::Path, time::Duration};

use countersign::config::{Config, EncryptionConfig, RouteConfig, StoreConfig};
use countersign_audit::{KeyFile, SealedRecord};
use serde_json::{Value, json};
use sqlx::{Connection, Row};
use tempfile::TempDir;

use crate::{
    services,
    support::{ALICE, BOB, Backend, TestApp, all_records, on_both_backends, transfer},
};

const OLD_KEK: &str = "kek-2026-05";
const NEW_KEK: &str = "kek-2026-11";
const REMITTANCE: &str = "Invoice 4711 rent flat 3b Hauptstrasse 12";
/// Bound on the PostgreSQL sealer catching up before records are read.
const SEALED_WAIT_S: u64 = 30;

/// One store that several gateways (restarts) run on, and the key files they use.
struct Setup {
    backend: Backend,
    /// `sqlite://…` or the PostgreSQL URL: the same store across restarts.
    store_url: String,
    directory: TempDir,
}

impl Setup {
    /// `None` (outside CI only) when PostgreSQL is not provisioned.
    async fn new(backend: Backend) -> Option<Setup> {
        let directory = TempDir::new().unwrap();
        let store_url = match backend {
            Backend::Sqlite => format!(
                "sqlite://{}",
                directory.path().join("countersign.db").display()
            ),
            Backend::Postgres => {
                let admin_url = services::shared_database_url()?;
                services::fresh_database(&admin_url).await
            }
        };
        Some(Setup {
            backend,
            store_url,
            directory,
        })
    }

    fn key_path(&self, name: &str) -> std::path::PathBuf {
        self.directory.path().join(name)
    }

    fn write_key_file(&self, name: &str, key_file: &KeyFile) -> std::path::PathBuf {
        let path = self.key_path(name);
        std::fs::write(&path, key_file.to_json()).unwrap();
        path
    }

    /// A gateway on this store with `key_file` (or no encryption) and the test route.
    async fn spawn(&self, key_file: Option<&Path>) -> TestApp {
        let store_url = self.store_url.clone();
        let key_file = key_file.map(Path::to_path_buf);
        let app = TestApp::spawn_with(move |config: &mut Config| {
            config.store = StoreConfig::new(store_url);
            config.audit.encryption = key_file.map(|key_file| EncryptionConfig { key_file });
            // A route the policy refuses (absent from `proxy_routes`): decided and audited,
            // never forwarded, so no upstream is needed.
            config.routes.push(RouteConfig {
                name: "unlisted".into(),
                path_prefix: "/unlisted".into(),
                upstream: "http://127.0.0.1:9".into(),
                decision: "data.countersign.proxy.decision".into(),
                connect_timeout_ms: 1_000,
                response_headers_timeout_ms: 5_000,
                request_body_bytes_max: 1024,
                response_body_bytes_max: 1024,
                requests_in_flight_max: 8,
                pool_max_idle_per_host: 1,
                pool_idle_timeout_ms: 1_000,
            });
        })
        .await;
        assert_eq!(app.state.store.backend(), self.backend.name());
        app
    }
}

/// Every record, once everything committed so far is sealed (PostgreSQL seals shortly after).
async fn records(app: &TestApp) -> Vec<SealedRecord> {
    assert!(
        app.state
            .store
            .wait_sealed(Duration::from_secs(SEALED_WAIT_S))
            .await
            .unwrap(),
        "records not sealed within {SEALED_WAIT_S} s"
    );
    all_records(app).await
}

/// The decision record of `action` with `decision_id`.
async fn decision_record(app: &TestApp, action: &str, decision_id: &str) -> SealedRecord {
    records(app)
        .await
        .into_iter()
        .find(|sealed| {
            sealed.record.action == action && sealed.record.decision_id.to_string() == decision_id
        })
        .unwrap_or_else(|| panic!("no {action} record for decision {decision_id}"))
}

/// The newest record of `action`.
async fn last_record(app: &TestApp, action: &str) -> SealedRecord {
    records(app)
        .await
        .into_iter()
        .rev()
        .find(|sealed| sealed.record.action == action)
        .unwrap_or_else(|| panic!("no {action} record"))
}

async fn reveal(app: &TestApp, role: &str, record_id: &str) -> (u16, Value, Option<String>) {
    let response = app
        .client(role)
        .get(format!(
            "{}/v1/audit/records/{record_id}/input",
            app.base_url
        ))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let cache_control = response
        .headers()
        .get("cache-control")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), cache_control)
}

/// Reveals as the revealer and asserts the 200; returns the body.
async fn revealed(app: &TestApp, record_id: &str) -> Value {
    let (status, body, cache_control) = reveal(app, "revealer", record_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["record_id"], record_id, "{body}");
    assert_eq!(cache_control.as_deref(), Some("no-store"));
    body
}

/// One raw `audit_inputs` row, read with plain SQL: the ciphertext, every column as bytes,
/// the row as text, and the stored key id and tokens.
struct RawRow {
    kek_id: String,
    ciphertext: Vec<u8>,
    columns: Vec<Vec<u8>>,
    text: String,
    account_tokens: String,
    /// The record's own masked input column, for comparison.
    masked_input: String,
}

async fn raw_row(setup: &Setup, record_id: &str) -> RawRow {
    let row_of = |row: &dyn Fn(&str) -> Vec<u8>, text: String, masked_input: String| {
        let kek_id = String::from_utf8(row("kek_id")).unwrap();
        let account_tokens = String::from_utf8(row("account_tokens")).unwrap();
        RawRow {
            columns: vec![
                kek_id.clone().into_bytes(),
                row("wrapped_dek"),
                row("nonce"),
                row("ciphertext"),
                account_tokens.clone().into_bytes(),
            ],
            ciphertext: row("ciphertext"),
            kek_id,
            text,
            account_tokens,
            masked_input,
        }
    };
    match setup.backend {
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(&setup.store_url)
                .await
                .unwrap();
            // `quote()` renders every column as SQL text (blobs as X'..' hex).
            let row = sqlx::query(
                "SELECT CAST(i.kek_id AS BLOB) AS kek_id, i.wrapped_dek, i.nonce, i.ciphertext, \
                 CAST(i.account_tokens AS BLOB) AS account_tokens, \
                 quote(i.record_id) || quote(i.kek_id) || quote(i.wrapped_dek) || \
                 quote(i.nonce) || quote(i.ciphertext) || quote(i.account_tokens) AS row_text, \
                 r.masked_input \
                 FROM audit_inputs i JOIN audit_records r ON r.record_id = i.record_id \
                 WHERE i.record_id = ?1",
            )
            .bind(record_id)
            .fetch_one(&mut connection)
            .await
            .unwrap();
            row_of(
                &|column| row.get::<Vec<u8>, _>(column),
                row.get("row_text"),
                row.get("masked_input"),
            )
        }
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&setup.store_url).await.unwrap();
            let row = sqlx::query(
                "SELECT convert_to(i.kek_id, 'UTF8') AS kek_id, i.wrapped_dek, i.nonce, \
                 i.ciphertext, convert_to(i.account_tokens, 'UTF8') AS account_tokens, \
                 row_to_json(i)::text AS row_text, r.masked_input \
                 FROM audit_inputs i JOIN audit_records r ON r.record_id = i.record_id \
                 WHERE i.record_id = $1::uuid",
            )
            .bind(record_id)
            .fetch_one(&mut connection)
            .await
            .unwrap();
            row_of(
                &|column| row.get::<Vec<u8>, _>(column),
                row.get("row_text"),
                row.get("masked_input"),
            )
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Nothing of `secrets` is readable in the stored `audit_inputs` row, as bytes, as text or as
/// hex. (The record's own masked input is checked separately where the gateway masks it:
/// the Data API and proxy routes keep their input as the bundle's mask leaves it.)
fn assert_unreadable(row: &RawRow, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !contains(&row.ciphertext, secret.as_bytes()),
            "{secret} in the ciphertext"
        );
        for column in &row.columns {
            assert!(!contains(column, secret.as_bytes()), "{secret} in a column");
        }
        let hex: String = secret.bytes().map(|byte| format!("{byte:02x}")).collect();
        let text = row.text.to_ascii_lowercase();
        assert!(
            !text.contains(&secret.to_ascii_lowercase()),
            "{secret} in {text}"
        );
        assert!(!text.contains(&hex), "{secret} as hex in the row");
    }
}

/// The record's masked input column holds none of `secrets` either.
fn assert_masked(row: &RawRow, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !row.masked_input.contains(secret),
            "{secret} in the masked input {}",
            row.masked_input
        );
    }
}

/// The revealer's reveal of `record_id` is refused with `status` and `code`, and the refusal
/// is audited (outcome deny, the code as the reason).
async fn assert_revealer_refused(app: &TestApp, record_id: &str, status: u16, code: &str) {
    let (answered_status, body, _) = reveal(app, "revealer", record_id).await;
    assert_eq!(
        (answered_status, body["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert_reveal_audited(app, "revealer", record_id, false, code, "deny").await;
}

/// Asserts the audit record of the last reveal: who, which record, allowed or why not.
async fn assert_reveal_audited(
    app: &TestApp,
    role: &str,
    record_id: &str,
    allowed: bool,
    reason: &str,
    outcome: &str,
) {
    let record = last_record(app, "audit.reveal").await.record;
    assert_eq!(
        record.subject.common_name.as_deref(),
        Some(format!("{role}-client").as_str())
    );
    assert_eq!(record.subject.roles, vec![role.to_owned()]);
    assert_eq!(record.masked_input, json!({"record_id": record_id}));
    assert_eq!(record.result["allowed"], allowed, "{}", record.result);
    assert_eq!(record.result["reason"], reason, "{}", record.result);
    assert_eq!(record.outcome.as_str(), outcome);
    assert_eq!(record.kind.as_str(), "decision");
    // The reveal's own record keeps nothing of the input.
    let text = record.result.to_string();
    assert!(
        !text.contains(ALICE) && !text.contains(REMITTANCE),
        "{text}"
    );
}

async fn post_transfer(app: &TestApp, key: &str, amount: &str) -> (u16, Value) {
    let mut body = transfer(ALICE, BOB, amount);
    body["remittance_info"] = json!(REMITTANCE);
    body["end_to_end_id"] = json!("E2E-REVEAL-1");
    body["purpose"] = json!("RENT");
    app.post_transfer(key, &body).await
}

async fn sealed_inputs_reveal_to_the_revealer_only_and_survive_rotation(backend: Backend) {
    let Some(setup) = Setup::new(backend).await else {
        return;
    };
    let mut key_file = KeyFile::generate(OLD_KEK).unwrap();
    let first_keys = setup.write_key_file("keyring-1.json", &key_file);
    let app = setup.spawn(Some(&first_keys)).await;
    app.open_account(ALICE, "EUR", "3000000.00").await;
    app.open_account(BOB, "EUR", "0").await;

    // A transfer with full account numbers and remittance text.
    let (status, body) = post_transfer(&app, "reveal-1", "125.00").await;
    assert_eq!(status, 201, "{body}");
    let decision_id = body["decision_id"].as_str().unwrap().to_owned();
    let record = decision_record(&app, "transfer.create", &decision_id).await;
    let record_id = record.record.record_id.to_string();

    // The raw row: unreadable; the key id is recorded.
    let row = raw_row(&setup, &record_id).await;
    assert_eq!(row.kek_id, OLD_KEK);
    assert_unreadable(&row, &[ALICE, BOB, REMITTANCE, "Hauptstrasse"]);
    assert_masked(&row, &[ALICE, BOB, REMITTANCE, "Hauptstrasse"]);
    let old_tokens = row.account_tokens.clone();

    // The revealer sees exactly what the policy saw: masked the gateway's way, it is the
    // record's masked input (the bundle has no mask rule), and it holds the full values.
    let body = revealed(&app, &record_id).await;
    assert_eq!(body["kek_id"], OLD_KEK);
    let input = &body["input"];
    assert_eq!(input["action"], "transfer.create");
    assert_eq!(input["transfer"]["debit_account"], ALICE);
    assert_eq!(input["transfer"]["credit_account"], BOB);
    assert_eq!(input["transfer"]["remittance_info"], REMITTANCE);
    assert_eq!(input["transfer"]["amount"], "125.00");
    assert_eq!(input["transfer"]["amount_minor"], 12500);
    assert_eq!(input["accounts"]["debit"]["id"], ALICE);
    assert_eq!(input["subject"]["common_name"], "channel-client");
    assert_eq!(
        countersign::http::transfers::mask_input(input.clone()),
        record.record.masked_input
    );
    assert_reveal_audited(&app, "revealer", &record_id, true, "revealed", "allow").await;

    // Anyone else: 403, and the refusal is audited too.
    for role in ["auditor", "channel", "admin"] {
        let before = records(&app).await.len();
        let (status, body, _) = reveal(&app, role, &record_id).await;
        assert_eq!(status, 403, "{role}: {body}");
        assert_eq!(body["code"], "role.required", "{body}");
        assert!(body.get("input").is_none(), "{body}");
        assert_eq!(
            records(&app).await.len(),
            before + 1,
            "{role}'s refusal audited"
        );
        assert_reveal_audited(&app, role, &record_id, false, "role.required", "deny").await;
    }
    // No such record; a record without a sealed input (the posting); not a UUID.
    let missing = uuid::Uuid::now_v7().to_string();
    assert_revealer_refused(&app, &missing, 404, "audit_record.not_found").await;
    let posting = decision_record(&app, "transfer.create", &decision_id).await;
    let posting_id = records(&app)
        .await
        .into_iter()
        .find(|sealed| {
            sealed.record.kind.as_str() == "posting"
                && sealed.record.decision_id == posting.record.decision_id
        })
        .expect("the posting record")
        .record
        .record_id
        .to_string();
    assert_revealer_refused(&app, &posting_id, 404, "audit_input.not_found").await;
    assert_revealer_refused(&app, "not-a-uuid", 400, "record_id.invalid").await;

    // An approval step: held (above 1,000,000.00), approved; its decision is sealed too.
    let (status, body) = post_transfer(&app, "reveal-held-1", "2000000.00").await;
    assert_eq!(status, 202, "{body}");
    let transfer_id = body["transfer"]["id"].as_str().unwrap().to_owned();
    let response = app
        .client("approver")
        .post(format!(
            "{}/v1/transfers/{transfer_id}/approve",
            app.base_url
        ))
        .json(&json!({"comment": "checked"}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let approval_decision = body["decision_id"].as_str().unwrap().to_owned();
    let approval = decision_record(&app, "transfer.approve", &approval_decision).await;
    let approval_id = approval.record.record_id.to_string();
    let row = raw_row(&setup, &approval_id).await;
    assert_unreadable(&row, &[ALICE, BOB, REMITTANCE]);
    assert_masked(&row, &[ALICE, BOB, REMITTANCE]);
    let body = revealed(&app, &approval_id).await;
    assert_eq!(body["input"]["transfer"]["debit_account"], ALICE);
    assert_eq!(body["input"]["transfer"]["remittance_info"], REMITTANCE);
    assert_eq!(body["input"]["comment"], "checked");

    // The Data API: the caller's input, whatever it holds.
    let response = app
        .client("policy_client")
        .post(format!(
            "{}/v1/data/countersign/transfer/decision",
            app.base_url
        ))
        .json(&json!({"input": {"action": "transfer.create", "transfer": {"debit_account": ALICE, "remittance_info": REMITTANCE}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    let data = decision_record(&app, "policy.data", body["decision_id"].as_str().unwrap()).await;
    let data_id = data.record.record_id.to_string();
    assert_unreadable(&raw_row(&setup, &data_id).await, &[ALICE, REMITTANCE]);
    let body = revealed(&app, &data_id).await;
    assert_eq!(body["input"]["transfer"]["debit_account"], ALICE);
    assert_eq!(body["input"]["transfer"]["remittance_info"], REMITTANCE);

    // A proxy route: the full path and query, but never the caller's credentials.
    let response = app
        .client("channel")
        .get(format!(
            "{}/unlisted/statements?account={ALICE}",
            app.base_url
        ))
        .header("authorization", "Bearer channel-secret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let proxy = last_record(&app, "proxy.unlisted").await;
    let proxy_id = proxy.record.record_id.to_string();
    let row = raw_row(&setup, &proxy_id).await;
    assert_unreadable(&row, &[ALICE, "channel-secret-token"]);
    assert_eq!(
        row.account_tokens, "[]",
        "a proxy input is about no transfer's accounts"
    );
    let body = revealed(&app, &proxy_id).await;
    let http = &body["input"]["attributes"]["request"]["http"];
    assert!(http["path"].as_str().unwrap().contains(ALICE), "{http}");
    assert_eq!(http["headers"]["authorization"], "[redacted]");
    assert!(!body.to_string().contains("channel-secret-token"));
    let app_directory = app.stop().await;

    // Rotation: a new active key, the old one kept. Old records still reveal; new records
    // use the new key; account tokens do not change.
    key_file.rotate(NEW_KEK).unwrap();
    let second_keys = setup.write_key_file("keyring-2.json", &key_file);
    let app = setup.spawn(Some(&second_keys)).await;
    let body = revealed(&app, &record_id).await;
    assert_eq!(body["kek_id"], OLD_KEK);
    assert_eq!(body["input"]["transfer"]["debit_account"], ALICE);
    let (status, body) = post_transfer(&app, "reveal-2", "7.00").await;
    assert_eq!(status, 201, "{body}");
    let new_decision = body["decision_id"].as_str().unwrap().to_owned();
    let new_record = decision_record(&app, "transfer.create", &new_decision).await;
    let new_record_id = new_record.record.record_id.to_string();
    let new_row = raw_row(&setup, &new_record_id).await;
    assert_eq!(new_row.kek_id, NEW_KEK);
    assert_eq!(
        new_row.account_tokens, old_tokens,
        "tokens survive rotation"
    );
    assert_eq!(
        raw_row(&setup, &record_id).await.kek_id,
        OLD_KEK,
        "old rows not re-written"
    );
    let body = revealed(&app, &new_record_id).await;
    assert_eq!(body["kek_id"], NEW_KEK);
    assert_eq!(body["input"]["transfer"]["amount"], "7.00");
    drop(app.stop().await);

    // A keyring without the old key: old records are refused with a clear error (and the
    // refusal is audited); new ones still reveal.
    assert!(key_file.remove(OLD_KEK));
    let third_keys = setup.write_key_file("keyring-3.json", &key_file);
    let app = setup.spawn(Some(&third_keys)).await;
    let (status, body, _) = reveal(&app, "revealer", &record_id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "reveal.key_unavailable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(OLD_KEK),
        "the message names the missing key: {body}"
    );
    assert!(body.get("input").is_none());
    assert_reveal_audited(
        &app,
        "revealer",
        &record_id,
        false,
        "reveal.key_unavailable",
        "error",
    )
    .await;
    assert_eq!(revealed(&app, &new_record_id).await["kek_id"], NEW_KEK);
    drop(app.stop().await);

    // Without `[audit.encryption]`: nothing unmasked is stored, and reveals say so.
    let app = setup.spawn(None).await;
    let (status, body) = post_transfer(&app, "reveal-3", "1.00").await;
    assert_eq!(status, 201, "{body}");
    let plain = decision_record(
        &app,
        "transfer.create",
        body["decision_id"].as_str().unwrap(),
    )
    .await
    .record
    .record_id
    .to_string();
    assert_revealer_refused(&app, &plain, 409, "reveal.not_configured").await;
    let verify = app.state.store.verify_audit().await.unwrap();
    assert!(verify.is_intact(), "{verify:?}");
    drop(app.stop().await);
    drop(app_directory);
}

/// A key file that does not load stops the start, with an error naming the file and the
/// field, and no key material.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_key_file_stops_the_start_without_printing_keys() {
    let directory = TempDir::new().unwrap();
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC0wMTIzNDU2Nzg5YWI="; // 32 bytes, base64
    let path = directory.path().join("keyring.json");
    std::fs::write(
        &path,
        format!(r#"{{"active": "k2", "keys": {{"k1": "{secret}"}}, "index_secret": "{secret}"}}"#),
    )
    .unwrap();
    let pki_directory = TempDir::new().unwrap();
    let _pki = crate::support::TestPki::generate(pki_directory.path());
    let mut config =
        crate::support::test_config(pki_directory.path(), crate::support::bundle_path());
    config.audit.encryption = Some(EncryptionConfig {
        key_file: path.clone(),
    });
    let error = match countersign::server::Gateway::build(config).await {
        Ok(_) => panic!("a keyring whose active key is missing must not start"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("keyring.json"), "{error}");
    assert!(
        error.contains("`active`") && error.contains("k2"),
        "{error}"
    );
    assert!(
        !error.contains(secret) && !error.contains(&secret[..12]),
        "{error}"
    );
}

on_both_backends!(sealed_inputs_reveal_to_the_revealer_only_and_survive_rotation);
