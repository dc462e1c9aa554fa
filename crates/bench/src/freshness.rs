//! `bench freshness`: how soon a rating shows in the replies, seen from outside.
//!
//! The probe first asks every user for their recommendations and remembers
//! each one's top movie. Then, at a steady rate, it rates a user's current
//! top movie 1 star and asks for that user's recommendations a few
//! milliseconds later, and again on a doubling schedule, until a reply no
//! longer recommends the movie: freshness is from the rating's Kafka
//! timestamp to that reply's, through the learner, the model topic and the
//! worker, as a client would see it. The schedule doubles so that a slow
//! moment does not multiply the load the probe itself adds; a rating not
//! seen by the end of it is recorded at the give-up delay (an
//! under-estimate, and `observed` in the results says how many were seen).
//! A user is rated again only once their last rating was seen.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use rdkafka::Message;
use rdkafka::consumer::MessageStream;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use recstream_stream::kafka::{KafkaSettings, LoggingContext};
use serde::Serialize;

use crate::BenchError;
use crate::percentiles::{MINUTE_US, Percentiles, histogram};
use crate::producer::{load_producer, now_ms, send_stamped, usable_rate};
use crate::reader::{ReadFrom, TOPIC_WAIT, assigned_reader};
use crate::windows::{Window, Windows};

/// What a freshness run sends, and where.
#[derive(Debug, Clone)]
pub struct FreshnessSpec {
    /// Topic the worker reads requests from.
    pub requests_topic: String,
    /// Topic the worker writes replies to.
    pub replies_topic: String,
    /// Topic the learner reads ratings from.
    pub ratings_topic: String,
    /// Ratings per second (one a second if not finite and above zero).
    pub rate: f64,
    /// How long to rate for.
    pub duration: Duration,
    /// Users `1..=users` are rated as (at least one).
    pub users: u64,
    /// Also cut the percentiles into windows of this length.
    pub every: Option<Duration>,
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
    /// Freshness as a CDF table (quantile, microseconds), for plots.
    pub freshness_cdf_us: Vec<(f64, u64)>,
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

/// How long the first looks may take altogether, and one of them at most.
const FIRST_LOOKS_WAIT: Duration = Duration::from_secs(60);
const FIRST_LOOK_WAIT: Duration = Duration::from_secs(5);

/// After the last rating, how long without a rating seen before giving up
/// on the ones still pending.
const STALL_WAIT: Duration = Duration::from_secs(5);

/// Sends ratings as `spec` says and measures how soon replies reflect each.
/// Each window is handed to `report` as it closes.
pub async fn run(
    settings: &KafkaSettings,
    spec: &FreshnessSpec,
    mut report: impl FnMut(&Window),
) -> Result<FreshnessStats, BenchError> {
    let reader = assigned_reader(settings, &spec.replies_topic, TOPIC_WAIT, ReadFrom::Now).await?;
    let mut client = Client {
        spec,
        producer: load_producer(settings)?,
        prefix: format!("fr{}", rand::random::<u32>()),
        replies: reader.stream(),
        requests: 0,
    };
    let top = client.first_looks(spec.users.max(1)).await?;
    let mut ratings = Ratings::new(client, top)?;
    ratings.run(&mut report).await?;
    Ok(ratings.finish(&mut report))
}

/// The probe's view of the service: its producer, the replies, and the
/// request ids of this run.
struct Client<'a> {
    spec: &'a FreshnessSpec,
    producer: FutureProducer<LoggingContext>,
    prefix: String,
    replies: MessageStream<'a, LoggingContext>,
    requests: u64,
}

impl Client<'_> {
    /// Asks for `uid`'s recommendations as request `<prefix>-<id>`.
    async fn ask(&mut self, uid: u64, id: &str) -> Result<(), BenchError> {
        let payload = format!(r#"{{"uid":{uid},"request_id":"{}-{id}"}}"#, self.prefix);
        let topic = &self.spec.requests_topic;
        send_stamped(&self.producer, topic, &uid.to_string(), &payload, now_ms()).await?;
        self.requests += 1;
        Ok(())
    }

    /// Rates `item` 1 star as `uid`, with the Kafka timestamp `rated_ms`.
    async fn rate(&self, uid: u64, item: &str, rated_ms: i64) -> Result<(), BenchError> {
        let iid = serde_json::Value::from(item);
        let payload = format!(r#"{{"uid":{uid},"iid":{iid},"rating":1}}"#);
        let topic = &self.spec.ratings_topic;
        send_stamped(&self.producer, topic, &uid.to_string(), &payload, rated_ms).await?;
        Ok(())
    }

    /// Every user's current top movie, for the users who answered in time.
    async fn first_looks(&mut self, users: u64) -> Result<HashMap<u64, String>, BenchError> {
        for uid in 1..=users {
            self.ask(uid, &format!("top-{uid}")).await?;
        }
        let mut top = HashMap::new();
        let started = Instant::now();
        while (top.len() as u64) < users && started.elapsed() < FIRST_LOOKS_WAIT {
            let Ok(Some(Ok(message))) =
                tokio::time::timeout(FIRST_LOOK_WAIT, self.replies.next()).await
            else {
                break;
            };
            if let Some(reply) = Reply::parse(message.payload(), &self.prefix)
                && let Some(item) = reply.items.first()
            {
                top.insert(reply.uid, item.clone());
            }
        }
        Ok(top)
    }
}

/// A rating waiting to show in a reply.
struct Pending {
    item: String,
    rated_ms: i64,
    sent: Instant,
    probes: usize,
}

/// The rating phase under way: who is pending, when to probe, what was seen.
struct Ratings<'a> {
    client: Client<'a>,
    rate: f64,
    users: u64,
    total: u64,
    top: HashMap<u64, String>,
    pending: HashMap<u64, Pending>,
    /// When to probe which user, earliest first.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    started: Instant,
    rated: u64,
    observed: u64,
    probe_id: u64,
    last_progress: Instant,
    histogram: Histogram<u64>,
    windows: Windows,
}

impl<'a> Ratings<'a> {
    fn new(client: Client<'a>, top: HashMap<u64, String>) -> Result<Self, BenchError> {
        let spec = client.spec;
        let rate = usable_rate(spec.rate);
        Ok(Ratings {
            client,
            rate,
            users: spec.users.max(1),
            total: (rate * spec.duration.as_secs_f64()).round() as u64,
            top,
            pending: HashMap::new(),
            due: BinaryHeap::new(),
            started: Instant::now(),
            rated: 0,
            observed: 0,
            probe_id: 0,
            last_progress: Instant::now(),
            histogram: histogram(MINUTE_US)?,
            windows: Windows::new(spec.every, &["freshness_us"])?,
        })
    }

    /// Every rating sent, and every one seen or nothing seen for a while.
    fn finished(&self) -> bool {
        self.rated >= self.total
            && (self.pending.is_empty() || self.last_progress.elapsed() > STALL_WAIT)
    }

    /// When the next rating is due.
    fn next_rating(&self) -> Instant {
        self.started + Duration::from_secs_f64(self.rated as f64 / self.rate)
    }

    /// The next moment something is to be done: a rating, a probe, or the
    /// end of a window.
    fn wake_at(&self) -> Instant {
        let next_probe = self.due.peek().map(|Reverse((at, _))| *at);
        match (self.rated < self.total, next_probe) {
            (true, Some(p)) => self.next_rating().min(p),
            (true, None) => self.next_rating(),
            (false, Some(p)) => p,
            (false, None) => Instant::now() + Duration::from_millis(50),
        }
        .min(self.windows.next_end())
    }

    /// Rates and probes on schedule and reads replies until
    /// [`finished`](Self::finished).
    async fn run(&mut self, report: &mut impl FnMut(&Window)) -> Result<(), BenchError> {
        loop {
            self.windows.roll(Instant::now(), report);
            if self.finished() {
                return Ok(());
            }
            let wake = self.wake_at();
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => self.on_wake().await?,
                reply = self.client.replies.next() => {
                    if let Some(Ok(message)) = reply {
                        self.on_reply(&message);
                    }
                }
            }
        }
    }

    /// Sends the rating that is due, if any, and the probes that are.
    async fn on_wake(&mut self) -> Result<(), BenchError> {
        let now = Instant::now();
        if self.rated < self.total && now >= self.next_rating() {
            self.rate_someone(now).await?;
        }
        self.probe_due(now).await
    }

    /// Rates the top movie of a user not waiting on an earlier rating (a
    /// few random tries; none found skips this rating).
    async fn rate_someone(&mut self, now: Instant) -> Result<(), BenchError> {
        let users = self.users;
        let uid = (0..8)
            .map(|_| 1 + rand::random::<u64>() % users)
            .find(|u| !self.pending.contains_key(u) && self.top.contains_key(u));
        if let Some(uid) = uid
            && let Some(item) = self.top.get(&uid).cloned()
        {
            let rated_ms = now_ms();
            self.client.rate(uid, &item, rated_ms).await?;
            let pending = Pending {
                item,
                rated_ms,
                sent: now,
                probes: 0,
            };
            self.pending.insert(uid, pending);
            self.due
                .push(Reverse((now + Duration::from_millis(PROBES_MS[0]), uid)));
        }
        self.rated += 1;
        Ok(())
    }

    /// Asks again for every pending user whose probe is due, or gives up
    /// on those at the end of the schedule.
    async fn probe_due(&mut self, now: Instant) -> Result<(), BenchError> {
        while let Some(Reverse((at, uid))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            let Some(p) = self.pending.get_mut(&uid) else {
                continue;
            };
            if p.probes + 1 >= PROBES_MS.len() {
                // Not seen within the schedule: count it as the give-up delay.
                self.pending.remove(&uid);
                self.record(GIVE_UP_MS * 1000);
                continue;
            }
            p.probes += 1;
            let next = p.sent + Duration::from_millis(PROBES_MS[p.probes]);
            self.due.push(Reverse((next, uid)));
            self.probe_id += 1;
            let id = format!("p-{}", self.probe_id);
            self.client.ask(uid, &id).await?;
        }
        Ok(())
    }

    /// Records the freshness of a pending rating that this reply reflects.
    fn on_reply(&mut self, message: &BorrowedMessage<'_>) {
        let Some(reply) = Reply::parse(message.payload(), &self.client.prefix) else {
            return;
        };
        let reply_ms = message.timestamp().to_millis().unwrap_or_else(now_ms);
        let reflected = self
            .pending
            .get(&reply.uid)
            .is_some_and(|p| !reply.items.contains(&p.item) && reply_ms >= p.rated_ms);
        if !reflected {
            return;
        }
        if let Some(p) = self.pending.remove(&reply.uid) {
            self.observed += 1;
            self.last_progress = Instant::now();
            self.record(((reply_ms - p.rated_ms).max(0) as u64) * 1000);
            if let Some(item) = reply.items.into_iter().next() {
                self.top.insert(reply.uid, item);
            }
        }
    }

    fn record(&mut self, freshness_us: u64) {
        self.histogram.saturating_record(freshness_us);
        self.windows.record(0, freshness_us);
    }

    fn finish(self, report: &mut impl FnMut(&Window)) -> FreshnessStats {
        FreshnessStats {
            ratings: self.rated,
            observed: self.observed,
            requests: self.client.requests,
            freshness_us: Percentiles::from(&self.histogram),
            freshness_cdf_us: crate::percentiles::cdf(&self.histogram),
            rating_rate: self.rate,
            windows: self.windows.finish(report),
        }
    }
}

/// A reply to one of this run's requests: the user and the items, best first.
#[derive(Debug, PartialEq)]
struct Reply {
    uid: u64,
    items: Vec<String>,
}

impl Reply {
    /// The reply in `payload` if it answers a request whose id starts with
    /// `prefix`. Item ids are compared as text, numbers or strings alike.
    fn parse(payload: Option<&[u8]>, prefix: &str) -> Option<Reply> {
        let value: serde_json::Value = serde_json::from_slice(payload?).ok()?;
        if !value["request_id"].as_str()?.starts_with(prefix) {
            return None;
        }
        let uid = value["uid"].as_u64()?;
        let items = value["recommendations"]
            .as_array()?
            .iter()
            .map(|r| {
                r["iid"].as_i64().map_or_else(
                    || r["iid"].as_str().unwrap_or_default().to_string(),
                    |n| n.to_string(),
                )
            })
            .collect();
        Some(Reply { uid, items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_to_this_run_gives_its_user_and_items_as_text() {
        let payload =
            br#"{"request_id":"fr9-p-3","uid":12,"recommendations":[{"iid":50},{"iid":"x7"}]}"#;
        assert_eq!(
            Reply::parse(Some(payload), "fr9"),
            Some(Reply {
                uid: 12,
                items: vec!["50".into(), "x7".into()]
            })
        );
    }

    #[test]
    fn replies_to_other_requests_and_garbage_are_ignored() {
        let other = br#"{"request_id":"lat1-3","uid":12,"recommendations":[]}"#;
        assert_eq!(Reply::parse(Some(other), "fr9"), None);
        assert_eq!(Reply::parse(Some(b"{}"), "fr9"), None);
        assert_eq!(Reply::parse(Some(b"not json"), "fr9"), None);
        assert_eq!(Reply::parse(None, "fr9"), None);
    }

    #[test]
    fn the_probe_schedule_doubles_and_ends_at_the_give_up_delay() {
        assert!(
            PROBES_MS
                .windows(2)
                .all(|w| w[1] == 2 * w[0] || w[1] == GIVE_UP_MS)
        );
        assert_eq!(PROBES_MS.last(), Some(&GIVE_UP_MS));
    }
}
