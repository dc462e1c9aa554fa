//! What a retrain learns from besides its base file: the ratings topic,
//! read up to where it ends at the start of the retrain.
//!
//! [`collect`] records the end of each partition of the ratings topic (its
//! high watermark), reads every rating before it, and refuses the ratings
//! the learners refuse (unreadable, or not keyed by uid on a topic of
//! several partitions), so the retrained model holds exactly the ratings
//! the learners learnt. The recorded ends go into the model's announcement
//! ([`Covers`]): learners switch to the model and learn, on top of it, only
//! the ratings after them. With an [`archive::Archive`], ratings read once
//! are kept in a folder and the next retrain reads only the new ones;
//! without one, every retrain reads the topic from its first offset, which
//! must then still be 0.

pub mod archive;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use crate::kafka::{KafkaSettings, LoggingContext};
use crate::model_topic::Covers;
use crate::topics::{self, TopicError};
use crate::wire::{self, RatingEvent};

pub use archive::Archive;

/// How long the reading may go without progress before it gives up.
const STALL: Duration = Duration::from_secs(120);

/// How long without a message before the positions are looked at.
const IDLE: Duration = Duration::from_secs(1);

/// Why the ratings for a retrain could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    /// Kafka failed.
    #[error("reading the ratings topic {topic:?}: {source}")]
    Kafka {
        /// The ratings topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The topic could not be described.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// Ratings the model should hold are gone from the topic.
    #[error(
        "partition {partition} of {topic:?} starts at offset {earliest}, but the ratings from offset {from} on are needed: {lost} rating(s) were deleted by the topic's retention before a retrain read them. {hint} (--skip-lost-ratings trains without them)"
    )]
    RatingsGone {
        /// The ratings topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The first offset needed.
        from: i64,
        /// The first offset retained.
        earliest: i64,
        /// How many are gone.
        lost: i64,
        /// What to do about it.
        hint: &'static str,
    },
    /// The topic has fewer partitions than the archive has read.
    #[error(
        "{topic:?} has {partitions} partition(s), but the archive has read partition {archived}: it is not the topic archived"
    )]
    FewerPartitions {
        /// The ratings topic.
        topic: String,
        /// Its partitions now.
        partitions: i32,
        /// A partition the archive read.
        archived: i32,
    },
    /// The reading stopped moving.
    #[error(
        "reading {topic:?} made no progress for {} s: partition {partition} is at {position}, its end was {end} (an open transaction holds it back?)",
        STALL.as_secs()
    )]
    Stalled {
        /// The ratings topic.
        topic: String,
        /// A partition not read to its end.
        partition: i32,
        /// Where it is.
        position: i64,
        /// Where it was to be read to.
        end: i64,
    },
    /// A Kafka call could not finish.
    #[error(transparent)]
    Blocking(#[from] crate::kafka::BlockingCallError),
    /// The archive folder could not be read or written.
    #[error("the ratings archive {}: {what}: {source}", path.display())]
    Archive {
        /// The folder.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An archive file is not what the archive wrote.
    #[error("the ratings archive file {} is damaged: {problem}", path.display())]
    ArchiveCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The archive is of another ratings topic.
    #[error(
        "the ratings archive {} holds ratings of {archived:?}, not of {asked:?}: give each ratings topic its own archive",
        path.display()
    )]
    ArchiveOfOtherTopic {
        /// The folder.
        path: PathBuf,
        /// The topic it holds.
        archived: String,
        /// The topic asked for.
        asked: String,
    },
}

/// How to collect.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// The ratings topic.
    pub ratings_topic: String,
    /// Largest rating message read (the learners' limit).
    pub max_rating_bytes: usize,
    /// Train without ratings deleted before they were read, instead of
    /// refusing to.
    pub skip_lost: bool,
}

/// The ratings a retrain learns from the topic.
#[derive(Debug, Clone)]
pub struct Collected {
    /// Every rating (the archive's, then the new ones), each partition's in order.
    pub ratings: Vec<RatingEvent>,
    /// Ratings read from the topic this time.
    pub read: u64,
    /// Ratings refused as the learners refuse them, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Ratings lost to retention and skipped (`skip_lost`).
    pub lost: i64,
    /// What a model trained on `ratings` holds.
    pub covers: Covers,
}

/// Reads the ratings topic up to where it ends now, from where `archive`
/// stopped (the beginning without one), and archives what was read. `None`
/// when `shutdown` came first.
pub async fn collect(
    settings: &KafkaSettings,
    options: &CollectOptions,
    archive: Option<&mut Archive>,
    shutdown: &CancellationToken,
) -> Result<Option<Collected>, RetrainError> {
    let topic = options.ratings_topic.as_str();
    let Some(partitions) = topics::wait_for_partitions(settings, topic, shutdown).await? else {
        return Ok(None);
    };
    let partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
    let archived = archive
        .as_ref()
        .map(|a| a.positions().next.clone())
        .unwrap_or_default();
    if let Some((&p, _)) = archived.range(partitions..).next() {
        return Err(RetrainError::FewerPartitions {
            topic: topic.to_string(),
            partitions,
            archived: p,
        });
    }
    let ends = watermarks(settings, topic, partitions).await?;
    let mut spans = BTreeMap::new();
    let mut lost = 0;
    for (&p, &(earliest, end)) in &ends {
        let from = archived.get(&p).copied().unwrap_or(0);
        let from = if earliest > from {
            let gone = RetrainError::RatingsGone {
                topic: topic.to_string(),
                partition: p,
                from,
                earliest,
                lost: earliest - from,
                hint: if archive.is_some() {
                    "Keep the ratings topic's retention longer than the time between retrains plus a training run"
                } else {
                    "Without --archive every retrain reads the whole topic, which must keep every rating since the base file was made; give retrain an --archive folder"
                },
            };
            if !options.skip_lost {
                return Err(gone);
            }
            tracing::warn!("{gone}; training without them, as --skip-lost-ratings asks");
            lost += earliest - from;
            earliest
        } else {
            from
        };
        if from < end {
            spans.insert(p, (from, end));
        }
    }
    let Some((ratings, read, refused)) =
        read_spans(settings, options, partitions, &spans, shutdown).await?
    else {
        return Ok(None);
    };
    let next: BTreeMap<i32, i64> = ends.iter().map(|(&p, &(_, end))| (p, end)).collect();
    let ratings = match archive {
        Some(archive) => {
            archive.append(&ratings, &next)?;
            archive.ratings()?
        }
        None => ratings,
    };
    Ok(Some(Collected {
        ratings,
        read,
        refused,
        lost,
        covers: Covers {
            ratings_topic: topic.to_string(),
            next,
        },
    }))
}

/// The first and the next offset of each partition of `topic`.
async fn watermarks(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, (i64, i64)>, RetrainError> {
    let (settings, name) = (settings.clone(), topic.to_string());
    let what = format!("fetching the ends of {topic:?}");
    let kafka = |source| RetrainError::Kafka {
        topic: topic.to_string(),
        source,
    };
    crate::kafka::blocking(what, move || {
        let client: BaseConsumer<LoggingContext> = settings
            .reader("recstream-retrain-watermarks")
            .create_with_context(LoggingContext::new("retrain"))?;
        (0..partitions)
            .map(|p| {
                let ends = client.fetch_watermarks(&name, p, Duration::from_secs(30))?;
                Ok((p, ends))
            })
            .collect::<Result<BTreeMap<_, _>, rdkafka::error::KafkaError>>()
    })
    .await?
    .map_err(kafka)
}

/// What reading the spans gave: the ratings accepted, how many were read,
/// and the refusals by reason.
type Read = (Vec<RatingEvent>, u64, BTreeMap<&'static str, u64>);

/// Reads each partition's span `[from, end)`.
async fn read_spans(
    settings: &KafkaSettings,
    options: &CollectOptions,
    partitions: i32,
    spans: &BTreeMap<i32, (i64, i64)>,
    shutdown: &CancellationToken,
) -> Result<Option<Read>, RetrainError> {
    let topic = options.ratings_topic.as_str();
    let (mut ratings, mut read, mut refused) = (Vec::new(), 0u64, BTreeMap::new());
    if spans.is_empty() {
        return Ok(Some((ratings, read, refused)));
    }
    let kafka = |source| RetrainError::Kafka {
        topic: topic.to_string(),
        source,
    };
    let consumer: StreamConsumer<LoggingContext> = settings
        .reader(&format!("recstream-retrain-{:08x}", rand::random::<u32>()))
        .create_with_context(LoggingContext::new("retrain"))
        .map_err(kafka)?;
    let consumer = Arc::new(consumer);
    let mut assignment = rdkafka::TopicPartitionList::new();
    for (&p, &(from, _)) in spans {
        assignment
            .add_partition_offset(topic, p, Offset::Offset(from))
            .map_err(kafka)?;
    }
    consumer.assign(&assignment).map_err(kafka)?;
    let several = usize::try_from(partitions).unwrap_or(1);
    let mut left: BTreeMap<i32, i64> = spans.iter().map(|(&p, &(_, end))| (p, end)).collect();
    let mut moved = Instant::now();
    while !left.is_empty() {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            next = tokio::time::timeout(IDLE, consumer.recv()) => next,
        };
        let message = match next {
            Ok(Ok(message)) => message,
            Ok(Err(e)) => {
                tracing::warn!("reading {topic:?}: {e}; the client retries");
                continue;
            }
            Err(_) => {
                // The last offsets of a partition may be transaction
                // markers, never delivered: its position says it is done.
                let positions = positions(&consumer, topic, &left);
                left.retain(|p, end| positions.get(p).is_none_or(|&at| at < *end));
                if !left.is_empty() && moved.elapsed() >= STALL {
                    return Err(stalled(topic, &left, &positions));
                }
                continue;
            }
        };
        moved = Instant::now();
        let (p, offset) = (message.partition(), message.offset());
        let Some(&end) = left.get(&p) else { continue };
        if offset < end {
            read += 1;
            match wire::parse_keyed_rating(
                message.key(),
                message.payload(),
                options.max_rating_bytes,
                several,
            ) {
                Ok(rating) => ratings.push(rating),
                Err(rejection) => *refused.entry(rejection.code.as_str()).or_default() += 1,
            }
        }
        if offset + 1 >= end {
            left.remove(&p);
        }
    }
    Ok(Some((ratings, read, refused)))
}

/// Where the consumer is in each partition of `left`.
fn positions(
    consumer: &StreamConsumer<LoggingContext>,
    topic: &str,
    left: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, i64> {
    let Ok(list) = consumer.position() else {
        return BTreeMap::new();
    };
    left.keys()
        .filter_map(|&p| Some((p, list.find_partition(topic, p)?.offset().to_raw()?)))
        .collect()
}

/// The error for a reading that stopped moving.
fn stalled(topic: &str, left: &BTreeMap<i32, i64>, positions: &BTreeMap<i32, i64>) -> RetrainError {
    let (&partition, &end) = left.iter().next().unwrap_or((&-1, &-1));
    RetrainError::Stalled {
        topic: topic.to_string(),
        partition,
        position: positions.get(&partition).copied().unwrap_or(-1),
        end,
    }
}
