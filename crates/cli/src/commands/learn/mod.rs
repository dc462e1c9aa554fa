//! `recstream learn`: fold a stream of ratings into the model and publish
//! the changes to every worker. With `--ratings-topic kinesis:STREAM`
//! (built with the `kinesis` feature), a relay in the same process first
//! puts the stream's ratings on the Kafka ratings topic, once each, and the
//! learner reads them there as usual.

#[cfg(feature = "kinesis")]
mod kinesis;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use recstream_core::modelfile;
use recstream_stream::learner::{self, LearnerConfig};
use recstream_stream::metrics::{Component, Health};
use recstream_stream::topics::{self, TopicSpec};

use super::serve::{DEFAULT_FILES_TOPIC, model_topics, start_metrics};
use crate::args::{KafkaArgs, runtime};
use crate::streams::{KinesisArgs, KinesisInputArgs, is_kinesis};

/// Arguments of `recstream learn`.
#[derive(Debug, Args)]
pub struct LearnArgs {
    #[command(flatten)]
    kafka: KafkaArgs,

    #[command(flatten)]
    learner: LearnerArgs,

    #[command(flatten)]
    kinesis: KinesisArgs,

    /// With --ratings-topic kinesis:STREAM: the Kafka topic the relay puts
    /// the stream's ratings on, and the learners read.
    #[arg(long, default_value = "rating-events", hide = cfg!(not(feature = "kinesis")))]
    relay_topic: String,

    #[command(flatten)]
    kinesis_input: KinesisInputArgs,

    /// Topic the model updates are published to (workers follow it).
    #[arg(long, default_value = "model-updates")]
    model_topic: String,

    /// Consumer group the learners share the ratings partitions in: start
    /// several `recstream learn` with the same group to learn in parallel.
    #[arg(long, default_value = "recstream-learn")]
    group_id: String,

    /// Batch model to start from when the snapshot folder has no snapshot yet.
    #[arg(long, default_value = "model.rsm")]
    model: PathBuf,

    /// Create the ratings, dead-letter, model and files topics if missing
    /// (without it a missing topic is an error at start).
    #[arg(long)]
    create_topics: bool,

    /// Partitions of the topics --create-topics creates: the ratings, model
    /// and item-deltas topics must have the same count (give the existing
    /// ratings topic's).
    #[arg(long, default_value_t = 4)]
    partitions: i32,

    /// Serve Prometheus metrics (prequential accuracy, ratings learnt) on
    /// /metrics, and /healthz, /readyz (ready once it consumes ratings) at this address.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Learner options shared by `learn` and `run`.
#[derive(Debug, Clone, Args)]
pub struct LearnerArgs {
    /// Topic the rating events arrive on (`learn`: kinesis:STREAM for a
    /// Kinesis stream, relayed to --relay-topic).
    #[arg(long, default_value = "rating-events")]
    pub ratings_topic: String,

    /// Topic invalid rating events are written to, with the reason.
    #[arg(long, default_value = "rating-events-dlq")]
    pub ratings_dlq_topic: String,

    /// Folder for snapshots (latest.rsm): a restarted learner, or a new
    /// worker given the snapshot as --model, replays only the updates after it.
    #[arg(long, default_value = "snapshots")]
    pub snapshot_dir: PathBuf,

    /// Seconds between snapshots.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,

    /// Keep items as trained: only users learn (item biases and factors
    /// change only with a new batch model), and learners share nothing.
    #[arg(long)]
    pub freeze_items: bool,

    /// Topic the learners hand their item changes over on, to the learner
    /// that owns each item's partition (partitioned like the ratings topic).
    #[arg(long, default_value = "item-deltas")]
    pub item_deltas_topic: String,

    /// Milliseconds between two hand-overs of item changes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub item_sync_ms: u64,
}

impl LearnerArgs {
    /// The learner configuration for `kafka`.
    pub fn config(
        &self,
        kafka: recstream_stream::kafka::KafkaSettings,
        model_topic: &str,
    ) -> LearnerConfig {
        LearnerConfig {
            ratings_topic: self.ratings_topic.clone(),
            model_topic: model_topic.to_string(),
            dlq_topic: self.ratings_dlq_topic.clone(),
            snapshot_dir: Some(self.snapshot_dir.clone()),
            snapshot_every: Duration::from_secs(self.snapshot_every.max(1)),
            update_items: !self.freeze_items,
            deltas_topic: self.item_deltas_topic.clone(),
            item_sync: Duration::from_millis(self.item_sync_ms.max(1)),
            ..LearnerConfig::new(kafka)
        }
    }

    /// The topics the learner reads and writes: the model and deltas topics
    /// are created partitioned like the ratings topic.
    pub fn topics(&self, partitions: i32, model_topic: &str) -> Vec<TopicSpec> {
        let mut topics = vec![
            TopicSpec::new(&self.ratings_topic, partitions),
            TopicSpec::new(&self.ratings_dlq_topic, partitions),
        ];
        topics.extend(model_topics(model_topic, partitions, DEFAULT_FILES_TOPIC));
        if !self.freeze_items {
            topics.push(TopicSpec::new(&self.item_deltas_topic, partitions));
        }
        topics
    }
}

/// Runs `recstream learn` until Ctrl-C or SIGTERM.
pub fn run(mut args: LearnArgs) -> anyhow::Result<()> {
    let relay = match is_kinesis(&args.learner.ratings_topic) {
        true => {
            let stream =
                std::mem::replace(&mut args.learner.ratings_topic, args.relay_topic.clone());
            Some(relay(&args, &stream)?)
        }
        false => None,
    };
    args.learner
        .config(args.kafka.settings(), &args.model_topic)
        .check()
        .context("checking the settings")?;
    let model = modelfile::load(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        let settings = args.kafka.settings();
        topics::prepare(&settings, &args.learner.topics(args.partitions, &args.model_topic), args.create_topics, &shutdown)
            .await
            .context("checking the topics")?;
        let health = Arc::new(Health::new(Component::Learner));
        start_metrics(args.metrics_addr, health.clone(), &shutdown).await?;
        let config = LearnerConfig { health, group_id: args.group_id.clone(), ..args.learner.config(settings, &args.model_topic) }
            .check()
            .context("checking the settings")?;
        let learning = learner::run(config, model, shutdown.clone());
        let summary = match relay {
            None => learning.await.context("learning")?,
            Some(relay) => beside_relay(relay, learning, &shutdown).await?,
        };
        eprintln!(
            "learnt {} rating(s) (prequential RMSE {:.4}, hit rate@10 {:.4}), {} refused, model sequence {}",
            summary.learnt, summary.rmse, summary.hit_rate_at_10, summary.dead_letters, summary.seq
        );
        Ok(())
    })
}

#[cfg(feature = "kinesis")]
use kinesis::{beside_relay, relay};

#[cfg(not(feature = "kinesis"))]
fn relay(args: &LearnArgs, stream: &str) -> anyhow::Result<std::convert::Infallible> {
    // Parsed (and hidden) in every build; used with the kinesis feature.
    let _ = (&args.kinesis, &args.kinesis_input);
    Err(crate::streams::not_built_in("--ratings-topic", stream))
}

#[cfg(not(feature = "kinesis"))]
async fn beside_relay(
    relay: std::convert::Infallible,
    _learning: impl std::future::Future,
    _shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<learner::LearnerSummary> {
    match relay {}
}
