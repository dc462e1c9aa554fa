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
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Position;
use super::context::{RebalanceNotice, WorkerContext};

/// A message copied out of the consumer.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub position: Position,
    pub key: Option<Vec<u8>>,
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
pub(crate) enum Event {
    Message(Incoming),
    Rebalance(RebalanceNotice),
}

/// Reads until `shutdown`; returns how many messages were read.
pub(crate) async fn run(
    consumer: Arc<StreamConsumer<WorkerContext>>,
    batches: mpsc::Sender<Vec<Event>>,
    batch_size: usize,
    shutdown: CancellationToken,
) -> u64 {
    let mut stream = consumer.stream();
    let mut consumed = 0u64;
    let notices = |events: &mut Vec<Event>| {
        events.extend(
            consumer
                .context()
                .take_notices()
                .into_iter()
                .map(Event::Rebalance),
        );
    };
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            next = stream.next() => next,
        };
        let mut events = Vec::with_capacity(batch_size.min(1024));
        notices(&mut events);
        match first {
            Some(Ok(message)) => events.push(Event::Message(Incoming::copy(&message))),
            Some(Err(e)) => {
                tracing::warn!("consumer error: {e}; continuing");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => break,
        }
        while events.len() < batch_size {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => {
                    notices(&mut events);
                    events.push(Event::Message(Incoming::copy(&message)));
                }
                Some(Some(Err(e))) => {
                    tracing::warn!("consumer error: {e}; continuing");
                    break;
                }
                Some(None) | None => break,
            }
        }
        notices(&mut events);
        let messages = events
            .iter()
            .filter(|e| matches!(e, Event::Message(_)))
            .count() as u64;
        consumed += messages;
        metrics::counter!(crate::metrics::REQUESTS_CONSUMED).increment(messages);
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
