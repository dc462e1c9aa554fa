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

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

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

/// "cannot produce to \"topic\": <cause> (<librdkafka error>)".
pub fn describe(topic: &str, error: &KafkaError) -> String {
    match classify(error) {
        Verdict::Permanent(reason) => {
            format!("cannot produce to {topic:?}: {} ({error})", reason.advice())
        }
        Verdict::QueueFull => format!("producing to {topic:?}: the local queue is full ({error})"),
        Verdict::Retry => format!("producing to {topic:?} failed for now ({error})"),
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
