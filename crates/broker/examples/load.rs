//! Sustained produce+consume load against this broker and, in the same run,
//! against librdkafka's mock cluster, for comparison.
//!
//! ```sh
//! cargo run -p recstream-broker --example load -- [SECONDS=60] [RATE=1000] [both|ours|mock]
//! ```
//!
//! One producer (acks=all, idempotent, `linger.ms=5`, as recstream's load
//! producers) sends RATE messages a second to a one-partition topic, each
//! carrying its send time; one group consumer (`fetch.wait.max.ms=10`, as
//! recstream's worker) reads them. Every 10 s it prints the broker thread's
//! CPU (from `/proc/self/task/*/stat`, found by thread name) and the
//! produce→consume latency p50/p99 of that window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use recstream_broker::{Broker, BrokerConfig};

const WINDOW: Duration = Duration::from_secs(10);
/// Clock ticks a second in `/proc/*/stat`.
const USER_HZ: f64 = 100.0;

/// utime+stime ticks of this process's thread named `comm` in `/proc`.
fn thread_ticks(comm: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if name.trim_end() == comm {
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after.split_whitespace().collect();
            // Fields 14 and 15 of stat, counted from the state (field 3).
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            return Some(utime + stime);
        }
    }
    None
}

fn run(label: &str, bootstrap: &str, thread: &str, seconds: u64, rate: u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("load-{label}"))
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "true")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    consumer.subscribe(&["load"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "{label}: no assignment");
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let consuming = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                if let Some(p) = m.payload().and_then(|p| <[u8; 8]>::try_from(p).ok()) {
                    let sent = u64::from_be_bytes(p);
                    let now = origin.elapsed().as_micros() as u64;
                    let _ = tx.send(now.saturating_sub(sent));
                }
            }
        })
    };
    println!("{label}: {rate} msg/s for {seconds} s");
    println!("{label}: window  cpu%   p50_ms  p99_ms  received");
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut next_send = start;
    let mut window_start = start;
    let mut ticks_before = thread_ticks(thread);
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut window = 0;
    // A last send lets the final window close too.
    while start.elapsed() < Duration::from_secs(seconds) + Duration::from_millis(50) {
        let now = Instant::now();
        if now >= next_send {
            let ts = origin.elapsed().as_micros() as u64;
            let payload = ts.to_be_bytes();
            if producer
                .send(BaseRecord::<(), [u8]>::to("load").payload(&payload))
                .is_err()
            {
                producer.poll(Duration::from_millis(1));
            }
            next_send += interval;
        } else {
            producer.poll(Duration::ZERO);
            std::thread::sleep((next_send - now).min(Duration::from_micros(500)));
        }
        while let Ok(latency) = rx.try_recv() {
            let _ = hist.record(latency);
        }
        if window_start.elapsed() >= WINDOW {
            let ticks = thread_ticks(thread);
            let cpu = match (ticks_before, ticks) {
                (Some(a), Some(b)) => format!(
                    "{:5.1}",
                    (b - a) as f64 / USER_HZ / window_start.elapsed().as_secs_f64() * 100.0
                ),
                _ => "  n/a".into(),
            };
            window += 1;
            println!(
                "{label}: {:>4}s  {cpu}  {:6.2}  {:6.2}  {}",
                window * 10,
                hist.value_at_quantile(0.5) as f64 / 1000.0,
                hist.value_at_quantile(0.99) as f64 / 1000.0,
                hist.len()
            );
            hist.reset();
            ticks_before = ticks;
            window_start = Instant::now();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    stop.store(true, Ordering::Relaxed);
    consuming.join().unwrap();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let which = args.next().unwrap_or_else(|| "both".into());

    if which != "mock" {
        ours(seconds, rate);
    }
    if which != "ours" {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("load", 1, 1).unwrap();
        run("mock", &mock.bootstrap_servers(), "rdk:mock", seconds, rate);
    }
}

fn ours(seconds: u64, rate: u64) {
    let broker = Broker::start(BrokerConfig::default()).unwrap();
    broker.create_topic("load", 1, &[]).unwrap();
    run(
        "recstream-broker",
        &broker.bootstrap(),
        recstream_broker::THREAD_COMM,
        seconds,
        rate,
    );
    let s = broker.stats();
    println!(
        "recstream-broker: {} batches stored, {} partition reads, {:.1} batches a read",
        s.produced_batches,
        s.fetched_partitions,
        s.fetched_batches as f64 / s.fetched_partitions.max(1) as f64
    );
}
