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
    p.flush(Duration::from_secs(30))
        .expect("every message delivered");
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

/// Set in a child test process to make it a group member (see [`Member`]).
pub const MEMBER_ENV: &str = "RECSTREAM_BROKER_TEST_MEMBER";

/// A group member in a child process, so that it can be killed for real
/// (librdkafka's threads cannot be stopped abruptly inside one process).
/// It prints `ASSIGNED p,q,...` each time its assignment changes.
pub struct Member {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    assigned: Vec<i32>,
}

impl Member {
    /// Re-runs this test binary's `test_name` with [`MEMBER_ENV`] set.
    pub fn spawn(test_name: &str, broker: &Broker, group: &str, topic: &str) -> Member {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(
                MEMBER_ENV,
                format!("{}|{group}|{topic}", broker.bootstrap()),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the member process starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Member {
            child,
            lines,
            assigned: Vec::new(),
        }
    }

    /// The member's latest reported assignment (without waiting).
    pub fn latest(&mut self) -> &[i32] {
        while let Ok(line) = self.lines.try_recv() {
            // libtest's "test member_process ... " has no newline before it.
            if let Some((_, list)) = line.split_once("ASSIGNED ") {
                self.assigned = list.split(',').filter_map(|p| p.parse().ok()).collect();
            }
        }
        &self.assigned
    }

    /// SIGKILL: no LeaveGroup, no goodbye.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a member process: consume forever, reporting assignments.
/// Returns at once when this process is not a member.
pub fn run_member_if_child() {
    let Ok(spec) = std::env::var(MEMBER_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let (Some(bootstrap), Some(group), Some(topic)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("bad {MEMBER_ENV}: {spec}");
    };
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // Killed members are expired after this: short, to keep cycles quick.
        .set("session.timeout.ms", "1000")
        .set("heartbeat.interval.ms", "100")
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut last = Vec::new();
    loop {
        let _ = c.poll(Duration::from_millis(20));
        let now = assigned(&c);
        if now != last {
            let list: Vec<String> = now.iter().map(i32::to_string).collect();
            println!("ASSIGNED {}", list.join(","));
            last = now;
        }
    }
}
