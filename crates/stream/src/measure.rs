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
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
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

/// How long the latency and freshness probes wait for their reply topic to
/// appear (a worker that was just started may not have written to it yet).
const TOPIC_WAIT: Duration = Duration::from_secs(10);

/// Where a reader starts in its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFrom {
    /// Everything the topic holds.
    Beginning,
    /// What is written from now on: the partitions' current ends, read
    /// before anything is sent, so that no reply to this run is missed and
    /// no earlier run's replies are read through first.
    Now,
}

/// A consumer assigned to every partition of `topic`, from `from`.
///
/// Waits up to `wait` for the topic to exist: a reader started before the
/// first reply was written must not settle for zero partitions and then read
/// nothing forever (librdkafka only refreshes an assignment's metadata every
/// few minutes).
async fn assigned_reader(
    settings: &KafkaSettings,
    topic: &str,
    wait: Duration,
    from: ReadFrom,
) -> Result<StreamConsumer<LoggingContext>, KafkaError> {
    let group = format!("recstream-measure-{}", rand::random::<u32>());
    let consumer: StreamConsumer<LoggingContext> = settings
        .reader(&group)
        .set("fetch.wait.max.ms", "5")
        .create_with_context(LoggingContext::new("measure"))?;
    let deadline = Instant::now() + wait;
    let partitions = loop {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if partitions > 0 {
            break partitions;
        }
        if Instant::now() >= deadline {
            return Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        let offset = match from {
            ReadFrom::Beginning => Offset::Beginning,
            ReadFrom::Now => {
                let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
                Offset::Offset(high)
            }
        };
        tpl.add_partition_offset(topic, p, offset)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Reads `topic` from the beginning until `expect` distinct requests were
/// answered or nothing arrived for `idle` (which also bounds the wait for
/// the topic to be created).
pub async fn reply_rate(
    settings: &KafkaSettings,
    topic: &str,
    expect: u64,
    idle: Duration,
) -> Result<ReplyStats, KafkaError> {
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
        if let Some(id) = message
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v.get("request_id").map(|id| id.to_string()))
        {
            ids.insert(id);
        }
    }
    Ok(ReplyStats::new(replies, ids.len() as u64, first, last))
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
    /// The same two measures per window of the run, by the time each reply
    /// was read (empty unless windows were asked for).
    pub windows: Vec<Window>,
}

/// Percentiles of one stretch of a run, so that a drift over minutes shows
/// instead of melting into the whole run's percentiles.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// End of the stretch, seconds since the run started.
    pub end_s: u64,
    /// Each measure's percentiles over the stretch, by name.
    #[serde(flatten)]
    pub measures: std::collections::BTreeMap<&'static str, Percentiles>,
}

/// When there are no windows, the one window "ends" this far away (a
/// century: far beyond any run, well within what `Instant` can add).
const NO_WINDOW_END: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Histograms that are cut into a [`Window`] every `every`.
struct Windows {
    every: Option<Duration>,
    started: Instant,
    next_end: Instant,
    names: &'static [&'static str],
    current: Vec<Histogram<u64>>,
    done: Vec<Window>,
}

impl Windows {
    fn new(every: Option<Duration>, names: &'static [&'static str]) -> Result<Self, KafkaError> {
        let every = every.filter(|d| !d.is_zero());
        let started = Instant::now();
        let current = names
            .iter()
            .map(|_| new_histogram())
            .collect::<Result<_, _>>()?;
        Ok(Windows {
            every,
            started,
            next_end: started + every.unwrap_or(NO_WINDOW_END),
            names,
            current,
            done: Vec::new(),
        })
    }

    /// When the current window ends (far away when there are no windows).
    fn next_end(&self) -> Instant {
        self.next_end
    }

    fn record(&mut self, measure: usize, value: u64) {
        if self.every.is_some()
            && let Some(h) = self.current.get_mut(measure)
        {
            h.saturating_record(value);
        }
    }

    /// Closes every window that ended by `now`, handing each to `report`.
    fn roll(&mut self, now: Instant, report: &mut impl FnMut(&Window)) {
        let Some(every) = self.every else { return };
        while now >= self.next_end {
            let end = self.next_end;
            self.close(end, report);
            self.next_end = end + every;
        }
    }

    /// Closes the last, partial window if it holds anything.
    fn finish(mut self, report: &mut impl FnMut(&Window)) -> Vec<Window> {
        if self.every.is_some() && self.current.iter().any(|h| !h.is_empty()) {
            self.close(Instant::now(), report);
        }
        self.done
    }

    fn close(&mut self, end: Instant, report: &mut impl FnMut(&Window)) {
        let window = Window {
            end_s: end.duration_since(self.started).as_secs_f64().round() as u64,
            measures: self
                .names
                .iter()
                .zip(&self.current)
                .map(|(name, h)| (*name, Percentiles::from(h)))
                .collect(),
        };
        report(&window);
        self.done.push(window);
        for h in &mut self.current {
            h.reset();
        }
    }
}

fn load_producer(settings: &KafkaSettings) -> Result<FutureProducer<LoggingContext>, KafkaError> {
    settings
        .load_producer()
        .create_with_context(LoggingContext::new("measure"))
}

fn new_histogram() -> Result<Histogram<u64>, KafkaError> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|_| KafkaError::Canceled)
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
/// `duration` and times every reply that comes back on `output`. With
/// `every`, the percentiles are also cut into windows of that length, each
/// handed to `report` as it closes.
#[allow(clippy::too_many_arguments)]
pub async fn latency(
    settings: &KafkaSettings,
    input: &str,
    output: &str,
    rate: f64,
    duration: Duration,
    uids: (u64, u64),
    every: Option<Duration>,
    mut report: impl FnMut(&Window),
) -> Result<LatencyStats, KafkaError> {
    // The CLI refuses such values; a library caller gets one a second.
    let rate = if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        1.0
    };
    let uids = (uids.0.min(uids.1), uids.0.max(uids.1));
    let (mut round_trip, mut stamps) = (new_histogram()?, new_histogram()?);
    let reader = assigned_reader(settings, output, TOPIC_WAIT, ReadFrom::Now).await?;
    let producer: FutureProducer<LoggingContext> = load_producer(settings)?;
    let prefix = format!("lat{}", rand::random::<u32>());
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut sent_at: HashMap<u64, (Instant, i64)> = HashMap::with_capacity(total as usize);
    let mut replies = reader.stream();
    // The producer's own start (connection, producer id) is not the
    // service's latency: one request, not timed, before the clock starts.
    let warm_up = format!(r#"{{"uid":{},"request_id":"{prefix}-warm-up"}}"#, uids.0);
    producer
        .send(
            FutureRecord::to(input)
                .key(&uids.0.to_string())
                .payload(&warm_up),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut answered = 0u64;
    let mut deliveries = futures::stream::FuturesUnordered::new();
    let mut last_reply = Instant::now();
    let mut windows = Windows::new(every, &["round_trip_us", "timestamp_to_timestamp_us"])?;
    loop {
        let all_sent = sent >= total;
        if all_sent && (answered >= sent || last_reply.elapsed() > Duration::from_secs(10)) {
            break;
        }
        let due = started + Duration::from_secs_f64(sent as f64 / rate);
        windows.roll(Instant::now(), &mut report);
        tokio::select! {
            _ = tokio::time::sleep_until(windows.next_end().into()) => {}
            _ = tokio::time::sleep_until(due.into()), if !all_sent => {
                let uid = uids.0 + (sent.wrapping_mul(7919)) % (uids.1 - uids.0).saturating_add(1);
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
                    let trip = received.duration_since(at).as_micros() as u64;
                    round_trip.saturating_record(trip);
                    windows.record(0, trip);
                    if let Some(reply_ms) = message.timestamp().to_millis() {
                        let apart = ((reply_ms - stamp).max(0) as u64) * 1000;
                        stamps.saturating_record(apart);
                        windows.record(1, apart);
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
        windows: windows.finish(&mut report),
    })
}

/// Freshness run results.
#[derive(Debug, Clone, Serialize)]
pub struct FreshnessStats {
    /// Ratings sent.
    pub ratings: u64,
    /// Ratings whose effect was seen in a reply.
    pub observed: u64,
    /// Requests sent (first looks and probes).
    pub requests: u64,
    /// Rating Kafka timestamp to the first reply reflecting it (Kafka
    /// timestamp), microseconds; an upper bound within the probe schedule.
    pub freshness_us: Percentiles,
    /// Ratings per second asked for.
    pub rating_rate: f64,
    /// Freshness per window of the run, by the time each was observed
    /// (empty unless windows were asked for).
    pub windows: Vec<Window>,
}

/// Delays after a rating at which its user is asked again, until a reply
/// reflects it; doubling, so that a slow moment does not multiply the load
/// the benchmark itself adds. The last entry is when it gives up.
const PROBES_MS: [u64; 8] = [8, 16, 32, 64, 128, 256, 512, GIVE_UP_MS];

/// A rating not reflected this long after it was sent is recorded as this
/// (an under-estimate; `observed` in the results tells how many there were).
const GIVE_UP_MS: u64 = 1000;

/// Sends ratings at `rate` per second for `duration`, each one rating a
/// user's current top recommendation 1 star, and asks for that user's
/// recommendations a few milliseconds later (and again, until the movie is
/// gone): freshness is from the rating's timestamp to the first reply that
/// no longer recommends it. Users are `1..=users`. With `every`, the
/// percentiles are also cut into windows, each handed to `report`.
#[allow(clippy::too_many_arguments)]
pub async fn freshness(
    settings: &KafkaSettings,
    requests_topic: &str,
    replies_topic: &str,
    ratings_topic: &str,
    rate: f64,
    duration: Duration,
    users: u64,
    every: Option<Duration>,
    mut report: impl FnMut(&Window),
) -> Result<FreshnessStats, KafkaError> {
    // The CLI refuses such values; a library caller gets one user, one a second.
    let rate = if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        1.0
    };
    let users = users.max(1);
    let mut histogram = new_histogram()?;
    let reader = assigned_reader(settings, replies_topic, TOPIC_WAIT, ReadFrom::Now).await?;
    let producer = load_producer(settings)?;
    let prefix = format!("fr{}", rand::random::<u32>());
    let mut replies = reader.stream();
    let mut requests = 0u64;
    let send = |topic: &str, key: &str, payload: &str| {
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .timestamp(now_ms());
        let _ = producer.send_result(record);
    };
    // Everyone's current top movie.
    let mut top: HashMap<u64, String> = HashMap::new();
    for uid in 1..=users {
        send(
            requests_topic,
            &uid.to_string(),
            &format!(r#"{{"uid":{uid},"request_id":"{prefix}-top-{uid}"}}"#),
        );
        requests += 1;
    }
    let first_tops = Instant::now();
    while (top.len() as u64) < users && first_tops.elapsed() < Duration::from_secs(60) {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(5), replies.next()).await
        else {
            break;
        };
        if let Some((uid, Some(item), _)) = parse_reply(&message, &prefix) {
            top.insert(uid, item);
        }
    }
    // Ratings, and probes until each one shows.
    struct Pending {
        item: String,
        rated_ms: i64,
        sent: Instant,
        probes: usize,
    }
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut due: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64)>> =
        std::collections::BinaryHeap::new();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let started = Instant::now();
    let (mut rated, mut observed, mut probe_id) = (0u64, 0u64, 0u64);
    let mut last_progress = Instant::now();
    let mut windows = Windows::new(every, &["freshness_us"])?;
    loop {
        windows.roll(Instant::now(), &mut report);
        if rated >= total
            && (pending.is_empty() || last_progress.elapsed() > Duration::from_secs(5))
        {
            break;
        }
        let next_rating = started + Duration::from_secs_f64(rated as f64 / rate);
        let next_probe = due.peek().map(|std::cmp::Reverse((at, _))| *at);
        let wake = match (rated < total, next_probe) {
            (true, Some(p)) => next_rating.min(p),
            (true, None) => next_rating,
            (false, Some(p)) => p,
            (false, None) => Instant::now() + Duration::from_millis(50),
        }
        .min(windows.next_end());
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if rated < total && now >= next_rating {
                    // A user not waiting on an earlier rating, with a known top movie.
                    let uid = (0..8).map(|_| 1 + rand::random::<u64>() % users).find(|u| !pending.contains_key(u) && top.contains_key(u));
                    if let Some(uid) = uid
                        && let Some(item) = top.get(&uid).cloned()
                    {
                        let rated_ms = now_ms();
                        let key = uid.to_string();
                        let iid = serde_json::Value::from(item.clone());
                        let payload = format!(r#"{{"uid":{uid},"iid":{iid},"rating":1}}"#);
                        let _ = producer.send_result(FutureRecord::to(ratings_topic).key(&key).payload(&payload).timestamp(rated_ms));
                        pending.insert(uid, Pending { item, rated_ms, sent: now, probes: 0 });
                        due.push(std::cmp::Reverse((now + Duration::from_millis(PROBES_MS[0]), uid)));
                    }
                    rated += 1;
                }
                while let Some(std::cmp::Reverse((at, uid))) = due.peek().copied() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    let Some(p) = pending.get_mut(&uid) else { continue };
                    if p.probes + 1 >= PROBES_MS.len() {
                        // Not seen within the schedule: count it as the give-up delay.
                        histogram.saturating_record(GIVE_UP_MS * 1000);
                        windows.record(0, GIVE_UP_MS * 1000);
                        pending.remove(&uid);
                        continue;
                    }
                    probe_id += 1;
                    send(requests_topic, &uid.to_string(), &format!(r#"{{"uid":{uid},"request_id":"{prefix}-p-{probe_id}"}}"#));
                    requests += 1;
                    p.probes += 1;
                    due.push(std::cmp::Reverse((p.sent + Duration::from_millis(PROBES_MS[p.probes]), uid)));
                }
            }
            reply = replies.next() => {
                let Some(Ok(message)) = reply else { continue };
                let Some((uid, first, items)) = parse_reply(&message, &prefix) else { continue };
                let reply_ms = message.timestamp().to_millis().unwrap_or_else(now_ms);
                let reflected = pending.get(&uid).is_some_and(|p| !items.contains(&p.item) && reply_ms >= p.rated_ms);
                if reflected
                    && let Some(p) = pending.remove(&uid)
                {
                    observed += 1;
                    last_progress = Instant::now();
                    let fresh = ((reply_ms - p.rated_ms).max(0) as u64) * 1000;
                    histogram.saturating_record(fresh);
                    windows.record(0, fresh);
                    if let Some(item) = first {
                        top.insert(uid, item);
                    }
                }
            }
        }
    }
    Ok(FreshnessStats {
        ratings: rated,
        observed,
        requests,
        freshness_us: Percentiles::from(&histogram),
        rating_rate: rate,
        windows: windows.finish(&mut report),
    })
}

/// The user, first item and all items of a reply to one of our requests.
fn parse_reply(
    message: &rdkafka::message::BorrowedMessage<'_>,
    prefix: &str,
) -> Option<(u64, Option<String>, Vec<String>)> {
    let value: serde_json::Value = serde_json::from_slice(message.payload()?).ok()?;
    if !value["request_id"].as_str()?.starts_with(prefix) {
        return None;
    }
    let uid = value["uid"].as_u64()?;
    let items: Vec<String> = value["recommendations"]
        .as_array()?
        .iter()
        .map(|r| {
            r["iid"].as_i64().map_or_else(
                || r["iid"].as_str().unwrap_or_default().to_string(),
                |n| n.to_string(),
            )
        })
        .collect();
    Some((uid, items.first().cloned(), items))
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
}
