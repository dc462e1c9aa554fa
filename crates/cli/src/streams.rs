//! Which transport a topic flag names, and the flags that say where Kafka
//! and Kinesis are.
//!
//! A topic flag holding `kinesis:NAME` names a Kinesis stream; any other
//! value is a Kafka topic (Kafka topic names cannot hold a colon, so the
//! two never clash). Kinesis support is a cargo feature (`--features
//! kinesis`: the AWS SDK takes minutes to build on two cores); without it
//! the Kinesis flags are hidden and a `kinesis:` name is refused with the
//! command that builds it in. `--brokers` is optional on the commands that
//! can run with Kinesis alone, and required as soon as anything is on Kafka.

use clap::{Args, ValueEnum};
use recstream_stream::kafka::KafkaSettings;

use crate::args::KafkaProperties;

/// The prefix that names a Kinesis stream in a topic flag.
pub const KINESIS_PREFIX: &str = "kinesis:";

/// A topic flag's value: a Kafka topic or a Kinesis stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel<'a> {
    /// A Kafka topic.
    Kafka(&'a str),
    /// A Kinesis stream.
    Kinesis(&'a str),
}

/// What `value` names.
pub fn channel(value: &str) -> Channel<'_> {
    match value.strip_prefix(KINESIS_PREFIX) {
        Some(stream) => Channel::Kinesis(stream),
        None => Channel::Kafka(value),
    }
}

/// Whether `value` names a Kinesis stream.
pub fn is_kinesis(value: &str) -> bool {
    matches!(channel(value), Channel::Kinesis(_))
}

/// The Kinesis stream a flag names, checked against Kinesis's naming rules
/// (1 to 128 letters, digits, `_`, `.` and `-`).
#[cfg(feature = "kinesis")]
pub fn stream_name(flag: &str, value: &str) -> anyhow::Result<String> {
    let Channel::Kinesis(name) = channel(value) else {
        anyhow::bail!("{flag} {value} is not a Kinesis stream (kinesis:NAME)");
    };
    let valid = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    anyhow::ensure!(
        valid,
        "{flag} {value}: a Kinesis stream name is 1 to 128 letters, digits, '_', '.' and '-'"
    );
    Ok(name.to_string())
}

/// The error for a Kinesis stream named in a build without Kinesis.
#[cfg(not(feature = "kinesis"))]
pub fn not_built_in(flag: &str, value: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{flag} {value} names a Kinesis stream, but this recstream was built without Kinesis: build it with `cargo build --release --features kinesis` (or `cargo install --path crates/cli --features kinesis`)"
    )
}

/// Where Kafka is, for commands that may run on Kinesis alone.
#[derive(Debug, Clone, Args)]
pub struct OptionalKafkaArgs {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...] (not needed when every
    /// stream is on Kinesis and nothing follows the model topic).
    #[arg(long, env = "RECSTREAM_BROKERS")]
    pub brokers: Option<String>,

    #[command(flatten)]
    pub properties: KafkaProperties,
}

impl OptionalKafkaArgs {
    /// The Kafka settings, or an error saying what needs them (`on_kafka`).
    pub fn require(&self, on_kafka: &str) -> anyhow::Result<KafkaSettings> {
        // An empty RECSTREAM_BROKERS= is no broker list.
        match self
            .brokers
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
        {
            Some(brokers) => Ok(self.properties.settings(brokers)),
            None => anyhow::bail!(
                "--brokers (or RECSTREAM_BROKERS) is required, for what is on Kafka: {on_kafka}"
            ),
        }
    }
}

/// Where a Kinesis reader with no checkpoint starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum KinesisStart {
    /// The oldest record the stream keeps.
    #[default]
    TrimHorizon,
    /// Only records written from now on.
    Latest,
}

/// How a Kinesis input (`serve`'s requests, `learn`'s ratings) is read.
#[derive(Debug, Clone, Args)]
pub struct KinesisInputArgs {
    /// With a Kinesis input: where a shard with no checkpoint starts.
    #[arg(long, value_enum, default_value = "trim-horizon", hide = cfg!(not(feature = "kinesis")))]
    pub kinesis_start: KinesisStart,

    /// With a Kinesis input: the checkpoint file, where each shard was done
    /// to (default: recstream-kinesis-STREAM.json for `serve`,
    /// recstream-kinesis-relay-STREAM.json for `learn`). Locked: one reader
    /// per stream and file.
    #[arg(long, value_name = "FILE", hide = cfg!(not(feature = "kinesis")))]
    pub kinesis_checkpoint: Option<std::path::PathBuf>,

    /// With a Kinesis input: least time between two reads of a shard once
    /// caught up (at least 200ms: a shard allows 5 reads a second, shared by
    /// every application reading it).
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = poll_interval, hide = cfg!(not(feature = "kinesis")))]
    pub kinesis_poll: std::time::Duration,
}

/// A poll interval: a duration (`250ms`, `1s`) of at least 200 ms.
fn poll_interval(text: &str) -> Result<std::time::Duration, String> {
    let poll = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if poll < std::time::Duration::from_millis(200) {
        return Err(format!(
            "{text} is below 200ms: a shard allows 5 reads a second"
        ));
    }
    Ok(poll)
}

/// Where Kinesis is. Region and credentials come from the standard AWS
/// chain (environment, profile, instance role).
#[derive(Debug, Clone, Args)]
pub struct KinesisArgs {
    /// Kinesis endpoint URL, for a VPC endpoint or a local server such as
    /// kinesis-local (default: the region's AWS endpoint).
    #[arg(long, value_name = "URL", hide = cfg!(not(feature = "kinesis")))]
    pub kinesis_endpoint: Option<String>,

    /// AWS region (default: from the AWS chain: AWS_REGION, the profile).
    #[arg(long, value_name = "REGION", hide = cfg!(not(feature = "kinesis")))]
    pub kinesis_region: Option<String>,
}

#[cfg(feature = "kinesis")]
impl KinesisArgs {
    /// The client settings.
    pub fn settings(&self) -> recstream_kinesis::KinesisSettings {
        recstream_kinesis::KinesisSettings {
            endpoint: self.kinesis_endpoint.clone(),
            region: self.kinesis_region.clone(),
        }
    }
}

#[cfg(feature = "kinesis")]
impl From<KinesisStart> for recstream_kinesis::lineage::FirstStart {
    fn from(start: KinesisStart) -> Self {
        match start {
            KinesisStart::TrimHorizon => recstream_kinesis::lineage::FirstStart::TrimHorizon,
            KinesisStart::Latest => recstream_kinesis::lineage::FirstStart::Latest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_broker_list_is_no_broker_list() {
        let kafka = |brokers: Option<&str>| OptionalKafkaArgs {
            brokers: brokers.map(str::to_string),
            properties: KafkaProperties { kafka: Vec::new() },
        };
        assert!(kafka(None).require("x").is_err());
        assert!(kafka(Some(" ")).require("x").is_err());
        assert_eq!(
            kafka(Some("b:9092")).require("x").unwrap().brokers,
            "b:9092"
        );
    }

    #[cfg(feature = "kinesis")]
    #[test]
    fn stream_names_follow_kinesis_rules() {
        assert_eq!(
            stream_name("--x", "kinesis:req-1.a_b").unwrap(),
            "req-1.a_b"
        );
        assert!(stream_name("--x", "kinesis:").is_err());
        assert!(stream_name("--x", "kinesis:a b").is_err());
        assert!(stream_name("--x", &format!("kinesis:{}", "a".repeat(129))).is_err());
        assert!(stream_name("--x", "plain-topic").is_err());
    }

    #[test]
    fn polls_faster_than_kinesis_allows_are_refused() {
        assert_eq!(
            poll_interval("250ms").unwrap(),
            std::time::Duration::from_millis(250)
        );
        assert!(poll_interval("200ms").is_ok());
        assert!(poll_interval("199ms").is_err());
        assert!(poll_interval("fast").is_err());
    }

    #[test]
    fn a_prefix_names_a_kinesis_stream_and_anything_else_a_kafka_topic() {
        assert_eq!(channel("kinesis:requests"), Channel::Kinesis("requests"));
        assert_eq!(
            channel("quickstart-events"),
            Channel::Kafka("quickstart-events")
        );
        assert_eq!(channel("Kinesis:x"), Channel::Kafka("Kinesis:x"));
        assert!(is_kinesis("kinesis:"));
    }
}
