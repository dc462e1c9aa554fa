//! `set_down`: clients ride through an outage with nothing lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseRecord, Producer};

use common::*;

#[test]
fn a_producer_and_a_consumer_ride_through_a_two_second_outage() {
    let broker = broker();
    broker.create_topic("t", 2, &[]).unwrap();
    let p = producer(
        &broker,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "1"),
        ],
    );
    let c = consumer(&broker, "g", &[]);
    c.subscribe(&["t"]).unwrap();
    let mut received = BTreeSet::new();
    let mut sent = 0u32;
    let mut send = |p: &rdkafka::producer::BaseProducer, n: u32| {
        for _ in 0..n {
            p.send(BaseRecord::<(), str>::to("t").payload(&sent.to_string()))
                .map_err(|(e, _)| e)
                .unwrap();
            sent += 1;
        }
        p.poll(Duration::ZERO);
        sent
    };
    let before = send(&p, 500);
    poll_until(
        &c,
        Duration::from_secs(30),
        "the messages before the outage",
        |m| {
            record(&mut received, m);
            received.len() as u32 == before
        },
    );

    broker.set_down(true);
    let addr = broker.local_addr();
    wait_for(Duration::from_secs(10), "connections refused", || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    });
    // Two seconds of outage, with both clients working against it.
    let outage_end = Instant::now() + Duration::from_secs(2);
    let during = send(&p, 500);
    while Instant::now() < outage_end {
        record(
            &mut received,
            c.poll(Duration::from_millis(50))
                .and_then(Result::ok)
                .as_ref(),
        );
        p.poll(Duration::ZERO);
    }
    assert!(
        received.len() < during as usize,
        "nothing got through while down"
    );
    broker.set_down(false);

    let total = send(&p, 500);
    p.flush(Duration::from_secs(60))
        .expect("every message delivered after the outage");
    poll_until(&c, Duration::from_secs(60), "every message", |m| {
        record(&mut received, m);
        received.len() as u32 == total
    });
    assert_eq!(
        received,
        (0..total).collect::<BTreeSet<_>>(),
        "nothing lost"
    );
    let stored: i64 = broker
        .partition_stats("t")
        .unwrap()
        .iter()
        .map(|s| s.log_end_offset)
        .sum();
    assert_eq!(stored, i64::from(total), "nothing stored twice");
}

fn record(received: &mut BTreeSet<u32>, m: Option<&rdkafka::message::BorrowedMessage<'_>>) {
    if let Some(m) = m {
        let i: u32 = std::str::from_utf8(m.payload().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        received.insert(i);
    }
}
