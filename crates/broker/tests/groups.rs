//! Consumer groups through the broker's coordinator, with librdkafka.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::BaseRecord;

use common::*;

/// Not a test: the body of the member processes the tests below spawn.
#[test]
fn member_process() {
    run_member_if_child();
}

#[test]
fn two_consumers_share_four_partitions_and_a_survivor_takes_them_all() {
    let broker = broker();
    broker.create_topic("t", 4, &[]).unwrap();
    let a = consumer(&broker, "g", &[]);
    a.subscribe(&["t"]).unwrap();
    poll_until(&a, Duration::from_secs(30), "a alone owns all 4", |_| {
        assigned(&a) == vec![0, 1, 2, 3]
    });
    let mut b = Member::spawn("member_process", &broker, "g", "t");
    let mut last = (Vec::new(), Vec::new());
    poll_until(&a, Duration::from_secs(60), "a 2+2 split", |_| {
        let now = (assigned(&a), b.latest().to_vec());
        if now != last {
            eprintln!("a owns {:?}, b owns {:?}", now.0, now.1);
            last = now;
        }
        last.0.len() == 2 && last.1.len() == 2
    });
    let of_b = b.latest().to_vec();
    let mut all: Vec<i32> = assigned(&a).into_iter().chain(of_b).collect();
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3], "each partition owned once");

    // b is killed: no LeaveGroup. The coordinator must expire it at its
    // session timeout and hand its partitions to a.
    b.kill();
    poll_until(&a, Duration::from_secs(60), "a owning all 4 again", |_| {
        assigned(&a) == vec![0, 1, 2, 3]
    });
}

#[test]
fn a_new_consumer_resumes_after_the_last_commit() {
    let broker = broker();
    broker.create_topic("t", 1, &[]).unwrap();
    let p = producer(&broker, &[]);
    for i in 0..20 {
        p.send(BaseRecord::<(), str>::to("t").payload(&i.to_string()))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    flush(&p);
    {
        let c = consumer(&broker, "g", &[]);
        c.subscribe(&["t"]).unwrap();
        let mut seen = 0;
        poll_until(&c, Duration::from_secs(30), "12 messages", |m| {
            if let Some(m) = m {
                seen += 1;
                if seen == 12 {
                    c.commit_message(m, CommitMode::Sync).unwrap();
                }
            }
            seen >= 12
        });
        c.unsubscribe();
    }
    let c = consumer(&broker, "g", &[]);
    c.subscribe(&["t"]).unwrap();
    let mut first = None;
    poll_until(&c, Duration::from_secs(30), "the next message", |m| {
        if let Some(m) = m {
            first.get_or_insert(m.offset());
        }
        first.is_some()
    });
    assert_eq!(
        first,
        Some(12),
        "resumed right after the committed message (offset 11)"
    );
}

#[test]
fn the_broker_survives_members_killed_and_restarted_every_cycle() {
    let broker = broker();
    broker.create_topic("t", 4, &[]).unwrap();
    let p = producer(&broker, &[]);
    let steady = consumer(&broker, "g", &[]);
    steady.subscribe(&["t"]).unwrap();
    poll_until(
        &steady,
        Duration::from_secs(30),
        "the first assignment",
        |_| assigned(&steady).len() == 4,
    );
    let mut received = 0u64;
    let mut sent = 0u64;
    for cycle in 0..20 {
        let mut churner = Member::spawn("member_process", &broker, "g", "t");
        // Wait until the churner is in the group (it got partitions) while
        // the steady member keeps consuming, then kill it at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(_)) = steady.poll(Duration::from_millis(20)) {
                received += 1;
            }
            if !churner.latest().is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cycle {cycle}: the churner never joined"
            );
        }
        p.send(BaseRecord::<(), str>::to("t").payload("x"))
            .map_err(|(e, _)| e)
            .unwrap();
        sent += 1;
        p.poll(Duration::ZERO);
        churner.kill();
    }
    flush(&p);
    poll_until(
        &steady,
        Duration::from_secs(60),
        "the last member owning all 4",
        |m| {
            if m.is_some() {
                received += 1;
            }
            assigned(&steady) == vec![0, 1, 2, 3]
        },
    );
    // The broker still answers: a fresh client gets metadata and the
    // surviving member is still consuming.
    let probe = consumer(&broker, "probe", &[]);
    let md = probe
        .fetch_metadata(Some("t"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 4);
    poll_until(
        &steady,
        Duration::from_secs(60),
        "every message sent during the churn",
        |m| {
            if m.is_some() {
                received += 1;
            }
            received >= sent
        },
    );
}
