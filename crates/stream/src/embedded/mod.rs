//! An in-process broker for trying recstream without a Kafka cluster.
//!
//! It is `recstream-broker`: real Kafka protocol on a real loopback TCP
//! port, so any client (kcat, confluent-kafka, kafka-python, recstream
//! itself) can produce, consume in groups and create topics. It keeps
//! everything in memory, has one node, keeps a bounded number of bytes per
//! partition, and forgets everything when the process exits. It is for
//! demos, tests and single-machine trials, never for data you care about.
//!
//! It replaced librdkafka's mock cluster, whose fetches walked every stored
//! message set and whose group coordinator aborted under member churn
//! (BENCHMARKS.md, "Sustained load"). The broker serves from its own
//! thread; a second thread runs the `watch` that warns before the broker
//! falls behind or starts dropping data.

mod watch;

use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use recstream_broker::{Broker, BrokerConfig};

use crate::topics::TopicSpec;

/// Bytes each partition of the embedded broker keeps before it drops its
/// oldest batches. Four partitions of each of `run`'s topics hold under 1 GiB
/// at most, and a few minutes of 1,000 requests and ratings a second.
pub const RETENTION_BYTES: u64 = 32 * 1024 * 1024;

/// A running in-memory broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    broker: Option<Arc<Broker>>,
    stop: Option<mpsc::Sender<()>>,
    watch: Option<JoinHandle<()>>,
}

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the embedded broker: {0}")]
pub struct EmbeddedBrokerError(String);

impl EmbeddedBroker {
    /// Starts a one-node broker on a free loopback port with `topics`
    /// created.
    pub fn start(topics: &[TopicSpec]) -> Result<Self, EmbeddedBrokerError> {
        let config = BrokerConfig {
            retention_bytes: RETENTION_BYTES,
            ..BrokerConfig::default()
        };
        let broker = Broker::start(config).map_err(|e| EmbeddedBrokerError(e.to_string()))?;
        for topic in topics {
            let configs: Vec<(&str, &str)> = topic
                .configs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            broker
                .create_topic(&topic.name, topic.partitions, &configs)
                .map_err(|e| EmbeddedBrokerError(e.to_string()))?;
        }
        let bootstrap = broker.bootstrap();
        let broker = Arc::new(broker);
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let watched = broker.clone();
        let topics = topics.to_vec();
        let watch = std::thread::Builder::new()
            .name("broker-watch".into())
            .spawn(move || {
                // Look until told to stop (or until the owner is gone).
                let mut watch = watch::Watch::new(&topics);
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(watch::TICK) {
                    watch.tick(&watched);
                }
            })
            .map_err(|e| EmbeddedBrokerError(e.to_string()))?;
        Ok(EmbeddedBroker {
            bootstrap,
            broker: Some(broker),
            stop: Some(stop_tx),
            watch: Some(watch),
        })
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(watch) = self.watch.take() {
            let _ = watch.join();
        }
        // The watch held the only other handle: this drop stops the broker
        // and joins its thread.
        self.broker.take();
    }
}
