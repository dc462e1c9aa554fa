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
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use recstream_core::Recommender;
use tokio_util::sync::CancellationToken;

use crate::kafka::{KafkaSettings, LoggingContext};
use crate::metrics as m;
use crate::model_topic::{ModelAnnouncement, ModelMessage};
use crate::publish::fetch_model;
use crate::serving::ServingModel;

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
    let kafka = |source| FollowError::Kafka {
        topic: topic.clone(),
        source,
    };
    // A position that falls out of the topic is an error, not a silent jump
    // to whatever is retained (that would skip updates).
    let consumer: StreamConsumer<LoggingContext> = settings
        .reader(&format!("recstream-follow-{}", rand::random::<u32>()))
        .set("auto.offset.reset", "error")
        .create_with_context(LoggingContext::new("model-follower"))
        .map_err(kafka)?;
    if from == Offset::Beginning {
        // A compacted topic keeps offset 0; one that does not has lost
        // states that a worker starting from the batch model needs.
        let earliest = earliest_offset(&settings, &topic).await;
        if earliest > 0 {
            return Err(lost(&topic, earliest, 0));
        }
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, from).map_err(kafka)?;
    consumer.assign(&tpl).map_err(kafka)?;
    tracing::info!(topic = %topic, model = %model.version(), "following model updates");
    let mut stream = consumer.stream();
    let mut loading: Option<(
        ModelAnnouncement,
        tokio::task::JoinHandle<Option<Recommender>>,
    )> = None;
    let mut held: Vec<ModelMessage> = Vec::new();
    loop {
        let load_done = async {
            match loading.as_mut() {
                Some((_, handle)) => handle.await.ok().flatten(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            loaded = load_done => {
                let Some((announcement, _)) = loading.take() else { continue };
                match loaded {
                    Some(recommender) => {
                        model.replace(recommender);
                        metrics::counter!(m::MODEL_SWAPS, "outcome" => "loaded").increment(1);
                        tracing::info!(model = %announcement.id, "new batch model swapped in");
                        apply(&model, std::mem::take(&mut held));
                    }
                    None => held.clear(),
                }
            }
            next = stream.next() => {
                let mut messages = Vec::new();
                let push = |messages: &mut Vec<ModelMessage>, payload: Option<&[u8]>| match payload.map(ModelMessage::decode) {
                    Some(Ok(message)) => messages.push(message),
                    Some(Err(e)) => tracing::warn!("skipping an unreadable model-topic message: {e}"),
                    None => {}
                };
                match next {
                    Some(Ok(message)) => push(&mut messages, message.payload()),
                    Some(Err(e)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AutoOffsetReset) => {
                        let position = consumer
                            .position()
                            .ok()
                            .and_then(|p| p.find_partition(&topic, 0).map(|e| e.offset()))
                            .and_then(|o| o.to_raw())
                            .unwrap_or(-1);
                        let earliest = earliest_offset(&settings, &topic).await;
                        return Err(lost(&topic, earliest, position));
                    }
                    Some(Err(e)) => {
                        tracing::warn!("model topic: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    None => break,
                }
                while messages.len() < APPLY_BATCH {
                    match stream.next().now_or_never() {
                        Some(Some(Ok(message))) => push(&mut messages, message.payload()),
                        _ => break,
                    }
                }
                let current = model.base_id();
                let mut ready = Vec::with_capacity(messages.len());
                for message in messages {
                    match &message {
                        ModelMessage::Model(announcement) if announcement.id != current => {
                            if loading.as_ref().is_some_and(|(a, _)| a.id == announcement.id) {
                                continue;
                            }
                            held.clear();
                            let settings = settings.clone();
                            let announced = announcement.clone();
                            let handle = tokio::spawn(async move { load(&settings, &announced).await });
                            loading = Some((announcement.clone(), handle));
                        }
                        ModelMessage::User { base, .. } | ModelMessage::Item { base, .. } => {
                            if *base == current {
                                ready.push(message);
                            } else if loading.as_ref().is_some_and(|(a, _)| &a.id == base) {
                                held.push(message);
                            }
                        }
                        _ => {}
                    }
                }
                apply(&model, ready);
            }
        }
    }
    Ok(())
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
    let (settings, topic) = (settings.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let client: rdkafka::consumer::BaseConsumer<LoggingContext> = settings
            .reader("recstream-follow-watermarks")
            .create_with_context(LoggingContext::new("model-follower"))
            .ok()?;
        client
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .ok()
            .map(|(low, _)| low)
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(0)
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
    let consumer: StreamConsumer<LoggingContext> = settings
        .reader(&format!("recstream-scan-{}", rand::random::<u32>()))
        .create_with_context(LoggingContext::new("model-scan"))
        .ok()?;
    let (_, high) = {
        let consumer = &consumer;
        tokio::task::block_in_place(|| consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)))
            .ok()?
    };
    if high <= 0 {
        return None;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, start).ok()?;
    consumer.assign(&tpl).ok()?;
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
