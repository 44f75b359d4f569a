//! The Kafka audit stream against a real broker (`KAFKA_BROKERS`): every record arrives once
//! per publish, on the topic of its kind, with its headers, in per-account order; publishing
//! again duplicates and deduplication by record id undoes it.
#![forbid(unsafe_code)]

#[path = "../../tests/e2e/kafka_support.rs"]
mod kafka_support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use countersign::kafka::{DeliveryFailure, KafkaConfig, KafkaError, KafkaPublisher};
use countersign_audit::sink::{DecisionLogLabels, decision_log_event};
use countersign_audit::{
    GENESIS_PREVIOUS_HASH, NewRecord, Outcome, RecordKind, Redaction, SealedRecord, Subject,
    canonical_json, chain_hash,
};
use kafka_support::{ConsumedRecord, brokers_or_skip, dedup_by_record_id, read_all_records};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

const ACCOUNTS: usize = 8;
const PARTITIONS: i32 = 4;
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// `count` records sealed into a chain. Each decision is followed by its posting on the same
/// account, and consecutive pairs cycle through the accounts, so every key has records of
/// both kinds interleaved with other keys'. Returns (record, key) pairs in sequence order.
fn sealed_chain(count: usize) -> Vec<(SealedRecord, String)> {
    let mut previous_hash = GENESIS_PREVIOUS_HASH;
    let mut decision_id = Uuid::now_v7();
    (0..count)
        .map(|index| {
            let sequence = i64::try_from(index).expect("small index") + 1;
            let kind = if index % 2 == 0 {
                decision_id = Uuid::now_v7();
                RecordKind::Decision
            } else {
                RecordKind::Posting
            };
            let account = format!("DE00ACCOUNT{:04}", (index / 2) % ACCOUNTS);
            let record = NewRecord {
                record_id: Uuid::now_v7(),
                kind,
                decision_id,
                timestamp: OffsetDateTime::now_utc(),
                subject: Subject {
                    fingerprint_sha256: "ab".repeat(32),
                    common_name: Some("teller-01".to_owned()),
                    roles: vec!["teller".to_owned()],
                },
                source_address: "127.0.0.1:50000".to_owned(),
                action: "transfer.create".to_owned(),
                masked_input: json!({ "source_account": account, "amount_minor": index }),
                result: json!({ "allow": true }),
                bundle_revision: "test".to_owned(),
                outcome: if kind == RecordKind::Decision {
                    Outcome::Allow
                } else {
                    Outcome::Posted
                },
                redaction: Redaction::default(),
                sealed_input: None,
            };
            let hash = chain_hash(&previous_hash, sequence, &record);
            let sealed = SealedRecord {
                sequence,
                record,
                previous_hash,
                hash,
            };
            previous_hash = hash;
            (sealed, account)
        })
        .collect()
}

fn config(brokers: &str, test: &str) -> KafkaConfig {
    // Fresh topics per run, so a long-lived broker never mixes runs.
    let run = Uuid::new_v4().simple();
    let mut config = KafkaConfig::new(brokers);
    config.decisions_topic = format!("countersign.decisions.{test}-{run}");
    config.transactions_topic = format!("countersign.transactions.{test}-{run}");
    config.batch_records_max = 500;
    config
}

/// Publishes in batches of `batch_records_max`, asserting that every batch is acknowledged
/// in full (the broker is healthy).
async fn publish_all(publisher: &KafkaPublisher, records: &[(SealedRecord, String)]) {
    for batch in records.chunks(publisher.config().batch_records_max) {
        let acknowledged = publisher.publish(batch).await.expect("publish a batch");
        let expected: Vec<Uuid> = batch
            .iter()
            .map(|(sealed, _key)| sealed.record.record_id)
            .collect();
        assert_eq!(
            acknowledged, expected,
            "every record acknowledged, in order"
        );
    }
}

/// Checks one topic's messages against what was published: kind routing, headers, key and
/// value, and per-key order (one partition per key, sequence rising with the offset).
fn check_topic(
    consumed: &[ConsumedRecord],
    published: &HashMap<Uuid, &(SealedRecord, String)>,
    topic: &str,
    kind: RecordKind,
) {
    let labels = DecisionLogLabels::default();
    let mut by_key: BTreeMap<&str, Vec<&ConsumedRecord>> = BTreeMap::new();
    for message in consumed {
        let (sealed, key) = published
            .get(&message.record_id)
            .unwrap_or_else(|| panic!("{topic}: unknown record id {}", message.record_id));
        assert_eq!(sealed.record.kind, kind, "{topic}: routed by kind");
        assert_eq!(message.topic, topic);
        assert_eq!(message.kind, kind.as_str(), "countersign-kind header");
        assert_eq!(
            message.sequence, sealed.sequence,
            "countersign-sequence header"
        );
        assert_eq!(
            message.hash,
            hex::encode(sealed.hash),
            "countersign-hash header"
        );
        assert_eq!(&message.key, key, "message key");
        assert_eq!(
            message.value,
            decision_log_event(sealed, &labels),
            "value is the decision-log event"
        );
        by_key.entry(&message.key).or_default().push(message);
    }
    for (key, messages) in by_key {
        let partition = messages[0].partition;
        assert!(
            messages
                .iter()
                .all(|message| message.partition == partition),
            "{topic}: key {key} spread over partitions"
        );
        // `consumed` is sorted by (partition, offset), so this is offset order.
        let sequences: Vec<i64> = messages.iter().map(|message| message.sequence).collect();
        assert!(
            sequences.windows(2).all(|pair| pair[0] < pair[1]),
            "{topic}: key {key} out of sequence order: {sequences:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_every_record_routed_ordered_and_dedups_republished() {
    let Some(brokers) =
        brokers_or_skip("publishes_every_record_routed_ordered_and_dedups_republished")
    else {
        return;
    };
    let config = config(&brokers, "order");
    let publisher = KafkaPublisher::new(&config).expect("create the publisher");
    let before = publisher
        .check_connected(Duration::from_secs(10))
        .await
        .expect("broker reachable");
    assert_eq!(
        before.missing_topics,
        [
            config.decisions_topic.clone(),
            config.transactions_topic.clone()
        ]
    );
    publisher
        .ensure_topics(PARTITIONS)
        .await
        .expect("create the topics");
    publisher
        .ensure_topics(PARTITIONS)
        .await
        .expect("creating existing topics again is a no-op");
    let after = publisher
        .check_connected(Duration::from_secs(10))
        .await
        .expect("broker reachable");
    assert!(after.brokers >= 1);
    assert_eq!(after.missing_topics, Vec::<String>::new());

    let records = sealed_chain(2_000);
    let published: HashMap<Uuid, &(SealedRecord, String)> = records
        .iter()
        .map(|pair| (pair.0.record.record_id, pair))
        .collect();
    let decisions = records
        .iter()
        .filter(|(sealed, _)| sealed.record.kind == RecordKind::Decision)
        .count();
    let postings = records.len() - decisions;
    publish_all(&publisher, &records).await;

    let consumed_decisions =
        read_all_records(&brokers, &config.decisions_topic, decisions, READ_TIMEOUT).await;
    let consumed_postings =
        read_all_records(&brokers, &config.transactions_topic, postings, READ_TIMEOUT).await;
    assert_eq!(consumed_decisions.len(), decisions, "each decision once");
    assert_eq!(consumed_postings.len(), postings, "each posting once");
    check_topic(
        &consumed_decisions,
        &published,
        &config.decisions_topic,
        RecordKind::Decision,
    );
    check_topic(
        &consumed_postings,
        &published,
        &config.transactions_topic,
        RecordKind::Posting,
    );
    let mut seen: Vec<Uuid> = consumed_decisions
        .iter()
        .chain(&consumed_postings)
        .map(|message| message.record_id)
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), records.len(), "every record id present");
    let partitions_used: std::collections::HashSet<i32> = consumed_decisions
        .iter()
        .map(|message| message.partition)
        .collect();
    assert!(
        partitions_used.len() > 1,
        "keys spread over partitions: {partitions_used:?}"
    );

    // At least once: a relay that crashed before marking the outbox publishes again.
    publish_all(&publisher, &records).await;
    for (topic, count, kind) in [
        (&config.decisions_topic, decisions, RecordKind::Decision),
        (&config.transactions_topic, postings, RecordKind::Posting),
    ] {
        let consumed = read_all_records(&brokers, topic, count, READ_TIMEOUT).await;
        assert_eq!(consumed.len(), 2 * count, "{topic}: each record twice");
        let unique = dedup_by_record_id(consumed);
        assert_eq!(
            unique.len(),
            count,
            "{topic}: dedup leaves each record once"
        );
        // The first copies come first in every partition, so dedup keeps per-key order.
        check_topic(&unique, &published, topic, kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_ten_thousand_records_and_reports_throughput() {
    let Some(brokers) = brokers_or_skip("publishes_ten_thousand_records_and_reports_throughput")
    else {
        return;
    };
    let mut config = config(&brokers, "throughput");
    config.batch_records_max = 1_000;
    let publisher = KafkaPublisher::new(&config).expect("create the publisher");
    publisher
        .ensure_topics(PARTITIONS)
        .await
        .expect("create the topics");
    // Warm-up records first: connection, metadata and producer id are not part of the
    // steady state being measured.
    let warm_up_records = 100;
    let measured_records = 10_000;
    let records = sealed_chain(warm_up_records + measured_records);
    publish_all(&publisher, &records[..warm_up_records]).await;

    let started = Instant::now();
    publish_all(&publisher, &records[warm_up_records..]).await;
    let elapsed = started.elapsed();
    let records_per_second = measured_records as f64 / elapsed.as_secs_f64();
    eprintln!(
        "kafka publish throughput: {measured_records} records in {elapsed:?} = \
         {records_per_second:.0} records/s (batches of {}, acks=all, idempotent)",
        config.batch_records_max
    );

    // For reading the figure: encoding the events alone, in this build profile (the test
    // profile does not optimise workspace crates).
    let labels = DecisionLogLabels::default();
    let encoding_started = Instant::now();
    let encoded_bytes: usize = records[warm_up_records..]
        .iter()
        .map(|(sealed, _key)| canonical_json(&decision_log_event(sealed, &labels)).len())
        .sum();
    eprintln!(
        "encoding alone: {measured_records} events ({encoded_bytes} bytes) in {:?}",
        encoding_started.elapsed()
    );

    let decisions = records.len() / 2;
    let consumed =
        read_all_records(&brokers, &config.decisions_topic, decisions, READ_TIMEOUT).await;
    assert_eq!(dedup_by_record_id(consumed).len(), decisions);
}

/// No broker listens on the port: nothing is acknowledged, the error says which record, and
/// the wait is bounded by `message_timeout_ms`. Needs no broker, so it always runs.
#[tokio::test]
async fn unreachable_broker_acknowledges_nothing_within_the_message_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);

    let mut config = KafkaConfig::new(format!("127.0.0.1:{port}"));
    config.message_timeout_ms = 1_000;
    let publisher = KafkaPublisher::new(&config).expect("create the publisher");
    let records = sealed_chain(3);

    let started = Instant::now();
    let error = publisher
        .publish(&records)
        .await
        .expect_err("nothing can be acknowledged");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded wait: {:?}",
        started.elapsed()
    );
    match error {
        KafkaError::NotAcknowledged {
            record_id,
            sequence,
            ..
        } => {
            assert_eq!(record_id, records[0].0.record.record_id);
            assert_eq!(sequence, 1);
        }
        other => panic!("expected NotAcknowledged, got {other:?}"),
    }
    assert!(
        publisher
            .check_connected(Duration::from_millis(500))
            .await
            .is_err(),
        "readiness probe fails"
    );

    let too_many = sealed_chain(config.batch_records_max + 1);
    assert!(matches!(
        publisher.publish(&too_many).await,
        Err(KafkaError::BatchTooLarge { .. })
    ));
    assert_eq!(
        publisher.publish(&[]).await.expect("empty batch"),
        Vec::<Uuid>::new()
    );
}

/// A record larger than `message_bytes_max` is refused before anything is sent, and the
/// records after it are not sent either (they would overtake it). Needs no broker.
#[tokio::test]
async fn oversized_record_is_refused_and_stops_the_batch() {
    let mut config = KafkaConfig::new("127.0.0.1:9");
    config.message_timeout_ms = 1_000;
    config.message_bytes_max = 1_000;
    let publisher = KafkaPublisher::new(&config).expect("create the publisher");
    let mut records = sealed_chain(2);
    records[0].0.record.result = json!({ "padding": "x".repeat(2_000) });
    match publisher.publish(&records).await {
        Err(KafkaError::NotAcknowledged {
            sequence: 1,
            reason: DeliveryFailure::Enqueue(error),
            ..
        }) => assert!(error.to_string().contains("too large"), "{error}"),
        other => panic!("expected the first record refused at enqueue, got {other:?}"),
    }
}

/// A record that cannot be queued in the middle of a batch: the records before it are
/// acknowledged and returned, it and everything after it are not (the caller publishes them
/// again from there), and nothing after it reached the topic ahead of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failure_returns_the_acknowledged_prefix() {
    let Some(brokers) = brokers_or_skip("partial_failure_returns_the_acknowledged_prefix") else {
        return;
    };
    let mut config = config(&brokers, "partial");
    config.message_bytes_max = 10_000;
    let publisher = KafkaPublisher::new(&config).expect("create the publisher");
    publisher
        .ensure_topics(PARTITIONS)
        .await
        .expect("create the topics");
    let mut records = sealed_chain(6);
    records[2].0.record.result = json!({ "padding": "x".repeat(20_000) });

    let acknowledged = publisher
        .publish(&records)
        .await
        .expect("the first records are acknowledged");
    let expected: Vec<Uuid> = records[..2]
        .iter()
        .map(|(sealed, _key)| sealed.record.record_id)
        .collect();
    assert_eq!(acknowledged, expected, "exactly the acknowledged prefix");

    // Record 1 is the only decision of the prefix (records alternate decision/posting); the
    // decisions after the refused record (4) must not be there.
    let consumed = read_all_records(&brokers, &config.decisions_topic, 1, READ_TIMEOUT).await;
    let sequences: Vec<i64> = consumed.iter().map(|message| message.sequence).collect();
    assert_eq!(sequences, [1]);
}
