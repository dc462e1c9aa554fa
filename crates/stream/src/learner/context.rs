//! The ratings consumer's context: what the group gives and takes, queued for
//! the learner, with the two things that must happen inside the rebalance.
//!
//! librdkafka calls these hooks from inside the consumer's poll, that is,
//! from the learner's own loop; the notices are queued here and handled
//! right after. Two things cannot wait for that:
//!
//! - before partitions are taken away, every message the learner queued is
//!   flushed to the brokers ([`LearnerContext::new`]'s `fence`), so the
//!   learner that takes them over reads everything this one wrote: a state
//!   landing after it has caught up would overwrite its own;
//! - partitions just given are paused, so that no rating of theirs is read
//!   before the learner has restored their users and knows where to resume.

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

use crate::kafka::LoggingContext;
use crate::rebalance::{Notices, RebalanceNotice};

/// Flushes everything queued; called before partitions are taken away.
pub(super) type Fence = Box<dyn Fn() + Send + Sync>;

/// Consumer context of a learner's ratings consumer.
pub(super) struct LearnerContext {
    logging: LoggingContext,
    fence: Fence,
    notices: Notices,
}

impl LearnerContext {
    /// A context for the consumer of `topic`; `fence` flushes the
    /// learner's producer.
    pub(super) fn new(topic: String, fence: Fence) -> Self {
        LearnerContext {
            logging: LoggingContext::new("learner-ratings"),
            fence,
            notices: Notices::new(topic),
        }
    }

    /// Notices queued since the last call, oldest first: partitions given
    /// (paused until restored) and taken away (everything written flushed).
    pub(super) fn take_notices(&self) -> Vec<RebalanceNotice> {
        self.notices.take()
    }

    /// Whether `partition` was taken away in the poll that just returned (a
    /// rating it returned with is then not this learner's to learn: what it
    /// wrote for the partition was flushed for the next owner).
    pub(super) fn revoking(&self, partition: i32) -> bool {
        self.notices.revoking(partition)
    }
}

impl ClientContext for LearnerContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.logging.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logging.error(error, reason);
    }
}

impl ConsumerContext for LearnerContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions = self.notices.partitions_of(tpl);
            tracing::info!(
                ?partitions,
                "ratings partitions revoked; flushing what was written for them"
            );
            (self.fence)();
            self.notices.note(RebalanceNotice::Revoked(partitions));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = self.notices.partitions_of(tpl);
                tracing::info!(?partitions, "ratings partitions assigned");
                if let Err(e) = consumer.pause(tpl) {
                    // Not fatal: a rating of a partition not yet restored is
                    // dropped, and read again after the seek that ends the restore.
                    tracing::warn!("could not pause the new partitions until restored: {e}");
                }
                self.notices.note(RebalanceNotice::Assigned(partitions));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!("rebalance failed: {e}"),
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        // The committed offsets only show the group's progress to
        // operators: a learner resumes from the model topic.
        self.notices.commit_result(
            result,
            offsets,
            "only the learners' lag as Kafka tools show it is affected",
        );
    }
}
