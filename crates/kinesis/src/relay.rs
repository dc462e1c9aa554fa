//! Ratings from a Kinesis stream into the Kafka ratings topic the learners
//! read, each written once, across crashes: how `recstream learn
//! --ratings-topic kinesis:STREAM` learns from Kinesis.
//!
//! The learners' exactly-once rule is built on the Kafka ratings topic
//! (each user on one partition, each rating's offset recorded with what was
//! learnt from it), so the relay's job is to put every Kinesis record on
//! that topic once. Each record goes to the partition of its `uid` (the
//! same CRC32 partitioner as librdkafka's default), with headers naming its
//! shard and sequence number, through an idempotent producer: what reaches
//! a partition from a shard is always a prefix, in order, of what was sent
//! there. The [`Ledger`] checkpoints a shard past a record once it and
//! every earlier one are acknowledged; beside the positions, the checkpoint
//! keeps, per partition, the offset from which records after them may
//! already stand. A restarted relay reads each partition back from there,
//! notes the last sequence number of each shard it finds, and skips the
//! records at or before it: none is lost, none written twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use recstream_stream::delivery::{Undeliverable, send_with_backpressure};
use recstream_stream::kafka::{KafkaSettings, LoggingContext};
use recstream_stream::topics::{TopicError, wait_for_partitions};
use recstream_stream::tracker::Ticket;
use recstream_stream::worker::Position;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, KinesisSettings};
use crate::ledger::{Ledger, LedgerError};
use crate::lineage::FirstStart;
use crate::metrics as m;
use crate::reader::{ReaderOptions, Record, ShardEvent};
use crate::tools::uid_key;

/// The header naming a relayed record's shard.
pub const SHARD_HEADER: &str = "kinesis-shard";
/// The header naming a relayed record's sequence number.
pub const SEQUENCE_HEADER: &str = "kinesis-sequence";

/// Everything a relay needs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where Kinesis is.
    pub kinesis: KinesisSettings,
    /// The stream ratings arrive on.
    pub stream: String,
    /// The Kafka cluster.
    pub kafka: KafkaSettings,
    /// The Kafka ratings topic the learners read.
    pub topic: String,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// Where shards start when there is no checkpoint yet.
    pub first_start: FirstStart,
    /// Least time between two reads of a shard.
    pub poll: Duration,
    /// Most records read and not yet acknowledged by Kafka.
    pub max_in_flight: usize,
    /// How often the checkpoint is written.
    pub checkpoint_every: Duration,
    /// How often the shards are listed.
    pub list_every: Duration,
    /// How long shutdown waits for the last acknowledgements.
    pub drain_timeout: Duration,
}

impl RelayConfig {
    /// Defaults for relaying `stream` to `topic`.
    pub fn new(kinesis: KinesisSettings, stream: &str, kafka: KafkaSettings, topic: &str) -> Self {
        RelayConfig {
            kinesis,
            stream: stream.to_string(),
            kafka,
            topic: topic.to_string(),
            checkpoint: PathBuf::from(format!("recstream-kinesis-relay-{stream}.json")),
            first_start: FirstStart::TrimHorizon,
            poll: Duration::from_millis(250),
            max_in_flight: 10_000,
            checkpoint_every: Duration::from_secs(1),
            list_every: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The shards or the checkpoint.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// No Kinesis client could be made.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The Kafka topic could not be looked up.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// A blocking Kafka call did not finish.
    #[error(transparent)]
    Blocking(#[from] recstream_stream::kafka::BlockingCallError),
    /// A Kafka client failed.
    #[error("Kafka, relaying to {topic:?}: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// A rating could not be written: stopping keeps each partition's
    /// records a prefix of what was sent (a restart resumes after the
    /// checkpoint and skips what is already there).
    #[error(transparent)]
    Undeliverable(#[from] Undeliverable),
    /// A rating was sent and not acknowledged: stopping keeps each
    /// partition's records a prefix of what was sent.
    #[error(
        "a rating could not be written to {topic:?} ({reason}); the relay stops, and a restart resumes after its checkpoint without writing anything twice"
    )]
    Unwritten {
        /// The topic.
        topic: String,
        /// librdkafka's reason.
        reason: String,
    },
}

/// What a relay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelaySummary {
    /// Records read from Kinesis.
    pub read: u64,
    /// Records written to Kafka.
    pub relayed: u64,
    /// Records found on Kafka already (written before a crash) and skipped.
    pub already_there: u64,
}

/// The Kafka partition of a key: CRC32 modulo the partition count, as
/// librdkafka's default partitioner (`consistent_random`) places keyed
/// messages, so ratings relayed and ratings produced directly agree.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    let n = u32::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(crc32fast::hash(key) % n).unwrap_or(0)
}

/// Whether sequence number `a` comes at or before `b` (decimal strings of
/// up to 128 digits: longer is later).
fn at_or_before(a: &str, b: &str) -> bool {
    (a.len(), a) <= (b.len(), b)
}

/// A record sent and not yet checkpointed: its partition, and the least
/// offset it can have there (its offset, once acknowledged).
#[derive(Debug, Clone, Copy)]
struct Sent {
    partition: i32,
    floor: i64,
}

/// Relays until `shutdown`, then drains and checkpoints.
pub async fn run(
    config: RelayConfig,
    shutdown: CancellationToken,
) -> Result<RelaySummary, RelayError> {
    let client = config.kinesis.client().await?;
    let mut ledger = Ledger::open(
        client,
        &config.stream,
        &config.checkpoint,
        config.first_start,
        ReaderOptions { poll: config.poll },
    )?;
    let kafka_error = |source| RelayError::Kafka {
        topic: config.topic.clone(),
        source,
    };
    let Some(partitions) = wait_for_partitions(&config.kafka, &config.topic, &shutdown).await?
    else {
        return Ok(RelaySummary::default());
    };
    let partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
    let saved_from = ledger.relayed_from().clone();
    let ReadBack { written, ends } = read_back(&config, partitions, &saved_from).await?;
    // What was found stays to be read back until the checkpoint passes it.
    let mut read_back_from = BTreeMap::new();
    for (partition, _) in written.keys() {
        if let Some(&start) = saved_from.get(partition) {
            read_back_from.insert(*partition, start);
        }
    }
    // Written now, before any record is sent: a relay that dies before its
    // first checkpoint still leaves where to read back from.
    let initial = (0..partitions)
        .map(|p| {
            let end = ends.get(&p).copied().unwrap_or(0);
            (p, saved_from.get(&p).copied().unwrap_or(end).min(end))
        })
        .collect();
    ledger.set_relayed_from(initial);
    ledger.save()?;
    let producer: FutureProducer<LoggingContext> = config
        .kafka
        .producer()
        .create_with_context(LoggingContext::new("kinesis-relay"))
        .map_err(kafka_error)?;
    let mut relay = Relay {
        config,
        ledger,
        producer,
        partitions,
        written,
        read_back_from,
        acknowledged: ends.iter().map(|(&p, &end)| (p, end - 1)).collect(),
        sent: BTreeMap::new(),
        pending: FuturesUnordered::new(),
        summary: RelaySummary::default(),
    };
    let result = relay.relay(&shutdown).await;
    relay.ledger.stop_readers();
    let drained = relay.drain().await;
    result.and(drained).map(|()| relay.summary)
}

/// What a relay finds on the topic at start.
struct ReadBack {
    /// Per partition and shard, the last sequence number written there.
    written: BTreeMap<(i32, String), String>,
    /// Per partition, one past the last offset (at least).
    ends: BTreeMap<i32, i64>,
}

/// Reads each partition of the topic back from `from` (partitions it does
/// not name: nothing) to its end, for the records relayed there.
async fn read_back(
    config: &RelayConfig,
    partitions: i32,
    from: &BTreeMap<i32, i64>,
) -> Result<ReadBack, RelayError> {
    let kafka_error = |source| RelayError::Kafka {
        topic: config.topic.clone(),
        source,
    };
    let consumer: Arc<StreamConsumer<LoggingContext>> = Arc::new(
        config
            .kafka
            .reader(&format!("recstream-relay-{}", config.stream))
            // The end is where the broker says a partition ends, whatever
            // its watermarks said (Tansu 0.6 reports them low).
            .set("enable.partition.eof", "true")
            .create_with_context(LoggingContext::new("kinesis-relay"))
            .map_err(kafka_error)?,
    );
    let mut ends = BTreeMap::new();
    let mut starts = BTreeMap::new();
    for partition in 0..partitions {
        let reader = consumer.clone();
        let topic = config.topic.clone();
        let (low, high) = recstream_stream::kafka::blocking(
            format!("fetching the watermarks of {topic:?}"),
            move || reader.fetch_watermarks(&topic, partition, Duration::from_secs(10)),
        )
        .await?
        .map_err(kafka_error)?;
        ends.insert(partition, high);
        // Read back even when the saved offset is at or past the reported
        // high watermark: a broker that reports it low (Tansu 0.6) would
        // otherwise hide ratings already relayed, and they would go twice.
        if let Some(&start) = from.get(&partition) {
            starts.insert(partition, start.max(low));
        }
    }
    let mut written: BTreeMap<(i32, String), String> = BTreeMap::new();
    if starts.is_empty() {
        return Ok(ReadBack { written, ends });
    }
    let mut assignment = rdkafka::TopicPartitionList::new();
    for (&partition, &start) in &starts {
        assignment
            .add_partition_offset(&config.topic, partition, rdkafka::Offset::Offset(start))
            .map_err(kafka_error)?;
    }
    consumer.assign(&assignment).map_err(kafka_error)?;
    let mut reached = BTreeSet::new();
    let mut messages = consumer.stream();
    while reached.len() < starts.len() {
        match messages.next().await {
            Some(Ok(message)) => {
                let partition = message.partition();
                if let Some(end) = ends.get_mut(&partition) {
                    *end = (*end).max(message.offset() + 1);
                }
                if let Some((shard, sequence)) = origin(&message) {
                    let last = written.entry((partition, shard)).or_default();
                    if last.is_empty() || !at_or_before(&sequence, last) {
                        *last = sequence;
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                reached.insert(partition);
            }
            Some(Err(e)) => return Err(kafka_error(e)),
            None => break,
        }
    }
    let found: usize = written.len();
    tracing::info!(topic = %config.topic, partitions = starts.len(), shards_found = found, "read back what earlier runs relayed after the checkpoint");
    Ok(ReadBack { written, ends })
}

/// The shard and sequence number a relayed message came from.
fn origin(message: &impl Message) -> Option<(String, String)> {
    let headers = message.headers()?;
    let mut shard = None;
    let mut sequence = None;
    for header in headers.iter() {
        let value = header.value.and_then(|v| std::str::from_utf8(v).ok());
        match header.key {
            SHARD_HEADER => shard = value.map(str::to_string),
            SEQUENCE_HEADER => sequence = value.map(str::to_string),
            _ => {}
        }
    }
    Some((shard?, sequence?))
}

/// A relay at work.
struct Relay {
    config: RelayConfig,
    ledger: Ledger,
    producer: FutureProducer<LoggingContext>,
    partitions: i32,
    /// Per partition and shard, the last sequence number already on Kafka
    /// when this relay started and not yet passed by the checkpoint.
    written: BTreeMap<(i32, String), String>,
    /// Per partition holding such records, the offset they were read back
    /// from: kept in the checkpoint until they are passed.
    read_back_from: BTreeMap<i32, i64>,
    /// Per partition, the highest offset acknowledged so far.
    acknowledged: BTreeMap<i32, i64>,
    /// Records sent and not yet checkpointed, by position.
    sent: BTreeMap<(i32, i64), Sent>,
    pending: FuturesUnordered<BoxFuture<'static, Acked>>,
    summary: RelaySummary,
}

/// A record's acknowledgement: its ticket and position, and where it was
/// written (or why not).
type Acked = (Ticket, Position, Result<(i32, i64), String>);

impl Relay {
    async fn relay(&mut self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let (out, mut events) = mpsc::channel::<ShardEvent>(4);
        self.ledger.discover(&out).await?;
        tracing::info!(stream = %self.config.stream, topic = %self.config.topic, "relaying ratings from Kinesis to Kafka");
        let mut checkpoint_timer = tokio::time::interval(self.config.checkpoint_every);
        let mut list_timer = tokio::time::interval(self.config.list_every);
        loop {
            let room = self.ledger.in_flight() < self.config.max_in_flight;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                Some(acked) = self.pending.next(), if !self.pending.is_empty() => self.acked(acked)?,
                Some(event) = events.recv(), if room => match event {
                    ShardEvent::Records { shard, records } => self.on_records(&shard, records).await?,
                    ShardEvent::Ended { shard, .. } => {
                        self.ledger.reached_end(&shard);
                        self.save()?;
                        self.ledger.discover(&out).await?;
                    }
                    ShardEvent::Failed { shard, reason } => return Err(self.ledger.failed(shard, reason).into()),
                },
                _ = checkpoint_timer.tick() => {
                    if self.save()? {
                        self.ledger.discover(&out).await?;
                    }
                }
                _ = list_timer.tick() => self.ledger.discover(&out).await?,
            }
        }
    }

    /// Sends each record to its partition, or skips it if it is there already.
    async fn on_records(&mut self, shard: &str, records: Vec<Record>) -> Result<(), RelayError> {
        let Some(positions) = self.ledger.number(shard, &records) else {
            return Ok(());
        };
        self.summary.read += records.len() as u64;
        for (record, position) in records.into_iter().zip(positions) {
            // Not JSON with a uid: keyed as Kinesis keyed it; the learner
            // dead-letters it with the reason.
            let key = std::str::from_utf8(&record.data)
                .ok()
                .and_then(uid_key)
                .unwrap_or_else(|| record.key.clone().into_bytes());
            let partition = partition_of(&key, self.partitions);
            let ticket = self.ledger.start(position);
            let there = self
                .written
                .get(&(partition, shard.to_string()))
                .is_some_and(|last| at_or_before(&record.sequence, last));
            if there {
                self.summary.already_there += 1;
                metrics::counter!(m::ALREADY_RELAYED).increment(1);
                self.ledger.finish(ticket);
                continue;
            }
            let floor = self.acknowledged.get(&partition).map_or(0, |&o| o + 1);
            self.sent.insert(
                (position.partition, position.offset),
                Sent { partition, floor },
            );
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: SHARD_HEADER,
                    value: Some(shard.as_bytes()),
                })
                .insert(Header {
                    key: SEQUENCE_HEADER,
                    value: Some(record.sequence.as_bytes()),
                });
            let message = FutureRecord::to(&self.config.topic)
                .partition(partition)
                .key(&key)
                .payload(&record.data)
                .headers(headers);
            let delivery = send_with_backpressure(&self.producer, message).await?;
            self.pending.push(Box::pin(async move {
                let written = match delivery.await {
                    Ok(Ok(delivered)) => Ok((delivered.partition, delivered.offset)),
                    Ok(Err((e, _))) => Err(e.to_string()),
                    Err(_) => Err("the producer stopped".to_string()),
                };
                (ticket, position, written)
            }));
        }
        Ok(())
    }

    /// A record acknowledged: done. One that could not be written stops the
    /// relay (see [`RelayError::Undeliverable`]).
    fn acked(&mut self, (ticket, position, written): Acked) -> Result<(), RelayError> {
        match written {
            Ok((partition, offset)) => {
                let highest = self.acknowledged.entry(partition).or_insert(offset);
                *highest = (*highest).max(offset);
                if let Some(sent) = self.sent.get_mut(&(position.partition, position.offset)) {
                    sent.floor = offset;
                }
                self.summary.relayed += 1;
                metrics::counter!(m::RELAYED).increment(1);
                self.ledger.finish(ticket);
                Ok(())
            }
            Err(reason) => Err(RelayError::Unwritten {
                topic: self.config.topic.clone(),
                reason,
            }),
        }
    }

    /// Checkpoints what is done, with where records after it may stand on
    /// Kafka. Returns whether a shard ended now.
    fn save(&mut self) -> Result<bool, RelayError> {
        let done = self.ledger.done_until();
        self.sent
            .retain(|(shard, count), _| done.get(shard).is_none_or(|&next| *count >= next));
        let mut from: BTreeMap<i32, i64> = (0..self.partitions)
            .map(|p| (p, self.acknowledged.get(&p).map_or(0, |&o| o + 1)))
            .collect();
        for sent in self.sent.values() {
            if let Some(start) = from.get_mut(&sent.partition) {
                *start = (*start).min(sent.floor);
            }
        }
        for (partition, start) in &self.read_back_from {
            if let Some(from) = from.get_mut(partition) {
                *from = (*from).min(*start);
            }
        }
        self.ledger.set_relayed_from(from);
        let ended = self.ledger.save()?;
        // What the checkpoint now passes need not be read back again.
        let ledger = &self.ledger;
        self.written
            .retain(|(_, shard), sequence| !ledger.covers(shard, sequence));
        let written = &self.written;
        self.read_back_from
            .retain(|partition, _| written.keys().any(|(p, _)| p == partition));
        Ok(ended)
    }

    /// Waits for the records already sent (up to the drain timeout), then
    /// checkpoints.
    async fn drain(&mut self) -> Result<(), RelayError> {
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        while !self.pending.is_empty() {
            match tokio::time::timeout_at(deadline, self.pending.next()).await {
                Ok(Some(acked)) => self.acked(acked)?,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        in_flight = self.ledger.in_flight(),
                        "drain timed out; a restart reads back what was written and relays the rest"
                    );
                    break;
                }
            }
        }
        self.save()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_where_librdkafka_puts_them() {
        // librdkafka's consistent_random: CRC32 (IEEE) of the key, modulo.
        assert_eq!(
            partition_of(b"196", 4),
            (crc32fast::hash(b"196") % 4) as i32
        );
        for key in [b"1".as_slice(), b"943", b"abc"] {
            assert!((0..4).contains(&partition_of(key, 4)));
        }
        assert_eq!(partition_of(b"x", 0), 0);
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(at_or_before("9", "10"));
        assert!(at_or_before("10", "10"));
        assert!(!at_or_before("11", "10"));
        assert!(at_or_before(
            "49590338271490256608559692538361571095921575989136588802",
            "49590338271490256608559692538361571095921575989136588803"
        ));
    }
}
