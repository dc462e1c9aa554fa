//! `serve` on Kinesis against kinesis-local: requests from one stream,
//! replies on another, dead letters on a third, the checkpoint on disk.

// Test helpers may panic: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use recstream_core::Recommender;
use recstream_core::synth::random_model;
use recstream_kinesis::checkpoint::{Checkpoint, ShardPosition};
use recstream_kinesis::lineage::{FirstStart, StartAt};
use recstream_kinesis::listing::list_shards;
use recstream_kinesis::outputs::Target;
use recstream_kinesis::reader::{ReaderOptions, ShardEvent, read_shard};
use recstream_kinesis::sink::Sink;
use recstream_kinesis::worker::{KinesisSummary, KinesisWorkerConfig, KinesisWorkerError, run};
use recstream_stream::metrics::Health;
use recstream_stream::serving::ServingModel;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use support::*;

/// A small model with random factors: scoring, not accuracy, is under test.
fn model() -> Arc<ServingModel> {
    ServingModel::new(Recommender::new(random_model(200, 300, 8, 20, 1)))
}

/// Writes requests `from..from+count` for users 1..=50, keyed by uid.
async fn send_requests(sink: &Sink, from: usize, count: usize) {
    let mut answers = Vec::new();
    for i in from..from + count {
        let uid = 1 + i % 50;
        let request = format!(r#"{{"uid": {uid}, "request_id": "r{i}"}}"#);
        answers.push(
            sink.send(uid.to_string().as_bytes(), request.into_bytes())
                .await,
        );
    }
    for answer in answers {
        assert!(answer.await.unwrap().is_ok());
    }
}

/// Every record of `stream` so far, each shard's in order, once `done`
/// says the shards' records are all there.
async fn read_stream(client: &Client, stream: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    read_records(client, stream, done)
        .await
        .into_iter()
        .map(|(_, _, value)| value)
        .collect()
}

/// As [`read_stream`], with each record's shard and sequence number.
async fn read_records(
    client: &Client,
    stream: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<(String, String, Value)> {
    let deadline = Instant::now() + LONG;
    loop {
        let mut all = Vec::new();
        for shard in list_shards(client, stream).await.unwrap() {
            let (out, mut events) = mpsc::channel(64);
            let stop = CancellationToken::new();
            tokio::spawn(read_shard(
                client.clone(),
                stream.to_string(),
                shard.id.clone(),
                StartAt::TrimHorizon,
                ReaderOptions {
                    poll: Duration::from_millis(20),
                },
                out,
                stop.clone(),
            ));
            // A shard is read once its reader has been idle for a moment.
            while let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(1_000), events.recv()).await
            {
                if let ShardEvent::Records { records, .. } = event {
                    all.extend(records.iter().map(|r| {
                        (
                            shard.id.clone(),
                            r.sequence.clone(),
                            serde_json::from_slice::<Value>(&r.data).unwrap(),
                        )
                    }));
                }
            }
            stop.cancel();
        }
        let values: Vec<Value> = all.iter().map(|(_, _, v)| v.clone()).collect();
        if done(&values) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{stream} holds what was expected: {} records",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config(server: &KinesisLocal, checkpoint: &std::path::Path) -> KinesisWorkerConfig {
    let mut config = KinesisWorkerConfig::new(
        recstream_kinesis::KinesisSettings {
            endpoint: Some(server.endpoint.clone()),
            region: Some("us-east-1".into()),
        },
        "requests",
        Target::Kinesis("replies".into()),
        Target::Kinesis("dead-letters".into()),
    );
    config.checkpoint = checkpoint.to_path_buf();
    config.first_start = FirstStart::TrimHorizon;
    config.poll = Duration::from_millis(200);
    config.scoring_threads = 2;
    config
}

/// A local Kinesis with the streams `requests` and `replies` of `shards`
/// shards each, and `dead-letters`; `None` when it is not installed.
async fn streams(shards: i32) -> Option<(KinesisLocal, Client)> {
    let server = KinesisLocal::start()?;
    let client = server.client().await;
    create_stream(&client, "requests", shards).await;
    create_stream(&client, "replies", shards).await;
    create_stream(&client, "dead-letters", 1).await;
    Some((server, client))
}

/// A worker on the streams `requests`, `replies` and `dead-letters`, run
/// until the token is cancelled.
fn start_worker(
    server: &KinesisLocal,
    checkpoint: &std::path::Path,
) -> (
    tokio::task::JoinHandle<Result<KinesisSummary, KinesisWorkerError>>,
    CancellationToken,
) {
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run(
        config(server, checkpoint),
        model(),
        Arc::new(Health::default()),
        shutdown.clone(),
    ));
    (worker, shutdown)
}

/// Per uid, the request numbers of its replies in the order they stand.
fn replies_by_user(replies: &[Value]) -> BTreeMap<u64, Vec<usize>> {
    let mut by_user: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for reply in replies {
        let uid = reply["uid"].as_u64().unwrap();
        let number = reply["request_id"].as_str().unwrap()[1..].parse().unwrap();
        by_user.entry(uid).or_default().push(number);
    }
    by_user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_kinesis_are_answered_once_in_each_users_order_and_a_restart_resumes_after_the_checkpoint()
 {
    let Some((server, client)) = streams(2).await else {
        return;
    };
    let requests = Sink::start(client.clone(), "requests", 1_000);
    send_requests(&requests, 0, ROUND_TRIP).await;
    let bad = requests.send(b"x", b"not json".to_vec()).await;
    assert!(bad.await.unwrap().is_ok());

    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("requests.json");
    let (worker, shutdown) = start_worker(&server, &checkpoint);
    let replies = read_stream(&client, "replies", |r| r.len() >= ROUND_TRIP).await;
    let letters = read_stream(&client, "dead-letters", |d| !d.is_empty()).await;
    shutdown.cancel();
    let summary = worker.await.unwrap().unwrap();
    assert_eq!(
        (summary.requests, summary.replies, summary.dead_letters),
        (ROUND_TRIP as u64 + 1, ROUND_TRIP as u64, 1)
    );
    assert_eq!(replies.len(), ROUND_TRIP, "each request answered once");
    for (uid, numbers) in replies_by_user(&replies) {
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "user {uid}'s replies in order: {numbers:?}"
        );
    }
    assert_eq!(letters[0]["reason"], "invalid_json");
    assert!(
        letters[0]["sequence_number"].is_string(),
        "a dead letter says where its request was: {}",
        letters[0]
    );
    let saved: Checkpoint = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    assert_eq!(saved.shards.len(), 2);
    assert!(
        saved
            .shards
            .values()
            .all(|p| matches!(p, ShardPosition::After(_)))
    );

    // A restart reads only what came after the checkpoint.
    send_requests(&requests, ROUND_TRIP, 300).await;
    let (worker, shutdown) = start_worker(&server, &checkpoint);
    let replies = read_stream(&client, "replies", |r| r.len() >= ROUND_TRIP + 300).await;
    shutdown.cancel();
    let summary = worker.await.unwrap().unwrap();
    assert_eq!(
        summary.requests, 300,
        "nothing before the checkpoint read again"
    );
    assert_eq!(replies.len(), ROUND_TRIP + 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_on_the_same_checkpoint_refuses_to_start() {
    let Some((server, _client)) = streams(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("requests.json");
    let shutdown = CancellationToken::new();
    let health = Arc::new(Health::default());
    let first = tokio::spawn(run(
        config(&server, &checkpoint),
        model(),
        health.clone(),
        shutdown.clone(),
    ));
    let deadline = Instant::now() + LONG;
    while !health.is_ready() {
        assert!(Instant::now() < deadline, "the first worker starts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = run(
        config(&server, &checkpoint),
        model(),
        Arc::new(Health::default()),
        CancellationToken::new(),
    )
    .await;
    let error = second.unwrap_err().to_string();
    assert!(error.contains("another worker"), "{error}");
    shutdown.cancel();
    first.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_dead_mid_stream_and_restarted_answers_every_request() {
    let Some((server, client)) = streams(2).await else {
        return;
    };
    let requests = Sink::start(client.clone(), "requests", 1_000);
    // Requests keep coming, 1,000 a second, through the crash and the restart.
    let sender = tokio::spawn(async move {
        for chunk in 0..SENT / 100 {
            send_requests(&requests, chunk * 100, 100).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("requests.json");
    let (worker, _shutdown) = start_worker(&server, &checkpoint);
    // Stopped dead (no drain, no last checkpoint) once it has checkpointed.
    let deadline = Instant::now() + LONG;
    while !checkpoint.exists() {
        assert!(Instant::now() < deadline, "the worker checkpoints");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.abort();
    let crashed = worker.await;
    assert!(
        crashed.as_ref().is_err_and(|e| e.is_cancelled()),
        "the premise: the worker was stopped dead"
    );
    assert!(
        !sender.is_finished(),
        "the premise: requests were still arriving"
    );
    let left: Checkpoint = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    let (worker, shutdown) = start_worker(&server, &checkpoint);
    sender.await.unwrap();
    let replies = read_stream(&client, "replies", |r| distinct(r) == SENT).await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    // Only requests after the checkpoint the stopped worker left are
    // answered twice.
    let place: BTreeMap<String, (String, String)> = read_records(&client, "requests", |_| true)
        .await
        .into_iter()
        .map(|(shard, sequence, r)| {
            (
                r["request_id"].as_str().unwrap().to_string(),
                (shard, sequence),
            )
        })
        .collect();
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for reply in &replies {
        *times
            .entry(reply["request_id"].as_str().unwrap())
            .or_default() += 1;
    }
    let numeric = |s: &str| (s.len(), s.to_string());
    for (id, _) in times.iter().filter(|(_, n)| **n > 1) {
        let (shard, sequence) = &place[*id];
        if let Some(ShardPosition::After(saved)) = left.shards.get(shard) {
            assert!(
                numeric(sequence) > numeric(saved),
                "request {id} ({shard}, {sequence}) answered twice, although the checkpoint was past it ({saved})"
            );
        }
    }
}

/// Requests of the round trip.
const ROUND_TRIP: usize = 10_000;

/// Requests sent in the crash test.
const SENT: usize = 6_000;

/// Distinct requests answered.
fn distinct(replies: &[Value]) -> usize {
    replies
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_kinesis_refuses_become_dead_letters_naming_the_requests_shard_and_sequence() {
    let Some((server, client)) = streams(1).await else {
        return;
    };
    // Every reply is refused: its stream is gone.
    client
        .delete_stream()
        .stream_name("replies")
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint.json");
    let (worker, shutdown) = start_worker(&server, &checkpoint);
    let sink = Sink::start(client.clone(), "requests", 100);
    send_requests(&sink, 0, 5).await;

    let letters = read_stream(&client, "dead-letters", |l| l.len() >= 5).await;
    assert_eq!(letters.len(), 5, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter["reason"], "undeliverable", "{letter}");
        assert!(letter["shard"].is_string(), "{letter}");
        assert!(letter["sequence_number"].is_string(), "{letter}");
        assert!(letter.get("offset").is_none(), "{letter}");
        assert!(
            letter["payload"].as_str().unwrap().contains("request_id"),
            "{letter}"
        );
    }
    shutdown.cancel();
    let summary = worker.await.unwrap().unwrap();
    assert_eq!((summary.replies, summary.dead_letters), (0, 5));
    // A dead-lettered request counts as answered: the checkpoint moved past it.
    let saved: Checkpoint = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    assert!(
        matches!(saved.shards.values().next(), Some(ShardPosition::After(_))),
        "{saved:?}"
    );
}
