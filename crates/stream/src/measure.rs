//! Measuring a running service from the outside, as a client would: throughput and latency.
//!
//! [`reply_rate`] reads a reply topic and derives the rate from the replies'
//! own timestamps (first to last), so it measures the worker, not the reader.
//! [`latency`] sends requests at a steady rate and times each one from the
//! moment it is handed to the producer to the moment its reply is read back
//! (microsecond clock, one process), and also from the request's Kafka
//! timestamp to the reply's (millisecond resolution, set by the producers).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hdrhistogram::Histogram;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::kafka::{KafkaSettings, LoggingContext};

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

fn assigned_reader(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<StreamConsumer<LoggingContext>, KafkaError> {
    let group = format!("recstream-measure-{}", rand::random::<u32>());
    let consumer: StreamConsumer<LoggingContext> = settings
        .reader(&group)
        .set("fetch.wait.max.ms", "5")
        .create_with_context(LoggingContext::new("measure"))?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Reads `topic` from the beginning until `expect` distinct requests were
/// answered or nothing arrived for `idle`.
pub async fn reply_rate(
    settings: &KafkaSettings,
    topic: &str,
    expect: u64,
    idle: Duration,
) -> Result<ReplyStats, KafkaError> {
    let consumer = assigned_reader(settings, topic)?;
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
        if let Some(id) = message
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v.get("request_id").map(|id| id.to_string()))
        {
            ids.insert(id);
        }
    }
    let span = (last - first).max(1) as f64 / 1000.0;
    Ok(ReplyStats {
        replies,
        distinct_requests: ids.len() as u64,
        first_ms: first,
        last_ms: last,
        rate_per_second: if replies > 1 {
            (replies - 1) as f64 / span
        } else {
            0.0
        },
    })
}

/// A latency run's results, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStats {
    /// Requests sent.
    pub sent: u64,
    /// Replies matched to a request.
    pub answered: u64,
    /// The rate asked for.
    pub target_rate: f64,
    /// The rate achieved by the sender.
    pub sent_rate: f64,
    /// Send to reply received, measured by this process (microseconds).
    pub round_trip_us: Percentiles,
    /// Request Kafka timestamp to reply Kafka timestamp (millisecond resolution, in microseconds).
    pub timestamp_to_timestamp_us: Percentiles,
}

/// Percentiles of a histogram.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Number of samples.
    pub count: u64,
}

impl From<&Histogram<u64>> for Percentiles {
    fn from(h: &Histogram<u64>) -> Self {
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
            count: h.len(),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sends `{"uid": U, "request_id": "<prefix>-<n>"}` at `rate` per second for
/// `duration` and times every reply that comes back on `output`.
pub async fn latency(
    settings: &KafkaSettings,
    input: &str,
    output: &str,
    rate: f64,
    duration: Duration,
    uids: (u64, u64),
) -> Result<LatencyStats, KafkaError> {
    let histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    let (Ok(mut round_trip), Ok(mut stamps)) = (histogram(), histogram()) else {
        return Err(KafkaError::Canceled);
    };
    let reader = assigned_reader(settings, output)?;
    let producer: FutureProducer<LoggingContext> = settings
        .producer()
        .set("linger.ms", "0")
        .create_with_context(LoggingContext::new("measure"))?;
    let prefix = format!("lat{}", rand::random::<u32>());
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut sent_at: HashMap<u64, (Instant, i64)> = HashMap::with_capacity(total as usize);
    let mut replies = reader.stream();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut answered = 0u64;
    let mut deliveries = futures::stream::FuturesUnordered::new();
    let mut last_reply = Instant::now();
    loop {
        let all_sent = sent >= total;
        if all_sent && (answered >= sent || last_reply.elapsed() > Duration::from_secs(10)) {
            break;
        }
        let due = started + Duration::from_secs_f64(sent as f64 / rate);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()), if !all_sent => {
                let uid = uids.0 + (sent * 7919) % (uids.1 - uids.0 + 1);
                let payload = format!(r#"{{"uid":{uid},"request_id":"{prefix}-{sent}"}}"#);
                let stamp = now_ms();
                let key = uid.to_string();
                let record = FutureRecord::to(input).key(&key).payload(&payload).timestamp(stamp);
                if let Ok(delivery) = producer.send_result(record) {
                    sent_at.insert(sent, (Instant::now(), stamp));
                    deliveries.push(delivery);
                }
                sent += 1;
            }
            Some(_) = deliveries.next(), if !deliveries.is_empty() => {}
            reply = replies.next() => {
                let Some(Ok(message)) = reply else { continue };
                let received = Instant::now();
                let id = message
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                    .and_then(|v| v.get("request_id").and_then(|id| id.as_str().map(str::to_string)));
                let Some(n) = id.and_then(|id| id.strip_prefix(&format!("{prefix}-")).and_then(|n| n.parse::<u64>().ok())) else { continue };
                if let Some((at, stamp)) = sent_at.remove(&n) {
                    answered += 1;
                    last_reply = received;
                    round_trip.saturating_record(received.duration_since(at).as_micros() as u64);
                    if let Some(reply_ms) = message.timestamp().to_millis() {
                        stamps.saturating_record(((reply_ms - stamp).max(0) as u64) * 1000);
                    }
                }
            }
        }
    }
    Ok(LatencyStats {
        sent,
        answered,
        target_rate: rate,
        sent_rate: sent as f64 / duration.as_secs_f64().max(1e-9),
        round_trip_us: Percentiles::from(&round_trip),
        timestamp_to_timestamp_us: Percentiles::from(&stamps),
    })
}
