//! The Kafka relay: publishes the PostgreSQL outbox (sealed audit records not yet acknowledged
//! by the broker) in chain order, and marks rows delivered only after the broker acknowledged
//! them. At-least-once: a crash between the acknowledgement and the mark republishes the same
//! records with the same `record_id`, which consumers de-duplicate on.
//!
//! Only the replica that holds the sealer's lock publishes (the others wait to take over), so
//! the chain reaches Kafka in one order and each account's records stay ordered.
//!
//! While the broker is down the relay backs off (bounded) and the outbox grows; transfers keep
//! flowing until `store.outbox.rows_max`, where `store.outbox.when_full` decides.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::{app::AppState, kafka::KafkaPublisher};

/// Wait between retries of a failing broker or database, doubling up to the maximum.
const RETRY_BACKOFF_MS_MIN: u64 = 100;
const RETRY_BACKOFF_MS_MAX: u64 = 2_000;
/// Even without a seal notification, look for new rows this often.
const POLL_INTERVAL_MS: u64 = 500;
/// Partitions of the topics the relay creates when they do not exist. Records are keyed by
/// account, so this bounds the parallelism of consumers; topics created beforehand by the
/// platform team keep their own count.
const TOPIC_PARTITIONS: i32 = 12;
/// Consecutive failed publishes after which the relay starts a fresh producer. A producer
/// that lived through a long broker outage can stay wedged (e.g. waiting for a producer-id
/// epoch bump the broker never grants) without reporting a fatal error; a new producer (new
/// producer id) republishes the same records, which consumers de-duplicate.
const PRODUCER_RESET_FAILURES: u32 = 3;
/// How long the relay keeps trying to flush the outbox at shutdown before it gives up (the
/// rows stay in the outbox; the next start or another replica publishes them).
const SHUTDOWN_FLUSH_MS: u64 = 10_000;

/// Runs until `stop` turns true and the outbox is empty, or the shutdown flush bound passes.
pub async fn run(
    state: Arc<AppState>,
    mut publisher: KafkaPublisher,
    batch_records_max: i64,
    mut stop: watch::Receiver<bool>,
) {
    let sealed = state.store.sealed();
    let mut backoff_ms = RETRY_BACKOFF_MS_MIN;
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    // Checked before the first publish and again after any failure: a broker that lost its
    // topics (or a new cluster) gets them back before the outbox is retried.
    let mut topics_ready = false;
    let mut failures_in_a_row: u32 = 0;
    loop {
        if *stop.borrow() && stop_deadline.is_none() {
            stop_deadline =
                Some(tokio::time::Instant::now() + Duration::from_millis(SHUTDOWN_FLUSH_MS));
        }
        if stop_deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
            tracing::warn!("kafka relay: shutdown flush bound reached; the outbox keeps the rest");
            break;
        }
        let notified = sealed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        if !state.store.is_sealer_leader() {
            // Another replica streams; take over when its sealer lock is released.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
            continue;
        }
        if !topics_ready {
            match publisher.ensure_topics(TOPIC_PARTITIONS).await {
                Ok(()) => topics_ready = true,
                Err(error) => {
                    tracing::warn!(error = %error, backoff_ms, "kafka relay: cannot ensure the topics; will retry");
                    back_off(&state, &mut backoff_ms, &mut stop).await;
                    continue;
                }
            }
        }
        let published = match publish_once(&state, &publisher, batch_records_max).await {
            Ok(published) => {
                backoff_ms = RETRY_BACKOFF_MS_MIN;
                failures_in_a_row = 0;
                published
            }
            Err(error) => {
                tracing::warn!(error = %error, backoff_ms, "kafka relay: will retry");
                topics_ready = false;
                failures_in_a_row += 1;
                if failures_in_a_row >= PRODUCER_RESET_FAILURES {
                    match KafkaPublisher::new(publisher.config()) {
                        Ok(fresh) => {
                            tracing::warn!(
                                failures_in_a_row,
                                "kafka relay: starting a fresh producer"
                            );
                            publisher = fresh;
                            failures_in_a_row = 0;
                        }
                        Err(error) => {
                            tracing::error!(error = %error, "kafka relay: cannot start a fresh producer");
                        }
                    }
                }
                back_off(&state, &mut backoff_ms, &mut stop).await;
                continue;
            }
        };
        if let Ok(backlog) = state.store.outbox_backlog().await {
            state.metrics.outbox_backlog_records.set(backlog);
        }
        if published > 0 {
            continue;
        }
        if *stop.borrow() {
            // Stopping and nothing left that is sealed: the sealer has had its last run.
            break;
        }
        tokio::select! {
            () = &mut notified => {}
            _ = tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::info!("kafka relay stopped");
}

/// Counts a failure and waits `backoff_ms` (or until `stop` changes), then doubles it up to
/// the maximum.
async fn back_off(state: &AppState, backoff_ms: &mut u64, stop: &mut watch::Receiver<bool>) {
    state.metrics.kafka_publish_failures.inc();
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(*backoff_ms)) => {}
        _ = stop.changed() => {}
    }
    *backoff_ms = (*backoff_ms * 2).min(RETRY_BACKOFF_MS_MAX);
}

/// One step: reads up to `batch_records_max` pending rows, publishes them, marks the
/// acknowledged ones delivered. Returns how many were marked.
async fn publish_once(
    state: &AppState,
    publisher: &KafkaPublisher,
    batch_records_max: i64,
) -> Result<usize, String> {
    let pending = state
        .store
        .outbox_pending(batch_records_max)
        .await
        .map_err(|error| format!("reading the outbox: {error}"))?;
    if pending.is_empty() {
        return Ok(0);
    }
    let batch: Vec<_> = pending
        .into_iter()
        .map(|item| (item.sealed, item.key))
        .collect();
    let acknowledged = publisher
        .publish(&batch)
        .await
        .map_err(|error| format!("publishing to Kafka: {error}"))?;
    if acknowledged.is_empty() {
        return Err("the broker acknowledged none of the batch".to_owned());
    }
    state
        .store
        .outbox_mark_delivered(&acknowledged)
        .await
        .map_err(|error| format!("marking delivered: {error}"))?;
    state
        .metrics
        .kafka_records_published
        .inc_by(acknowledged.len() as u64);
    if acknowledged.len() < batch.len() {
        return Err(format!(
            "the broker acknowledged {} of {} records; the rest are retried",
            acknowledged.len(),
            batch.len()
        ));
    }
    Ok(acknowledged.len())
}
