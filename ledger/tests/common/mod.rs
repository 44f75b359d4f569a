//! Test harness: a fresh SQLite file per test, plus builders for commands and audit records.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use countersign_audit::{NewRecord, Outcome, RecordKind, Subject};
use countersign_ledger::{
    Account, AccountId, AccountStatus, Amount, Currency, DecisionContext, IdempotencyClaim,
    NewAccount, Reason, SeedTransfer, SqliteStore, StoreLimits, Transfer, TransferCommand, Verdict,
};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

pub const FUNDING_EUR: &str = "SYSTEM-FUNDING-EUR";

pub struct TestLedger {
    pub store: Arc<SqliteStore>,
    pub path: std::path::PathBuf,
    // Dropped last: removes the database directory.
    pub directory: tempfile::TempDir,
}

pub async fn open_ledger(limits: StoreLimits) -> TestLedger {
    let directory = tempfile::tempdir().expect("create temp dir");
    let path = directory.path().join("ledger.sqlite");
    let store = SqliteStore::open(path.to_str().expect("utf-8 path"), limits)
        .await
        .expect("open store");
    TestLedger {
        store: Arc::new(store),
        path,
        directory,
    }
}

pub fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR is known")
}

pub fn id(text: &str) -> AccountId {
    AccountId::parse(text).expect("valid account id")
}

pub fn eur_amount(text: &str) -> Amount {
    Amount::parse(text, eur()).expect("valid amount")
}

pub fn subject() -> Subject {
    Subject {
        fingerprint_sha256: "ab".repeat(32),
        common_name: Some("teller-1".to_owned()),
        roles: vec!["teller".to_owned()],
    }
}

pub fn decision_record(action: &str, outcome: Outcome) -> NewRecord {
    NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Decision,
        decision_id: Uuid::now_v7(),
        timestamp: OffsetDateTime::now_utc(),
        subject: subject(),
        source_address: "127.0.0.1:50000".to_owned(),
        action: action.to_owned(),
        masked_input: json!({}),
        result: json!({ "allow": outcome == Outcome::Allow }),
        bundle_revision: "test-rev-1".to_owned(),
        outcome,
        redaction: Default::default(),
    }
}

pub fn allow(_: &DecisionContext) -> Verdict {
    Verdict {
        allow: true,
        reasons: Vec::new(),
        decision_record: decision_record("transfer.create", Outcome::Allow),
    }
}

pub fn deny(_: &DecisionContext) -> Verdict {
    Verdict {
        allow: false,
        reasons: vec![Reason::new("limits.daily_exceeded", "daily limit exceeded")],
        decision_record: decision_record("transfer.create", Outcome::Deny),
    }
}

pub async fn create_account(
    store: &SqliteStore,
    account: &str,
    overdraft_allowed: bool,
) -> Account {
    store
        .create_account(
            NewAccount {
                id: id(account),
                currency: eur(),
                overdraft_allowed,
                status: AccountStatus::Active,
            },
            decision_record("account.create", Outcome::Allow),
        )
        .await
        .expect("create account")
}

/// Creates the EUR funding account (overdraft allowed) if needed and seeds `account`.
pub async fn fund(store: &SqliteStore, account: &str, amount: &str) -> Transfer {
    if store
        .account(&id(FUNDING_EUR))
        .await
        .expect("read")
        .is_none()
    {
        create_account(store, FUNDING_EUR, true).await;
    }
    store
        .seed_transfer(SeedTransfer {
            transfer_id: Uuid::now_v7(),
            debit_account: id(FUNDING_EUR),
            credit_account: id(account),
            amount: eur_amount(amount),
            remittance_info: Some("test funding".to_owned()),
        })
        .await
        .expect("seed transfer")
}

static KEYS: AtomicUsize = AtomicUsize::new(0);

/// A transfer command with a fresh idempotency key; the request hash is derived from the key
/// unless the test overrides it.
pub fn transfer_command(
    debit: &str,
    credit: &str,
    amount: Amount,
    decide: impl FnOnce(&DecisionContext) -> Verdict + Send + 'static,
) -> TransferCommand {
    let key = format!("key-{}", KEYS.fetch_add(1, Ordering::Relaxed));
    let mut request_hash = [0u8; 32];
    request_hash[..key.len().min(32)].copy_from_slice(&key.as_bytes()[..key.len().min(32)]);
    TransferCommand {
        transfer_id: Uuid::now_v7(),
        debit_account: id(debit),
        credit_account: id(credit),
        amount,
        end_to_end_id: Some("E2E-1".to_owned()),
        purpose: Some("SALA".to_owned()),
        remittance_info: None,
        initiator_fingerprint: "ab".repeat(32),
        idempotency: IdempotencyClaim {
            scope: "client-ab".to_owned(),
            key,
            request_hash,
        },
        decide: Box::new(decide),
    }
}

pub async fn balance(store: &SqliteStore, account: &str) -> i64 {
    store
        .account(&id(account))
        .await
        .expect("read account")
        .expect("account exists")
        .balance_minor
}

pub async fn audit_count(store: &SqliteStore) -> i64 {
    countersign_audit::sqlite::count(store.pool())
        .await
        .expect("count audit records")
}

pub async fn assert_invariants(store: &SqliteStore) {
    let report = store.check_invariants().await.expect("check invariants");
    assert!(report.is_ok(), "invariants broken: {report:#?}");
    let verify = countersign_audit::sqlite::verify(store.pool())
        .await
        .expect("verify audit chain");
    assert!(verify.is_intact(), "audit chain broken: {verify:?}");
}
