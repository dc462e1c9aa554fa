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
use crate::rebalance::Notices;
pub use crate::rebalance::RebalanceNotice;

/// Consumer context of a worker.
#[derive(Debug)]
pub struct WorkerContext {
    logging: LoggingContext,
    health: Arc<Health>,
    notices: Notices,
    assigned: Mutex<Vec<i32>>,
}

impl WorkerContext {
    /// A context for a consumer of `topic`.
    pub fn new(topic: String, health: Arc<Health>) -> Self {
        WorkerContext {
            logging: LoggingContext::new("consumer"),
            health,
            notices: Notices::new(topic),
            assigned: Mutex::new(Vec::new()),
        }
    }

    /// Notices queued since the last call.
    pub(crate) fn take_notices(&self) -> Vec<RebalanceNotice> {
        self.notices.take()
    }

    /// Partitions currently assigned.
    pub fn assigned(&self) -> Vec<i32> {
        self.assigned.lock().map(|a| a.clone()).unwrap_or_default()
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
            let partitions = self.notices.partitions_of(tpl);
            tracing::info!(?partitions, "partitions revoked");
            if let Ok(mut assigned) = self.assigned.lock() {
                assigned.retain(|p| !partitions.contains(p));
                metrics::gauge!(crate::metrics::ASSIGNED_PARTITIONS).set(assigned.len() as f64);
            }
            self.notices.note(RebalanceNotice::Revoked(partitions));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = self.notices.partitions_of(tpl);
                tracing::info!(?partitions, "partitions assigned");
                if let Ok(mut assigned) = self.assigned.lock() {
                    assigned.extend(&partitions);
                    assigned.sort_unstable();
                    assigned.dedup();
                    metrics::gauge!(crate::metrics::ASSIGNED_PARTITIONS).set(assigned.len() as f64);
                }
                self.health.set_ready(true);
                self.notices.note(RebalanceNotice::Assigned(partitions));
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
        self.notices.commit_result(
            result,
            offsets,
            "those requests will be answered again after a restart",
        );
    }
}
