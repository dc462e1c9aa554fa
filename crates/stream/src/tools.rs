//! Produce and consume from the command line, standing in for the reference design's notebook producer and downstream consumer.
//!
//! [`produce_lines`] sends one message per input line; [`produce_paced`]
//! sends prepared messages at a steady rate (a ratings file replayed as
//! events, or the benchmark harness's generated requests); [`consume`] prints
//! what arrives on a topic. They use the same client settings as the worker,
//! so `--kafka` options apply here too.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use crate::delivery;
use crate::kafka::{KafkaSettings, LoggingContext};
use crate::topics;

/// Why a tool stopped.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A client could not be created or assigned.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A message can never be delivered as it is.
    #[error(transparent)]
    Undeliverable(#[from] delivery::Undeliverable),
    /// The topic could not be looked up.
    #[error(transparent)]
    Topic(#[from] topics::TopicError),
}

/// Messages sent and acknowledged, and the wall time it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProduceReport {
    /// Messages acknowledged by the broker.
    pub delivered: u64,
    /// Messages that could not be delivered.
    pub failed: u64,
    /// From the first send to the last acknowledgement.
    pub elapsed: Duration,
}

impl ProduceReport {
    /// Delivered messages per second.
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends messages while keeping at most `window` unacknowledged.
struct Sender {
    producer: FutureProducer<LoggingContext>,
    topic: String,
    window: usize,
    pending: VecDeque<rdkafka::producer::DeliveryFuture>,
    report: ProduceReport,
    started: Instant,
}

impl Sender {
    fn new(settings: &KafkaSettings, topic: &str) -> Result<Self, KafkaError> {
        Ok(Sender {
            // Batches like any Kafka client does by default (linger.ms=5):
            // `produce` is a load generator as often as a pipe.
            producer: settings
                .load_producer()
                .create_with_context(LoggingContext::new("producer"))?,
            topic: topic.to_string(),
            window: 10_000,
            pending: VecDeque::new(),
            report: ProduceReport {
                delivered: 0,
                failed: 0,
                elapsed: Duration::ZERO,
            },
            started: Instant::now(),
        })
    }

    /// Sends one message; an error that can never succeed is returned
    /// (with the topic and the cause) instead of being retried forever.
    async fn send(&mut self, key: Option<&[u8]>, payload: &[u8]) -> Result<(), ToolError> {
        while self.pending.len() >= self.window {
            settle_one(&mut self.pending, &mut self.report).await;
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if self.report.delivered == 0 && self.pending.is_empty() {
            // Rates count from the first message, not from connecting.
            self.started = Instant::now();
        }
        let delivery = delivery::send_with_backpressure(&self.producer, record).await?;
        self.pending.push_back(delivery);
        Ok(())
    }

    async fn finish(mut self) -> ProduceReport {
        while !self.pending.is_empty() {
            settle_one(&mut self.pending, &mut self.report).await;
        }
        self.report.elapsed = self.started.elapsed();
        self.report
    }
}

/// Waits for the oldest unacknowledged message and counts the outcome.
async fn settle_one(
    pending: &mut VecDeque<rdkafka::producer::DeliveryFuture>,
    report: &mut ProduceReport,
) {
    let Some(delivery) = pending.pop_front() else {
        return;
    };
    match delivery.await {
        Ok(Ok(_)) => report.delivered += 1,
        Ok(Err((e, message))) => {
            report.failed += 1;
            tracing::warn!(
                "a message was not delivered: {}",
                delivery::describe(message.topic(), &e)
            );
        }
        Err(_) => report.failed += 1,
    }
}

/// Sends one message per non-empty line of `input` to `topic`.
pub async fn produce_lines<R: tokio::io::AsyncBufRead + Unpin>(
    settings: &KafkaSettings,
    topic: &str,
    input: R,
    shutdown: CancellationToken,
) -> Result<ProduceReport, ToolError> {
    let mut sender = Sender::new(settings, topic)?;
    let mut failed = None;
    for_each_line(input, &shutdown, async |line| {
        match sender.send(None, line.as_bytes()).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    })
    .await;
    match failed {
        Some(e) => Err(e),
        None => Ok(sender.finish().await),
    }
}

/// Calls `each` with every non-empty line of `input`, in order, until the
/// input ends, `each` says [`ControlFlow::Break`], or `shutdown`; a read
/// error ends the input (said in the log).
pub async fn for_each_line<R: tokio::io::AsyncBufRead + Unpin>(
    input: R,
    shutdown: &CancellationToken,
    mut each: impl AsyncFnMut(String) -> ControlFlow<()>,
) {
    let mut lines = input.lines();
    loop {
        let line = tokio::select! {
            _ = shutdown.cancelled() => return,
            line = lines.next_line() => line,
        };
        match line {
            Ok(Some(line)) if line.trim().is_empty() => continue,
            Ok(Some(line)) => {
                if each(line).await.is_break() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("stopped reading input: {e}");
                return;
            }
        }
    }
}

/// Sends `(key, payload)` messages in order, at `rate` per second if given.
pub async fn produce_paced(
    settings: &KafkaSettings,
    topic: &str,
    messages: impl Iterator<Item = (Option<Vec<u8>>, Vec<u8>)>,
    rate: Option<f64>,
    shutdown: CancellationToken,
) -> Result<ProduceReport, ToolError> {
    let mut sender = Sender::new(settings, topic)?;
    let started = Instant::now();
    for (n, (key, payload)) in messages.enumerate() {
        if shutdown.is_cancelled() {
            break;
        }
        wait_turn(started, n, rate).await;
        sender.send(key.as_deref(), &payload).await?;
    }
    Ok(sender.finish().await)
}

/// Waits until message `n` (from 0) of a run started at `started` is due at
/// `rate` per second; returns at once without a rate, or when it is late.
pub async fn wait_turn(started: Instant, n: usize, rate: Option<f64>) {
    if let Some(rate) = rate.filter(|r| r.is_finite() && *r > 0.0) {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
    }
}

/// Where a consumer starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained message of every partition.
    Beginning,
    /// Only messages produced from now on.
    End,
    /// The committed offsets of a consumer group (earliest when none).
    Group(String),
}

/// A message as the consume tool prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Printed {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Milliseconds since the epoch, if the message has a timestamp.
    pub timestamp: Option<i64>,
    /// Key, lossily decoded as UTF-8.
    pub key: Option<String>,
    /// Payload, lossily decoded as UTF-8.
    pub payload: Option<String>,
}

impl From<&OwnedMessage> for Printed {
    fn from(m: &OwnedMessage) -> Self {
        Printed {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: m.payload().map(|p| String::from_utf8_lossy(p).into_owned()),
        }
    }
}

/// Limits of a consume run.
#[derive(Debug, Clone, Default)]
pub struct ConsumeLimits {
    /// Stop after this many messages.
    pub max_messages: Option<u64>,
    /// Stop after this long without a message.
    pub idle_timeout: Option<Duration>,
}

impl ConsumeLimits {
    /// Whether `seen` messages are all that was asked for.
    pub fn reached(&self, seen: u64) -> bool {
        self.max_messages.is_some_and(|max| seen >= max)
    }

    /// Resolves after the idle timeout (never without one): race it with
    /// the next message.
    pub async fn idle(&self) {
        match self.idle_timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    }
}

/// Calls `each` for every message on `topic` until a limit, `shutdown`, or
/// `each` says [`ControlFlow::Break`] (its reader went away, say). Waits for
/// the topic to be created, saying so in the log at the start of the wait
/// and every minute. Returns the number of messages seen.
pub async fn consume(
    settings: &KafkaSettings,
    topic: &str,
    start: StartAt,
    limits: ConsumeLimits,
    shutdown: CancellationToken,
    mut each: impl FnMut(&OwnedMessage) -> ControlFlow<()>,
) -> Result<u64, ToolError> {
    let Some(partitions) = topics::wait_for_partitions(settings, topic, &shutdown).await? else {
        return Ok(0);
    };
    let consumer = reader(settings, topic, partitions, &start)?;
    let mut stream = consumer.stream();
    let mut seen = 0u64;
    while !limits.reached(seen) {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = limits.idle() => break,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(message)) => {
                seen += 1;
                if each(&message.detach()).is_break() {
                    break;
                }
            }
            Some(Err(e)) => tracing::warn!("consumer error: {e}; continuing"),
            None => break,
        }
    }
    Ok(seen)
}

/// A consumer of `topic` (with `partitions` partitions) positioned as
/// `start` says: in a group from its committed offsets, or on its own from
/// either end of every partition.
fn reader(
    settings: &KafkaSettings,
    topic: &str,
    partitions: usize,
    start: &StartAt,
) -> Result<StreamConsumer<LoggingContext>, KafkaError> {
    let offset = match start {
        StartAt::Group(group) => {
            let consumer: StreamConsumer<LoggingContext> = settings
                .reader(group)
                .set("enable.auto.commit", "true")
                .create_with_context(LoggingContext::new("consumer"))?;
            consumer.subscribe(&[topic])?;
            return Ok(consumer);
        }
        StartAt::Beginning => Offset::Beginning,
        StartAt::End => Offset::End,
    };
    let group = format!("recstream-consume-{}", rand::random::<u32>());
    let consumer: StreamConsumer<LoggingContext> = settings
        .reader(&group)
        .create_with_context(LoggingContext::new("consumer"))?;
    topics::assign_all(&consumer, topic, partitions, |_| offset)?;
    Ok(consumer)
}
