//! Producing and consuming through the broker with librdkafka.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use recstream_broker::BrokerConfig;

use common::*;

#[test]
fn ten_thousand_messages_come_back_in_order_with_keys_and_headers_several_batches_per_fetch() {
    let broker = broker();
    broker.create_topic("t", 4, &[]).unwrap();
    let p = producer(
        &broker,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("batch.num.messages", "100"),
        ],
    );
    let n = 10_000;
    for i in 0..n {
        let key = format!("k{i}");
        let value = format!("v{i}");
        let headers = OwnedHeaders::new().insert(Header {
            key: "i",
            value: Some(&i.to_string()),
        });
        let record = BaseRecord::to("t")
            .partition(i % 4)
            .key(&key)
            .payload(&value)
            .headers(headers);
        p.send(record).map_err(|(e, _)| e).unwrap();
        p.poll(Duration::ZERO);
    }
    flush(&p);
    let stats = broker.partition_stats("t").unwrap();
    assert_eq!(
        stats.iter().map(|s| s.log_end_offset).sum::<i64>(),
        i64::from(n)
    );

    // Consumed only after everything is stored, so that fetches find many
    // batches waiting.
    let c = consumer(&broker, "reader", &[]);
    c.subscribe(&["t"]).unwrap();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut seen = 0;
    poll_until(&c, Duration::from_secs(60), "10,000 messages", |m| {
        let Some(m) = m else { return seen == n };
        let partition = m.partition();
        let expected = next.entry(partition).or_insert(0);
        assert_eq!(
            m.offset(),
            *expected,
            "offsets contiguous in partition {partition}"
        );
        *expected += 1;
        let i: i32 = std::str::from_utf8(m.headers().unwrap().get(0).value.unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(i % 4, partition);
        assert_eq!(m.key(), Some(format!("k{i}").as_bytes()));
        assert_eq!(m.payload(), Some(format!("v{i}").as_bytes()));
        seen += 1;
        seen == n
    });
    assert_eq!(next.values().sum::<i64>(), i64::from(n));
    let s = broker.stats();
    assert_eq!(s.duplicate_batches, 0);
    assert!(
        s.max_batches_per_partition > 1,
        "a fetch returned several batches of one partition: {s:?}"
    );
    assert!(
        s.fetched_batches > s.fetched_partitions,
        "on average more than one batch per partition read: {s:?}"
    );
}

#[test]
fn a_waiting_fetch_returns_as_soon_as_a_message_arrives() {
    let broker = broker();
    broker.create_topic("t", 1, &[]).unwrap();
    let c = consumer(&broker, "waiter", &[("fetch.wait.max.ms", "10000")]);
    c.subscribe(&["t"]).unwrap();
    // Wait until the consumer has its partition and is polling (its first
    // fetch is then parked in the broker for up to 10 s).
    poll_until(&c, Duration::from_secs(30), "the assignment", |_| {
        assigned(&c) == vec![0]
    });
    let p = producer(&broker, &[("linger.ms", "0")]);
    wait_for(Duration::from_secs(30), "a parked fetch", || {
        broker.stats().parked_fetches > 0
    });
    let sent = Instant::now();
    p.send(BaseRecord::<(), str>::to("t").payload("hello"))
        .map_err(|(e, _)| e)
        .unwrap();
    flush(&p);
    let mut got = None;
    poll_until(&c, Duration::from_secs(30), "the message", |m| {
        if let Some(m) = m {
            got = m.payload().map(<[u8]>::to_vec);
        }
        got.is_some()
    });
    let waited = sent.elapsed();
    assert_eq!(got.as_deref(), Some(&b"hello"[..]));
    // A correctness bound, not a benchmark: without the wake-up the fetch
    // would sit out its 10 s.
    assert!(
        waited < Duration::from_secs(5),
        "the fetch woke after {waited:?}"
    );
}

#[test]
fn retention_drops_old_batches_and_a_consumer_behind_it_resets() {
    let broker = broker_with(BrokerConfig {
        retention_bytes: 20_000,
        ..BrokerConfig::default()
    });
    broker.create_topic("t", 1, &[]).unwrap();
    let p = producer(&broker, &[("linger.ms", "0"), ("batch.num.messages", "1")]);
    let payload = "x".repeat(1_000);
    for _ in 0..100 {
        p.send(BaseRecord::<(), str>::to("t").payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap();
        flush(&p);
    }
    let s = broker.partition_stats("t").unwrap()[0];
    assert_eq!(s.log_end_offset, 100);
    assert!(
        s.log_start_offset > 50,
        "the oldest batches are gone: {s:?}"
    );
    assert!(s.stored_bytes <= 20_000, "{s:?}");

    // A group whose committed offset (0) is now before the log start: the
    // fetch gets OFFSET_OUT_OF_RANGE and the consumer resets to earliest.
    let setup = consumer(&broker, "behind", &[]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("t", 0, rdkafka::Offset::Offset(0))
        .unwrap();
    setup
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    drop(setup);
    let c = consumer(&broker, "behind", &[]);
    c.subscribe(&["t"]).unwrap();
    let mut first = None;
    poll_until(
        &c,
        Duration::from_secs(30),
        "a message after the reset",
        |m| {
            if let Some(m) = m {
                first.get_or_insert(m.offset());
            }
            first.is_some()
        },
    );
    assert_eq!(
        first,
        Some(s.log_start_offset),
        "reset to the log start, not to 0"
    );
}

#[test]
fn topic_configs_are_described_back() {
    let broker = broker();
    broker
        .create_topic("compacted", 1, &[("cleanup.policy", "compact")])
        .unwrap();
    broker.create_topic("plain", 1, &[]).unwrap();
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let described = rt
        .block_on(admin.describe_configs(
            &[
                ResourceSpecifier::Topic("compacted"),
                ResourceSpecifier::Topic("plain"),
            ],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap();
    let policy = |i: usize| {
        described[i]
            .as_ref()
            .unwrap()
            .get("cleanup.policy")
            .and_then(|e| e.value.clone())
    };
    assert_eq!(policy(0).as_deref(), Some("compact"));
    assert_eq!(policy(1).as_deref(), Some("delete"));
}
