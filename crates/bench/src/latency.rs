//! `bench latency`: requests at a steady rate, each timed until its reply comes back.
//!
//! The probe sends `{"uid": U, "request_id": "<prefix>-<n>"}` at a fixed
//! rate (an open loop: a slow reply does not delay the next request, as it
//! would not for real users) and reads the reply topic from its end at the
//! start of the run. Each reply is timed twice: from the moment its request
//! was handed to the producer to the moment the reply was read back
//! (microsecond clock, one process: what a client experiences, client
//! batching included), and from the request's Kafka timestamp to the reply's
//! (millisecond resolution, set by the producers: the service's share). One
//! untimed request goes first, so that the producer's own start (connecting,
//! getting a producer id) is not counted as the service's latency.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use rdkafka::Message;
use rdkafka::consumer::MessageStream;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use recstream_stream::kafka::{KafkaSettings, LoggingContext};
use serde::Serialize;

use crate::BenchError;
use crate::percentiles::{MINUTE_US, Percentiles, histogram};
use crate::producer::{load_producer, now_ms, send_stamped, usable_rate};
use crate::reader::{ReadFrom, TOPIC_WAIT, assigned_reader};
use crate::windows::{Window, Windows};

/// What a latency run sends, and where.
#[derive(Debug, Clone)]
pub struct LatencySpec {
    /// Topic the worker reads requests from.
    pub input: String,
    /// Topic the worker writes replies to.
    pub output: String,
    /// Requests per second (one a second if not finite and above zero).
    pub rate: f64,
    /// How long to send for.
    pub duration: Duration,
    /// User ids to ask for, first and last (either order).
    pub uids: (u64, u64),
    /// Also cut the percentiles into windows of this length.
    pub every: Option<Duration>,
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
    /// The round trip as a CDF table (quantile, microseconds), for plots.
    pub round_trip_cdf_us: Vec<(f64, u64)>,
    /// The timestamp-to-timestamp latency as a CDF table, for plots.
    pub timestamp_to_timestamp_cdf_us: Vec<(f64, u64)>,
    /// The same two measures per window of the run, by the time each reply
    /// was read (empty unless windows were asked for).
    pub windows: Vec<Window>,
}

/// After the last request, how long to wait for a reply before giving up
/// on the ones still missing.
const LAST_REPLY_WAIT: Duration = Duration::from_secs(10);

/// The measures, in the order [`Windows::record`] takes them.
const MEASURES: &[&str] = &["round_trip_us", "timestamp_to_timestamp_us"];

/// Sends requests as `spec` says and times every reply that comes back.
/// Each window is handed to `report` as it closes.
pub async fn run(
    settings: &KafkaSettings,
    spec: &LatencySpec,
    mut report: impl FnMut(&Window),
) -> Result<LatencyStats, BenchError> {
    let reader = assigned_reader(settings, &spec.output, TOPIC_WAIT, ReadFrom::Now).await?;
    let producer = load_producer(settings)?;
    let prefix = format!("lat{}", rand::random::<u32>());
    warm_up(&producer, spec, &prefix).await?;
    let mut probe = Probe::new(spec, producer, prefix, reader.stream())?;
    probe.run(&mut report).await?;
    Ok(probe.finish(&mut report))
}

/// Sends one request and waits for its acknowledgement, untimed.
async fn warm_up(
    producer: &FutureProducer<LoggingContext>,
    spec: &LatencySpec,
    prefix: &str,
) -> Result<(), BenchError> {
    let uid = spec.uids.0.min(spec.uids.1);
    let payload = format!(r#"{{"uid":{uid},"request_id":"{prefix}-warm-up"}}"#);
    let key = uid.to_string();
    let delivery = send_stamped(producer, &spec.input, &key, &payload, now_ms()).await?;
    let source = match delivery.await {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err((source, _))) => source,
        Err(_) => rdkafka::error::KafkaError::Canceled,
    };
    Err(BenchError::WarmUp {
        topic: spec.input.clone(),
        source,
    })
}

/// A latency run under way: what was sent when, and the histograms.
struct Probe<'a> {
    spec: &'a LatencySpec,
    rate: f64,
    uids: (u64, u64),
    producer: FutureProducer<LoggingContext>,
    prefix: String,
    replies: MessageStream<'a, LoggingContext>,
    total: u64,
    started: Instant,
    sent: u64,
    answered: u64,
    /// By request number: when it was queued, and its Kafka timestamp.
    sent_at: HashMap<u64, (Instant, i64)>,
    /// Polled only to let acknowledgements complete.
    deliveries: FuturesUnordered<DeliveryFuture>,
    last_reply: Instant,
    round_trip: Histogram<u64>,
    stamps: Histogram<u64>,
    windows: Windows,
}

impl<'a> Probe<'a> {
    fn new(
        spec: &'a LatencySpec,
        producer: FutureProducer<LoggingContext>,
        prefix: String,
        replies: MessageStream<'a, LoggingContext>,
    ) -> Result<Self, BenchError> {
        let rate = usable_rate(spec.rate);
        let total = (rate * spec.duration.as_secs_f64()).round() as u64;
        Ok(Probe {
            spec,
            rate,
            uids: (spec.uids.0.min(spec.uids.1), spec.uids.0.max(spec.uids.1)),
            producer,
            prefix,
            replies,
            total,
            started: Instant::now(),
            sent: 0,
            answered: 0,
            sent_at: HashMap::with_capacity(total as usize),
            deliveries: FuturesUnordered::new(),
            last_reply: Instant::now(),
            round_trip: histogram(MINUTE_US)?,
            stamps: histogram(MINUTE_US)?,
            windows: Windows::new(spec.every, MEASURES)?,
        })
    }

    /// Everything sent, and everything answered or nothing heard for a while.
    fn finished(&self) -> bool {
        self.sent >= self.total
            && (self.answered >= self.sent || self.last_reply.elapsed() > LAST_REPLY_WAIT)
    }

    /// Sends on schedule and reads replies until [`finished`](Self::finished).
    async fn run(&mut self, report: &mut impl FnMut(&Window)) -> Result<(), BenchError> {
        while !self.finished() {
            let all_sent = self.sent >= self.total;
            let due = self.started + Duration::from_secs_f64(self.sent as f64 / self.rate);
            self.windows.roll(Instant::now(), report);
            tokio::select! {
                _ = tokio::time::sleep_until(self.windows.next_end().into()) => {}
                _ = tokio::time::sleep_until(due.into()), if !all_sent => self.send_next().await?,
                Some(_) = self.deliveries.next(), if !self.deliveries.is_empty() => {}
                reply = self.replies.next() => {
                    if let Some(Ok(message)) = reply {
                        self.on_reply(&message);
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends request number `sent`, for a user spread over the range.
    async fn send_next(&mut self) -> Result<(), BenchError> {
        let (first, last) = self.uids;
        let uid = first + self.sent.wrapping_mul(7919) % (last - first).saturating_add(1);
        let payload = format!(
            r#"{{"uid":{uid},"request_id":"{}-{}"}}"#,
            self.prefix, self.sent
        );
        let stamp = now_ms();
        let key = uid.to_string();
        let delivery =
            send_stamped(&self.producer, &self.spec.input, &key, &payload, stamp).await?;
        self.sent_at.insert(self.sent, (Instant::now(), stamp));
        self.deliveries.push(delivery);
        self.sent += 1;
        Ok(())
    }

    /// Times the reply to one of this run's requests; ignores anything else.
    fn on_reply(&mut self, message: &BorrowedMessage<'_>) {
        let received = Instant::now();
        let Some(n) = request_number(message.payload(), &self.prefix) else {
            return;
        };
        let Some((at, stamp)) = self.sent_at.remove(&n) else {
            return;
        };
        self.answered += 1;
        self.last_reply = received;
        let trip = received.duration_since(at).as_micros() as u64;
        self.round_trip.saturating_record(trip);
        self.windows.record(0, trip);
        if let Some(reply_ms) = message.timestamp().to_millis() {
            let apart = ((reply_ms - stamp).max(0) as u64) * 1000;
            self.stamps.saturating_record(apart);
            self.windows.record(1, apart);
        }
    }

    fn finish(self, report: &mut impl FnMut(&Window)) -> LatencyStats {
        LatencyStats {
            sent: self.sent,
            answered: self.answered,
            target_rate: self.rate,
            sent_rate: self.sent as f64 / self.spec.duration.as_secs_f64().max(1e-9),
            round_trip_us: Percentiles::from(&self.round_trip),
            timestamp_to_timestamp_us: Percentiles::from(&self.stamps),
            round_trip_cdf_us: crate::percentiles::cdf(&self.round_trip),
            timestamp_to_timestamp_cdf_us: crate::percentiles::cdf(&self.stamps),
            windows: self.windows.finish(report),
        }
    }
}

/// The number `n` of a reply to request `<prefix>-<n>`.
fn request_number(payload: Option<&[u8]>, prefix: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(payload?).ok()?;
    let id = value.get("request_id")?.as_str()?;
    id.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_replies_to_this_runs_numbered_requests_are_matched() {
        let reply = |id: &str| format!(r#"{{"request_id":"{id}","recommendations":[]}}"#);
        let number = |id: &str| request_number(Some(reply(id).as_bytes()), "lat7");
        assert_eq!(number("lat7-42"), Some(42));
        assert_eq!(number("lat7-warm-up"), None);
        assert_eq!(number("lat77-1"), None, "another run's prefix");
        assert_eq!(number("load-1"), None);
        assert_eq!(request_number(Some(b"not json"), "lat7"), None);
        assert_eq!(request_number(None, "lat7"), None);
    }
}
