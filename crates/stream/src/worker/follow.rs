//! Following the model topic: online updates applied in order, new batch models swapped in.
//!
//! On start the follower looks for the newest batch model announced on the
//! topic; if it is not the one being served, it is fetched, verified and
//! swapped in first. Then it reads every partition of the topic, each in
//! order (a user's or an item's states all live on one partition, written
//! by one learner): user and item states for the batch model being served
//! are applied (many at a time, under one short write lock), states for
//! other batch models are skipped, and a new announcement (written on every
//! partition) starts a background load; states for the announced model
//! that arrive meanwhile are held and applied right after the swap. A model
//! that fails to load or verify is refused with an error and the current
//! one keeps serving.
//!
//! The version replies carry is the batch model's id and a digest of the
//! last state applied from each partition: two workers that have applied
//! the same updates serve the same model and say the same version. (A
//! worker started from a snapshot counts, for a partition with no state
//! since the snapshot, the snapshot's position instead, so its version may
//! differ from an older worker's until each partition has a new state.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use recstream_core::Recommender;
use tokio_util::sync::CancellationToken;

use crate::kafka::{KafkaSettings, LoggingContext};
use crate::metrics as m;
use crate::model_topic::{ModelAnnouncement, ModelMessage};
use crate::publish::fetch_model;
use crate::serving::ServingModel;
use crate::topics;

/// Most messages applied under one write lock.
const APPLY_BATCH: usize = 512;

/// Why a worker cannot follow the model topic without missing updates.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The updates this worker needs next are gone from the topic.
    #[error(
        "the model topic {topic:?} no longer holds the updates this worker needs (partition {partition} starts at offset {earliest}, the worker is at {position}): start the worker from a recent snapshot (--model <snapshot-dir>/latest.rsm), and keep snapshots more frequent than the topic's retention"
    )]
    Truncated {
        /// The model topic.
        topic: String,
        /// The partition (-1: could not tell which).
        partition: i32,
        /// Its first retained offset.
        earliest: i64,
        /// Where this worker was (0: the beginning).
        position: i64,
    },
    /// The follower's Kafka client could not be set up.
    #[error("cannot follow the model topic {topic:?}: {source}")]
    Kafka {
        /// The model topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

/// Follows `topic` from the positions a snapshot saved (`positions`; from
/// the beginning without them) until `shutdown`; stops with an error when
/// updates it needs are gone from the topic (never skips them silently).
pub(crate) async fn run(
    settings: KafkaSettings,
    topic: String,
    positions: BTreeMap<String, i64>,
    model: Arc<ServingModel>,
    shutdown: CancellationToken,
) -> Result<(), FollowError> {
    let partitions = match crate::topics::wait_for_partitions(&settings, &topic, &shutdown).await {
        Ok(Some(n)) => i32::try_from(n).unwrap_or(i32::MAX),
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::warn!("cannot count the partitions of {topic:?} ({e}); following partition 0");
            1
        }
    };
    let start: BTreeMap<i32, Offset> = (0..partitions)
        .map(|p| (p, saved_position(&positions, p)))
        .collect();
    Follower::start(settings, topic, start, model)
        .await?
        .run(shutdown)
        .await
}

/// Where a snapshot says partition `p` resumes (`model-topic/<p>`, or
/// `model-topic` for partition 0 of a snapshot from before partitions).
fn saved_position(positions: &BTreeMap<String, i64>, p: i32) -> Offset {
    let named = positions.get(&crate::learner::model_position(p));
    let legacy = (p == 0)
        .then(|| positions.get(super::MODEL_TOPIC_POSITION))
        .flatten();
    named
        .or(legacy)
        .map_or(Offset::Beginning, |&o| Offset::Offset(o))
}

/// An announced batch model being fetched and prepared in the background.
struct Loading {
    announcement: ModelAnnouncement,
    handle: tokio::task::JoinHandle<Option<Recommender>>,
}

/// The follower's state: where it reads, what it serves, and the model it
/// may be loading, with the states for that model held until it is in.
struct Follower {
    settings: KafkaSettings,
    topic: String,
    model: Arc<ServingModel>,
    consumer: Arc<StreamConsumer<LoggingContext>>,
    loading: Option<Loading>,
    held: Vec<ModelMessage>,
    /// Per partition, the offset of the last state applied.
    applied: BTreeMap<i32, i64>,
    /// Per partition, the highest user sequence applied (ratings learnt).
    learnt: BTreeMap<i32, u64>,
}

/// One message read: where it was, and what it said (`None`: unreadable).
type Read = (i32, i64, Option<ModelMessage>);

impl Follower {
    /// Swaps in a newer announced model if there is one, then assigns the
    /// topic from where the served model stands.
    async fn start(
        settings: KafkaSettings,
        topic: String,
        mut start: BTreeMap<i32, Offset>,
        model: Arc<ServingModel>,
    ) -> Result<Self, FollowError> {
        // A worker started from a snapshot is that far along already: say so
        // before the first update arrives (a quiet topic may have none for a while).
        let start_seq = crate::serving::read(&model.current())
            .model()
            .meta
            .online
            .as_ref()
            .map_or(0, |online| online.seq);
        metrics::gauge!(m::MODEL_SEQUENCE).set(start_seq as f64);
        // Announcements go to every partition: partition 0 has them all.
        let first = start.get(&0).copied().unwrap_or(Offset::Beginning);
        if let Some((offset, announcement)) = newest_announcement(&settings, &topic, first).await
            && announcement.id != model.base_id()
        {
            tracing::info!(model = %announcement.id, "a newer batch model is announced; loading it before following updates");
            if swap_in(&settings, &announcement, &model).await {
                // The other partitions are read from where they were: their
                // states for the new model come after its announcement.
                start.insert(0, Offset::Offset(offset + 1));
            }
        }
        for (&p, &from) in &start {
            if from == Offset::Beginning {
                // A compacted topic keeps offset 0; one that does not has lost
                // states that a worker starting from the batch model needs.
                let earliest = earliest_offset(&settings, &topic, p).await;
                if earliest > 0 {
                    return Err(lost(&topic, p, earliest, 0));
                }
            }
        }
        let consumer = assigned_consumer(&settings, &topic, &start)?;
        tracing::info!(topic = %topic, partitions = start.len(), model = %model.version(), "following model updates");
        let applied = start
            .iter()
            .filter_map(|(&p, from)| Some((p, from.to_raw().filter(|&o| o > 0)? - 1)))
            .collect();
        Ok(Follower {
            settings,
            topic,
            model,
            consumer: Arc::new(consumer),
            loading: None,
            held: Vec::new(),
            applied,
            learnt: BTreeMap::new(),
        })
    }

    /// Reads and applies until `shutdown`, the end of the stream, or a gap.
    async fn run(mut self, shutdown: CancellationToken) -> Result<(), FollowError> {
        let consumer = self.consumer.clone();
        let mut stream = consumer.stream();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                loaded = loaded(&mut self.loading) => self.on_loaded(loaded),
                next = stream.next() => {
                    let Some(next) = next else { return Ok(()) };
                    let Some(mut messages) = self.read(next).await? else { continue };
                    while messages.len() < APPLY_BATCH {
                        match stream.next().now_or_never() {
                            Some(Some(Ok(message))) => messages.push(decode(&message)),
                            _ => break,
                        }
                    }
                    self.on_messages(messages);
                }
            }
        }
    }

    /// The messages in one read, or `None` after a transient error (logged);
    /// a position that fell out of the topic is the error that stops us.
    async fn read(
        &self,
        next: KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<Option<Vec<Read>>, FollowError> {
        let mut messages = Vec::new();
        match next {
            Ok(message) => messages.push(decode(&message)),
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) => {
                // The partition whose position fell out of what is retained.
                let positions = self.consumer.position().ok();
                let partitions = self.consumer.assignment().map(|a| a.count()).unwrap_or(1);
                for p in 0..partitions as i32 {
                    let position = positions
                        .as_ref()
                        .and_then(|l| l.find_partition(&self.topic, p).map(|e| e.offset()))
                        .and_then(|o| o.to_raw())
                        .unwrap_or(-1);
                    let earliest = earliest_offset(&self.settings, &self.topic, p).await;
                    if position < earliest {
                        return Err(lost(&self.topic, p, earliest, position));
                    }
                }
                return Err(lost(&self.topic, -1, -1, -1));
            }
            Err(e) => {
                tracing::warn!("model topic: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(None);
            }
        }
        Ok(Some(messages))
    }

    /// A background load finished: swap the model in and apply what was
    /// held for it, or drop what was held if it was refused.
    fn on_loaded(&mut self, loaded: Option<Recommender>) {
        let Some(Loading { announcement, .. }) = self.loading.take() else {
            return;
        };
        match loaded {
            Some(recommender) => {
                self.model.replace(recommender);
                metrics::counter!(m::MODEL_SWAPS, "outcome" => "loaded").increment(1);
                tracing::info!(model = %announcement.id, "new batch model swapped in");
                let version = format!("{}+{}", announcement.id, digest(&self.applied));
                apply(&self.model, std::mem::take(&mut self.held), version);
            }
            None => self.held.clear(),
        }
    }

    /// Applies the states for the served model, holds those for the model
    /// being loaded, and starts loading a newly announced one.
    fn on_messages(&mut self, messages: Vec<Read>) {
        let current = self.model.base_id();
        let mut ready = Vec::with_capacity(messages.len());
        for (partition, offset, message) in messages {
            let Some(message) = message else { continue };
            if let ModelMessage::User { seq, .. } = &message {
                let learnt = self.learnt.entry(partition).or_default();
                *learnt = (*learnt).max(*seq);
            }
            if matches!(
                message,
                ModelMessage::User { .. } | ModelMessage::Item { .. }
            ) {
                self.applied.insert(partition, offset);
            }
            match &message {
                ModelMessage::Model(announcement) if announcement.id != current => {
                    self.start_loading(announcement);
                }
                ModelMessage::User { base, .. } | ModelMessage::Item { base, .. } => {
                    if *base == current {
                        ready.push(message);
                    } else if self.is_loading(base) {
                        self.held.push(message);
                    }
                }
                _ => {}
            }
        }
        if !ready.is_empty() {
            let version = format!("{current}+{}", digest(&self.applied));
            apply(&self.model, ready, version);
        }
        metrics::gauge!(m::MODEL_SEQUENCE).set(self.learnt.values().sum::<u64>() as f64);
    }

    fn is_loading(&self, id: &str) -> bool {
        self.loading
            .as_ref()
            .is_some_and(|loading| loading.announcement.id == id)
    }

    fn start_loading(&mut self, announcement: &ModelAnnouncement) {
        if self.is_loading(&announcement.id) {
            return;
        }
        self.held.clear();
        let settings = self.settings.clone();
        let announced = announcement.clone();
        let handle = tokio::spawn(async move { load(&settings, &announced).await });
        self.loading = Some(Loading {
            announcement: announcement.clone(),
            handle,
        });
    }
}

/// Resolves when the model being loaded is ready (or refused); never when
/// nothing is loading.
async fn loaded(loading: &mut Option<Loading>) -> Option<Recommender> {
    match loading.as_mut() {
        Some(loading) => (&mut loading.handle).await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// Decodes one model-topic message; an unreadable one is logged and skipped.
fn decode(message: &BorrowedMessage<'_>) -> Read {
    let decoded = match message.payload().map(ModelMessage::decode) {
        Some(Ok(decoded)) => Some(decoded),
        Some(Err(e)) => {
            tracing::warn!("skipping an unreadable model-topic message: {e}");
            None
        }
        None => None,
    };
    (message.partition(), message.offset(), decoded)
}

/// A short digest of the last state applied from each partition: the part
/// of a reply's version that says which updates the model holds.
fn digest(applied: &BTreeMap<i32, i64>) -> String {
    let mut hasher = crc32fast::Hasher::new();
    for (p, offset) in applied {
        hasher.update(&p.to_le_bytes());
        hasher.update(&offset.to_le_bytes());
    }
    format!("{:08x}", hasher.finalize())
}

/// A reader of every partition of the topic, each from its `from`. A
/// position that falls out of the topic is an error, not a silent jump to
/// whatever is retained (that would skip updates).
fn assigned_consumer(
    settings: &KafkaSettings,
    topic: &str,
    from: &BTreeMap<i32, Offset>,
) -> Result<StreamConsumer<LoggingContext>, FollowError> {
    let kafka = |source| FollowError::Kafka {
        topic: topic.to_string(),
        source,
    };
    let consumer: StreamConsumer<LoggingContext> = settings
        .reader(&format!("recstream-follow-{}", rand::random::<u32>()))
        .set("auto.offset.reset", "error")
        .create_with_context(LoggingContext::new("model-follower"))
        .map_err(kafka)?;
    topics::assign_all(&consumer, topic, from.len(), |p| {
        from.get(&p).copied().unwrap_or(Offset::Beginning)
    })
    .map_err(kafka)?;
    Ok(consumer)
}

/// Applies user and item states in order under one write lock, and sets
/// the version the model then has.
fn apply(model: &ServingModel, messages: Vec<ModelMessage>, version: String) {
    let applied = messages.len() as u64;
    model.update(|recommender| {
        for message in &messages {
            match message {
                ModelMessage::User {
                    state,
                    rated,
                    rating_ts_ms,
                    ..
                } => {
                    recommender.apply_user(state, rated);
                    if let Some(ts) = rating_ts_ms {
                        model.note_rating(state.id.as_str(), *ts);
                    }
                }
                ModelMessage::Item { state, .. } => recommender.apply_item(state),
                _ => {}
            }
        }
        if recommender.version() != version {
            recommender.set_version(version);
        }
    });
    metrics::counter!(m::MODEL_UPDATES).increment(applied);
}

/// The error for a worker whose next updates are gone, logged as it is made.
fn lost(topic: &str, partition: i32, earliest: i64, position: i64) -> FollowError {
    metrics::counter!(m::MODEL_TOPIC_TRUNCATED).increment(1);
    let error = FollowError::Truncated {
        topic: topic.to_string(),
        partition,
        earliest,
        position,
    };
    tracing::error!("{error}");
    error
}

/// The first offset the broker still holds of a partition of the model
/// topic (0 when it cannot say: no evidence of loss is not loss).
async fn earliest_offset(settings: &KafkaSettings, topic: &str, partition: i32) -> i64 {
    watermarks(settings, topic, partition)
        .await
        .map_or(0, |(low, _)| low)
}

/// The low and high watermarks of a partition of the topic, asked by a
/// short-lived client; `None` when the broker cannot say.
async fn watermarks(settings: &KafkaSettings, topic: &str, partition: i32) -> Option<(i64, i64)> {
    let (settings, topic) = (settings.clone(), topic.to_string());
    let what = format!("fetching the watermarks of {topic:?}");
    crate::kafka::blocking(what, move || {
        let client: rdkafka::consumer::BaseConsumer<LoggingContext> = settings
            .reader("recstream-follow-watermarks")
            .create_with_context(LoggingContext::new("model-follower"))
            .ok()?;
        client
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .ok()
    })
    .await
    .ok()
    .flatten()
}

/// Fetches and prepares an announced model, or says why not.
async fn load(settings: &KafkaSettings, announcement: &ModelAnnouncement) -> Option<Recommender> {
    match fetch_model(settings, announcement).await {
        Ok(model) => tokio::task::spawn_blocking(move || Recommender::new(model))
            .await
            .ok(),
        Err(e) => {
            metrics::counter!(m::MODEL_SWAPS, "outcome" => "refused").increment(1);
            tracing::error!(model = %announcement.id, "refusing the announced model: {e}; the current model keeps serving");
            None
        }
    }
}

async fn swap_in(
    settings: &KafkaSettings,
    announcement: &ModelAnnouncement,
    model: &ServingModel,
) -> bool {
    match load(settings, announcement).await {
        Some(recommender) => {
            model.replace(recommender);
            metrics::counter!(m::MODEL_SWAPS, "outcome" => "loaded").increment(1);
            true
        }
        None => false,
    }
}

/// The newest announcement on partition 0 between `start` and its current end.
async fn newest_announcement(
    settings: &KafkaSettings,
    topic: &str,
    start: Offset,
) -> Option<(i64, ModelAnnouncement)> {
    let (_, high) = watermarks(settings, topic, 0).await?;
    if high <= 0 {
        return None;
    }
    let consumer: StreamConsumer<LoggingContext> = settings
        .reader(&format!("recstream-scan-{}", rand::random::<u32>()))
        .create_with_context(LoggingContext::new("model-scan"))
        .ok()?;
    topics::assign_all(&consumer, topic, 1, |_| start).ok()?;
    let mut stream = consumer.stream();
    let mut newest = None;
    loop {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(5), stream.next()).await
        else {
            break;
        };
        if let Some(Ok(ModelMessage::Model(announcement))) =
            message.payload().map(ModelMessage::decode)
        {
            newest = Some((message.offset(), announcement));
        }
        if message.offset() + 1 >= high {
            break;
        }
    }
    newest
}
