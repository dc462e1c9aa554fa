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
//! transaction APIs at all ([`crate::api_versions`]); if not, the worker refuses to
//! start and says which are missing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::consume::{Batches, Event, messages_in};
use super::context::WorkerContext;
use super::score::{Destination, Scored, Scorer};
use super::{WorkerConfig, WorkerError, WorkerSummary};
use crate::api_versions::{self, ProbeError};
use crate::kafka::{BlockingCallError, LoggingContext};
use crate::metrics::{self as m, Health};
use crate::serving::ServingModel;

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why exactly-once mode cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// The broker could not be asked which APIs it implements.
    #[error("cannot ask {broker} which APIs it supports: {source}")]
    Probe {
        /// The broker asked.
        broker: String,
        /// Why the question failed.
        #[source]
        source: ProbeError,
    },
    /// The broker lacks transaction APIs.
    #[error(
        "the broker at {broker} does not implement Kafka transactions (missing {}); exactly-once mode cannot run on it. \
         Use the default at-least-once mode, or a broker with transaction support (Apache Kafka, Redpanda, ...)",
        missing.join(", ")
    )]
    Unsupported {
        /// The broker asked.
        broker: String,
        /// The transaction APIs it lacks, by name.
        missing: Vec<&'static str>,
    },
    /// The transactional producer could not be initialised.
    #[error("cannot start transactions (transactional.id {transactional_id}): {source}")]
    Init {
        /// The `transactional.id`.
        transactional_id: String,
        /// The failed step.
        #[source]
        source: StepError,
    },
    /// A transaction failed in a way that aborting cannot recover from.
    #[error("fatal transaction error: {0}")]
    Fatal(#[source] StepError),
}

/// One failed step of a transaction.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// librdkafka refused or failed the step.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The consumer has no group metadata to fence the offsets with: it is
    /// not (or no longer) a member of its group.
    #[error("this worker is not a member of its consumer group right now")]
    NotInGroup,
    /// The step never finished (the runtime is shutting down).
    #[error(transparent)]
    Blocking(#[from] BlockingCallError),
}

impl StepError {
    /// Whether the producer can no longer be used (aborting will not help).
    fn is_fatal(&self) -> bool {
        match self {
            StepError::Kafka(KafkaError::Transaction(e)) => e.is_fatal(),
            StepError::Kafka(_) | StepError::NotInGroup => false,
            StepError::Blocking(_) => true,
        }
    }
}

/// Checks that the first bootstrap broker implements the transaction APIs.
pub(crate) async fn check_broker(config: &WorkerConfig) -> Result<(), TransactionError> {
    let Some(broker) = api_versions::plaintext_broker(&config.kafka) else {
        tracing::info!(
            "exactly-once: broker transaction support is checked by the first commit (secured listener)"
        );
        return Ok(());
    };
    let apis = api_versions::api_versions(&broker, Duration::from_secs(15))
        .await
        .map_err(|source| TransactionError::Probe {
            broker: broker.clone(),
            source,
        })?;
    let missing = api_versions::missing_transaction_apis(&apis);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TransactionError::Unsupported { broker, missing })
    }
}

/// Runs the exactly-once loop until `shutdown`.
pub(crate) async fn run(
    config: WorkerConfig,
    model: Arc<ServingModel>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<WorkerSummary, WorkerError> {
    let mut worker = TransactionalWorker::start(config, model, health).await?;
    let consumer = worker.consumer.clone();
    let mut batches = Batches::new(&consumer, worker.config.batch_size);
    while let Some(events) = batches.next(&shutdown).await {
        worker.process(events).await?;
    }
    worker.summary.log("exactly-once worker stopped");
    Ok(worker.summary)
}

/// The consume-transform-produce loop's state: its clients, its scorer and
/// what it has done so far.
struct TransactionalWorker {
    config: WorkerConfig,
    consumer: Arc<StreamConsumer<WorkerContext>>,
    producer: Arc<FutureProducer<LoggingContext>>,
    scorer: Scorer,
    summary: WorkerSummary,
}

impl TransactionalWorker {
    /// Checks the broker, joins the group and initialises transactions.
    async fn start(
        config: WorkerConfig,
        model: Arc<ServingModel>,
        health: Arc<Health>,
    ) -> Result<Self, WorkerError> {
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
        producer_call(&producer, "init_transactions", |p| {
            p.init_transactions(TXN_TIMEOUT)
        })
        .await
        .map_err(|source| TransactionError::Init {
            transactional_id: config.transactional_id.clone(),
            source,
        })?;
        let scorer = Scorer::start(&config, model)?;
        tracing::info!(transactional_id = %config.transactional_id, input = %config.input_topic, "exactly-once worker started");
        Ok(TransactionalWorker {
            config,
            consumer: Arc::new(consumer),
            producer,
            scorer,
            summary: WorkerSummary::default(),
        })
    }

    /// Scores one batch and commits its outputs with its offsets; on an
    /// abortable failure, aborts and rewinds so the batch comes again.
    async fn process(&mut self, events: Vec<Event>) -> Result<(), WorkerError> {
        let messages = messages_in(&events);
        if messages == 0 {
            return Ok(());
        }
        let offsets = BatchOffsets::of(&events);
        self.summary.consumed += messages;
        let outputs = self
            .scorer
            .score(events)
            .await
            .ok_or(WorkerError::ScoringFailed)?;
        match self.transact(outputs, &offsets.next).await {
            Ok((replies, letters)) => {
                self.summary.replies += replies;
                self.summary.dead_letters += letters;
            }
            Err(e) => {
                self.summary.retries += 1;
                metrics::counter!(m::DELIVERY_RETRIES).increment(1);
                if e.is_fatal() {
                    return Err(TransactionError::Fatal(e).into());
                }
                tracing::warn!("transaction aborted ({e}); processing the batch again");
                let _ = producer_call(&self.producer, "abort_transaction", |p| {
                    p.abort_transaction(TXN_TIMEOUT)
                })
                .await;
                rewind(&self.consumer, &self.config.input_topic, &offsets.first);
            }
        }
        Ok(())
    }

    /// One transaction: outputs, offsets, commit. Returns the replies and
    /// dead letters committed.
    async fn transact(
        &self,
        outputs: Vec<Scored>,
        next_offsets: &BTreeMap<i32, i64>,
    ) -> Result<(u64, u64), StepError> {
        let started = Instant::now();
        self.producer.begin_transaction()?;
        let (replies, letters) = self.produce(&outputs).await?;
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in next_offsets {
            offsets.add_partition_offset(
                &self.config.input_topic,
                partition,
                Offset::Offset(offset),
            )?;
        }
        let group = self
            .consumer
            .group_metadata()
            .ok_or(StepError::NotInGroup)?;
        producer_call(&self.producer, "send_offsets_to_transaction", move |p| {
            p.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)
        })
        .await?;
        producer_call(&self.producer, "commit_transaction", |p| {
            p.commit_transaction(TXN_TIMEOUT)
        })
        .await?;
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

    /// Produces every output inside the open transaction and waits for all
    /// of them; returns how many were replies and dead letters.
    async fn produce(&self, outputs: &[Scored]) -> Result<(u64, u64), KafkaError> {
        let mut deliveries = Vec::with_capacity(outputs.len());
        let (mut replies, mut letters) = (0u64, 0u64);
        for scored in outputs {
            let Scored::Output(output) = scored else {
                continue;
            };
            let topic = match output.destination {
                Destination::Reply { .. } => {
                    replies += 1;
                    &self.config.output_topic
                }
                Destination::DeadLetter(_) => {
                    letters += 1;
                    &self.config.dlq_topic
                }
            };
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(topic).payload(&output.payload);
            if let Some(key) = &output.key {
                record = record.key(key);
            }
            deliveries.push(self.producer.send(record, Duration::from_secs(30)));
        }
        for delivery in futures::future::join_all(deliveries).await {
            delivery.map_err(|(e, _)| e)?;
        }
        Ok((replies, letters))
    }
}

/// Where a batch starts (to rewind to) and ends (to commit) in each partition.
struct BatchOffsets {
    first: BTreeMap<i32, i64>,
    next: BTreeMap<i32, i64>,
}

impl BatchOffsets {
    fn of(events: &[Event]) -> Self {
        let mut offsets = BatchOffsets {
            first: BTreeMap::new(),
            next: BTreeMap::new(),
        };
        for event in events {
            let Event::Message(message) = event else {
                continue;
            };
            let (partition, offset) = (message.position.partition, message.position.offset);
            let first = offsets.first.entry(partition).or_insert(offset);
            *first = (*first).min(offset);
            let next = offsets.next.entry(partition).or_insert(offset + 1);
            *next = (*next).max(offset + 1);
        }
        offsets
    }
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

/// Runs a blocking transactional-producer call off the async reactor.
async fn producer_call<T: Send + 'static>(
    producer: &Arc<FutureProducer<LoggingContext>>,
    what: &'static str,
    call: impl FnOnce(&FutureProducer<LoggingContext>) -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, StepError> {
    let producer = producer.clone();
    Ok(crate::kafka::blocking(what, move || call(&producer)).await??)
}
