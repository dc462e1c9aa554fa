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

use std::sync::Mutex;

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

use crate::kafka::LoggingContext;

/// A change of the ratings partitions this learner owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Notice {
    /// These partitions are now ours (paused until restored).
    Assigned(Vec<i32>),
    /// These partitions are no longer ours (everything written is flushed).
    Revoked(Vec<i32>),
}

/// Flushes everything queued; called before partitions are taken away.
pub(super) type Fence = Box<dyn Fn() + Send + Sync>;

/// Consumer context of a learner's ratings consumer.
pub(super) struct LearnerContext {
    topic: String,
    logging: LoggingContext,
    fence: Fence,
    notices: Mutex<Vec<Notice>>,
}

impl LearnerContext {
    /// A context for the consumer of `topic`; `fence` flushes the
    /// learner's producer.
    pub(super) fn new(topic: String, fence: Fence) -> Self {
        LearnerContext {
            topic,
            logging: LoggingContext::new("learner-ratings"),
            fence,
            notices: Mutex::new(Vec::new()),
        }
    }

    /// Notices queued since the last call, oldest first.
    pub(super) fn take_notices(&self) -> Vec<Notice> {
        self.notices
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        let mut partitions: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        partitions.sort_unstable();
        partitions
    }

    fn note(&self, notice: Notice) {
        if let Ok(mut notices) = self.notices.lock() {
            notices.push(notice);
        }
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
            let partitions = self.partitions_of(tpl);
            tracing::info!(
                ?partitions,
                "ratings partitions revoked; flushing what was written for them"
            );
            (self.fence)();
            self.note(Notice::Revoked(partitions));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = self.partitions_of(tpl);
                tracing::info!(?partitions, "ratings partitions assigned");
                if let Err(e) = consumer.pause(tpl) {
                    // Not fatal: a rating of a partition not yet restored is
                    // dropped, and read again after the seek that ends the restore.
                    tracing::warn!("could not pause the new partitions until restored: {e}");
                }
                self.note(Notice::Assigned(partitions));
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
        match result {
            Ok(())
            | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                metrics::counter!(crate::metrics::COMMIT_FAILURES).increment(1);
                // The committed offsets only show the group's progress to
                // operators: a learner resumes from the model topic.
                tracing::warn!(
                    partitions = ?self.partitions_of(offsets),
                    "committing the learners' ratings offsets failed ({e}); only lag monitoring is affected"
                );
            }
        }
    }
}
