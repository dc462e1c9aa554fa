//! Stage three: produce the outputs, and commit an input only after its output is acknowledged.
//!
//! This is where at-least-once is decided. Each output is sent with the
//! producer (idempotent, `acks=all`); its input offset is registered with the
//! [`OffsetTracker`] when sent and released when the broker acknowledges it.
//! Every 100 ms the offsets the tracker allows are *stored* on the consumer,
//! which commits them in the background (and on rebalance and close).
//!
//! A failed send or delivery is classified once, by [`delivery::classify`]:
//! - transient (the broker stayed away longer than `message.timeout.ms`, a
//!   leader moved) or a full queue: the output is sent again until it
//!   succeeds or the worker stops; its input is then simply not committed,
//!   and a restarted worker answers it again;
//! - about the message itself (too large for the topic, refused): a reply
//!   becomes an `undeliverable` dead letter, and a dead letter is cut to
//!   [`MIN_DEAD_LETTER_BYTES`] of payload; a dead letter that still cannot
//!   be delivered is logged, counted in `recstream_delivery_failures_total`
//!   and its offset committed, since nothing could ever deliver it;
//! - about the deployment (no such topic, no permission, a fenced
//!   producer): the worker stops with that error, committing nothing past
//!   the failed output, so a supervisor's restart answers it again once the
//!   cause is fixed. Never a silent stall.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::{RebalanceNotice, WorkerContext};
use super::score::{Destination, Output, Scored};
use super::{WorkerConfig, WorkerError, WorkerSummary};
use crate::delivery::{self, Permanent, Undeliverable, Verdict};
use crate::kafka::LoggingContext;
use crate::metrics as m;
use crate::tracker::{OffsetTracker, Ticket};
use crate::wire::{self, MIN_DEAD_LETTER_BYTES, Origin, RejectCode, Rejection};

type DeliveryResult =
    Result<Result<Delivery, (KafkaError, OwnedMessage)>, futures::channel::oneshot::Canceled>;
type Pending = Pin<Box<dyn Future<Output = (Ticket, Output, DeliveryResult)> + Send>>;

/// Everything the stage keeps between messages.
struct Deliverer {
    producer: FutureProducer<LoggingContext>,
    consumer: Arc<StreamConsumer<WorkerContext>>,
    input_topic: String,
    output_topic: String,
    dlq_topic: String,
    tracker: OffsetTracker,
    pending: FuturesUnordered<Pending>,
    retry: VecDeque<(Ticket, Output)>,
    summary: WorkerSummary,
    last_warning: Option<Instant>,
    /// Set when an output can never be delivered for a reason outside the
    /// message (no such topic, no permission): the worker stops.
    fatal: Option<WorkerError>,
}

/// Delivers until the input channel closes and every output is acknowledged
/// (or `drain_timeout` after shutdown), then commits. Stops early with an
/// error when an output can never be delivered for a reason outside the
/// message (see the module docs).
pub(crate) async fn run(
    scored: mpsc::Receiver<Vec<Scored>>,
    producer: FutureProducer<LoggingContext>,
    consumer: Arc<StreamConsumer<WorkerContext>>,
    config: &WorkerConfig,
    shutdown: CancellationToken,
) -> Result<WorkerSummary, WorkerError> {
    let mut stage = Deliverer {
        producer,
        consumer,
        input_topic: config.input_topic.clone(),
        output_topic: config.output_topic.clone(),
        dlq_topic: config.dlq_topic.clone(),
        tracker: OffsetTracker::new(),
        pending: FuturesUnordered::new(),
        retry: VecDeque::new(),
        summary: WorkerSummary::default(),
        last_warning: None,
        fatal: None,
    };
    stage.deliver_all(scored, config, shutdown).await;
    stage.finish().await
}

/// Where the stage stands in shutting down: whether input may still arrive,
/// and when it stops waiting for the last acknowledgements.
struct Drain {
    open: bool,
    deadline: Option<tokio::time::Instant>,
}

impl Drain {
    /// Starts the wait for the last acknowledgements, once.
    fn start(&mut self, timeout: Duration) {
        self.deadline
            .get_or_insert_with(|| tokio::time::Instant::now() + timeout);
    }

    /// Resolves when the wait is over; never before it started.
    async fn expired(&self) {
        match self.deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

impl Deliverer {
    /// The stage's loop: takes scored batches while there is room, settles
    /// acknowledgements, resends and stores offsets on a tick, and drains on
    /// shutdown or when the input ends.
    async fn deliver_all(
        &mut self,
        mut scored: mpsc::Receiver<Vec<Scored>>,
        config: &WorkerConfig,
        shutdown: CancellationToken,
    ) {
        let mut drain = Drain {
            open: true,
            deadline: None,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let unacknowledged = self.pending.len() + self.retry.len();
            if (!drain.open && unacknowledged == 0) || self.fatal.is_some() {
                break;
            }
            let has_room = unacknowledged < config.max_in_flight;
            tokio::select! {
                batch = scored.recv(), if drain.open && has_room => match batch {
                    Some(items) => items.into_iter().for_each(|item| self.accept(item)),
                    None => {
                        drain.open = false;
                        drain.start(config.drain_timeout);
                    }
                },
                Some(done) = self.pending.next(), if !self.pending.is_empty() => self.completed(done),
                _ = tick.tick() => {
                    self.resend();
                    self.store_offsets(false);
                    metrics::gauge!(m::IN_FLIGHT).set(unacknowledged as f64);
                }
                _ = shutdown.cancelled(), if drain.deadline.is_none() => drain.start(config.drain_timeout),
                _ = drain.expired() => {
                    self.summary.abandoned = unacknowledged as u64;
                    tracing::warn!(
                        unacknowledged,
                        "shutdown: gave up waiting for the broker; those requests stay uncommitted and will be answered after a restart"
                    );
                    break;
                }
            }
        }
    }

    /// Stores what is done, commits it, and reports.
    async fn finish(mut self) -> Result<WorkerSummary, WorkerError> {
        self.store_offsets(true);
        let Deliverer {
            consumer,
            summary,
            fatal,
            ..
        } = self;
        commit(consumer).await;
        match fatal {
            Some(error) => Err(error),
            None => Ok(summary),
        }
    }
}

impl Deliverer {
    fn accept(&mut self, item: Scored) {
        match item {
            Scored::Rebalance(RebalanceNotice::Assigned(partitions)) => {
                partitions.iter().for_each(|&p| self.tracker.assign(p));
            }
            Scored::Rebalance(RebalanceNotice::Revoked(partitions)) => {
                partitions.iter().for_each(|&p| self.tracker.revoke(p));
            }
            Scored::Output(output) => {
                let ticket = self
                    .tracker
                    .start(output.position.partition, output.position.offset);
                self.send(ticket, output);
            }
        }
    }

    fn send(&mut self, ticket: Ticket, output: Output) {
        let topic = match output.destination {
            Destination::Reply { .. } => &self.output_topic,
            Destination::DeadLetter(_) => &self.dlq_topic,
        };
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).payload(&output.payload);
        if let Some(key) = &output.key {
            record = record.key(key);
        }
        match self.producer.send_result(record) {
            Ok(delivery) => {
                self.pending.push(Box::pin(async move {
                    let result = delivery.await;
                    (ticket, output, result)
                }));
            }
            Err((error, _record)) => self.failed(ticket, output, error),
        }
    }

    fn topic_of(&self, output: &Output) -> &str {
        match output.destination {
            Destination::Reply { .. } => &self.output_topic,
            Destination::DeadLetter(_) => &self.dlq_topic,
        }
    }

    /// Decides what becomes of an output that could not be sent or delivered.
    fn failed(&mut self, ticket: Ticket, output: Output, error: KafkaError) {
        match delivery::classify(&error) {
            Verdict::QueueFull => self.retry.push_back((ticket, output)),
            Verdict::Retry => {
                let text = delivery::describe(self.topic_of(&output), &error);
                self.warn(&format!("{text}; sending again"));
                self.summary.retries += 1;
                metrics::counter!(m::DELIVERY_RETRIES).increment(1);
                self.retry.push_back((ticket, output));
            }
            Verdict::Permanent(reason @ (Permanent::TooLarge | Permanent::Refused)) => {
                match self.smaller(&output, &error) {
                    Some(letter) => self.send(ticket, letter),
                    None => {
                        // Already a dead letter with almost nothing in it: no
                        // output of this input can ever be delivered.
                        self.summary.undeliverable += 1;
                        metrics::counter!(m::DELIVERY_FAILURES, "reason" => reason.as_str())
                            .increment(1);
                        tracing::error!(
                            partition = output.position.partition,
                            offset = output.position.offset,
                            "{}; this input is skipped and its offset committed",
                            delivery::describe(&self.dlq_topic, &error)
                        );
                        self.tracker.finish(ticket);
                    }
                }
            }
            Verdict::Permanent(reason) => {
                metrics::counter!(m::DELIVERY_FAILURES, "reason" => reason.as_str()).increment(1);
                let topic = self.topic_of(&output).to_string();
                tracing::error!(
                    partition = output.position.partition,
                    offset = output.position.offset,
                    "{}; stopping: nothing is committed past this input",
                    delivery::describe(&topic, &error)
                );
                self.fatal
                    .get_or_insert(WorkerError::Undeliverable(Undeliverable {
                        topic,
                        reason,
                        source: error,
                    }));
            }
        }
    }

    /// The output to send instead of one that was too large or refused: a
    /// reply becomes a dead letter carrying it; a dead letter is cut to
    /// [`MIN_DEAD_LETTER_BYTES`]. `None` when it cannot get smaller.
    fn smaller(&self, output: &Output, error: &KafkaError) -> Option<Output> {
        let payload = match output.destination {
            Destination::Reply { .. } => {
                let rejection = Rejection {
                    code: RejectCode::Undeliverable,
                    message: format!(
                        "the reply could not be delivered to {:?}: {}",
                        self.output_topic,
                        delivery::describe(&self.output_topic, error)
                    ),
                };
                let origin = Origin {
                    topic: &self.input_topic,
                    partition: output.position.partition,
                    offset: output.position.offset,
                };
                wire::encode_dead_letter(&rejection, &origin, Some(&output.payload))
            }
            Destination::DeadLetter(_) => {
                wire::shrink_dead_letter(&output.payload, MIN_DEAD_LETTER_BYTES)?
            }
        };
        let destination = match output.destination {
            Destination::Reply { .. } => Destination::DeadLetter(RejectCode::Undeliverable),
            other => other,
        };
        tracing::warn!(
            partition = output.position.partition,
            offset = output.position.offset,
            "{}; sending a smaller dead letter instead",
            delivery::describe(self.topic_of(output), error)
        );
        Some(Output {
            position: output.position,
            destination,
            key: output.key.clone(),
            payload,
            request_timestamp_ms: None,
        })
    }

    fn completed(&mut self, (ticket, output, result): (Ticket, Output, DeliveryResult)) {
        match result {
            Ok(Ok(_delivery)) => {
                self.tracker.finish(ticket);
                match output.destination {
                    Destination::Reply { cold_start } => {
                        self.summary.replies += 1;
                        metrics::counter!(m::REPLIES_PRODUCED).increment(1);
                        if cold_start {
                            metrics::counter!(m::COLD_STARTS).increment(1);
                        }
                    }
                    Destination::DeadLetter(code) => {
                        self.summary.dead_letters += 1;
                        metrics::counter!(m::DEAD_LETTERS, "reason" => code.as_str()).increment(1);
                    }
                }
                if let Some(sent_ms) = output.request_timestamp_ms {
                    let now_ms = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    if sent_ms > 0 && now_ms >= sent_ms {
                        metrics::histogram!(m::LATENCY).record((now_ms - sent_ms) as f64 / 1000.0);
                    }
                }
            }
            Ok(Err((error, _message))) => self.failed(ticket, output, error),
            Err(_cancelled) => {
                self.summary.retries += 1;
                self.retry.push_back((ticket, output));
            }
        }
    }

    /// Sends again what failed, oldest first, until the producer queue is full.
    fn resend(&mut self) {
        let waiting = self.retry.len();
        for _ in 0..waiting {
            let Some((ticket, output)) = self.retry.pop_front() else {
                break;
            };
            self.send(ticket, output);
        }
    }

    /// Stores the offsets the tracker allows; with `all`, every partition's
    /// current one (for the final commit), not only those that moved.
    fn store_offsets(&mut self, all: bool) {
        let offsets = if all {
            self.tracker.committable()
        } else {
            self.tracker.take_committable()
        };
        if offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for &(partition, offset) in &offsets {
            if tpl
                .add_partition_offset(&self.input_topic, partition, Offset::Offset(offset))
                .is_err()
            {
                continue;
            }
        }
        match self.consumer.store_offsets(&tpl) {
            Ok(()) => {
                for (partition, offset) in offsets {
                    metrics::gauge!(m::COMMITTED_OFFSET, "partition" => partition.to_string())
                        .set(offset as f64);
                }
            }
            // Typically a partition revoked a moment ago: its new owner answers
            // the uncommitted requests again.
            Err(e) => tracing::debug!("offsets not stored ({e}); partition no longer assigned?"),
        }
    }

    fn warn(&mut self, message: &str) {
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(5))
        {
            self.last_warning = Some(now);
            tracing::warn!(
                unacknowledged = self.pending.len() + self.retry.len(),
                "{message}"
            );
        }
    }
}

/// Commits the stored offsets synchronously (the last act of a worker).
async fn commit(consumer: Arc<StreamConsumer<WorkerContext>>) {
    let committed = crate::kafka::blocking("committing the final offsets", move || {
        consumer.commit_consumer_state(CommitMode::Sync)
    })
    .await;
    match committed {
        Ok(Ok(())) => tracing::info!("offsets committed"),
        Ok(Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset))) => {}
        Ok(Err(e)) => {
            tracing::warn!("final commit failed ({e}); uncommitted requests will be answered again")
        }
        Err(e) => tracing::warn!("final commit did not run: {e}"),
    }
}

/// Publishes consumer lag per assigned partition every few seconds.
pub(crate) async fn report_lag(
    consumer: Arc<StreamConsumer<WorkerContext>>,
    topic: String,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let consumer = consumer.clone();
        let topic = topic.clone();
        let measured = crate::kafka::blocking("measuring the consumer lag", move || {
            let committed = consumer.committed(Duration::from_secs(2)).ok()?;
            let mut lags = Vec::new();
            for element in committed.elements().iter().filter(|e| e.topic() == topic) {
                let partition = element.partition();
                let Ok((_low, high)) =
                    consumer.fetch_watermarks(&topic, partition, Duration::from_secs(2))
                else {
                    continue;
                };
                let done = match element.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                lags.push((partition, (high - done).max(0)));
            }
            Some(lags)
        })
        .await;
        if let Ok(Some(lags)) = measured {
            for (partition, lag) in lags {
                metrics::gauge!(m::CONSUMER_LAG, "partition" => partition.to_string())
                    .set(lag as f64);
            }
        }
    }
}
