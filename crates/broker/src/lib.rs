//! A small in-memory broker that speaks the Kafka protocol, for one process.
//!
//! `recstream run` needs a broker when the user has none; librdkafka's mock
//! cluster walks every stored message set on each fetch, returns one set
//! per partition per fetch, and its group coordinator aborts or stalls
//! under member churn. This crate is the replacement: one node, every
//! partition led by it, everything in memory, nothing durable, and only the
//! APIs (and versions) that librdkafka-based clients use for producing,
//! consuming in groups, and creating and checking topics.
//!
//! The shape: [`Broker::start`] binds a loopback port and spawns one thread
//! running a current-thread tokio runtime (`server`), which accepts
//! connections and answers each request in order (`api`). Partitions are
//! `log`s of whole record batches as producers sent them (`batch` reads
//! their fixed header), indexed by offset; groups are a state machine
//! (`group`) driven by requests and a 100 ms tick. The [`Broker`] value is
//! the owner's handle: create topics, read stats, take the broker down and
//! up for fault tests, and stop it by dropping it.

mod api;
mod batch;
mod config;
mod group;
mod log;
mod server;
mod topics;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::sync::watch;

pub use config::BrokerConfig;
pub use log::PartitionStats;

use server::{Control, Shared, lock};

/// The name of the broker's thread.
pub const THREAD_NAME: &str = "recstream-broker";
/// The thread's name as `/proc/*/task/*/comm` shows it (cut to 15 bytes),
/// for reading its CPU there.
pub const THREAD_COMM: &str = "recstream-broke";

/// Why the broker did not start or a topic was not created.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A config value that cannot work.
    #[error("invalid broker config: {0}")]
    Config(String),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The thread or its runtime could not be started.
    #[error("cannot start the broker thread: {0}")]
    Thread(std::io::Error),
    /// CreateTopic refused.
    #[error("cannot create topic {topic:?}: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// Kafka's error.
        reason: kafka_protocol::ResponseError,
    },
}

/// Counters over the broker's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerStats {
    /// Batches stored.
    pub produced_batches: u64,
    /// Batches that were retries of stored ones (acknowledged, not stored).
    pub duplicate_batches: u64,
    /// Partition reads that returned data.
    pub fetched_partitions: u64,
    /// Batches those reads returned.
    pub fetched_batches: u64,
    /// The most batches one partition returned in one fetch.
    pub max_batches_per_partition: u64,
    /// Fetches waiting for data right now (long polls).
    pub parked_fetches: u64,
}

/// A running broker; dropping it stops it and joins its thread.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
    addr: SocketAddr,
    control: watch::Sender<Control>,
    /// Serving epochs so far (see `Control`).
    epochs: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl Broker {
    /// Binds `config.listen` and starts serving on the broker's own thread.
    pub fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let checked = config.check()?;
        let std_listener =
            std::net::TcpListener::bind(checked.listen).map_err(|source| BrokerError::Bind {
                addr: checked.listen,
                source,
            })?;
        let addr = std_listener
            .local_addr()
            .map_err(|source| BrokerError::Bind {
                addr: checked.listen,
                source,
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|source| BrokerError::Bind { addr, source })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BrokerError::Thread)?;
        let shared = Arc::new(Shared::new(checked, addr.port()));
        let (control, control_rx) = watch::channel(Control::Serve(0));
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(listener) => server::run(thread_shared, listener, control_rx).await,
                        Err(e) => tracing::error!("the broker cannot listen: {e}"),
                    }
                });
            })
            .map_err(BrokerError::Thread)?;
        tracing::debug!(%addr, "broker started");
        Ok(Broker {
            shared,
            addr,
            control,
            epochs: AtomicU64::new(0),
            thread: Some(thread),
        })
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!(
            "{}:{}",
            self.shared.config.advertised_host,
            self.addr.port()
        )
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates a topic with `partitions` and `configs` (kept to be
    /// described back, e.g. `cleanup.policy`).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<(), BrokerError> {
        let configs: BTreeMap<String, String> = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        lock(&self.shared.topics)
            .create(
                name,
                partitions,
                configs,
                self.shared.config.retention_bytes,
                false,
            )
            .map_err(|reason| BrokerError::Topic {
                topic: name.to_string(),
                reason,
            })
    }

    /// Offsets and sizes of a topic's partitions, by index; `None` for an
    /// unknown topic.
    pub fn partition_stats(&self, topic: &str) -> Option<Vec<PartitionStats>> {
        lock(&self.shared.topics)
            .get(topic)
            .map(|t| t.partitions.iter().map(|p| p.stats()).collect())
    }

    /// Counters over the broker's life.
    pub fn stats(&self) -> BrokerStats {
        let c = &self.shared.stats;
        BrokerStats {
            produced_batches: c.produced_batches.load(Ordering::Relaxed),
            duplicate_batches: c.duplicate_batches.load(Ordering::Relaxed),
            fetched_partitions: c.fetched_partitions.load(Ordering::Relaxed),
            fetched_batches: c.fetched_batches.load(Ordering::Relaxed),
            max_batches_per_partition: c.max_batches_per_partition.load(Ordering::Relaxed),
            parked_fetches: c.parked_fetches.load(Ordering::Relaxed),
        }
    }

    /// Takes the broker down (every connection closed, new ones refused,
    /// all state kept) or brings it back on the same port.
    pub fn set_down(&self, down: bool) {
        self.control.send_modify(|c| {
            *c = match (*c, down) {
                (_, true) => Control::Down,
                (Control::Down, false) => {
                    Control::Serve(self.epochs.fetch_add(1, Ordering::Relaxed) + 1)
                }
                (same, false) => same,
            }
        });
    }

    /// Stops serving and joins the thread (also done on drop).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the broker thread panicked");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
