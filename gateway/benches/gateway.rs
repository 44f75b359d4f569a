//! `cargo bench -p countersign --bench gateway` — measured, never asserted.
//!
//! 1. Policy decision time for the shipped bundle: regorus bytecode VM vs interpreter.
//! 2. Durable transfers end to end: the real gateway in-process on 127.0.0.1:0, real mutual
//!    TLS (HTTP/2), the embedded SQLite store with `synchronous=FULL`; transfers/s and latency
//!    percentiles with group commit (batches up to 256) and with one transaction per transfer.
//!    With `COUNTERSIGN_BENCH_DATABASE_URL=postgres://superuser@host/postgres` the same two
//!    runs are repeated on PostgreSQL, each in a fresh database created for it (the test
//!    command's throwaway cluster prints its URL; any PostgreSQL 15+ will do).
//! 3. Start-up: `Gateway::build` (open store, compile bundle, TLS config) to ready.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs a tiny smoke version, so
//! the benchmark is compiled and exercised by the test suite without slowing it down.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use countersign::{
    config::{
        ApprovalsConfig, AuditConfig, Config, Limits, LogConfig, PolicyConfig, StoreConfig,
        TlsConfig,
    },
    pki::{CertificateAuthority, ClientSpec, IssuedCertificate},
    policy::{Bundle, PolicyEngine, TRANSFER_DECISION},
    server::Gateway,
};
use countersign_ledger::{AccountId, AccountStatus, Amount, Currency, NewAccount, SeedTransfer};
use futures::{StreamExt, stream};
use serde_json::json;
use uuid::Uuid;

struct Scale {
    decisions: usize,
    transfers: usize,
    concurrency: usize,
    accounts: usize,
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn bundle_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn representative_input() -> serde_json::Value {
    json!({
        "action": "transfer.create",
        "transfer": {"id": "0193a5b2-7c1e-7d3f-9a40-2f1c8e6b1a01", "debit_account": "DE89370400440532013000",
            "credit_account": "FR1420041010050500013M02606", "amount": "1500.00", "amount_minor": 150000,
            "currency": "EUR", "currency_minor_units": 2, "end_to_end_id": "E2E-1", "purpose": "SUPP",
            "remittance_info": "invoice 42"},
        "subject": {"common_name": "mobile-banking", "organization": ["Bank"], "organizational_units": ["channel"],
            "san_uris": ["spiffe://bank.example/channel/mobile"], "serial": "01", "fingerprint_sha256": "ab",
            "roles": ["channel"]},
        "accounts": {
            "debit": {"id": "DE89370400440532013000", "status": "active", "currency": "EUR", "overdraft_allowed": false,
                "balance": "10000.00", "balance_minor": 1000000, "debited_today": "0.00", "debited_today_minor": 0,
                "reserved": "0.00", "reserved_minor": 0, "available": "10000.00", "available_minor": 1000000},
            "credit": {"id": "FR1420041010050500013M02606", "status": "active", "currency": "EUR", "overdraft_allowed": false,
                "balance": "250.00", "balance_minor": 25000, "debited_today": "0.00", "debited_today_minor": 0,
                "reserved": "0.00", "reserved_minor": 0, "available": "250.00", "available_minor": 25000}
        },
        "context": {"time": "2026-11-26T12:00:00Z", "request_id": "r-1", "channel": "mobile-banking",
            "source_address": "127.0.0.1:1", "audit": {"enabled": true}}
    })
}

fn bench_policy(scale: &Scale) {
    let bundle = Bundle::load(&bundle_path()).expect("bundle");
    let engine =
        PolicyEngine::compile(&bundle, TRANSFER_DECISION, Duration::from_secs(1)).expect("compile");
    let input = representative_input();
    for (name, vm) in [("vm", true), ("interpreter", false)] {
        let mut samples = Vec::with_capacity(scale.decisions);
        for _ in 0..scale.decisions {
            let started = Instant::now();
            let decision = if vm {
                engine.evaluate(&input)
            } else {
                engine.evaluate_interpreter(&input)
            }
            .expect("decides");
            samples.push(started.elapsed());
            assert_eq!(decision["allow"], true);
        }
        samples.sort();
        let total: Duration = samples.iter().sum();
        println!(
            "policy decision ({name:<11}) n={:<6} mean {:>8.1} µs  p50 {:>8.1} µs  p99 {:>8.1} µs",
            scale.decisions,
            total.as_secs_f64() * 1e6 / scale.decisions as f64,
            percentile(&samples, 0.50).as_secs_f64() * 1e6,
            percentile(&samples, 0.99).as_secs_f64() * 1e6,
        );
    }
}

fn config_for(directory: &Path, store_url: &str, batch_commands_max: usize) -> Config {
    Config {
        listen_address: "127.0.0.1:0".parse().unwrap(),
        ops_listen_address: None,
        tls: TlsConfig {
            server_cert: directory.join("server.crt"),
            server_key: directory.join("server.key"),
            client_ca_bundle: directory.join("ca.crt"),
            crls: Vec::new(),
            handshake_timeout_ms: 5_000,
            min_version: "1.3".into(),
        },
        policy: PolicyConfig {
            decision_timeout_ms: 50,
            ..PolicyConfig::new(bundle_path())
        },
        store: StoreConfig::new(store_url),
        audit: AuditConfig {
            decision_log: Some(directory.join("decision-log.jsonl")),
            ..AuditConfig::default()
        },
        kafka: None,
        limits: Limits {
            ledger_batch_commands_max: batch_commands_max,
            ..Limits::default()
        },
        approvals: ApprovalsConfig::default(),
        log: LogConfig::default(),
        role_mapping: countersign::config::default_role_mapping(),
        routes: Vec::new(),
        admission: None,
    }
}

fn write_pki(directory: &Path) -> (String, IssuedCertificate) {
    let ca = CertificateAuthority::generate("Bench CA").unwrap();
    let server = ca
        .issue_server(&["localhost"], &["127.0.0.1".parse().unwrap()])
        .unwrap();
    std::fs::write(directory.join("ca.crt"), ca.certificate_pem()).unwrap();
    std::fs::write(directory.join("server.crt"), &server.certificate_pem).unwrap();
    std::fs::write(directory.join("server.key"), &server.private_key_pem).unwrap();
    let client = ca
        .issue_client(&ClientSpec::for_role("bench-channel", "channel"))
        .unwrap();
    (ca.certificate_pem().to_owned(), client)
}

fn account(index: usize) -> String {
    format!("DE{:020}", 5_000 + index)
}

/// A fresh database on the PostgreSQL server `admin_url` points at; returns its URL.
async fn fresh_postgres_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("bench_{}", Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    // The name is ours (a UUID), not input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("a PostgreSQL URL ends in /DATABASE");
    format!("{base}/{name}")
}

/// Where a run stores its ledger.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Sqlite,
    Postgres { admin_url: &'a str },
}

async fn bench_transfers(
    scale: &Scale,
    backend: Backend<'_>,
    batch_commands_max: usize,
    label: &str,
) {
    let directory = tempfile::TempDir::new().unwrap();
    let (ca_pem, client_certificate) = write_pki(directory.path());
    let store_url = match backend {
        Backend::Sqlite => format!("sqlite://{}", directory.path().join("bench.db").display()),
        Backend::Postgres { admin_url } => fresh_postgres_database(admin_url).await,
    };
    let config = config_for(directory.path(), &store_url, batch_commands_max);
    let listener = tokio::net::TcpListener::bind(config.listen_address)
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    let build_started = Instant::now();
    let gateway = Gateway::build(config).await.unwrap();
    let build_time = build_started.elapsed();
    let state = gateway.state.clone();

    // Fund the accounts generously: this measures throughput, not refusals.
    let eur = Currency::parse("EUR").unwrap();
    let funding = AccountId::parse("SYSTEM-FUNDING-EUR").unwrap();
    let record = || countersign::dev::system_record("account.create", json!({}), "bench");
    state
        .store
        .create_account(
            NewAccount {
                id: funding.clone(),
                currency: eur,
                overdraft_allowed: true,
                status: AccountStatus::Active,
            },
            record(),
        )
        .await
        .unwrap();
    for index in 0..scale.accounts {
        let id = AccountId::parse(&account(index)).unwrap();
        state
            .store
            .create_account(
                NewAccount {
                    id: id.clone(),
                    currency: eur,
                    overdraft_allowed: false,
                    status: AccountStatus::Active,
                },
                record(),
            )
            .await
            .unwrap();
        state
            .store
            .seed_transfer(SeedTransfer {
                transfer_id: Uuid::now_v7(),
                debit_account: funding.clone(),
                credit_account: id,
                amount: Amount::parse("100000.00", eur).unwrap(),
                remittance_info: None,
            })
            .await
            .unwrap();
    }

    let (shutdown, shutdown_signal) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.run(listener, None, async {
        let _ = shutdown_signal.await;
    }));
    let identity = reqwest::Identity::from_pem(
        format!(
            "{}{}",
            client_certificate.certificate_pem, client_certificate.private_key_pem
        )
        .as_bytes(),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .identity(identity)
        .resolve("localhost", address)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/v1/transfers", address.port());
    // Warm the connection pool so handshakes are not in the measured window.
    let _ = client
        .get(format!("https://localhost:{}/healthz", address.port()))
        .send()
        .await;

    let batches_before = state.store.writer_stats().batches_committed;
    let started = Instant::now();
    let mut samples: Vec<(u16, Duration)> = stream::iter(0..scale.transfers)
        .map(|index| {
            let client = client.clone();
            let url = url.clone();
            let accounts = scale.accounts;
            async move {
                let body = json!({
                    "debit_account": account(index % accounts),
                    "credit_account": account((index * 7 + 1) % accounts),
                    "amount": "1.00",
                    "currency": "EUR",
                });
                let sent = Instant::now();
                let status = client
                    .post(&url)
                    .header("Idempotency-Key", format!("bench-{index}"))
                    .json(&body)
                    .send()
                    .await
                    .map(|response| response.status().as_u16())
                    .unwrap_or(0);
                (status, sent.elapsed())
            }
        })
        .buffer_unordered(scale.concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let batches = state.store.writer_stats().batches_committed - batches_before;
    let posted = samples.iter().filter(|(status, _)| *status == 201).count();
    let mut latencies: Vec<Duration> = samples.drain(..).map(|(_, latency)| latency).collect();
    latencies.sort();
    println!(
        "transfers over mTLS ({label:<22}) n={} conc={} posted={} {:>8.0} transfers/s  p50 {:>6.2} ms  p99 {:>6.2} ms  batches={} ({:.1} transfers/commit)  build {:.1} ms",
        scale.transfers,
        scale.concurrency,
        posted,
        scale.transfers as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        batches,
        scale.transfers as f64 / batches.max(1) as f64,
        build_time.as_secs_f64() * 1e3,
    );
    let _ = shutdown.send(());
    server.await.unwrap().unwrap();
}

fn main() {
    let full = std::env::args().any(|argument| argument == "--bench");
    let scale = if full {
        Scale {
            decisions: 20_000,
            transfers: 20_000,
            concurrency: 128,
            accounts: 200,
        }
    } else {
        Scale {
            decisions: 50,
            transfers: 50,
            concurrency: 8,
            accounts: 10,
        }
    };
    bench_policy(&scale);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        bench_transfers(&scale, Backend::Sqlite, 256, "sqlite, group commit ≤256").await;
        bench_transfers(&scale, Backend::Sqlite, 1, "sqlite, one tx/transfer").await;
        if let Ok(admin_url) = std::env::var("COUNTERSIGN_BENCH_DATABASE_URL") {
            let backend = Backend::Postgres {
                admin_url: &admin_url,
            };
            bench_transfers(&scale, backend, 256, "postgres, group commit ≤256").await;
            bench_transfers(&scale, backend, 1, "postgres, one tx/transfer").await;
        } else if full {
            println!(
                "PostgreSQL runs skipped: set COUNTERSIGN_BENCH_DATABASE_URL to a superuser URL"
            );
        }
    });
}
