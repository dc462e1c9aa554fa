//! Stage one: read messages as they arrive, batch what is already buffered.
//!
//! The stage waits for one message, then takes whatever else the client has
//! already fetched (up to the batch size) without waiting, so a lone request
//! goes through alone and a burst goes through in batches. It copies each
//! message out of the client's buffer (the bytes must outlive the poll) and
//! never interprets them: a bad message is the next stage's business.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, MessageStream, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Position;
use super::context::{RebalanceNotice, WorkerContext};

/// A message copied out of the consumer.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its place in the input.
    pub position: Position,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its bytes.
    pub payload: Option<Vec<u8>>,
    /// Producer or broker timestamp, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl Incoming {
    pub(crate) fn copy(message: &BorrowedMessage<'_>) -> Self {
        Incoming {
            position: Position {
                partition: message.partition(),
                offset: message.offset(),
            },
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            timestamp_ms: message.timestamp().to_millis(),
        }
    }
}

/// What flows down the pipeline: messages, and ownership changes in order with them.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message to score.
    Message(Incoming),
    /// Partitions given or taken, in their place among the messages.
    Rebalance(RebalanceNotice),
}

/// The one consume-and-batch loop, shared by both delivery modes: waits for
/// a message, then takes whatever else the client already holds (up to the
/// batch size) without waiting, with rebalance notices in order among them.
pub(crate) struct Batches<'a> {
    consumer: &'a StreamConsumer<WorkerContext>,
    stream: MessageStream<'a, WorkerContext>,
    batch_size: usize,
}

impl<'a> Batches<'a> {
    pub(crate) fn new(consumer: &'a StreamConsumer<WorkerContext>, batch_size: usize) -> Self {
        Batches {
            consumer,
            stream: consumer.stream(),
            batch_size,
        }
    }

    /// The next batch (possibly only notices, or empty after a consumer
    /// error); `None` once `shutdown` is cancelled or the stream ends.
    /// Messages read are counted in `recstream_requests_consumed_total`.
    pub(crate) async fn next(&mut self, shutdown: &CancellationToken) -> Option<Vec<Event>> {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            next = self.stream.next() => next?,
        };
        let mut events = Vec::with_capacity(self.batch_size.min(1024));
        self.notices(&mut events);
        match first {
            Ok(message) => events.push(Event::Message(Incoming::copy(&message))),
            Err(e) => {
                tracing::warn!("consumer error: {e}; continuing");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while events.len() < self.batch_size {
            match self.stream.next().now_or_never() {
                Some(Some(Ok(message))) => {
                    self.notices(&mut events);
                    events.push(Event::Message(Incoming::copy(&message)));
                }
                Some(Some(Err(e))) => {
                    tracing::warn!("consumer error: {e}; continuing");
                    break;
                }
                Some(None) | None => break,
            }
        }
        self.notices(&mut events);
        metrics::counter!(crate::metrics::REQUESTS_CONSUMED).increment(messages_in(&events));
        Some(events)
    }

    fn notices(&self, events: &mut Vec<Event>) {
        let notices = self.consumer.context().take_notices();
        events.extend(notices.into_iter().map(Event::Rebalance));
    }
}

/// Counts the messages (not the notices) among `events`.
pub(crate) fn messages_in(events: &[Event]) -> u64 {
    events
        .iter()
        .filter(|e| matches!(e, Event::Message(_)))
        .count() as u64
}

/// Stage one: reads batches until `shutdown` and hands them to scoring;
/// returns how many messages were read.
pub(crate) async fn run(
    consumer: Arc<StreamConsumer<WorkerContext>>,
    batches: mpsc::Sender<Vec<Event>>,
    batch_size: usize,
    shutdown: CancellationToken,
) -> u64 {
    let mut source = Batches::new(&consumer, batch_size);
    let mut consumed = 0u64;
    while let Some(events) = source.next(&shutdown).await {
        consumed += messages_in(&events);
        if events.is_empty() {
            continue;
        }
        // Waiting for room downstream is where backpressure lands; shutdown
        // must still get through (the unsent batch is simply not committed).
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            sent = batches.send(events) => if sent.is_err() { break },
        }
    }
    consumed
}
