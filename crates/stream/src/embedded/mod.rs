//! An in-process broker for trying recstream without a Kafka cluster.
//!
//! It is librdkafka's mock cluster: real Kafka protocol on a real loopback TCP
//! port, so any client (kcat, confluent-kafka, kafka-python, recstream
//! itself) can produce and consume, but it keeps everything in memory, has
//! one replica, and forgets everything when the process exits. It is for
//! demos and tests, never for data you care about.
//!
//! The mock cluster cannot move between threads, so it lives on its own
//! thread for as long as the [`EmbeddedBroker`] value does; that thread also
//! runs the `watch` that warns before the broker falls behind.

mod watch;

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;

use crate::topics::TopicSpec;

/// A running in-memory broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the embedded broker: {0}")]
pub struct EmbeddedBrokerError(String);

impl EmbeddedBroker {
    /// Starts a one-broker cluster with `topics` created.
    pub fn start(topics: &[TopicSpec]) -> Result<Self, EmbeddedBrokerError> {
        let topics = topics.to_vec();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("recstream-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for topic in &topics {
                    if let Err(e) = cluster.create_topic(&topic.name, topic.partitions, 1) {
                        let _ = ready_tx.send(Err(format!("topic {}: {e}", topic.name)));
                        return;
                    }
                }
                let bootstrap = cluster.bootstrap_servers();
                let _ = ready_tx.send(Ok(bootstrap.clone()));
                // Serve until told to stop (or until the owner is gone),
                // watching the broker's load and retention meanwhile.
                let mut watch = watch::Watch::new(&bootstrap, &topics);
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(watch::TICK) {
                    watch.tick();
                }
                drop(watch);
                drop(cluster);
            })
            .map_err(|e| EmbeddedBrokerError(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(bootstrap)) => Ok(EmbeddedBroker {
                bootstrap,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(EmbeddedBrokerError(e)),
            Err(_) => Err(EmbeddedBrokerError("the broker thread stopped".into())),
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
