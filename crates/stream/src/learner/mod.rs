//! The learner: ratings in, model updates out; the one writer of a model.
//!
//! It consumes the ratings topic, folds each valid rating into the model
//! with the core's [`OnlineLearner`], and publishes the resulting user and
//! item states to the model topic, which every worker follows. Invalid
//! ratings go to a dead-letter topic with the reason.
//!
//! Restart safety comes from the model topic itself being the record of what
//! was learnt. Every user state names the rating it came from. On start the
//! learner loads its latest snapshot (or the batch model), writes a marker to
//! the model topic, replays the topic up to that marker (applying its own
//! published states, switching to any newer batch model announced), and
//! resumes each ratings partition right after the last rating whose state
//! was published. A rating consumed but not published before a crash is
//! learnt again; one that was published is never applied twice. Snapshots
//! (written after all outstanding states are acknowledged) only shorten
//! that replay.
//!
//! Delivery failures are never dropped: a model update that librdkafka
//! could not deliver after its own retries (`message.timeout.ms`), or one
//! that can never be delivered (no such topic, no permission, too large),
//! stops the learner with an error that names the topic and the cause.
//! Sending it again later, out of order, could overwrite a newer state; a
//! restart resumes from the snapshot and the published states as above,
//! so the supervisor's restart is the retry. A dead letter that is too
//! large for its topic is cut down and sent again instead.
//!
//! The code is shaped like mini-redis's `Handler`: a `Learner` holds the
//! state (the model, the positions, the clients, the pending deliveries),
//! [`run`] walks it through its phases in order, and the learning phase is
//! a short `select!` over shutdown and the next event, each event handled by
//! a method. One file a job:
//!
//! - `config`: [`LearnerConfig`], checked before anything starts;
//! - `catch_up`: the start, from the snapshot to the end of the model topic;
//! - `ratings`: the ratings topic assigned, each rating learnt or refused;
//! - `publish`: updates and dead letters sent, their acknowledgements settled;
//! - `positions`: where each topic resumes, the exactly-once rule;
//! - `snapshot`: the model and its positions written down, once acknowledged;
//! - `error`: why the learner stops.

mod catch_up;
mod config;
mod error;
mod positions;
mod publish;
mod ratings;
mod snapshot;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use recstream_core::Model;
use recstream_core::online::{OnlineLearner, PrequentialStats};
use tokio_util::sync::CancellationToken;

use crate::config::Checked;

pub use config::LearnerConfig;
pub use error::LearnerError;
pub use snapshot::latest_snapshot;

use crate::kafka::LoggingContext;
use crate::metrics::{self as m, Health};
use crate::model_topic::ModelMessage;
use positions::Positions;
use publish::Publisher;

/// What a learner did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LearnerSummary {
    /// Ratings learnt in this run.
    pub learnt: u64,
    /// Ratings refused (dead-lettered).
    pub dead_letters: u64,
    /// Dead letters that could not be delivered even cut down (logged).
    pub undeliverable: u64,
    /// States replayed from the model topic at start.
    pub replayed: u64,
    /// Sequence number reached.
    pub seq: u64,
    /// Prequential RMSE over this run's ratings.
    pub rmse: f64,
    /// Prequential hit rate at 10 over this run's ratings.
    pub hit_rate_at_10: f64,
}

/// Runs the learner until `shutdown`, starting from the latest snapshot if
/// there is one, `initial` otherwise.
pub async fn run(
    config: Checked<LearnerConfig>,
    initial: Model,
    shutdown: CancellationToken,
) -> Result<LearnerSummary, LearnerError> {
    crate::metrics::recorder();
    let mut learner = Learner::new(config.into_inner(), initial)?;
    if !learner.catch_up(&shutdown).await? {
        // Stopped while catching up: nothing learnt, nothing to save.
        return Ok(learner.summary);
    }
    let _ready = learner.assign().await?;
    learner.run(&shutdown).await?;
    learner.finish().await
}

/// How often the prequential accuracy is reported.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// A learner between its start and its stop.
struct Learner {
    config: LearnerConfig,
    /// The model being learnt, on top of its batch model.
    model: OnlineLearner,
    positions: Positions,
    publisher: Publisher,
    /// The model topic: replayed at start, then watched for new batch
    /// models. Shared so that a loop can borrow messages from it while it
    /// changes the rest of the learner.
    follower: Arc<StreamConsumer<LoggingContext>>,
    /// The ratings topic, shared for the same reason.
    ratings: Arc<StreamConsumer<LoggingContext>>,
    /// Unique to this start: names the readers' groups and the marker.
    nonce: String,
    stats: PrequentialStats,
    /// Ratings counted in the last accuracy report.
    reported: u64,
    summary: LearnerSummary,
    read_errors: ReadErrors,
}

impl Learner {
    /// Learns until `shutdown`, one event at a time: a delivery settled, a
    /// message on the model topic, a rating, a snapshot or a report due.
    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), LearnerError> {
        // Local handles: a message borrows its consumer, and handling it
        // changes `self`.
        let (follower, ratings) = (Arc::clone(&self.follower), Arc::clone(&self.ratings));
        let every = self.config.snapshot_every;
        let mut snapshot_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut report_timer = tokio::time::interval(REPORT_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                Some(delivered) = self.publisher.next(), if self.publisher.has_pending() => {
                    self.publisher.settled(delivered).await?;
                }
                next = follower.recv() => self.on_model_message(next).await,
                next = ratings.recv() => self.on_rating(next).await?,
                _ = snapshot_timer.tick() => self.snapshot().await?,
                _ = report_timer.tick() => self.on_tick(),
            }
        }
    }

    /// A message on the model topic while learning: the states are this
    /// learner's own, so only a new batch model matters.
    async fn on_model_message(&mut self, next: KafkaResult<BorrowedMessage<'_>>) {
        match next {
            Ok(message) => {
                if let Some(Ok(ModelMessage::Model(announcement))) =
                    message.payload().map(ModelMessage::decode)
                    && announcement.id != self.model.base_id()
                {
                    self.switch_model(&announcement).await;
                }
            }
            Err(e) => self.read_errors.report(&self.config.model_topic, &e),
        }
    }

    /// Settles what is outstanding, writes the last snapshot, and says
    /// what was done.
    async fn finish(mut self) -> Result<LearnerSummary, LearnerError> {
        self.snapshot().await?;
        let summary = LearnerSummary {
            undeliverable: self.publisher.undeliverable(),
            seq: self.model.seq(),
            rmse: self.stats.rmse(),
            hit_rate_at_10: self.stats.hit_rate(),
            ..self.summary
        };
        tracing::info!(
            learnt = summary.learnt,
            dead_letters = summary.dead_letters,
            seq = summary.seq,
            "learner stopped"
        );
        Ok(summary)
    }
}

/// Readiness for as long as the value lives (not ready again on every way out).
struct Ready(Arc<Health>);

impl Ready {
    fn set(health: &Arc<Health>) -> Self {
        health.set_ready(true);
        Ready(health.clone())
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        self.0.set_ready(false);
    }
}

/// Errors reading a topic, logged at most every few seconds: librdkafka
/// retries by itself, so the loop goes on, and a broker that is away would
/// otherwise flood the log.
#[derive(Debug, Default)]
struct ReadErrors {
    last_logged: Option<Instant>,
}

impl ReadErrors {
    fn report(&mut self, topic: &str, error: &KafkaError) {
        metrics::counter!(m::CONSUME_ERRORS, "topic" => topic.to_string()).increment(1);
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(5))
        {
            self.last_logged = Some(Instant::now());
            tracing::warn!(
                topic,
                "error reading {topic:?}: {error}; the client retries"
            );
        }
    }
}
