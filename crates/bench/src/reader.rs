//! The probes' reader: every partition of a topic, assigned, from a chosen start.
//!
//! A probe reads a reply topic as an outsider: it must see every reply, so
//! it takes every partition itself (no consumer group to share them with,
//! no rebalance to wait for) and commits nothing. Two things make it more
//! than a `subscribe`. It waits for the topic to exist, since a probe started
//! before the worker's first reply must not settle for zero partitions and
//! then read nothing forever (librdkafka refreshes an assignment's metadata
//! only every few minutes). And a probe that sends requests starts at the
//! partitions' current ends, read before anything is sent, so that no reply
//! to this run is missed and no earlier run's replies are read through first.

use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use recstream_stream::kafka::{self, KafkaSettings, LoggingContext};
use recstream_stream::topics;
use tokio_util::sync::CancellationToken;

use crate::BenchError;

/// How long the latency and freshness probes wait for their reply topic to
/// appear (a worker that was just started may not have written to it yet).
pub(crate) const TOPIC_WAIT: Duration = Duration::from_secs(10);

/// How long one watermark request may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a reader starts in its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFrom {
    /// Everything the topic holds.
    Beginning,
    /// What is written from now on: the partitions' current ends.
    Now,
}

/// A consumer assigned to every partition of `topic`, from `from`, once the
/// topic exists; an error when it does not appear within `wait`.
pub(crate) async fn assigned_reader(
    settings: &KafkaSettings,
    topic: &str,
    wait: Duration,
    from: ReadFrom,
) -> Result<StreamConsumer<LoggingContext>, BenchError> {
    let partitions = partitions_within(settings, topic, wait).await?;
    let group = format!("recstream-measure-{}", rand::random::<u32>());
    let consumer: StreamConsumer<LoggingContext> = settings
        .reader(&group)
        .set("fetch.wait.max.ms", "5")
        .create_with_context(LoggingContext::new("measure"))
        .map_err(BenchError::kafka(format!(
            "creating the reader of {topic:?}"
        )))?;
    // Watermarks are network round trips: on the blocking pool, with the
    // consumer handed there and back.
    let owned = topic.to_string();
    kafka::blocking(
        format!("assigning the partitions of {topic:?}"),
        move || assign(consumer, &owned, partitions, from),
    )
    .await?
}

/// The partition count of `topic`, waiting up to `wait` for it to exist.
async fn partitions_within(
    settings: &KafkaSettings,
    topic: &str,
    wait: Duration,
) -> Result<usize, BenchError> {
    // Nobody cancels this token: the timeout below is what ends the wait.
    let never = CancellationToken::new();
    let never_appeared = || BenchError::TopicNeverAppeared {
        topic: topic.to_string(),
        waited: wait,
    };
    match tokio::time::timeout(wait, topics::wait_for_partitions(settings, topic, &never)).await {
        Ok(Ok(Some(partitions))) => Ok(partitions),
        Ok(Ok(None)) | Err(_) => Err(never_appeared()),
        Ok(Err(e)) => Err(e.into()),
    }
}

/// Assigns `consumer` every partition of `topic` from `from`; blocking.
fn assign(
    consumer: StreamConsumer<LoggingContext>,
    topic: &str,
    partitions: usize,
    from: ReadFrom,
) -> Result<StreamConsumer<LoggingContext>, BenchError> {
    let starts = match from {
        ReadFrom::Beginning => vec![Offset::Beginning; partitions],
        ReadFrom::Now => (0..partitions as i32)
            .map(|p| {
                let (_, high) = consumer.fetch_watermarks(topic, p, WATERMARK_TIMEOUT)?;
                Ok(Offset::Offset(high))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(BenchError::kafka(format!(
                "reading the ends of the partitions of {topic:?}"
            )))?,
    };
    topics::assign_all(&consumer, topic, partitions, |p| {
        starts.get(p as usize).copied().unwrap_or(Offset::End)
    })
    .map_err(BenchError::kafka(format!(
        "assigning the partitions of {topic:?}"
    )))?;
    Ok(consumer)
}
