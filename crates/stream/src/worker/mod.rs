//! The serving worker: requests in, recommendations out, at least once.
//!
//! Three stages joined by bounded channels, each doing one thing:
//!
//! ```text
//!  consume ──batches──▶ score ──scored──▶ deliver
//!  (Kafka consumer)     (thread pool)     (producer, offsets)
//! ```
//!
//! - `consume` reads messages as they arrive and groups whatever is already
//!   buffered into a batch (per-event latency, batched only for throughput).
//!   Rebalance notices travel down the same channel, in order.
//! - `score` parses and scores a batch on a dedicated thread pool (never on
//!   the async reactor), producing a reply or a dead letter per message.
//! - `deliver` produces the outputs and, once the broker acknowledges them,
//!   lets their input offsets be committed through the [`OffsetTracker`]:
//!   the at-least-once rule lives there and only there.
//!
//! Backpressure: the channels are bounded and `deliver` stops taking work
//! when `max_in_flight` outputs are unacknowledged, so a slow or absent
//! broker stalls consumption instead of growing memory. Shutdown: the
//! token stops `consume`; the channels drain; `deliver` waits for the last
//! acknowledgements (up to `drain_timeout`), commits, and returns.
//!
//! [`OffsetTracker`]: crate::tracker::OffsetTracker

mod consume;
mod context;
mod deliver;
pub mod follow;
mod score;
mod transactional;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use crate::config::{Checked, ConfigError, require_names};
use crate::delivery::Undeliverable;
use crate::kafka::{KafkaSettings, LoggingContext};
use crate::metrics::Health;
use crate::serving::ServingModel;
use crate::wire::DEFAULT_MAX_REQUEST_BYTES;

pub use consume::{Event, Incoming};
pub use context::WorkerContext;
pub use score::{Destination, Output, Rules, Scored, Scorer, ScoringThreadsError};
pub use transactional::{StepError, TransactionError};

/// Everything a worker needs to know besides the model.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Broker list and client overrides.
    pub kafka: KafkaSettings,
    /// Topic the requests arrive on.
    pub input_topic: String,
    /// Topic the replies go to.
    pub output_topic: String,
    /// Topic invalid requests go to.
    pub dlq_topic: String,
    /// Consumer group shared by all workers.
    pub group_id: String,
    /// Recommendations per reply when the request does not say.
    pub default_n: usize,
    /// Requests larger than this are dead-lettered.
    pub max_request_bytes: usize,
    /// Most outputs sent but not yet acknowledged.
    pub max_in_flight: usize,
    /// Most messages scored together.
    pub batch_size: usize,
    /// Threads that score requests.
    pub scoring_threads: usize,
    /// How long shutdown waits for the last acknowledgements.
    pub drain_timeout: Duration,
    /// Model topic to follow for online updates and new batch models.
    pub model_topic: Option<String>,
    /// Commit replies and input offsets in Kafka transactions.
    pub exactly_once: bool,
    /// `transactional.id` in exactly-once mode: stable across restarts of
    /// one worker, so a restart fences its predecessor's open transaction.
    pub transactional_id: String,
}

/// Name of the model-topic position in a snapshot's metadata.
pub const MODEL_TOPIC_POSITION: &str = "model-topic";

impl WorkerConfig {
    /// Defaults for the given brokers: the reference design's topic names,
    /// group `recstream`, 10 recommendations, every core for scoring.
    pub fn new(kafka: KafkaSettings) -> Self {
        WorkerConfig {
            kafka,
            input_topic: "quickstart-events".into(),
            output_topic: "recommendation-events".into(),
            dlq_topic: "recommendation-events-dlq".into(),
            group_id: "recstream".into(),
            default_n: 10,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_in_flight: 4_000,
            batch_size: 256,
            scoring_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            drain_timeout: Duration::from_secs(10),
            model_topic: None,
            exactly_once: false,
            transactional_id: format!("recstream-{}", std::process::id()),
        }
    }

    /// Refuses settings that could only stall, loop or fail later: empty
    /// names, zero limits, and topics that would feed the worker its own
    /// output. [`run`] takes only what this returns, so a caller reports a
    /// mistake before connecting.
    pub fn check(self) -> Result<Checked<Self>, ConfigError> {
        self.problems()?;
        Ok(Checked::new(self))
    }

    fn problems(&self) -> Result<(), ConfigError> {
        require_names(&[
            ("--input-topic", &self.input_topic),
            ("--output-topic", &self.output_topic),
            ("--dlq-topic", &self.dlq_topic),
            ("--group-id", &self.group_id),
        ])?;
        if let Some(model_topic) = &self.model_topic {
            require_names(&[("--model-topic", model_topic)])?;
        }
        let input = &self.input_topic;
        for (setting, topic) in [
            ("--output-topic", Some(&self.output_topic)),
            ("--dlq-topic", Some(&self.dlq_topic)),
            ("--model-topic", self.model_topic.as_ref()),
        ] {
            if topic == Some(input) {
                return Err(ConfigError::new(
                    setting,
                    format!("is the input topic {input:?}: the worker would read its own output"),
                ));
            }
        }
        if self
            .model_topic
            .as_ref()
            .is_some_and(|m| *m == self.output_topic || *m == self.dlq_topic)
        {
            return Err(ConfigError::new(
                "--model-topic",
                "must differ from the reply and dead-letter topics",
            ));
        }
        for (setting, value) in [
            ("--max-in-flight", self.max_in_flight),
            ("--batch-size", self.batch_size),
            ("--max-request-bytes", self.max_request_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::new(setting, "must be at least 1"));
            }
        }
        if self.exactly_once && self.transactional_id.trim().is_empty() {
            return Err(ConfigError::new(
                "--transactional-id",
                "must not be empty in exactly-once mode",
            ));
        }
        Ok(())
    }
}

/// What a worker did, reported when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Messages read from the input topic.
    pub consumed: u64,
    /// Replies acknowledged.
    pub replies: u64,
    /// Dead letters acknowledged.
    pub dead_letters: u64,
    /// Outputs sent again after a failed delivery.
    pub retries: u64,
    /// Outputs still unacknowledged when shutdown gave up waiting (their
    /// requests will be answered again after a restart).
    pub abandoned: u64,
    /// Inputs none of whose outputs could ever be delivered, not even a
    /// dead letter cut to a few KiB: logged, counted and committed.
    pub undeliverable: u64,
}

impl WorkerSummary {
    /// Logs the summary with `message`.
    fn log(&self, message: &str) {
        tracing::info!(
            consumed = self.consumed,
            replies = self.replies,
            dead_letters = self.dead_letters,
            retries = self.retries,
            abandoned = self.abandoned,
            undeliverable = self.undeliverable,
            "{message}"
        );
    }
}

/// Why a worker could not start or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A Kafka client could not be created or subscribed.
    #[error("Kafka client: {0}")]
    Kafka(#[from] KafkaError),
    /// The scoring thread pool could not start.
    #[error(transparent)]
    ScoringThreads(#[from] ScoringThreadsError),
    /// A scoring thread died while scoring a batch.
    #[error(
        "a scoring thread failed; the batch is not committed and is read again after a restart"
    )]
    ScoringFailed,
    /// A stage's task ended abnormally (it panicked, or was cancelled).
    #[error("the {stage} stage stopped unexpectedly: {source}")]
    Stage {
        /// `consume` or `score`.
        stage: &'static str,
        /// Tokio's reason.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Exactly-once mode cannot run.
    #[error("exactly-once: {0}")]
    Transactions(#[from] TransactionError),
    /// The model topic can no longer be followed without missing updates.
    #[error("{0}")]
    ModelTopic(#[from] follow::FollowError),
    /// An output can never be delivered for a reason outside the message.
    #[error(transparent)]
    Undeliverable(#[from] Undeliverable),
}

/// A messages's place in its input topic, carried through the stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The partition (a Kinesis worker numbers its shards).
    pub partition: i32,
    /// The offset (a Kinesis worker counts a shard's records).
    pub offset: i64,
}

/// Runs a worker until `shutdown` is cancelled, then drains and commits.
///
/// The worker serves beside its model follower: a follower that can no
/// longer keep this worker's model identical to everyone else's stops the
/// worker (it stops consuming, drains what it holds, then reports).
pub async fn run(
    config: Checked<WorkerConfig>,
    model: Arc<ServingModel>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<WorkerSummary, WorkerError> {
    crate::metrics::recorder();
    let config = config.into_inner();
    let follower = config
        .model_topic
        .clone()
        .map(|topic| spawn_follower(&config.kafka, topic, &model, &shutdown));
    // Stops consumption (or the transaction loop): on shutdown, when
    // delivery gives up, or when the follower fails.
    let stop = shutdown.child_token();
    let serving = async {
        if config.exactly_once {
            transactional::run(config.clone(), model.clone(), health, stop.clone()).await
        } else {
            at_least_once(&config, model.clone(), health, &shutdown, &stop).await
        }
    };
    let (served, lost_track) = beside_follower(serving, follower, || stop.cancel()).await;
    let summary = served?;
    match lost_track {
        Some(error) => Err(WorkerError::ModelTopic(error)),
        None => Ok(summary),
    }
}

/// The at-least-once pipeline: consume, score and deliver joined by bounded
/// channels; returns once delivery has drained and committed.
async fn at_least_once(
    config: &WorkerConfig,
    model: Arc<ServingModel>,
    health: Arc<Health>,
    shutdown: &CancellationToken,
    stop: &CancellationToken,
) -> Result<WorkerSummary, WorkerError> {
    let (consumer, producer) = clients(config, &health)?;
    let scorer = Scorer::start(config, model.clone())?;
    log_start(config, &model);

    let capacity = (config.max_in_flight / config.batch_size.max(1)).max(2);
    let (batches_tx, batches_rx) = tokio::sync::mpsc::channel(capacity);
    let (scored_tx, scored_rx) = tokio::sync::mpsc::channel(capacity);
    let consumed = tokio::spawn(consume::run(
        consumer.clone(),
        batches_tx,
        config.batch_size,
        stop.clone(),
    ));
    let scored = tokio::spawn(score::run(batches_rx, scored_tx, scorer));
    let lag = tokio::spawn(deliver::report_lag(
        consumer.clone(),
        config.input_topic.clone(),
        shutdown.clone(),
    ));
    let delivered = deliver::run(
        scored_rx,
        producer,
        consumer.clone(),
        config,
        shutdown.clone(),
    )
    .await;
    stop.cancel();
    let stage = |stage| move |source| WorkerError::Stage { stage, source };
    let consumed = consumed.await.map_err(stage("consume"))?;
    scored.await.map_err(stage("score"))?;
    lag.abort();
    health.set_ready(false);
    let summary = WorkerSummary {
        consumed,
        ..delivered?
    };
    summary.log("worker stopped");
    // Leave the group now rather than when the last reference goes.
    drop(consumer);
    Ok(summary)
}

/// The at-least-once worker's consumer (subscribed to the input topic) and producer.
fn clients(
    config: &WorkerConfig,
    health: &Arc<Health>,
) -> Result<
    (
        Arc<StreamConsumer<WorkerContext>>,
        FutureProducer<LoggingContext>,
    ),
    KafkaError,
> {
    let consumer: StreamConsumer<WorkerContext> = config
        .kafka
        .consumer(&config.group_id)
        .create_with_context(WorkerContext::new(
            config.input_topic.clone(),
            health.clone(),
        ))?;
    let producer: FutureProducer<LoggingContext> = config
        .kafka
        .producer()
        .create_with_context(LoggingContext::new("producer"))?;
    consumer.subscribe(&[config.input_topic.as_str()])?;
    Ok((Arc::new(consumer), producer))
}

fn log_start(config: &WorkerConfig, model: &ServingModel) {
    tracing::info!(
        brokers = %config.kafka.brokers,
        input = %config.input_topic,
        output = %config.output_topic,
        dlq = %config.dlq_topic,
        group = %config.group_id,
        model = %model.version(),
        "worker started"
    );
}

/// Runs `serving` to its end beside the model `follower`. A follower that
/// stops with an error calls `stop` (serving then winds down, draining what
/// it holds) and its error is returned with serving's result; a follower
/// still running when serving ends is stopped.
pub async fn beside_follower<T>(
    serving: impl std::future::Future<Output = T>,
    follower: Option<tokio::task::JoinHandle<Result<(), follow::FollowError>>>,
    stop: impl FnOnce(),
) -> (T, Option<follow::FollowError>) {
    let Some(mut follower) = follower else {
        return (serving.await, None);
    };
    tokio::pin!(serving);
    tokio::select! {
        served = &mut serving => {
            follower.abort();
            (served, None)
        }
        followed = &mut follower => {
            let error = followed.ok().and_then(Result::err);
            if error.is_some() {
                stop();
            }
            (serving.await, error)
        }
    }
}

/// Starts following the model `topic` on `kafka`, so that `model` keeps
/// up with every other worker's (online updates, batch roll-outs).
pub fn spawn_follower(
    kafka: &KafkaSettings,
    topic: String,
    model: &Arc<ServingModel>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<Result<(), follow::FollowError>> {
    // A snapshot says where in the model topic it stands; a batch model
    // follows from the beginning (states of other models are skipped).
    let positions = crate::serving::read(&model.current())
        .model()
        .meta
        .online
        .as_ref()
        .map(|o| o.positions.clone())
        .unwrap_or_default();
    tokio::spawn(follow::run(
        kafka.clone(),
        topic,
        positions,
        model.clone(),
        shutdown.clone(),
    ))
}
