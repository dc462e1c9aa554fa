//! Exactly-once mode: each batch of replies and its input offsets commit in one Kafka transaction.
//!
//! The loop is the consume-transform-produce pattern of Kafka's transactions:
//! read a batch, begin a transaction, produce its replies and dead letters,
//! add the batch's input offsets to the transaction
//! (`send_offsets_to_transaction`, fenced by the consumer group's
//! generation), commit. Readers with `isolation.level=read_committed` see a
//! batch's replies only once its offsets are committed too, so after a crash
//! each request has exactly one committed reply. On an abortable error the
//! transaction is aborted and the consumer rewound to the batch's first
//! offsets; the batch is then processed again.
//!
//! Before starting, the broker is asked whether it implements the
//! transaction APIs at all ([`crate::probe`]); if not, the worker refuses to
//! start and says which are missing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::consume::{Event, Incoming};
use super::context::WorkerContext;
use super::score::{self, Destination, Scored};
use super::{WorkerConfig, WorkerError, WorkerSummary};
use crate::kafka::LoggingContext;
use crate::metrics::{self as m, Health};
use crate::serving::ServingModel;

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks that the first bootstrap broker implements the transaction APIs.
pub(crate) async fn check_broker(config: &WorkerConfig) -> Result<(), WorkerError> {
    let plaintext = config
        .kafka
        .overrides
        .iter()
        .rev()
        .find(|(k, _)| k == "security.protocol")
        .is_none_or(|(_, v)| v.eq_ignore_ascii_case("plaintext"));
    if !plaintext {
        tracing::info!(
            "exactly-once: broker transaction support is checked by the first commit (secured listener)"
        );
        return Ok(());
    }
    let broker = config
        .kafka
        .brokers
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let apis = crate::probe::api_versions(&broker, Duration::from_secs(15))
        .await
        .map_err(|e| {
            WorkerError::Transactions(format!("cannot ask {broker} which APIs it supports: {e}"))
        })?;
    let missing = crate::probe::missing_transaction_apis(&apis);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(WorkerError::Transactions(format!(
            "the broker at {broker} does not implement Kafka transactions (missing {}); exactly-once mode cannot run on it. \
             Use the default at-least-once mode, or a broker with transaction support (Apache Kafka, Redpanda, ...)",
            missing.join(", ")
        )))
    }
}

/// Runs the exactly-once loop until `shutdown`.
pub(crate) async fn run(
    config: WorkerConfig,
    model: Arc<ServingModel>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<WorkerSummary, WorkerError> {
    check_broker(&config).await?;
    let consumer: StreamConsumer<WorkerContext> = config
        .kafka
        .consumer(&config.group_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create_with_context(WorkerContext::new(config.input_topic.clone(), health))?;
    consumer.subscribe(&[config.input_topic.as_str()])?;
    let producer: Arc<FutureProducer<LoggingContext>> = Arc::new(
        config
            .kafka
            .producer()
            .set("transactional.id", &config.transactional_id)
            .set("transaction.timeout.ms", "60000")
            .create_with_context(LoggingContext::new("transactional-producer"))?,
    );
    blocking(&producer, |p| p.init_transactions(TXN_TIMEOUT))
        .await
        .map_err(|e| {
            WorkerError::Transactions(format!(
                "cannot start transactions (transactional.id {}): {e}",
                config.transactional_id
            ))
        })?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.scoring_threads.max(1))
        .thread_name(|i| format!("recstream-score-{i}"))
        .build()
        .map_err(|e| WorkerError::ThreadPool(e.to_string()))?;
    let rules = Arc::new(score::Rules::from(&config));
    tracing::info!(transactional_id = %config.transactional_id, input = %config.input_topic, "exactly-once worker started");

    let mut summary = WorkerSummary::default();
    let mut stream = consumer.stream();
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            next = stream.next() => next,
        };
        let mut batch = Vec::new();
        match first {
            Some(Ok(message)) => batch.push(Incoming::copy(&message)),
            Some(Err(e)) => {
                tracing::warn!("consumer error: {e}; continuing");
                continue;
            }
            None => break,
        }
        while batch.len() < config.batch_size {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => batch.push(Incoming::copy(&message)),
                _ => break,
            }
        }
        let first_offsets = first_offsets(&batch);
        let next_offsets: BTreeMap<i32, i64> = batch.iter().fold(BTreeMap::new(), |mut acc, m| {
            let next = acc
                .entry(m.position.partition)
                .or_insert(m.position.offset + 1);
            *next = (*next).max(m.position.offset + 1);
            acc
        });
        summary.consumed += batch.len() as u64;
        metrics::counter!(m::REQUESTS_CONSUMED).increment(batch.len() as u64);
        let events: Vec<Event> = batch.into_iter().map(Event::Message).collect();
        let Some(outputs) = score::score_on(&pool, events, &model, &rules).await else {
            return Err(WorkerError::Stage("a scoring thread failed".into()));
        };
        match transact(&config, &producer, &consumer, outputs, &next_offsets).await {
            Ok((replies, letters)) => {
                summary.replies += replies;
                summary.dead_letters += letters;
            }
            Err(e) => {
                summary.retries += 1;
                metrics::counter!(m::DELIVERY_RETRIES).increment(1);
                if is_fatal(&e) {
                    return Err(WorkerError::Transactions(format!(
                        "fatal transaction error: {e}"
                    )));
                }
                tracing::warn!("transaction aborted ({e}); processing the batch again");
                let _ = blocking(&producer, |p| p.abort_transaction(TXN_TIMEOUT)).await;
                rewind(&consumer, &config.input_topic, &first_offsets);
            }
        }
    }
    tracing::info!(
        consumed = summary.consumed,
        replies = summary.replies,
        "exactly-once worker stopped"
    );
    Ok(summary)
}

/// One transaction: outputs, offsets, commit. Returns replies and dead letters committed.
async fn transact(
    config: &WorkerConfig,
    producer: &Arc<FutureProducer<LoggingContext>>,
    consumer: &StreamConsumer<WorkerContext>,
    outputs: Vec<Scored>,
    next_offsets: &BTreeMap<i32, i64>,
) -> Result<(u64, u64), KafkaError> {
    let started = Instant::now();
    producer.begin_transaction()?;
    let mut deliveries = Vec::with_capacity(outputs.len());
    let (mut replies, mut letters) = (0u64, 0u64);
    for scored in &outputs {
        let Scored::Output(output) = scored else {
            continue;
        };
        let topic = match output.destination {
            Destination::Reply { .. } => {
                replies += 1;
                &config.output_topic
            }
            Destination::DeadLetter(_) => {
                letters += 1;
                &config.dlq_topic
            }
        };
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).payload(&output.payload);
        if let Some(key) = &output.key {
            record = record.key(key);
        }
        deliveries.push(producer.send(record, Duration::from_secs(30)));
    }
    for delivery in futures::future::join_all(deliveries).await {
        delivery.map_err(|(e, _)| e)?;
    }
    let mut tpl = TopicPartitionList::new();
    for (&partition, &offset) in next_offsets {
        tpl.add_partition_offset(&config.input_topic, partition, Offset::Offset(offset))?;
    }
    let metadata = consumer.group_metadata().ok_or(KafkaError::Canceled)?;
    blocking(producer, move |p| {
        p.send_offsets_to_transaction(&tpl, &metadata, TXN_TIMEOUT)
    })
    .await?;
    blocking(producer, |p| p.commit_transaction(TXN_TIMEOUT)).await?;
    metrics::counter!(m::REPLIES_PRODUCED).increment(replies);
    for scored in &outputs {
        if let Scored::Output(output) = scored
            && let Destination::DeadLetter(code) = output.destination
        {
            metrics::counter!(m::DEAD_LETTERS, "reason" => code.as_str()).increment(1);
        }
    }
    tracing::debug!(replies, letters, took = ?started.elapsed(), "transaction committed");
    Ok((replies, letters))
}

fn first_offsets(batch: &[Incoming]) -> BTreeMap<i32, i64> {
    batch.iter().fold(BTreeMap::new(), |mut acc, m| {
        let first = acc.entry(m.position.partition).or_insert(m.position.offset);
        *first = (*first).min(m.position.offset);
        acc
    })
}

/// Moves the consumer back to the first offsets of a batch that did not commit.
fn rewind(consumer: &StreamConsumer<WorkerContext>, topic: &str, first: &BTreeMap<i32, i64>) {
    for (&partition, &offset) in first {
        if let Err(e) = consumer.seek(
            topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(10),
        ) {
            tracing::warn!(
                partition,
                "cannot rewind to {offset} ({e}); the partition will resume from its committed offset"
            );
        }
    }
}

fn is_fatal(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => e.is_fatal(),
        _ => false,
    }
}

/// Runs a blocking producer call off the async reactor.
async fn blocking<T: Send + 'static>(
    producer: &Arc<FutureProducer<LoggingContext>>,
    call: impl FnOnce(&FutureProducer<LoggingContext>) -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || call(&producer))
        .await
        .map_err(|_| KafkaError::Canceled)?
}
