//! Warnings from the embedded broker before it lets its user down.
//!
//! The embedded broker serves every client from one thread and keeps a
//! bounded number of bytes per partition, dropping the oldest batches. This
//! watch looks every few seconds from a thread of its own. It samples the CPU
//! of the broker's thread (from `/proc` on Linux) and warns, naming
//! `--brokers` as the way out, when that thread nears a full core: latency
//! grows from there. It reads each partition's log start offset and warns
//! once per topic when the broker starts dropping messages, since a consumer
//! that far behind would lose them. The thread's load is also exported as
//! `recstream_embedded_broker_cpu_ratio`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use recstream_broker::{Broker, THREAD_COMM};

use super::RETENTION_BYTES;
use crate::metrics::EMBEDDED_BROKER_CPU;
use crate::topics::TopicSpec;

/// How often the watch looks.
pub(super) const TICK: Duration = Duration::from_secs(5);
/// The broker's load is judged over this many ticks (30 s).
const LOAD_TICKS: usize = 6;
/// Share of one core above which the broker is about to fall behind.
const BUSY: f64 = 0.8;
/// A warning that still holds is repeated this often.
const REPEAT: Duration = Duration::from_secs(300);
/// Clock ticks a second in `/proc/*/stat` (`USER_HZ`, 100 on Linux's ABI).
const USER_HZ: f64 = 100.0;

/// What the watch remembers between looks.
pub(super) struct Watch {
    topics: Vec<TopicSpec>,
    last_cpu: Option<(Instant, u64)>,
    recent_load: Vec<f64>,
    warned_busy: Option<Instant>,
    dropping: HashSet<String>,
}

impl Watch {
    /// A watch over `broker`, serving `topics`.
    pub(super) fn new(topics: &[TopicSpec]) -> Self {
        Watch {
            topics: topics.to_vec(),
            last_cpu: broker_thread_ticks().map(|t| (Instant::now(), t)),
            recent_load: Vec::with_capacity(LOAD_TICKS),
            warned_busy: None,
            dropping: HashSet::new(),
        }
    }

    /// One look: the thread's load and the partitions' retention.
    pub(super) fn tick(&mut self, broker: &Broker) {
        self.check_load();
        self.check_retention(broker);
    }

    fn check_load(&mut self) {
        let Some(now_ticks) = broker_thread_ticks() else {
            return;
        };
        let now = Instant::now();
        let Some((then, before)) = self.last_cpu.replace((now, now_ticks)) else {
            return;
        };
        let seconds = now.duration_since(then).as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        let load = now_ticks.saturating_sub(before) as f64 / USER_HZ / seconds;
        metrics::gauge!(EMBEDDED_BROKER_CPU).set(load);
        if self.recent_load.len() == LOAD_TICKS {
            self.recent_load.remove(0);
        }
        self.recent_load.push(load);
        let average = self.recent_load.iter().sum::<f64>() / self.recent_load.len() as f64;
        if let Some(message) = busy_warning(
            average,
            self.recent_load.len(),
            self.warned_busy.map(|at| at.elapsed()),
        ) {
            tracing::warn!("{message}");
            self.warned_busy = Some(Instant::now());
        }
    }

    fn check_retention(&mut self, broker: &Broker) {
        for topic in &self.topics {
            if self.dropping.contains(&topic.name) {
                continue;
            }
            let Some(partitions) = broker.partition_stats(&topic.name) else {
                continue;
            };
            if let Some((partition, stats)) = partitions
                .iter()
                .enumerate()
                .find(|(_, stats)| stats.log_start_offset > 0)
            {
                tracing::warn!(
                    "{}",
                    retention_warning(
                        &topic.name,
                        partition,
                        stats.log_start_offset,
                        stats.log_end_offset
                    )
                );
                self.dropping.insert(topic.name.clone());
            }
        }
    }
}

/// The warning logged once per topic when its oldest messages start going.
fn retention_warning(topic: &str, partition: usize, low: i64, high: i64) -> String {
    format!(
        "the embedded broker has started dropping the oldest messages of {topic:?} \
         (partition {partition} now holds offsets {low}..{high}): it keeps the last {} MiB of \
         each partition, so a consumer further behind than that loses them, and a worker \
         started now must start from the learner's latest snapshot (see the README). For \
         data you keep, run against your Kafka with --brokers",
        RETENTION_BYTES / (1024 * 1024)
    )
}

/// The warning to log when the broker's thread averaged `average` of a core
/// over `samples` looks, if it is due (`since_last`: since the previous one).
fn busy_warning(average: f64, samples: usize, since_last: Option<Duration>) -> Option<String> {
    let due = since_last.is_none_or(|d| d >= REPEAT);
    (samples == LOAD_TICKS && average >= BUSY && due).then(|| {
        format!(
            "the embedded broker's thread used {:.0}% of a core over the last {} s: it is near \
             what one thread can serve, and latency will grow from here; for sustained load, run \
             against your Kafka with --brokers",
            average * 100.0,
            LOAD_TICKS as u64 * TICK.as_secs()
        )
    })
}

/// CPU clock ticks (user + system) of this process's broker thread.
fn broker_thread_ticks() -> Option<u64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let mut found = false;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let is_broker = std::fs::read_to_string(path.join("comm"))
            .is_ok_and(|comm| comm.trim_end() == THREAD_COMM);
        if !is_broker {
            continue;
        }
        if let Some(ticks) = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|stat| thread_ticks(&stat))
        {
            found = true;
            total += ticks;
        }
    }
    found.then_some(total)
}

/// User plus system ticks from a `/proc/.../stat` line. The command name (in
/// parentheses) may hold spaces, so fields are counted after its last `)`.
fn thread_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (field 3) ... utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_read_after_the_command_name() {
        let stat = "4242 (rdk:mock (x)) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0";
        assert_eq!(thread_ticks(stat), Some(281));
        assert_eq!(thread_ticks("garbage"), None);
        assert_eq!(thread_ticks("1 (a) S 1 2"), None);
    }

    #[test]
    fn a_busy_broker_is_reported_once_per_repeat_period() {
        assert!(busy_warning(0.9, LOAD_TICKS, None).is_some());
        assert!(
            busy_warning(0.9, LOAD_TICKS - 1, None).is_none(),
            "too few looks yet"
        );
        assert!(busy_warning(0.5, LOAD_TICKS, None).is_none());
        assert!(busy_warning(0.9, LOAD_TICKS, Some(Duration::from_secs(10))).is_none());
        let message = busy_warning(0.9, LOAD_TICKS, Some(REPEAT)).unwrap_or_default();
        assert!(
            message.contains("90%") && message.contains("--brokers"),
            "{message}"
        );
    }

    #[test]
    fn the_broker_thread_is_found_and_measured() {
        if !std::path::Path::new("/proc/self/task").exists() {
            return; // not Linux: the load is not watched
        }
        let broker = Broker::start(recstream_broker::BrokerConfig::default());
        assert!(broker.is_ok(), "{broker:?}");
        let Ok(_broker) = broker else { return };
        let deadline = Instant::now() + Duration::from_secs(10);
        while broker_thread_ticks().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            broker_thread_ticks().is_some(),
            "no {THREAD_COMM} thread found"
        );
        let mut watch = Watch::new(&[]);
        watch.check_load();
        assert_eq!(watch.recent_load.len(), 1, "one load measured");
    }

    #[test]
    fn a_partition_that_drops_its_oldest_messages_is_reported_once() {
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let config = recstream_broker::BrokerConfig {
            retention_bytes: 1,
            ..recstream_broker::BrokerConfig::default()
        };
        let Ok(broker) = Broker::start(config) else {
            panic!("the broker did not start");
        };
        assert!(broker.create_topic("t", 1, &[]).is_ok());
        let topic = TopicSpec::new("t", 1);
        let mut watch = Watch::new(std::slice::from_ref(&topic));
        watch.check_retention(&broker);
        assert!(watch.dropping.is_empty(), "nothing dropped yet");
        let producer: ThreadedProducer<DefaultProducerContext> =
            match crate::kafka::KafkaSettings::new(broker.bootstrap())
                .producer()
                .set("linger.ms", "0")
                .create()
            {
                Ok(producer) => producer,
                Err(e) => panic!("producer: {e}"),
            };
        // Each message its own batch: the second pushes the first out.
        for _ in 0..2 {
            assert!(
                producer
                    .send(BaseRecord::<(), str>::to("t").payload("x"))
                    .is_ok()
            );
            assert!(producer.flush(Duration::from_secs(10)).is_ok());
        }
        watch.check_retention(&broker);
        assert!(
            watch.dropping.contains("t"),
            "the dropping topic was reported"
        );
        let message = retention_warning("t", 0, 5, 9);
        assert!(
            message.contains("5..9") && message.contains("--brokers"),
            "{message}"
        );
    }
}
