//! Produce errors, classified in one place: wait, retry, or give up with a reason.
//!
//! Every producer in recstream (the worker's replies and dead letters, the
//! learner's model updates, the tools) asks [`classify`] what a failed send
//! or delivery means. Retrying an error that can never succeed (a message
//! over the broker's size limit, a topic that does not exist, a missing
//! ACL) stalls a partition forever without a word; dropping one that would
//! have succeeded on the next try loses data. So: a full local queue is
//! waited out, transient broker and network errors are retried, and the
//! permanent ones are handed back to the caller with a [`Permanent`] reason
//! that names the topic and the likely cause in words an operator can act
//! on, not only librdkafka's code.

use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::metrics as m;

/// What to do about a failed send or delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The local producer queue is full: wait for acknowledgements, then send again.
    QueueFull,
    /// A transient failure (broker away, leader moving, timeout): send again.
    Retry,
    /// It can never succeed as it is.
    Permanent(Permanent),
}

/// Why a message can never be delivered as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permanent {
    /// Larger than the producer's `message.max.bytes` or the topic's `max.message.bytes`.
    TooLarge,
    /// The topic or partition does not exist.
    NoSuchTopic,
    /// The client is not authorized to write to the topic.
    Unauthorized,
    /// The broker refused the record itself (invalid record, policy violation).
    Refused,
    /// The producer is in a fatal state (fenced, or an idempotence invariant broken).
    Fatal,
}

impl Permanent {
    /// A short label for metrics and dead letters.
    pub fn as_str(self) -> &'static str {
        match self {
            Permanent::TooLarge => "too_large",
            Permanent::NoSuchTopic => "no_such_topic",
            Permanent::Unauthorized => "unauthorized",
            Permanent::Refused => "refused",
            Permanent::Fatal => "fatal",
        }
    }

    /// The likely cause and the fix, for a log line or an error.
    pub fn advice(self) -> &'static str {
        match self {
            Permanent::TooLarge => {
                "the message is larger than the producer's message.max.bytes or the topic's max.message.bytes"
            }
            Permanent::NoSuchTopic => {
                "the topic does not exist (create it, or pass --create-topics)"
            }
            Permanent::Unauthorized => {
                "this client is not authorized to write to the topic (check its ACLs)"
            }
            Permanent::Refused => "the broker refused the record",
            Permanent::Fatal => {
                "the producer is in a fatal state (fenced by another producer with the same id, or a broken sequence)"
            }
        }
    }
}

/// The error code inside a produce error, if it has one.
pub fn code(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    error.rdkafka_error_code()
}

/// Classifies a produce error; see the module docs.
pub fn classify(error: &KafkaError) -> Verdict {
    use RDKafkaErrorCode as C;
    let Some(code) = code(error) else {
        // Canceled futures and client-creation errors carry no code: the
        // producer went away, which only happens at shutdown.
        return Verdict::Retry;
    };
    match code {
        C::QueueFull => Verdict::QueueFull,
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            Verdict::Permanent(Permanent::TooLarge)
        }
        C::UnknownTopic | C::UnknownPartition | C::InvalidTopic => {
            Verdict::Permanent(Permanent::NoSuchTopic)
        }
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::Authentication
        | C::SaslAuthenticationFailed => Verdict::Permanent(Permanent::Unauthorized),
        C::InvalidRecord | C::PolicyViolation | C::InvalidRequiredAcks | C::InvalidArgument => {
            Verdict::Permanent(Permanent::Refused)
        }
        C::Fatal | C::ProducerFenced | C::InvalidProducerEpoch | C::Fenced => {
            Verdict::Permanent(Permanent::Fatal)
        }
        _ => Verdict::Retry,
    }
}

/// `cannot produce to "topic": <cause> (<librdkafka error>)`.
pub fn describe(topic: &str, error: &KafkaError) -> String {
    match classify(error) {
        Verdict::Permanent(reason) => {
            format!("cannot produce to {topic:?}: {} ({error})", reason.advice())
        }
        Verdict::QueueFull => format!("producing to {topic:?}: the local queue is full ({error})"),
        Verdict::Retry => format!("producing to {topic:?} failed for now ({error})"),
    }
}

/// A message that can never be delivered as it is: the topic, the likely
/// cause in words, and librdkafka's error.
#[derive(Debug, thiserror::Error)]
#[error("cannot produce to {topic:?}: {} ({source})", reason.advice())]
pub struct Undeliverable {
    /// The topic the message was for.
    pub topic: String,
    /// Why it can never succeed.
    pub reason: Permanent,
    /// librdkafka's error.
    #[source]
    pub source: KafkaError,
}

impl Undeliverable {
    /// The error for `error` on `topic` when [`classify`] says it is permanent.
    pub fn from_error(topic: &str, error: KafkaError) -> Option<Self> {
        match classify(&error) {
            Verdict::Permanent(reason) => Some(Undeliverable {
                topic: topic.to_string(),
                reason,
                source: error,
            }),
            Verdict::QueueFull | Verdict::Retry => None,
        }
    }
}

/// How long a producer waits before queueing again after a full queue or a
/// transient error. librdkafka drains its queue on its own threads, so a
/// short sleep is all the waiting there is to do.
const SEND_RETRY_PAUSE: Duration = Duration::from_millis(5);

/// Queues `record` on `producer`, waiting as long as needed while the local
/// queue is full (counted in `recstream_producer_queue_full_waits_total`) or
/// the broker is away (logged every few seconds); an error that can never
/// succeed is returned at once. The one way every recstream producer outside
/// the worker's delivery stage queues a message.
pub async fn send_with_backpressure<K, P, C>(
    producer: &FutureProducer<C>,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, Undeliverable>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    C: ClientContext + 'static,
{
    let mut last_warning: Option<Instant> = None;
    loop {
        let error = match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((error, returned)) => {
                record = returned;
                error
            }
        };
        match classify(&error) {
            Verdict::QueueFull => {
                metrics::counter!(m::PRODUCER_QUEUE_FULL, "topic" => record.topic.to_string())
                    .increment(1);
            }
            Verdict::Retry => {
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!("{}; trying again", describe(record.topic, &error));
                }
            }
            Verdict::Permanent(reason) => {
                return Err(Undeliverable {
                    topic: record.topic.to_string(),
                    reason,
                    source: error,
                });
            }
        }
        tokio::time::sleep(SEND_RETRY_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn production(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn errors_that_can_never_succeed_are_permanent() {
        for (code, reason) in [
            (RDKafkaErrorCode::MessageSizeTooLarge, Permanent::TooLarge),
            (RDKafkaErrorCode::UnknownTopic, Permanent::NoSuchTopic),
            (
                RDKafkaErrorCode::TopicAuthorizationFailed,
                Permanent::Unauthorized,
            ),
            (RDKafkaErrorCode::InvalidRecord, Permanent::Refused),
            (RDKafkaErrorCode::Fatal, Permanent::Fatal),
        ] {
            assert_eq!(
                classify(&production(code)),
                Verdict::Permanent(reason),
                "{code:?}"
            );
        }
    }

    #[test]
    fn transient_errors_are_retried_and_a_full_queue_waited_out() {
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert_eq!(classify(&production(code)), Verdict::Retry, "{code:?}");
        }
        assert_eq!(
            classify(&production(RDKafkaErrorCode::QueueFull)),
            Verdict::QueueFull
        );
        assert_eq!(classify(&KafkaError::Canceled), Verdict::Retry);
    }

    #[test]
    fn the_description_names_the_topic_and_the_cause() {
        let text = describe("model-updates", &production(RDKafkaErrorCode::UnknownTopic));
        assert!(
            text.starts_with("cannot produce to \"model-updates\": the topic does not exist"),
            "{text}"
        );
        assert!(text.contains("--create-topics"), "{text}");
        let text = describe("r", &production(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(text.contains("message.max.bytes"), "{text}");
    }
}
