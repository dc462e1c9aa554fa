//! Moving batch model files through Kafka: publish in chunks, fetch and verify.
//!
//! Publishing reads and verifies a model file, writes it as 512 KiB chunks
//! to a single-partition files topic, then announces it on the model topic.
//! Fetching reads the chunks the announcement points at, checks the
//! SHA-256 and decodes the file (which checks its own CRC and structure), so
//! a corrupted or truncated model is refused before anything serves it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use recstream_core::Model;
use recstream_core::modelfile::{self, ModelFileError};
use sha2::{Digest, Sha256};

use crate::kafka::{KafkaSettings, LoggingContext};
use crate::model_topic::{Covers, ModelAnnouncement, ModelMessage};

/// Bytes per chunk: well under Kafka's default 1 MiB message limit.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// Why a model could not be published or fetched.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Kafka failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The file could not be read.
    #[error("cannot read the model file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model file is not valid (its message names the file or the announcement).
    #[error(transparent)]
    Invalid(#[from] ModelFileError),
    /// The chunks fetched are not the file announced.
    #[error("model {id} does not match its announcement (SHA-256 {found}, announced {announced})")]
    Mismatch {
        /// The model.
        id: String,
        /// SHA-256 of what arrived.
        found: String,
        /// SHA-256 announced.
        announced: String,
    },
    /// Decoding never finished (the runtime is shutting down).
    #[error("decoding model {id} did not finish: {source}")]
    Decoding {
        /// The model.
        id: String,
        /// Tokio's reason.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The chunks did not arrive in time.
    #[error("only {got} of {expected} chunks of model {id} arrived")]
    Incomplete {
        /// The model.
        id: String,
        /// Chunks found.
        got: usize,
        /// Chunks announced.
        expected: u32,
    },
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Publishes the model file at `path` and announces it, saying which
/// ratings it holds when it is a retrained model (`covers`); returns the
/// announcement.
pub async fn publish_model(
    settings: &KafkaSettings,
    files_topic: &str,
    model_topic: &str,
    path: &Path,
    covers: Option<Covers>,
) -> Result<ModelAnnouncement, PublishError> {
    let bytes = std::fs::read(path).map_err(|source| PublishError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let model = modelfile::decode(&bytes, path)?;
    let producer: FutureProducer<LoggingContext> = settings
        .producer()
        .set("message.max.bytes", (CHUNK_BYTES + 64 * 1024).to_string())
        .create_with_context(LoggingContext::new("publisher"))?;
    let chunks: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
    let mut first_offset = None;
    let mut partition = 0;
    for (index, chunk) in chunks.iter().enumerate() {
        let key = format!("{}:{index}", model.id);
        let record = FutureRecord::to(files_topic)
            .key(&key)
            .payload(*chunk)
            .partition(0);
        let delivery = producer
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(e, _)| e)?;
        first_offset.get_or_insert(delivery.offset);
        partition = delivery.partition;
    }
    let announcement = ModelAnnouncement {
        id: model.id.clone(),
        bytes: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
        files_topic: files_topic.to_string(),
        partition,
        first_offset: first_offset.unwrap_or(0),
        chunks: chunks.len() as u32,
        covers,
    };
    let message = ModelMessage::Model(announcement.clone());
    let key = message.key();
    let payload = message.encode();
    // On every partition: each learner and worker meets the announcement
    // before any state for the new model on the same partition.
    let (asking, topic) = (producer.clone(), model_topic.to_string());
    let metadata = crate::kafka::blocking("counting the model topic's partitions", move || {
        asking
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(30))
    })
    .await
    .map_err(|_| PublishError::Kafka(KafkaError::Canceled))
    .and_then(|m| m.map_err(PublishError::from))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(1, |t| t.partitions().len().max(1));
    for partition in 0..partitions as i32 {
        producer
            .send(
                FutureRecord::to(model_topic)
                    .key(&key)
                    .payload(&payload)
                    .partition(partition),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(announcement)
}

/// Fetches, verifies and decodes an announced model.
pub async fn fetch_model(
    settings: &KafkaSettings,
    announcement: &ModelAnnouncement,
) -> Result<Model, PublishError> {
    let parts = read_chunks(settings, announcement).await?;
    if parts.len() < announcement.chunks as usize {
        return Err(PublishError::Incomplete {
            id: announcement.id.clone(),
            got: parts.len(),
            expected: announcement.chunks,
        });
    }
    let bytes: Vec<u8> = parts.into_values().flatten().collect();
    let digest = sha256_hex(&bytes);
    if digest != announcement.sha256 {
        return Err(PublishError::Mismatch {
            id: announcement.id.clone(),
            found: digest,
            announced: announcement.sha256.clone(),
        });
    }
    let name = format!(
        "model {} from {}",
        announcement.id, announcement.files_topic
    );
    let decoded = tokio::task::spawn_blocking(move || modelfile::decode(&bytes, Path::new(&name)))
        .await
        .map_err(|source| PublishError::Decoding {
            id: announcement.id.clone(),
            source,
        })?;
    Ok(decoded?)
}

/// The announced model's chunks by index, as many as arrive within a minute.
async fn read_chunks(
    settings: &KafkaSettings,
    announcement: &ModelAnnouncement,
) -> Result<BTreeMap<u32, Vec<u8>>, PublishError> {
    let consumer: StreamConsumer<LoggingContext> = settings
        .reader(&format!("recstream-fetch-{}", rand::random::<u32>()))
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", (CHUNK_BYTES * 4).to_string())
        .create_with_context(LoggingContext::new("model-fetch"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(
        &announcement.files_topic,
        announcement.partition,
        Offset::Offset(announcement.first_offset),
    )?;
    consumer.assign(&tpl)?;
    let prefix = format!("{}:", announcement.id);
    let mut parts: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while parts.len() < announcement.chunks as usize {
        let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
            break;
        };
        let Some(Ok(message)) = next else { continue };
        let Some(index) = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.strip_prefix(&prefix))
            .and_then(|i| i.parse::<u32>().ok())
        else {
            continue;
        };
        parts.insert(index, message.payload().unwrap_or_default().to_vec());
    }
    Ok(parts)
}
