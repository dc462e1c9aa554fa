//! `recstream serve`: the long-running worker, on a Kafka cluster you
//! already run, or with requests from a Kinesis stream (`kinesis`, built
//! with the `kinesis` feature).

#[cfg(feature = "kinesis")]
mod kinesis;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use recstream_core::recommend::MAX_N;
use recstream_core::{Recommender, modelfile};
use recstream_stream::config::Checked;
use recstream_stream::kafka::KafkaSettings;
use recstream_stream::metrics::Health;
use recstream_stream::serving::ServingModel;
use recstream_stream::topics::{self, TopicSpec};
use recstream_stream::worker::{self, WorkerConfig, WorkerSummary};
use tokio_util::sync::CancellationToken;

use crate::args::runtime;
use crate::streams::{KinesisArgs, KinesisInputArgs, OptionalKafkaArgs, is_kinesis};

/// Arguments of `recstream serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    kafka: OptionalKafkaArgs,

    #[command(flatten)]
    kinesis: KinesisArgs,

    #[command(flatten)]
    kinesis_input: KinesisInputArgs,

    /// Model file written by `recstream train`.
    #[arg(long, default_value = "model.rsm")]
    model: PathBuf,

    #[command(flatten)]
    worker: WorkerArgs,

    /// Create the topics the worker uses if they do not exist (requests,
    /// replies, dead letters, and the model and files topics unless
    /// --no-follow), Kinesis streams included. Without it a missing topic is
    /// an error at start.
    #[arg(long)]
    create_topics: bool,

    /// Partitions of the topics --create-topics creates (shards of a Kinesis stream).
    #[arg(long, default_value_t = 4)]
    partitions: i32,
}

/// Worker options shared by `serve` and `run`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Topic the requests arrive on (`serve`: kinesis:STREAM for a Kinesis stream).
    #[arg(long, default_value = "quickstart-events")]
    pub input_topic: String,

    /// Topic the replies are written to (kinesis:STREAM with Kinesis requests).
    #[arg(long, default_value = "recommendation-events")]
    pub output_topic: String,

    /// Topic invalid requests are written to, with the reason (kinesis:STREAM with Kinesis requests).
    #[arg(long, default_value = "recommendation-events-dlq")]
    pub dlq_topic: String,

    /// Consumer group; workers with the same group share the input partitions.
    #[arg(long, default_value = "recstream")]
    pub group_id: String,

    /// Recommendations per reply when the request has no "n".
    #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=MAX_N as i64))]
    pub n: u16,

    /// Serve Prometheus metrics on /metrics and health on /healthz, /readyz at this address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<SocketAddr>,

    /// Most replies sent but not yet acknowledged (backpressure beyond that).
    #[arg(long, default_value_t = 4_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_in_flight: usize,

    /// Most requests scored together.
    #[arg(long, default_value_t = 256, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub batch_size: usize,

    /// Threads scoring requests (default: one per core).
    #[arg(long)]
    pub scoring_threads: Option<usize>,

    /// Requests larger than this many bytes go to the dead-letter topic.
    #[arg(long, default_value_t = recstream_stream::wire::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,

    /// Seconds shutdown waits for the last replies to be acknowledged.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub drain_timeout: u64,

    /// Model topic to follow: online updates from `recstream learn` and new
    /// batch models from `recstream model publish` reach the worker live.
    #[arg(long, default_value = "model-updates")]
    pub model_topic: String,

    /// Do not follow the model topic: serve the model file as it is.
    #[arg(long)]
    pub no_follow: bool,

    /// Exactly-once: commit each batch of replies together with its input
    /// offsets in a Kafka transaction (read them with isolation.level=read_committed).
    #[arg(long)]
    pub exactly_once: bool,

    /// transactional.id for --exactly-once; keep it stable across restarts of
    /// one worker (default: recstream-GROUP-HOSTNAME).
    #[arg(long)]
    pub transactional_id: Option<String>,
}

impl WorkerArgs {
    /// The worker configuration for `kafka`.
    pub fn config(&self, kafka: KafkaSettings) -> WorkerConfig {
        let defaults = WorkerConfig::new(kafka);
        WorkerConfig {
            input_topic: self.input_topic.clone(),
            output_topic: self.output_topic.clone(),
            dlq_topic: self.dlq_topic.clone(),
            group_id: self.group_id.clone(),
            default_n: usize::from(self.n),
            max_request_bytes: self.max_request_bytes,
            max_in_flight: self.max_in_flight,
            batch_size: self.batch_size,
            scoring_threads: self.scoring_threads.unwrap_or(defaults.scoring_threads),
            drain_timeout: Duration::from_secs(self.drain_timeout),
            model_topic: (!self.no_follow).then(|| self.model_topic.clone()),
            exactly_once: self.exactly_once,
            transactional_id: self.transactional_id.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "host".into());
                format!("recstream-{}-{host}", self.group_id)
            }),
            ..defaults
        }
    }

    /// The topics the worker uses: requests, replies and dead letters with
    /// `partitions` partitions, and the model topics when it follows them.
    pub fn topics(&self, partitions: i32) -> Vec<TopicSpec> {
        let mut topics: Vec<TopicSpec> = [&self.input_topic, &self.output_topic, &self.dlq_topic]
            .into_iter()
            .map(|name| TopicSpec::new(name.clone(), partitions))
            .collect();
        if !self.no_follow {
            topics.extend(model_topics(
                &self.model_topic,
                partitions,
                DEFAULT_FILES_TOPIC,
            ));
        }
        topics
    }
}

/// Where batch model files travel, in chunks.
pub const DEFAULT_FILES_TOPIC: &str = "model-files";

/// The model topic (compacted: the latest state per user and item is all a
/// newcomer needs; partitioned like the ratings topic, so created with
/// `partitions`) and the files topic (one partition).
pub fn model_topics(model_topic: &str, partitions: i32, files_topic: &str) -> [TopicSpec; 2] {
    [
        TopicSpec::compacted(model_topic, partitions),
        TopicSpec::single(files_topic),
    ]
}

/// Loads and verifies a model file for serving.
pub fn load_model(path: &std::path::Path) -> anyhow::Result<Arc<ServingModel>> {
    let model =
        modelfile::load(path).with_context(|| format!("loading the model {}", path.display()))?;
    tracing::info!(model = %model.id, users = model.users.len(), items = model.items.len(), "model loaded");
    Ok(ServingModel::new(Recommender::new(model)))
}

/// Starts the metrics server when an address is given.
pub async fn start_metrics(
    addr: Option<SocketAddr>,
    health: Arc<Health>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    match addr {
        None => Ok(None),
        Some(addr) => {
            let bound = recstream_stream::metrics::serve(addr, health, shutdown.clone())
                .await
                .with_context(|| format!("serving metrics on {addr}"))?;
            tracing::info!("metrics on http://{bound}/metrics, health on /healthz and /readyz");
            Ok(Some(bound))
        }
    }
}

/// Runs the worker until Ctrl-C or SIGTERM.
pub async fn serve_until_stopped(
    config: Checked<WorkerConfig>,
    model: Arc<ServingModel>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<WorkerSummary> {
    worker::run(config, model, health, shutdown)
        .await
        .context("running the worker")
}

/// Runs `recstream serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if is_kinesis(&args.worker.input_topic) {
        return serve_kinesis(args);
    }
    for (flag, value) in [
        ("--output-topic", &args.worker.output_topic),
        ("--dlq-topic", &args.worker.dlq_topic),
    ] {
        anyhow::ensure!(
            !is_kinesis(value),
            "{flag} {value}: replies and dead letters go to Kinesis only when the requests come from Kinesis (--input-topic kinesis:STREAM); a worker reading Kafka commits its offsets when Kafka acknowledges its outputs"
        );
    }
    let settings = args
        .kafka
        .require(&format!("--input-topic {}", args.worker.input_topic))?;
    let config = args
        .worker
        .config(settings.clone())
        .check()
        .context("checking the settings")?;
    let model = load_model(&args.model)?;
    runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        topics::prepare(
            &settings,
            &args.worker.topics(args.partitions),
            args.create_topics,
            &shutdown,
        )
        .await
        .context("checking the topics")?;
        let health = Arc::new(Health::default());
        start_metrics(args.worker.metrics_addr, health.clone(), &shutdown).await?;
        serve_until_stopped(config, model, health, shutdown)
            .await
            .map(drop)
    })
}

#[cfg(feature = "kinesis")]
fn serve_kinesis(args: ServeArgs) -> anyhow::Result<()> {
    kinesis::run(args)
}

#[cfg(not(feature = "kinesis"))]
fn serve_kinesis(args: ServeArgs) -> anyhow::Result<()> {
    // Parsed (and hidden) in every build; used with the kinesis feature.
    let _ = (&args.kinesis, &args.kinesis_input);
    Err(crate::streams::not_built_in(
        "--input-topic",
        &args.worker.input_topic,
    ))
}
