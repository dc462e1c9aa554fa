//! The consumer's context: rebalance notices for the pipeline, readiness, logs.
//!
//! librdkafka calls these hooks from inside the consumer's poll, that is,
//! from the consume stage itself; notices are queued here and picked up by
//! that stage right after, so they enter the pipeline in order with the
//! messages around them.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

use crate::kafka::LoggingContext;
use crate::metrics::Health;

/// A change of the partitions this worker owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RebalanceNotice {
    /// These partitions are now ours.
    Assigned(Vec<i32>),
    /// These partitions are no longer ours.
    Revoked(Vec<i32>),
}

/// Consumer context of a worker.
#[derive(Debug)]
pub struct WorkerContext {
    topic: String,
    logging: LoggingContext,
    health: Arc<Health>,
    notices: Mutex<Vec<RebalanceNotice>>,
    assigned: Mutex<Vec<i32>>,
}

impl WorkerContext {
    /// A context for a consumer of `topic`.
    pub fn new(topic: String, health: Arc<Health>) -> Self {
        WorkerContext {
            topic,
            logging: LoggingContext::new("consumer"),
            health,
            notices: Mutex::new(Vec::new()),
            assigned: Mutex::new(Vec::new()),
        }
    }

    /// Notices queued since the last call.
    pub(crate) fn take_notices(&self) -> Vec<RebalanceNotice> {
        self.notices
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    /// Partitions currently assigned.
    pub fn assigned(&self) -> Vec<i32> {
        self.assigned.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn partitions_of(&self, tpl: &rdkafka::TopicPartitionList) -> Vec<i32> {
        let mut partitions: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        partitions.sort_unstable();
        partitions
    }

    fn note(&self, notice: RebalanceNotice) {
        if let Ok(mut notices) = self.notices.lock() {
            notices.push(notice);
        }
    }
}

impl ClientContext for WorkerContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.logging.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logging.error(error, reason);
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions = self.partitions_of(tpl);
            tracing::info!(?partitions, "partitions revoked");
            if let Ok(mut assigned) = self.assigned.lock() {
                assigned.retain(|p| !partitions.contains(p));
                metrics::gauge!(crate::metrics::ASSIGNED_PARTITIONS).set(assigned.len() as f64);
            }
            self.note(RebalanceNotice::Revoked(partitions));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = self.partitions_of(tpl);
                tracing::info!(?partitions, "partitions assigned");
                if let Ok(mut assigned) = self.assigned.lock() {
                    assigned.extend(&partitions);
                    assigned.sort_unstable();
                    assigned.dedup();
                    metrics::gauge!(crate::metrics::ASSIGNED_PARTITIONS).set(assigned.len() as f64);
                }
                self.health.set_ready(true);
                self.note(RebalanceNotice::Assigned(partitions));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!("rebalance failed: {e}"),
        }
    }

    /// Background and final commits report here: a refused commit is not
    /// data loss (the requests are answered again after a restart) but it
    /// must be seen, not swallowed.
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &rdkafka::TopicPartitionList,
    ) {
        match result {
            Ok(()) => {}
            // Nothing new was stored since the last commit.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                metrics::counter!(crate::metrics::COMMIT_FAILURES).increment(1);
                tracing::warn!(
                    partitions = ?self.partitions_of(offsets),
                    "offset commit failed ({e}); those requests will be answered again after a restart"
                );
            }
        }
    }
}
