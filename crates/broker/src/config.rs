//! What a broker is started with, checked once.
//!
//! [`BrokerConfig`] is plain data a caller fills in; [`Broker::start`]
//! checks it into a [`Checked`] config, so that code deeper in the broker
//! never meets a zero partition count or a zero-byte retention.
//!
//! [`Broker::start`]: crate::Broker::start

use std::net::SocketAddr;

use crate::BrokerError;

/// How a broker listens and keeps data.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Address to listen on; port 0 picks a free one. Must be loopback
    /// unless `advertised_host` is set.
    pub listen: SocketAddr,
    /// Host name given to clients in metadata; the listen IP if `None`.
    pub advertised_host: Option<String>,
    /// Bytes each partition keeps; the oldest batches go beyond that
    /// (the newest batch is always kept).
    pub retention_bytes: u64,
    /// Partitions of a topic created without a count (auto-created, or
    /// CreateTopics with -1).
    pub default_partitions: i32,
    /// Whether Metadata requests that allow it create missing topics.
    pub auto_create_topics: bool,
    /// Largest record batch accepted (Kafka's `message.max.bytes`).
    pub max_message_bytes: usize,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`);
    /// a bigger one closes the connection.
    pub max_request_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertised_host: None,
            retention_bytes: 64 * 1024 * 1024,
            default_partitions: 1,
            auto_create_topics: true,
            max_message_bytes: 1024 * 1024 + 12,
            max_request_bytes: 100 * 1024 * 1024,
        }
    }
}

/// A config whose numbers are known to be usable.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub listen: SocketAddr,
    pub advertised_host: String,
    pub retention_bytes: u64,
    pub default_partitions: i32,
    pub auto_create_topics: bool,
    pub max_message_bytes: usize,
    pub max_request_bytes: usize,
}

impl BrokerConfig {
    pub(crate) fn check(&self) -> Result<Checked, BrokerError> {
        let bad = |what: &str| Err(BrokerError::Config(what.to_string()));
        if self.retention_bytes == 0 {
            return bad("retention_bytes must be above 0");
        }
        if self.default_partitions < 1 {
            return bad("default_partitions must be at least 1");
        }
        if self.max_message_bytes == 0 || self.max_request_bytes < self.max_message_bytes {
            return bad("max_request_bytes must be at least max_message_bytes, above 0");
        }
        if i32::try_from(self.max_request_bytes).is_err() {
            return bad("max_request_bytes must fit in an i32");
        }
        Ok(Checked {
            listen: self.listen,
            advertised_host: self
                .advertised_host
                .clone()
                .unwrap_or_else(|| self.listen.ip().to_string()),
            retention_bytes: self.retention_bytes,
            default_partitions: self.default_partitions,
            auto_create_topics: self.auto_create_topics,
            max_message_bytes: self.max_message_bytes,
            max_request_bytes: self.max_request_bytes,
        })
    }
}
