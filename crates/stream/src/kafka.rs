//! Kafka client settings: our defaults, the user's `--kafka key=value` overrides, and logging.
//!
//! Every client recstream creates (consumer, producer, admin) starts from the
//! broker list and the defaults below, then applies the user's overrides
//! unchanged, so any librdkafka property works without new code: TLS
//! (`security.protocol=ssl`, `ssl.ca.location=...`), SASL
//! (`sasl.mechanisms=SCRAM-SHA-512`, `sasl.username=...`), timeouts, and the
//! settings Confluent Cloud, MSK or Redpanda document. librdkafka's own
//! messages are routed into our structured logs, with the errors that mean
//! "the broker is unreachable, still retrying" said plainly.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use std::sync::Mutex;

/// Broker address and property overrides shared by every client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// librdkafka properties applied last, over our defaults.
    pub overrides: Vec<(String, String)>,
}

/// Parses one `--kafka KEY=VALUE` argument.
pub fn parse_property(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("empty property name in {text:?}"));
    }
    Ok((key.to_string(), value.to_string()))
}

impl KafkaSettings {
    /// Settings for `brokers` with no overrides.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings {
            brokers: brokers.into(),
            overrides: Vec::new(),
        }
    }

    /// Adds an override (later ones win).
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.overrides.push((key.to_string(), value.to_string()));
        self
    }

    fn base(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.overrides {
            config.set(k, v);
        }
        config
    }

    /// A consumer in `group` that never commits an offset we did not store.
    ///
    /// Auto-commit stays on, but only commits offsets the worker *stores*
    /// after the output is acknowledged (`enable.auto.offset.store=false`);
    /// librdkafka then also commits them on rebalance and close.
    pub fn consumer(&self, group: &str) -> ClientConfig {
        let mut config = self.base(&[
            ("group.id", group),
            ("enable.auto.commit", "true"),
            ("enable.auto.offset.store", "false"),
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            // A topic is never created by reading it (librdkafka's default
            // for consumers, said out loud): topics are checked at start.
            ("allow.auto.create.topics", "false"),
            // Bounded prefetch: at most 4 MiB (or 20,000 messages a
            // partition) of unprocessed input in memory. Measured: more
            // prefetch buys no throughput here and costs resident memory.
            ("queued.max.messages.kbytes", "4096"),
            ("queued.min.messages", "20000"),
            ("fetch.wait.max.ms", "10"),
        ]);
        // The group id given explicitly wins over a `--kafka group.id=...`.
        config.set("group.id", group);
        config
    }

    /// A plain consumer for tools: no group offsets, reads what it is told.
    pub fn reader(&self, group: &str) -> ClientConfig {
        self.base(&[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("allow.auto.create.topics", "false"),
        ])
    }

    /// A producer that waits for full acknowledgement and never duplicates a
    /// message by its own retries.
    pub fn producer(&self) -> ClientConfig {
        self.acknowledged_producer("2")
    }

    /// A producer for load generators (`produce`, `bench`): acknowledged like
    /// [`producer`](Self::producer), but batching like any Kafka client's
    /// default (`linger.ms=5`, librdkafka's and so confluent-kafka's and
    /// kcat's), so that a benchmark loads the broker the way users' own
    /// producers do. `--kafka linger.ms=0` still wins.
    pub fn load_producer(&self) -> ClientConfig {
        self.acknowledged_producer("5")
    }

    fn acknowledged_producer(&self, linger_ms: &str) -> ClientConfig {
        self.base(&[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", linger_ms),
            ("message.timeout.ms", "30000"),
        ])
    }

    /// A client for topic administration.
    pub fn admin(&self) -> ClientConfig {
        self.base(&[])
    }
}

/// A blocking librdkafka call that did not finish: the runtime is shutting
/// down, or the call panicked.
#[derive(Debug, thiserror::Error)]
#[error("a blocking Kafka call ({what}) did not finish: {source}")]
pub struct BlockingCallError {
    /// What was being done, e.g. "fetching the watermarks of \"model-updates\"".
    pub what: String,
    /// Tokio's reason.
    #[source]
    pub source: tokio::task::JoinError,
}

/// Runs a blocking librdkafka call (commit, watermarks, metadata, a
/// transaction step) on tokio's blocking pool, so that the reactor threads
/// never wait on the network. The one way recstream makes such calls from
/// async code: unlike `block_in_place`, it also works on a current-thread
/// runtime.
pub async fn blocking<T, F>(what: impl Into<String>, call: F) -> Result<T, BlockingCallError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|source| BlockingCallError {
            what: what.into(),
            source,
        })
}

/// Routes librdkafka's messages into `tracing`, and reports connection
/// errors in plain words at most once every few seconds.
#[derive(Debug)]
pub struct LoggingContext {
    role: &'static str,
    last_error: Mutex<Option<Instant>>,
}

impl LoggingContext {
    /// A context for a client doing `role` ("consumer", "producer", ...).
    pub fn new(role: &'static str) -> Self {
        LoggingContext {
            role,
            last_error: Mutex::new(None),
        }
    }

    fn should_report(&self) -> bool {
        let Ok(mut last) = self.last_error.lock() else {
            return true;
        };
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < Duration::from_secs(5) => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

impl ClientContext for LoggingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // `--kafka` settings reach every client, so a consumer property on
        // the producer is expected, not worth a warning.
        if facility == "CONFWARN" {
            tracing::debug!(target: "librdkafka", role = self.role, facility, "{message}");
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", role = self.role, facility, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", role = self.role, facility, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", role = self.role, facility, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", role = self.role, facility, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !self.should_report() {
            return;
        }
        let unreachable = reason.contains("Connection refused")
            || reason.contains("brokers are down")
            || reason.contains("Connect to")
            || reason.contains("Disconnected");
        if unreachable {
            tracing::warn!(
                role = self.role,
                "Kafka broker unreachable ({reason}); retrying until it is back"
            );
        } else {
            tracing::warn!(role = self.role, "Kafka client error: {error}: {reason}");
        }
    }
}

/// Tools' consumers keep librdkafka's default rebalance handling.
impl rdkafka::consumer::ConsumerContext for LoggingContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_defaults_but_not_over_the_group() {
        let settings = KafkaSettings::new("b:9092")
            .with("auto.offset.reset", "latest")
            .with("group.id", "ignored")
            .with("security.protocol", "ssl");
        let config = settings.consumer("recstream");
        assert_eq!(config.get("auto.offset.reset"), Some("latest"));
        assert_eq!(config.get("group.id"), Some("recstream"));
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(settings.producer().get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn parses_properties() {
        assert_eq!(
            parse_property("sasl.password=a=b"),
            Ok(("sasl.password".into(), "a=b".into()))
        );
        assert_eq!(
            parse_property("linger.ms="),
            Ok(("linger.ms".into(), String::new()))
        );
        assert!(parse_property("nokey").is_err());
        assert!(parse_property("=v").is_err());
    }
}
