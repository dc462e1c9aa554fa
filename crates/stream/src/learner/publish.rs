//! The learner's output: model updates, item deltas and dead letters sent,
//! and their acknowledgements settled.
//!
//! Everything goes out through [`delivery::send_with_backpressure`], the one
//! way recstream queues a message, and stays pending until the broker
//! answers. Messages are counted in generations ([`Publisher::advance`]):
//! a hand-over checkpoint is written only once every message of its
//! generation and the ones before is acknowledged, and [`Publisher::settle`]
//! waits for every answer before a snapshot is written, so neither ever
//! claims more than the topics hold. A failed delivery stops the learner
//! (see [`super::LearnerError`]): sent again later, out of order, an update
//! could overwrite a newer state. The one exception is a dead letter too
//! large for its topic, which is cut down and sent again, because a letter
//! without all of its payload is better than no letter.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::oneshot::Canceled;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::context::Fence;
use super::{LearnerConfig, LearnerError};
use crate::delivery::{self, Permanent, Undeliverable, Verdict};
use crate::kafka::LoggingContext;
use crate::metrics as m;
use crate::model_topic::{DeltaMessage, ModelMessage};
use crate::wire;

/// What an outstanding publication was.
#[derive(Debug)]
pub(super) enum Sent {
    /// A user or item state, or a checkpoint, on the model topic.
    Update,
    /// A batch of item deltas on the deltas topic.
    Delta,
    /// A dead letter (kept, so that it can be cut down if it is too large).
    DeadLetter { key: Vec<u8>, letter: Vec<u8> },
}

/// A finished publication: what it was, its generation, and the broker's answer.
pub(super) type Delivered = (Sent, u64, Result<OwnedDeliveryResult, Canceled>);

/// How long a rebalance waits for what was written to be acknowledged.
const FENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// The learner's producer and its unacknowledged publications.
pub(super) struct Publisher {
    producer: FutureProducer<LoggingContext>,
    model_topic: String,
    deltas_topic: String,
    dlq_topic: String,
    pending: FuturesUnordered<BoxFuture<'static, Delivered>>,
    /// The generation new messages join.
    generation: u64,
    /// Unacknowledged messages per generation.
    outstanding: BTreeMap<u64, usize>,
    /// Dead letters dropped because even cut down they could not be delivered.
    undeliverable: u64,
}

impl Publisher {
    /// A producer for `config`'s model and dead-letter topics; its 4 MiB
    /// message limit fits a user state with a long list of rated items.
    pub(super) fn new(config: &LearnerConfig) -> Result<Self, KafkaError> {
        let producer = config
            .kafka
            .producer()
            .set("message.max.bytes", "4194304")
            .create_with_context(LoggingContext::new("learner"))?;
        Ok(Publisher {
            producer,
            model_topic: config.model_topic.clone(),
            deltas_topic: config.deltas_topic.clone(),
            dlq_topic: config.dlq_topic.clone(),
            pending: FuturesUnordered::new(),
            generation: 0,
            outstanding: BTreeMap::new(),
            undeliverable: 0,
        })
    }

    /// Flushes the producer, for a rebalance that takes partitions away.
    pub(super) fn fence(&self) -> Fence {
        let producer = self.producer.clone();
        Box::new(move || {
            if let Err(e) = producer.flush(FENCE_TIMEOUT) {
                tracing::error!(
                    "flushing before giving partitions up failed ({e}); their next owner may read this learner's last states late"
                );
            }
        })
    }

    /// Writes `marker` to `partition` of the model topic and waits for its
    /// offset: the end of the partition as of now.
    pub(super) async fn marker(
        &mut self,
        partition: i32,
        marker: &ModelMessage,
    ) -> Result<i64, LearnerError> {
        let (key, payload) = (marker.key(), marker.encode());
        let record = FutureRecord::to(&self.model_topic)
            .key(&key)
            .payload(&payload)
            .partition(partition);
        let delivery = delivery::send_with_backpressure(&self.producer, record).await?;
        match delivery.await {
            Ok(Ok(delivered)) => Ok(delivered.offset),
            Ok(Err((error, _))) => Err(not_delivered(&self.model_topic, error)),
            Err(Canceled) => Err(LearnerError::ProducerGone {
                topic: self.model_topic.clone(),
            }),
        }
    }

    /// Queues a state or checkpoint for `partition` of the model topic.
    pub(super) async fn update(
        &mut self,
        partition: i32,
        state: &ModelMessage,
    ) -> Result<(), LearnerError> {
        let (key, payload) = (state.key(), state.encode());
        let record = FutureRecord::to(&self.model_topic)
            .key(&key)
            .payload(&payload)
            .partition(partition);
        let delivery = delivery::send_with_backpressure(&self.producer, record).await?;
        self.track(Sent::Update, delivery);
        Ok(())
    }

    /// Queues a batch of item deltas for `partition` of the deltas topic.
    pub(super) async fn deltas(
        &mut self,
        partition: i32,
        message: &DeltaMessage,
    ) -> Result<(), LearnerError> {
        let (key, payload) = (message.key(), message.encode());
        let record = FutureRecord::to(&self.deltas_topic)
            .key(&key)
            .payload(&payload)
            .partition(partition);
        let delivery = delivery::send_with_backpressure(&self.producer, record).await?;
        self.track(Sent::Delta, delivery);
        Ok(())
    }

    /// Keeps `delivery` pending in the current generation.
    fn track(&mut self, sent: Sent, delivery: DeliveryFuture) {
        let generation = self.generation;
        *self.outstanding.entry(generation).or_default() += 1;
        self.pending
            .push(Box::pin(async move { (sent, generation, delivery.await) }));
    }

    /// Closes the current generation and returns its number: what is
    /// queued from now on belongs to the next one.
    pub(super) fn advance(&mut self) -> u64 {
        self.generation += 1;
        self.generation - 1
    }

    /// Whether every message of `generation` and the ones before it is acknowledged.
    pub(super) fn acknowledged(&self, generation: u64) -> bool {
        self.outstanding
            .first_key_value()
            .is_none_or(|(&oldest, _)| oldest > generation)
    }

    /// Queues a dead letter, keyed like the rating it is for.
    pub(super) async fn dead_letter(
        &mut self,
        key: Vec<u8>,
        letter: Vec<u8>,
    ) -> Result<(), LearnerError> {
        let record = FutureRecord::to(&self.dlq_topic).key(&key).payload(&letter);
        let delivery = delivery::send_with_backpressure(&self.producer, record).await?;
        self.track(Sent::DeadLetter { key, letter }, delivery);
        Ok(())
    }

    /// Whether any publication is still waiting for the broker.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next publication to finish; `None` when none is pending.
    pub(super) async fn next(&mut self) -> Option<Delivered> {
        self.pending.next().await
    }

    /// Waits for every outstanding publication.
    pub(super) async fn settle(&mut self) -> Result<(), LearnerError> {
        while let Some(delivered) = self.pending.next().await {
            self.settled(delivered).await?;
        }
        Ok(())
    }

    /// Dead letters dropped because even cut down they were undeliverable.
    pub(super) fn undeliverable(&self) -> u64 {
        self.undeliverable
    }

    /// Accounts for one finished publication: a failed update or delta
    /// stops the learner; a dead letter too large for its topic is cut down
    /// and sent again.
    pub(super) async fn settled(
        &mut self,
        (sent, generation, answer): Delivered,
    ) -> Result<(), LearnerError> {
        if let Some(count) = self.outstanding.get_mut(&generation) {
            *count -= 1;
            if *count == 0 {
                self.outstanding.remove(&generation);
            }
        }
        let error = match answer {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err((error, _))) => error,
            Err(Canceled) => {
                // No acknowledgement came: counted with the timeouts, as
                // dashboards have always counted it.
                metrics::counter!(m::DELIVERY_FAILURES, "reason" => "timed_out").increment(1);
                return Err(LearnerError::ProducerGone {
                    topic: self.topic(&sent).to_string(),
                });
            }
        };
        let verdict = delivery::classify(&error);
        let reason = match verdict {
            Verdict::Permanent(reason) => reason.as_str(),
            Verdict::Retry | Verdict::QueueFull => "timed_out",
        };
        metrics::counter!(m::DELIVERY_FAILURES, "reason" => reason).increment(1);
        match (sent, verdict) {
            (
                Sent::DeadLetter { key, letter },
                Verdict::Permanent(Permanent::TooLarge | Permanent::Refused),
            ) => self.shrink(key, &letter, &error).await,
            (sent, _) => Err(not_delivered(self.topic(&sent), error)),
        }
    }

    /// Sends `letter` again cut down to the smallest dead letter, or drops
    /// it (counted and logged) when it cannot be cut any further.
    async fn shrink(
        &mut self,
        key: Vec<u8>,
        letter: &[u8],
        error: &KafkaError,
    ) -> Result<(), LearnerError> {
        let why = delivery::describe(&self.dlq_topic, error);
        match wire::shrink_dead_letter(letter, wire::MIN_DEAD_LETTER_BYTES) {
            Some(smaller) => {
                tracing::warn!("{why}; sending a smaller dead letter instead");
                self.dead_letter(key, smaller).await
            }
            None => {
                self.undeliverable += 1;
                tracing::error!("{why}; that rating's dead letter is dropped");
                Ok(())
            }
        }
    }

    fn topic(&self, sent: &Sent) -> &str {
        match sent {
            Sent::Update => &self.model_topic,
            Sent::Delta => &self.deltas_topic,
            Sent::DeadLetter { .. } => &self.dlq_topic,
        }
    }
}

/// The error for a delivery to `topic` that failed with `error`: one that
/// can never succeed says why; any other ran out of librdkafka's retries.
fn not_delivered(topic: &str, error: KafkaError) -> LearnerError {
    match delivery::classify(&error) {
        Verdict::Permanent(reason) => LearnerError::Undelivered(Undeliverable {
            topic: topic.to_string(),
            reason,
            source: error,
        }),
        Verdict::Retry | Verdict::QueueFull => LearnerError::NotAcknowledged {
            topic: topic.to_string(),
            source: error,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    fn production(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn an_update_that_can_never_be_delivered_says_why_and_keeps_the_cause() {
        let error = not_delivered(
            "model-updates",
            production(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        assert!(
            matches!(
                &error,
                LearnerError::Undelivered(Undeliverable {
                    reason: Permanent::Unauthorized,
                    ..
                })
            ),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.contains("\"model-updates\""), "{text}");
        assert!(text.contains("check its ACLs"), "{text}");
        assert!(text.contains("a restart resumes"), "{text}");
        assert!(error.source().is_some_and(|s| s.is::<Undeliverable>()));
    }

    #[test]
    fn an_update_not_acknowledged_in_time_is_not_called_undeliverable() {
        let error = not_delivered(
            "model-updates",
            production(RDKafkaErrorCode::MessageTimedOut),
        );
        assert!(
            matches!(&error, LearnerError::NotAcknowledged { topic, .. } if topic == "model-updates"),
            "{error:?}"
        );
        assert!(error.to_string().contains("message.timeout.ms"), "{error}");
        assert!(error.source().is_some_and(|s| s.is::<KafkaError>()));
    }
}
