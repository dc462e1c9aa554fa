//! `serve` on Kinesis: requests read from a stream's shards, scored like
//! Kafka's, answered on a Kinesis stream or a Kafka topic, each shard's
//! position checkpointed only once every earlier record is answered.
//!
//! ```text
//!  shard readers ──ShardEvent──▶ worker ──Scorer──▶ replies / dead letters
//!  (one per readable shard)      Ledger               (Kinesis sink or Kafka)
//!                                 └─▶ checkpoint file, every second and at the end
//! ```
//!
//! The [`Ledger`] holds the checkpoint rule: a record counts as done once
//! its reply or dead letter is acknowledged, a shard's checkpoint moves
//! past a record only when every earlier one is done, and a shard's
//! children are read only once all of it is. In-flight work is bounded
//! (`max_in_flight`); SIGTERM stops the readers, waits for the outputs
//! already sent, and writes the checkpoint.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use recstream_stream::kafka::KafkaSettings;
use recstream_stream::metrics::{self as sm, Health};
use recstream_stream::serving::ServingModel;
use recstream_stream::tracker::Ticket;
use recstream_stream::wire::{self, RejectCode};
use recstream_stream::worker::follow::FollowError;
use recstream_stream::worker::{
    Destination, Event, Incoming, Rules, Scored, Scorer, ScoringThreadsError, beside_follower,
    spawn_follower,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::KinesisSettings;
use crate::ledger::{Ledger, LedgerError};
use crate::lineage::FirstStart;
use crate::outputs::{Delivered, Target, Writer};
use crate::reader::{ReaderOptions, ShardEvent};

/// Everything a Kinesis worker needs besides the model.
#[derive(Debug, Clone)]
pub struct KinesisWorkerConfig {
    /// Where Kinesis is.
    pub kinesis: KinesisSettings,
    /// The stream requests arrive on.
    pub input_stream: String,
    /// Where replies go.
    pub replies: Target,
    /// Where invalid requests go.
    pub dead_letters: Target,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// Where shards start when there is no checkpoint yet.
    pub first_start: FirstStart,
    /// Recommendations per reply when the request does not say.
    pub default_n: usize,
    /// Requests larger than this are dead-lettered.
    pub max_request_bytes: usize,
    /// Threads that score requests.
    pub scoring_threads: usize,
    /// Most requests read but not answered yet.
    pub max_in_flight: usize,
    /// Least time between two reads of a shard.
    pub poll: Duration,
    /// How often the checkpoint is written.
    pub checkpoint_every: Duration,
    /// How often the shards are listed (new children, a reshard).
    pub list_every: Duration,
    /// How long shutdown waits for the last acknowledgements.
    pub drain_timeout: Duration,
    /// The Kafka model topic to follow (`None`: serve the model as loaded).
    pub follow: Option<ModelTopic>,
}

/// A model topic on Kafka: online updates and batch roll-outs travel there,
/// whatever stream the requests come from.
#[derive(Debug, Clone)]
pub struct ModelTopic {
    /// The cluster.
    pub kafka: KafkaSettings,
    /// The topic (`model-updates`).
    pub topic: String,
}

impl KinesisWorkerConfig {
    /// Defaults for `input_stream`, replying on `replies`.
    pub fn new(
        kinesis: KinesisSettings,
        input_stream: &str,
        replies: Target,
        dead_letters: Target,
    ) -> Self {
        KinesisWorkerConfig {
            kinesis,
            input_stream: input_stream.to_string(),
            replies,
            dead_letters,
            checkpoint: PathBuf::from(format!("recstream-kinesis-{input_stream}.json")),
            first_start: FirstStart::TrimHorizon,
            default_n: 10,
            max_request_bytes: wire::DEFAULT_MAX_REQUEST_BYTES,
            scoring_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_in_flight: 4_000,
            poll: Duration::from_millis(250),
            checkpoint_every: Duration::from_secs(1),
            list_every: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            follow: None,
        }
    }
}

/// Why a Kinesis worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum KinesisWorkerError {
    /// The shards cannot be read, or the checkpoint written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The scoring threads could not start.
    #[error(transparent)]
    Scoring(#[from] ScoringThreadsError),
    /// An output could not be delivered and cannot be dead-lettered.
    #[error(
        "cannot deliver to {target}: {reason}; the checkpoint stays before the request, so a restart answers it"
    )]
    Undelivered {
        /// Where.
        target: String,
        /// Why.
        reason: String,
    },
    /// A Kafka client could not be created.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The model topic can no longer be followed without missing updates.
    #[error(transparent)]
    ModelTopic(#[from] FollowError),
    /// No Kinesis client could be made.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KinesisSummary {
    /// Requests read.
    pub requests: u64,
    /// Replies delivered.
    pub replies: u64,
    /// Dead letters delivered.
    pub dead_letters: u64,
}

/// One output waiting for its acknowledgement.
struct Pending {
    ticket: Ticket,
    dead_letter: bool,
    /// For a reply: the request, to dead-letter it if the reply is refused.
    request: Option<Request>,
}

/// A request kept until its reply is acknowledged: its key, data, and
/// where it was in the stream.
struct Request {
    key: Vec<u8>,
    data: Vec<u8>,
    shard: String,
    sequence: String,
}

/// Runs a worker until `shutdown`, then drains and checkpoints.
///
/// With a model topic, the worker serves beside its follower, as on Kafka:
/// a follower that can no longer keep the model identical to every other
/// worker's stops the worker (it drains and checkpoints, then reports).
pub async fn run(
    config: KinesisWorkerConfig,
    model: Arc<ServingModel>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<KinesisSummary, KinesisWorkerError> {
    sm::recorder();
    let follower = config
        .follow
        .as_ref()
        .map(|f| spawn_follower(&f.kafka, f.topic.clone(), &model, &shutdown));
    let stop = shutdown.child_token();
    let serving = serve(config, model, health, stop.clone());
    let (served, lost_track) = beside_follower(serving, follower, || stop.cancel()).await;
    let summary = served?;
    match lost_track {
        Some(error) => Err(error.into()),
        None => Ok(summary),
    }
}

/// Serves until `shutdown`, then drains and checkpoints.
async fn serve(
    config: KinesisWorkerConfig,
    model: Arc<ServingModel>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<KinesisSummary, KinesisWorkerError> {
    let client = config.kinesis.client().await?;
    let scorer = Scorer::new(
        config.scoring_threads,
        model,
        Rules {
            input_topic: format!("kinesis:{}", config.input_stream),
            default_n: config.default_n,
            max_request_bytes: config.max_request_bytes,
        },
    )?;
    let replies = Writer::new(&config.replies, &client, config.max_in_flight)?;
    let dead_letters = Writer::new(&config.dead_letters, &client, config.max_in_flight)?;
    let ledger = Ledger::open(
        client,
        &config.input_stream,
        &config.checkpoint,
        config.first_start,
        ReaderOptions { poll: config.poll },
    )?;
    let mut worker = Worker {
        config,
        ledger,
        scorer,
        replies,
        dead_letters,
        pending: FuturesUnordered::new(),
        summary: KinesisSummary::default(),
    };
    let result = worker.serve(&health, &shutdown).await;
    health.set_ready(false);
    worker.ledger.stop_readers();
    let drained = worker.drain().await;
    result.and(drained).map(|()| worker.summary)
}

struct Worker {
    config: KinesisWorkerConfig,
    ledger: Ledger,
    scorer: Scorer,
    replies: Writer,
    dead_letters: Writer,
    pending: FuturesUnordered<BoxFuture<'static, (Pending, Delivered)>>,
    summary: KinesisSummary,
}

impl Worker {
    async fn serve(
        &mut self,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<(), KinesisWorkerError> {
        let (out, mut events) = mpsc::channel::<ShardEvent>(4);
        self.ledger.discover(&out).await?;
        health.set_ready(true);
        tracing::info!(stream = %self.config.input_stream, replies = %self.replies.name(), "serving requests from Kinesis");
        let mut checkpoint_timer = tokio::time::interval(self.config.checkpoint_every);
        let mut list_timer = tokio::time::interval(self.config.list_every);
        loop {
            let room = self.ledger.in_flight() < self.config.max_in_flight;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                Some((pending, delivered)) = self.pending.next(), if !self.pending.is_empty() => {
                    self.settled(pending, delivered).await?;
                }
                Some(event) = events.recv(), if room => match event {
                    ShardEvent::Records { shard, records } => self.on_records(&shard, records).await?,
                    ShardEvent::Ended { shard, .. } => {
                        self.ledger.reached_end(&shard);
                        self.ledger.save()?;
                        self.ledger.discover(&out).await?;
                    }
                    ShardEvent::Failed { shard, reason } => return Err(self.ledger.failed(shard, reason).into()),
                },
                _ = checkpoint_timer.tick() => {
                    if self.ledger.save()? {
                        self.ledger.discover(&out).await?;
                    }
                }
                _ = list_timer.tick() => self.ledger.discover(&out).await?,
            }
        }
    }

    /// Scores a shard's records and sends each output.
    async fn on_records(
        &mut self,
        shard: &str,
        records: Vec<crate::reader::Record>,
    ) -> Result<(), KinesisWorkerError> {
        let Some(positions) = self.ledger.number(shard, &records) else {
            return Ok(());
        };
        let mut batch = Vec::with_capacity(records.len());
        let mut originals = Vec::with_capacity(records.len());
        for (record, position) in records.into_iter().zip(positions) {
            originals.push((
                record.key.clone().into_bytes(),
                record.data.clone(),
                record.sequence,
            ));
            batch.push(Event::Message(Incoming {
                position,
                key: Some(record.key.into_bytes()),
                payload: Some(record.data),
                timestamp_ms: record.arrival_ms,
            }));
        }
        self.summary.requests += batch.len() as u64;
        metrics::counter!(sm::REQUESTS_CONSUMED).increment(batch.len() as u64);
        let Some(scored) = self.scorer.score(batch).await else {
            return Err(KinesisWorkerError::Undelivered {
                target: "the scoring threads".into(),
                reason: "a scoring thread failed".into(),
            });
        };
        for (scored, (key, data, sequence)) in scored.into_iter().zip(originals) {
            let Scored::Output(output) = scored else {
                continue;
            };
            let ticket = self.ledger.start(output.position);
            match output.destination {
                Destination::Reply { .. } => {
                    let delivery = self
                        .replies
                        .send(output.key.as_deref(), output.payload)
                        .await;
                    let pending = Pending {
                        ticket,
                        dead_letter: false,
                        request: Some(Request {
                            key,
                            data,
                            shard: shard.to_string(),
                            sequence,
                        }),
                    };
                    self.pending
                        .push(Box::pin(async move { (pending, delivery.await) }));
                }
                Destination::DeadLetter(code) => {
                    metrics::counter!(sm::DEAD_LETTERS, "reason" => code.as_str()).increment(1);
                    let letter = locate(&output.payload, shard, &sequence);
                    let delivery = self.dead_letters.send(Some(&key), letter).await;
                    let pending = Pending {
                        ticket,
                        dead_letter: true,
                        request: None,
                    };
                    self.pending
                        .push(Box::pin(async move { (pending, delivery.await) }));
                }
            }
        }
        Ok(())
    }

    /// An output acknowledged, or refused: a refused reply is dead-lettered
    /// with the reason; anything else that cannot be delivered stops the worker.
    async fn settled(
        &mut self,
        pending: Pending,
        delivered: Delivered,
    ) -> Result<(), KinesisWorkerError> {
        match (delivered, pending.request) {
            (Ok(()), _) => {
                if pending.dead_letter {
                    self.summary.dead_letters += 1;
                } else {
                    self.summary.replies += 1;
                    metrics::counter!(sm::REPLIES_PRODUCED).increment(1);
                }
                self.ledger.finish(pending.ticket);
                Ok(())
            }
            (Err(reason), Some(request)) => {
                tracing::warn!(
                    "a reply could not be delivered ({reason}); dead-lettering its request"
                );
                metrics::counter!(sm::DEAD_LETTERS, "reason" => RejectCode::Undeliverable.as_str())
                    .increment(1);
                let rejection = wire::Rejection {
                    code: RejectCode::Undeliverable,
                    message: reason,
                };
                let origin = wire::Origin {
                    topic: &format!("kinesis:{}", self.config.input_stream),
                    partition: pending.ticket.partition,
                    offset: pending.ticket.offset,
                };
                let letter = locate(
                    &wire::encode_dead_letter(&rejection, &origin, Some(&request.data)),
                    &request.shard,
                    &request.sequence,
                );
                let delivery = self.dead_letters.send(Some(&request.key), letter).await;
                let pending = Pending {
                    ticket: pending.ticket,
                    dead_letter: true,
                    request: None,
                };
                self.pending
                    .push(Box::pin(async move { (pending, delivery.await) }));
                Ok(())
            }
            (Err(reason), None) => Err(KinesisWorkerError::Undelivered {
                target: self.dead_letters.name(),
                reason,
            }),
        }
    }

    /// Waits for the outputs already sent (up to the drain timeout), then
    /// writes the checkpoint.
    async fn drain(&mut self) -> Result<(), KinesisWorkerError> {
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        while !self.pending.is_empty() {
            match tokio::time::timeout_at(deadline, self.pending.next()).await {
                Ok(Some((pending, delivered))) => self.settled(pending, delivered).await?,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        in_flight = self.ledger.in_flight(),
                        "drain timed out; the unacknowledged requests are answered again after a restart"
                    );
                    break;
                }
            }
        }
        self.ledger.save()?;
        Ok(())
    }
}

/// A dead letter that says where in Kinesis its request was: the shard and
/// sequence number, instead of the worker's own numbering.
fn locate(letter: &[u8], shard: &str, sequence: &str) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_slice(letter) else {
        return letter.to_vec();
    };
    fields.remove("partition");
    fields.remove("offset");
    fields.insert("shard".into(), shard.into());
    fields.insert("sequence_number".into(), sequence.into());
    serde_json::to_vec(&fields).unwrap_or_else(|_| letter.to_vec())
}
