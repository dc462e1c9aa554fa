//! The Kinesis pieces against a real Kinesis-compatible server: kinesis-local
//! (kinesis-mock's npm build), started by the test on free loopback ports.
//!
//! `scripts/test` installs it with npm under `target/kinesis-servers`
//! (`RECSTREAM_KINESIS_SERVERS` points elsewhere). Without it the tests are
//! skipped, except under `CI=true`, where a missing server fails them.

// Test helpers may panic: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use recstream_kinesis::checkpoint::{Checkpoint, ShardPosition};
use recstream_kinesis::lineage::{FirstStart, readable};
use recstream_kinesis::listing::list_shards;
use recstream_kinesis::reader::{ReaderOptions, ShardEvent, read_shard};
use recstream_kinesis::sink::{PutError, Sink};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use support::*;

/// Writes `count` records, keyed `u0`..`u49`, each holding its index.
async fn write(sink: &Sink, from: usize, count: usize) {
    let mut answers = Vec::new();
    for i in from..from + count {
        let key = format!("u{}", i % 50);
        answers.push(sink.send(key.as_bytes(), i.to_string().into_bytes()).await);
    }
    for answer in answers {
        assert!(answer.await.unwrap().is_ok());
    }
}

/// What reading a stream gave: per shard the records in order, all of
/// them in the order they arrived, and the checkpoint at the end.
struct Read {
    by_shard: BTreeMap<String, Vec<usize>>,
    /// Children named by the readers at the ends of their shards.
    named_children: usize,
    arrived: Vec<usize>,
    checkpoint: Checkpoint,
}

/// Reads every shard readable now and then (children after parents), with
/// a reader per shard running at once, until `count` records are in.
async fn read_all(client: &Client, stream: &str, count: usize) -> Read {
    let (out, mut events) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let mut checkpoint = Checkpoint::new(stream);
    let mut reading = BTreeSet::new();
    let mut read: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut arrived = Vec::new();
    let mut named_children = 0;
    let mut first = Some(FirstStart::TrimHorizon);
    let deadline = Instant::now() + LONG;
    while read.values().map(Vec::len).sum::<usize>() < count {
        let listed = list_shards(client, stream).await.unwrap();
        for (shard, start) in readable(&listed, &checkpoint, &reading, first.take()) {
            reading.insert(shard.clone());
            tokio::spawn(read_shard(
                client.clone(),
                stream.to_string(),
                shard,
                start,
                ReaderOptions {
                    poll: Duration::from_millis(50),
                },
                out.clone(),
                shutdown.clone(),
            ));
        }
        let event = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
        match event {
            Ok(Some(ShardEvent::Records { shard, records })) => {
                let last = records.last().unwrap().sequence.clone();
                let indices = records
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.data).parse::<usize>().unwrap());
                let indices: Vec<usize> = indices.collect();
                arrived.extend(&indices);
                read.entry(shard.clone()).or_default().extend(indices);
                checkpoint.shards.insert(shard, ShardPosition::After(last));
            }
            Ok(Some(ShardEvent::Ended { shard, children })) => {
                named_children += children.len();
                reading.remove(&shard);
                checkpoint.shards.insert(shard, ShardPosition::End);
            }
            Ok(Some(ShardEvent::Failed { shard, reason })) => panic!("{shard}: {reason}"),
            Ok(None) | Err(_) => {}
        }
        assert!(Instant::now() < deadline, "every record read: {read:?}");
    }
    shutdown.cancel();
    Read {
        by_shard: read,
        named_children,
        arrived,
        checkpoint,
    }
}

/// Whether each key's records arrived in the order they were written.
fn in_order_per_key(arrived: &[usize]) -> bool {
    let mut by_key: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in arrived {
        by_key.entry(i % 50).or_default().push(i);
    }
    by_key.values().all(|v| v.windows(2).all(|w| w[0] < w[1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_through_the_sink_are_read_back_in_each_keys_order() {
    let Some(server) = KinesisLocal::start() else {
        return;
    };
    let client = server.client().await;
    create_stream(&client, "requests", 2).await;
    let sink = Sink::start(client.clone(), "requests", 1_000);
    write(&sink, 0, 2_000).await;
    let read = read_all(&client, "requests", 2_000).await;
    assert_eq!(
        read.by_shard.len(),
        2,
        "the premise: both shards hold records"
    );
    assert_eq!(read.arrived.len(), 2_000, "nothing twice");
    let all: BTreeSet<usize> = read.arrived.iter().copied().collect();
    assert_eq!(all, (0..2_000).collect(), "every record");
    for (shard, indices) in &read.by_shard {
        assert!(
            indices.windows(2).all(|w| w[0] < w[1]),
            "shard {shard} in the order written"
        );
    }
    assert!(in_order_per_key(&read.arrived));
    assert_eq!(read.checkpoint.shards.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_a_mebibyte_is_refused_at_once_and_the_rest_still_flow() {
    let Some(server) = KinesisLocal::start() else {
        return;
    };
    let client = server.client().await;
    create_stream(&client, "replies", 1).await;
    let sink = Sink::start(client.clone(), "replies", 16);
    let big = sink.send(b"u1", vec![b'x'; 1024 * 1024]).await;
    let small = sink.send(b"u1", b"1".to_vec()).await;
    assert!(matches!(
        big.await.unwrap(),
        Err(PutError::TooLarge { bytes }) if bytes == 1024 * 1024 + 2
    ));
    assert!(small.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_and_a_merge_while_reading_lose_nothing_and_children_follow_parents() {
    let Some(server) = KinesisLocal::start() else {
        return;
    };
    let read = split_and_merge(&server.client().await).await;
    assert!(
        read.named_children > 0,
        "the premise: kinesis-local names children"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_child_shards_in_the_reads_children_are_found_by_listing() {
    let Some(server) = KinesisLocal::kinesalite() else {
        return;
    };
    let read = split_and_merge(&server.client().await).await;
    assert_eq!(read.named_children, 0, "the premise: kinesalite names none");
}

/// Splits a stream's shard and merges the children back while records keep
/// coming, then reads them all: every record once, each key in order.
async fn split_and_merge(client: &Client) -> Read {
    let client = client.clone();
    create_stream(&client, "ratings", 1).await;
    let sink = Sink::start(client.clone(), "ratings", 1_000);
    write(&sink, 0, 500).await;
    let parent = list_shards(&client, "ratings").await.unwrap()[0].id.clone();
    // Split the one shard in the middle of its hash key range.
    client
        .split_shard()
        .stream_name("ratings")
        .shard_to_split(&parent)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    wait_active(&client, "ratings").await;
    write(&sink, 500, 500).await;
    let open: Vec<String> = list_shards(&client, "ratings")
        .await
        .unwrap()
        .into_iter()
        .filter(|s| !s.closed)
        .map(|s| s.id)
        .collect();
    assert_eq!(open.len(), 2, "the premise: the split made two children");
    client
        .merge_shards()
        .stream_name("ratings")
        .shard_to_merge(&open[0])
        .adjacent_shard_to_merge(&open[1])
        .send()
        .await
        .unwrap();
    wait_active(&client, "ratings").await;
    write(&sink, 1_000, 500).await;
    let read = read_all(&client, "ratings", 1_500).await;
    assert_eq!(
        read.by_shard.len(),
        4,
        "parent, two children and their merge were read"
    );
    assert_eq!(read.arrived.len(), 1_500, "nothing read twice");
    let all: BTreeSet<usize> = read.arrived.iter().copied().collect();
    assert_eq!(all, (0..1_500).collect(), "nothing lost");
    assert!(
        in_order_per_key(&read.arrived),
        "each key's records arrived in order: children after parents"
    );
    assert!(read.checkpoint.ended(&parent));
    read
}
