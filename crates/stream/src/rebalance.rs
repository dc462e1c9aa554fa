//! What a consumer group gives and takes, queued for the loop that reads.
//!
//! librdkafka calls a consumer's rebalance hooks from inside its poll, that
//! is, from the loop that reads the topic; the worker's and the learner's
//! contexts note each change here, and that loop picks the notices up right
//! after the poll, in order with the messages around them. Commit results
//! (background and final commits) are reported the same way for both.

use std::sync::Mutex;

use rdkafka::TopicPartitionList;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;

/// A change of the partitions a consumer owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceNotice {
    /// These partitions are now ours.
    Assigned(Vec<i32>),
    /// These partitions are no longer ours.
    Revoked(Vec<i32>),
}

/// Notices about one topic, queued until taken.
#[derive(Debug)]
pub(crate) struct Notices {
    topic: String,
    queue: Mutex<Vec<RebalanceNotice>>,
}

impl Notices {
    /// A queue for the partitions of `topic`.
    pub(crate) fn new(topic: String) -> Self {
        Notices {
            topic,
            queue: Mutex::new(Vec::new()),
        }
    }

    /// The partitions of our topic in `tpl`, sorted.
    pub(crate) fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        let mut partitions: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        partitions.sort_unstable();
        partitions
    }

    /// Queues `notice`.
    pub(crate) fn note(&self, notice: RebalanceNotice) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.push(notice);
        }
    }

    /// Whether a notice not taken yet takes `partition` away.
    pub(crate) fn revoking(&self, partition: i32) -> bool {
        self.queue.lock().is_ok_and(|queue| {
            queue
                .iter()
                .any(|n| matches!(n, RebalanceNotice::Revoked(ps) if ps.contains(&partition)))
        })
    }

    /// Notices queued since the last call, oldest first.
    pub(crate) fn take(&self) -> Vec<RebalanceNotice> {
        self.queue
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    /// Reports a commit's result: a refused commit is counted and logged
    /// with `consequence` (what it means for this consumer), never
    /// swallowed; "nothing new to commit" is not a failure.
    pub(crate) fn commit_result(
        &self,
        result: KafkaResult<()>,
        offsets: &TopicPartitionList,
        consequence: &str,
    ) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                metrics::counter!(crate::metrics::COMMIT_FAILURES).increment(1);
                tracing::warn!(
                    partitions = ?self.partitions_of(offsets),
                    "offset commit failed ({e}); {consequence}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_being_revoked_until_the_notice_is_taken() {
        let notices = Notices::new("t".into());
        notices.note(RebalanceNotice::Assigned(vec![1, 2]));
        notices.note(RebalanceNotice::Revoked(vec![2]));
        assert!(notices.revoking(2));
        assert!(!notices.revoking(1));
        assert_eq!(notices.take().len(), 2);
        assert!(!notices.revoking(2));
    }
}
