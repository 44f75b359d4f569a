//! Test harness: a fresh store per test on either back end (a SQLite file in a temp dir, or a
//! fresh PostgreSQL database), plus builders for commands and audit records.
//!
//! PostgreSQL comes from `DATABASE_URL` (a superuser URL; `tests/run` exports it). Each test
//! creates its own database (`CREATE DATABASE cs_test_...`), so tests are isolated and run in
//! parallel. Without `DATABASE_URL`, PostgreSQL variants print a line and return, except
//! under `CI=true`, where they fail: a test that needs a service must never skip in CI.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use countersign_audit::{NewRecord, Outcome, RecordKind, SealedRecord, Subject};
use countersign_ledger::{
    Account, AccountId, AccountStatus, Amount, Currency, DecisionContext, IdempotencyClaim,
    NewAccount, Reason, SeedTransfer, SqliteStore, Store, StoreLimits, StoreOptions, Transfer,
    TransferCommand, Verdict,
};
use serde_json::json;
use sqlx::{ConnectOptions, Connection};
use time::OffsetDateTime;
use uuid::Uuid;

pub const FUNDING_EUR: &str = "SYSTEM-FUNDING-EUR";

/// How long a test waits for the sealer before failing.
pub const SEAL_WAIT: Duration = Duration::from_secs(20);

/// Which back end a test body runs against.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// `admin_url`: a superuser URL that may CREATE DATABASE.
    Postgres {
        admin_url: String,
    },
}

impl Backend {
    /// The PostgreSQL back end, or `None` (after saying so) when `DATABASE_URL` is unset
    /// outside CI. Panics when it is unset under `CI=true`.
    pub fn postgres() -> Option<Backend> {
        postgres_admin_url().map(|admin_url| Backend::Postgres { admin_url })
    }
}

pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|value| value == "true") {
                panic!(
                    "DATABASE_URL is not set but CI=true: the PostgreSQL tests must run in CI \
                     (tests/run provisions PostgreSQL and exports DATABASE_URL)"
                );
            }
            eprintln!(
                "DATABASE_URL is not set: skipping the PostgreSQL variant of this test \
                 (set it to a superuser URL, e.g. postgres://postgres@127.0.0.1:55432/postgres)"
            );
            None
        }
    }
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |index| authority_start + index);
    format!("{}/{database}{query}", &base[..path_start])
}

/// Creates an empty database with a unique name and returns its URL.
pub async fn fresh_database(admin_url: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "cs_test_{}_{}_{nanos}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::postgres::PgConnectOptions::from_str(admin_url)
        .expect("DATABASE_URL parses")
        .connect()
        .await
        .expect("connect to DATABASE_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    admin.close().await.expect("close admin connection");
    with_database(admin_url, &name)
}

/// A superuser connection to the test database, for tampering and role checks.
pub async fn admin_connection(url: &str) -> sqlx::PgConnection {
    sqlx::postgres::PgConnectOptions::from_str(url)
        .expect("url parses")
        .connect()
        .await
        .expect("connect as admin")
}

pub struct TestLedger {
    pub store: Arc<Store>,
    pub backend: Backend,
    /// The SQLite file path or the PostgreSQL database URL: what `Store::open` was given.
    pub url: String,
    // Dropped last: removes the SQLite directory.
    pub directory: Option<tempfile::TempDir>,
}

impl TestLedger {
    /// Opens a second store on the same database (a reopen, or a second replica).
    pub async fn open_again(&self, limits: StoreLimits) -> Store {
        Store::open(&self.url, limits).await.expect("reopen store")
    }

    pub fn sqlite(&self) -> &SqliteStore {
        match &*self.store {
            Store::Sqlite(store) => store,
            other => panic!("expected a SQLite store, got {other:?}"),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }
}

pub async fn open_ledger(backend: &Backend, limits: StoreLimits) -> TestLedger {
    open_ledger_with(backend, limits, StoreOptions::default()).await
}

pub async fn open_ledger_with(
    backend: &Backend,
    limits: StoreLimits,
    options: StoreOptions,
) -> TestLedger {
    match backend {
        Backend::Sqlite => {
            let directory = tempfile::tempdir().expect("create temp dir");
            let path = directory.path().join("ledger.sqlite");
            let url = path.to_str().expect("utf-8 path").to_owned();
            let store = Store::open_with(&url, limits, options)
                .await
                .expect("open store");
            TestLedger {
                store: Arc::new(store),
                backend: backend.clone(),
                url,
                directory: Some(directory),
            }
        }
        Backend::Postgres { admin_url } => {
            let url = fresh_database(admin_url).await;
            let store = Store::open_with(&url, limits, options)
                .await
                .expect("open store");
            TestLedger {
                store: Arc::new(store),
                backend: backend.clone(),
                url,
                directory: None,
            }
        }
    }
}

/// Declares `mod <test>` with a `sqlite` and a `postgres` test that each run the async test
/// body `<test>(backend: Backend)` against one back end.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread")]
                async fn sqlite() {
                    super::$name(super::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread")]
                async fn postgres() {
                    if let Some(backend) = super::Backend::postgres() {
                        super::$name(backend).await
                    }
                }
            }
        )*
    };
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
        sealed_input: None,
    }
}

pub fn allow(_: &DecisionContext) -> Verdict {
    Verdict {
        allow: true,
        reasons: Vec::new(),
        approval: None,
        decision_record: decision_record("transfer.create", Outcome::Allow),
    }
}

pub fn deny(_: &DecisionContext) -> Verdict {
    Verdict {
        allow: false,
        reasons: vec![Reason::new("limits.daily_exceeded", "daily limit exceeded")],
        approval: None,
        decision_record: decision_record("transfer.create", Outcome::Deny),
    }
}

pub async fn create_account(store: &Store, account: &str, overdraft_allowed: bool) -> Account {
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
pub async fn fund(store: &Store, account: &str, amount: &str) -> Transfer {
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
    let key = format!(
        "key-{}-{}",
        std::process::id(),
        KEYS.fetch_add(1, Ordering::Relaxed)
    );
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
        initiator_common_name: Some("teller-1".to_owned()),
        idempotency: IdempotencyClaim {
            scope: "client-ab".to_owned(),
            key,
            request_hash,
        },
        decide: Box::new(decide),
    }
}

pub async fn balance(store: &Store, account: &str) -> i64 {
    store
        .account(&id(account))
        .await
        .expect("read account")
        .expect("account exists")
        .balance_minor
}

/// Waits until everything committed so far is sealed (PostgreSQL seals asynchronously).
pub async fn settle(store: &Store) {
    assert!(
        store.wait_sealed(SEAL_WAIT).await.expect("wait for seals"),
        "audit records were not sealed within {SEAL_WAIT:?}"
    );
}

/// Records in the (sealed) chain, after everything committed so far was sealed.
pub async fn audit_count(store: &Store) -> i64 {
    settle(store).await;
    store.audit_count().await.expect("count audit records")
}

/// Sealed records after `sequence`, after everything committed so far was sealed.
pub async fn read_audit(store: &Store, sequence: i64, limit: i64) -> Vec<SealedRecord> {
    settle(store).await;
    store
        .read_sealed_after(sequence, limit)
        .await
        .expect("read audit")
}

pub async fn assert_invariants(store: &Store) {
    let report = store.check_invariants().await.expect("check invariants");
    assert!(report.is_ok(), "invariants broken: {report:#?}");
    settle(store).await;
    let verify = store.verify_audit().await.expect("verify audit chain");
    assert!(verify.is_intact(), "audit chain broken: {verify:?}");
    let count = store.audit_count().await.expect("count");
    assert_eq!(
        verify.records_checked,
        u64::try_from(count).expect("non-negative"),
        "every sealed record is in one gapless chain"
    );
}
