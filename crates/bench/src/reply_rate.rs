//! `bench replies`: how fast a worker answered, read back from its reply topic.
//!
//! Throughput is measured from the replies' own Kafka timestamps, first to
//! last, not from when this reader happened to see them: the reader may
//! start late or fall behind, the worker's production times do not move.
//! Replies are counted by distinct `request_id` too, so that a run that
//! answered some requests twice (a restart without committed offsets) does
//! not pass for one that answered them all.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::Message;
use recstream_stream::kafka::KafkaSettings;
use serde::Serialize;

use crate::BenchError;
use crate::reader::{ReadFrom, assigned_reader};

/// Replies read from a topic and the rate they were produced at.
#[derive(Debug, Clone, Serialize)]
pub struct ReplyStats {
    /// Reply messages read.
    pub replies: u64,
    /// Distinct request ids among them.
    pub distinct_requests: u64,
    /// Timestamp of the first reply (ms since the epoch).
    pub first_ms: i64,
    /// Timestamp of the last reply.
    pub last_ms: i64,
    /// Replies per second between the first and the last.
    pub rate_per_second: f64,
}

/// Reads `topic` from the beginning until `expect` distinct requests were
/// answered or nothing arrived for `idle` (which also bounds the wait for
/// the topic to be created).
pub async fn run(
    settings: &KafkaSettings,
    topic: &str,
    expect: u64,
    idle: Duration,
) -> Result<ReplyStats, BenchError> {
    let consumer = assigned_reader(settings, topic, idle, ReadFrom::Beginning).await?;
    let mut stream = consumer.stream();
    let mut ids = HashSet::new();
    let (mut first, mut last, mut replies) = (i64::MAX, i64::MIN, 0u64);
    while (ids.len() as u64) < expect {
        let Ok(next) = tokio::time::timeout(idle, stream.next()).await else {
            break;
        };
        let Some(Ok(message)) = next else { continue };
        replies += 1;
        if let Some(ts) = message.timestamp().to_millis() {
            first = first.min(ts);
            last = last.max(ts);
        }
        if let Some(id) = request_id(message.payload()) {
            ids.insert(id);
        }
    }
    Ok(ReplyStats::new(replies, ids.len() as u64, first, last))
}

/// The `request_id` of a reply, as JSON text (ids of any JSON type count).
fn request_id(payload: Option<&[u8]>) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload?).ok()?;
    value.get("request_id").map(|id| id.to_string())
}

impl ReplyStats {
    /// Stats of `replies` messages whose timestamps span `first..=last`
    /// (ms); with no replies the span is empty and reported as zeros.
    fn new(replies: u64, distinct_requests: u64, first: i64, last: i64) -> Self {
        if replies == 0 || first > last {
            return Self {
                replies,
                distinct_requests,
                first_ms: 0,
                last_ms: 0,
                rate_per_second: 0.0,
            };
        }
        let span = (last - first).max(1) as f64 / 1000.0;
        Self {
            replies,
            distinct_requests,
            first_ms: first,
            last_ms: last,
            rate_per_second: replies.saturating_sub(1) as f64 / span,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_replies_give_zero_stats_instead_of_overflowing() {
        let stats = ReplyStats::new(0, 0, i64::MAX, i64::MIN);
        assert_eq!((stats.first_ms, stats.last_ms), (0, 0));
        assert_eq!(stats.rate_per_second, 0.0);
    }

    #[test]
    fn rate_counts_intervals_between_first_and_last_reply() {
        let stats = ReplyStats::new(1001, 1001, 5_000, 7_000);
        assert!((stats.rate_per_second - 500.0).abs() < 1e-9);
        assert_eq!(ReplyStats::new(1, 1, 9, 9).rate_per_second, 0.0);
    }

    #[test]
    fn request_ids_of_any_json_type_count_and_garbage_does_not() {
        assert_eq!(
            request_id(Some(br#"{"request_id":"a-1"}"#)),
            Some(r#""a-1""#.into())
        );
        assert_eq!(request_id(Some(br#"{"request_id":7}"#)), Some("7".into()));
        assert_eq!(request_id(Some(b"not json")), None);
        assert_eq!(request_id(None), None);
    }
}
