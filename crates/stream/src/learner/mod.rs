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

mod config;

pub use config::LearnerConfig;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use recstream_core::online::{OnlineLearner, PrequentialStats};
use recstream_core::{Model, modelfile};
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::delivery::{self, Permanent, Verdict};
use crate::kafka::LoggingContext;
use crate::metrics::{self as m, Health};
use crate::model_topic::{ModelAnnouncement, ModelMessage, Source, update_messages};
use crate::publish::fetch_model;
use crate::wire::{self, Origin, RejectCode, Rejection};
use crate::worker::MODEL_TOPIC_POSITION;

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

/// Why the learner stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    /// Kafka failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The configuration can never work (see [`LearnerConfig::check`]).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A snapshot could not be read or written.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A model update or dead letter could not be delivered; the learner
    /// stops so that a restart resumes from what was published.
    #[error("{0}; the learner stops, and a restart resumes from its snapshot and published states")]
    Undelivered(String),
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

/// What an outstanding publication was.
#[derive(Debug)]
enum Sent {
    /// A user or item state on the model topic.
    Update,
    /// A dead letter (kept, so that it can be cut down if it is too large).
    DeadLetter { key: Vec<u8>, letter: Vec<u8> },
}

type Delivered = (
    Sent,
    Result<
        Result<
            rdkafka::producer::future_producer::Delivery,
            (KafkaError, rdkafka::message::OwnedMessage),
        >,
        futures::channel::oneshot::Canceled,
    >,
);
type Pending = FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Delivered> + Send>>>;

/// Name of a ratings partition's position in a snapshot.
fn ratings_position(partition: i32) -> String {
    format!("ratings/{partition}")
}

/// The newest snapshot in `dir`, if any.
pub fn latest_snapshot(dir: &std::path::Path) -> Option<PathBuf> {
    let path = dir.join("latest.rsm");
    path.is_file().then_some(path)
}

/// Runs the learner until `shutdown`, starting from the latest snapshot if
/// there is one, `initial` otherwise.
pub async fn run(
    config: LearnerConfig,
    initial: Model,
    shutdown: CancellationToken,
) -> Result<LearnerSummary, LearnerError> {
    crate::metrics::recorder();
    config.check()?;
    let start_model = match config.snapshot_dir.as_deref().and_then(latest_snapshot) {
        Some(path) => {
            let model =
                modelfile::load(&path).map_err(|e| LearnerError::Snapshot(e.to_string()))?;
            tracing::info!(snapshot = %path.display(), version = %model.version(), "resuming from snapshot");
            model
        }
        None => initial,
    };
    let mut positions: BTreeMap<String, i64> = start_model
        .meta
        .online
        .as_ref()
        .map(|o| o.positions.clone())
        .unwrap_or_default();
    let model_start = positions
        .get(MODEL_TOPIC_POSITION)
        .map_or(Offset::Beginning, |&o| Offset::Offset(o));
    let mut learner = OnlineLearner::new(start_model, config.update_items);
    let producer: FutureProducer<LoggingContext> = config
        .kafka
        .producer()
        .set("message.max.bytes", "4194304")
        .create_with_context(LoggingContext::new("learner"))?;

    // Catch up with what this model's writer already published.
    let nonce = format!("{:016x}", rand::random::<u64>());
    let marker = ModelMessage::Marker {
        nonce: nonce.clone(),
    };
    let (marker_key, marker_payload) = (marker.key(), marker.encode());
    let marker_offset = producer
        .send(
            FutureRecord::to(&config.model_topic)
                .key(&marker_key)
                .payload(&marker_payload)
                .partition(0),
            Duration::from_secs(60),
        )
        .await
        .map_err(|(e, _)| LearnerError::Undelivered(delivery::describe(&config.model_topic, &e)))?
        .offset;
    let mut summary = LearnerSummary::default();
    let follower: StreamConsumer<LoggingContext> = config
        .kafka
        .reader(&format!("recstream-learner-{nonce}"))
        .set("max.partition.fetch.bytes", "4194304")
        .create_with_context(LoggingContext::new("learner-follow"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&config.model_topic, 0, model_start)?;
    follower.assign(&tpl)?;
    let mut model_stream = follower.stream();
    let mut caught_up = false;
    let mut last_stream_error: Option<Instant> = None;
    while !caught_up {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(summary),
            next = model_stream.next() => next,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                stream_error(&config.model_topic, &e, &mut last_stream_error);
                continue;
            }
            None => continue,
        };
        caught_up = message.offset() >= marker_offset;
        let Some(Ok(decoded)) = message.payload().map(ModelMessage::decode) else {
            continue;
        };
        match decoded {
            ModelMessage::User {
                seq,
                base,
                state,
                rated,
                source,
                ..
            } => {
                learner.replay_user(&base, seq, &state, &rated);
                if let Some(Source { partition, offset }) = source {
                    let position = positions
                        .entry(ratings_position(partition))
                        .or_insert(offset);
                    *position = (*position).max(offset);
                }
                summary.replayed += 1;
            }
            ModelMessage::Item { seq, base, state } => {
                learner.replay_item(&base, seq, &state);
                summary.replayed += 1;
            }
            ModelMessage::Model(announcement) if announcement.id != learner.base_id() => {
                learner = switch_model(&config, &announcement, learner).await;
            }
            _ => {}
        }
    }
    positions.insert(MODEL_TOPIC_POSITION.to_string(), marker_offset + 1);
    tracing::info!(replayed = summary.replayed, version = %learner.recommender().version(), "caught up with the model topic");

    // Resume every ratings partition after its last published rating.
    let ratings: StreamConsumer<LoggingContext> = config
        .kafka
        .reader(&format!("recstream-learner-ratings-{nonce}"))
        .create_with_context(LoggingContext::new("learner-ratings"))?;
    let metadata = {
        let ratings = &ratings;
        let topic = config.ratings_topic.clone();
        tokio::task::block_in_place(move || {
            ratings.fetch_metadata(Some(&topic), Duration::from_secs(30))
        })?
    };
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()) as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let offset = positions
            .get(&ratings_position(p))
            .map_or(Offset::Beginning, |&o| Offset::Offset(o + 1));
        tpl.add_partition_offset(&config.ratings_topic, p, offset)?;
    }
    ratings.assign(&tpl)?;
    tracing::info!(ratings = %config.ratings_topic, partitions, updates = %config.model_topic, "learning");
    let _ready = Ready::set(&config.health);

    let mut stream = ratings.stream();
    let mut pending: Pending = FuturesUnordered::new();
    let mut last_model_offset: Option<i64> = None;
    let mut stats = PrequentialStats::default();
    let mut snapshot_timer =
        tokio::time::interval(config.snapshot_every.max(Duration::from_millis(100)));
    snapshot_timer.tick().await;
    let mut report_timer = tokio::time::interval(Duration::from_secs(5));
    let mut reported = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(delivered) = pending.next(), if !pending.is_empty() => {
                settled(&producer, &config, &mut pending, &mut last_model_offset, delivered, &mut summary).await?;
            }
            next = model_stream.next() => {
                // New batch models announced while learning.
                match next {
                    Some(Ok(message)) => {
                        if let Some(Ok(ModelMessage::Model(announcement))) = message.payload().map(ModelMessage::decode)
                            && announcement.id != learner.base_id()
                        {
                            learner = switch_model(&config, &announcement, learner).await;
                        }
                    }
                    Some(Err(e)) => stream_error(&config.model_topic, &e, &mut last_stream_error),
                    None => {}
                }
            }
            next = stream.next() => {
                let message = match next {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        stream_error(&config.ratings_topic, &e, &mut last_stream_error);
                        continue;
                    }
                    None => continue,
                };
                let source = Source { partition: message.partition(), offset: message.offset() };
                let outcome = wire::parse_rating(message.payload(), config.max_rating_bytes).and_then(|event| {
                    learner
                        .learn(event.uid.as_str(), event.iid.as_str(), event.rating)
                        .map_err(|e| Rejection { code: RejectCode::InvalidRating, message: e.to_string() })
                });
                match outcome {
                    Ok((update, prequential)) => {
                        stats.record(&prequential);
                        summary.learnt += 1;
                        metrics::counter!(m::RATINGS_LEARNT).increment(1);
                        for state in update_messages(&update, Some(source), message.timestamp().to_millis()) {
                            let (key, payload) = (state.key(), state.encode());
                            let delivery = send(&producer, &config.model_topic, key.as_bytes(), &payload, Some(0)).await?;
                            pending.push(Box::pin(async move { (Sent::Update, delivery.await) }));
                        }
                        positions.insert(ratings_position(source.partition), source.offset);
                    }
                    Err(rejection) => {
                        summary.dead_letters += 1;
                        metrics::counter!(m::DEAD_LETTERS, "reason" => rejection.code.as_str()).increment(1);
                        let origin = Origin { topic: &config.ratings_topic, partition: source.partition, offset: source.offset };
                        let letter = wire::encode_dead_letter(&rejection, &origin, message.payload());
                        let key = message.key().map(<[u8]>::to_vec).unwrap_or_default();
                        let delivery = send(&producer, &config.dlq_topic, &key, &letter, None).await?;
                        pending.push(Box::pin(async move { (Sent::DeadLetter { key, letter }, delivery.await) }));
                    }
                }
            }
            _ = snapshot_timer.tick() => {
                settle(&producer, &config, &mut pending, &mut last_model_offset, &mut summary).await?;
                write_snapshot(&config, &learner, &positions, last_model_offset)?;
            }
            _ = report_timer.tick() => {
                metrics::gauge!(m::PREQUENTIAL_RMSE).set(stats.rmse());
                metrics::gauge!(m::PREQUENTIAL_HIT_RATE).set(stats.hit_rate());
                if stats.count > reported {
                    reported = stats.count;
                    tracing::info!(
                        learnt = summary.learnt,
                        seq = learner.seq(),
                        rmse = format!("{:.4}", stats.rmse()),
                        hit_rate_at_10 = format!("{:.4}", stats.hit_rate()),
                        "prequential accuracy so far"
                    );
                }
            }
        }
    }
    settle(
        &producer,
        &config,
        &mut pending,
        &mut last_model_offset,
        &mut summary,
    )
    .await?;
    write_snapshot(&config, &learner, &positions, last_model_offset)?;
    summary.seq = learner.seq();
    summary.rmse = stats.rmse();
    summary.hit_rate_at_10 = stats.hit_rate();
    tracing::info!(
        learnt = summary.learnt,
        dead_letters = summary.dead_letters,
        seq = summary.seq,
        "learner stopped"
    );
    Ok(summary)
}

/// Queues a message, waiting for room in the producer queue (or for the
/// broker) as long as needed; an error that can never succeed is returned.
async fn send(
    producer: &FutureProducer<LoggingContext>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    partition: Option<i32>,
) -> Result<rdkafka::producer::DeliveryFuture, LearnerError> {
    let mut last_warning: Option<Instant> = None;
    loop {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((e, _)) => match delivery::classify(&e) {
                Verdict::QueueFull => {}
                Verdict::Retry => {
                    if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                        last_warning = Some(Instant::now());
                        tracing::warn!("{}; trying again", delivery::describe(topic, &e));
                    }
                }
                Verdict::Permanent(_) => {
                    return Err(LearnerError::Undelivered(delivery::describe(topic, &e)));
                }
            },
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Accounts for one finished publication: a delivered update moves the
/// snapshot's model position; a failed update stops the learner; a dead
/// letter too large for its topic is cut down and sent again.
async fn settled(
    producer: &FutureProducer<LoggingContext>,
    config: &LearnerConfig,
    pending: &mut Pending,
    last_model_offset: &mut Option<i64>,
    (sent, result): Delivered,
    summary: &mut LearnerSummary,
) -> Result<(), LearnerError> {
    let error = match result {
        Ok(Ok(delivery)) => {
            if matches!(sent, Sent::Update) {
                *last_model_offset =
                    Some(last_model_offset.map_or(delivery.offset, |o| o.max(delivery.offset)));
            }
            return Ok(());
        }
        Ok(Err((error, _))) => error,
        Err(_) => KafkaError::Canceled,
    };
    let topic = match sent {
        Sent::Update => &config.model_topic,
        Sent::DeadLetter { .. } => &config.dlq_topic,
    };
    let verdict = delivery::classify(&error);
    let reason = match verdict {
        Verdict::Permanent(reason) => reason.as_str(),
        Verdict::Retry | Verdict::QueueFull => "timed_out",
    };
    metrics::counter!(m::DELIVERY_FAILURES, "reason" => reason).increment(1);
    if let (
        Sent::DeadLetter { key, letter },
        Verdict::Permanent(Permanent::TooLarge | Permanent::Refused),
    ) = (&sent, verdict)
    {
        match wire::shrink_dead_letter(letter, wire::MIN_DEAD_LETTER_BYTES) {
            Some(smaller) => {
                tracing::warn!(
                    "{}; sending a smaller dead letter instead",
                    delivery::describe(topic, &error)
                );
                let delivery = send(producer, &config.dlq_topic, key, &smaller, None).await?;
                let (key, letter) = (key.clone(), smaller);
                pending.push(Box::pin(async move {
                    (Sent::DeadLetter { key, letter }, delivery.await)
                }));
            }
            None => {
                summary.undeliverable += 1;
                tracing::error!(
                    "{}; that rating's dead letter is dropped",
                    delivery::describe(topic, &error)
                );
            }
        }
        return Ok(());
    }
    Err(LearnerError::Undelivered(delivery::describe(topic, &error)))
}

/// Waits for every outstanding publication.
async fn settle(
    producer: &FutureProducer<LoggingContext>,
    config: &LearnerConfig,
    pending: &mut Pending,
    last_model_offset: &mut Option<i64>,
    summary: &mut LearnerSummary,
) -> Result<(), LearnerError> {
    while let Some(delivered) = pending.next().await {
        settled(
            producer,
            config,
            pending,
            last_model_offset,
            delivered,
            summary,
        )
        .await?;
    }
    Ok(())
}

/// Logs an error reading a topic (at most every few seconds); librdkafka
/// retries by itself, so the loop goes on.
fn stream_error(topic: &str, error: &KafkaError, last: &mut Option<Instant>) {
    metrics::counter!(m::CONSUME_ERRORS, "topic" => topic.to_string()).increment(1);
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
        *last = Some(Instant::now());
        tracing::warn!(
            topic,
            "error reading {topic:?}: {error}; the client retries"
        );
    }
}

fn write_snapshot(
    config: &LearnerConfig,
    learner: &OnlineLearner,
    positions: &BTreeMap<String, i64>,
    last_model_offset: Option<i64>,
) -> Result<(), LearnerError> {
    let Some(dir) = &config.snapshot_dir else {
        return Ok(());
    };
    let started = Instant::now();
    std::fs::create_dir_all(dir)
        .map_err(|e| LearnerError::Snapshot(format!("{}: {e}", dir.display())))?;
    let mut positions = positions.clone();
    if let Some(offset) = last_model_offset {
        let next = positions
            .entry(MODEL_TOPIC_POSITION.to_string())
            .or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }
    let mut snapshot = learner.snapshot(positions);
    let path = dir.join("latest.rsm");
    modelfile::save(&mut snapshot, &path).map_err(|e| LearnerError::Snapshot(e.to_string()))?;
    tracing::info!(path = %path.display(), version = %snapshot.version(), took = ?started.elapsed(), "snapshot written");
    Ok(())
}

/// Switches to a newly announced batch model (keeping the current one if it fails).
async fn switch_model(
    config: &LearnerConfig,
    announcement: &ModelAnnouncement,
    current: OnlineLearner,
) -> OnlineLearner {
    match fetch_model(&config.kafka, announcement).await {
        Ok(model) => {
            tracing::info!(model = %announcement.id, "learning on top of the newly announced batch model");
            OnlineLearner::new(model, config.update_items)
        }
        Err(e) => {
            tracing::error!(model = %announcement.id, "refusing the announced model: {e}; learning continues on {}", current.base_id());
            current
        }
    }
}
