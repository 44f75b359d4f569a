//! `serve --dev`: a throwaway PKI, an embedded store under `var/`, demo accounts, and the
//! curl commands that work against them. Nothing here is used in production mode.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use countersign_audit::{NewRecord, Outcome, RecordKind, Subject};
use countersign_ledger::{
    AccountId, AccountStatus, Amount, Currency, LedgerError, NewAccount, SeedTransfer, Store,
};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    config::{
        ApprovalsConfig, AuditConfig, CheckpointsConfig, Config, EncryptionConfig, Limits,
        LogConfig, PolicyConfig, StoreConfig, TlsConfig,
    },
    pki::{DevPki, PkiError},
};

pub const DEV_LISTEN_ADDRESS: &str = "127.0.0.1:8443";

/// Demo accounts: (id, currency, status, overdraft allowed, opening balance).
/// The `SYSTEM-FUNDING-*` accounts are the bank's own and fund the others, so every
/// balance has a double-entry origin and Σ balances per currency stays zero.
pub const DEMO_ACCOUNTS: &[(&str, &str, AccountStatus, bool, &str)] = &[
    (
        "SYSTEM-FUNDING-EUR",
        "EUR",
        AccountStatus::Active,
        true,
        "0",
    ),
    (
        "SYSTEM-FUNDING-GBP",
        "GBP",
        AccountStatus::Active,
        true,
        "0",
    ),
    (
        "DE89370400440532013000",
        "EUR",
        AccountStatus::Active,
        false,
        "2500000.00",
    ),
    // A corporate treasury account with enough for the maker-checker examples: a
    // 2,000,000.00 transfer (one approval) and a 20,000,000.00 one (two approvals) held at
    // the same time. Held transfers are exempt from the daily limit; their amounts are
    // reserved, so both must fit the balance together.
    (
        "DE44500105175407324931",
        "EUR",
        AccountStatus::Active,
        false,
        "30000000.00",
    ),
    (
        "FR1420041010050500013M02606",
        "EUR",
        AccountStatus::Active,
        false,
        "10000.00",
    ),
    (
        "DE75512108001245126199",
        "EUR",
        AccountStatus::Frozen,
        false,
        "500.00",
    ),
    (
        "GB29NWBK60161331926819",
        "GBP",
        AccountStatus::Active,
        false,
        "50000.00",
    ),
    (
        "GB82WEST12345698765432",
        "GBP",
        AccountStatus::Active,
        false,
        "0",
    ),
];

/// The configuration `serve --dev` runs with, rooted at `var_directory`.
pub fn dev_config(
    var_directory: &Path,
    bundle: PathBuf,
    listen_address: SocketAddr,
) -> (Config, DevPki) {
    let pki = DevPki {
        directory: var_directory.join("dev-pki"),
    };
    let config = Config {
        listen_address,
        ops_listen_address: None,
        tls: TlsConfig {
            server_cert: pki.server_certificate(),
            server_key: pki.server_key(),
            client_ca_bundle: pki.ca_certificate(),
            crls: Vec::new(),
            handshake_timeout_ms: 5_000,
            min_version: "1.3".into(),
        },
        policy: PolicyConfig {
            decision_timeout_ms: 50,
            ..PolicyConfig::new(bundle)
        },
        store: StoreConfig::new(format!(
            "sqlite://{}",
            var_directory.join("countersign.db").display()
        )),
        audit: AuditConfig {
            decision_log: Some(var_directory.join("decision-log.jsonl")),
            encryption: Some(EncryptionConfig {
                key_file: pki.directory.join(DEV_KEYRING_FILE),
            }),
            checkpoints: CheckpointsConfig {
                signing_key_file: Some(pki.directory.join(DEV_CHECKPOINT_KEY_FILE)),
                ..CheckpointsConfig::default()
            },
        },
        kafka: None,
        limits: Limits::default(),
        approvals: ApprovalsConfig::default(),
        log: LogConfig::default(),
        role_mapping: crate::config::default_role_mapping(),
        routes: Vec::new(),
        // The webhook is for a cluster's API server; `serve --dev` does not configure it.
        admission: None,
    };
    (config, pki)
}

/// The dev keyring that seals each decision's unmasked input, next to the dev PKI.
pub const DEV_KEYRING_FILE: &str = "audit-keyring.json";
/// The KEK id of a freshly generated dev keyring.
pub const DEV_KEK_ID: &str = "dev-kek-1";

/// Creates the dev PKI and the dev keyring unless they exist (a kept keyring keeps earlier
/// records revealable).
pub fn ensure_pki(pki: &DevPki) -> Result<(), PkiError> {
    DevPki::ensure(&pki.directory)?;
    ensure_keyring(&pki.directory.join(DEV_KEYRING_FILE))?;
    ensure_checkpoint_key(&pki.directory)
}

/// The dev checkpoint signing key (PKCS#8 PEM) and its public key (SPKI PEM), next to the
/// dev PKI: `audit verify --offline` takes the `.pub`.
pub const DEV_CHECKPOINT_KEY_FILE: &str = "audit-checkpoint.key";
pub const DEV_CHECKPOINT_PUBLIC_KEY_FILE: &str = "audit-checkpoint.pub";

/// Creates the dev checkpoint key pair unless the private key exists (a kept key keeps old
/// checkpoints verifiable); rewrites the public key from it either way.
fn ensure_checkpoint_key(directory: &Path) -> Result<(), PkiError> {
    let key_path = directory.join(DEV_CHECKPOINT_KEY_FILE);
    let public_path = directory.join(DEV_CHECKPOINT_PUBLIC_KEY_FILE);
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| PkiError::Write { path, source }
    };
    let signer = if key_path.exists() {
        countersign_audit::checkpoint::CheckpointSigner::from_pem_file(&key_path)
            .map_err(|error| write_error(&key_path)(std::io::Error::other(error.to_string())))?
    } else {
        let signer = countersign_audit::checkpoint::CheckpointSigner::generate()
            .map_err(|error| write_error(&key_path)(std::io::Error::other(error.to_string())))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        // Only the gateway's user may read key material.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&key_path).map_err(write_error(&key_path))?;
        std::io::Write::write_all(&mut file, signer.private_key_pem().as_bytes())
            .map_err(write_error(&key_path))?;
        signer
    };
    std::fs::write(&public_path, signer.verifier().public_key_pem())
        .map_err(write_error(&public_path))
}

fn ensure_keyring(path: &Path) -> Result<(), PkiError> {
    if path.exists() {
        return Ok(());
    }
    let write_error = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let key_file = countersign_audit::KeyFile::generate(DEV_KEK_ID)
        .map_err(|error| write_error(std::io::Error::other(error.to_string())))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    // Only the gateway's user may read key material.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(write_error)?;
    std::io::Write::write_all(&mut file, key_file.to_json().as_bytes()).map_err(write_error)
}

fn system_subject() -> Subject {
    Subject {
        fingerprint_sha256: "system".into(),
        common_name: Some("countersign-dev-seed".into()),
        roles: vec!["system".into()],
    }
}

/// An audit record for an operator action taken by the system itself (seeding, status).
pub fn system_record(
    action: &str,
    masked_input: serde_json::Value,
    bundle_revision: &str,
) -> NewRecord {
    NewRecord {
        record_id: Uuid::now_v7(),
        kind: RecordKind::Decision,
        decision_id: Uuid::now_v7(),
        timestamp: OffsetDateTime::now_utc(),
        subject: system_subject(),
        source_address: "local".into(),
        action: action.to_owned(),
        masked_input,
        result: json!({"allow": true, "reasons": []}),
        bundle_revision: bundle_revision.to_owned(),
        outcome: Outcome::Allow,
        redaction: Default::default(),
        sealed_input: None,
    }
}

/// Creates the demo accounts that do not exist yet and funds them from the system accounts.
pub async fn seed_demo_accounts(
    store: &Store,
    bundle_revision: &str,
) -> Result<usize, LedgerError> {
    let mut created = 0;
    for (id, currency, status, overdraft_allowed, opening) in DEMO_ACCOUNTS {
        let id = AccountId::parse(id).expect("demo account ids are valid");
        if store.account(&id).await?.is_some() {
            continue;
        }
        let currency = Currency::parse(currency).expect("demo currencies are valid");
        let record = NewRecord {
            record_id: Uuid::now_v7(),
            kind: RecordKind::Decision,
            decision_id: Uuid::now_v7(),
            timestamp: OffsetDateTime::now_utc(),
            subject: system_subject(),
            source_address: "local".into(),
            action: "account.create".into(),
            masked_input: json!({"action": "account.create", "account": {
                "id": countersign_audit::mask_account_number(id.as_str()),
                "currency": currency.code(), "status": status, "overdraft_allowed": overdraft_allowed}}),
            result: json!({"allow": true, "reasons": [], "rule": "dev seed"}),
            bundle_revision: bundle_revision.to_owned(),
            outcome: Outcome::Allow,
            redaction: Default::default(),
            sealed_input: None,
        };
        // Open active, fund, then apply the demo status (a frozen account still has money).
        store
            .create_account(
                NewAccount {
                    id: id.clone(),
                    currency,
                    overdraft_allowed: *overdraft_allowed,
                    status: AccountStatus::Active,
                },
                record,
            )
            .await?;
        created += 1;
        if *opening != "0" {
            let amount = Amount::parse(opening, currency).expect("demo amounts are valid");
            let funding = AccountId::parse(&format!("SYSTEM-FUNDING-{}", currency.code()))
                .expect("funding account id is valid");
            store
                .seed_transfer(SeedTransfer {
                    transfer_id: Uuid::now_v7(),
                    debit_account: funding,
                    credit_account: id.clone(),
                    amount,
                    remittance_info: Some("dev opening balance".into()),
                })
                .await?;
        }
        if *status != AccountStatus::Active {
            let record = system_record(
                "account.set_status",
                json!({"account": countersign_audit::mask_account_number(id.as_str()), "status": status}),
                bundle_revision,
            );
            store.set_account_status(&id, *status, record).await?;
        }
    }
    Ok(created)
}

/// The copy-pasteable commands printed when the dev server is ready.
pub fn curl_examples(pki: &DevPki, listen_address: SocketAddr) -> String {
    let base = format!("https://localhost:{}", listen_address.port());
    let tls = |role: &str| {
        format!(
            "--cert {} --key {} --cacert {}",
            pki.client_certificate(role).display(),
            pki.client_key(role).display(),
            pki.ca_certificate().display()
        )
    };
    let channel = tls("channel");
    format!(
        "\
# an allowed transfer (201); run it again: same Idempotency-Key, same response, posted once
curl -sS {channel} -H 'Content-Type: application/json' -H 'Idempotency-Key: quickstart-allowed-1' \\
  -d '{{\"debit_account\":\"DE89370400440532013000\",\"credit_account\":\"FR1420041010050500013M02606\",\"amount\":\"250.00\",\"currency\":\"EUR\",\"purpose\":\"SUPP\"}}' \\
  {base}/v1/transfers
# to a frozen account (403 with reasons)
curl -sS {channel} -H 'Content-Type: application/json' -H 'Idempotency-Key: quickstart-frozen-1' \\
  -d '{{\"debit_account\":\"DE89370400440532013000\",\"credit_account\":\"DE75512108001245126199\",\"amount\":\"100.00\",\"currency\":\"EUR\"}}' \\
  {base}/v1/transfers
# balances
curl -sS {channel} {base}/v1/accounts/DE89370400440532013000
# above 1,000,000.00 a transfer is held for approval (202): README.md, \"Maker-checker\"
# the audit trail's integrity, offline (stop the server first or run it alongside)
countersign audit verify --dev
"
    )
}
