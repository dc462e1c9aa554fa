//! Why a learner stops: each failure with its cause kept as the source, in
//! words that name what failed and what to do about it.
//!
//! The learner never retries a failure from inside. Its restart is the
//! retry: a restarted learner resumes from its snapshot and the states it
//! published, whereas a retry from inside could publish a state after a
//! newer one. So these errors are written for the operator and the
//! supervisor that restarts the learner, not for code that would handle
//! them.

use rdkafka::error::KafkaError;
use recstream_core::modelfile::ModelFileError;

use crate::delivery::Undeliverable;
use crate::kafka::BlockingCallError;

/// Why the learner stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    /// A Kafka client could not be created, assigned or asked for metadata.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A blocking Kafka call did not finish (the runtime is shutting down).
    #[error("{0}")]
    Blocking(#[from] BlockingCallError),
    /// The snapshot to resume from could not be read.
    #[error(
        "cannot resume from the snapshot: {source}; move it aside to start from the batch model (the model topic is then replayed from its start)"
    )]
    SnapshotUnreadable {
        /// Why, with the snapshot's path.
        #[source]
        source: ModelFileError,
    },
    /// The snapshot folder could not be created.
    #[error(
        "cannot create the snapshot folder {}: {source}; check --snapshot-dir and the permissions of its parent",
        dir.display()
    )]
    SnapshotFolder {
        /// The folder.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot could not be written.
    #[error(
        "cannot write a snapshot: {source}; check the free space and the permissions of the snapshot folder"
    )]
    SnapshotUnwritable {
        /// Why, with the snapshot's path.
        #[source]
        source: ModelFileError,
    },
    /// The topics could not be described.
    #[error("{0}")]
    Topics(#[source] Box<crate::topics::TopicError>),
    /// The model or deltas topic is not partitioned like the ratings topic.
    #[error(
        "{topic:?} has {partitions} partition(s) but {ratings_topic:?} has {ratings}: it must be partitioned like the ratings topic, since each learner writes the states of its partitions' users to the partition of the same number; recreate {topic:?} with {ratings} partitions (`recstream learn --create-topics` creates it so)"
    )]
    PartitionedUnlike {
        /// The topic partitioned unlike the ratings.
        topic: String,
        /// Its partitions.
        partitions: usize,
        /// The ratings topic.
        ratings_topic: String,
        /// Its partitions.
        ratings: usize,
    },
    /// A model update or dead letter can never be delivered as it is.
    #[error("{0}; {RESTART}")]
    Undelivered(#[from] Undeliverable),
    /// A model update or dead letter was not acknowledged within
    /// librdkafka's own retries.
    #[error(
        "{topic:?} did not acknowledge a message within message.timeout.ms ({source}); check that its brokers are reachable; {RESTART}"
    )]
    NotAcknowledged {
        /// The topic the message was for.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The producer was dropped while a message was outstanding, which
    /// happens only when the process is going away.
    #[error(
        "the producer went away before {topic:?} acknowledged a message (the process is shutting down); {RESTART}"
    )]
    ProducerGone {
        /// The topic the message was for.
        topic: String,
    },
}

/// What happens next, said in every delivery error: the supervisor's
/// restart is the retry.
const RESTART: &str =
    "the learner stops, and a restart resumes from its snapshot and published states";
