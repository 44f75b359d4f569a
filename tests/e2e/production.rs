//! The production back ends end to end: the gateway over real mTLS on a real PostgreSQL with
//! a real Kafka-protocol broker (tansu). Every test ends with the same reconciliation: after
//! de-duplication by record id, the Kafka topics hold exactly the records of the sealed chain,
//! one for one (same sequence and hash), and the chain verifies.
//!
//! Services: `DATABASE_URL` / `KAFKA_BROKERS` from the test command (shared, one fresh database
//! and fresh topics per test), or private instances (`services::PgCluster`, `services::Broker`)
//! for the fault tests that stop them. With CI=true a missing service fails the test.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use countersign::{config::StoreConfig, kafka::KafkaConfig};
use countersign_audit::{RecordKind, SealedRecord};
use countersign_ledger::{Store, StoreOptions};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    kafka_support::{ConsumedRecord, dedup_by_record_id, read_all_records},
    services::{self, Broker, PgCluster},
    support::{TestApp, TestPki, bundle_path, transfer},
};

const BINARY: &str = env!("CARGO_BIN_EXE_countersign");
/// Accounts the load spreads over; few, so batches contend for the same rows.
const ACCOUNTS: usize = 8;
/// Opening balance of each account, in EUR: enough for every test's load.
const OPENING_EUR: &str = "100000.00";

fn account(index: usize) -> String {
    format!("DE{:020}", 4_400_000 + index)
}

/// Unique topic names for one test, so tests sharing a broker never see each other's records.
fn topics() -> (String, String) {
    let suffix = Uuid::now_v7().simple().to_string();
    (
        format!("cs-decisions-{suffix}"),
        format!("cs-transactions-{suffix}"),
    )
}

fn kafka_config(brokers: &str, (decisions, transactions): &(String, String)) -> KafkaConfig {
    KafkaConfig {
        decisions_topic: decisions.clone(),
        transactions_topic: transactions.clone(),
        ..KafkaConfig::new(brokers)
    }
}

/// The shared services, or `None` (outside CI only) when they are not provisioned.
async fn shared_services() -> Option<(String, String)> {
    let admin_url = services::shared_database_url()?;
    let brokers = services::shared_kafka_brokers()?;
    Some((services::fresh_database(&admin_url).await, brokers))
}

async fn spawn_gateway(database_url: &str, kafka: KafkaConfig) -> TestApp {
    let database_url = database_url.to_owned();
    let app = TestApp::spawn_with(move |config| {
        config.store = StoreConfig::new(database_url);
        config.kafka = Some(kafka);
    })
    .await;
    for index in 0..ACCOUNTS {
        app.open_account(&account(index), "EUR", OPENING_EUR).await;
    }
    app
}

/// What the load generator saw.
#[derive(Debug, Default)]
struct LoadReport {
    /// Decision ids of 201 and 403 answers: each must be in the trail.
    decided: Vec<String>,
    posted: usize,
    denied: usize,
    /// 503s (fail closed while a dependency is down) and transport errors.
    unavailable: usize,
    other: Vec<(u16, String)>,
}

/// Sends transfers from `concurrency` clients until `stop`; every 10th is over the limit and
/// denied by policy.
async fn run_load(
    client: reqwest::Client,
    base_url: String,
    concurrency: usize,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let base_url = base_url.clone();
        let stop = stop.clone();
        let counter = counter.clone();
        workers.push(tokio::spawn(async move {
            let mut report = LoadReport::default();
            while !stop.load(Ordering::Relaxed) {
                let index = counter.fetch_add(1, Ordering::Relaxed);
                let amount = if index % 10 == 9 {
                    "9999999.00"
                } else {
                    "1.00"
                };
                let body = transfer(
                    &account(index % ACCOUNTS),
                    &account((index * 3 + 1) % ACCOUNTS),
                    amount,
                );
                let sent = client
                    .post(format!("{base_url}/v1/transfers"))
                    .header("Idempotency-Key", format!("load-{index}"))
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body: Value = response.json().await.unwrap_or(Value::Null);
                        match status {
                            201 | 403 => {
                                if status == 201 {
                                    report.posted += 1;
                                } else {
                                    report.denied += 1;
                                }
                                report.decided.push(
                                    body["decision_id"].as_str().unwrap_or_default().to_owned(),
                                );
                            }
                            503 => {
                                report.unavailable += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            _ => report.other.push((status, body.to_string())),
                        }
                    }
                    Err(_) => {
                        report.unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            report
        }));
    }
    let mut total = LoadReport::default();
    for worker in workers {
        let report = worker.await.unwrap();
        total.decided.extend(report.decided);
        total.posted += report.posted;
        total.denied += report.denied;
        total.unavailable += report.unavailable;
        total.other.extend(report.other);
    }
    total
}

/// Every sealed record of the chain, in order.
async fn chain(store: &Store) -> Vec<SealedRecord> {
    let mut records: Vec<SealedRecord> = Vec::new();
    loop {
        let after = records.last().map_or(0, |last| last.sequence);
        let page = store.read_sealed_after(after, 1_000).await.unwrap();
        if page.is_empty() {
            return records;
        }
        records.extend(page);
    }
}

/// Waits (bounded) until every audit record is sealed and the outbox is empty.
async fn wait_until_streamed(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(120);
    assert!(
        store.wait_sealed(Duration::from_secs(60)).await.unwrap(),
        "records still unsealed after 60 s"
    );
    loop {
        let backlog = store.outbox_backlog().await.unwrap();
        if backlog == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "outbox still holds {backlog} records after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The reconciliation every test ends with. Returns the number of records checked.
async fn reconcile(
    store: &Store,
    brokers: &str,
    (decisions_topic, transactions_topic): &(String, String),
    decided: &[String],
) -> usize {
    wait_until_streamed(store).await;
    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact(), "chain broken: {report:?}");
    let invariants = store.check_invariants().await.unwrap();
    assert!(invariants.is_ok(), "ledger invariants: {invariants:?}");

    let records = chain(store).await;
    let on_decisions_topic =
        |kind: RecordKind| matches!(kind, RecordKind::Decision | RecordKind::Approval);
    let expected_decisions = records
        .iter()
        .filter(|sealed| on_decisions_topic(sealed.record.kind))
        .count();
    let expected_postings = records.len() - expected_decisions;
    let timeout = Duration::from_secs(60);
    let consumed_decisions = dedup_by_record_id(
        read_all_records(brokers, decisions_topic, expected_decisions, timeout).await,
    );
    let consumed_postings = dedup_by_record_id(
        read_all_records(brokers, transactions_topic, expected_postings, timeout).await,
    );
    let consumed: HashMap<Uuid, &ConsumedRecord> = consumed_decisions
        .iter()
        .chain(consumed_postings.iter())
        .map(|consumed| (consumed.record_id, consumed))
        .collect();
    assert_eq!(
        consumed.len(),
        records.len(),
        "Kafka holds {} distinct records, the chain {}",
        consumed.len(),
        records.len()
    );
    for sealed in &records {
        let record_id = sealed.record.record_id;
        let consumed = consumed
            .get(&record_id)
            .unwrap_or_else(|| panic!("record {record_id} (seq {}) not in Kafka", sealed.sequence));
        assert_eq!(consumed.sequence, sealed.sequence, "record {record_id}");
        assert_eq!(
            consumed.hash,
            hex::encode(sealed.hash),
            "record {record_id}"
        );
        let topic_is_right = if on_decisions_topic(sealed.record.kind) {
            consumed_decisions.iter().any(|c| c.record_id == record_id)
        } else {
            consumed_postings.iter().any(|c| c.record_id == record_id)
        };
        assert!(topic_is_right, "record {record_id} is on the wrong topic");
    }
    // Per key, Kafka order (first copies) is chain order.
    assert_per_key_order(&consumed_decisions);
    assert_per_key_order(&consumed_postings);
    // Every answer the clients got is in the trail.
    let decision_ids: HashSet<String> = records
        .iter()
        .map(|sealed| sealed.record.decision_id.to_string())
        .collect();
    for decision_id in decided {
        assert!(
            decision_ids.contains(decision_id),
            "decision {decision_id} answered to a client is not in the trail"
        );
    }
    records.len()
}

fn assert_per_key_order(consumed: &[ConsumedRecord]) {
    let mut by_partition: BTreeMap<i32, Vec<&ConsumedRecord>> = BTreeMap::new();
    for record in consumed {
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record);
    }
    for records in by_partition.values_mut() {
        records.sort_by_key(|record| record.offset);
        let mut last_by_key: HashMap<&str, i64> = HashMap::new();
        for record in records.iter() {
            if let Some(previous) = last_by_key.insert(&record.key, record.sequence) {
                assert!(
                    previous <= record.sequence,
                    "key {} out of order: {previous} then {}",
                    record.key,
                    record.sequence
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_and_postgres_hold_every_record_one_for_one() {
    let Some((database_url, brokers)) = shared_services().await else {
        return;
    };
    let topics = topics();
    let app = spawn_gateway(&database_url, kafka_config(&brokers, &topics)).await;
    let mut decided = Vec::new();
    for index in 0..120 {
        let amount = if index % 6 == 5 { "9999999.00" } else { "2.50" };
        let (status, body) = app
            .post_transfer(
                &format!("r-{index}"),
                &transfer(
                    &account(index % ACCOUNTS),
                    &account((index + 1) % ACCOUNTS),
                    amount,
                ),
            )
            .await;
        assert!(status == 201 || status == 403, "{status} {body}");
        decided.push(body["decision_id"].as_str().unwrap().to_owned());
    }
    // Held transfers (maker-checker): their reservation, approval step, posting and release
    // records go to the stream like every other record.
    const RICH: &str = "DE44500105175407324931";
    app.open_account(RICH, "EUR", "5000000.00").await;
    for (index, step) in ["approve", "reject"].into_iter().enumerate() {
        let (status, body) = app
            .post_transfer(
                &format!("held-{index}"),
                &transfer(RICH, &account(0), "2000000.00"),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        decided.push(body["decision_id"].as_str().unwrap().to_owned());
        let id = body["transfer"]["id"].as_str().unwrap();
        let response = app
            .client("approver")
            .post(format!("{}/v1/transfers/{id}/{step}", app.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{step}");
        let body: Value = response.json().await.unwrap();
        decided.push(body["decision_id"].as_str().unwrap().to_owned());
    }
    let store = app.state.store.clone();
    let checked = reconcile(&store, &brokers, &topics, &decided).await;
    assert!(checked >= 120 + 100, "only {checked} records");
    let kinds: HashSet<RecordKind> = chain(&store)
        .await
        .iter()
        .map(|sealed| sealed.record.kind)
        .collect();
    for kind in [
        RecordKind::Reservation,
        RecordKind::Approval,
        RecordKind::Posting,
        RecordKind::Release,
    ] {
        assert!(kinds.contains(&kind), "no {kind:?} record was streamed");
    }
    let consumed = read_all_records(&brokers, &topics.0, 1, Duration::from_secs(30)).await;
    assert_per_key_order(&consumed);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_stopped_for_30_seconds_under_load_loses_nothing() {
    let Some(admin_url) = services::shared_database_url() else {
        return;
    };
    let database_url = services::fresh_database(&admin_url).await;
    let broker = Broker::start();
    let topics = topics();
    let app = spawn_gateway(&database_url, kafka_config(&broker.brokers(), &topics)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(
        app.client("channel"),
        app.base_url.clone(),
        4,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.pause();
    let paused_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let backlog_while_down = app.state.store.outbox_backlog().await.unwrap();
    broker.resume();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    assert!(paused_at.elapsed() >= Duration::from_secs(30));
    assert!(
        report.other.is_empty(),
        "unexpected answers: {:?}",
        report.other
    );
    assert_eq!(
        report.unavailable, 0,
        "transfers must keep flowing while the broker is down"
    );
    assert!(report.posted > 50, "{report:?}");
    assert!(
        backlog_while_down > 0,
        "the outbox should grow while the broker is down"
    );
    let store = app.state.store.clone();
    reconcile(&store, &broker.brokers(), &topics, &report.decided).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_under_load_fails_closed_and_recovers() {
    let Some(brokers) = services::shared_kafka_brokers() else {
        return;
    };
    let mut cluster = PgCluster::start();
    let database_url = services::fresh_database(&cluster.url()).await;
    let topics = topics();
    let app = spawn_gateway(&database_url, kafka_config(&brokers, &topics)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(
        app.client("channel"),
        app.base_url.clone(),
        4,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.stop();
    // While the database is down the gateway refuses (503) and is not ready.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = crate::support::readiness(&app).await;
    assert_eq!(status, 503, "/readyz while PostgreSQL is down");
    cluster.start_again();
    // Recovery is automatic: readiness comes back without a restart of the gateway.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = crate::support::readiness(&app).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready 60 s after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    assert!(
        report.other.is_empty(),
        "unexpected answers: {:?}",
        report.other
    );
    assert!(
        report.unavailable > 0,
        "some requests must have met the outage"
    );
    let store = app.state.store.clone();
    reconcile(&store, &brokers, &topics, &report.decided).await;
    app.stop().await;
}

/// A `countersign serve --config` process.
struct GatewayProcess {
    child: Child,
    address: SocketAddr,
}

impl GatewayProcess {
    fn start(config_path: &Path) -> GatewayProcess {
        let mut child = Command::new(BINARY)
            .args(["serve", "--config"])
            .arg(config_path)
            .env("RUST_LOG", "countersign=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("countersign starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = sender.send(line);
            }
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("the gateway prints its ready line");
        let address = line
            .split("https://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        GatewayProcess { child, address }
    }

    fn kill(&mut self) {
        // SIGKILL: no drain, no flush.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a PKI and a config file for gateway processes on `database_url` and `brokers`.
fn process_config(
    directory: &Path,
    database_url: &str,
    brokers: &str,
    (decisions, transactions): &(String, String),
) -> (PathBuf, TestPki) {
    let pki = TestPki::generate(directory);
    let config = format!(
        r#"listen_address = "127.0.0.1:0"

[tls]
server_cert = "server.crt"
server_key = "server.key"
client_ca_bundle = "ca.crt"

[policy]
bundle = "{bundle}"
watch = false

[store]
url = "{database_url}"

[kafka]
brokers = "{brokers}"
decisions_topic = "{decisions}"
transactions_topic = "{transactions}"

[[role_mapping]]
match_ou = "channel"
roles = ["channel"]
"#,
        bundle = bundle_path().display(),
    );
    let path = directory.join("countersign.toml");
    std::fs::write(&path, config).unwrap();
    (path, pki)
}

fn process_client(pki: &TestPki, address: SocketAddr) -> reqwest::Client {
    let certificate = &pki.clients["channel"];
    let identity = reqwest::Identity::from_pem(
        format!(
            "{}{}",
            certificate.certificate_pem, certificate.private_key_pem
        )
        .as_bytes(),
    )
    .unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()])
        .identity(identity)
        .resolve("localhost", address)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Opens the test accounts through an in-process store on the same database, which the test
/// then uses to read and reconcile. It runs no sealer, so it never takes the sealer lock (and
/// with it the Kafka stream) from a gateway process; its records are sealed by the gateways.
async fn open_accounts(database_url: &str) -> Store {
    let store = Store::open_with(
        database_url,
        Default::default(),
        StoreOptions {
            sealer_enabled: false,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    crate::support::open_accounts_in(&store, (0..ACCOUNTS).map(account), OPENING_EUR).await;
    store
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_killed_mid_load_restarts_with_nothing_half_written() {
    let Some((database_url, brokers)) = shared_services().await else {
        return;
    };
    let directory = tempfile::TempDir::new().unwrap();
    let topics = topics();
    let (config_path, pki) = process_config(directory.path(), &database_url, &brokers, &topics);
    let store = open_accounts(&database_url).await;

    let mut first = GatewayProcess::start(&config_path);
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(
        process_client(&pki, first.address),
        format!("https://localhost:{}", first.address.port()),
        8,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    first.kill();
    stop.store(true, Ordering::Relaxed);
    let before_kill = load.await.unwrap();
    assert!(before_kill.posted > 0, "{before_kill:?}");

    // Restart: the new process seals and streams what the killed one committed.
    let mut second = GatewayProcess::start(&config_path);
    let client = process_client(&pki, second.address);
    let base_url = format!("https://localhost:{}", second.address.port());
    // Retrying a request that may have been in flight at the kill either replays its stored
    // answer or is decided now: never posted twice.
    let retry_key = "load-0";
    let body = transfer(&account(0), &account(1), "1.00");
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = client
            .post(format!("{base_url}/v1/transfers"))
            .header("Idempotency-Key", retry_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        answers.push(response.status().as_u16());
    }
    assert!(
        answers
            .iter()
            .all(|status| *status == 201 || *status == 403)
    );
    reconcile(&store, &brokers, &topics, &before_kill.decided).await;
    second.terminate();
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_database_never_double_post() {
    let Some((database_url, brokers)) = shared_services().await else {
        return;
    };
    let directory = tempfile::TempDir::new().unwrap();
    let topics = topics();
    let (config_path, pki) = process_config(directory.path(), &database_url, &brokers, &topics);
    let store = open_accounts(&database_url).await;
    let one = GatewayProcess::start(&config_path);
    let two = GatewayProcess::start(&config_path);
    let clients = [
        (process_client(&pki, one.address), one.address),
        (process_client(&pki, two.address), two.address),
    ];

    // The same 200 requests (same keys) go to both replicas at once.
    let mut tasks = Vec::new();
    for index in 0..200 {
        for (client, address) in &clients {
            let client = client.clone();
            let url = format!("https://localhost:{}/v1/transfers", address.port());
            tasks.push(tokio::spawn(async move {
                let body = transfer(
                    &account(index % ACCOUNTS),
                    &account((index + 3) % ACCOUNTS),
                    "7.00",
                );
                let response = client
                    .post(url)
                    .header("Idempotency-Key", format!("twin-{index}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (index, status, body)
            }));
        }
    }
    let mut transfer_ids: HashMap<usize, HashSet<String>> = HashMap::new();
    let mut decided = Vec::new();
    for task in tasks {
        let (index, status, body) = task.await.unwrap();
        // 409 when the twin is still in flight on the same replica is not possible (different
        // replicas); the loser of the race replays the winner's answer.
        assert!(status == 201 || status == 409, "{status} {body}");
        if status == 201 {
            transfer_ids
                .entry(index)
                .or_default()
                .insert(body["transfer"]["id"].as_str().unwrap().to_owned());
            decided.push(body["decision_id"].as_str().unwrap().to_owned());
        }
    }
    for (index, ids) in &transfer_ids {
        assert_eq!(ids.len(), 1, "request {index} posted as {ids:?}");
    }
    assert_eq!(transfer_ids.len(), 200, "every request posted exactly once");
    // Σ debits = Σ credits and no account below zero.
    let invariants = store.check_invariants().await.unwrap();
    assert!(invariants.is_ok(), "{invariants:?}");
    reconcile(&store, &brokers, &topics, &decided).await;
    drop((one, two));
    store.shutdown().await.unwrap();
}
