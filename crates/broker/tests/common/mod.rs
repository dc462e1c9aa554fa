//! Helpers shared by the integration tests: a broker on a free loopback
//! port, librdkafka clients pointed at it, and waiting on conditions with
//! a deadline (never on fixed sleeps).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use recstream_broker::{Broker, BrokerConfig};

/// A broker on 127.0.0.1, port picked by the OS.
pub fn broker() -> Broker {
    broker_with(BrokerConfig::default())
}

pub fn broker_with(config: BrokerConfig) -> Broker {
    Broker::start(config).expect("broker starts")
}

pub fn producer(broker: &Broker, extra: &[(&str, &str)]) -> BaseProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

pub fn consumer(broker: &Broker, group: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "300")
        .set("fetch.wait.max.ms", "50");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("consumer")
}

/// Flushes, failing the test if anything was not delivered.
pub fn flush(p: &BaseProducer) {
    p.flush(Duration::from_secs(30)).expect("every message delivered");
    assert_eq!(p.in_flight_count(), 0);
}

/// Polls `c`, handing `step` each message (or `None` after an empty poll),
/// until `step` says it is done; panics naming `what` after `limit`.
pub fn poll_until(
    c: &BaseConsumer,
    limit: Duration,
    what: &str,
    mut step: impl FnMut(Option<&rdkafka::message::BorrowedMessage<'_>>) -> bool,
) {
    let deadline = Instant::now() + limit;
    if step(None) {
        return;
    }
    loop {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        let done = match c.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => step(Some(&m)),
            Some(Err(e)) => {
                eprintln!("consumer error (retried by librdkafka): {e}");
                step(None)
            }
            None => step(None),
        };
        if done {
            return;
        }
    }
}

/// Partitions assigned to `c`, sorted.
pub fn assigned(c: &BaseConsumer) -> Vec<i32> {
    let mut p: Vec<i32> = c
        .assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default();
    p.sort();
    p
}

/// Waits until `cond` holds (checked every 20 ms), or panics.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
