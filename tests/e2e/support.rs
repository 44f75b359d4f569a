//! Test harness: a throwaway PKI, a fresh embedded store and the real gateway on port 0,
//! spoken to over real mutual TLS (zero2prod's `spawn_app`, linkerd's integration builder).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use countersign::{
    app::AppState,
    config::{AuditConfig, Config, Limits, LogConfig, PolicyConfig, StoreConfig, TlsConfig},
    pki::{CertificateAuthority, ClientSpec, IssuedCertificate},
    server::Gateway,
};
use countersign_audit::{NewRecord, Outcome, RecordKind, Subject};
use countersign_ledger::{
    AccountId, AccountStatus, Amount, Currency, NewAccount, SeedTransfer, Store,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use uuid::Uuid;

use crate::services;

/// Roles with a valid client certificate in every test PKI.
pub const ROLES: &[&str] = countersign::config::KNOWN_ROLES;

pub fn bundle_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Certificates for one test: valid clients per role, plus the ones that must be refused.
pub struct TestPki {
    pub ca_pem: String,
    pub clients: HashMap<String, IssuedCertificate>,
    pub expired: IssuedCertificate,
    pub not_yet_valid: IssuedCertificate,
    pub revoked: IssuedCertificate,
    /// A client certificate from a CA the gateway does not trust.
    pub foreign: IssuedCertificate,
    /// A certificate with no role mapping (OU "visitor").
    pub roleless: IssuedCertificate,
    /// The CA the gateway trusts, kept so a test can issue more clients (`issue`).
    ca: CertificateAuthority,
}

impl TestPki {
    pub fn generate(directory: &Path) -> TestPki {
        let ca = CertificateAuthority::generate("Test CA").unwrap();
        let server = ca
            .issue_server(&["localhost"], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        std::fs::write(directory.join("ca.crt"), ca.certificate_pem()).unwrap();
        std::fs::write(directory.join("server.crt"), &server.certificate_pem).unwrap();
        std::fs::write(directory.join("server.key"), &server.private_key_pem).unwrap();
        let clients = ROLES
            .iter()
            .map(|role| {
                let issued = ca
                    .issue_client(&ClientSpec::for_role(&format!("{role}-client"), role))
                    .unwrap();
                (role.to_string(), issued)
            })
            .collect();
        let now = OffsetDateTime::now_utc();
        let mut expired_spec = ClientSpec::for_role("expired-client", "channel");
        expired_spec.not_before = now - time::Duration::days(30);
        expired_spec.not_after = now - time::Duration::days(1);
        let mut future_spec = ClientSpec::for_role("future-client", "channel");
        future_spec.not_before = now + time::Duration::days(1);
        future_spec.not_after = now + time::Duration::days(30);
        let revoked = ca
            .issue_client(&ClientSpec::for_role("revoked-client", "channel"))
            .unwrap();
        let crl = ca
            .revocation_list(std::slice::from_ref(&revoked.serial))
            .unwrap();
        std::fs::write(directory.join("ca.crl"), crl).unwrap();
        let foreign_ca = CertificateAuthority::generate("Foreign CA").unwrap();
        TestPki {
            ca_pem: ca.certificate_pem().to_owned(),
            clients,
            expired: ca.issue_client(&expired_spec).unwrap(),
            not_yet_valid: ca.issue_client(&future_spec).unwrap(),
            revoked,
            foreign: foreign_ca
                .issue_client(&ClientSpec::for_role("mobile-banking", "channel"))
                .unwrap(),
            roleless: ca
                .issue_client(&ClientSpec::for_role("visitor-client", "visitor"))
                .unwrap(),
            ca,
        }
    }

    /// Another valid client of the trusted CA: common name `common_name`, OU `role` (the
    /// default role mapping turns the OU into the role), e.g. a second approver.
    pub fn issue(&self, common_name: &str, role: &str) -> IssuedCertificate {
        self.ca
            .issue_client(&ClientSpec::for_role(common_name, role))
            .unwrap()
    }
}

pub struct TestApp {
    pub address: SocketAddr,
    pub base_url: String,
    pub state: Arc<AppState>,
    pub pki: TestPki,
    pub directory: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

/// Builds the configuration a test server runs with.
pub fn test_config(directory: &Path, bundle: PathBuf) -> Config {
    Config {
        listen_address: "127.0.0.1:0".parse().unwrap(),
        ops_listen_address: None,
        tls: TlsConfig {
            server_cert: directory.join("server.crt"),
            server_key: directory.join("server.key"),
            client_ca_bundle: directory.join("ca.crt"),
            crls: vec![directory.join("ca.crl")],
            handshake_timeout_ms: 2_000,
            min_version: "1.3".into(),
        },
        policy: PolicyConfig {
            decision_timeout_ms: 1_000,
            ..PolicyConfig::new(bundle)
        },
        store: StoreConfig::new(format!(
            "sqlite://{}",
            directory.join("countersign.db").display()
        )),
        audit: AuditConfig {
            decision_log: Some(directory.join("decision-log.jsonl")),
            ..AuditConfig::default()
        },
        kafka: None,
        // Defaults (a day to approve); maker-checker tests shorten the timeout.
        approvals: Default::default(),
        limits: Limits::default(),
        log: LogConfig::default(),
        role_mapping: countersign::config::default_role_mapping(),
        routes: Vec::new(),
        admission: None,
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        // RUST_LOG=countersign=debug shows the server's logs in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let directory = TempDir::new().unwrap();
        let pki = TestPki::generate(directory.path());
        let mut config = test_config(directory.path(), bundle_path());
        adjust(&mut config);
        let listener = TcpListener::bind(config.listen_address).await.unwrap();
        let address = listener.local_addr().unwrap();
        let gateway = Gateway::build(config).await.expect("gateway builds");
        let state = gateway.state.clone();
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            gateway
                .run(listener, None, async {
                    let _ = shutdown_signal.await;
                })
                .await
                .expect("gateway runs");
        });
        TestApp {
            address,
            base_url: format!("https://localhost:{}", address.port()),
            state,
            pki,
            directory,
            shutdown: Some(shutdown),
            handle: Some(handle),
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.directory.path().join("countersign.db")
    }

    /// An HTTPS client presenting `certificate`.
    pub fn client_with(&self, certificate: &IssuedCertificate) -> reqwest::Client {
        let identity = reqwest::Identity::from_pem(
            format!(
                "{}{}",
                certificate.certificate_pem, certificate.private_key_pem
            )
            .as_bytes(),
        )
        .unwrap();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.pki.ca_pem.as_bytes()).unwrap()])
            .identity(identity)
            .resolve("localhost", self.address)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    pub fn client(&self, role: &str) -> reqwest::Client {
        self.client_with(&self.pki.clients[role])
    }

    pub async fn post_transfer_as(&self, role: &str, key: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client(role)
            .post(format!("{}/v1/transfers", self.base_url))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("request reaches the gateway");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub async fn post_transfer(&self, key: &str, body: &Value) -> (u16, Value) {
        self.post_transfer_as("channel", key, body).await
    }

    pub async fn balance_minor(&self, account: &str) -> i64 {
        let account = AccountId::parse(account).unwrap();
        self.state
            .store
            .account(&account)
            .await
            .unwrap()
            .expect("account exists")
            .balance_minor
    }

    /// Creates `id` and funds it with `opening` from the system funding account.
    pub async fn open_account(&self, id: &str, currency: &str, opening: &str) {
        open_account_in(&self.state.store, id, currency, opening).await;
    }

    pub async fn audit_count(&self) -> i64 {
        self.state.store.audit_count().await.unwrap()
    }

    /// Stops the server (drain + flush) and waits for it.
    pub async fn stop(mut self) -> TempDir {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap();
        }
        self.directory
    }
}

/// Creates each of `ids` (EUR) and funds it with `opening`, directly in `store`.
pub async fn open_accounts_in(store: &Store, ids: impl IntoIterator<Item = String>, opening: &str) {
    for id in ids {
        open_account_in(store, &id, "EUR", opening).await;
    }
}

/// Creates `id` and funds it with `opening` from the system funding account.
pub async fn open_account_in(store: &Store, id: &str, currency: &str, opening: &str) {
    let currency = Currency::parse(currency).unwrap();
    let id = AccountId::parse(id).unwrap();
    let funding = AccountId::parse(&format!("SYSTEM-FUNDING-{}", currency.code())).unwrap();
    if store.account(&funding).await.unwrap().is_none() {
        create_account_in(store, &funding, currency, true).await;
    }
    create_account_in(store, &id, currency, false).await;
    if opening != "0" {
        store
            .seed_transfer(SeedTransfer {
                transfer_id: Uuid::now_v7(),
                debit_account: funding,
                credit_account: id.clone(),
                amount: Amount::parse(opening, currency).unwrap(),
                remittance_info: None,
            })
            .await
            .unwrap();
    }
}

async fn create_account_in(
    store: &Store,
    id: &AccountId,
    currency: Currency,
    overdraft_allowed: bool,
) {
    let record = NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Decision,
        decision_id: Uuid::now_v7(),
        timestamp: OffsetDateTime::now_utc(),
        subject: system_subject(),
        source_address: "test".into(),
        action: "account.create".into(),
        masked_input: json!({"account": countersign_audit::mask_account_number(id.as_str())}),
        result: json!({"allow": true}),
        bundle_revision: "test".into(),
        outcome: Outcome::Allow,
        redaction: Default::default(),
        sealed_input: None,
    };
    store
        .create_account(
            NewAccount {
                id: id.clone(),
                currency,
                overdraft_allowed,
                status: AccountStatus::Active,
            },
            record,
        )
        .await
        .unwrap();
}

pub fn system_subject() -> Subject {
    Subject {
        fingerprint_sha256: "system".into(),
        common_name: Some("test-seed".into()),
        roles: vec!["system".into()],
    }
}

/// A standard transfer body.
pub fn transfer(debit: &str, credit: &str, amount: &str) -> Value {
    json!({"debit_account": debit, "credit_account": credit, "amount": amount, "currency": "EUR"})
}

pub const ALICE: &str = "DE89370400440532013000";
pub const BOB: &str = "FR1420041010050500013M02606";

/// SHA-256 fingerprint (lowercase hex) of a PEM certificate, as the gateway computes it.
pub fn fingerprint(certificate_pem: &str) -> String {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    use sha2::{Digest, Sha256};
    let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes()).unwrap();
    hex::encode(Sha256::digest(der.as_ref()))
}

/// Every audit record of the store, in sequence order (paged: `read_after` caps a page).
pub async fn all_records(app: &TestApp) -> Vec<countersign_audit::SealedRecord> {
    let mut records = Vec::new();
    loop {
        let after = records
            .last()
            .map_or(0, |last: &countersign_audit::SealedRecord| last.sequence);
        let page = app
            .state
            .store
            .read_sealed_after(after, 1_000)
            .await
            .unwrap();
        if page.is_empty() {
            return records;
        }
        records.extend(page);
    }
}

/// Copies a directory tree (a bundle, for tests that change it).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `GET /readyz` as the auditor: status and body.
pub async fn readiness(app: &TestApp) -> (u16, Value) {
    let response = app
        .client("auditor")
        .get(format!("{}/readyz", app.base_url))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// An outage of the audit volume, simulated by a trigger that makes every audit insert fail
/// (as a full or read-only volume would); `end` brings the volume back.
pub struct AuditOutage {
    pool: sqlx::SqlitePool,
}

impl AuditOutage {
    pub async fn begin(app: &TestApp) -> AuditOutage {
        let pool =
            sqlx::SqlitePool::connect(&format!("sqlite://{}", app.database_path().display()))
                .await
                .unwrap();
        sqlx::query(
            "CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit_records \
             BEGIN SELECT RAISE(ABORT, 'audit volume unavailable'); END",
        )
        .execute(&pool)
        .await
        .unwrap();
        AuditOutage { pool }
    }

    pub async fn end(self) {
        sqlx::query("DROP TRIGGER audit_unwritable")
            .execute(&self.pool)
            .await
            .unwrap();
        self.pool.close().await;
    }
}

/// Waits (bounded, 30 s) until every sealed record is in the Merkle tree and the search index
/// of `app`'s store; returns the indexed size.
pub async fn indexed_through_head(app: &TestApp) -> u64 {
    const WAIT_MS: u64 = 30_000;
    let store = &app.state.store;
    let deadline = std::time::Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        assert!(
            store
                .wait_sealed(Duration::from_millis(WAIT_MS))
                .await
                .unwrap(),
            "records are sealed"
        );
        let head = store
            .audit_head()
            .await
            .unwrap()
            .map_or(0, |head| head.sequence);
        let indexed = store.indexed_size().await.unwrap();
        if indexed >= head as u64 {
            return indexed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the indexer caught up ({indexed} of {head})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The store a test body runs on; `on_both_backends!` runs each body on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The name `Store::backend` reports for this back end.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// A fresh PostgreSQL database for `Postgres`, nothing for `Sqlite` (the gateway's own
    /// file); `None` (outside CI only) when PostgreSQL is not provisioned.
    pub async fn fresh_database_url(self) -> Option<Option<String>> {
        match self {
            Backend::Sqlite => Some(None),
            Backend::Postgres => {
                let admin_url = services::shared_database_url()?;
                Some(Some(services::fresh_database(&admin_url).await))
            }
        }
    }
}

/// A gateway on a fresh store of `backend` (`adjust` as in `TestApp::spawn_with`), and that
/// store's URL for `countersign audit … --store`; `None` (outside CI only) when PostgreSQL is
/// not provisioned.
pub async fn spawn_on_backend(
    backend: Backend,
    adjust: impl FnOnce(&mut Config),
) -> Option<(TestApp, String)> {
    let database_url = backend.fresh_database_url().await?;
    let store = database_url.clone();
    let app = TestApp::spawn_with(move |config| {
        if let Some(url) = store {
            config.store = StoreConfig::new(url);
        }
        adjust(config);
    })
    .await;
    assert_eq!(app.state.store.backend(), backend.name());
    let store_url =
        database_url.unwrap_or_else(|| format!("sqlite://{}", app.database_path().display()));
    Some((app, store_url))
}

/// `<module>::sqlite::<name>` and `<module>::postgres::<name>` for each test body
/// `async fn name(backend: Backend)` of the calling module.
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    super::$test($crate::support::Backend::Sqlite).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    super::$test($crate::support::Backend::Postgres).await;
                }
            )+
        }
    };
}
pub(crate) use on_both_backends;
