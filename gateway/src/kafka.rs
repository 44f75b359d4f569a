//! Publishing sealed audit records to Kafka.
//!
//! The database stays the source of truth: an outbox row says a record still has to reach
//! Kafka, and the relay marks it delivered only for the record ids [`KafkaPublisher::publish`]
//! returns, i.e. records the broker acknowledged under `acks=all`. Delivery is therefore
//! at least once: a crash or a failed batch means the same record is published again, and
//! consumers drop duplicates by the `countersign-record-id` header (the record id is unique;
//! `countersign-sequence` and `countersign-hash` let them check the chain as well).
//!
//! Layout of a message:
//! - topic: `decisions_topic` for what someone decided ([`RecordKind::Decision`], and
//!   [`RecordKind::Approval`]: an approve/reject the ledger accepted or refused),
//!   `transactions_topic` for what happened to money ([`RecordKind::Posting`],
//!   [`RecordKind::Reservation`] and [`RecordKind::Release`] of a held transfer);
//! - key: the key the outbox gives (the account), so one account's records land in one
//!   partition and keep their order there;
//! - value: the record's OPA decision-log event in canonical JSON, byte for byte the line the
//!   JSONL decision log writes (`countersign_audit::sink::decision_log_event`);
//! - headers: `countersign-record-id`, `countersign-sequence` (decimal), `countersign-hash`
//!   (lowercase hex) and `countersign-kind` (`decision`, `posting`, `reservation`,
//!   `approval`, `release`), so consumers can route and deduplicate without parsing the value.
//!
//! Order: the producer is idempotent (`enable.idempotence=true`, at most 5 requests in
//! flight per connection), so librdkafka's own retries neither reorder nor duplicate within a
//! partition. Only a batch that fails part-way and is published again can put a record into
//! Kafka twice; see [`KafkaPublisher::publish`] for what the caller may mark delivered.
//!
//! Topics: call [`KafkaPublisher::ensure_topics`] at startup. Brokers with topic
//! auto-creation off (and tansu, which never auto-creates on produce) otherwise leave every
//! message to a missing topic failing with "message timed out" after `message_timeout_ms`.
//!
//! Not here yet: TLS and SASL to the brokers (rdkafka is built without its `ssl`/`sasl`
//! features), so the brokers must be reachable over a trusted network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use countersign_audit::sink::{DecisionLogLabels, decision_log_event};
use countersign_audit::{RecordKind, SealedRecord, canonical_json};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde::Deserialize;
use uuid::Uuid;

/// Header carrying the record id (hyphenated UUID): the deduplication key.
pub const HEADER_RECORD_ID: &str = "countersign-record-id";
/// Header carrying the record's chain sequence, in decimal.
pub const HEADER_SEQUENCE: &str = "countersign-sequence";
/// Header carrying the record's chain hash, lowercase hex.
pub const HEADER_HASH: &str = "countersign-hash";
/// Header carrying the record kind (`decision`, `posting`, `reservation`, `approval`,
/// `release`).
pub const HEADER_KIND: &str = "countersign-kind";

/// librdkafka reports every message within `message.timeout.ms`; this is how much longer we
/// wait for that report before treating the message as unacknowledged. It only guards
/// against a report that never comes (which would be a librdkafka bug), so it is generous.
const DELIVERY_REPORT_GRACE_MS: u64 = 5_000;

/// Bounds of the configurable values, each named with its unit.
const MESSAGE_TIMEOUT_MS_MIN: u64 = 1_000;
const MESSAGE_TIMEOUT_MS_MAX: u64 = 300_000;
const LINGER_MS_MAX: u64 = 1_000;
const BATCH_RECORDS_MAX_MAX: usize = 100_000;
/// With idempotence librdkafka keeps order only up to 5 requests in flight per connection.
const IN_FLIGHT_REQUESTS_MAX: u32 = 5;
/// librdkafka's own range for `message.max.bytes`.
const MESSAGE_BYTES_MAX_MIN: usize = 1_000;
const MESSAGE_BYTES_MAX_MAX: usize = 1_000_000_000;
const ADMIN_TIMEOUT_MS_MAX: u64 = 300_000;
/// Kafka's limit on topic name length.
const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Upper bound for [`KafkaPublisher::ensure_topics`]; far above what an audit stream needs.
const TOPIC_PARTITIONS_MAX: i32 = 1_000;

/// Kafka sink settings (`[kafka]`). Everything but `brokers` has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topic for policy decision records and approval records (approve/reject steps).
    #[serde(default = "default_decisions_topic")]
    pub decisions_topic: String,
    /// Topic for ledger records that move or hold money: postings, reservations of held
    /// transfers and their releases.
    #[serde(default = "default_transactions_topic")]
    pub transactions_topic: String,
    /// `client.id`, shown in broker logs and quotas.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// How long librdkafka may try to deliver one message (queueing, retries, acks) before it
    /// reports failure; this also bounds how long [`KafkaPublisher::publish`] waits.
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u64,
    /// How long the producer waits to fill a request before sending it.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Most records one [`KafkaPublisher::publish`] call accepts; also the producer's local
    /// queue size, so a batch never waits for queue space.
    #[serde(default = "default_batch_records_max")]
    pub batch_records_max: usize,
    /// Requests in flight per broker connection; 1..=5 (order is kept with idempotence).
    #[serde(default = "default_in_flight_requests_max")]
    pub in_flight_requests_max: u32,
    /// Largest request the producer sends (`message.max.bytes`). A record whose event is
    /// larger can never be published: it stays in the outbox and the relay reports it until
    /// this and the broker's limit are raised.
    #[serde(default = "default_message_bytes_max")]
    pub message_bytes_max: usize,
    /// Bound on a topic-creation request in [`KafkaPublisher::ensure_topics`].
    #[serde(default = "default_admin_timeout_ms")]
    pub admin_timeout_ms: u64,
    /// Compression of produced batches.
    #[serde(default)]
    pub compression: KafkaCompression,
}

/// Codecs built into the bundled librdkafka (gzip through libz). zstd is not compiled in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl KafkaCompression {
    fn as_str(self) -> &'static str {
        match self {
            KafkaCompression::None => "none",
            KafkaCompression::Gzip => "gzip",
            KafkaCompression::Snappy => "snappy",
            KafkaCompression::Lz4 => "lz4",
        }
    }
}

fn default_decisions_topic() -> String {
    "countersign.decisions".to_owned()
}
fn default_transactions_topic() -> String {
    "countersign.transactions".to_owned()
}
fn default_client_id() -> String {
    "countersign".to_owned()
}
fn default_message_timeout_ms() -> u64 {
    30_000
}
fn default_linger_ms() -> u64 {
    5
}
fn default_batch_records_max() -> usize {
    1_000
}
fn default_in_flight_requests_max() -> u32 {
    IN_FLIGHT_REQUESTS_MAX
}
fn default_message_bytes_max() -> usize {
    1_000_000
}
fn default_admin_timeout_ms() -> u64 {
    10_000
}

impl KafkaConfig {
    /// The defaults with the given bootstrap servers.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            decisions_topic: default_decisions_topic(),
            transactions_topic: default_transactions_topic(),
            client_id: default_client_id(),
            message_timeout_ms: default_message_timeout_ms(),
            linger_ms: default_linger_ms(),
            batch_records_max: default_batch_records_max(),
            in_flight_requests_max: default_in_flight_requests_max(),
            message_bytes_max: default_message_bytes_max(),
            admin_timeout_ms: default_admin_timeout_ms(),
            compression: KafkaCompression::default(),
        }
    }

    /// The topic a record of `kind` is published to. The one place this routing lives.
    /// Exhaustive on purpose: a new kind must be routed here before it compiles.
    pub fn topic_for(&self, kind: RecordKind) -> &str {
        match kind {
            RecordKind::Decision | RecordKind::Approval => &self.decisions_topic,
            RecordKind::Posting | RecordKind::Reservation | RecordKind::Release => {
                &self.transactions_topic
            }
        }
    }

    /// Checks every bound; errors name the key (relative to the `[kafka]` table).
    pub fn validate(&self) -> Result<(), KafkaError> {
        let invalid = |key: &'static str, reason: String| Err(KafkaError::Config { key, reason });
        if self.brokers.trim().is_empty() {
            return invalid("brokers", "must name at least one host:port".to_owned());
        }
        for (key, topic) in [
            ("decisions_topic", &self.decisions_topic),
            ("transactions_topic", &self.transactions_topic),
        ] {
            if let Err(reason) = check_topic_name(topic) {
                return invalid(key, reason);
            }
        }
        if self.client_id.is_empty() {
            return invalid("client_id", "must not be empty".to_owned());
        }
        if !(MESSAGE_TIMEOUT_MS_MIN..=MESSAGE_TIMEOUT_MS_MAX).contains(&self.message_timeout_ms) {
            return invalid(
                "message_timeout_ms",
                format!("must be {MESSAGE_TIMEOUT_MS_MIN}..={MESSAGE_TIMEOUT_MS_MAX}"),
            );
        }
        // librdkafka refuses a linger at or above the message timeout.
        if self.linger_ms > LINGER_MS_MAX || self.linger_ms >= self.message_timeout_ms {
            return invalid(
                "linger_ms",
                format!("must be at most {LINGER_MS_MAX} and below message_timeout_ms"),
            );
        }
        if !(1..=BATCH_RECORDS_MAX_MAX).contains(&self.batch_records_max) {
            return invalid(
                "batch_records_max",
                format!("must be 1..={BATCH_RECORDS_MAX_MAX}"),
            );
        }
        if !(1..=IN_FLIGHT_REQUESTS_MAX).contains(&self.in_flight_requests_max) {
            return invalid(
                "in_flight_requests_max",
                format!(
                    "must be 1..={IN_FLIGHT_REQUESTS_MAX}; more breaks ordering with idempotence"
                ),
            );
        }
        if !(MESSAGE_BYTES_MAX_MIN..=MESSAGE_BYTES_MAX_MAX).contains(&self.message_bytes_max) {
            return invalid(
                "message_bytes_max",
                format!("must be {MESSAGE_BYTES_MAX_MIN}..={MESSAGE_BYTES_MAX_MAX}"),
            );
        }
        if !(1..=ADMIN_TIMEOUT_MS_MAX).contains(&self.admin_timeout_ms) {
            return invalid(
                "admin_timeout_ms",
                format!("must be 1..={ADMIN_TIMEOUT_MS_MAX}"),
            );
        }
        Ok(())
    }

    /// The librdkafka settings shared by the producer and the admin client.
    fn client_config(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        client
    }

    fn producer_config(&self) -> ClientConfig {
        let mut producer = self.client_config();
        producer
            // Idempotence: librdkafka's retries neither duplicate nor reorder within a
            // partition. It implies acks=all and retries; both are spelled out anyway so a
            // reader (and librdkafka's config check) sees them.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "max.in.flight.requests.per.connection",
                self.in_flight_requests_max.to_string(),
            )
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set("linger.ms", self.linger_ms.to_string())
            // The local queue holds one whole batch, so enqueueing a batch never fails for
            // lack of space when publishes do not overlap.
            .set(
                "queue.buffering.max.messages",
                self.batch_records_max.to_string(),
            )
            .set("message.max.bytes", self.message_bytes_max.to_string())
            .set("compression.codec", self.compression.as_str());
        producer
    }
}

/// Kafka's legal topic names: 1..=249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!("must be 1..={TOPIC_NAME_BYTES_MAX} bytes"));
    }
    if topic == "." || topic == ".." {
        return Err("must not be \".\" or \"..\"".to_owned());
    }
    if let Some(character) = topic.chars().find(|character| {
        !(character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-'))
    }) {
        return Err(format!(
            "contains {character:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// Errors of the Kafka sink. Callers act on them: `Config` is a startup error; the others
/// mean "nothing was delivered, back off and retry".
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka.{key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("creating the Kafka client: {0}")]
    Client(#[source] RdKafkaError),
    #[error("a batch of {records} records is more than batch_records_max ({batch_records_max})")]
    BatchTooLarge {
        records: usize,
        batch_records_max: usize,
    },
    /// Not even the first record of the batch was acknowledged.
    #[error("Kafka did not acknowledge audit record {record_id} (sequence {sequence}): {reason}")]
    NotAcknowledged {
        record_id: Uuid,
        sequence: i64,
        reason: DeliveryFailure,
    },
    #[error("creating Kafka topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("Kafka admin request: {0}")]
    Admin(#[source] RdKafkaError),
    #[error("fetching Kafka metadata: {0}")]
    Metadata(#[source] RdKafkaError),
    #[error("Kafka metadata lists no broker")]
    NoBroker,
    #[error("Kafka metadata task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why one record was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryFailure {
    /// librdkafka refused to queue it (queue full, message too large, …); nothing was sent.
    #[error("not queued: {0}")]
    Enqueue(RdKafkaError),
    /// The broker refused it or `message.timeout.ms` passed without an acknowledgement. It may
    /// still have been written (e.g. the ack was lost), so publishing it again can duplicate.
    #[error("not acknowledged: {0}")]
    Broker(RdKafkaError),
    /// An earlier record of the batch was not queued, so this one was not sent: sending it
    /// would have put it ahead of its predecessor.
    #[error("not sent: an earlier record of the batch was not queued")]
    NotSent,
    /// No delivery report arrived within `message.timeout.ms` plus a grace period.
    #[error("no delivery report in time")]
    NoReport,
    /// The producer went away before reporting (not expected while we hold it).
    #[error("producer dropped the delivery report")]
    Canceled,
}

/// Publishes sealed audit records to Kafka with an idempotent, `acks=all` producer.
///
/// Cheap to share behind an `Arc`; `publish` takes `&self`.
pub struct KafkaPublisher {
    config: KafkaConfig,
    /// Swapped for a fresh producer after a fatal error (see `replace_producer_after_fatal_error`).
    producer: ArcSwap<FutureProducer>,
    labels: DecisionLogLabels,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaPublisher")
            .field("config", &self.config)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// Validates `config` and creates the producer. Does not contact the broker: librdkafka
    /// connects in the background; use [`KafkaPublisher::check_connected`] to probe.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        config.validate()?;
        let producer: FutureProducer = config
            .producer_config()
            .create()
            .map_err(KafkaError::Client)?;
        Ok(KafkaPublisher {
            config: config.clone(),
            producer: ArcSwap::from_pointee(producer),
            labels: DecisionLogLabels::default(),
        })
    }

    /// Replaces the decision-log labels (default: `countersign`, crate version), e.g. with
    /// an instance id. Same labels as the JSONL decision log, so both carry the same events.
    pub fn with_labels(mut self, labels: DecisionLogLabels) -> Self {
        self.labels = labels;
        self
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Sends every record of `batch` (record, message key) in order and waits for the broker
    /// to acknowledge each.
    ///
    /// Returns the ids of the **longest prefix of `batch` whose records were all
    /// acknowledged**, in batch order. The caller may mark exactly those delivered and must
    /// publish the rest again, starting at `batch[returned.len()]`:
    /// - `Ok(ids)` with `ids.len() == batch.len()`: everything is in Kafka.
    /// - `Ok(ids)` with fewer ids: a partial failure, logged as one warning (counts and the
    ///   first failed record with its reason). Records after the first failure that the
    ///   broker did acknowledge are left out on purpose, so the undelivered records stay a contiguous tail in
    ///   sequence order and the retry re-sends each account's records in order; those
    ///   acknowledged ones then appear twice in Kafka (at least once; consumers deduplicate
    ///   by record id).
    /// - `Err(NotAcknowledged)`: not even the first record was acknowledged (the error names
    ///   it and says why); nothing may be marked delivered. `Err(BatchTooLarge)`: more than `batch_records_max` records;
    ///   nothing was sent.
    ///
    /// Waits at most `message_timeout_ms` plus a few seconds' grace. An empty batch returns
    /// `Ok(vec![])` without contacting the broker.
    pub async fn publish(&self, batch: &[(SealedRecord, String)]) -> Result<Vec<Uuid>, KafkaError> {
        if batch.len() > self.config.batch_records_max {
            return Err(KafkaError::BatchTooLarge {
                records: batch.len(),
                batch_records_max: self.config.batch_records_max,
            });
        }
        let producer = self.producer.load_full();
        let pending = self.enqueue(&producer, batch);
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.config.message_timeout_ms + DELIVERY_REPORT_GRACE_MS);

        // Every report is awaited, even after a failure, so that normally nothing of this
        // batch is still in flight when we return (only a missing report, `NoReport`, leaves
        // a message behind, which a retry may then duplicate). librdkafka delivers the
        // messages concurrently; awaiting the reports in order costs nothing.
        let mut outcomes: Vec<Result<(), DeliveryFailure>> = Vec::with_capacity(batch.len());
        for delivery in pending {
            let outcome = match delivery {
                Err(failure) => Err(failure),
                Ok(report) => match tokio::time::timeout_at(deadline, report).await {
                    Err(_elapsed) => Err(DeliveryFailure::NoReport),
                    Ok(Err(_canceled)) => Err(DeliveryFailure::Canceled),
                    Ok(Ok(Err((error, _message)))) => Err(DeliveryFailure::Broker(error)),
                    Ok(Ok(Ok(_delivery))) => Ok(()),
                },
            };
            outcomes.push(outcome);
        }

        let acknowledged_prefix = outcomes
            .iter()
            .take_while(|outcome| outcome.is_ok())
            .count();
        let mut failures = batch
            .iter()
            .zip(outcomes)
            .skip(acknowledged_prefix)
            .filter_map(|((sealed, _key), outcome)| {
                outcome
                    .err()
                    .map(|reason| (sealed.record.record_id, sealed.sequence, reason))
            });
        let Some((record_id, sequence, reason)) = failures.next() else {
            return Ok(batch
                .iter()
                .map(|(sealed, _key)| sealed.record.record_id)
                .collect());
        };
        let failed_records = 1 + failures.count();
        self.replace_producer_after_fatal_error(&producer);
        if acknowledged_prefix == 0 {
            return Err(KafkaError::NotAcknowledged {
                record_id,
                sequence,
                reason,
            });
        }
        // One line per partial failure, not per record: during an outage every record of a
        // batch fails for the same reason.
        tracing::warn!(
            acknowledged_records = acknowledged_prefix,
            failed_records,
            republished_records = batch.len() - acknowledged_prefix,
            record_id = %record_id,
            sequence,
            error = %reason,
            "Kafka acknowledged only part of an audit batch; the rest will be published again"
        );
        Ok(batch[..acknowledged_prefix]
            .iter()
            .map(|(sealed, _key)| sealed.record.record_id)
            .collect())
    }

    /// An idempotent producer that hit a fatal error (e.g. the broker lost its producer
    /// state) refuses every later message, so the relay would retry forever. Replace it with
    /// a fresh producer (new producer id); the records it failed are published again.
    fn replace_producer_after_fatal_error(&self, producer: &Arc<FutureProducer>) {
        let Some((code, reason)) = producer.client().fatal_error() else {
            return;
        };
        tracing::error!(
            code = ?code,
            error = %reason,
            "Kafka producer hit a fatal error; replacing it"
        );
        match self.config.producer_config().create::<FutureProducer>() {
            Ok(fresh) => {
                // Only replace the producer that failed: a concurrent call may have already.
                self.producer.compare_and_swap(producer, Arc::new(fresh));
            }
            Err(error) => tracing::error!(
                error = %error,
                "cannot create a new Kafka producer; will try again on the next failure"
            ),
        }
    }

    /// Queues the batch in order. Stops at the first record librdkafka refuses: queueing a
    /// later record of the same key would put it ahead of the refused one.
    fn enqueue(
        &self,
        producer: &FutureProducer,
        batch: &[(SealedRecord, String)],
    ) -> Vec<Result<DeliveryFuture, DeliveryFailure>> {
        let mut pending = Vec::with_capacity(batch.len());
        let mut refused = false;
        for (sealed, key) in batch {
            if refused {
                pending.push(Err(DeliveryFailure::NotSent));
                continue;
            }
            let record = &sealed.record;
            let value = canonical_json(&decision_log_event(sealed, &self.labels));
            let record_id = record.record_id.hyphenated().to_string();
            let sequence = sealed.sequence.to_string();
            let hash = hex::encode(sealed.hash);
            let headers = OwnedHeaders::new_with_capacity(4)
                .insert(Header {
                    key: HEADER_RECORD_ID,
                    value: Some(record_id.as_str()),
                })
                .insert(Header {
                    key: HEADER_SEQUENCE,
                    value: Some(sequence.as_str()),
                })
                .insert(Header {
                    key: HEADER_HASH,
                    value: Some(hash.as_str()),
                })
                .insert(Header {
                    key: HEADER_KIND,
                    value: Some(record.kind.as_str()),
                });
            let message = FutureRecord::to(self.config.topic_for(record.kind))
                .key(key.as_str())
                .payload(value.as_str())
                .headers(headers);
            match producer.send_result(message) {
                Ok(report) => pending.push(Ok(report)),
                Err((error, _message)) => {
                    refused = true;
                    pending.push(Err(DeliveryFailure::Enqueue(error)));
                }
            }
        }
        pending
    }

    /// Creates the decisions and transactions topics with `partitions` partitions and the
    /// broker's default replication factor, unless they exist (then their partition count is
    /// left alone). Idempotent: safe on every start.
    pub async fn ensure_topics(&self, partitions: i32) -> Result<(), KafkaError> {
        if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
            return Err(KafkaError::Config {
                key: "partitions",
                reason: format!("must be 1..={TOPIC_PARTITIONS_MAX}"),
            });
        }
        let admin: AdminClient<DefaultClientContext> = self
            .config
            .client_config()
            .create()
            .map_err(KafkaError::Client)?;
        let mut names = vec![self.config.decisions_topic.as_str()];
        if self.config.transactions_topic != self.config.decisions_topic {
            names.push(self.config.transactions_topic.as_str());
        }
        // -1: the broker's default.replication.factor, so a single-broker development
        // cluster and a replicated production cluster need no different setting here.
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(-1)))
            .collect();
        let admin_timeout = Duration::from_millis(self.config.admin_timeout_ms);
        let options = AdminOptions::new()
            .request_timeout(Some(admin_timeout))
            .operation_timeout(Some(admin_timeout));
        let results = admin
            .create_topics(&topics, &options)
            .await
            .map_err(KafkaError::Admin)?;
        for result in results {
            match result {
                Ok(topic) => tracing::info!(topic = %topic, partitions, "created Kafka topic"),
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(topic = %topic, "Kafka topic exists");
                }
                Err((topic, code)) => return Err(KafkaError::CreateTopic { topic, code }),
            }
        }
        Ok(())
    }

    /// Readiness probe: fetches cluster metadata within `timeout`. `Ok` means a broker
    /// answered; [`ClusterStatus::missing_topics`] says whether publishing can work yet
    /// (a missing topic is auto-created on first publish only if the broker allows it).
    /// Runs on the blocking pool, since librdkafka's metadata call blocks.
    pub async fn check_connected(&self, timeout: Duration) -> Result<ClusterStatus, KafkaError> {
        let producer = self.producer.load_full();
        let mut wanted = vec![self.config.decisions_topic.clone()];
        if self.config.transactions_topic != self.config.decisions_topic {
            wanted.push(self.config.transactions_topic.clone());
        }
        let started = Instant::now();
        let status = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|metadata| ClusterStatus {
                    brokers: metadata.brokers().len(),
                    missing_topics: wanted
                        .into_iter()
                        .filter(|topic| {
                            !metadata
                                .topics()
                                .iter()
                                .any(|present| present.name() == topic && present.error().is_none())
                        })
                        .collect(),
                })
        })
        .await?
        .map_err(KafkaError::Metadata)?;
        tracing::debug!(
            brokers = status.brokers,
            missing_topics = ?status.missing_topics,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "Kafka metadata fetched"
        );
        if status.brokers == 0 {
            return Err(KafkaError::NoBroker);
        }
        Ok(status)
    }
}

/// What [`KafkaPublisher::check_connected`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Brokers in the metadata; at least 1.
    pub brokers: usize,
    /// Configured topics the cluster does not have (yet).
    pub missing_topics: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<KafkaConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn defaults_fill_everything_but_brokers() {
        let config = parse(r#"brokers = "localhost:9092""#).expect("minimal config parses");
        assert_eq!(config, KafkaConfig::new("localhost:9092"));
        assert_eq!(config.decisions_topic, "countersign.decisions");
        assert_eq!(config.transactions_topic, "countersign.transactions");
        for (kind, topic) in [
            (RecordKind::Decision, "countersign.decisions"),
            (RecordKind::Approval, "countersign.decisions"),
            (RecordKind::Posting, "countersign.transactions"),
            (RecordKind::Reservation, "countersign.transactions"),
            (RecordKind::Release, "countersign.transactions"),
        ] {
            assert_eq!(config.topic_for(kind), topic, "{kind:?}");
        }
        config.validate().expect("defaults are valid");

        assert!(parse("").is_err(), "brokers is required");
        let unknown = parse("brokers = \"b:9092\"\nacks = \"1\"").expect_err("unknown key");
        assert!(unknown.to_string().contains("acks"), "{unknown}");
        let compression = parse("brokers = \"b:9092\"\ncompression = \"lz4\"").expect("lz4");
        assert_eq!(compression.compression, KafkaCompression::Lz4);
        assert!(parse("brokers = \"b:9092\"\ncompression = \"zstd\"").is_err());
    }

    #[test]
    fn validation_names_the_key() {
        type Mutation = fn(&mut KafkaConfig);
        let cases: [(&str, Mutation); 10] = [
            ("brokers", |config| config.brokers = " ".to_owned()),
            ("decisions_topic", |config| {
                config.decisions_topic = "audit/decisions".to_owned()
            }),
            ("transactions_topic", |config| {
                config.transactions_topic = String::new()
            }),
            ("transactions_topic", |config| {
                config.transactions_topic = "..".to_owned()
            }),
            ("message_timeout_ms", |config| config.message_timeout_ms = 0),
            ("message_timeout_ms", |config| {
                config.message_timeout_ms = 3_600_000
            }),
            ("linger_ms", |config| {
                config.message_timeout_ms = 1_000;
                config.linger_ms = 1_000;
            }),
            ("batch_records_max", |config| config.batch_records_max = 0),
            ("in_flight_requests_max", |config| {
                config.in_flight_requests_max = 6
            }),
            ("message_bytes_max", |config| config.message_bytes_max = 10),
        ];
        for (key, mutate) in cases {
            let mut config = KafkaConfig::new("localhost:9092");
            mutate(&mut config);
            match config.validate() {
                Err(KafkaError::Config { key: found, .. }) => assert_eq!(found, key),
                other => panic!("expected a config error for {key}, got {other:?}"),
            }
        }
    }
}
