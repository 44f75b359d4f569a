//! Encryption at rest, at the store level, on every back end: a record's sealed input is
//! written to `audit_inputs` with the record (by `append_audit` and by the transfer writer),
//! the raw rows hold nothing readable, the keyring opens them, the table is append-only, and
//! a sealed input that cannot be stored takes its record down with it.

#[macro_use]
mod common;

use std::path::Path;

use common::*;
use countersign_audit::{
    KeyFile, Keyring, Outcome, SealedInput,
    inputs::{self, InputLookup},
};
use countersign_ledger::{Store, StoreLimits, TransferOutcome, Verdict};
use serde_json::{Value, json};
use sqlx::{Connection, Row};
use uuid::Uuid;

const FULL_DEBIT: &str = "DE89370400440532013000";
const FULL_CREDIT: &str = "FR1420041010050500013M02606";
const REMITTANCE: &str = "Rent March flat 3b Hauptstrasse 12";

on_both_backends!(
    sealed_inputs_are_stored_unreadable_and_open_with_the_key,
    audit_inputs_are_append_only,
    a_sealed_input_that_cannot_be_stored_fails_its_record,
);

fn keyring() -> Keyring {
    Keyring::from_key_file(KeyFile::generate("kek-test-1").unwrap(), Path::new("test")).unwrap()
}

fn unmasked_input() -> Value {
    json!({
        "action": "transfer.create",
        "transfer": {
            "debit_account": FULL_DEBIT,
            "credit_account": FULL_CREDIT,
            "amount": "12.00",
            "amount_minor": 1200,
            "remittance_info": REMITTANCE,
        },
    })
}

fn sealed_record(keyring: &Keyring, action: &str) -> countersign_audit::NewRecord {
    let mut record = decision_record(action, Outcome::Allow);
    record.masked_input = json!({"transfer": {"debit_account": "******************3000"}});
    record.sealed_input = Some(
        keyring
            .seal(
                record.record_id,
                &unmasked_input(),
                &[FULL_DEBIT, FULL_CREDIT],
            )
            .unwrap(),
    );
    record
}

/// One raw `audit_inputs` row, read with plain SQL: every column as bytes, and the row as text.
struct RawRow {
    record_id: String,
    columns: Vec<Vec<u8>>,
    ciphertext: Vec<u8>,
    text: String,
}

async fn raw_rows(ledger: &TestLedger) -> Vec<RawRow> {
    if ledger.is_postgres() {
        let mut connection = admin_connection(&ledger.url).await;
        let rows = sqlx::query(
            "SELECT record_id::text AS record_id, kek_id, wrapped_dek, nonce, ciphertext, \
             account_tokens, row_to_json(i)::text AS row_text FROM audit_inputs i",
        )
        .fetch_all(&mut connection)
        .await
        .unwrap();
        rows.iter()
            .map(|row| {
                let kek_id: String = row.get("kek_id");
                let tokens: String = row.get("account_tokens");
                RawRow {
                    record_id: row.get("record_id"),
                    columns: vec![
                        kek_id.into_bytes(),
                        row.get("wrapped_dek"),
                        row.get("nonce"),
                        row.get("ciphertext"),
                        tokens.into_bytes(),
                    ],
                    ciphertext: row.get("ciphertext"),
                    text: row.get("row_text"),
                }
            })
            .collect()
    } else {
        let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", ledger.url))
            .await
            .unwrap();
        // `quote()` renders a row's every column as SQL text (blobs as X'..' hex).
        let rows = sqlx::query(
            "SELECT record_id, kek_id, wrapped_dek, nonce, ciphertext, account_tokens, \
             quote(record_id) || quote(kek_id) || quote(wrapped_dek) || quote(nonce) || \
             quote(ciphertext) || quote(account_tokens) AS row_text FROM audit_inputs",
        )
        .fetch_all(&mut connection)
        .await
        .unwrap();
        rows.iter()
            .map(|row| {
                let kek_id: String = row.get("kek_id");
                let tokens: String = row.get("account_tokens");
                RawRow {
                    record_id: row.get("record_id"),
                    columns: vec![
                        kek_id.into_bytes(),
                        row.get("wrapped_dek"),
                        row.get("nonce"),
                        row.get("ciphertext"),
                        tokens.into_bytes(),
                    ],
                    ciphertext: row.get("ciphertext"),
                    text: row.get("row_text"),
                }
            })
            .collect()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

async fn lookup(ledger: &TestLedger, record_id: Uuid) -> InputLookup {
    match &*ledger.store {
        Store::Sqlite(store) => {
            let mut connection = store.pool().acquire().await.unwrap();
            inputs::lookup_sqlite(&mut connection, record_id)
                .await
                .unwrap()
        }
        Store::Postgres(store) => {
            let mut connection = store.pool().acquire().await.unwrap();
            inputs::lookup_postgres(&mut connection, record_id)
                .await
                .unwrap()
        }
    }
}

async fn sealed_inputs_are_stored_unreadable_and_open_with_the_key(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    let keyring = keyring();

    // Through `append_audit` (records of no ledger write: proxy, Data API, reveals) ...
    let appended = sealed_record(&keyring, "policy.data");
    let plain = decision_record("account.read", Outcome::Allow);
    store
        .append_audit(vec![appended.clone(), plain.clone()])
        .await
        .unwrap();

    // ... and through the transfer writer, in the posting's transaction.
    create_account(store, FULL_DEBIT, false).await;
    create_account(store, FULL_CREDIT, false).await;
    fund(store, FULL_DEBIT, "100.00").await;
    let transfer_record = sealed_record(&keyring, "transfer.create");
    let transfer_record_id = transfer_record.record_id;
    let outcome = store
        .submit_transfer(transfer_command(
            FULL_DEBIT,
            FULL_CREDIT,
            eur_amount("12.00"),
            move |_| Verdict {
                allow: true,
                reasons: Vec::new(),
                approval: None,
                decision_record: transfer_record,
            },
        ))
        .await
        .unwrap();
    assert!(matches!(outcome, TransferOutcome::Posted { .. }));
    settle(store).await;

    let rows = raw_rows(&ledger).await;
    let mut ids: Vec<&str> = rows.iter().map(|row| row.record_id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![
        appended.record_id.to_string(),
        transfer_record_id.to_string(),
    ];
    expected.sort_unstable();
    assert_eq!(
        ids, expected,
        "one row per sealed record, none for the others"
    );
    for row in &rows {
        for secret in [FULL_DEBIT, FULL_CREDIT, REMITTANCE, "Hauptstrasse"] {
            assert!(
                !contains(&row.ciphertext, secret.as_bytes()),
                "{secret} readable in the ciphertext"
            );
            for column in &row.columns {
                assert!(!contains(column, secret.as_bytes()), "{secret} in a column");
            }
            assert!(
                !row.text.contains(secret),
                "{secret} in the row {}",
                row.text
            );
            // Nor in hex, as a careless export of the bytes would show them.
            assert!(
                !row.text.to_ascii_lowercase().contains(
                    &secret
                        .bytes()
                        .map(|byte| format!("{byte:02x}"))
                        .collect::<String>()
                ),
                "{secret} in the row as hex"
            );
        }
        assert!(row.text.contains("kek-test-1"), "the key id is recorded");
    }

    // The trail itself holds only the masked input.
    let records = read_audit(store, 0, 100).await;
    for record in &records {
        let text = record.record.masked_input.to_string();
        assert!(!text.contains(FULL_DEBIT) && !text.contains(REMITTANCE));
        assert!(
            record.record.sealed_input.is_none(),
            "records read back carry no input"
        );
    }

    // With the key, each opens to exactly what was sealed.
    for record_id in [appended.record_id, transfer_record_id] {
        let InputLookup::Sealed(sealed) = lookup(&ledger, record_id).await else {
            panic!("record {record_id} has a sealed input");
        };
        assert_eq!(sealed.kek_id, "kek-test-1");
        assert_eq!(
            sealed.account_tokens,
            vec![
                keyring.account_token(FULL_DEBIT),
                keyring.account_token(FULL_CREDIT)
            ]
        );
        assert_eq!(keyring.open(record_id, &sealed).unwrap(), unmasked_input());
        // Another keyring (other key material under the same KEK id) does not open it.
        assert!(self::keyring().open(record_id, &sealed).is_err());
    }
    assert_eq!(
        lookup(&ledger, plain.record_id).await,
        InputLookup::NotSealed
    );
    assert_eq!(
        lookup(&ledger, Uuid::now_v7()).await,
        InputLookup::RecordNotFound
    );
    assert_invariants(store).await;
}

async fn audit_inputs_are_append_only(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let keyring = keyring();
    let record = sealed_record(&keyring, "policy.data");
    ledger.store.append_audit(vec![record]).await.unwrap();
    if ledger.is_postgres() {
        let mut connection = admin_connection(&ledger.url).await;
        for statement in [
            "UPDATE audit_inputs SET kek_id = 'other'",
            "DELETE FROM audit_inputs",
            "TRUNCATE audit_inputs",
        ] {
            let error = sqlx::query(statement)
                .execute(&mut connection)
                .await
                .expect_err(statement);
            assert!(error.to_string().contains("append-only"), "{error}");
        }
        // The application role may only read and insert.
        let privileges: Vec<(String, bool)> = sqlx::query_as(
            "SELECT privilege, has_table_privilege('countersign_app', 'audit_inputs', privilege) \
             FROM UNNEST(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS privilege",
        )
        .fetch_all(&mut connection)
        .await
        .unwrap();
        for (privilege, granted) in privileges {
            assert_eq!(
                granted,
                matches!(privilege.as_str(), "SELECT" | "INSERT"),
                "countersign_app {privilege} on audit_inputs"
            );
        }
    } else {
        let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", ledger.url))
            .await
            .unwrap();
        for statement in [
            "UPDATE audit_inputs SET kek_id = 'other'",
            "DELETE FROM audit_inputs",
        ] {
            let error = sqlx::query(statement)
                .execute(&mut connection)
                .await
                .expect_err(statement);
            assert!(error.to_string().contains("append-only"), "{error}");
        }
    }
}

async fn a_sealed_input_that_cannot_be_stored_fails_its_record(backend: Backend) {
    let ledger = open_ledger(&backend, StoreLimits::default()).await;
    let store = &ledger.store;
    let before = audit_count(store).await;
    let keyring = keyring();
    let mut broken = sealed_record(&keyring, "policy.data");
    let sealed: &mut SealedInput = broken.sealed_input.as_mut().unwrap();
    sealed.nonce.push(0); // 13 bytes: refused by the table's CHECK.
    let neighbour = decision_record("account.read", Outcome::Allow);
    assert!(store.append_audit(vec![neighbour, broken]).await.is_err());
    assert_eq!(
        audit_count(store).await,
        before,
        "neither the record nor its neighbour in the same append was written"
    );
    assert!(raw_rows(&ledger).await.is_empty());
}
