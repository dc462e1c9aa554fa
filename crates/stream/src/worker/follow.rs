//! Following the model topic: online updates applied in order, new batch models swapped in.
//!
//! On start the follower looks for the newest batch model announced on the
//! topic; if it is not the one being served, it is fetched, verified and
//! swapped in first. Then it reads the topic in order: user and item states
//! for the batch model being served are applied (many at a time, under one
//! short write lock), states for other batch models are skipped, and a new
//! announcement starts a background load; states for the announced model
//! that arrive meanwhile are held and applied right after the swap. A model
//! that fails to load or verify is refused with an error and the current
//! one keeps serving.

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
        "the model topic {topic:?} no longer holds the updates this worker needs (it starts at offset {earliest}, the worker is at {position}): start the worker from a recent snapshot (--model <snapshot-dir>/latest.rsm), and keep snapshots more frequent than the topic's retention"
    )]
    Truncated {
        /// The model topic.
        topic: String,
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

/// Follows `topic` from `start` until `shutdown`; stops with an error when
/// updates it needs are gone from the topic (never skips them silently).
pub(crate) async fn run(
    settings: KafkaSettings,
    topic: String,
    start: Offset,
    model: Arc<ServingModel>,
    shutdown: CancellationToken,
) -> Result<(), FollowError> {
    Follower::start(settings, topic, start, model)
        .await?
        .run(shutdown)
        .await
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
}

impl Follower {
    /// Swaps in a newer announced model if there is one, then assigns the
    /// topic from where the served model stands.
    async fn start(
        settings: KafkaSettings,
        topic: String,
        start: Offset,
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
        let mut from = start;
        if let Some((offset, announcement)) = newest_announcement(&settings, &topic, start).await
            && announcement.id != model.base_id()
        {
            tracing::info!(model = %announcement.id, "a newer batch model is announced; loading it before following updates");
            if swap_in(&settings, &announcement, &model).await {
                from = Offset::Offset(offset + 1);
            }
        }
        if from == Offset::Beginning {
            // A compacted topic keeps offset 0; one that does not has lost
            // states that a worker starting from the batch model needs.
            let earliest = earliest_offset(&settings, &topic).await;
            if earliest > 0 {
                return Err(lost(&topic, earliest, 0));
            }
        }
        let consumer = assigned_consumer(&settings, &topic, from)?;
        tracing::info!(topic = %topic, model = %model.version(), "following model updates");
        Ok(Follower {
            settings,
            topic,
            model,
            consumer: Arc::new(consumer),
            loading: None,
            held: Vec::new(),
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
                            Some(Some(Ok(message))) => decode_into(&mut messages, message.payload()),
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
    ) -> Result<Option<Vec<ModelMessage>>, FollowError> {
        let mut messages = Vec::new();
        match next {
            Ok(message) => decode_into(&mut messages, message.payload()),
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) => {
                let position = self
                    .consumer
                    .position()
                    .ok()
                    .and_then(|p| p.find_partition(&self.topic, 0).map(|e| e.offset()))
                    .and_then(|o| o.to_raw())
                    .unwrap_or(-1);
                let earliest = earliest_offset(&self.settings, &self.topic).await;
                return Err(lost(&self.topic, earliest, position));
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
                apply(&self.model, std::mem::take(&mut self.held));
            }
            None => self.held.clear(),
        }
    }

    /// Applies the states for the served model, holds those for the model
    /// being loaded, and starts loading a newly announced one.
    fn on_messages(&mut self, messages: Vec<ModelMessage>) {
        let current = self.model.base_id();
        let mut ready = Vec::with_capacity(messages.len());
        for message in messages {
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
        apply(&self.model, ready);
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

/// Decodes one model-topic payload into `messages`; an unreadable one is
/// logged and skipped.
fn decode_into(messages: &mut Vec<ModelMessage>, payload: Option<&[u8]>) {
    match payload.map(ModelMessage::decode) {
        Some(Ok(message)) => messages.push(message),
        Some(Err(e)) => tracing::warn!("skipping an unreadable model-topic message: {e}"),
        None => {}
    }
}

/// A reader of the topic's one partition from `from`. A position that falls
/// out of the topic is an error, not a silent jump to whatever is retained
/// (that would skip updates).
fn assigned_consumer(
    settings: &KafkaSettings,
    topic: &str,
    from: Offset,
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
    topics::assign_all(&consumer, topic, 1, |_| from).map_err(kafka)?;
    Ok(consumer)
}

/// Applies user and item states in order under one write lock.
fn apply(model: &ServingModel, messages: Vec<ModelMessage>) {
    if messages.is_empty() {
        return;
    }
    let applied = messages.len() as u64;
    let last_seq = model.update(|recommender| {
        let mut last = None;
        for message in &messages {
            match message {
                ModelMessage::User {
                    seq,
                    base,
                    state,
                    rated,
                    rating_ts_ms,
                    ..
                } => {
                    recommender.apply_user(state, rated);
                    if let Some(ts) = rating_ts_ms {
                        model.note_rating(state.id.as_str(), *ts);
                    }
                    last = Some((base.clone(), *seq));
                }
                ModelMessage::Item { seq, base, state } => {
                    recommender.apply_item(state);
                    last = Some((base.clone(), *seq));
                }
                _ => {}
            }
        }
        if let Some((base, seq)) = &last {
            recommender.set_version(format!("{base}+{seq}"));
        }
        last.map(|(_, seq)| seq)
    });
    metrics::counter!(m::MODEL_UPDATES).increment(applied);
    if let Some(seq) = last_seq {
        metrics::gauge!(m::MODEL_SEQUENCE).set(seq as f64);
    }
}

/// The error for a worker whose next updates are gone, logged as it is made.
fn lost(topic: &str, earliest: i64, position: i64) -> FollowError {
    metrics::counter!(m::MODEL_TOPIC_TRUNCATED).increment(1);
    let error = FollowError::Truncated {
        topic: topic.to_string(),
        earliest,
        position,
    };
    tracing::error!("{error}");
    error
}

/// The first offset the broker still holds of the model topic's partition
/// (0 when it cannot say: no evidence of loss is not loss).
async fn earliest_offset(settings: &KafkaSettings, topic: &str) -> i64 {
    watermarks(settings, topic).await.map_or(0, |(low, _)| low)
}

/// The low and high watermarks of the topic's one partition, asked by a
/// short-lived client; `None` when the broker cannot say.
async fn watermarks(settings: &KafkaSettings, topic: &str) -> Option<(i64, i64)> {
    let (settings, topic) = (settings.clone(), topic.to_string());
    let what = format!("fetching the watermarks of {topic:?}");
    crate::kafka::blocking(what, move || {
        let client: rdkafka::consumer::BaseConsumer<LoggingContext> = settings
            .reader("recstream-follow-watermarks")
            .create_with_context(LoggingContext::new("model-follower"))
            .ok()?;
        client
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
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

/// The newest announcement between `start` and the current end of the topic.
async fn newest_announcement(
    settings: &KafkaSettings,
    topic: &str,
    start: Offset,
) -> Option<(i64, ModelAnnouncement)> {
    let (_, high) = watermarks(settings, topic).await?;
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
