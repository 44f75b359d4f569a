//! Test support for the Kafka audit stream: find the test broker, read a topic back from the
//! beginning, deduplicate at-least-once deliveries.
//!
//! Shared by the `e2e` suite and `gateway/tests/kafka.rs` (included there by path), so it
//! uses only `countersign`'s own dependencies and dev-dependencies.
#![allow(
    dead_code,
    reason = "compiled into two test crates; each uses a different part"
)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use countersign::kafka::{HEADER_HASH, HEADER_KIND, HEADER_RECORD_ID, HEADER_SEQUENCE};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

/// Environment variable naming the test broker (`host:port[,…]`), set by the test command.
pub const BROKERS_ENV: &str = "KAFKA_BROKERS";

/// How long one consumer poll blocks; short, so the overall timeout is honoured closely.
const POLL_TIMEOUT_MS: u64 = 100;
/// Bound on one metadata request while waiting for the topic to appear.
const METADATA_TIMEOUT_MS: u64 = 2_000;
/// Pause between metadata attempts while the topic does not exist yet.
const METADATA_RETRY_MS: u64 = 100;

/// The broker for a test that needs Kafka. Under `CI=true` a missing `KAFKA_BROKERS` fails
/// the test (the test command must provide a broker); elsewhere it prints a note and the
/// test returns early.
pub fn brokers_or_skip(test: &str) -> Option<String> {
    match std::env::var(BROKERS_ENV) {
        Ok(brokers) if !brokers.trim().is_empty() => Some(brokers),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
            "{test}: {BROKERS_ENV} is not set but CI=true; the test command must start a Kafka \
             broker and export {BROKERS_ENV}=host:port"
        ),
        _ => {
            eprintln!(
                "note: {test} did not run: set {BROKERS_ENV}=host:port to test against a Kafka \
                 broker (e.g. `tansu broker --listener-url tcp://127.0.0.1:19092 \
                 --advertised-listener-url tcp://127.0.0.1:19092`)"
            );
            None
        }
    }
}

/// One audit message as read back from Kafka; identity fields come from the headers.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumedRecord {
    pub record_id: Uuid,
    pub sequence: i64,
    /// Lowercase hex, as in the `countersign-hash` header.
    pub hash: String,
    /// `decision` or `posting`, from the `countersign-kind` header.
    pub kind: String,
    pub key: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub value: serde_json::Value,
}

/// Reads `topic` from the beginning of every partition with a fresh consumer group and no
/// offset commits, until at least `expected_min` distinct record ids were seen **and** every
/// partition is at its end, or until `timeout` (then it returns what it has; the caller's
/// assertions say what is missing). Sorted by (partition, offset).
///
/// Partitions are assigned directly rather than through a group rebalance, so the read does
/// not depend on the broker's group coordinator; the group id is still fresh per call.
/// Panics on a message without the countersign headers: every message on an audit topic
/// must carry them.
pub async fn read_all_records(
    brokers: &str,
    topic: &str,
    expected_min: usize,
    timeout: Duration,
) -> Vec<ConsumedRecord> {
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_blocking(&brokers, &topic, expected_min, timeout))
        .await
        .expect("the Kafka reader task panicked")
}

fn read_blocking(
    brokers: &str,
    topic: &str,
    expected_min: usize,
    timeout: Duration,
) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("countersign-test-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("create the Kafka test consumer");

    let partitions = wait_for_partitions(&consumer, topic, deadline);
    if partitions.is_empty() {
        eprintln!("kafka_support: topic {topic} has no partitions after {timeout:?}");
        return Vec::new();
    }
    let mut assignment = TopicPartitionList::new();
    for &partition in &partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("add a partition to the assignment");
    }
    consumer
        .assign(&assignment)
        .expect("assign the topic's partitions");

    let mut records = Vec::new();
    let mut record_ids = HashSet::new();
    // A partition is at its end from its EOF event until the next message from it.
    let mut at_end: HashSet<i32> = HashSet::new();
    loop {
        if record_ids.len() >= expected_min && at_end.len() == partitions.len() {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "kafka_support: timed out reading {topic} after {timeout:?}: {} messages, {} \
                 distinct record ids (expected at least {expected_min}), {}/{} partitions at \
                 their end",
                records.len(),
                record_ids.len(),
                at_end.len(),
                partitions.len()
            );
            break;
        }
        match consumer.poll(Duration::from_millis(POLL_TIMEOUT_MS)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => eprintln!("kafka_support: consumer error on {topic}: {error}"),
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                let record = decode(&message);
                record_ids.insert(record.record_id);
                records.push(record);
            }
        }
    }
    records.sort_by_key(|record| (record.partition, record.offset));
    records
}

/// The topic's partitions, waiting (until `deadline`) for the topic to exist: it may be
/// created by the first publish.
fn wait_for_partitions(consumer: &BaseConsumer, topic: &str, deadline: Instant) -> Vec<i32> {
    loop {
        let found = consumer
            .fetch_metadata(Some(topic), Duration::from_millis(METADATA_TIMEOUT_MS))
            .ok()
            .and_then(|metadata| {
                metadata
                    .topics()
                    .iter()
                    .find(|candidate| candidate.name() == topic && candidate.error().is_none())
                    .map(|candidate| {
                        candidate
                            .partitions()
                            .iter()
                            .map(|partition| partition.id())
                            .collect::<Vec<_>>()
                    })
            })
            .filter(|partitions| !partitions.is_empty());
        if let Some(partitions) = found {
            return partitions;
        }
        if Instant::now() >= deadline {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(METADATA_RETRY_MS));
    }
}

fn decode(message: &BorrowedMessage<'_>) -> ConsumedRecord {
    let position = format!(
        "{}[{}]@{}",
        message.topic(),
        message.partition(),
        message.offset()
    );
    let mut headers: HashMap<&str, String> = HashMap::new();
    if let Some(message_headers) = message.headers() {
        for header in message_headers.iter() {
            let value = header
                .value
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            headers.insert(header.key, value.into_owned());
        }
    }
    let header = |name: &str| -> String {
        headers
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("{position}: no {name} header (headers: {headers:?})"))
    };
    let record_id = header(HEADER_RECORD_ID);
    let sequence = header(HEADER_SEQUENCE);
    let key = message
        .key()
        .map(|key| String::from_utf8_lossy(key).into_owned())
        .unwrap_or_else(|| panic!("{position}: message has no key"));
    let value = serde_json::from_slice(message.payload().unwrap_or_default())
        .unwrap_or_else(|error| panic!("{position}: value is not JSON: {error}"));
    ConsumedRecord {
        record_id: Uuid::parse_str(&record_id)
            .unwrap_or_else(|error| panic!("{position}: bad record id {record_id:?}: {error}")),
        sequence: sequence
            .parse()
            .unwrap_or_else(|error| panic!("{position}: bad sequence {sequence:?}: {error}")),
        hash: header(HEADER_HASH),
        kind: header(HEADER_KIND),
        key,
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        value,
    }
}

/// Drops repeated deliveries of the same record (at-least-once publishing), keeping the
/// first occurrence of each record id and the order of the rest.
pub fn dedup_by_record_id(records: Vec<ConsumedRecord>) -> Vec<ConsumedRecord> {
    let mut seen = HashSet::with_capacity(records.len());
    records
        .into_iter()
        .filter(|record| seen.insert(record.record_id))
        .collect()
}
