//! Why a learner stops.
//!
//! The learner never retries a failure from inside. Its restart is the
//! retry: a restarted learner resumes from its snapshot and the states it
//! published, whereas a retry from inside could publish a state after a
//! newer one.

use rdkafka::error::KafkaError;

use crate::config::ConfigError;
use crate::kafka::BlockingCallError;

/// Why the learner stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    /// Kafka failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The configuration can never work (see [`LearnerConfig::check`](super::LearnerConfig::check)).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A blocking Kafka call did not finish (the runtime is shutting down).
    #[error("{0}")]
    Blocking(#[from] BlockingCallError),
    /// A snapshot could not be read or written.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A model update or dead letter could not be delivered; the learner
    /// stops so that a restart resumes from what was published.
    #[error("{0}; the learner stops, and a restart resumes from its snapshot and published states")]
    Undelivered(String),
}
