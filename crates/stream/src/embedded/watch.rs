//! Warnings from the embedded broker before it lets its user down.
//!
//! librdkafka's mock cluster serves every client from one thread and keeps
//! at most 5 MiB or 100,000 message batches per partition, dropping the
//! oldest. This watch runs on the broker's own thread while it serves. It
//! samples the CPU of the mock's thread (from `/proc` on Linux) and warns,
//! naming `--brokers` as the way out, when that thread nears a full core:
//! latency grows from there. It reads each partition's low watermark and
//! warns once per topic when the broker starts dropping messages, since a
//! consumer that far behind would lose them. The thread's load is also
//! exported as `recstream_embedded_broker_cpu_ratio`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::kafka::{KafkaSettings, LoggingContext};
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
/// Partitions' retention is looked at every this many ticks.
const RETENTION_TICKS: u64 = 6;
/// librdkafka's mock names its thread so.
const MOCK_THREAD: &str = "rdk:mock";
/// Clock ticks a second in `/proc/*/stat` (`USER_HZ`, 100 on Linux's ABI).
const USER_HZ: f64 = 100.0;

/// What the watch remembers between looks.
pub(super) struct Watch {
    topics: Vec<TopicSpec>,
    client: Option<BaseConsumer<LoggingContext>>,
    last_cpu: Option<(Instant, u64)>,
    recent_load: Vec<f64>,
    warned_busy: Option<Instant>,
    dropping: HashSet<String>,
    ticks: u64,
}

impl Watch {
    /// A watch over the broker at `bootstrap`, serving `topics`.
    pub(super) fn new(bootstrap: &str, topics: &[TopicSpec]) -> Self {
        let client = KafkaSettings::new(bootstrap)
            .reader("recstream-embedded-watch")
            .create_with_context(LoggingContext::new("embedded broker watch"))
            .map_err(|e| tracing::debug!("the embedded broker's retention is not watched: {e}"))
            .ok();
        Watch {
            topics: topics.to_vec(),
            client,
            last_cpu: mock_thread_ticks().map(|t| (Instant::now(), t)),
            recent_load: Vec::with_capacity(LOAD_TICKS),
            warned_busy: None,
            dropping: HashSet::new(),
            ticks: 0,
        }
    }

    /// One look: the thread's load every tick, the retention now and then.
    pub(super) fn tick(&mut self) {
        self.ticks += 1;
        self.check_load();
        if self.ticks.is_multiple_of(RETENTION_TICKS) {
            self.check_retention();
        }
    }

    fn check_load(&mut self) {
        let Some(now_ticks) = mock_thread_ticks() else {
            return;
        };
        let now = Instant::now();
        // The mock names its thread once it runs: a watch created before
        // that starts measuring at the first look that finds it.
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

    fn check_retention(&mut self) {
        let Some(client) = &self.client else { return };
        for topic in &self.topics {
            if self.dropping.contains(&topic.name) {
                continue;
            }
            for partition in 0..topic.partitions {
                let Ok((low, high)) =
                    client.fetch_watermarks(&topic.name, partition, Duration::from_secs(2))
                else {
                    continue;
                };
                if low > 0 {
                    tracing::warn!(
                        "the embedded broker has started dropping the oldest messages of \
                         \"{}\" (partition {partition} now holds offsets {low}..{high}): it \
                         keeps at most 5 MiB or 100,000 message batches a partition, so a \
                         consumer further behind than that loses them, and a worker started \
                         now must start from the learner's latest snapshot (see the README). \
                         For data you keep, run against your Kafka with --brokers",
                        topic.name
                    );
                    self.dropping.insert(topic.name.clone());
                    break;
                }
            }
        }
    }
}

/// The warning to log when the broker's thread averaged `average` of a core
/// over `samples` looks, if it is due (`since_last`: since the previous one).
fn busy_warning(average: f64, samples: usize, since_last: Option<Duration>) -> Option<String> {
    let due = since_last.is_none_or(|d| d >= REPEAT);
    (samples == LOAD_TICKS && average >= BUSY && due).then(|| {
        format!(
            "the embedded broker's thread used {:.0}% of a core over the last {} s: it is near \
             what it can serve, and latency will grow from here. It walks every message batch a \
             partition holds (up to 5 MiB) for each fetch, so many small batches (clients that \
             do not batch, or mixed request and rating traffic) wear it out; for sustained load, \
             run against your Kafka with --brokers",
            average * 100.0,
            LOAD_TICKS as u64 * TICK.as_secs()
        )
    })
}

/// CPU clock ticks (user + system) of this process's mock-cluster threads.
fn mock_thread_ticks() -> Option<u64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let mut found = false;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let is_mock = std::fs::read_to_string(path.join("comm"))
            .is_ok_and(|comm| comm.trim_end() == MOCK_THREAD);
        if !is_mock {
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
    fn a_watch_made_before_the_mock_thread_runs_still_measures_it() {
        if !std::path::Path::new("/proc/self/task").exists() {
            return;
        }
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        let mut watch = Watch::new(&cluster.bootstrap_servers(), &[]);
        // As if the watch had looked before the thread named itself.
        watch.last_cpu = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while mock_thread_ticks().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        watch.check_load();
        std::thread::sleep(Duration::from_millis(20));
        watch.check_load();
        assert_eq!(watch.recent_load.len(), 1, "one load measured");
    }

    #[test]
    fn the_mock_thread_is_found_in_this_process() {
        if !std::path::Path::new("/proc/self/task").exists() {
            return; // not Linux: the load is not watched
        }
        let cluster = rdkafka::mocking::MockCluster::new(1);
        assert!(cluster.is_ok());
        // The thread names itself once it runs, just after the cluster is made.
        let deadline = Instant::now() + Duration::from_secs(10);
        while mock_thread_ticks().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            mock_thread_ticks().is_some(),
            "no {MOCK_THREAD} thread found"
        );
        drop(cluster);
    }
}
